"""Archive infilling (`ni-infill`) and nowcast products (`ni-nowcast`) written as Zarr stores.

Predictors are plain callables so that baselines and trained networks go through the
same writer:

- infill: `predictor(x_mm_h (T_in, H, W) float32 mm/h with NaN, valid_coverage (H, W) bool)
  -> (1, H, W) mm/h`, `T_in = 2 * context + 1` frames centred on the target frame;
  `valid_coverage` is where filling is wanted. Only NaN pixels inside it are taken
  from the prediction.
- nowcast: `predictor(x_mm_h (past, H, W) mm/h with NaN) -> (n_leads, H, W) mm/h`.

The infilled store is pre-allocated and written frame by frame; `infill_status(time)`
records each finished frame (0 = not yet written), so an interrupted run resumes with
no frame written twice or skipped, and a reader can tell finished frames. Zarr's local
store replaces chunk files atomically, so a killed run never leaves a torn chunk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr

from nowcast_infill import __version__
from nowcast_infill import registry
from nowcast_infill.baselines import NothingToInfillFromError, baseline_task
from nowcast_infill.errors import BadValueError, MissingInputError, OutputExistsError, OutputPathError, UserError
from nowcast_infill.io.files import open_by_suffix
from nowcast_infill.io.store import open_store
from nowcast_infill.io.store_lock import DEFAULT_LOCK_TIMEOUT_S, StoreLock
from nowcast_infill.schema import (
    CRS, MAX_RAIN_RATE_MM_H, MISSING_FRAME, PRECIP, PRECIP_UNITS, SCHEMA_VERSION, implausible_precip, segment_ids,
)

log = logging.getLogger(__name__)

INFILLED = "infilled"
STATUS = "infill_status"
COVERAGE = "coverage"
# infill_status values; 0 means the frame has not been written yet.
STATUS_PENDING, STATUS_COMPLETE, STATUS_INFILLED, STATUS_NOT_INFILLABLE = 0, 1, 2, 3
STATUS_MEANINGS = "pending copied_complete infilled no_data_to_infill_from"

InfillPredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
NowcastPredictor = Callable[[np.ndarray], np.ndarray]


class NoValidFrameError(UserError, ValueError):
    """The input store holds no frame with a single usable precipitation value."""


def first_valid_frame(ds: xr.Dataset, max_mm_h: float = MAX_RAIN_RATE_MM_H) -> int | None:
    """Index of the first non-missing frame with a finite rate in 0..`max_mm_h` mm/h, else None.

    Reads frames in time order and stops at the first valid one (usually the first frame).
    """
    missing = ds[MISSING_FRAME].values.astype(bool)
    for t in np.nonzero(~missing)[0]:
        frame = ds[PRECIP][int(t)].values
        if (np.isfinite(frame) & ~implausible_precip(frame, max_mm_h)).any():
            return int(t)
    return None


def require_valid_frame(ds: xr.Dataset, store_name: str) -> None:
    """Raise NoValidFrameError naming `store_name` (as the user wrote it) when `ds` has no valid frame."""
    if first_valid_frame(ds) is None:
        n_missing = int(ds[MISSING_FRAME].values.astype(bool).sum())
        raise NoValidFrameError(
            f"{store_name}: no valid frame: of its {ds.sizes['time']} frames {n_missing} are missing frames and the "
            f"others hold no finite rate in 0..{MAX_RAIN_RATE_MM_H:g} mm/h, so there is nothing to infill from; "
            "check input= (convert radar files into it with ni-convert).")


@contextlib.contextmanager
def _quiet_consolidated():
    """Silence zarr's note that consolidated metadata is not in the v3 spec (xarray reads it fine)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        yield


def open_radar_store(path: str | Path) -> xr.Dataset:
    """Open a schema store lazily (numpy-backed, no dask) and validate it (docs/schema.md)."""
    return open_store(path, chunks=None)


# ----------------------------------------------------------------------------- coverage

