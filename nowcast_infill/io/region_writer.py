"""Conversion by many writers: pre-size a store, fill disjoint time regions, finalise.

The engine of `ni-convert step=plan|write|finalise|all` and slurm/convert_array.sbatch
(docs/schema.md § Conversion by many writers). No scheduler of our own: `plan` splits
the inputs into N tasks, and anything that runs `write` for each task number (a Slurm
array, N local processes, a shell loop) fills the store.

* `plan_store` (io/region_plan.py) creates the whole store at once, sized for its time
  range, and writes the plan `NAME.zarr.conversion/plan.json` beside it.
* `write_region` (task k): reads its inputs in order and writes each frame as its own
  `precip` chunk (one time step per stored file is required, so two tasks never write the
  same file: no store lock is taken; a per-task lock `task-k.lock` keeps a rerun from
  overlapping a still-running copy of the same task). Every chunk file is written
  atomically (written aside, then renamed); at the end the per-frame statistics of its
  frames (`task-k.stats.npz`), then the task's record `task-k.json` (frames written with
  their provenance, files skipped) are written atomically. A killed task leaves no
  record, and rerunning it rewrites its chunks.
* `finalise_store` (io/region_finalise.py) checks that every task left a record, flags
  the gaps, merges provenance and statistics, and removes the plan folder.

Until finalised, the store reads as all missing (`missing_frame` True everywhere) and
carries the attribute `conversion_incomplete`.

This module holds step write (`write_region`) and the local driver `convert_parallel`; step
plan is io/region_plan.py, step finalise io/region_finalise.py (both re-exported here).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time as _time
from pathlib import Path

import numpy as np

from nowcast_infill import schema
from nowcast_infill.errors import UserError
from nowcast_infill.io.bundles import MEMBER_SEPARATOR
from nowcast_infill.io.convert import expand_inputs, iter_items, read_items, source_name
from nowcast_infill.io.dated_inputs import date_inputs, inputs_for_range, outside_span_error
from nowcast_infill.io.importers import ConversionError
from nowcast_infill.io.partial_stats import PartialStats
from nowcast_infill.io.radolan import time_from_dwd_name
from nowcast_infill.io.region_finalise import IncompleteConversionError, finalise_store
from nowcast_infill.io.region_plan import (
    INCOMPLETE_ATTR,
    PLAN,
    conversion_dir,
    load_plan,
    plan_store,
    planned_store_state,
    write_json_atomic,
)
from nowcast_infill.io.store import check_consistent, iso_time, whole_frame_chunk_writer
from nowcast_infill.io.store_lock import DEFAULT_LOCK_TIMEOUT_S, StoreLock

__all__ = [
    "INCOMPLETE_ATTR",
    "PLAN",
    "IncompleteConversionError",
    "conversion_dir",
    "convert_parallel",
    "finalise_store",
    "load_plan",
    "plan_store",
    "write_region",
]

log = logging.getLogger(__name__)


def write_region(
    output: str | Path, task: int, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S, progress: bool = False
) -> dict:
    """Read task `task`'s inputs and write their frames into the planned store `output`; returns its record.

    Raises ConversionError naming the file (or `bundle!member`) for an unreadable input
    (unless the plan has skip_bad), a frame outside the task's time range, off the time
    axis, on a time another frame has, or on another grid or product than the store.
    """
    import zarr

    started, cpu_started = _time.perf_counter(), _time.process_time()
    output = Path(output)
    plan = load_plan(output)
    if not 0 <= int(task) < len(plan["tasks"]):
        raise UserError(
            f"task_id={task}: the plan of {output} has tasks 0 to {len(plan['tasks']) - 1}; fix task_id= (or --array)."
        )
    entry = plan["tasks"][int(task)]
    conv = conversion_dir(output)
    record_path = conv / f"task-{task}.json"
    stats_path = conv / f"task-{task}.stats.npz"
    with StoreLock(conv / f"task-{task}", timeout=lock_timeout):
        record_path.unlink(missing_ok=True)  # a rerun: the range is unfinished until this run's record is written
        stats_path.unlink(missing_ok=True)
        state = planned_store_state(output)  # UserError when the store was deleted after step=plan
        precip = zarr.open_array(output / schema.PRECIP, mode="r+")
        write_chunk = whole_frame_chunk_writer(precip)
        store_start = state.times[0]
        step = np.timedelta64(int(plan["time_step_s"]), "s")
        first, last = np.datetime64(entry["first"], "ns"), np.datetime64(entry["last"], "ns")
        written: dict[int, dict] = {}
        skipped: list[dict] = []
        source, options = plan["source"], plan["importer_options"]
        spans = {}  # split=time: input -> the times its name gives it (checked against every frame found in it)
        if entry.get("find_inputs"):
            spans = {str(d.path): d for d in inputs_for_range(date_inputs(expand_inputs(plan["inputs"])), first, last)}
            inputs = [d.path for d in spans.values()]
        else:
            inputs = [Path(p) for p in entry["inputs"]]
        items = iter_items(inputs, plan["skip_bad"], skipped)
        shared = entry.get("select_by_time", False)  # inputs shared with other tasks: keep this task's steps only
        if shared:
            items = (i for i in items if _may_be_in(i.path, first, last, spans))
        stats = PartialStats()  # the per-frame statistics of what this task writes, merged by finalise
        for path, got, digest, error in read_items(items, source, options, pool=None, ahead=1):
            if error is not None:
                if not plan["skip_bad"]:
                    raise ConversionError(path, error.removeprefix(f"{path}: "))
                log.warning("skipping %s", error)
                skipped.append({"name": source_name(path), "error": error})
                continue
            for f in got:
                _check_span(path, f.time, spans)
                if shared and not first <= f.time <= last:
                    continue
                check_consistent([f], state, output)
                if not first <= f.time <= last or (f.time - store_start) % step:
                    raise ConversionError(
                        path,
                        f"time {iso_time(f.time)} is not a step of task {task}'s range {entry['first']} "
                        f"to {entry['last']} ({plan['time_step_s']} s); sort inputs= by time or widen "
                        "time_range=, and plan again.",
                    )
                index = int((f.time - store_start) // step)
                if index in written:
                    raise ConversionError(
                        path,
                        f"duplicate time {iso_time(f.time)}: {written[index]['name']} has the same time; "
                        "drop one of them.",
                    )
                if write_chunk is not None:
                    write_chunk(index, f.precip)
                else:
                    precip[index] = f.precip
                stats.add(index, f.precip)
                written[index] = {
                    "index": index,
                    "time": iso_time(f.time),
                    "name": source_name(path),
                    "sha256": digest,
                    "product": f.product,
                    "accumulation_interval_s": int(f.accumulation_interval_s),
                    "conversion": f.conversion,
                    "zr": list(f.zr) if f.zr else None,
                    "radar_sites": list(f.radar_sites),
                }
        if len(stats):
            stats.save(stats_path)  # before the record: a task with a record has its statistics beside it
        record = {
            "task": int(task),
            "first": entry["first"],
            "last": entry["last"],
            "inputs": [str(p) for p in inputs],
            "frames": [written[i] for i in sorted(written)],
            "skipped_files": skipped,
            "frame_stats": stats_path.name if len(stats) else None,
            "seconds": round(_time.perf_counter() - started, 3),
            "cpu_seconds": round(_time.process_time() - cpu_started, 3),
            "host": os.uname().nodename,
        }
        write_json_atomic(record_path, record)
    return record


def _may_be_in(path: Path, first: np.datetime64, last: np.datetime64, spans: dict) -> bool:
    """False when the DWD file name of `path` (a file or `bundle!member`) dates it outside [first, last]: no need
    to decode it. With `spans` (split=time), a named time outside its input's span is refused first."""
    when = time_from_dwd_name(Path(str(path).rsplit(MEMBER_SEPARATOR, 1)[-1]).name)
    if when is None:
        return True
    stamp = np.datetime64(when, "ns")
    _check_span(path, stamp, spans)
    return bool(first <= stamp <= last)


