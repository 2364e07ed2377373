"""`convert(...)`: radar files -> one Zarr store (docs/schema.md); the engine behind ni-convert."""

from __future__ import annotations

import glob
import itertools
import logging
import multiprocessing as mp
import os
import time as _time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from nowcast_infill.errors import MissingInputError
from nowcast_infill.io.bundles import MEMBER_SEPARATOR, WorkItem, is_bundle, work_items
from nowcast_infill.io.files import file_sha256
from nowcast_infill.io.importers import ConversionError, Frame, Importer
from nowcast_infill.io.store import (
    DEFAULT_MAX_GAP_S,
    DEFAULT_SHARDS,
    AppendResult,
    SourceRecord,
    StoreWriter,
    iso_time,
    precip_layout,
)
from nowcast_infill.io.store_lock import DEFAULT_LOCK_TIMEOUT_S, StoreLock
from nowcast_infill.registry import get_method

log = logging.getLogger(__name__)

# Frames per commit: each commit is one atomic store update, so this is how much work a
# killed conversion can lose (it is redone on resume). Frames are written to staging as
# they are read, so this does not set how many are held in memory.
DEFAULT_COMMIT_EVERY = 288


def expand_inputs(inputs: str | Path | list) -> list[Path]:
    """Files named by `inputs` (a glob, a path, or a list of them), sorted, without repeats.

    Raises MissingInputError (a FileNotFoundError) naming each pattern that matches nothing.
    Paths keep the user's spelling (messages name them as given); a file named twice, also
    through a symlink, is kept once.
    """
    patterns = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not patterns:
        raise MissingInputError("inputs is empty; pass inputs='<glob>' or a list of files.")
    found: list[Path] = []
    for pattern in patterns:
        text = os.path.expanduser(str(pattern))
        hits = sorted(glob.glob(text)) if glob.has_magic(text) else ([text] if os.path.exists(text) else [])
        if not hits:
            raise MissingInputError(
                f"{pattern}: no file matches this input; check the path or glob (relative to {os.getcwd()})."
            )
        found.extend(Path(h) for h in hits)
    # A file named twice (also through a symlink) is read once, under the first name given:
    # the name is kept as written, since times are read from it and messages must show it.
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


_WORKER_IMPORTER: dict[tuple[str, str], Importer] = {}


def _importer(source: str, options: dict):
    key = (source, repr(sorted(options.items())))
    if key not in _WORKER_IMPORTER:
        _WORKER_IMPORTER[key] = get_method("source", source, **options)
    return _WORKER_IMPORTER[key]


def read_item(source: str, options: dict, item: WorkItem) -> tuple[Path, list[Frame] | None, str | None, str | None]:
    """(name, frames, provenance, error text) for one file or bundle member; runs in a worker process."""
    path = item.path
    importer = _importer(source, options)
    try:
        if item.content is None:
            frames = importer.read(path)
            digest: str | None = file_sha256(path)
        else:
            if not hasattr(importer, "read_bytes"):
                raise ConversionError(
                    path,
                    f"source={source} reads files only, not members of a tar bundle; "
                    "extract the bundle and pass its files as inputs=.",
                )
            frames, digest = importer.read_bytes(path, item.content), item.provenance
    except ConversionError as err:
        return path, None, None, str(err)
    except Exception as err:  # an importer bug or odd file must still name the file
        return (
            path,
            None,
            None,
            f"{path}: unexpected {type(err).__name__}: {err}; check the file or pass skip_bad=true.",
        )
    return path, frames, digest, None


def iter_items(files: list[Path], skip_bad: bool, skipped: list[dict]) -> Iterator[WorkItem]:
    """`work_items(files)`; with `skip_bad`, a damaged bundle is recorded in `skipped` and the next file read."""
    for path in files:
        try:
            yield from work_items([path])
        except ConversionError as err:
            if not skip_bad:
                raise
            log.warning("skipping the rest of %s", err)
            skipped.append({"name": source_name(err.path), "error": str(err)})


def read_items(
    items: Iterator[WorkItem], source: str, options: dict, pool: ProcessPoolExecutor | None, ahead: int
) -> Iterator[tuple]:
    """`read_item` of each item, in order; with a pool at most `ahead` items are read ahead (bounded memory)."""
    if pool is None:
        for item in items:
            yield read_item(source, options, item)
        return
    queued: deque = deque()
    for item in items:
        queued.append(pool.submit(read_item, source, options, item))
        if len(queued) >= ahead:
            yield queued.popleft().result()
    while queued:
        yield queued.popleft().result()


