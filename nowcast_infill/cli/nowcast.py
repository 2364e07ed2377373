"""`ni-nowcast`: write a nowcast product from the latest frames of a store (conf/nowcast.yaml)."""

from __future__ import annotations

import logging

import hydra

from nowcast_infill.cli import CONFIG_DIR
from omegaconf import DictConfig

from nowcast_infill.cli.infill import model_choice

log = logging.getLogger(__name__)

# past / n_leads of a baseline when the config leaves them null
BASELINE_PAST, BASELINE_N_LEADS = 4, 6


def frame_counts(cfg: DictConfig, predictor=None) -> tuple[int, int]:
    """(past, n_leads): the checkpoint's own frame counts, or the config's for a baseline."""
    past, n_leads = cfg.get("past"), cfg.get("n_leads")
    if predictor is None:
        return (BASELINE_PAST if past is None else int(past)), (BASELINE_N_LEADS if n_leads is None else int(n_leads))
    for key, value, trained in (("past", past, predictor.in_frames), ("n_leads", n_leads, predictor.out_frames)):
        if value is not None and int(value) != trained:
            raise ValueError(f"{key}={value} but {cfg.ckpt_path} was trained for {key}={trained}; "
                             f"drop {key}= (null takes the checkpoint's) or set {key}={trained}.")
    return predictor.in_frames, predictor.out_frames


def run(cfg: DictConfig):
    from nowcast_infill.inference.archive import load_predictor, write_nowcast

    model, options = model_choice(cfg)
    if cfg.get("ckpt_path"):
        predictor, info = load_predictor(model, "nowcast", **options)
        past, n_leads = frame_counts(cfg, predictor)
    else:
        past, n_leads = frame_counts(cfg)
        options.setdefault("n_leads", n_leads)
        predictor, info = load_predictor(model, "nowcast", **options)
    out = write_nowcast(
        predictor, cfg.input, cfg.output, past=past, n_leads=n_leads,
        issue_time=cfg.issue_time, model_info=info, overwrite=bool(cfg.overwrite),
        lock_timeout=cfg.get("lock_timeout", 0),
    )
    msg = (f"ni-nowcast: {cfg.output}: {out.sizes['lead_time']} leads issued "
           f"{out.attrs['issue_time']} with {info['model']}")
    log.info(msg)
    print(msg)
    return out


@hydra.main(config_path=CONFIG_DIR, config_name="nowcast", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
