"""Atomic creation of / append to a radar store (format: docs/schema.md).

`StoreWriter` streams frames, as they are read, into a staging directory
`NAME.zarr.tmp-<pid>` and publishes them in one commit:

* new store: the staging directory is a complete store, renamed to `NAME.zarr`.
* append: staging holds only copies of the small `zarr.json` metadata files and the
  chunk files the append writes (new frames; `time` / `missing_frame`, which are
  small). Publishing moves chunk files into the store with `os.replace`, then the
  arrays' `zarr.json`, and the root `zarr.json` last. Nothing of the existing store
  is copied, so an append costs what it writes, not the size of the store.

Why readers never see a partial frame: new frames land in chunks beyond the shape
recorded in the old metadata, so they are invisible until the metadata changes; a
chunk that holds old and new time steps (`time`, `missing_frame`, or `precip` with a
time chunk > 1) is replaced whole by `os.replace` (atomic on POSIX) and keeps the old
values in the old range. The root `zarr.json` carries the consolidated metadata that
`xarray.open_zarr` reads, so replacing that one file switches readers from the old
shape to the new one at once; chunk files are all in place before it.

A killed conversion: before any file of the store is touched, a marker file is
written into staging (atomically). `recover_store` (run by every writer) finishes a
marked commit by repeating the moves (idempotent), and deletes an unmarked staging
directory, leaving the store as it was. Files already listed in `source_files` with
the same SHA-256 are recognised on the next run, so a killed conversion resumes
with no frame lost or doubled.

One writer at a time: a `StoreWriter` holds the store's `StoreLock` (the file
`NAME.zarr.lock`, nowcast_infill/io/store_lock.py) from before it reads the store's
state until its commit is published, and `convert` holds it across all its commits; a
second writer waits `lock_timeout` seconds or fails naming the holder.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nowcast_infill import schema
from nowcast_infill.errors import BadValueError
from nowcast_infill.io import frame_stats
from nowcast_infill.io.importers import ConversionError, Frame
from nowcast_infill.io.store_lock import DEFAULT_LOCK_TIMEOUT_S, StoreLock

log = logging.getLogger(__name__)

# Layout of `precip`: sizes along (time, y, x); a null `y` / `x` means the whole grid.
# The defaults are chosen by experiments/bench_data.py; the numbers are in conf/convert.yaml.
DEFAULT_CHUNKS = {"time": 1, "y": None, "x": None}
# Zarr v3 sharding: `chunks` become the inner chunks (the unit a reader decodes) and a
# shard (the unit stored as one file) holds `time` steps by `y` x `x` pixels. None: no
# sharding, one file per chunk.
DEFAULT_SHARDS: dict | None = None
DEFAULT_COMPRESSION = {"cname": "zstd", "clevel": 1}
# Frames read but not yet written to staging (at least 2 are always allowed): the reader
# goes on while the writer thread creates the staging store (~40 ms) or falls behind.
MAX_QUEUED_BYTES = 64 << 20
# Gaps up to this long (seconds of missing time steps) become explicit all-NaN frames
# flagged `missing_frame`; a longer one starts a new segment (docs/schema.md § Segments):
# two events years apart must not materialise every step between them.
DEFAULT_MAX_GAP_S = 3600.0


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
    segment_breaks: list[str] = field(default_factory=list)  # first time of each new segment
    already_present: list[str] = field(default_factory=list)
    n_time_total: int = 0


# Written into staging, atomically, once staging is complete; from then on the commit
# is finished (rolled forward) even when the writing process dies.
COMMIT_MARKER = "nowcast_infill_commit"
# Frames whose arrival order is not yet their place on the time axis are written to
# this scratch array in staging when `precip` cannot simply be re-indexed (time chunk > 1).
_ARRIVALS = "_arrivals"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _suffix_pid(p: Path) -> int | None:
    try:
        return int(p.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def recover_store(path: str | Path) -> None:
    """Finish or undo what a killed commit left next to `path`.

    A staging directory `NAME.zarr.tmp-<pid>` of a dead process is rolled forward into
    the store when it carries the commit marker, and deleted otherwise. Runs under the
    store's lock (re-entrant: a writer that holds it calls this), so no live writer's
    staging is touched.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return
    with StoreLock(path):
        _recover_unlocked(path, parent)


