"""Per-frame statistics of a radar store, so readers never scan `precip` to start up: writing them.

The format (array names, `frame_statistics`, `load_frame_stats`) is in
nowcast_infill/io/frame_stats_format.py (docs/schema.md § Per-frame statistics); this
module re-exports it, so `frame_stats.X` reaches every public name.

Writers: `StoreWriter` (nowcast_infill/io/store/writer.py) computes them for each frame as it
writes it (`frame_statistics`) and writes them with the time axis (`write_commit_stats`);
region writers (io/region_writer.py) keep the statistics of their frames (`PartialStats`, io/partial_stats.py)
and their finalise merges those files (`compute_frame_stats(store, partials=[...])`);
`compute_frame_stats(store)` fills in what is missing in an existing store (a store of
schema version 1, or one written by another tool), reading `precip` in bounded blocks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from nowcast_infill import schema
from nowcast_infill.io.consolidated import consolidate
from nowcast_infill.io.frame_stats_format import (
    ALL_ARRAYS,
    DONE,
    IMPLAUSIBLE_COUNT,
    LOG1P_M2,
    LOG1P_MEAN,
    PER_FRAME,
    PIXEL_VALID_COUNT,
    VALID_COUNT,
    WET_COUNT,
    WET_THRESHOLD,
    WET_THRESHOLDS_MM_H,
    FrameStats,
    StoredFrameStats,
    create_stats_arrays,
    empty_frame_stats,
    frame_statistics,
    has_frame_stats,
    load_frame_stats,
    read_stats,
)
from nowcast_infill.io.partial_stats import PartialStats, load_partial_stats, save_partial_stats

__all__ = [
    "ALL_ARRAYS",
    "DONE",
    "IMPLAUSIBLE_COUNT",
    "LOG1P_M2",
    "LOG1P_MEAN",
    "PER_FRAME",
    "PIXEL_VALID_COUNT",
    "READ_BLOCK_BYTES",
    "VALID_COUNT",
    "WET_COUNT",
    "WET_THRESHOLD",
    "WET_THRESHOLDS_MM_H",
    "FrameStats",
    "PartialStats",
    "StoredFrameStats",
    "compute_frame_stats",
    "compute_stats_arrays",
    "frame_statistics",
    "has_frame_stats",
    "load_frame_stats",
    "save_partial_stats",
    "stats_in_memory",
    "store_is_writable",
    "write_commit_stats",
]

log = logging.getLogger(__name__)

READ_BLOCK_BYTES = 64 << 20  # precip read per block by compute_frame_stats


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
    old_stats = read_stats(old) if old is not None and has_frame_stats(old) else None
    thresholds = old_stats.thresholds if old_stats is not None else np.asarray(WET_THRESHOLDS_MM_H)
    _, height, width = schema.store_array(staged, schema.PRECIP).shape
    shape = (height, width)
    if not has_frame_stats(staged):
        for name in ALL_ARRAYS:  # partial leftovers of another layout: start clean
            if name in staged:
                del staged[name]
        create_stats_arrays(staged, n_new, shape, thresholds, schema.MAX_RAIN_RATE_MM_H)
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
        for name, v in empty_frame_stats(len(thresholds)).items():
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
            create_stats_arrays(group, n_time, (height, width), WET_THRESHOLDS_MM_H, schema.MAX_RAIN_RATE_MM_H)
        stats = read_stats(group)
        if stats.done.size != n_time:  # arrays left shorter by a writer of another tool: extend, not done
            for name in PER_FRAME:
                arr = schema.store_array(group, name)
                arr.resize((n_time,) + arr.shape[1:])
            stats = read_stats(group)
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
            indices, part_values, part_pixels = load_partial_stats(partial)
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
        for name, v in empty_frame_stats(stats.thresholds.size).items():
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
            consolidate(path)
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
