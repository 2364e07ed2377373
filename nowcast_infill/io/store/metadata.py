"""What a radar store holds beyond its pixels: opening and validating it, its state, its attributes.

`open_store` is the one way the package opens an existing store for reading (the converter,
the DataModule and archive inference all go through it).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nowcast_infill import schema
from nowcast_infill.errors import MissingInputError
from nowcast_infill.io.importers import ConversionError, Frame
from nowcast_infill.io.store.time_axis import iso_time


def open_store(path: str | Path, **open_zarr_options):
    """The radar store at `path` as a lazy `xarray.Dataset`, checked against docs/schema.md.

    open_zarr_options go to `xarray.open_zarr` (e.g. `chunks=None`: numpy-backed lazy arrays
    instead of dask). Raises MissingInputError when `path` does not exist and StoreSchemaError
    when it is not a readable Zarr store or breaks the schema; both name `path` as given.
    """
    import xarray as xr

    shown, path = str(path), Path(path)
    if not path.exists():
        raise MissingInputError(
            f"{shown}: radar store not found; create it with `ni-convert ... output={shown}` "
            f"(real data) or `ni-synth output={shown}` (synthetic data)."
        )
    try:
        with warnings.catch_warnings():
            # Stores without consolidated metadata (allowed by the schema) open fine, just slower.
            warnings.filterwarnings("ignore", message=".*consolidated metadata.*", category=RuntimeWarning)
            ds = xr.open_zarr(path, **open_zarr_options)
    except Exception as err:  # zarr raises several types for a folder that is not a store
        raise schema.StoreSchemaError(
            f"{shown}: not a readable Zarr store ({type(err).__name__}: {err}); "
            "re-create it with ni-convert, or name another store."
        ) from err
    try:
        schema.validate_store(ds, shown)
    except BaseException:
        ds.close()
        raise
    return ds


@dataclass
class SourceRecord:
    """One converted file, as listed in the store's `source_files` attribute."""

    name: str
    sha256: str
    time: str

    def as_dict(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "time": self.time}


@dataclass
class StoreState:
    """What a writer needs to know of an existing store.

    times: (T,) datetime64[ns]; missing: (T,) bool `missing_frame`; x: (W,), y: (H,) float64 km;
    attrs: the root attributes; proj4: the `crs` variable's PROJ string ('' when absent).
    """

    times: np.ndarray
    missing: np.ndarray
    x: np.ndarray
    y: np.ndarray
    attrs: dict
    proj4: str


def read_state(path: Path) -> StoreState | None:
    """The state of the store at `path`, None when there is none yet; StoreSchemaError as `open_store`."""
    if not path.exists():
        return None
    with open_store(path) as ds:
        return StoreState(
            times=ds["time"].values.astype("datetime64[ns]"),
            missing=np.asarray(ds[schema.MISSING_FRAME].values, dtype=bool),
            x=np.asarray(ds["x"].values, dtype=np.float64),
            y=np.asarray(ds["y"].values, dtype=np.float64),
            attrs=dict(ds.attrs),
            proj4=str(ds[schema.CRS].attrs.get("proj4", "")),
        )


def check_consistent(frames: list[Frame], state: StoreState | None, store: Path) -> None:
    """Refuse frames whose product, interval or grid differ from the store's or each other's."""
    ref = frames[0]
    if state is not None:
        want_product = state.attrs.get("source_product")
        want_interval = state.attrs.get("accumulation_interval_s")
        for f in frames:
            if f.product != want_product or f.accumulation_interval_s != want_interval:
                raise ConversionError(
                    f.source,
                    f"product {f.product} ({f.accumulation_interval_s} s) does not match the store {store} "
                    f"({want_product}, {want_interval} s); write it to a separate output=.",
                )
            if not f.grid.same_as(state.x, state.y, state.proj4):
                raise ConversionError(
                    f.source,
                    f"grid {f.grid.shape} / {f.grid.proj4!r} does not match the store {store} "
                    f"({state.y.size}x{state.x.size}, {state.proj4!r}); write it to a separate output=.",
                )
    for f in frames[1:]:
        if f.product != ref.product or f.accumulation_interval_s != ref.accumulation_interval_s:
            raise ConversionError(
                f.source,
                f"product {f.product} ({f.accumulation_interval_s} s) differs from {ref.source.name} "
                f"({ref.product}, {ref.accumulation_interval_s} s); convert each product into its own store.",
            )
        if f.grid is not ref.grid and not f.grid.same_as(ref.grid.x, ref.grid.y, ref.grid.proj4):
            raise ConversionError(
                f.source,
                f"grid {f.grid.shape} differs from {ref.source.name} {ref.grid.shape}; convert each grid into its own store.",
            )


@functools.lru_cache(maxsize=1)
def package_versions() -> tuple[str, ...]:
    """`pkg==version` of the packages a store's `history` names (looked up once per process: ~10 ms)."""
    import importlib.metadata as md

    versions = []
    for pkg in ("nowcast_infill", "wradlib", "pysteps", "xarray", "zarr", "numpy"):
        try:
            versions.append(f"{pkg}=={md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    return tuple(versions)


def new_store_attrs(old: dict, frames, missing, sources, source_name, new_skips, history, step_s) -> dict:
    """The root attributes after a commit, from the store's `old` ones (docs/schema.md § Attributes).

    frames: the Frames written, in time order; missing: datetime64 of the inserted gap frames;
    sources: file -> SourceRecord of each frame's file; new_skips: `{"name", "error"}` of refused
    files; history: the command line for the history entry; step_s: the time step (s).
    """
    attrs: dict = {}
    if frames:
        ref = frames[0]
        attrs.update(
            nowcast_infill_schema=schema.SCHEMA_VERSION,
            source=source_name,
            source_product=ref.product,
            accumulation_interval_s=int(ref.accumulation_interval_s),
            time_step_s=int(step_s),
            conversion=ref.conversion,
        )
        if ref.zr is not None:
            attrs.update(zr_a=float(ref.zr[0]), zr_b=float(ref.zr[1]))
        sites = list(old.get("radar_sites", []))
        for f in frames:
            sites.extend(s for s in f.radar_sites if s not in sites)
        attrs["radar_sites"] = sites
        attrs["source_files"] = list(old.get("source_files", [])) + [sources[f.source].as_dict() for f in frames]
    attrs["missing_times"] = list(old.get("missing_times", [])) + [iso_time(t) for t in missing]
    attrs["skipped_files"] = list(old.get("skipped_files", [])) + list(new_skips)
    line = f"{np.datetime_as_string(np.datetime64('now', 's'))}Z {history} ({', '.join(package_versions())})".strip()
    attrs["history"] = (str(old.get("history", "")) + "\n" + line).strip()
    return attrs
