"""`StoreWriter`: one atomic update of a radar store, its frames written by a background thread.

The commit protocol it follows is described in nowcast_infill/io/store/commit.py.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from nowcast_infill import schema
from nowcast_infill.io import frame_stats
from nowcast_infill.io.consolidated import consolidate
from nowcast_infill.io.importers import Frame
from nowcast_infill.io.store.commit import mark_and_publish, recover_store
from nowcast_infill.io.store.layout import DEFAULT_SHARDS, create_skeleton, storage_unit, whole_frame_chunk_writer
from nowcast_infill.io.store.metadata import (
    SourceRecord,
    check_consistent,
    new_store_attrs,
    package_versions,
    read_state,
)
from nowcast_infill.io.store.time_axis import (
    DEFAULT_MAX_GAP_S,
    checked_max_gap,
    encode_times,
    iso_time,
    place_on_time_axis,
)
from nowcast_infill.io.store_lock import DEFAULT_LOCK_TIMEOUT_S, StoreLock

if TYPE_CHECKING:
    import zarr

# Frames read but not yet written to staging (at least 2 are always allowed): the reader
# goes on while the writer thread creates the staging store (~40 ms) or falls behind.
MAX_QUEUED_BYTES = 64 << 20
# Frames whose arrival order is not yet their place on the time axis are written to
# this scratch array in staging when `precip` cannot simply be re-indexed (time chunk > 1).
_ARRIVALS = "_arrivals"


@dataclass
class AppendResult:
    """What one `StoreWriter.commit` (or a whole `convert`, summed) did."""

    store: Path
    written_times: list[str] = field(default_factory=list)
    missing_inserted: list[str] = field(default_factory=list)
    segment_breaks: list[str] = field(default_factory=list)  # first time of each new segment
    already_present: list[str] = field(default_factory=list)
    n_time_total: int = 0


def _without_precip(frame: Frame) -> Frame:
    """`frame`'s metadata only: `precip` dropped (None), so the frames kept until the commit hold no pixels."""
    # Frame.precip is typed ndarray (io/importers.py), which has no metadata-only Frame.
    return replace(frame, precip=None)  # type: ignore[arg-type]


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

    def __init__(
        self,
        path: str | Path,
        *,
        source_name: str,
        chunks: dict | None = None,
        shards: dict | None = DEFAULT_SHARDS,
        compression: dict | None = None,
        history: str = "",
        expected_frames: int = 16,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
        max_gap_s: float | None = DEFAULT_MAX_GAP_S,
    ):
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
            self.state = read_state(self.path)
        except BaseException:
            self._lock.release()
            raise
        self.n_old = 0 if self.state is None else int(self.state.times.size)
        self.staging = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self.result = AppendResult(store=self.path)
        self._known = {
            (d["name"], d["sha256"]) for d in (self.state.attrs.get("source_files", []) if self.state else [])
        }
        self._fresh: list[Frame] = []  # metadata of each written frame, precip dropped, in arrival order
        self._records: dict[Path, SourceRecord] = {}
        self._skips: list[dict] = []
        self._capacity = max(1, int(expected_frames))
        self._arrivals: zarr.Array | None = None  # zarr array the frames are written to in arrival order
        self._arrival_offset = 0  # index of the first arrival in `_arrivals`
        self._in_place = False  # arrivals written straight into staging `precip`
        self._writer: ThreadPoolExecutor | None = None  # the one thread that writes staging
        # writes one arrival as one chunk, when `_arrivals` allows it
        self._write_chunk: Callable[[int, np.ndarray], None] | None = None
        self._opened: Future | None = None  # staging created (by the writer thread)
        self._pending: deque[tuple[Future, int]] = deque()  # writer jobs not yet checked, bytes each holds
        self._pending_bytes = 0
        # Per-frame statistics (nowcast_infill/io/frame_stats.py), computed by the writer
        # thread as it writes each arrival: arrival index -> FrameStats (mask dropped).
        self._stats: dict[int, frame_stats.FrameStats] = {}
        self._pixel_valid: np.ndarray | None = None  # (H, W) frames valid per pixel, this commit

    def __enter__(self) -> StoreWriter:
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
        check_consistent(self._fresh[:1] + [frame], self.state, self.path)
        if self._writer is None:
            # Staging is created by the writer thread too, while the caller reads the
            # next files; every staging job runs there, in the order submitted.
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ni-store-writer")
            self._opened = self._writer.submit(self._open_staging, _without_precip(frame))
        index = len(self._fresh)
        if index >= self._capacity:
            self._capacity *= 2
            self._pending.append((self._writer.submit(self._resize_arrivals, self._capacity), 0))
        self._records[frame.source] = record
        self._fresh.append(_without_precip(frame))
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
        from zarr.core.metadata import ArrayV3Metadata

        if self.staging.exists():
            shutil.rmtree(self.staging)
        if self.state is None:
            create_skeleton(self.staging, ref, self.chunks, self.compression, self.shards)
        else:
            self._copy_metadata()
        precip = zarr.open_array(self.staging / schema.PRECIP, mode="r+")
        assert isinstance(precip.metadata, ArrayV3Metadata)  # stores are Zarr v3 (create_skeleton, zarr.json)
        key_encoding = precip.metadata.chunk_key_encoding
        # One file (chunk or shard) per time step under `c/<t>/`: arrivals can go straight
        # into `precip` and be put in time order by renaming directories.
        self._in_place = (
            storage_unit(precip)[0] == 1
            and key_encoding.name == "default"
            and getattr(key_encoding, "separator", "/") == "/"
        )
        if self._in_place:
            self._arrivals, self._arrival_offset = precip, self.n_old
        else:
            storage = storage_unit(precip)
            self._arrivals = zarr.create_array(
                self.staging / _ARRIVALS,
                shape=(self._capacity, *precip.shape[1:]),
                dtype=precip.dtype,
                chunks=(1, *precip.chunks[1:]),
                shards=(1, *storage[1:]) if precip.shards else None,
                fill_value=np.nan,
                compressors=precip.compressors,
                zarr_format=3,
            )
        self._resize_arrivals(self._capacity)
        self._write_chunk = whole_frame_chunk_writer(self._arrivals)
        package_versions()  # cached for the commit's history line, here off the reading path

    def _resize_arrivals(self, capacity: int) -> None:
        assert self._arrivals is not None  # set by _open_staging, the writer thread's first job
        self._arrivals.resize((self._arrival_offset + capacity, *self._arrivals.shape[1:]))

    def _write_arrival(self, index: int, precip: np.ndarray) -> None:
        assert self._opened is not None  # submitted by add() before any write job
        self._opened.result()  # a failed staging creation raises its own error here
        if self._write_chunk is not None:
            self._write_chunk(self._arrival_offset + index, precip)
        else:
            assert self._arrivals is not None  # staging opened (result() above)
            self._arrivals[self._arrival_offset + index] = precip
        stats = frame_stats.frame_statistics(precip)
        if self._pixel_valid is None:
            self._pixel_valid = np.zeros(precip.shape, np.int64)
        self._pixel_valid += stats.pop_valid()  # summed here; the stats keep only the scalars per frame
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
                mark_and_publish(self.staging, self.path)
            return result
        order = sorted(range(len(self._fresh)), key=lambda i: self._fresh[i].time)
        fresh = [self._fresh[i] for i in order]
        old_times = self.state.times if self.state is not None else np.array([], dtype="datetime64[ns]")
        old_step_s = int(self.state.attrs.get("time_step_s", 0)) if self.state is not None else 0
        filled, missing, step_s, breaks = place_on_time_axis(fresh, old_times, old_step_s, self.path, self.max_gap_s)
        position = {id(f): self.n_old + k for k, f in enumerate(filled) if isinstance(f, Frame)}
        final_index = [position[id(self._fresh[i])] for i in range(len(self._fresh))]  # per arrival
        n_new = self.n_old + len(filled)
        if self._in_place:
            assert self._arrivals is not None  # in place: the arrivals are staging's precip
            self._reindex_in_place(final_index)
            if self._arrivals.shape[0] != n_new:  # sized for the frames expected, gaps not counted
                self._arrivals.resize((n_new, *self._arrivals.shape[1:]))
        else:
            self._rewrite_from_arrivals(zarr.open_array(self.staging / schema.PRECIP, mode="r+"), final_index, n_new)
        self._write_time_axis(filled, n_new)
        gaps = [self.n_old + k for k, f in enumerate(filled) if not isinstance(f, Frame)]
        frame_stats.write_commit_stats(
            self.staging,
            self.path,
            self.n_old,
            n_new,
            {final_index[a]: s for a, s in self._stats.items()},
            gaps,
            self._pixel_valid,
        )
        self._finish_metadata([f for f in filled if isinstance(f, Frame)], missing, step_s)
        mark_and_publish(self.staging, self.path)
        result.written_times = [iso_time(f.time) for f in fresh]
        result.missing_inserted = [iso_time(t) for t in missing]
        result.segment_breaks = [iso_time(t) for t in breaks]
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
        tc = storage_unit(precip)[0]
        for start in range(self.n_old - self.n_old % tc, n_new, tc):
            stop = min(start + tc, n_new)
            block = np.full((stop - start, *precip.shape[1:]), np.nan, dtype=precip.dtype)
            if start < self.n_old:
                assert old is not None  # opened above whenever the store has frames (n_old > 0)
                block[: self.n_old - start] = old[start : self.n_old]
            for t in range(max(start, self.n_old), stop):
                if t in arrival_at:
                    assert self._arrivals is not None  # frames were added, so staging was opened
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
        # CF attributes written by create_skeleton: strings (Zarr types attrs as any JSON value).
        units = cast(str, time_arr.attrs["units"])
        calendar = cast(str, time_arr.attrs.get("calendar", "proleptic_gregorian"))
        time_arr[:] = encode_times(times, units, calendar, np.dtype(time_arr.dtype))
        missing_arr = zarr.open_array(self.staging / schema.MISSING_FRAME, mode="r+")
        missing_arr.resize((n_new,))
        if self.state is not None or missing.any():  # a new store without gaps: all fill value (False) already
            missing_arr[:] = missing

    def _finish_metadata(self, frames: list[Frame], missing: list, step_s: int) -> None:
        import zarr

        group = zarr.open_group(self.staging, mode="r+")
        attrs = dict(self.state.attrs) if self.state is not None else {}
        attrs.update(
            new_store_attrs(attrs, frames, missing, self._records, self.source_name, self._skips, self.history, step_s)
        )
        if frames:
            attrs["max_gap_s"] = self.max_gap_s  # gaps longer than this are segment boundaries (null: none)
        group.attrs.put(attrs)
        consolidate(self.staging)
