"""`ni-infill`: Hydra shim over `nowcast_infill.pipeline.infill` (conf/infill.yaml)."""

from __future__ import annotations

from omegaconf import DictConfig

from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.pipeline.products import infill


@hydra_command("infill")
def main(cfg: DictConfig) -> None:
    infill(cfg)


if __name__ == "__main__":
    main()
