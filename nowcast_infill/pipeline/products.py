"""Archive products from a classical method or a checkpoint: `infill(cfg)` (`ni-infill`,
conf/infill.yaml) fills the holes of a store, `nowcast(cfg)` (`ni-nowcast`, conf/nowcast.yaml)
forecasts from its latest frames."""

from __future__ import annotations

import json
import logging

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from nowcast_infill.errors import BadValueError
from nowcast_infill.pipeline.inputs import (
    check_checkpoint,
    config_bool,
    config_dict,
    config_float,
    config_int,
    existing_input,
    writable_output_store,
)

log = logging.getLogger(__name__)


def model_choice(cfg: DictConfig) -> tuple[str, dict]:
    """(baseline name or checkpoint path, its options) from the `model` group, `ckpt_path` and `checkpoint`."""
    if cfg.get("ckpt_path"):
        options = cfg.get("checkpoint")
        return str(cfg.ckpt_path), config_dict(options) if options else {}
    options = cfg.model.get("options")
    return str(cfg.model.name), config_dict(options) if options else {}


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
        existing_input(
            cfg.coverage,
            "coverage",
            "coverage file",
            fix="pass a .npy bool (y, x) array or a store with coverage(y, x), or coverage=null to derive it",
        )


def infill(cfg: DictConfig) -> dict:
    """Infill `cfg.input` into `cfg.output` (resumable); returns the summary of frame counts per status."""
    check_infill_config(cfg)
    from nowcast_infill.inference.archive import infill_store
    from nowcast_infill.inference.predictors import load_predictor

    model, options = model_choice(cfg)
    predictor, info = load_predictor(model, "infill", **options)
    context = cfg.get("context")
    if cfg.get("ckpt_path"):
        from nowcast_infill.inference.checkpoint import CheckpointPredictor

        # check_infill_config made ckpt_path an existing file, which load_predictor loads as a checkpoint
        assert isinstance(predictor, CheckpointPredictor)
        trained = (predictor.in_frames - 1) // 2
        if context is not None and int(context) != trained:
            raise BadValueError(
                f"context={context} but {model} was trained with context={trained} "
                f"(in_frames={predictor.in_frames}); drop context= or set context={trained}."
            )
        context = trained
    else:
        if int(cfg.get("devices", 1)) > 1:
            raise BadValueError(
                "devices > 1 runs checkpoints only (a baseline predictor is a closure that cannot be "
                "sent to worker processes, and it has no device to use); use devices=1 with a baseline."
            )
        context = 0 if context is None else context
    summary = infill_store(
        predictor,
        cfg.input,
        cfg.output,
        model_info=info,
        context=int(context),
        coverage=cfg.coverage,
        coverage_min_fraction=float(cfg.coverage_min_fraction),
        infill_outside_coverage=bool(cfg.infill_outside_coverage),
        progress=bool(cfg.progress),
        devices=int(cfg.get("devices", 1)),
        accelerator=str(cfg.get("accelerator", "auto")),
        lock_timeout=cfg.get("lock_timeout", 0),
    )
    log.info("ni-infill %s -> %s: %s", cfg.input, cfg.output, json.dumps(summary))
    print(json.dumps(summary))
    return summary


# past / n_leads of a baseline when the config leaves them null
BASELINE_PAST, BASELINE_N_LEADS = 4, 6


def frame_counts(cfg: DictConfig, predictor=None) -> tuple[int, int]:
    """(past, n_leads): the checkpoint's own frame counts, or the config's for a baseline."""
    past, n_leads = cfg.get("past"), cfg.get("n_leads")
    if predictor is None:
        return (BASELINE_PAST if past is None else int(past)), (BASELINE_N_LEADS if n_leads is None else int(n_leads))
    for key, value, trained in (("past", past, predictor.in_frames), ("n_leads", n_leads, predictor.out_frames)):
        if value is not None and int(value) != trained:
            raise BadValueError(
                f"{key}={value} but {cfg.ckpt_path} was trained for {key}={trained}; "
                f"drop {key}= (null takes the checkpoint's) or set {key}={trained}."
            )
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
        if isinstance(issue_times, ListConfig) and len(issue_times) == 2:
            for bound in issue_times:
                _check_time(bound, "issue_times", "issue_times=[2017-08-16T01:00,2017-08-16T01:50]")
        elif issue_times != "all":
            raise BadValueError(
                f"issue_times={issue_times}: give all, [start, end] (two ISO times of the store) or null "
                "(one nowcast at issue_time)."
            )
        if cfg.get("issue_time") is not None:
            raise BadValueError(
                f"issue_time={cfg.issue_time} and issue_times={issue_times} are both set; keep one "
                "(issue_time for one nowcast, issue_times for a range)."
            )
    writable_output_store(
        cfg.output,
        "output",
        inputs=[("input", cfg.input)],
        if_store_exists="overwrite" if overwrite else "refuse",
        overwrite_key="overwrite",
    )
    existing_input(cfg.input, "input", "store", fix=INPUT_FIX)
    check_checkpoint(cfg)


def _check_time(value, key: str, example: str) -> None:
    try:
        np.datetime64(str(value), "ns")
    except ValueError:
        raise BadValueError(f"{key}={value}: not a time; give an ISO time of the store, e.g. {example}.") from None


def nowcast(cfg: DictConfig):
    """Write the nowcast product of `cfg.input` into `cfg.output`; returns it, opened lazily (xarray)."""
    check_nowcast_config(cfg)
    from nowcast_infill.inference.nowcast_product import write_nowcast
    from nowcast_infill.inference.predictors import load_predictor

    model, options = model_choice(cfg)
    if cfg.get("ckpt_path"):
        predictor, info = load_predictor(model, "nowcast", **options)
        past, n_leads = frame_counts(cfg, predictor)
    else:
        past, n_leads = frame_counts(cfg)
        options.setdefault("n_leads", n_leads)
        predictor, info = load_predictor(model, "nowcast", **options)
    out = write_nowcast(
        predictor,
        cfg.input,
        cfg.output,
        past=past,
        n_leads=n_leads,
        issue_time=cfg.issue_time,
        issue_times=_plain(cfg.get("issue_times")),
        model_info=info,
        overwrite=bool(cfg.overwrite),
        lock_timeout=cfg.get("lock_timeout", 0),
    )
    issued = out.attrs.get("issue_time") or f"at {out.attrs['n_issue_times']} times {out.attrs['issue_times']}"
    msg = f"ni-nowcast: {cfg.output}: {out.sizes['lead_time']} leads issued {issued} with {info['model']}"
    log.info(msg)
    print(msg)
    return out


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
