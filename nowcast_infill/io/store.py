"""Atomic creation of / append to a radar store (format: docs/schema.md).

Every commit copies the current store (if any) to `NAME.zarr.tmp-<pid>`, appends there,
and swaps the directories by two renames (`NAME.zarr -> NAME.zarr.old-<pid>`, staging ->
`NAME.zarr`). A reader therefore sees either the old or the new store, never a partial
frame. A process killed in between leaves at worst a stale staging directory (removed
by the next run) or, between the two renames, only `NAME.zarr.old-<pid>`, which
`recover_store` puts back. Files already listed in `source_files` with the same
SHA-256 are recognised on the next run, so a killed conversion resumes exactly.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nowcast_infill import schema
from nowcast_infill.io.importers import ConversionError, Frame

log = logging.getLogger(__name__)

DEFAULT_CHUNKS = {"time": 1, "y": 256, "x": 256}
DEFAULT_COMPRESSION = {"cname": "zstd", "clevel": 1}


@dataclass
class SourceRecord:
    """One converted file, as listed in the store's `source_files` attribute."""

    name: str
    sha256: str
    time: str

    def as_dict(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "time": self.time}


@dataclass
class AppendResult:
    """What one `append_frames` call did."""

    store: Path
    written_times: list[str] = field(default_factory=list)
    missing_inserted: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    n_time_total: int = 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_store(path: str | Path) -> None:
    """Undo what a killed commit left behind next to `path`.

    Restores `NAME.zarr.old-<pid>` when `NAME.zarr` is absent (killed between the two
    renames) and deletes staging/old directories of processes that are no longer alive.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return
    for leftover in sorted(parent.glob(path.name + ".old-*")):
        pid = _suffix_pid(leftover)
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue
        if not path.exists():
            log.warning("restoring %s from %s (a previous conversion was killed mid-commit)", path, leftover)
            leftover.rename(path)
        else:
            shutil.rmtree(leftover, ignore_errors=True)
    for staging in parent.glob(path.name + ".tmp-*"):
        pid = _suffix_pid(staging)
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue
        log.warning("removing %s left by an interrupted conversion", staging)
        shutil.rmtree(staging, ignore_errors=True)


def _suffix_pid(p: Path) -> int | None:
    try:
        return int(p.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _iso(t: np.datetime64) -> str:
    return str(np.datetime_as_string(np.datetime64(t, "s"), unit="s"))


@dataclass
class _StoreState:
    times: np.ndarray
    x: np.ndarray
    y: np.ndarray
    attrs: dict
    proj4: str


def _read_state(path: Path) -> _StoreState | None:
    import xarray as xr

    if not path.exists():
        return None
    try:
        ds = xr.open_zarr(path, consolidated=None)
    except Exception as err:
        raise ConversionError(
            path, f"existing output is not a readable Zarr store ({type(err).__name__}: {err}); choose another output= or delete it."
        ) from err
    with ds:
        schema.validate_store(ds, path)
        return _StoreState(
            times=ds["time"].values.astype("datetime64[ns]"),
            x=np.asarray(ds["x"].values, dtype=np.float64),
            y=np.asarray(ds["y"].values, dtype=np.float64),
            attrs=dict(ds.attrs),
            proj4=str(ds[schema.CRS].attrs.get("proj4", "")),
        )


def _check_consistent(frames: list[Frame], state: _StoreState | None, store: Path) -> None:
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


def _time_step_s(frames: list[Frame], state: _StoreState | None) -> int:
    if state is not None and int(state.attrs.get("time_step_s", 0)) > 0:
        return int(state.attrs["time_step_s"])
    times = np.array([f.time for f in frames], dtype="datetime64[ns]")
    if state is not None:
        times = np.concatenate([state.times, times])
    diffs = np.diff(np.unique(times)).astype("timedelta64[s]").astype(np.int64)
    if diffs.size:
        return int(diffs.min())
    return int(frames[0].accumulation_interval_s)


def append_frames(
    path: str | Path,
    frames: list[Frame],
    sources: dict[Path, SourceRecord],
    *,
    source_name: str,
    chunks: dict | None = None,
    compression: dict | None = None,
    skipped_files: list[dict] | None = None,
    history: str = "",
) -> AppendResult:
    """Add `frames` (any order) to the store at `path`, creating it when absent; atomic.

    sources: SHA-256 record of each frame's file. A frame whose file is already listed
    with the same SHA-256 is skipped (resume); any other frame at or before the store's
    last time, or two frames at one time, is refused with a ConversionError naming the
    file and the conflict. Gaps are filled with all-NaN frames flagged `missing_frame`.
    """
    path = Path(path)
    recover_store(path)
    state = _read_state(path)
    result = AppendResult(store=path)
    known = {(d["name"], d["sha256"]) for d in (state.attrs.get("source_files", []) if state else [])}

    fresh = []
    for f in sorted(frames, key=lambda fr: fr.time):
        rec = sources[f.source]
        if (rec.name, rec.sha256) in known:
            result.already_present.append(rec.name)
        else:
            fresh.append(f)
    new_skips = list(skipped_files or [])
    if not fresh:
        result.n_time_total = 0 if state is None else int(state.times.size)
        if new_skips and state is not None:
            _commit(path, state, [], [], sources, source_name, chunks, compression, new_skips, history, 0)
        return result

    _check_consistent(fresh, state, path)
    for a, b in zip(fresh, fresh[1:]):
        if a.time == b.time:
            raise ConversionError(b.source, f"duplicate time {_iso(b.time)}: {a.source.name} has the same time; drop one of them.")
    if state is not None and state.times.size and fresh[0].time <= state.times[-1]:
        f = fresh[0]
        clash = "duplicates a time already in" if f.time in set(state.times) else "is before the end of"
        raise ConversionError(
            f.source,
            f"time {_iso(f.time)} {clash} the store {path} (last time {_iso(state.times[-1])}); "
            "appends must be later than the store's last time: convert it into a new output= instead.",
        )

    step_s = _time_step_s(fresh, state)
    start = state.times[0] if state is not None and state.times.size else fresh[0].time
    step = np.timedelta64(step_s, "s") if step_s > 0 else None
    if step is not None:
        for f in fresh:
            if (f.time - start) % step:
                raise ConversionError(
                    f.source, f"time {_iso(f.time)} is off the regular {step_s} s time axis that starts {_iso(start)}; "
                    "a store holds one time step: convert it into its own output=."
                )
    filled, missing = [], []
    prev = state.times[-1] if state is not None and state.times.size else None
    for f in fresh:
        if prev is not None and step is not None:
            t = prev + step
            while t < f.time:
                filled.append(t)
                missing.append(t)
                t = t + step
        filled.append(f)
        prev = f.time
    result.written_times = [_iso(f.time) for f in fresh]
    result.missing_inserted = [_iso(t) for t in missing]
    _commit(path, state, filled, missing, sources, source_name, chunks, compression, new_skips, history, step_s)
    result.n_time_total = (0 if state is None else int(state.times.size)) + len(filled)
    return result


def _commit(path, state, filled, missing, sources, source_name, chunks, compression, new_skips, history, step_s) -> None:
    import xarray as xr
    import zarr

    staging = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        if state is not None:
            shutil.copytree(path, staging)
        frames = [f for f in filled if isinstance(f, Frame)]
        if filled:
            ref = frames[0]
            ds = _frames_dataset(filled, ref)
            if state is None:
                ds = ds.assign_coords(
                    lat=(("y", "x"), ref.grid.lat, {"units": "degrees_north", "long_name": "latitude"}),
                    lon=(("y", "x"), ref.grid.lon, {"units": "degrees_east", "long_name": "longitude"}),
                )
                ds[schema.CRS] = xr.DataArray(
                    np.int8(0),
                    attrs={k: v for k, v in {"grid_mapping_name": ref.grid.grid_mapping_name, "proj4": ref.grid.proj4,
                                             "crs_wkt": ref.grid.crs_wkt}.items() if v},
                )
                ds.to_zarr(staging, mode="w-", encoding=_encoding(ds, chunks, compression), zarr_format=3, consolidated=False)
            else:
                ds.to_zarr(staging, append_dim="time", zarr_format=3, consolidated=False)
        group = zarr.open_group(staging, mode="r+")
        attrs = dict(state.attrs) if state is not None else {}
        attrs.update(_new_attrs(attrs, frames, missing, sources, source_name, new_skips, history, step_s))
        group.attrs.put(attrs)
        with warnings.catch_warnings():
            # zarr 3 flags consolidated metadata as not yet in the v3 spec; xarray reads it.
            warnings.simplefilter("ignore", category=UserWarning)
            zarr.consolidate_metadata(staging)
        old = path.with_name(f"{path.name}.old-{os.getpid()}")
        if path.exists():
            path.rename(old)
        staging.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _frames_dataset(filled: list, ref: Frame):
    import xarray as xr

    h, w = ref.grid.shape
    times = np.array([f.time if isinstance(f, Frame) else f for f in filled], dtype="datetime64[ns]")
    precip = np.empty((len(filled), h, w), dtype=np.float32)
    is_missing = np.zeros(len(filled), dtype=bool)
    for i, f in enumerate(filled):
        if isinstance(f, Frame):
            precip[i] = f.precip
        else:
            precip[i] = np.nan
            is_missing[i] = True
    ds = xr.Dataset(
        {
            schema.PRECIP: (
                schema.PRECIP_DIMS,
                precip,
                {"units": schema.PRECIP_UNITS, "long_name": "precipitation rate", "standard_name": "rainfall_rate",
                 "grid_mapping": schema.CRS},
            ),
            schema.MISSING_FRAME: (("time",), is_missing, {"long_name": "time step inserted for a gap in the source (all-NaN)"}),
        },
        coords={
            "time": ("time", times, {"timezone": "UTC", "long_name": "end of accumulation interval / scan time"}),
            "y": ("y", ref.grid.y, {"units": "km", "standard_name": "projection_y_coordinate"}),
            "x": ("x", ref.grid.x, {"units": "km", "standard_name": "projection_x_coordinate"}),
        },
    )
    return ds


def _encoding(ds, chunks: dict | None, compression: dict | None) -> dict:
    from zarr.codecs import BloscCodec

    want = {**DEFAULT_CHUNKS, **(chunks or {})}
    sizes = ds.sizes
    precip_chunks = tuple(max(1, min(int(want[d]), sizes[d])) for d in schema.PRECIP_DIMS)
    comp = {**DEFAULT_COMPRESSION, **(compression or {})}
    codec = BloscCodec(cname=comp["cname"], clevel=int(comp["clevel"]), shuffle="shuffle")
    return {
        schema.PRECIP: {"chunks": precip_chunks, "compressors": [codec]},
        "time": {"units": "seconds since 1970-01-01", "dtype": "int64", "chunks": (max(1, int(want["time"])) * 1024,)},
        schema.MISSING_FRAME: {"chunks": (max(1, int(want["time"])) * 1024,)},
    }


def _new_attrs(old: dict, frames, missing, sources, source_name, new_skips, history, step_s) -> dict:
    import importlib.metadata as md

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
    attrs["missing_times"] = list(old.get("missing_times", [])) + [_iso(t) for t in missing]
    attrs["skipped_files"] = list(old.get("skipped_files", [])) + list(new_skips)
    versions = []
    for pkg in ("nowcast_infill", "wradlib", "pysteps", "xarray", "zarr", "numpy"):
        try:
            versions.append(f"{pkg}=={md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    line = f"{np.datetime_as_string(np.datetime64('now', 's'))}Z {history} ({', '.join(versions)})".strip()
    attrs["history"] = (str(old.get("history", "")) + "\n" + line).strip()
    return attrs