def _recover_unlocked(path: Path, parent: Path) -> None:
    for staging in sorted(parent.glob(path.name + ".tmp-*")):
        pid = _suffix_pid(staging)
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue
        if (staging / COMMIT_MARKER).exists():
            log.warning("finishing the commit %s -> %s (a previous conversion was killed mid-commit)", staging, path)
            _publish(staging, path)
        else:
            log.warning("removing %s left by an interrupted conversion", staging)
            shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, path: Path) -> None:
    """Move a marked staging directory into the store; idempotent, so it can be repeated."""
    if not path.exists():
        (staging / COMMIT_MARKER).unlink(missing_ok=True)
        staging.rename(path)
        return
    arrays = sorted(p.parent for p in staging.glob("*/zarr.json"))
    for array in arrays:  # chunks first: invisible to readers until the metadata changes
        for root, _dirs, files in os.walk(array):
            rel = Path(root).relative_to(staging)
            for name in files:
                if rel == array.relative_to(staging) and name == "zarr.json":
                    continue
                target = path / rel / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(Path(root) / name, target)
    for array in arrays:
        # An array new in this commit (e.g. the frame statistics added to a schema 1 store)
        # whose chunks all equal its fill value has no chunk file, so no directory yet.
        (path / array.relative_to(staging)).mkdir(parents=True, exist_ok=True)
        os.replace(array / "zarr.json", path / array.relative_to(staging) / "zarr.json")
    if (staging / "zarr.json").exists():
        os.replace(staging / "zarr.json", path / "zarr.json")  # the switch for readers
    shutil.rmtree(staging, ignore_errors=True)


def _iso(t: np.datetime64) -> str:
    return str(np.datetime_as_string(np.datetime64(t, "s"), unit="s"))


@dataclass
class _StoreState:
    times: np.ndarray
    missing: np.ndarray
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
            missing=np.asarray(ds[schema.MISSING_FRAME].values, dtype=bool),
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


def _place_on_time_axis(fresh: list[Frame], state: _StoreState | None, path: Path,
                        max_gap_s: float | None = DEFAULT_MAX_GAP_S) -> tuple[list, list, int, list]:
    """Validate the time order of `fresh` (sorted) against the store; return (filled, missing, step_s, breaks).

    filled: the new time steps in order, each a Frame or a datetime64 of an inserted gap.
    A gap of more than `max_gap_s` seconds of missing time steps is not filled: the next
    frame starts a new segment (its time is listed in `breaks`); None fills every gap.
    """
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
    filled, missing, breaks = [], [], []
    prev = state.times[-1] if state is not None and state.times.size else None
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


