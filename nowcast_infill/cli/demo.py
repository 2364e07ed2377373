"""`ni-demo`: Hydra shim over `nowcast_infill.pipeline.demo` (conf/demo.yaml)."""

from __future__ import annotations

import os

from omegaconf import DictConfig

from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.pipeline.end_to_end import demo


@hydra_command("demo")
def main(cfg: DictConfig) -> None:
    demo(cfg)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
