"""`ni-convert`: Hydra shim over `nowcast_infill.pipeline.convert` (conf/convert.yaml)."""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.pipeline.stores import convert


@hydra_command("convert")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The store's `history` attribute records the command as it was typed.
    convert(cfg, history="ni-convert " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
