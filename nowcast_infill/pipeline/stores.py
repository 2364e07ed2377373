"""The input stores: `convert(cfg)` (`ni-convert`, conf/convert.yaml) writes radar files into a
store with `nowcast_infill.io.convert`, `synth(cfg)` (`ni-synth`, conf/synth.yaml) writes the
embedded synthetic store."""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nowcast_infill.errors import BadValueError
from nowcast_infill.pipeline.inputs import (
    config_bool,
    config_dict,
    config_float,
    config_int,
    writable_output_store,
)
from nowcast_infill.registry import get_method

# Importer options may also be given at the top level (`ni-convert variable=rain`),
# which reads more naturally on the command line than `importer.variable=rain`.
_TOP_LEVEL_OPTIONS = (
    "zr_a",
    "zr_b",
    "pysteps_importer",
    "variable",
    "units",
    "accumulation_interval_s",
    "proj4",
    "precision_mm",
)


def importer_options(cfg: DictConfig) -> dict:
    """Importer keyword arguments from `cfg.importer` and top-level shortcuts, nulls dropped."""
    # an empty or removed `importer` node (importer={} / ~importer) means no options
    given = config_dict(cfg.importer) if cfg.get("importer") else {}
    options = {k: v for k, v in given.items() if v is not None}
    for key in _TOP_LEVEL_OPTIONS:
        if cfg.get(key) is not None:
            options[key] = cfg.get(key)
    return options


def _check(cfg: DictConfig) -> dict:
    """The checks that need no input read: values, importer options, and that `output` can be written.

    Returns the keyword arguments of `convert` other than inputs/output/history.
    """
    from nowcast_infill.io.store import (
        DEFAULT_MAX_GAP_S,
        checked_max_gap,
        precip_layout,
    )

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
        max_gap_s=cfg.get("max_gap_s", DEFAULT_MAX_GAP_S),
        **importer,
    )
    inputs = _inputs(cfg)
    writable_output_store(
        cfg.output, "output", inputs=[("inputs", p) for p in ([inputs] if isinstance(inputs, str) else inputs)]
    )
    try:
        checked_max_gap(options["max_gap_s"])
        get_method("source", cfg.source, **importer)
        precip_layout((1, 1), options["chunks"], options["shards"])
    except (ValueError, TypeError) as err:  # unknown source, option or layout key: the message names it
        raise BadValueError(str(err)) from err
    return options


def _inputs(cfg: DictConfig) -> str | list:
    if cfg.get("inputs") is None:
        raise BadValueError("inputs: required but not set; pass inputs=<glob, file or bundle> or a list of them.")
    if OmegaConf.is_list(cfg.inputs):
        listed = OmegaConf.to_container(cfg.inputs)
        assert isinstance(listed, list)  # a ListConfig converts to a list
        return listed
    return cfg.inputs


_STEPS = ("plan", "write", "finalise", "all")


