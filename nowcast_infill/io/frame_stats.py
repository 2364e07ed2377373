"""Per-frame statistics of a radar store, so readers never scan `precip` to start up.

Stored in the store (docs/schema.md § Per-frame statistics) as small arrays along `time`
plus one `(y, x)` count:

| array | dims | dtype | meaning |
|---|---|---|---|
| `frame_valid_count` | `(time,)` | int32 | pixels with a plausible rate (finite, 0..`max_rain_rate_mm_h`) |
| `frame_wet_count` | `(time, wet_threshold)` | int32 | valid pixels with rate >= each `wet_threshold` (mm/h) |
| `frame_log1p_mean` | `(time,)` | float64 | mean of log1p(rate) over the valid pixels |
| `frame_log1p_m2` | `(time,)` | float64 | sum of squared deviations of log1p(rate) from that mean, over the valid pixels |
| `frame_implausible_count` | `(time,)` | int32 | pixels negative, +-inf or above `max_rain_rate_mm_h` (read as no data) |
| `frame_stats_done` | `(time,)` | bool | the statistics of this frame are computed (False: not yet, e.g. a version 1 store) |
| `pixel_valid_count` | `(y, x)` | int32 | frames (of those with `frame_stats_done`) in which the pixel is valid (coverage: > 0) |
| `wet_threshold` | `(wet_threshold,)` | float32 | thresholds in mm/h |

Why these: the DataModule needs valid fractions (window selection), coverage (evaluation
masks), implausible counts (the start-up warning), wet fractions (importance sampling) and
the log1p moments (the normaliser, merged exactly with Chan's formula), all of which
are sums over frames. A reader derives fractions from the counts.

Writers: `StoreWriter` (nowcast_infill/io/store.py) computes them for each frame as it
writes it (`frame_statistics`) and writes them with the time axis (`write_commit_stats`);
region writers (io/region_writer.py) keep the statistics of their frames (`PartialStats`)
and their finalise merges those files (`compute_frame_stats(store, partials=[...])`);
`compute_frame_stats(store)` fills in what is missing in an existing store (a store of
schema version 1, or one written by another tool), reading `precip` in bounded blocks.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nowcast_infill import schema

log = logging.getLogger(__name__)

WET_THRESHOLDS_MM_H = (0.1, 1.0, 5.0)
VALID_COUNT = "frame_valid_count"
WET_COUNT = "frame_wet_count"
LOG1P_MEAN = "frame_log1p_mean"
LOG1P_M2 = "frame_log1p_m2"
IMPLAUSIBLE_COUNT = "frame_implausible_count"
DONE = "frame_stats_done"
PIXEL_VALID_COUNT = "pixel_valid_count"
WET_THRESHOLD = "wet_threshold"
PER_FRAME = (VALID_COUNT, WET_COUNT, LOG1P_MEAN, LOG1P_M2, IMPLAUSIBLE_COUNT, DONE)
ALL_ARRAYS = (*PER_FRAME, PIXEL_VALID_COUNT, WET_THRESHOLD)
_TIME_CHUNK = 4096  # statistics along time: 4096 frames per chunk (a few KB each)
READ_BLOCK_BYTES = 64 << 20  # precip read per block by compute_frame_stats


@dataclass
class FrameStats:
    """Statistics of one `(H, W)` frame in mm/h (NaN = no data); `valid` is its `(H, W)` bool mask."""

    valid_count: int
    wet_count: np.ndarray  # (n_thresholds,) int
    log1p_mean: float
    log1p_m2: float
    implausible_count: int
    valid: np.ndarray | None  # None once a writer has summed it (`pop_valid`): it keeps only the scalars
    n_pixels: int

    @property
    def valid_fraction(self) -> float:
        return self.valid_count / self.n_pixels

    @property
    def wet_fraction(self) -> np.ndarray:
        """Fraction of the valid pixels at or above each threshold (0 when none is valid)."""
        return self.wet_count / max(self.valid_count, 1)

    def pop_valid(self) -> np.ndarray:
        """The `(H, W)` bool valid mask, dropped from this object (a writer sums it and keeps the scalars)."""
        valid = self.valid
        assert valid is not None, "the valid mask of this frame was already taken"
        self.valid = None
        return valid


def frame_statistics(
    frame_mm_h: np.ndarray, *, max_mm_h: float = schema.MAX_RAIN_RATE_MM_H, thresholds=WET_THRESHOLDS_MM_H
) -> FrameStats:
    """`FrameStats` of one `(H, W)` frame of rates in mm/h; implausible values count as no data.

    log1p moments: only the wet pixels' log1p is computed (log1p(0) = 0), which keeps this
    at a few ms for a 1100 x 900 frame that is mostly dry.
    """
    frame = np.asarray(frame_mm_h, np.float32)
    implausible = schema.implausible_precip(frame, max_mm_h)
    valid = np.isfinite(frame) & ~implausible
    n_valid = int(valid.sum())
    wet_values = frame[valid & (frame > 0)]
    wet_count = np.array([int((wet_values >= t).sum()) for t in thresholds], np.int64)
    mean = m2 = 0.0
    if n_valid:
        logs = np.log1p(wet_values.astype(np.float64))
        mean = float(logs.sum()) / n_valid
        m2 = float(((logs - mean) ** 2).sum()) + (n_valid - logs.size) * mean * mean
    return FrameStats(n_valid, wet_count, mean, m2, int(implausible.sum()), valid, frame.size)


def _empty_frame_stats(n_thresholds: int) -> dict:
    """Values of an all-NaN (missing) frame: done, nothing valid."""
    return {
        VALID_COUNT: 0,
        WET_COUNT: np.zeros(n_thresholds, np.int64),
        LOG1P_MEAN: 0.0,
        LOG1P_M2: 0.0,
        IMPLAUSIBLE_COUNT: 0,
        DONE: True,
    }


# ---------------------------------------------------------------------------------- reading
@dataclass
class StoredFrameStats:
    """The statistics of a whole store, in memory (a few bytes per frame plus one `(H, W)` count)."""

    valid_count: np.ndarray  # (T,) int
    wet_count: np.ndarray  # (T, K) int
    log1p_mean: np.ndarray  # (T,) float64
    log1p_m2: np.ndarray  # (T,) float64
    implausible_count: np.ndarray  # (T,) int
    done: np.ndarray  # (T,) bool
    pixel_valid_count: np.ndarray  # (H, W) int
    thresholds: np.ndarray  # (K,) mm/h
    max_mm_h: float

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def n_pixels(self) -> int:
        return int(self.pixel_valid_count.size)

    @property
    def valid_fraction(self) -> np.ndarray:
        """(T,) fraction of the frame's pixels with a plausible rate."""
        return self.valid_count / self.n_pixels

    def wet_fraction(self, threshold_mm_h: float) -> np.ndarray:
        """(T,) fraction of the valid pixels at or above `threshold_mm_h` (one of `thresholds`)."""
        hits = np.nonzero(np.isclose(self.thresholds, float(threshold_mm_h)))[0]
        if hits.size == 0:
            raise ValueError(
                f"wet threshold {threshold_mm_h} mm/h is not stored; stored thresholds: "
                f"{[float(t) for t in self.thresholds]} mm/h."
            )
        return self.wet_count[:, hits[0]] / np.maximum(self.valid_count, 1)

    @property
    def coverage(self) -> np.ndarray:
        """(H, W) bool: valid in at least one frame."""
        return self.pixel_valid_count > 0

    def log1p_moments(self, frames: np.ndarray) -> tuple[int, float, float]:
        """(count, mean, m2) of log1p(rate) over the valid pixels of `frames` (indices), merged exactly."""
        n = self.valid_count[frames].astype(np.float64)
        total = float(n.sum())
        if total == 0:
            return 0, 0.0, 0.0
        mean = float((n * self.log1p_mean[frames]).sum() / total)
        m2 = float(self.log1p_m2[frames].sum() + (n * (self.log1p_mean[frames] - mean) ** 2).sum())
        return int(total), mean, m2