def _check_span(path: Path, when: np.datetime64, spans: dict) -> None:
    """split=time: ConversionError when a frame at `when` in `path` lies outside the span of the input holding it."""
    if spans:
        owner = spans[str(path).split(MEMBER_SEPARATOR, 1)[0]]
        problem = outside_span_error(when, owner)
        if problem is not None:
            raise ConversionError(path, problem)


def _run_task(output: str, task: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    write_region(output, task)


def convert_parallel(inputs, output: str | Path, source: str, processes: int = 2, **options) -> dict:
    """`plan_store` for `processes` tasks, one local process per task (`write_region`), then `finalise_store`.

    The single-node form of slurm/convert_array.sbatch. A failed task makes finalise
    raise IncompleteConversionError naming its time range (its process's error is logged).
    """
    started = _time.perf_counter()
    history = options.pop("history", None)
    lock_timeout = options.get("lock_timeout", DEFAULT_LOCK_TIMEOUT_S)
    plan = plan_store(inputs, output, source, tasks=processes, history=history, **options)
    plan_seconds = _time.perf_counter() - started
    # Spawned, not forked: a forked child of a process whose zarr event-loop thread runs
    # (any that has read or written a store) waits forever on that thread's lock.
    ctx = mp.get_context("spawn")
    workers = [
        ctx.Process(target=_run_task, args=(str(output), k), name=f"ni-convert-task-{k}")
        for k in range(len(plan["tasks"]))
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    summary = finalise_store(output, history=history or "", lock_timeout=lock_timeout)
    summary["processes"] = len(workers)
    summary["plan_seconds"], summary["finalise_seconds"] = round(plan_seconds, 3), summary["seconds"]
    summary["seconds"] = round(_time.perf_counter() - started, 3)
    summary["frames_per_s"] = round(summary["n_frames_written"] / summary["seconds"], 2)
    return summary
