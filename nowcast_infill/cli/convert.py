"""ni-convert: Hydra wrapper around `nowcast_infill.io.convert.convert` (config conf/convert.yaml)."""

from __future__ import annotations

import json
import logging
import sys

import hydra

from nowcast_infill.cli import CONFIG_DIR
from omegaconf import DictConfig, OmegaConf

# Importer options may also be given at the top level (`ni-convert variable=rain`),
# which reads more naturally on the command line than `importer.variable=rain`.
_TOP_LEVEL_OPTIONS = ("zr_a", "zr_b", "pysteps_importer", "variable", "units", "accumulation_interval_s", "proj4", "precision_mm")


def importer_options(cfg: DictConfig) -> dict:
    """Importer keyword arguments from `cfg.importer` and top-level shortcuts, nulls dropped."""
    options = {k: v for k, v in OmegaConf.to_container(cfg.get("importer") or {}, resolve=True).items() if v is not None}
    for key in _TOP_LEVEL_OPTIONS:
        if cfg.get(key) is not None:
            options[key] = cfg.get(key)
    return options


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="convert")
def _app(cfg: DictConfig) -> None:
    from nowcast_infill.io.convert import convert
    from nowcast_infill.errors import UserError
    from nowcast_infill.io.importers import ConversionError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    inputs = OmegaConf.to_container(cfg.inputs) if OmegaConf.is_list(cfg.inputs) else cfg.inputs
    try:
        summary = convert(
            inputs=inputs,
            output=cfg.output,
            source=cfg.source,
            skip_bad=bool(cfg.skip_bad),
            workers=cfg.workers,
            chunks=OmegaConf.to_container(cfg.chunks),
            shards=OmegaConf.to_container(cfg.shards) if cfg.get("shards") is not None else None,
            compression=OmegaConf.to_container(cfg.compression),
            commit_every=int(cfg.commit_every),
            progress=bool(cfg.progress),
            history="ni-convert " + " ".join(sys.argv[1:]),
            lock_timeout=cfg.get("lock_timeout", 0),
            **importer_options(cfg),
        )
    except (UserError, ConversionError, FileNotFoundError, ValueError, TypeError) as err:
        print(f"ni-convert: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=2))


def main() -> None:
    """Console entry point `ni-convert`."""
    _app()


if __name__ == "__main__":
    main()