def has_frame_stats(group) -> bool:
    """True when the zarr `group` holds every statistics array."""
    return all(name in group for name in ALL_ARRAYS)


def load_frame_stats(store_path: str | Path) -> StoredFrameStats | None:
    """The stored statistics of `store_path` (no `precip` chunk is read), None when it has none."""
    import zarr

    group = zarr.open_group(str(store_path), mode="r")
    if not has_frame_stats(group):
        return None
    return _read_stats(group)


def _read_stats(group) -> StoredFrameStats:
    return StoredFrameStats(
        valid_count=np.asarray(group[VALID_COUNT][:], np.int64),
        wet_count=np.asarray(group[WET_COUNT][:], np.int64),
        log1p_mean=np.asarray(group[LOG1P_MEAN][:], np.float64),
        log1p_m2=np.asarray(group[LOG1P_M2][:], np.float64),
        implausible_count=np.asarray(group[IMPLAUSIBLE_COUNT][:], np.int64),
        done=np.asarray(group[DONE][:], bool),
        pixel_valid_count=np.asarray(group[PIXEL_VALID_COUNT][:], np.int64),
        thresholds=np.asarray(group[WET_THRESHOLD][:], np.float64),
        max_mm_h=float(group[VALID_COUNT].attrs.get("max_rain_rate_mm_h", schema.MAX_RAIN_RATE_MM_H)),
    )


