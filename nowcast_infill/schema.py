"""Names of the on-disk radar store; the format itself is defined in docs/schema.md."""

from __future__ import annotations

from nowcast_infill.errors import UserError
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
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


class StoreSchemaError(UserError, ValueError):
    """A store does not follow docs/schema.md."""


def implausible_precip(values: np.ndarray, max_mm_h: float = MAX_RAIN_RATE_MM_H) -> np.ndarray:
    """Bool mask, same shape as `values` (mm/h): negative, above `max_mm_h`, or +-inf.

    NaN (no data) is not implausible; +inf is above and -inf below the range.
    """
    values = np.asarray(values)
    return (values < 0) | (values > max_mm_h)


def aux_names(ds) -> list[str]:
    """Names of the auxiliary fields in `ds` without the `aux_` prefix, sorted."""
    return sorted(str(v)[len(AUX_PREFIX):] for v in ds.data_vars if str(v).startswith(AUX_PREFIX))


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
    if ds.attrs.get("nowcast_infill_schema") != SCHEMA_VERSION:
        raise StoreSchemaError(
            f"{where}: attribute 'nowcast_infill_schema' is {ds.attrs.get('nowcast_infill_schema')!r}, "
            f"expected {SCHEMA_VERSION}; rewrite the store with this version's `ni-convert`."
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