def _many_writers(cfg: DictConfig, step: str, history: str) -> dict:
    """`step=plan|write|finalise|all`: conversion by many writers (nowcast_infill/io/region_writer.py)."""
    from nowcast_infill.io import region_writer

    lock_timeout = cfg.get("lock_timeout", 0)
    if step == "write":
        task = cfg.get("task_id")
        if task is None:
            task = os.environ.get("SLURM_ARRAY_TASK_ID")
        if task is None:
            raise BadValueError(
                "task_id=null: step=write needs the task number (task_id=K, or run it as a Slurm array task)."
            )
        try:
            task = int(task)
        except ValueError:
            raise BadValueError(f"task_id={task!r}: must be a task number 0, 1, ...") from None
        return region_writer.write_region(cfg.output, task, lock_timeout=lock_timeout)
    if step == "finalise":
        return region_writer.finalise_store(cfg.output, history=history, lock_timeout=lock_timeout)
    options = _check(cfg)
    # A pre-sized store covers its whole time range as one segment: max_gap_s is for appends.
    for key in ("workers", "commit_every", "progress", "max_gap_s"):
        options.pop(key)
    tasks = config_int(cfg, "tasks", minimum=1, meaning="writers the inputs are split between")
    assert tasks is not None  # none_ok is off
    time_range = OmegaConf.to_container(cfg.time_range) if cfg.get("time_range") is not None else None
    if time_range is not None and len(time_range) != 2:
        raise BadValueError(
            f"time_range={time_range!r}: must be [first, last], e.g. ['2017-08-16T00:05', '2017-08-17T00:00']."
        )
    time_step_s = config_int(cfg, "time_step_s", minimum=1, none_ok=True, meaning="seconds between frames")
    options["split"] = cfg.get("split") or "inputs"
    options.update(time_range=time_range, time_step_s=time_step_s, history=history)
    if step == "plan":
        return region_writer.plan_store(_inputs(cfg), cfg.output, tasks=tasks, **options)
    return region_writer.convert_parallel(_inputs(cfg), cfg.output, processes=tasks, **options)


def convert(cfg: DictConfig, history: str = "ni-convert") -> dict:
    """Convert `cfg.inputs` into the store `cfg.output` (or one `cfg.step` of a conversion by many
    writers); prints and returns the summary. `history`: the command recorded in the store."""
    from nowcast_infill.io.convert import convert as convert_files

    step = cfg.get("step")
    if step is not None and step not in _STEPS:
        raise BadValueError(f"step={step!r}: must be null (one process) or one of {', '.join(_STEPS)}.")
    if step is not None:
        summary = _many_writers(cfg, step, history)
    else:
        options = _check(cfg)
        summary = convert_files(inputs=_inputs(cfg), output=cfg.output, history=history, **options)
    print(json.dumps(summary, indent=2))
    return summary


GENERATOR_KEYS = (
    "seed", "n_times", "ny", "nx", "spacing_km", "time_step_s", "start", "center_lat", "center_lon",
    "coverage_radius_km", "aux_factor", "wet_fraction", "missing_frame_indices",
)  # fmt: skip


def check_synth_config(cfg: DictConfig) -> None:
    """The values a user most often mistypes, and the output, before the data is generated."""
    for key, minimum in (("seed", 0), ("n_times", 1), ("ny", 1), ("nx", 1), ("time_step_s", 1), ("aux_factor", 1)):
        config_int(cfg, key, minimum=minimum)
    config_float(cfg, "wet_fraction", 0.0, 1.0, low_open=True)
    overwrite = config_bool(cfg, "overwrite")
    writable_output_store(
        cfg.output, "output", if_store_exists="overwrite" if overwrite else "refuse", overwrite_key="overwrite"
    )


def synth(cfg: DictConfig) -> Path:
    """Write the synthetic store `cfg.output`; prints a one-line summary and returns its path."""
    check_synth_config(cfg)
    import numpy as np
    import xarray as xr

    from nowcast_infill.data.synthetic import write_synthetic_store

    options = {k: OmegaConf.to_container(cfg[k]) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in GENERATOR_KEYS}
    chunks = config_dict(cfg.chunks, resolve=False) if cfg.chunks is not None else None
    # Hydra leaves the working directory alone (version_base 1.3), so a relative output
    # is relative to where the command was run.
    path = write_synthetic_store(Path(cfg.output), chunks=chunks, overwrite=bool(cfg.overwrite), **options)
    ds = xr.open_zarr(path)
    precip = ds["precip"].values
    covered = ~np.isnan(precip)
    print(
        f"wrote {path}: {ds.sizes['time']} frames of {ds.sizes['y']} x {ds.sizes['x']}, "
        f"no-data {1 - covered.mean():.1%}, wet {np.mean(precip[covered] > 0):.1%}, "
        f"max {np.nanmax(precip):.1f} mm/h, radars {', '.join(ds.attrs['radar_sites'])}"
    )
    return path
