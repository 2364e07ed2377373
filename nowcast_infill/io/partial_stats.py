"""The per-frame statistics of the frames one writer writes into part of a store, kept for a later merge.

For writers that each own part of a store (a region writer's task, one Slurm array task
per time range): each keeps the statistics of its frames (`PartialStats`) and saves them
(`save_partial_stats`); the finalise step passes the files to
`frame_stats.compute_frame_stats(..., partials=[...])`, which then reads no frame they cover.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from nowcast_infill.io.frame_stats_format import (
    DONE,
    IMPLAUSIBLE_COUNT,
    LOG1P_M2,
    LOG1P_MEAN,
    PER_FRAME,
    VALID_COUNT,
    WET_COUNT,
    WET_THRESHOLDS_MM_H,
    FrameStats,
    frame_statistics,
)


def save_partial_stats(path: str | Path, indices: np.ndarray, values: dict, pixel_valid: np.ndarray) -> Path:
    """Save what `frame_stats.compute_stats_arrays` returned for frames `indices` as `path` (.npz), atomically."""
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


def load_partial_stats(path: str | Path) -> tuple[np.ndarray, dict, np.ndarray]:
    """(indices, {array name: values}, pixel valid count) of a file of `save_partial_stats`."""
    with np.load(path) as data:
        return data["indices"], {name: data[name] for name in PER_FRAME}, data["pixel_valid"]
