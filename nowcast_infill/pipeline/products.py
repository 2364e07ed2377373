"""`ni-infill`: infill an archive store with a baseline or a checkpoint (conf/infill.yaml)."""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig, OmegaConf

from nowcast_infill.cli.checks import (
    check_checkpoint,
    config_bool,
    config_float,
    config_int,
    existing_input,
    writable_output_store,
)
from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.errors import BadValueError

log = logging.getLogger(__name__)


def model_choice(cfg: DictConfig) -> tuple[str, dict]:
    """(baseline name or checkpoint path, its options) from the `model` group, `ckpt_path` and `checkpoint`."""
    if cfg.get("ckpt_path"):
        options = cfg.get("checkpoint")
        return str(cfg.ckpt_path), dict(OmegaConf.to_container(options, resolve=True)) if options else {}
    options = cfg.model.get("options")
    return str(cfg.model.name), dict(OmegaConf.to_container(options, resolve=True)) if options else {}


INPUT_FIX = "write it with `ni-convert` (radar files) or `ni-synth` (synthetic data), or fix input="


def check_infill_config(cfg: DictConfig) -> None:
    """Values, then the output (writable, not the input), then the inputs exist; nothing is read."""
    config_int(cfg, "context", minimum=0, none_ok=True, meaning="frames on each side; null = the checkpoint's")
    config_int(cfg, "devices", minimum=1)
    config_float(cfg, "coverage_min_fraction", 0.0, 1.0, low_open=True)
    for key in ("infill_outside_coverage", "progress"):
        config_bool(cfg, key)
    writable_output_store(cfg.output, "output", inputs=[("input", cfg.input)])
    existing_input(cfg.input, "input", "store", fix=INPUT_FIX)
    check_checkpoint(cfg)
    if cfg.get("coverage") is not None:
        existing_input(cfg.coverage, "coverage", "coverage file",
                       fix="pass a .npy bool (y, x) array or a store with coverage(y, x), or coverage=null to derive it")


def run(cfg: DictConfig) -> dict:
    check_infill_config(cfg)
    from nowcast_infill.inference.archive import infill_store, load_predictor

    model, options = model_choice(cfg)
    predictor, info = load_predictor(model, "infill", **options)
    context = cfg.get("context")
    if cfg.get("ckpt_path"):
        trained = (predictor.in_frames - 1) // 2
        if context is not None and int(context) != trained:
            raise BadValueError(f"context={context} but {model} was trained with context={trained} "
                                f"(in_frames={predictor.in_frames}); drop context= or set context={trained}.")
        context = trained
    else:
        if int(cfg.get("devices", 1)) > 1:
            raise BadValueError("devices > 1 runs checkpoints only (a baseline predictor is a closure that cannot be "
                                "sent to worker processes, and it has no device to use); use devices=1 with a baseline.")
        context = 0 if context is None else context
    summary = infill_store(
        predictor, cfg.input, cfg.output, model_info=info, context=int(context), coverage=cfg.coverage,
        coverage_min_fraction=float(cfg.coverage_min_fraction),
        infill_outside_coverage=bool(cfg.infill_outside_coverage), progress=bool(cfg.progress),
        devices=int(cfg.get("devices", 1)), accelerator=str(cfg.get("accelerator", "auto")),
        lock_timeout=cfg.get("lock_timeout", 0),
    )
    log.info("ni-infill %s -> %s: %s", cfg.input, cfg.output, json.dumps(summary))
    print(json.dumps(summary))
    return summary


@hydra_command("infill")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
