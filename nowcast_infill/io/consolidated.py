"""Consolidated metadata of a Zarr store: the one call every writer of the io floor makes when it is done."""

from __future__ import annotations

import warnings
from pathlib import Path


def consolidate(path: str | Path) -> None:
    """Write the consolidated metadata of the Zarr store at `path` (what xarray reads in one request)."""
    import zarr

    with warnings.catch_warnings():
        # zarr 3 flags consolidated metadata as not yet in the v3 spec; xarray reads it.
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(path))
