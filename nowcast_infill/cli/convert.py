"""ni-convert: Hydra wrapper around `nowcast_infill.io.convert.convert` (config conf/convert.yaml)."""

from __future__ import annotations

import json
import logging
import sys

from omegaconf import DictConfig, OmegaConf

from nowcast_infill.cli.checks import config_bool, config_int, writable_output_store
from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.errors import BadValueError

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


def _check(cfg: DictConfig) -> dict:
    """The checks that need no input read: values, importer options, and that `output` can be written.

    Returns the keyword arguments of `convert` other than inputs/output/history.
    """
    from nowcast_infill.io.importers import get_importer
    from nowcast_infill.io.store import precip_layout

    importer = importer_options(cfg)
    options = dict(
        source=cfg.source,
        skip_bad=config_bool(cfg, "skip_bad"),
        workers=config_int(cfg, "workers", minimum=1, none_ok=True, meaning="reader processes; null = automatic"),
        chunks=OmegaConf.to_container(cfg.chunks),
        shards=OmegaConf.to_container(cfg.shards) if cfg.get("shards") is not None else None,
        compression=OmegaConf.to_container(cfg.compression),
        commit_every=config_int(cfg, "commit_every", minimum=1, meaning="frames per store update"),
        progress=config_bool(cfg, "progress"),
        lock_timeout=cfg.get("lock_timeout", 0),
        max_gap_s=cfg.get("max_gap_s", 3600),
        **importer,
    )
    inputs = _inputs(cfg)
    writable_output_store(cfg.output, "output", inputs=[("inputs", p) for p in ([inputs] if isinstance(inputs, str) else inputs)])
    try:
        from nowcast_infill.io.store import checked_max_gap

        checked_max_gap(options["max_gap_s"])
        get_importer(cfg.source, **importer)
        precip_layout((1, 1), options["chunks"], options["shards"])
    except (ValueError, TypeError) as err:  # unknown source, option or layout key: the message names it
        raise BadValueError(str(err)) from err
    return options


def _inputs(cfg: DictConfig) -> str | list:
    return OmegaConf.to_container(cfg.inputs) if OmegaConf.is_list(cfg.inputs) else cfg.inputs


@hydra_command("convert")
def _app(cfg: DictConfig) -> None:
    from nowcast_infill.io.convert import convert

    options = _check(cfg)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = convert(inputs=_inputs(cfg), output=cfg.output, history="ni-convert " + " ".join(sys.argv[1:]), **options)
    print(json.dumps(summary, indent=2))


def main() -> None:
    """Console entry point `ni-convert`."""
    _app()


if __name__ == "__main__":
    main()
