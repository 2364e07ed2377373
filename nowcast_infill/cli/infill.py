"""`ni-infill`: infill an archive store with a baseline or a checkpoint (conf/infill.yaml)."""

from __future__ import annotations

import json
import logging

import hydra

from nowcast_infill.cli import CONFIG_DIR
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def model_choice(cfg: DictConfig) -> tuple[str, dict]:
    """(baseline name or checkpoint path, its options) from the `model` group, `ckpt_path` and `checkpoint`."""
    if cfg.get("ckpt_path"):
        options = cfg.get("checkpoint")
        return str(cfg.ckpt_path), dict(OmegaConf.to_container(options, resolve=True)) if options else {}
    options = cfg.model.get("options")
    return str(cfg.model.name), dict(OmegaConf.to_container(options, resolve=True)) if options else {}


def run(cfg: DictConfig) -> dict:
    from nowcast_infill.inference.archive import infill_store, load_predictor

    model, options = model_choice(cfg)
    predictor, info = load_predictor(model, "infill", **options)
    context = cfg.get("context")
    if cfg.get("ckpt_path"):
        trained = (predictor.in_frames - 1) // 2
        if context is not None and int(context) != trained:
            raise ValueError(f"context={context} but {model} was trained with context={trained} "
                             f"(in_frames={predictor.in_frames}); drop context= or set context={trained}.")
        context = trained
    else:
        if int(cfg.get("devices", 1)) > 1:
            raise ValueError("devices > 1 runs checkpoints only (a baseline predictor is a closure that cannot be "
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


@hydra.main(config_path=CONFIG_DIR, config_name="infill", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
