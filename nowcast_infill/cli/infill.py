"""`ni-infill`: infill an archive store with a baseline or a checkpoint (conf/infill.yaml)."""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def model_choice(cfg: DictConfig) -> tuple[str, dict]:
    """(baseline name or checkpoint path, baseline options) from the `model` group and `ckpt_path`."""
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path), {}
    options = cfg.model.get("options")
    return str(cfg.model.name), dict(OmegaConf.to_container(options, resolve=True)) if options else {}


def run(cfg: DictConfig) -> dict:
    from nowcast_infill.inference.archive import infill_store, load_predictor

    model, options = model_choice(cfg)
    predictor, info = load_predictor(model, "infill", **options)
    summary = infill_store(
        predictor, cfg.input, cfg.output, model_info=info, context=int(cfg.context), coverage=cfg.coverage,
        coverage_min_fraction=float(cfg.coverage_min_fraction),
        infill_outside_coverage=bool(cfg.infill_outside_coverage), progress=bool(cfg.progress),
    )
    log.info("ni-infill %s -> %s: %s", cfg.input, cfg.output, json.dumps(summary))
    print(json.dumps(summary))
    return summary


@hydra.main(config_path="../../conf", config_name="infill", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
