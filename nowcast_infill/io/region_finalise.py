"""Conversion by many writers, step finalise: check every task finished, flag gaps, merge provenance.

* `finalise_store` (exclusive store lock): a task without a record makes it fail with
  `IncompleteConversionError` naming each unfinished task's time range; otherwise every
  step of a finished range without a frame is a gap (`missing_frame`, its chunk deleted
  if a killed run left one), provenance is merged into `source_files` in time order,
  the tasks' per-frame statistics are merged (nowcast_infill.io.frame_stats; `precip` is
  read only for the frames of a task without them), and the metadata is consolidated.
  The plan folder is then removed.

"""

from __future__ import annotations

import json
import logging
import shutil
import time as _time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from nowcast_infill import schema
from nowcast_infill.errors import UserError
from nowcast_infill.io.consolidated import consolidate
from nowcast_infill.io.frame_stats import compute_frame_stats
from nowcast_infill.io.region_plan import INCOMPLETE_ATTR, conversion_dir, load_plan, planned_store_state
from nowcast_infill.io.store import SourceRecord, iso_time, new_store_attrs
from nowcast_infill.io.store_lock import DEFAULT_LOCK_TIMEOUT_S, StoreLock, StoreLockedError

log = logging.getLogger(__name__)


class IncompleteConversionError(UserError):
    """`finalise_store` found tasks without a record; `.incomplete` lists (task, first time, last time, state)."""

    def __init__(self, message: str, incomplete: list[tuple[int, str, str, str]]):
        super().__init__(message)
        self.incomplete = incomplete


def _task_running(output: Path, task: int) -> bool:
    try:
        with StoreLock(conversion_dir(output) / f"task-{task}", timeout=0):
            return False
    except StoreLockedError:
        return True


def finalise_store(output: str | Path, history: str = "", lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> dict:
    """Check that every task of the planned store `output` finished, flag gaps, merge provenance (module doc).

    Raises IncompleteConversionError naming each unfinished task and its time range;
    the store then stays unfinalised (all frames read as missing). Returns a summary.
    """
    import zarr

    started = _time.perf_counter()
    output = Path(output)
    with StoreLock(output, timeout=lock_timeout, command=history or None):
        plan = load_plan(output)
        planned_store_state(output)
        conv = conversion_dir(output)
        records, incomplete = [], []
        for entry in plan["tasks"]:
            path = conv / f"task-{entry['task']}.json"
            if path.exists():
                records.append(json.loads(path.read_text()))
            else:
                state = (
                    "still running"
                    if _task_running(output, entry["task"])
                    else "not finished (killed, failed or never run)"
                )
                incomplete.append((entry["task"], entry["first"], entry["last"], state))
        if incomplete:
            ranges = "; ".join(f"task {k}: {a} to {b} {s}" for k, a, b, s in incomplete)
            tasks = ",".join(str(k) for k, *_ in incomplete)
            raise IncompleteConversionError(
                f"{output}: incomplete, {len(incomplete)} of {len(plan['tasks'])} task(s) have no record: {ranges}; rerun "
                f"them (`ni-convert step=write output={output} task_id=K`, or sbatch --array={tasks} "
                f"slurm/convert_array.sbatch {output}), then step=finalise again.",
                incomplete,
            )
        frames = sorted((f for r in records for f in r["frames"]), key=lambda f: f["index"])
        n_time = int(plan["n_time"])
        missing = np.ones(n_time, dtype=bool)
        missing[[f["index"] for f in frames]] = False
        precip = zarr.open_array(output / schema.PRECIP, mode="r+")
        for index in np.flatnonzero(missing):  # a frame a killed run wrote whose file has gone since
            stale = output / schema.PRECIP / precip.metadata.encode_chunk_key((int(index), 0, 0))
            stale.unlink(missing_ok=True)
        group = zarr.open_group(output, mode="r+")
        schema.store_array(group, schema.MISSING_FRAME)[:] = missing
        times = np.datetime64(plan["start"], "ns") + np.arange(n_time) * np.timedelta64(int(plan["time_step_s"]), "s")
        shown = [
            SimpleNamespace(
                source=f["name"],
                product=f["product"],
                accumulation_interval_s=f["accumulation_interval_s"],
                conversion=f["conversion"],
                zr=tuple(f["zr"]) if f["zr"] else None,
                radar_sites=f["radar_sites"],
            )
            for f in frames
        ]
        sources = {f["name"]: SourceRecord(name=f["name"], sha256=f["sha256"], time=f["time"]) for f in frames}
        skipped = [s for r in records for s in r["skipped_files"]]
        old = {"history": group.attrs.get("history", "")}
        attrs = dict(group.attrs)
        attrs.pop(INCOMPLETE_ATTR, None)
        if shown:
            attrs.update(
                new_store_attrs(
                    old,
                    shown,
                    times[missing],
                    sources,
                    plan["source"],
                    skipped,
                    history or f"nowcast_infill.io.region_writer.finalise_store({str(output)!r})",
                    int(plan["time_step_s"]),
                )
            )
            # A pre-sized store materialises every step of its range: one segment, every gap
            # an explicit missing frame, as an append with max_gap_s=null makes it.
            attrs["max_gap_s"] = None
        group.attrs.put(attrs)
        stats = _merge_frame_stats(output, records)
        consolidate(output)
        shutil.rmtree(conv)
    return {
        "output": str(output),
        "n_time_total": n_time,
        "n_frames_written": len(frames),
        "missing_times": [iso_time(t) for t in times[missing]],
        "skipped_files": skipped,
        "frame_stats": stats,
        "task_seconds": [r["seconds"] for r in records],
        "task_cpu_seconds": [r.get("cpu_seconds") for r in records],
        "seconds": round(_time.perf_counter() - started, 3),
    }


def _merge_frame_stats(output: Path, records: list[dict]) -> dict:
    """Per-frame statistics (valid / wet fractions, ...) that the DataModule's setup reads instead of the frames
    (nowcast_infill.io.frame_stats), merged from the tasks' partial statistics; only the frames of a task
    without them (a record of an older version, a file deleted) are read from `precip`, and the log says so."""
    conv = conversion_dir(output)
    partials, lacking = [], []
    for r in records:
        name = r.get("frame_stats")
        if name and (conv / name).exists():
            partials.append(conv / name)
        elif r["frames"]:
            lacking.append(r["task"])
    summary = compute_frame_stats(output, partials=partials)
    if summary["frames_read"]:
        log.warning(
            "%s: %d frame(s) had no task statistics (task(s) %s); read them from precip to compute them",
            output,
            summary["frames_read"],
            ",".join(map(str, lacking)) or "-",
        )
    return {
        "frames_from_tasks": summary["frames_from_partials"],
        "frames_read": summary["frames_read"],
        "tasks_without_statistics": lacking,
    }