class StoreWriter:
    """One atomic update of the store at `path`: `add` frames as they are read, then `commit`.

    A background thread creates the staging store and compresses and writes the frames
    into it while the caller reads the next files; a frame is held in memory only until
    written (at most `MAX_QUEUED_BYTES` of them wait). Nothing in
    the store changes before `commit`; `abort` (or an exception in `commit`) leaves it
    as it was. Use as a context manager to abort on error.

    chunks, shards, compression: layout of `precip` for a new store (see `DEFAULT_CHUNKS`,
    `DEFAULT_SHARDS`); an append keeps the layout the store already has.

    The writer holds the store's `StoreLock` from before it reads the store until `commit`
    or `abort` ends; another writer waits up to `lock_timeout` seconds, then gets a
    `StoreLockedError` naming the holder (nowcast_infill/io/store_lock.py).
    """

    def __init__(self, path: str | Path, *, source_name: str, chunks: dict | None = None,
                 shards: dict | None = DEFAULT_SHARDS, compression: dict | None = None, history: str = "",
                 expected_frames: int = 16, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
                 max_gap_s: float | None = DEFAULT_MAX_GAP_S):
        self.path = Path(path)
        self.max_gap_s = checked_max_gap(max_gap_s)
        self.source_name = source_name
        self.chunks = chunks
        self.shards = shards
        self.compression = compression
        self.history = history
        self._lock = StoreLock(path, timeout=lock_timeout, command=history or None).acquire()
        try:
            recover_store(self.path)
            self.state = _read_state(self.path)
        except BaseException:
            self._lock.release()
            raise
        self.n_old = 0 if self.state is None else int(self.state.times.size)
        self.staging = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self.result = AppendResult(store=self.path)
        self._known = {(d["name"], d["sha256"]) for d in (self.state.attrs.get("source_files", []) if self.state else [])}
        self._fresh: list[Frame] = []  # metadata of each written frame, precip dropped, in arrival order
        self._records: dict[Path, SourceRecord] = {}
        self._skips: list[dict] = []
        self._capacity = max(1, int(expected_frames))
        self._arrivals = None  # zarr array the frames are written to in arrival order
        self._arrival_offset = 0  # index of the first arrival in `_arrivals`
        self._in_place = False  # arrivals written straight into staging `precip`
        self._writer: ThreadPoolExecutor | None = None  # the one thread that writes staging
        self._write_chunk = None  # writes one arrival as one chunk, when `_arrivals` allows it
        self._opened: Future | None = None  # staging created (by the writer thread)
        self._pending: deque[tuple[Future, int]] = deque()  # writer jobs not yet checked, bytes each holds
        self._pending_bytes = 0
        # Per-frame statistics (nowcast_infill/io/frame_stats.py), computed by the writer
        # thread as it writes each arrival: arrival index -> FrameStats (mask dropped).
        self._stats: dict[int, frame_stats.FrameStats] = {}
        self._pixel_valid: np.ndarray | None = None  # (H, W) frames valid per pixel, this commit

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, frame: Frame, record: SourceRecord) -> None:
        """Queue `frame` (read from the file described by `record`) for this commit.

        A frame of a file already in the store with the same SHA-256 is counted as
        already present and not written again (resume). Raises ConversionError when its
        product or grid does not match the store or the frames added before.
        """
        if (record.name, record.sha256) in self._known:
            self.result.already_present.append(record.name)
            return
        _check_consistent(self._fresh[:1] + [frame], self.state, self.path)
        if self._writer is None:
            # Staging is created by the writer thread too, while the caller reads the
            # next files; every staging job runs there, in the order submitted.
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ni-store-writer")
            self._opened = self._writer.submit(self._open_staging, replace(frame, precip=None))
        index = len(self._fresh)
        if index >= self._capacity:
            self._capacity *= 2
            self._pending.append((self._writer.submit(self._resize_arrivals, self._capacity), 0))
        self._records[frame.source] = record
        self._fresh.append(replace(frame, precip=None))
        # Bound the frames held in memory; enough of them to read on while staging is created.
        while len(self._pending) >= 2 and self._pending_bytes + frame.precip.nbytes > MAX_QUEUED_BYTES:
            self._check_oldest()
        self._pending.append((self._writer.submit(self._write_arrival, index, frame.precip), frame.precip.nbytes))
        self._pending_bytes += frame.precip.nbytes

    def skip(self, entry: dict) -> None:
        """Record a refused file `{"name", "error"}` in this commit's `skipped_files`."""
        self._skips.append(dict(entry))

    def abort(self) -> None:
        """Drop everything added; the store stays as it was."""
        try:
            self._close_writer(wait=False)
            shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ internals

    def _open_staging(self, ref: Frame) -> None:
        import zarr

        if self.staging.exists():
            shutil.rmtree(self.staging)
        if self.state is None:
            _create_skeleton(self.staging, ref, self.chunks, self.compression, self.shards)
        else:
            self._copy_metadata()
        precip = zarr.open_array(self.staging / schema.PRECIP, mode="r+")
        key_encoding = precip.metadata.chunk_key_encoding
        # One file (chunk or shard) per time step under `c/<t>/`: arrivals can go straight
        # into `precip` and be put in time order by renaming directories.
        self._in_place = (_storage_unit(precip)[0] == 1 and key_encoding.name == "default"
                          and getattr(key_encoding, "separator", "/") == "/")
        if self._in_place:
            self._arrivals, self._arrival_offset = precip, self.n_old
        else:
            storage = _storage_unit(precip)
            self._arrivals = zarr.create_array(
                self.staging / _ARRIVALS, shape=(self._capacity, *precip.shape[1:]), dtype=precip.dtype,
                chunks=(1, *precip.chunks[1:]), shards=(1, *storage[1:]) if precip.shards else None,
                fill_value=np.nan, compressors=precip.compressors, zarr_format=3,
            )
        self._resize_arrivals(self._capacity)
        self._write_chunk = _whole_frame_chunk_writer(self._arrivals)
        _package_versions()  # cached for the commit's history line, here off the reading path

    def _resize_arrivals(self, capacity: int) -> None:
        self._arrivals.resize((self._arrival_offset + capacity, *self._arrivals.shape[1:]))

    def _write_arrival(self, index: int, precip: np.ndarray) -> None:
        self._opened.result()  # a failed staging creation raises its own error here
        if self._write_chunk is not None:
            self._write_chunk(self._arrival_offset + index, precip)
        else:
            self._arrivals[self._arrival_offset + index] = precip
        stats = frame_stats.frame_statistics(precip)
        if self._pixel_valid is None:
            self._pixel_valid = np.zeros(precip.shape, np.int64)
        self._pixel_valid += stats.valid
        stats.valid = None  # the mask is summed above; keep only the scalars per frame
        self._stats[index] = stats

    def _copy_metadata(self) -> None:
        """Staging for an append: the store's metadata files only (no chunk is copied)."""
        self.staging.mkdir()
        shutil.copy2(self.path / "zarr.json", self.staging / "zarr.json")
        for meta in self.path.glob("*/zarr.json"):
            (self.staging / meta.parent.name).mkdir()
            shutil.copy2(meta, self.staging / meta.parent.name / "zarr.json")

    def _drain(self) -> None:
        if self._opened is not None:
            self._opened.result()
        while self._pending:
            self._check_oldest()

    def _check_oldest(self) -> None:
        job, nbytes = self._pending.popleft()
        self._pending_bytes -= nbytes
        job.result()

    def _close_writer(self, wait: bool = True) -> None:
        if wait:
            self._drain()
        if self._writer is not None:
            self._writer.shutdown(wait=True, cancel_futures=True)
            self._writer = None
        self._pending.clear()
        self._pending_bytes = 0

    def commit(self) -> AppendResult:
        """Validate the time axis, finish the staging store and publish it atomically.

        Raises ConversionError naming the file for duplicate, out-of-order or off-axis
        times; the store is then left untouched.
        """
        try:
            self._close_writer()
            result = self._commit()
        except BaseException:
            self.abort()
            raise
        self._lock.release()
        return result

    def _commit(self) -> AppendResult:
        import zarr

        result = self.result
        if not self._fresh:
            result.n_time_total = self.n_old
            if self._skips and self.state is not None:
                self._copy_metadata()
                self._finish_metadata([], [], 0)
                _mark_and_publish(self.staging, self.path)
            return result
        order = sorted(range(len(self._fresh)), key=lambda i: self._fresh[i].time)
        fresh = [self._fresh[i] for i in order]
        filled, missing, step_s, breaks = _place_on_time_axis(fresh, self.state, self.path, self.max_gap_s)
        position = {id(f): self.n_old + k for k, f in enumerate(filled) if isinstance(f, Frame)}
        final_index = [position[id(self._fresh[i])] for i in range(len(self._fresh))]  # per arrival
        n_new = self.n_old + len(filled)
        if self._in_place:
            self._reindex_in_place(final_index)
            if self._arrivals.shape[0] != n_new:  # sized for the frames expected, gaps not counted
                self._arrivals.resize((n_new, *self._arrivals.shape[1:]))
        else:
            self._rewrite_from_arrivals(zarr.open_array(self.staging / schema.PRECIP, mode="r+"), final_index, n_new)
        self._write_time_axis(filled, n_new)
        gaps = [self.n_old + k for k, f in enumerate(filled) if not isinstance(f, Frame)]
        frame_stats.write_commit_stats(self.staging, self.path, self.n_old, n_new,
                                       {final_index[a]: s for a, s in self._stats.items()}, gaps, self._pixel_valid)
        self._finish_metadata([f for f in filled if isinstance(f, Frame)], missing, step_s)
        _mark_and_publish(self.staging, self.path)
        result.written_times = [_iso(f.time) for f in fresh]
        result.missing_inserted = [_iso(t) for t in missing]
        result.segment_breaks = [_iso(t) for t in breaks]
        result.n_time_total = n_new
        return result

    def _reindex_in_place(self, final_index: list[int]) -> None:
        """Move each arrival's chunk directory `precip/c/<t>` to its place on the time axis."""
        moves = {self.n_old + a: t for a, t in enumerate(final_index) if self.n_old + a != t}
        if not moves:
            return
        chunk_root = self.staging / schema.PRECIP / "c"
        parked = self.staging / schema.PRECIP / "c-parked"
        parked.mkdir()
        for src in moves:  # all out first: a target may be another arrival's current place
            if (chunk_root / str(src)).exists():  # an all-NaN frame has no chunk file
                (chunk_root / str(src)).rename(parked / str(src))
        for src, dst in moves.items():
            if (parked / str(src)).exists():
                (parked / str(src)).rename(chunk_root / str(dst))
        parked.rmdir()

    def _rewrite_from_arrivals(self, precip, final_index: list[int], n_new: int) -> None:
        """Write the arrivals, in time order, into `precip` one storage unit (chunk or shard) of time at a time.

        The first unit may already hold frames of the store: they are read from the store
        and written again with the new ones, so its file is replaced whole.
        """
        import zarr

        arrival_at = {t: a for a, t in enumerate(final_index)}
        precip.resize((n_new, *precip.shape[1:]))
        old = zarr.open_array(self.path / schema.PRECIP, mode="r") if self.n_old else None
        tc = _storage_unit(precip)[0]
        for start in range(self.n_old - self.n_old % tc, n_new, tc):
            stop = min(start + tc, n_new)
            block = np.full((stop - start, *precip.shape[1:]), np.nan, dtype=precip.dtype)
            if start < self.n_old:
                block[: self.n_old - start] = old[start:self.n_old]
            for t in range(max(start, self.n_old), stop):
                if t in arrival_at:
                    block[t - start] = self._arrivals[arrival_at[t]]
            precip[start:stop] = block
        shutil.rmtree(self.staging / _ARRIVALS)

    def _write_time_axis(self, filled: list, n_new: int) -> None:
        import zarr

        new_times = np.array([f.time if isinstance(f, Frame) else f for f in filled], dtype="datetime64[ns]")
        new_missing = np.array([not isinstance(f, Frame) for f in filled], dtype=bool)
        times, missing = new_times, new_missing
        if self.state is not None:
            times = np.concatenate([self.state.times, new_times])
            missing = np.concatenate([self.state.missing, new_missing])
        time_arr = zarr.open_array(self.staging / "time", mode="r+")
        time_arr.resize((n_new,))
        time_arr[:] = _encode_times(times, time_arr.attrs["units"], time_arr.attrs.get("calendar", "proleptic_gregorian"),
                                    np.dtype(time_arr.dtype))
        missing_arr = zarr.open_array(self.staging / schema.MISSING_FRAME, mode="r+")
        missing_arr.resize((n_new,))
        if self.state is not None or missing.any():  # a new store without gaps: all fill value (False) already
            missing_arr[:] = missing

    def _finish_metadata(self, frames: list[Frame], missing: list, step_s: int) -> None:
        import zarr

        group = zarr.open_group(self.staging, mode="r+")
        attrs = dict(self.state.attrs) if self.state is not None else {}
        attrs.update(_new_attrs(attrs, frames, missing, self._records, self.source_name, self._skips, self.history, step_s))
        if frames:
            attrs["max_gap_s"] = self.max_gap_s  # gaps longer than this are segment boundaries (null: none)
        group.attrs.put(attrs)
        with warnings.catch_warnings():
            # zarr 3 flags consolidated metadata as not yet in the v3 spec; xarray reads it.
            warnings.simplefilter("ignore", category=UserWarning)
            zarr.consolidate_metadata(self.staging)


