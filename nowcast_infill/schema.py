"""The STORE metadata schema: names, units and checks of the on-disk radar store (docs/schema.md).

This module is about radar stores only (variables, dimensions, attributes, segments,
plausible rain rates, `validate_store`). It does not check configuration files: the
Hydra config checks live with the pipeline (formerly `config_schema.py`).
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nowcast_infill.errors import UserError

if TYPE_CHECKING:
    import zarr

# Version 2 adds separate time segments (gaps longer than `max_gap_s` are not filled)
# and the per-frame statistics `frame_*` (nowcast_infill/io/frame_stats.py). A version 1
# store is still read: it is one segment, and its statistics are computed once when
# first needed (docs/schema.md § Per-frame statistics).
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
PRECIP = "precip"
MISSING_FRAME = "missing_frame"
CRS = "crs"
AUX_PREFIX = "aux_"
AUX_DIMS = ("time", "y_aux", "x_aux")
PRECIP_DIMS = ("time", "y", "x")
PRECIP_UNITS = "mm h-1"
# Rain rates above this (mm/h) are not physical for 5-60 min radar products; readers of a
# store treat them, negative rates and +-inf as no data (docs/schema.md § Plausible values).
MAX_RAIN_RATE_MM_H = 500.0
# xarray's `_FillValue` attribute of a float variable whose fill value is NaN (base64 of the
# little-endian float64), as `Dataset.to_zarr` writes it: zarr writers here add it so a store
# is the same whether written by them or by xarray.
NAN_FILL_ATTR = base64.standard_b64encode(struct.pack("<d", float("nan"))).decode()


class StoreSchemaError(UserError, ValueError):
    """A store does not follow docs/schema.md."""


def store_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array `name` of the open store `group` (each variable of the schema is an array, not a group)."""
    import zarr

    array = group[name]
    assert isinstance(array, zarr.Array), f"{name!r} is a zarr group, not an array"
    return array


def implausible_precip(values: np.ndarray, max_mm_h: float = MAX_RAIN_RATE_MM_H) -> np.ndarray:
    """Bool mask, same shape as `values` (mm/h): negative, above `max_mm_h`, or +-inf.

    NaN (no data) is not implausible; +inf is above and -inf below the range.
    """
    values = np.asarray(values)
    return (values < 0) | (values > max_mm_h)


def aux_names(ds) -> list[str]:
    """Names of the auxiliary fields in `ds` without the `aux_` prefix, sorted."""
    return sorted(str(v)[len(AUX_PREFIX) :] for v in ds.data_vars if str(v).startswith(AUX_PREFIX))


def validate_store(ds, path: str | Path = "<dataset>") -> None:
    """Raise StoreSchemaError naming `path` and the field when `ds` breaks the schema."""
    where = str(path)
    if PRECIP not in ds:
        raise StoreSchemaError(
            f"{where}: no variable '{PRECIP}'. Convert the source with `ni-convert` "
            "or, for an existing NetCDF/Zarr, `ni-convert source=xarray variable=<name>`."
        )
    if tuple(ds[PRECIP].dims) != PRECIP_DIMS:
        raise StoreSchemaError(f"{where}: '{PRECIP}' has dims {tuple(ds[PRECIP].dims)}, expected {PRECIP_DIMS}.")
    units = ds[PRECIP].attrs.get("units")
    if units != PRECIP_UNITS:
        raise StoreSchemaError(f"{where}: '{PRECIP}.units' is {units!r}, expected {PRECIP_UNITS!r} (mm/h).")
    if ds.attrs.get("nowcast_infill_schema") not in READABLE_SCHEMA_VERSIONS:
        raise StoreSchemaError(
            f"{where}: attribute 'nowcast_infill_schema' is {ds.attrs.get('nowcast_infill_schema')!r}, "
            f"expected one of {READABLE_SCHEMA_VERSIONS}; rewrite the store with this version's `ni-convert`."
        )
    times = ds["time"].values
    if times.size > 1 and not np.all(np.diff(times) > np.timedelta64(0, "ns")):
        raise StoreSchemaError(f"{where}: 'time' is not strictly increasing.")
    if MISSING_FRAME not in ds:
        raise StoreSchemaError(f"{where}: no variable '{MISSING_FRAME}' (bool per time step).")
    for name in aux_names(ds):
        var = ds[AUX_PREFIX + name]
        if tuple(var.dims) != AUX_DIMS:
            raise StoreSchemaError(f"{where}: '{AUX_PREFIX}{name}' has dims {tuple(var.dims)}, expected {AUX_DIMS}.")


def segment_ids(times: np.ndarray, time_step_s: int | float | None) -> np.ndarray:
    """Segment number `(time,)` int64 of each time step: 0 for the first segment, +1 after each break.

    A break is a step between two consecutive times longer than `time_step_s`: within a
    segment the time axis is regular (short gaps are explicit missing frames), between
    segments the time was not materialised (docs/schema.md § Segments). Without a step
    (`time_step_s` 0/None, e.g. a one-frame store) everything is one segment.
    """
    times = np.asarray(times).astype("datetime64[ns]")
    if times.size < 2:
        return np.zeros(times.size, np.int64)
    diffs = np.diff(times)
    # No `time_step_s` attribute (a store of another tool): its smallest step is the step.
    step = np.timedelta64(int(time_step_s), "s").astype("timedelta64[ns]") if time_step_s else diffs.min()
    breaks = diffs > step
    return np.concatenate([[0], np.cumsum(breaks)]).astype(np.int64)


def same_segment_windows(segment: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Bool per window start: the `length` frames from it lie inside one segment (and the store)."""
    starts = np.asarray(starts, np.int64)
    last = starts + int(length) - 1
    inside = (starts >= 0) & (last < segment.size)
    ok = np.zeros(starts.shape, bool)
    ok[inside] = segment[starts[inside]] == segment[last[inside]]
    return ok