def convert(
    inputs: str | Path | list,
    output: str | Path,
    source: str,
    skip_bad: bool = False,
    workers: int | None = None,
    chunks: dict | None = None,
    shards: dict | None = DEFAULT_SHARDS,
    compression: dict | None = None,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    progress: bool = True,
    history: str | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
    max_gap_s: float | None = DEFAULT_MAX_GAP_S,
    **importer_options,
) -> dict:
    """Convert radar files to (or append them to) the Zarr store `output`.

    inputs: glob, path or list of them; tar bundles (.tar, .tar.gz, .tar.bz2, nested) are read
    member by member as a stream (nowcast_infill/io/bundles.py). source: importer name (registry kind "source");
    `importer_options` go to it (e.g. pysteps_importer="knmi_hdf5", zr_a=200).
    skip_bad: skip unreadable files (listed in the store's `skipped_files` and logged)
    instead of failing. workers: reader processes (default min(4, CPUs - 1, files));
    1 reads in this process, with no pool.
    chunks, shards, compression: `precip` layout of a new store (`shards=None`: no
    sharding; see `nowcast_infill.io.store.precip_layout`); an append keeps the store's.
    lock_timeout: seconds to wait while another writer holds `output` (0: fail at once
    with a StoreLockedError naming it). The lock is held for the whole conversion, so
    conversions into one store run one after the other, never interleaved.
    max_gap_s: gaps up to this many seconds become missing frames; a longer one starts a
    new segment of the store (None: fill every gap).
    Returns a summary dict (counts, product, skipped files, missing times, seconds).
    Raises ConversionError naming the file and the fix.
    """
    started = _time.perf_counter()
    get_method("source", source, **importer_options)  # fail on a bad name/option before any work
    precip_layout((1, 1), chunks, shards)
    files = expand_inputs(inputs)
    output_as_given, output = str(output), Path(output)
    # One core is left to the thread that compresses and writes the frames (io/store/writer.py: StoreWriter).
    # A bundle holds many items, so its length does not bound the reader processes.
    n_items = len(files) if not any(is_bundle(p) for p in files) else max(len(files), 64)
    n_workers = max(1, min(int(workers or min(4, (os.cpu_count() or 1) - 1)), n_items))
    history = history or f"nowcast_infill.io.convert(source={source!r}, inputs={inputs!r}, output={str(output)!r})"
    skipped: list[dict] = []
    totals = AppendResult(store=output)
    product = None

    # Held from before the store is first read until the last commit: another writer's
    # frames can neither interleave with ours nor be published over by stale metadata.
    with StoreLock(output_as_given, timeout=lock_timeout, command=history):
        pool, done = None, []
        items = iter_items(files, skip_bad, skipped)
        if n_workers > 1:
            # The first item is read here, before the fork: the workers inherit the reader's
            # libraries (wradlib / pysteps, imported on first use: 1-2 s) and its grid cache
            # instead of each loading them again, for every conversion.
            first = next(items, None)
            done = [read_item(source, importer_options, first)] if first is not None else []
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
            pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx)
        has_bundles = any(is_bundle(p) for p in files)
        bar = _progress(None if has_bundles else len(files), enabled=progress)
        per_commit = max(1, int(commit_every))
        writer = None
        try:
            results = itertools.chain(done, read_items(items, source, importer_options, pool, ahead=2 * n_workers))
            for path, got, digest, error in results:
                bar.update(1)
                if writer is None:
                    writer = StoreWriter(
                        output,
                        source_name=source,
                        chunks=chunks,
                        shards=shards,
                        compression=compression,
                        history=history,
                        expected_frames=per_commit,
                        lock_timeout=lock_timeout,
                        max_gap_s=max_gap_s,
                    )
                    n_in_commit = 0
                if error is not None:
                    if not skip_bad:
                        raise ConversionError(path, error.removeprefix(f"{path}: "))
                    log.warning("skipping %s", error)
                    entry = {"name": source_name(path), "error": error}
                    skipped.append(entry)
                    writer.skip(entry)
                else:
                    for f in got:
                        writer.add(f, SourceRecord(name=source_name(path), sha256=digest, time=iso_time(f.time)))
                    product = product or (got[0].product if got else None)
                n_in_commit += 1
                if n_in_commit >= per_commit:
                    # A batch of bad files only is recorded in an existing store; with no store
                    # yet there is nothing to record it in (the summary reports it).
                    _add_totals(totals, writer.commit())
                    writer = None
            if writer is not None:
                _add_totals(totals, writer.commit())
                writer = None
        finally:
            if writer is not None:
                writer.abort()
            bar.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    seconds = _time.perf_counter() - started
    if not totals.written_times and not totals.already_present:
        raise ConversionError(
            output,
            f"no frame could be converted from {len(files)} input file(s) "
            f"({len(skipped)} skipped as bad); nothing was written.",
        )
    return {
        "output": str(output),
        "source": source,
        "product": product,
        "n_inputs": len(files),
        "n_frames_written": len(totals.written_times),
        "n_already_present": len(totals.already_present),
        "n_time_total": totals.n_time_total,
        "missing_times": totals.missing_inserted,
        "segment_starts": totals.segment_breaks,
        "skipped_files": skipped,
        "workers": n_workers,
        "seconds": round(seconds, 3),
        "frames_per_s": round(len(totals.written_times) / seconds, 2) if seconds > 0 else None,
    }


def source_name(path: Path) -> str:
    """The `source_files` name of a file (its name) or of a bundle member (`bundle-name!member`)."""
    outer, separator, member = str(path).partition(MEMBER_SEPARATOR)
    return Path(outer).name + separator + member


def _add_totals(totals: AppendResult, res: AppendResult) -> None:
    totals.written_times += res.written_times
    totals.missing_inserted += res.missing_inserted
    totals.segment_breaks += res.segment_breaks
    totals.already_present += res.already_present
    totals.n_time_total = res.n_time_total or totals.n_time_total


def _progress(total: int | None, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", desc="ni-convert", disable=not enabled, leave=False)
