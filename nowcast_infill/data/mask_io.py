"""Hole masks on disk: masks read from files, no-data patterns of a store, fixed evaluation sets.

* `read_mask_file`: masks (n, H, W) bool from a NetCDF/Zarr variable or an .npz array
  (the `file` generator of data/masks.py draws from them).
* `nodata_patterns_from_store`: the distinct real no-data shapes of a store's frames (the
  `nodata_pattern` generator moves them over the crop).
* `save_mask_set` / `load_mask_set`: a fixed, seeded evaluation mask set with the spec and
  seed that made it, saved beside the results.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nowcast_infill.io.files import open_by_suffix
from nowcast_infill.utils.instantiate import to_plain

MASK_VARIABLE = "mask"


def _open_dataset(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found.")
    # reads stores with or without consolidated metadata, without xarray's fallback warning
    return open_by_suffix(path, consolidated=False)


def read_mask_file(path: str | Path, variable: str = MASK_VARIABLE) -> np.ndarray:
    """Masks (n, H, W) bool from `variable` of a NetCDF/Zarr file, or key `variable` of an .npz.

    The variable must be bool or hold only 0/1 (NaN or other values are refused), with
    dims (n, y, x) or (y, x).
    """
    path = Path(path)
    if path.suffix == ".npz":
        if not path.exists():
            raise FileNotFoundError(f"{path}: file not found.")
        with np.load(path, allow_pickle=False) as npz:
            if variable not in npz.files:
                raise ValueError(
                    f"{path}: no array {variable!r}; arrays in the file: {npz.files}. Set variable=<name>."
                )
            values = npz[variable]
    else:
        ds = _open_dataset(path)
        if variable not in ds:
            raise ValueError(
                f"{path}: no variable {variable!r}; variables in the file: {list(ds.data_vars)}. Set variable=<name>."
            )
        values = np.asarray(ds[variable].values)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise ValueError(f"{path}: variable {variable!r} has {values.ndim} dims; expected (n, y, x) or (y, x).")
    if values.dtype != bool:
        if not np.all(np.isin(values, (0, 1))):
            raise ValueError(
                f"{path}: variable {variable!r} holds values other than 0/1 (e.g. NaN or fractions); "
                "write masks as bool or 0/1 integers."
            )
        values = values.astype(bool)
    return values


def nodata_patterns_from_store(source, max_frames: int = 256, variable: str = "precip") -> np.ndarray:
    """Distinct no-data patterns (n, H, W) bool (True = no data) of a store's frames.

    source: path of a Zarr/NetCDF store or an xarray.Dataset in the store schema.
    Frames flagged `missing_frame` (all NaN) are left out: hiding everything is not
    an infilling task. At most `max_frames` frames, evenly spaced, are read.
    """
    import xarray as xr

    ds = source if isinstance(source, xr.Dataset) else _open_dataset(Path(source))
    where = "<dataset>" if isinstance(source, xr.Dataset) else str(source)
    if variable not in ds:
        raise ValueError(
            f"{where}: no variable {variable!r} to take no-data patterns from; variables: {list(ds.data_vars)}."
        )
    n_time = ds.sizes.get("time", 1)
    keep = np.ones(n_time, dtype=bool)
    if "missing_frame" in ds:
        keep &= ~np.asarray(ds["missing_frame"].values, dtype=bool)
    indices = np.flatnonzero(keep)
    if indices.size > max_frames:
        indices = indices[np.linspace(0, indices.size - 1, max_frames).round().astype(int)]
    data = ds[variable]
    if "time" in data.dims:
        data = data.isel(time=indices)
    nodata = np.isnan(np.asarray(data.values))
    if nodata.ndim == 2:
        nodata = nodata[None]
    unique = np.unique(nodata.reshape(nodata.shape[0], -1), axis=0).reshape(-1, *nodata.shape[1:])
    unique = unique[unique.any(axis=(1, 2))]
    if unique.shape[0] == 0:
        raise ValueError(
            f"{where}: {variable!r} has no NaN pixel in the frames read, so there is no real no-data pattern; "
            "use the radar_outage or freeform mask instead."
        )
    return unique


class MaskSet(NamedTuple):
    """A fixed evaluation mask set: masks (n, H, W) bool, the spec and seed that made it."""

    masks: np.ndarray
    spec: dict
    seed: int


def save_mask_set(
    path: str | Path, masks: np.ndarray, spec: Mapping[str, Any] | Callable[..., np.ndarray], seed: int
) -> Path:
    """Write masks (n, H, W) bool with the spec (JSON) and seed; format from the suffix.

    `.npz`, `.nc` (NetCDF4 via h5netcdf) or `.zarr` (Zarr v3); the variable is `mask`
    (int8 0/1 in NetCDF/Zarr). Written to a temporary name then renamed.
    """
    import xarray as xr

    path = Path(path)
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.dtype != bool:
        raise ValueError(f"save_mask_set: masks must be bool (n, H, W), got {masks.dtype} {masks.shape}.")
    spec_json = json.dumps(to_plain(spec) if not callable(spec) else {"name": type(spec).__name__}, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    if path.suffix == ".npz":
        with open(tmp, "wb") as fh:
            # Any: numpy's stub types **kwds beside allow_pickle: bool, so mypy checks a **dict against both.
            arrays: dict[str, Any] = {MASK_VARIABLE: masks, "spec": np.array(spec_json), "seed": np.array(int(seed))}
            np.savez_compressed(fh, **arrays)
    elif path.suffix in (".nc", ".zarr"):
        ds = xr.Dataset(
            {MASK_VARIABLE: (("sample", "y", "x"), masks.astype(np.int8), {"long_name": "hidden pixel (1) mask"})},
            attrs={"mask_spec": spec_json, "mask_seed": int(seed)},
        )
        if path.suffix == ".nc":
            ds.to_netcdf(tmp, engine="h5netcdf")
        else:
            if tmp.exists():
                shutil.rmtree(tmp)
            ds.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False)
    else:
        raise ValueError(f"{path}: unknown mask set format {path.suffix!r}; use .npz, .nc or .zarr.")
    if path.exists() and path.is_dir():
        shutil.rmtree(path)
    tmp.replace(path)
    return path


def load_mask_set(path: str | Path) -> MaskSet:
    """Read a set written by save_mask_set: MaskSet(masks (n, H, W) bool, spec dict, seed int)."""
    path = Path(path)
    masks = read_mask_file(path, MASK_VARIABLE)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            if "spec" not in npz.files or "seed" not in npz.files:
                raise ValueError(f"{path}: not a mask set (no 'spec'/'seed'); write it with save_mask_set.")
            return MaskSet(masks, json.loads(str(npz["spec"])), int(npz["seed"]))
    ds = _open_dataset(path)
    if "mask_spec" not in ds.attrs or "mask_seed" not in ds.attrs:
        raise ValueError(
            f"{path}: not a mask set (no 'mask_spec'/'mask_seed' attributes); write it with save_mask_set."
        )
    return MaskSet(masks, json.loads(ds.attrs["mask_spec"]), int(ds.attrs["mask_seed"]))
