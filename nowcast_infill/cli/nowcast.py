"""`ni-nowcast`: Hydra shim over `nowcast_infill.pipeline.nowcast` (conf/nowcast.yaml)."""

from __future__ import annotations

from omegaconf import DictConfig

from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.pipeline.products import nowcast


@hydra_command("nowcast")
def main(cfg: DictConfig) -> None:
    nowcast(cfg)


if __name__ == "__main__":
    main()
