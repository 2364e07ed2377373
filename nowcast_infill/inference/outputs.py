"""What the archive products (`ni-infill`, `ni-nowcast`) share: opening the input store and the
attributes and grid variables every output store carries."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from nowcast_infill import __version__
from nowcast_infill.io.store import open_store
from nowcast_infill.schema import CRS, SCHEMA_VERSION


@contextlib.contextmanager
def quiet_consolidated():
    """Silence zarr's note that consolidated metadata is not in the v3 spec (xarray reads it fine)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        yield


def open_radar_store(path: str | Path) -> xr.Dataset:
    """Open a schema store lazily (numpy-backed, no dask) and validate it (docs/schema.md)."""
    return open_store(path, chunks=None)


def product_attrs(src: xr.Dataset, input_store: Path, info: dict) -> dict:
    """The input's attributes plus the product's provenance (`info`: model, sha256, config)."""
    attrs = dict(src.attrs)
    attrs.update(
        {
            "Conventions": "CF-1.10",
            "nowcast_infill_schema": SCHEMA_VERSION,
            "model": info.get("model", ""),
            "model_checkpoint_sha256": info.get("sha256", ""),
            "model_config": info.get("config", ""),
            "source_store": str(Path(input_store).resolve()),
            "history": (
                str(src.attrs.get("history", "")) + f"\n{' '.join(sys.argv)} (nowcast_infill {__version__})"
            ).strip(),
        }
    )
    return attrs


def grid_vars(src: xr.Dataset) -> dict:
    """Coordinates and grid variables copied unchanged (lat/lon/crs when present)."""
    keep = {}
    for name in ("lat", "lon", CRS):
        if name in src.variables:
            keep[name] = src[name].load()
    return keep


def iso_time(time: np.datetime64) -> str:
    """`time` as an ISO 8601 UTC string to the second, e.g. 2017-08-16T01:50:00Z."""
    return str(np.datetime_as_string(time, unit="s")) + "Z"
