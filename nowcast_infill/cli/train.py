"""`ni-train`: Hydra shim over `nowcast_infill.pipeline.train`; returns `optimized_metric` to sweepers."""

from __future__ import annotations

import os

from omegaconf import DictConfig

from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.pipeline.fitting import optimized_value, train


@hydra_command("train")
def main(cfg: DictConfig) -> float | None:
    """ni-train; returns `cfg.optimized_metric` (for sweepers) or None when it was not logged."""
    return optimized_value(cfg, train(cfg))


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