def derive_coverage(ds: xr.Dataset, min_fraction: float = 0.5) -> np.ndarray:
    """Radar coverage `(y, x)` bool: pixels valid in at least `min_fraction` of the non-missing frames.

    Frames flagged `missing_frame` are not counted (they would make every pixel look
    uncovered). The no-data area outside the radar network is NaN in (nearly) every
    frame, a real outage inside it only in some, so a fraction such as 0.5 separates
    them. Reads one frame at a time.
    """
    if not 0.0 < min_fraction <= 1.0:
        raise BadValueError(f"coverage_min_fraction={min_fraction}; it must be in (0, 1].")
    missing = ds[MISSING_FRAME].values.astype(bool)
    counts = np.zeros(ds[PRECIP].shape[1:], dtype=np.int64)
    n_used = 0
    for t in np.nonzero(~missing)[0]:
        counts += np.isfinite(ds[PRECIP][int(t)].values)
        n_used += 1
    if n_used == 0:
        raise ValueError("cannot derive the radar coverage: every frame of the store is a missing frame; "
                         "pass coverage=<file> instead.")
    return counts >= min_fraction * n_used


def load_coverage(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a coverage mask `(y, x)` bool from a `.npy` file or a NetCDF/Zarr variable `coverage`."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: coverage file not found; pass a .npy bool array or a store with "
                                f"a '{COVERAGE}(y, x)' variable, or coverage=null to derive it.")
    if path.suffix == ".npy":
        mask = np.load(path)
    else:
        opened = open_by_suffix(path)
        if COVERAGE not in opened:
            raise BadValueError(f"{path}: no variable '{COVERAGE}'; store the mask as '{COVERAGE}(y, x)' (bool).")
        mask = opened[COVERAGE].values
    if mask.shape != tuple(shape):
        raise BadValueError(f"{path}: coverage mask has shape {mask.shape}, the store grid is {tuple(shape)} (y, x).")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise BadValueError(f"{path}: coverage mask holds values other than 0/1 (True = inside radar coverage).")
    return mask.astype(bool)


# ----------------------------------------------------------------------------- predictors