def _encode_times(times: np.ndarray, units: str, calendar: str, dtype: np.dtype) -> np.ndarray:
    """`times` (datetime64) encoded as the store's `time` array holds them (CF `units` / `calendar`).

    Whole seconds in the units this module writes are a plain cast; anything else goes
    through xarray's CF encoder (whose first call imports dask: ~0.2 s per process).
    """
    if units == "seconds since 1970-01-01" and calendar == "proleptic_gregorian":
        seconds = times.astype("datetime64[s]")
        if np.array_equal(seconds, times):
            return seconds.astype(np.int64).astype(dtype)
    import xarray as xr

    encoded, _, _ = xr.coding.times.encode_cf_datetime(times, units=units, calendar=calendar, dtype=dtype)
    return np.asarray(encoded, dtype=dtype)


def _storage_unit(array) -> tuple[int, ...]:
    """Shape of what is stored as one file: the shard when sharded, else the chunk."""
    return tuple(array.shards or array.chunks)


def _whole_frame_chunk_writer(array):
    """`write(t, frame)`: stores `frame` as chunk `t` of `array`, synchronously; None when not possible.

    Zarr 3.1 sends every chunk write through its event loop and a thread pool: for one
    frame-sized chunk that is a few ms of Python and thread hand-offs per frame, most
    of it holding the GIL that the thread reading the next file needs. When one chunk is
    one whole time step and nothing is sharded, the array's own codecs and store do the
    same encoding and write synchronously (zarr's `SupportsSyncCodec` / `SupportsSetSync`
    protocols; the same bytes as `array[t] = frame`, checked in tests/test_convert.py).
    Another layout, or a zarr without those protocols, returns None: write through `array`.
    """
    try:
        from zarr.abc.codec import SupportsSyncCodec
        from zarr.abc.store import SupportsSetSync
        from zarr.core.buffer import default_buffer_prototype
    except ImportError:
        return None
    if (array.metadata.zarr_format != 3 or array.shards is not None or tuple(array.chunks) != (1, *array.shape[1:])
            or not all(isinstance(c, SupportsSyncCodec) for c in array.metadata.codecs)
            or not isinstance(array.store_path.store, SupportsSetSync)):
        return None
    prototype = default_buffer_prototype()
    spec = array.metadata.get_chunk_spec((0,) * array.ndim, array.config, prototype)

    def write(t: int, frame: np.ndarray) -> None:
        data = prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(frame, dtype=array.dtype)[None])
        for codec in array.metadata.codecs:
            data = codec._encode_sync(data, spec)
        (array.store_path / array.metadata.encode_chunk_key((t, *(0,) * (array.ndim - 1)))).set_sync(data)

    return write