# ---------------------------------------------------------------------------------- writing
def _create_arrays(group, n_time: int, shape: tuple[int, int], thresholds, max_mm_h: float) -> None:
    """The statistics arrays in `group`, `n_time` frames long, all not done (fill values)."""
    k = len(thresholds)
    common = {"max_rain_rate_mm_h": float(max_mm_h)}
    specs = (
        (VALID_COUNT, (n_time,), np.int32, 0, ("time",), "pixels with a plausible rate"),
        (WET_COUNT, (n_time, k), np.int32, 0, ("time", WET_THRESHOLD), "valid pixels with rate >= wet_threshold"),
        (LOG1P_MEAN, (n_time,), np.float64, np.nan, ("time",), "mean of log1p(rate / (mm/h)) over valid pixels"),
        (
            LOG1P_M2,
            (n_time,),
            np.float64,
            np.nan,
            ("time",),
            "sum of squared deviations of log1p(rate) over valid pixels",
        ),
        (IMPLAUSIBLE_COUNT, (n_time,), np.int32, 0, ("time",), "pixels negative, infinite or above max_rain_rate_mm_h"),
        (DONE, (n_time,), bool, False, ("time",), "statistics of this frame computed"),
    )
    for name, shp, dtype, fill, dims, long_name in specs:
        chunks = (_TIME_CHUNK,) + shp[1:]
        # Attributes as xarray writes them (a float's NaN `_FillValue`), so that xarray reads
        # the arrays back as stored and a round trip through xarray gives the same store.
        extra = {"_FillValue": schema.NAN_FILL_ATTR} if np.dtype(dtype).kind == "f" else {}
        group.create_array(
            name,
            shape=shp,
            dtype=dtype,
            chunks=chunks,
            fill_value=fill,
            dimension_names=dims,
            attributes={"long_name": long_name, **common, **extra},
        )
    group.create_array(
        PIXEL_VALID_COUNT,
        shape=shape,
        dtype=np.int32,
        chunks=shape,
        fill_value=0,
        dimension_names=("y", "x"),
        attributes={
            "long_name": "frames with a plausible rate at this pixel (over frames with frame_stats_done)",
            **common,
            "coordinates": "lat lon",
        },
    )
    group.create_array(
        WET_THRESHOLD,
        data=np.asarray(thresholds, np.float32),
        dimension_names=(WET_THRESHOLD,),
        fill_value=np.nan,
        attributes={
            "units": schema.PRECIP_UNITS,
            "long_name": "wet-pixel thresholds",
            "_FillValue": schema.NAN_FILL_ATTR,
        },
    )


def _consolidate(path: Path) -> None:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(path))


