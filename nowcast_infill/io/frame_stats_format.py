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

This module holds the format: the array names, the statistics of one frame
(`frame_statistics`), the arrays' creation and reading them back (`load_frame_stats`).
Writing them into a store: nowcast_infill/io/frame_stats.py; the statistics one writer
of a part of a store keeps: nowcast_infill/io/partial_stats.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nowcast_infill import schema

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


def empty_frame_stats(n_thresholds: int) -> dict:
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
    return read_stats(group)


def read_stats(group) -> StoredFrameStats:
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


# ---------------------------------------------------------------------------------- creating
def create_stats_arrays(group, n_time: int, shape: tuple[int, int], thresholds, max_mm_h: float) -> None:
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
