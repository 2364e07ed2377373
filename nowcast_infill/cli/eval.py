"""`ni-eval`: Hydra shim over `nowcast_infill.pipeline.evaluate` (conf/eval.yaml)."""

from __future__ import annotations

import os

from omegaconf import DictConfig

from nowcast_infill.cli import command_line_overrides
from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.pipeline.scoring import evaluate


@hydra_command("eval")
def main(cfg: DictConfig) -> None:
    # The overrides tell which task keys the user wrote; the checkpoint's task fills the rest.
    evaluate(cfg, overrides=command_line_overrides())


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