def _mark_and_publish(staging: Path, path: Path) -> None:
    part = staging / (COMMIT_MARKER + ".part")
    part.write_text(json.dumps({"store": str(path), "pid": os.getpid()}))
    os.replace(part, staging / COMMIT_MARKER)
    _publish(staging, path)


def append_frames(
    path: str | Path,
    frames: list[Frame],
    sources: dict[Path, SourceRecord],
    *,
    source_name: str,
    chunks: dict | None = None,
    shards: dict | None = DEFAULT_SHARDS,
    compression: dict | None = None,
    skipped_files: list[dict] | None = None,
    history: str = "",
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
    max_gap_s: float | None = DEFAULT_MAX_GAP_S,
) -> AppendResult:
    """Add `frames` (any order) to the store at `path`, creating it when absent; atomic.

    sources: SHA-256 record of each frame's file. A frame whose file is already listed
    with the same SHA-256 is skipped (resume); any other frame at or before the store's
    last time, or two frames at one time, is refused with a ConversionError naming the
    file and the conflict. Gaps up to `max_gap_s` seconds are filled with all-NaN frames
    flagged `missing_frame`; longer ones start a new segment (None: fill every gap).
    `lock_timeout`: seconds to wait for another writer of the store (see `StoreWriter`).
    """
    with StoreWriter(path, source_name=source_name, chunks=chunks, shards=shards, compression=compression,
                     history=history, expected_frames=len(frames), lock_timeout=lock_timeout,
                     max_gap_s=max_gap_s) as writer:
        for f in frames:
            writer.add(f, sources[f.source])
        for entry in skipped_files or []:
            writer.skip(entry)
        return writer.commit()


