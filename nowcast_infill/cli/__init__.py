"""Console scripts `ni-<verb>`: Hydra shims over the plain functions of `nowcast_infill.pipeline`.

This package is the only code that knows Hydra's runtime (`@hydra.main`, the command line's
overrides); everything a command does is a pipeline function that takes a composed config.
"""

from hydra.core.hydra_config import HydraConfig

from nowcast_infill.utils.config import CONFIG_DIR

__all__ = ["CONFIG_DIR", "command_line_overrides"]


def command_line_overrides() -> list[str] | None:
    """The overrides of the running Hydra job (`task=nowcast`, ...), None outside one (a
    config composed in a script or test and handed to `main(cfg)`)."""
    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)
