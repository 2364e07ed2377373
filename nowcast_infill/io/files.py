"""Small file helpers the io floor and its users share: a file's SHA-256, a dataset opened by its name."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Read in blocks of this many bytes: a radar bundle or checkpoint is never held whole.
_HASH_BLOCK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the bytes of the file `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def is_zarr_path(path: Path) -> bool:
    """True when `path` names a Zarr store (a folder, or a name ending in `.zarr`), False for a single file."""
    return path.is_dir() or path.suffix == ".zarr"


def open_by_suffix(path: Path, *, consolidated: bool | None = None):
    """The NetCDF file or Zarr store `path` as a lazy `xarray.Dataset`, chosen by its name.

    A folder or a `.zarr` name is opened with `xarray.open_zarr(consolidated=...)` (None: use
    consolidated metadata when present; False: do not look for it, nor warn about its absence),
    anything else with `xarray.open_dataset` (NetCDF / HDF5). Errors are xarray's: callers
    name the file and the fix in their own terms.
    """
    import xarray as xr

    if is_zarr_path(path):
        return xr.open_zarr(path, consolidated=consolidated)
    return xr.open_dataset(path)