def checked_max_gap(max_gap_s) -> float | None:
    """`max_gap_s` as seconds >= 0, or None (fill every gap); ValueError naming `max_gap` otherwise."""
    if max_gap_s is None:
        return None
    try:
        seconds = float(max_gap_s)
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(max_gap_s, bool) or not seconds >= 0:
        raise BadValueError(f"max_gap_s={max_gap_s!r}: must be seconds >= 0 (gaps longer than it start a new segment) "
                         "or null (fill every gap with missing frames).")
    return seconds


def _positive_sizes(option: str, given: dict, null_time: bool) -> dict:
    """`given` checked: known dimensions, positive integers, null for y / x (and time when `null_time`)."""
    unknown = sorted(set(given) - set(schema.PRECIP_DIMS))
    if unknown:
        raise ValueError(f"{option}.{unknown[0]}: unknown dimension; {option} takes {', '.join(schema.PRECIP_DIMS)}.")
    for dim, value in given.items():
        may_be_null = dim != "time" or null_time
        if value is None and may_be_null:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            fix = "a positive integer" + (" or null (whole grid)" if may_be_null else "")
            raise ValueError(f"{option}.{dim}={value!r}: must be {fix}.")
    return given


def precip_layout(shape: tuple[int, int], chunks: dict | None = None,
                  shards: dict | None = DEFAULT_SHARDS) -> tuple[tuple[int, int, int], tuple[int, int, int] | None]:
    """(chunks, shards) of `precip` on a grid of `shape` (H, W) pixels, as Zarr shapes `(time, y, x)`.

    Missing chunk sizes come from `DEFAULT_CHUNKS`; a null `y` / `x` (chunk or shard)
    means the whole grid, and chunks are clipped to the grid. A shard size is rounded up
    to a multiple of the chunk (Zarr requires it; a shard may reach past the grid edge,
    costing nothing on disk); a missing or null shard `time` is the chunk's. Raises
    ValueError naming the option for an unknown dimension or a bad size.
    """
    want = {**DEFAULT_CHUNKS, **_positive_sizes("chunks", dict(chunks or {}), null_time=False)}
    sizes = {"time": int(want["time"]), "y": int(shape[0]), "x": int(shape[1])}
    inner = tuple(max(1, min(int(want[d] or sizes[d]), sizes[d])) for d in schema.PRECIP_DIMS)
    if shards is None:
        return inner, None
    given = _positive_sizes("shards", dict(shards), null_time=True)
    outer = []
    for dim, chunk in zip(schema.PRECIP_DIMS, inner):
        size = given.get(dim)
        if size is None:
            size = chunk if dim == "time" else sizes[dim]
        outer.append(-(-int(size) // chunk) * chunk)
    return inner, tuple(outer)


# xarray's `_FillValue` attribute of a float variable whose fill value is NaN (base64 of
# the little-endian float64), as `Dataset.to_zarr` writes it: readers mask NaN either way.
_NAN_FILL_ATTR = schema.NAN_FILL_ATTR


def _create_skeleton(path: Path, ref: Frame, chunks: dict | None, compression: dict | None, shards: dict | None) -> None:
    """A new store without time steps at `path` (docs/schema.md): coordinates, `crs`, empty `precip` / `time` / `missing_frame`.

    Written with zarr directly, in the form `xarray.Dataset.to_zarr` gives (CF attributes,
    `dimension_names`, `coordinates`, `_FillValue`), in a third of the zarr calls.
    """
    import zarr
    from zarr.codecs import BloscCodec

    precip_chunks, precip_shards = precip_layout(ref.grid.shape, chunks, shards)
    comp = {**DEFAULT_COMPRESSION, **(compression or {})}
    codec = BloscCodec(cname=comp["cname"], clevel=int(comp["clevel"]), shuffle=comp.get("shuffle", "shuffle"))
    # lat/lon: written once per store, read whole; LZ4 compresses them 3x faster than the
    # precip codec (Zstd 1) and smaller: a fixed cost that counts for short conversions.
    grid_codec = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    h, w = ref.grid.shape
    time_chunks = (precip_chunks[0] * 1024,)
    crs_attrs = {"grid_mapping_name": ref.grid.grid_mapping_name, "proj4": ref.grid.proj4, "crs_wkt": ref.grid.crs_wkt}
    group = zarr.create_group(path, zarr_format=3)
    group.create_array(
        schema.PRECIP, shape=(0, h, w), dtype=np.float32, chunks=precip_chunks, shards=precip_shards,
        compressors=[codec], fill_value=np.nan, dimension_names=schema.PRECIP_DIMS,
        attributes={"units": schema.PRECIP_UNITS, "long_name": "precipitation rate", "standard_name": "rainfall_rate",
                    "grid_mapping": schema.CRS, "coordinates": "lat lon", "_FillValue": _NAN_FILL_ATTR})
    group.create_array(
        schema.MISSING_FRAME, shape=(0,), dtype=bool, chunks=time_chunks, fill_value=False, dimension_names=("time",),
        attributes={"long_name": "time step inserted for a gap in the source (all-NaN)"})
    group.create_array(
        "time", shape=(0,), dtype=np.int64, chunks=time_chunks, fill_value=0, dimension_names=("time",),
        attributes={"timezone": "UTC", "long_name": "end of accumulation interval / scan time",
                    "units": "seconds since 1970-01-01", "calendar": "proleptic_gregorian"})
    for dim, values in (("y", ref.grid.y), ("x", ref.grid.x)):
        group.create_array(dim, data=values, chunks=values.shape, fill_value=np.nan, dimension_names=(dim,), attributes={
            "units": "km", "standard_name": f"projection_{dim}_coordinate", "_FillValue": _NAN_FILL_ATTR})
    for name, values, units, long_name in (("lat", ref.grid.lat, "degrees_north", "latitude"),
                                           ("lon", ref.grid.lon, "degrees_east", "longitude")):
        group.create_array(name, data=values, chunks=values.shape, compressors=[grid_codec], fill_value=np.nan,
                           dimension_names=("y", "x"),
                           attributes={"units": units, "long_name": long_name, "_FillValue": _NAN_FILL_ATTR})
    group.create_array(schema.CRS, data=np.array(0, dtype=np.int8), fill_value=0,
                       attributes={k: v for k, v in crs_attrs.items() if v})


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[str, ...]:
    """`pkg==version` of the packages a store's `history` names (looked up once per process: ~10 ms)."""
    import importlib.metadata as md

    versions = []
    for pkg in ("nowcast_infill", "wradlib", "pysteps", "xarray", "zarr", "numpy"):
        try:
            versions.append(f"{pkg}=={md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    return tuple(versions)


def _new_attrs(old: dict, frames, missing, sources, source_name, new_skips, history, step_s) -> dict:
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
    line = f"{np.datetime_as_string(np.datetime64('now', 's'))}Z {history} ({', '.join(_package_versions())})".strip()
    attrs["history"] = (str(old.get("history", "")) + "\n" + line).strip()
    return attrs
