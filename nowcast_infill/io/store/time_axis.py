"""The time axis of a radar store: placing new frames after the old ones, gaps and segments, time encoding.

A store's time axis is regular within a segment: gaps up to `max_gap_s` become explicit
all-NaN frames flagged `missing_frame`, a longer gap starts a new segment
(docs/schema.md § Segments).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nowcast_infill.errors import BadValueError
from nowcast_infill.io.importers import ConversionError, Frame

# Gaps up to this long (seconds of missing time steps) become explicit all-NaN frames
# flagged `missing_frame`; a longer one starts a new segment (docs/schema.md § Segments):
# two events years apart must not materialise every step between them.
DEFAULT_MAX_GAP_S = 3600.0


def iso_time(t: np.datetime64) -> str:
    """`t` as ISO 8601 to the second, e.g. '2017-08-16T00:05:00' (how stores and messages name a time)."""
    # numpy's stubs lack the datetime64(datetime64, unit) overload that numpy accepts at runtime.
    seconds: np.datetime64 = np.datetime64(t, "s")  # type: ignore[call-overload]
    return str(np.datetime_as_string(seconds, unit="s"))


def _time_step_s(frames: list[Frame], old_times: np.ndarray, old_step_s: int) -> int:
    if old_step_s > 0:
        return old_step_s
    times = np.concatenate([old_times, np.array([f.time for f in frames], dtype="datetime64[ns]")])
    diffs = np.diff(np.unique(times)).astype("timedelta64[s]").astype(np.int64)
    if diffs.size:
        return int(diffs.min())
    return int(frames[0].accumulation_interval_s)


def place_on_time_axis(
    fresh: list[Frame], old_times: np.ndarray, old_step_s: int, path: Path, max_gap_s: float | None = DEFAULT_MAX_GAP_S
) -> tuple[list, list, int, list]:
    """Validate the time order of `fresh` (sorted) against the store; return (filled, missing, step_s, breaks).

    old_times: (T,) datetime64[ns], the store's time axis (empty for a new store);
    old_step_s: its `time_step_s` attribute (0: none recorded, the step is derived from the times).
    filled: the new time steps in order, each a Frame or a datetime64 of an inserted gap.
    A gap of more than `max_gap_s` seconds of missing time steps is not filled: the next
    frame starts a new segment (its time is listed in `breaks`); None fills every gap.
    """
    for a, b in zip(fresh, fresh[1:], strict=False):
        if a.time == b.time:
            raise ConversionError(
                b.source, f"duplicate time {iso_time(b.time)}: {a.source.name} has the same time; drop one of them."
            )
    if old_times.size and fresh[0].time <= old_times[-1]:
        f = fresh[0]
        clash = "duplicates a time already in" if f.time in set(old_times) else "is before the end of"
        raise ConversionError(
            f.source,
            f"time {iso_time(f.time)} {clash} the store {path} (last time {iso_time(old_times[-1])}); "
            "appends must be later than the store's last time: convert it into a new output= instead.",
        )
    step_s = _time_step_s(fresh, old_times, old_step_s)
    start = old_times[0] if old_times.size else fresh[0].time
    step = np.timedelta64(step_s, "s") if step_s > 0 else None
    if step is not None:
        for f in fresh:
            if (f.time - start) % step:
                raise ConversionError(
                    f.source,
                    f"time {iso_time(f.time)} is off the regular {step_s} s time axis that starts {iso_time(start)}; "
                    "a store holds one time step: convert it into its own output=.",
                )
    filled, missing, breaks = [], [], []
    prev = old_times[-1] if old_times.size else None
    for f in fresh:
        if prev is not None and step is not None:
            gap_s = (f.time - prev - step) / np.timedelta64(1, "s")
            if max_gap_s is not None and gap_s > max_gap_s:
                breaks.append(f.time)  # a segment boundary: the time between is not materialised
            else:
                t = prev + step
                while t < f.time:
                    filled.append(t)
                    missing.append(t)
                    t = t + step
        filled.append(f)
        prev = f.time
    return filled, missing, step_s, breaks


def encode_times(times: np.ndarray, units: str, calendar: str, dtype: np.dtype) -> np.ndarray:
    """`times` (datetime64) encoded as the store's `time` array holds them (CF `units` / `calendar`).

    Whole seconds in the units `create_skeleton` writes are a plain cast; anything else goes
    through xarray's CF encoder (whose first call imports dask: ~0.2 s per process).
    """
    if units == "seconds since 1970-01-01" and calendar == "proleptic_gregorian":
        seconds = times.astype("datetime64[s]")
        if np.array_equal(seconds, times):
            return seconds.astype(np.int64).astype(dtype)
    import xarray as xr

    encoded, _, _ = xr.coding.times.encode_cf_datetime(times, units=units, calendar=calendar, dtype=dtype)
    return np.asarray(encoded, dtype=dtype)


def checked_max_gap(max_gap_s) -> float | None:
    """`max_gap_s` as seconds >= 0, or None (fill every gap); ValueError naming `max_gap` otherwise."""
    if max_gap_s is None:
        return None
    try:
        seconds = float(max_gap_s)
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(max_gap_s, bool) or not seconds >= 0:
        raise BadValueError(
            f"max_gap_s={max_gap_s!r}: must be seconds >= 0 (gaps longer than it start a new segment) "
            "or null (fill every gap with missing frames)."
        )
    return seconds
