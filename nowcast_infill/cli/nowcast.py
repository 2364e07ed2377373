"""`ni-nowcast`: write a nowcast product from the latest frames of a store (conf/nowcast.yaml)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from nowcast_infill.cli.checks import check_checkpoint, config_bool, config_int, existing_input, writable_output_store
from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.cli.infill import INPUT_FIX, model_choice
from nowcast_infill.errors import BadValueError

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
            raise BadValueError(f"{key}={value} but {cfg.ckpt_path} was trained for {key}={trained}; "
                                f"drop {key}= (null takes the checkpoint's) or set {key}={trained}.")
    return predictor.in_frames, predictor.out_frames


def check_nowcast_config(cfg: DictConfig) -> None:
    """Values, then the output (writable, not the input), then the inputs exist; nothing is read."""
    for key in ("past", "n_leads"):
        config_int(cfg, key, minimum=1, none_ok=True, meaning="null = the checkpoint's")
    overwrite = config_bool(cfg, "overwrite")
    if cfg.get("issue_time") is not None:
        _check_time(cfg.issue_time, "issue_time", "issue_time=2017-08-16T01:50, or issue_time=null for the last frame")
    issue_times = cfg.get("issue_times")
    if issue_times is not None:
        from omegaconf import ListConfig

        if isinstance(issue_times, ListConfig) and len(issue_times) == 2:
            for bound in issue_times:
                _check_time(bound, "issue_times", "issue_times=[2017-08-16T01:00,2017-08-16T01:50]")
        elif issue_times != "all":
            raise BadValueError(f"issue_times={issue_times}: give all, [start, end] (two ISO times of the store) or null "
                                "(one nowcast at issue_time).")
        if cfg.get("issue_time") is not None:
            raise BadValueError(f"issue_time={cfg.issue_time} and issue_times={issue_times} are both set; keep one "
                                "(issue_time for one nowcast, issue_times for a range).")
    writable_output_store(cfg.output, "output", inputs=[("input", cfg.input)],
                          if_store_exists="overwrite" if overwrite else "refuse", overwrite_key="overwrite")
    existing_input(cfg.input, "input", "store", fix=INPUT_FIX)
    check_checkpoint(cfg)


def _check_time(value, key: str, example: str) -> None:
    import numpy as np

    try:
        np.datetime64(str(value), "ns")
    except ValueError:
        raise BadValueError(f"{key}={value}: not a time; give an ISO time of the store, e.g. {example}.") from None


def run(cfg: DictConfig):
    check_nowcast_config(cfg)
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
        issue_time=cfg.issue_time, issue_times=_plain(cfg.get("issue_times")), model_info=info,
        overwrite=bool(cfg.overwrite), lock_timeout=cfg.get("lock_timeout", 0),
    )
    issued = out.attrs.get("issue_time") or f"at {out.attrs['n_issue_times']} times {out.attrs['issue_times']}"
    msg = f"ni-nowcast: {cfg.output}: {out.sizes['lead_time']} leads issued {issued} with {info['model']}"
    log.info(msg)
    print(msg)
    return out


def _plain(value):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


@hydra_command("nowcast")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