def write_commit_stats(
    staging: Path,
    store: Path,
    n_old: int,
    n_new: int,
    new: dict[int, FrameStats],
    gap_indices,
    pixel_valid_add: np.ndarray | None,
) -> None:
    """Write the statistics of one `StoreWriter` commit into `staging` (the store's next state).

    new: time index -> FrameStats of each written frame; gap_indices: inserted all-NaN
    frames (done, nothing valid). Old frames keep their values, read from `store` (small
    arrays); a store without statistics (schema 1) gets the arrays, its old frames marked
    not done. The arrays are written whole, like `time`, so each chunk file is replaced whole.
    """
    import zarr

    staged = zarr.open_group(str(staging), mode="r+", use_consolidated=False)
    old = zarr.open_group(str(store), mode="r") if n_old and store.exists() else None
    old_stats = _read_stats(old) if old is not None and has_frame_stats(old) else None
    thresholds = old_stats.thresholds if old_stats is not None else np.asarray(WET_THRESHOLDS_MM_H)
    _, height, width = schema.store_array(staged, schema.PRECIP).shape
    shape = (height, width)
    if not has_frame_stats(staged):
        for name in ALL_ARRAYS:  # partial leftovers of another layout: start clean
            if name in staged:
                del staged[name]
        _create_arrays(staged, n_new, shape, thresholds, schema.MAX_RAIN_RATE_MM_H)
    values: dict[str, np.ndarray] = {
        VALID_COUNT: np.zeros(n_new, np.int32),
        WET_COUNT: np.zeros((n_new, len(thresholds)), np.int32),
        LOG1P_MEAN: np.zeros(n_new),
        LOG1P_M2: np.zeros(n_new),
        IMPLAUSIBLE_COUNT: np.zeros(n_new, np.int32),
        DONE: np.zeros(n_new, bool),
    }
    pixels = np.zeros(shape, np.int64)
    if old_stats is not None:
        for name, old_values in zip(
            PER_FRAME,
            (
                old_stats.valid_count,
                old_stats.wet_count,
                old_stats.log1p_mean,
                old_stats.log1p_m2,
                old_stats.implausible_count,
                old_stats.done,
            ),
            strict=True,
        ):
            values[name][:n_old] = old_values[:n_old]
        pixels += old_stats.pixel_valid_count
    for t in gap_indices:
        for name, v in _empty_frame_stats(len(thresholds)).items():
            values[name][t] = v
    for t, s in new.items():
        values[VALID_COUNT][t], values[WET_COUNT][t] = s.valid_count, s.wet_count
        values[LOG1P_MEAN][t], values[LOG1P_M2][t] = s.log1p_mean, s.log1p_m2
        values[IMPLAUSIBLE_COUNT][t], values[DONE][t] = s.implausible_count, True
    if pixel_valid_add is not None:
        pixels += pixel_valid_add
    for name in PER_FRAME:
        arr = schema.store_array(staged, name)
        arr.resize(values[name].shape)
        arr[...] = values[name]
    schema.store_array(staged, PIXEL_VALID_COUNT)[...] = pixels.astype(np.int32)


def _frame_blocks(indices: np.ndarray, frames_per_block: int):
    """Runs of consecutive indices, each at most `frames_per_block` long: (start, stop) pairs."""
    if indices.size == 0:
        return
    breaks = np.nonzero(np.diff(indices) != 1)[0] + 1
    for run in np.split(indices, breaks):
        for i in range(0, run.size, frames_per_block):
            part = run[i : i + frames_per_block]
            yield int(part[0]), int(part[-1]) + 1