def baseline_infill_predictor(name: str, **options) -> InfillPredictor:
    """Wrap an infill baseline as an archive predictor (fills NaN pixels inside `valid_coverage`)."""
    if baseline_task(name) != "infill":
        raise BadValueError(f"model={name!r} is a nowcast baseline; ni-infill needs one of nearest, linear, "
                            "biharmonic, laplace.")
    baseline = registry.get_method("classical", name, **options)

    def predictor(x_mm_h: np.ndarray, valid_coverage: np.ndarray) -> np.ndarray:
        centre = x_mm_h[x_mm_h.shape[0] // 2]
        return baseline(x_mm_h, fill_mask=valid_coverage & ~np.isfinite(centre))

    return predictor


def load_predictor(model: str, task: str, **options) -> tuple[Callable, dict]:
    """Predictor and provenance for `model`: a baseline name or a Lightning checkpoint path.

    Returns `(predictor, info)` with `info = {"model", "sha256", "config"}` for the output
    attributes. A checkpoint (an existing file or a name ending in `.ckpt`) becomes a
    `CheckpointPredictor`; `options` then go to `load_checkpoint_predictor` (tile, overlap,
    batch_size, device, stats_path, aux), else to the baseline.
    """
    if task not in ("infill", "nowcast"):
        raise ValueError(f"task={task!r}; expected 'infill' or 'nowcast'.")
    path = Path(model)
    if model.endswith(".ckpt") or path.is_file():
        from nowcast_infill.inference.checkpoint import load_checkpoint_predictor

        return load_checkpoint_predictor(model, task, **options)  # the path as the user wrote it, for messages
    try:
        kind = baseline_task(model)
    except KeyError as err:
        raise BadValueError(f"model={model!r} is neither an existing checkpoint file nor a baseline; {err.args[0]}") from None
    if kind != task:
        raise BadValueError(f"model={model!r} is a {kind} baseline, but ni-{task} needs a {task} baseline; choose "
                            "model=nearest|linear|biharmonic|laplace (infill), model=persistence|extrapolation|sprog (nowcast).")
    predictor = baseline_infill_predictor(model, **options) if task == "infill" else registry.get_method("classical", model, **options)
    info = {"model": model, "sha256": "", "config": json.dumps({"baseline": model, **options}, sort_keys=True, default=str)}
    return predictor, info


# ----------------------------------------------------------------------------- infill writer

def _common_attrs(src: xr.Dataset, input_store: Path, info: dict) -> dict:
    attrs = dict(src.attrs)
    attrs.update({
        "Conventions": "CF-1.10",
        "nowcast_infill_schema": SCHEMA_VERSION,
        "model": info.get("model", ""),
        "model_checkpoint_sha256": info.get("sha256", ""),
        "model_config": info.get("config", ""),
        "source_store": str(Path(input_store).resolve()),
        "history": (str(src.attrs.get("history", "")) + f"\n{' '.join(sys.argv)} (nowcast_infill {__version__})").strip(),
    })
    return attrs


def _grid_vars(src: xr.Dataset) -> dict:
    """Coordinates and grid variables copied unchanged (lat/lon/crs when present)."""
    keep = {}
    for name in ("lat", "lon", CRS):
        if name in src.variables:
            keep[name] = src[name].load()
    return keep


def _create_infill_store(src, input_store, output_store, coverage, coverage_source, info, context,
                         infill_outside_coverage) -> None:
    import dask.array as da

    n_t, height, width = src[PRECIP].shape
    dims = ("time", "y", "x")
    precip_attrs = dict(src[PRECIP].attrs)
    precip_attrs.update({"units": PRECIP_UNITS, "ancillary_variables": f"{INFILLED} {STATUS}"})
    precip_attrs.pop("_FillValue", None)
    out = xr.Dataset(
        {
            PRECIP: (dims, da.full((n_t, height, width), np.nan, dtype=np.float32, chunks=(1, height, width)),
                     precip_attrs),
            INFILLED: (dims, da.zeros((n_t, height, width), dtype=np.uint8, chunks=(1, height, width)),
                       {"long_name": "pixel value comes from the infilling model", "flag_values": [0, 1],
                        "flag_meanings": "observed_or_no_data infilled"}),
            STATUS: (("time",), np.zeros(n_t, dtype=np.int8),
                     {"long_name": "infilling state of the time step; 0 = not written yet",
                      "flag_values": [0, 1, 2, 3], "flag_meanings": STATUS_MEANINGS}),
            COVERAGE: (("y", "x"), coverage,
                       {"long_name": "radar coverage area: pixels eligible for infilling", "source": coverage_source}),
            MISSING_FRAME: src[MISSING_FRAME].load(),
            **_grid_vars(src),
        },
        coords={"time": src["time"], "y": src["y"], "x": src["x"]},
        attrs={**_common_attrs(src, input_store, info), "infill_context": int(context),
               "infill_outside_coverage": int(bool(infill_outside_coverage))},
    )
    encoding = {
        PRECIP: {"chunks": (1, height, width), "_FillValue": np.float32(np.nan)},
        INFILLED: {"chunks": (1, height, width), "_FillValue": None},
        # One chunk per step: committing a step rewrites a single tiny file atomically.
        STATUS: {"chunks": (1,), "_FillValue": None},
    }
    # Metadata and the small eager arrays only; the big arrays stay unwritten until their frame is.
    with _quiet_consolidated():
        out.to_zarr(output_store, mode="w-", compute=False, encoding=encoding, zarr_format=3, consolidated=True)


def _check_resumable(out: xr.Dataset, src: xr.Dataset, output_store: Path, input_store: Path, info: dict) -> None:
    want = {"source_store": str(Path(input_store).resolve()), "model": info.get("model", ""),
            "model_checkpoint_sha256": info.get("sha256", ""), "model_config": info.get("config", "")}
    for key, value in want.items():
        if out.attrs.get(key) != value:
            raise OutputPathError(
                f"{output_store}: exists but was written with {key}={out.attrs.get(key)!r}, this run has {value!r}; "
                "delete it or choose another output to start afresh."
            )
    if STATUS not in out or out[PRECIP].shape != src[PRECIP].shape:
        raise OutputPathError(f"{output_store}: exists but is not an infill store for {input_store} "
                              f"(no '{STATUS}' or another grid); delete it or choose another output.")


class _FrameCache:
    """Input frames by index, keeping only the current window in memory."""

    def __init__(self, precip: xr.DataArray, missing: np.ndarray, segment: np.ndarray | None = None):
        self.precip, self.missing, self.frames = precip, missing, {}
        self.shape = precip.shape[1:]
        # Segment number per time step (schema.segment_ids): the store's neighbour across a
        # segment boundary is hours or years away, not the next time step.
        self.segment = np.zeros(precip.shape[0], np.int64) if segment is None else np.asarray(segment)

    def window(self, t: int, context: int) -> np.ndarray:
        wanted = range(t - context, t + context + 1)
        self.frames = {k: v for k, v in self.frames.items() if k in wanted}
        out = np.empty((len(wanted),) + self.shape, dtype=np.float32)
        for i, k in enumerate(wanted):
            inside = 0 <= k < self.precip.shape[0] and self.segment[k] == self.segment[t]
            if not inside:
                # Beyond the archive's ends or its segment a neighbour is missing, like a gap: NaN, not 0.
                out[i] = np.nan
                continue
            if k not in self.frames:
                self.frames[k] = self.precip[k].values.astype(np.float32, copy=False)
            out[i] = self.frames[k]
        return out


def _predictor_kwargs(predictor, frame_index: np.ndarray) -> dict:
    """Store time indices of the input frames for predictors that read per-time aux fields."""
    return {"frame_index": frame_index} if getattr(predictor, "wants_frame_index", False) else {}


class _FrameInfiller:
    """Computes and commits single frames of an infill store; one per process.

    Frames are independent (own chunk in `precip`/`infilled`, own chunk in `infill_status`),
    so processes writing disjoint frames never touch the same file.
    """

    def __init__(self, predictor, input_store: Path, output_store: Path, context: int, infill_outside_coverage: bool):
        import zarr

        self.predictor, self.input_store, self.output_store, self.context = predictor, input_store, output_store, context
        self.src = open_radar_store(input_store)
        if hasattr(predictor, "bind"):
            predictor.bind(self.src, input_store)
        self.shape = self.src[PRECIP].shape[1:]
        out = xr.open_zarr(output_store, chunks=None)
        coverage = out[COVERAGE].values.astype(bool)
        self.fill_region = np.ones(self.shape, dtype=bool) if infill_outside_coverage else coverage
        group = zarr.open_group(str(output_store), mode="r+")
        self.precip_out, self.infilled_out, self.status_out = group[PRECIP], group[INFILLED], group[STATUS]
        self.cache = _FrameCache(self.src[PRECIP], self.src[MISSING_FRAME].values,
                                 segment_ids(self.src["time"].values, self.src.attrs.get("time_step_s")))
        self.no_flag = np.zeros(self.shape, dtype=np.uint8)

    def pending(self) -> np.ndarray:
        return np.nonzero(np.asarray(self.status_out[:]) == STATUS_PENDING)[0]

    def compute(self, t: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(frame (H, W) mm/h, infilled flag (H, W) uint8, status code) of time step `t`."""
        window = self.cache.window(t, self.context)
        observed = window[self.context]
        holes = self.fill_region & ~np.isfinite(observed)
        if not holes.any():
            return observed, self.no_flag, STATUS_COMPLETE
        frame_index = np.arange(t - self.context, t + self.context + 1)
        try:
            pred = np.asarray(self.predictor(window, self.fill_region, **_predictor_kwargs(self.predictor, frame_index)),
                              dtype=np.float32)
        except NothingToInfillFromError as err:
            log.warning("%s: frame %s not infilled: %s", self.input_store, self.src["time"].values[t], err)
            return observed, self.no_flag, STATUS_NOT_INFILLABLE
        if pred.shape != (1,) + self.shape:
            raise ValueError(f"predictor returned shape {pred.shape}; expected (1, {self.shape[0]}, {self.shape[1]}) mm/h.")
        # Observed pixels are kept bit for bit; the model answers only inside the holes.
        filled = holes & np.isfinite(pred[0])
        return np.where(filled, pred[0], observed).astype(np.float32), filled.astype(np.uint8), STATUS_INFILLED

    def commit(self, t: int, frame: np.ndarray, flag: np.ndarray, code: int) -> None:
        self.precip_out[t] = frame
        self.infilled_out[t] = flag
        # Committed last: a frame counts as written only once its data is on disk.
        self.status_out[t] = code


def _open_or_create_infill_store(predictor, input_store: Path, output_store: Path, info: dict, context: int,
                                 coverage, coverage_min_fraction: float, infill_outside_coverage: bool) -> None:
    src = open_radar_store(input_store)
    shape = src[PRECIP].shape[1:]
    if output_store.exists():
        out = xr.open_zarr(output_store, chunks=None)
        _check_resumable(out, src, output_store, input_store, info)
        log.info("%s: resuming, %d of %d frames already written", output_store,
                 int((out[STATUS].values != STATUS_PENDING).sum()), out.sizes["time"])
        return
    if coverage is None:
        coverage_mask = derive_coverage(src, coverage_min_fraction)
        coverage_source = f"derived: valid in >= {coverage_min_fraction:g} of the non-missing frames"
    elif isinstance(coverage, (str, Path)):
        coverage_mask, coverage_source = load_coverage(coverage, shape), f"file: {Path(coverage).resolve()}"
    else:
        coverage_mask = np.asarray(coverage, dtype=bool)
        if coverage_mask.shape != shape:
            raise BadValueError(f"coverage has shape {coverage_mask.shape}; the store grid is {shape} (y, x).")
        coverage_source = "given by the caller"
    _create_infill_store(src, input_store, output_store, coverage_mask, coverage_source, info, context,
                         infill_outside_coverage)


def _summary(output_store: Path, written: int) -> dict:
    import zarr

    final = np.asarray(zarr.open_array(str(output_store / STATUS), mode="r")[:])
    return {"frames": int(final.size), "written_this_run": int(written),
            "complete": int((final == STATUS_COMPLETE).sum()), "infilled": int((final == STATUS_INFILLED).sum()),
            "not_infillable": int((final == STATUS_NOT_INFILLABLE).sum()),
            "pending": int((final == STATUS_PENDING).sum())}


def infill_store(
    predictor: InfillPredictor,
    input_store: str | Path,
    output_store: str | Path,
    *,
    model_info: dict | None = None,
    context: int = 0,
    coverage: np.ndarray | str | Path | None = None,
    coverage_min_fraction: float = 0.5,
    infill_outside_coverage: bool = False,
    progress: bool = True,
    devices: int = 1,
    accelerator: str = "auto",
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
) -> dict:
    """Infill every incomplete frame of `input_store` into `output_store` (resumable).

    Args:
        predictor: `(x_mm_h (2*context+1, H, W) with NaN, valid_coverage (H, W) bool) -> (1, H, W)` mm/h;
            one with `wants_frame_index = True` also gets `frame_index=(2*context+1,)` store indices,
            and one with `bind(ds, path)` is bound to the input store first.
        model_info: `{"model", "sha256", "config"}` recorded in the attributes (see `load_predictor`).
        context: neighbouring frames on each side given to the predictor.
        coverage: `(H, W)` bool mask, a file (see `load_coverage`), or None to derive it
            with `derive_coverage(min_fraction=coverage_min_fraction)`.
        infill_outside_coverage: also fill NaN pixels outside the coverage.
        devices: > 1 splits the pending frames over that many processes with Lightning
            `predict` (`ddp_spawn`, one process per device); the predictor must be picklable.
        accelerator: Lightning accelerator of the multi-process path (`auto`, `cpu`, `gpu`).
        lock_timeout: seconds to wait while another writer holds `output_store` (0: fail at
            once with a StoreLockedError naming it); the lock is held for the whole run.

    A frame without NaN in the fill region is copied bit-identical. In an incomplete frame
    only NaN pixels inside the fill region take the prediction; `infilled` marks them.
    Returns a summary dict of counts per status. Raises NoValidFrameError, before any
    output is written, when no frame of the input holds a valid value.
    """
    from tqdm.auto import tqdm

    output_as_given = str(output_store)
    input_name = str(input_store)
    input_store, output_store = Path(input_store), Path(output_store)
    if context < 0:
        raise BadValueError(f"context={context}; it must be >= 0 frames.")
    if int(devices) < 1:
        raise BadValueError(f"devices={devices}; it must be >= 1.")
    require_valid_frame(open_radar_store(input_store), input_name)
    info = dict(model_info or {"model": getattr(predictor, "__name__", type(predictor).__name__), "sha256": "", "config": ""})
    # One writer per output store, from its creation / resume check to the last frame
    # (the processes of `devices > 1` write under this process's lock).
    with StoreLock(output_as_given, timeout=lock_timeout):
        _open_or_create_infill_store(predictor, input_store, output_store, info, context, coverage,
                                     coverage_min_fraction, infill_outside_coverage)
        if int(devices) > 1:
            from nowcast_infill.inference.distributed import infill_frames_distributed

            written = infill_frames_distributed(predictor, input_store, output_store, context=context,
                                                infill_outside_coverage=infill_outside_coverage, devices=int(devices),
                                                accelerator=accelerator, progress=progress)
            return _summary(output_store, written)
        infiller = _FrameInfiller(predictor, input_store, output_store, context, infill_outside_coverage)
        pending = infiller.pending()
        for t in tqdm(pending, desc=f"infill {output_store.name}", unit="frame", disable=not progress):
            infiller.commit(int(t), *infiller.compute(int(t)))
        return _summary(output_store, pending.size)


# ----------------------------------------------------------------------------- nowcast products

def issue_indices(times: np.ndarray, past: int, store_name: str, issue_time=None, issue_times=None,
                  time_step_s=None) -> list[int]:
    """Store time indices to issue nowcasts at.

    `issue_times`: None (one issue: `issue_time`, default the last frame), "all" (every frame
    with `past` frames up to it), or `[start, end]` ISO times (every store frame in between,
    both included; each needs `past` frames up to it). The `past` frames must lie in the issue
    time's own segment (schema.segment_ids, from `time_step_s`): the store holds no time between
    segments, so frames before a segment start are another event's.
    """
    times = np.asarray(times)
    first_possible = past - 1
    segment = segment_ids(times, time_step_s)
    segment_start = np.searchsorted(segment, segment)  # segment ids rise along time
    frames_in_segment = np.arange(len(times)) - segment_start + 1
    if issue_times is None:
        if issue_time is None:
            end = len(times) - 1
        else:
            hits = np.nonzero(times == np.datetime64(issue_time, "ns"))[0]
            if hits.size == 0:
                raise BadValueError(f"{store_name}: issue_time {issue_time} is not a time of the store "
                                    f"({times[0]} .. {times[-1]}); pick one of them or issue_time=null for the last frame.")
            end = int(hits[0])
        if end < first_possible:
            raise BadValueError(f"{store_name}: only {end + 1} frames up to {times[end]}, but past={past} are needed.")
        if frames_in_segment[end] < past:
            start = int(segment_start[end])
            raise BadValueError(f"{store_name}: issue time {times[end]} has only {frames_in_segment[end]} frames since "
                                f"its segment began at {times[start]} (the store holds no time before it), but "
                                f"past={past} are needed; pick a later issue_time or a smaller past.")
        return [end]
    if issue_time is not None:
        raise BadValueError(f"issue_time={issue_time} and issue_times={issue_times} are both set; keep one "
                            "(issue_time for one nowcast, issue_times for a range).")
    if isinstance(issue_times, str):
        if issue_times != "all":
            raise BadValueError(f"issue_times={issue_times}: give all, [start, end] (ISO times) or null.")
        wanted = np.arange(first_possible, len(times))
    else:
        bounds = list(issue_times)
        if len(bounds) != 2:
            raise BadValueError(f"issue_times={bounds}: give [start, end] (two ISO times), all or null.")
        start, end = (np.datetime64(str(b), "ns") for b in bounds)
        if end < start:
            raise BadValueError(f"issue_times=[{bounds[0]}, {bounds[1]}]: the end is before the start; swap them.")
        wanted = np.nonzero((times >= start) & (times <= end))[0]
        if wanted.size and wanted[0] < first_possible:
            raise BadValueError(f"issue_times starts at {bounds[0]}, but a nowcast needs past={past} frames up to its "
                                f"issue time: start at {_iso(times[first_possible])} or later.")
    after_segment_start = wanted[frames_in_segment[wanted] < past]
    if after_segment_start.size:
        log.warning("%s: %d issue times in the range lie within past=%d frames after a segment start (first %s) "
                    "and get no nowcast: their past frames would be another event's.",
                    store_name, after_segment_start.size, past, _iso(times[after_segment_start[0]]))
        wanted = wanted[frames_in_segment[wanted] >= past]
    if wanted.size == 0:
        raise BadValueError(f"issue_times={issue_times}: no frame of {store_name} ({times[0]} .. {times[-1]}) "
                            f"with past={past} frames before it lies in that range.")
    return [int(i) for i in wanted]


def write_nowcast(
    predictor: NowcastPredictor,
    input_store: str | Path,
    output_store: str | Path,
    *,
    past: int,
    n_leads: int,
    issue_time: str | np.datetime64 | None = None,
    issue_times: str | list | None = None,
    model_info: dict | None = None,
    overwrite: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
) -> xr.Dataset:
    """Forecast `n_leads` frames from the `past` frames ending at each issue time.

    One issue (`issue_time`, default the last frame): `precip(lead_time, y, x)` mm/h (NaN = no
    forecast) with `lead_time` (timedelta, CF `forecast_period`), `time(lead_time)` valid times
    and the scalar `forecast_reference_time` (= issue time).
    A range (`issue_times="all"` or `[start, end]`, see `issue_indices`): `precip(
    forecast_reference_time, lead_time, y, x)` with `time(forecast_reference_time, lead_time)`,
    written one issue time at a time (memory holds one forecast); an issue time whose past
    frames hold no data at all gets an all-NaN forecast, counted in the attribute
    `issue_times_without_data`.
    Both carry the input's grid variables. The store is written to a temporary path and
    renamed, so it is never half-written; the output's store lock (`lock_timeout`, as for
    `infill_store`) keeps two runs writing one product from replacing each other's half-way.
    Returns the product, opened lazily from the output.
    """
    output_as_given = str(output_store)
    input_store, output_store = Path(input_store), Path(output_store)
    if past < 1 or n_leads < 1:
        raise BadValueError(f"past={past} and n_leads={n_leads} must both be >= 1.")
    if output_store.exists() and not overwrite:
        raise OutputExistsError(f"{output_store}: exists; pass overwrite=true or choose another output.")
    src = open_radar_store(input_store)
    times = src["time"].values
    issues = issue_indices(times, past, str(input_store), issue_time, issue_times, src.attrs.get("time_step_s"))
    step_s = src.attrs.get("time_step_s")
    if not step_s:
        raise ValueError(f"{input_store}: attribute 'time_step_s' is missing; it defines the lead times.")
    if hasattr(predictor, "bind"):
        predictor.bind(src, input_store)
    lead = (np.arange(1, n_leads + 1) * np.timedelta64(int(step_s), "s")).astype("timedelta64[ns]")
    info = dict(model_info or {"model": getattr(predictor, "__name__", ""), "sha256": "", "config": ""})
    precip_attrs = {k: v for k, v in src[PRECIP].attrs.items() if k != "_FillValue"}
    lead_attrs = {"standard_name": "forecast_period", "long_name": "time since the issue time"}
    valid_attrs = {"standard_name": "time", "long_name": "valid time", "timezone": "UTC"}
    issue_attrs = {"standard_name": "forecast_reference_time", "timezone": "UTC"}
    attrs = {**_common_attrs(src, input_store, info), "product": "nowcast", "past_frames": int(past), "n_leads": int(n_leads)}
    single = issue_times is None

    def forecast_at(end: int) -> np.ndarray | None:
        x = src[PRECIP][end + 1 - past:end + 1].values.astype(np.float32)
        if not single and not np.isfinite(x).any():
            return None  # no data to forecast from: NaN, counted
        forecast = np.asarray(predictor(x, **_predictor_kwargs(predictor, np.arange(end + 1 - past, end + 1))),
                              dtype=np.float32)
        if forecast.shape != (n_leads,) + x.shape[1:]:
            raise ValueError(f"predictor returned shape {forecast.shape}; expected ({n_leads}, {x.shape[1]}, {x.shape[2]}).")
        return forecast

    def issue_dataset(end: int, forecast: np.ndarray) -> xr.Dataset:
        coords = {"lead_time": ("lead_time", lead, lead_attrs), "y": src["y"], "x": src["x"]}
        if single:
            return xr.Dataset(
                {PRECIP: (("lead_time", "y", "x"), forecast, precip_attrs), **_grid_vars(src)},
                coords={**coords, "time": ("lead_time", (times[end] + lead).astype("datetime64[ns]"), valid_attrs),
                        "forecast_reference_time": ((), times[end], issue_attrs)},
                attrs={**attrs, "issue_time": _iso(times[end])})
        return xr.Dataset(
            {PRECIP: (("forecast_reference_time", "lead_time", "y", "x"), forecast[None], precip_attrs)},
            coords={**coords, "forecast_reference_time": ("forecast_reference_time", times[end:end + 1], issue_attrs),
                    "time": (("forecast_reference_time", "lead_time"),
                             (times[end] + lead)[None].astype("datetime64[ns]"), valid_attrs)},
            attrs=attrs)  # on every piece: an append replaces the store's attributes with the piece's

    staging = output_store.with_name(f"{output_store.name}.tmp-{os.getpid()}")
    with StoreLock(output_as_given, timeout=lock_timeout):
        if output_store.exists() and not overwrite:  # written by another run since the check above
            raise FileExistsError(f"{output_as_given}: exists; pass overwrite=true or choose another output.")
        shutil.rmtree(staging, ignore_errors=True)
        without_data = 0
        with _quiet_consolidated():
            for n, end in enumerate(issues):
                forecast = forecast_at(end)
                if forecast is None:
                    without_data += 1
                    forecast = np.full((n_leads,) + src[PRECIP].shape[1:], np.nan, dtype=np.float32)
                piece = issue_dataset(end, forecast)
                if single:
                    piece.to_zarr(staging, mode="w", zarr_format=3, consolidated=True,
                                  encoding={PRECIP: {"_FillValue": np.float32(np.nan)}})
                elif n == 0:
                    piece = piece.assign(_grid_vars(src))
                    piece.to_zarr(staging, mode="w", zarr_format=3, consolidated=True,
                                  encoding={PRECIP: {"_FillValue": np.float32(np.nan), "chunks": (1, n_leads) + forecast.shape[1:]},
                                            # fixed units: xarray would pick them from the first issue
                                            # time alone (days) and truncate the appended ones
                                            **{name: {"units": "seconds since 1970-01-01", "dtype": "int64"}
                                               for name in ("forecast_reference_time", "time")}})
                else:
                    piece.to_zarr(staging, mode="a", append_dim="forecast_reference_time", zarr_format=3, consolidated=True)
            if not single:
                import zarr

                group = zarr.open_group(staging, mode="r+")
                group.attrs.update({"issue_times": f"{_iso(times[issues[0]])} .. {_iso(times[issues[-1]])}",
                                    "n_issue_times": len(issues), "issue_times_without_data": without_data})
                zarr.consolidate_metadata(staging)
        if without_data:
            log.warning("%s: %d of %d issue times have no data in their %d past frames: their forecasts are NaN.",
                        output_as_given, without_data, len(issues), past)
        if output_store.exists():
            shutil.rmtree(output_store)
        os.replace(staging, output_store)
    with _quiet_consolidated():
        return xr.open_zarr(output_store)


def _iso(time: np.datetime64) -> str:
    return str(np.datetime_as_string(time, unit="s")) + "Z"
