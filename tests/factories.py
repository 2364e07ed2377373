"""Tiny but real Zarr stores in the schema of docs/schema.md, written at test time.

Fields are chosen so tests can check exact properties: a fixed no-data block (NaN),
optional all-NaN missing frames, and optional auxiliary fields that are exact linear
functions of the km coordinates on a coarser grid (bilinear regridding must reproduce
them exactly).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from nowcast_infill import schema

# aux name -> (a, b, c, d): value = a * x_km + b * y_km + c + d * time_index
LINEAR_AUX = {"u": (0.5, -0.25, 3.0, 0.1), "t": (0.01, 0.02, 285.0, -0.05)}


def make_test_dataset(
    n_time: int = 24,
    ny: int = 40,
    nx: int = 48,
    *,
    seed: int = 0,
    nodata_block: tuple[slice, slice] | None = (slice(0, 10), slice(0, 12)),
    missing: Sequence[int] = (),
    aux: Mapping[str, tuple[float, float, float, float]] | None = None,
    aux_factor: int = 4,
    time_step_s: int = 300,
    start: str = "2021-06-01T00:05",
) -> xr.Dataset:
    """A schema-valid dataset: ``precip`` (n_time, ny, nx) mm/h with NaN no-data.

    ``y`` is stored decreasing (row 0 = north) so readers that assume an order break.
    Frames listed in ``missing`` are all-NaN with ``missing_frame=True``.
    ``aux`` fields live on a grid ``aux_factor`` times coarser covering the same area.
    """
    rng = np.random.default_rng(seed)
    x = 100.0 + np.arange(nx, dtype=np.float64)  # km, 1 km pixels
    y = 500.0 - np.arange(ny, dtype=np.float64)
    times = np.datetime64(start, "ns") + np.arange(n_time) * np.timedelta64(time_step_s, "s")

    # Moving smooth rain cells plus noise; about a third of the pixels dry (exactly 0).
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    precip = np.empty((n_time, ny, nx), np.float32)
    for t in range(n_time):
        cx, cy = (5 + 1.3 * t) % nx, (8 + 0.7 * t) % ny
        cell = 12.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 60.0)
        field = cell + rng.gamma(0.6, 0.8, size=(ny, nx)) - 0.4
        precip[t] = np.maximum(field, 0.0)
    if nodata_block is not None:
        precip[:, nodata_block[0], nodata_block[1]] = np.nan
    missing_frame = np.zeros(n_time, bool)
    for t in missing:
        precip[t] = np.nan
        missing_frame[t] = True

    lon, lat = np.meshgrid(6.0 + 0.014 * (x - 100.0), 50.0 + 0.009 * (y - 500.0))
    ds = xr.Dataset(
        {
            schema.PRECIP: (
                schema.PRECIP_DIMS,
                precip,
                {"units": schema.PRECIP_UNITS, "long_name": "precipitation rate",
                 "standard_name": "rainfall_rate", "grid_mapping": schema.CRS},
            ),
            schema.MISSING_FRAME: (("time",), missing_frame),
            schema.CRS: ((), np.int8(0), {"grid_mapping_name": "polar_stereographic",
                                         "proj4": "+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +R=6370040 +units=km"}),
        },
        coords={
            "time": ("time", times, {"timezone": "UTC"}),
            "y": ("y", y, {"units": "km"}),
            "x": ("x", x, {"units": "km"}),
            "lat": (("y", "x"), lat.astype(np.float32)),
            "lon": (("y", "x"), lon.astype(np.float32)),
        },
        attrs={
            "nowcast_infill_schema": schema.SCHEMA_VERSION,
            "source": "synthetic",
            "source_product": "test",
            "accumulation_interval_s": 0,
            "time_step_s": time_step_s,
            "conversion": "none",
            "source_files": [],
            "skipped_files": [],
            "missing_times": [str(times[t].astype("datetime64[s]")) for t in missing],
            "radar_sites": [],
            "history": "tests/factories.py",
        },
    )
    if aux:
        # Aux pixel centres span the same area as the radar pixels (coarse cells of aux_factor km).
        x_aux = x[0] - 0.5 + aux_factor * (np.arange(-(-nx // aux_factor)) + 0.5)
        y_aux = y[0] + 0.5 - aux_factor * (np.arange(-(-ny // aux_factor)) + 0.5)
        ds = ds.assign_coords(y_aux=("y_aux", y_aux, {"units": "km"}), x_aux=("x_aux", x_aux, {"units": "km"}))
        ya, xa = np.meshgrid(y_aux, x_aux, indexing="ij")
        for name, (a, b, c, d) in aux.items():
            values = np.stack([a * xa + b * ya + c + d * t for t in range(n_time)]).astype(np.float32)
            ds[schema.AUX_PREFIX + name] = (schema.AUX_DIMS, values, {"units": "1", "long_name": f"test field {name}"})
    return ds


def write_test_store(path: str | Path, chunks: tuple[int, int, int] | None = None, **kwargs) -> Path:
    """Write ``make_test_dataset(**kwargs)`` as a Zarr v3 store at ``path``; returns the path."""
    return write_dataset(path, make_test_dataset(**kwargs), chunks)


def write_dataset(path: str | Path, ds: xr.Dataset, chunks: tuple[int, int, int] | None = None) -> Path:
    """Write a schema dataset (e.g. an edited ``make_test_dataset()``) as ``write_test_store`` does."""
    path = Path(path)
    schema.validate_store(ds, path)
    encoding = {}
    if chunks is not None:
        encoding[schema.PRECIP] = {"chunks": chunks}
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    with warnings.catch_warnings():  # zarr notes consolidation is outside the v3 spec
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(path)  # as the ingestion writer does
    return path


def linear_aux_truth(name: str, x_km: np.ndarray, y_km: np.ndarray, t: int) -> np.ndarray:
    """The exact value of LINEAR_AUX field ``name`` at radar coordinates, (len(y), len(x))."""
    a, b, c, d = LINEAR_AUX[name]
    yy, xx = np.meshgrid(y_km, x_km, indexing="ij")
    return a * xx + b * yy + c + d * t