def compute_stats_arrays(
    precip, indices: np.ndarray, *, max_mm_h: float = schema.MAX_RAIN_RATE_MM_H, thresholds=WET_THRESHOLDS_MM_H
) -> tuple[dict, np.ndarray]:
    """Statistics of frames `indices` (sorted) of the `(T, H, W)` array `precip`, read in bounded blocks.

    Returns ({array name: values for `indices`}, pixel valid count `(H, W)` over them).
    Memory: one block of at most `READ_BLOCK_BYTES` of frames.
    """
    indices = np.asarray(indices, np.int64)
    h, w = precip.shape[1:]
    per_block = max(1, READ_BLOCK_BYTES // (4 * h * w))
    out = {
        VALID_COUNT: np.zeros(indices.size, np.int64),
        WET_COUNT: np.zeros((indices.size, len(thresholds)), np.int64),
        LOG1P_MEAN: np.zeros(indices.size),
        LOG1P_M2: np.zeros(indices.size),
        IMPLAUSIBLE_COUNT: np.zeros(indices.size, np.int64),
        DONE: np.ones(indices.size, bool),
    }
    pixels = np.zeros((h, w), np.int64)
    position = {int(t): i for i, t in enumerate(indices)}
    for start, stop in _frame_blocks(indices, per_block):
        block = np.asarray(precip[start:stop], np.float32)
        for k, frame in enumerate(block):
            s = frame_statistics(frame, max_mm_h=max_mm_h, thresholds=thresholds)
            i = position[start + k]
            out[VALID_COUNT][i], out[WET_COUNT][i] = s.valid_count, s.wet_count
            out[LOG1P_MEAN][i], out[LOG1P_M2][i], out[IMPLAUSIBLE_COUNT][i] = (
                s.log1p_mean,
                s.log1p_m2,
                s.implausible_count,
            )
            pixels += s.pop_valid()
    return out, pixels


def stats_in_memory(
    store_path: str | Path, *, max_mm_h: float = schema.MAX_RAIN_RATE_MM_H, frames: np.ndarray | None = None
) -> StoredFrameStats:
    """Statistics of `frames` (default all) computed without writing the store; others are not done.

    For a store that cannot be written, or a `max_mm_h` other than the stored one.
    """
    import zarr

    group = zarr.open_group(str(store_path), mode="r")
    precip = schema.store_array(group, schema.PRECIP)
    n_time = precip.shape[0]
    frames = np.arange(n_time) if frames is None else np.asarray(frames, np.int64)
    values, pixels = compute_stats_arrays(precip, frames, max_mm_h=max_mm_h)
    k = len(WET_THRESHOLDS_MM_H)
    full = {
        VALID_COUNT: np.zeros(n_time, np.int64),
        WET_COUNT: np.zeros((n_time, k), np.int64),
        LOG1P_MEAN: np.zeros(n_time),
        LOG1P_M2: np.zeros(n_time),
        IMPLAUSIBLE_COUNT: np.zeros(n_time, np.int64),
        DONE: np.zeros(n_time, bool),
    }
    for name in PER_FRAME:
        full[name][frames] = values[name]
    return StoredFrameStats(
        full[VALID_COUNT],
        full[WET_COUNT],
        full[LOG1P_MEAN],
        full[LOG1P_M2],
        full[IMPLAUSIBLE_COUNT],
        full[DONE],
        pixels,
        np.asarray(WET_THRESHOLDS_MM_H),
        max_mm_h,
    )


def save_partial_stats(path: str | Path, indices: np.ndarray, values: dict, pixel_valid: np.ndarray) -> Path:
    """Save what `compute_stats_arrays` returned for frames `indices` as `path` (.npz), atomically.

    For writers that each own part of a store (e.g. one Slurm array task per time range):
    each saves the statistics of its frames, and the finalise step passes the files to
    `compute_frame_stats(..., partials=[...])`, which then reads no frame they cover.
    """
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npz")
    arrays: dict[str, Any] = {  # np.savez's stub types **kwds as its allow_pickle flag
        "indices": np.asarray(indices, np.int64),
        "pixel_valid": np.asarray(pixel_valid, np.int64),
        **{name: np.asarray(values[name]) for name in PER_FRAME},
    }
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


class PartialStats:
    """Statistics of the frames one writer writes, kept as it writes them, saved with `save_partial_stats`.

    For a writer that owns part of a store (a region writer's task): `add(index, frame)` for
    each frame it writes, `save(path)` at the end. Memory: a few numbers per frame plus one
    `(H, W)` int64 count.
    """

    def __init__(self):
        self._by_index: dict[int, FrameStats] = {}
        self._pixel_valid: np.ndarray | None = None  # (H, W) frames in which each pixel is valid

    def __len__(self) -> int:
        return len(self._by_index)

    def add(self, index: int, frame_mm_h: np.ndarray) -> None:
        """Statistics of `frame_mm_h` (`(H, W)` mm/h, as stored) for time index `index`."""
        stats = frame_statistics(frame_mm_h)
        valid = stats.pop_valid()
        if self._pixel_valid is None:
            self._pixel_valid = np.zeros(valid.shape, np.int64)
        self._pixel_valid += valid
        self._by_index[int(index)] = stats

    def save(self, path: str | Path) -> Path:
        """Write them as `path` (.npz, atomically), for `compute_frame_stats(..., partials=[path])`."""
        indices = np.array(sorted(self._by_index), np.int64)
        rows = [self._by_index[int(i)] for i in indices]
        k = len(WET_THRESHOLDS_MM_H)
        values = {
            VALID_COUNT: np.array([s.valid_count for s in rows], np.int64),
            WET_COUNT: np.array([s.wet_count for s in rows], np.int64).reshape(len(rows), k),
            LOG1P_MEAN: np.array([s.log1p_mean for s in rows], np.float64),
            LOG1P_M2: np.array([s.log1p_m2 for s in rows], np.float64),
            IMPLAUSIBLE_COUNT: np.array([s.implausible_count for s in rows], np.int64),
            DONE: np.ones(len(rows), bool),
        }
        assert self._pixel_valid is not None, "save() needs at least one add()"
        return save_partial_stats(path, indices, values, self._pixel_valid)


def _load_partial(path: str | Path) -> tuple[np.ndarray, dict, np.ndarray]:
    with np.load(path) as data:
        return data["indices"], {name: data[name] for name in PER_FRAME}, data["pixel_valid"]


def compute_frame_stats(
    store_path: str | Path, missing_only: bool = True, *, partials=(), lock_timeout: float = float("inf")
) -> dict:
    """Compute and store the per-frame statistics of the store at `store_path`; returns a summary.

    missing_only: only frames whose `frame_stats_done` is False (all frames of a store
    without statistics); False recomputes every frame. Frames flagged `missing_frame` are
    not read. partials: files of `save_partial_stats`; one whose frames all need
    statistics is used instead of reading them (one that is not is ignored, with a log line).
    `precip` is read in blocks of at most `READ_BLOCK_BYTES`. Runs under the
    store's lock (waits `lock_timeout` s for another writer). The `frame_stats_done`
    flags are written last, so a killed run leaves its frames not done and the next run
    computes them again (`pixel_valid_count` may then count them twice: coverage, > 0,
    is the same).
    """
    import zarr

    from nowcast_infill.io.store_lock import StoreLock

    path = Path(store_path)
    with StoreLock(str(store_path), timeout=lock_timeout, command="compute_frame_stats"):
        # Not through consolidated metadata: it does not list arrays created here until the end.
        group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
        precip = schema.store_array(group, schema.PRECIP)
        n_time = precip.shape[0]
        created = not has_frame_stats(group)
        if created:
            for name in ALL_ARRAYS:
                if name in group:
                    del group[name]
            _, height, width = precip.shape
            _create_arrays(group, n_time, (height, width), WET_THRESHOLDS_MM_H, schema.MAX_RAIN_RATE_MM_H)
        stats = _read_stats(group)
        if stats.done.size != n_time:  # arrays left shorter by a writer of another tool: extend, not done
            for name in PER_FRAME:
                arr = schema.store_array(group, name)
                arr.resize((n_time,) + arr.shape[1:])
            stats = _read_stats(group)
        todo = np.nonzero(~stats.done)[0] if missing_only else np.arange(n_time)
        missing_frame = (
            np.asarray(schema.store_array(group, schema.MISSING_FRAME)[:], bool)
            if schema.MISSING_FRAME in group
            else np.zeros(n_time, bool)
        )
        full = {
            VALID_COUNT: stats.valid_count,
            WET_COUNT: stats.wet_count,
            LOG1P_MEAN: stats.log1p_mean,
            LOG1P_M2: stats.log1p_m2,
            IMPLAUSIBLE_COUNT: stats.implausible_count,
            DONE: stats.done.copy(),
        }
        needed = np.zeros(n_time, bool)
        needed[todo] = True
        pixels_from_partials = np.zeros_like(stats.pixel_valid_count)
        from_partials = 0
        for partial in partials:
            indices, part_values, part_pixels = _load_partial(partial)
            if indices.size == 0 or not needed[indices].all():  # would count a frame twice
                log.info("%s: ignored, its frames are not all in need of statistics", partial)
                continue
            for name in PER_FRAME:
                full[name][indices] = part_values[name]
            pixels_from_partials += part_pixels
            needed[indices] = False
            from_partials += int(indices.size)
        todo = np.nonzero(needed)[0]
        read = todo[~missing_frame[todo]]
        values, pixels = compute_stats_arrays(precip, read, max_mm_h=stats.max_mm_h, thresholds=tuple(stats.thresholds))
        pixels = pixels + pixels_from_partials
        gaps = todo[missing_frame[todo]]
        for name, v in _empty_frame_stats(stats.thresholds.size).items():
            full[name][gaps] = v
        for name in PER_FRAME:
            full[name][read] = values[name]
        base = np.zeros_like(stats.pixel_valid_count) if not missing_only else stats.pixel_valid_count
        for name in PER_FRAME:
            if name != DONE:
                schema.store_array(group, name)[...] = full[name]
        schema.store_array(group, PIXEL_VALID_COUNT)[...] = (base + pixels).astype(np.int32)
        schema.store_array(group, DONE)[...] = full[DONE]
        if created:
            _consolidate(path)
    summary = {
        "store": str(store_path),
        "frames_read": int(read.size),
        "frames_from_partials": from_partials,
        "missing_frames": int(gaps.size),
        "created_arrays": created,
    }
    log.info(
        "frame statistics of %s: %d frame(s) read, %d from partial statistics, %d missing frame(s)",
        store_path,
        read.size,
        from_partials,
        gaps.size,
    )
    return summary


def store_is_writable(store_path: str | Path) -> bool:
    """True when statistics can be added to the store (its directory and root metadata are writable)."""
    path = Path(store_path)
    return os.access(path, os.W_OK) and os.access(path / "zarr.json", os.W_OK)
