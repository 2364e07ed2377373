"""Conversion by many writers: pre-size a store, fill disjoint time regions, finalise.

The engine of `ni-convert step=plan|write|finalise|all` and slurm/convert_array.sbatch
(docs/schema.md § Conversion by many writers). No scheduler of our own: `plan` splits
the inputs into N tasks, and anything that runs `write` for each task number (a Slurm
array, N local processes, a shell loop) fills the store.

* `plan_store` (exclusive store lock): reads the first item of each task's inputs (and
  the last input, unless `time_range` is given), creates the whole store at once, sized
  for the time range: coordinates, `time`, `missing_frame` all True, `precip` with no
  chunk written; and writes the plan `NAME.zarr.conversion/plan.json` beside it: each
  task's inputs and the time range it owns (the ranges tile the time axis). With
  split="time" the time range is cut into equal runs and the plan holds no file list:
  each task finds its inputs by the date stamps in their names (io/dated_inputs.py).
* `write_region` (task k): reads its inputs in order and writes each frame as its own
  `precip` chunk (one time step per stored file is required, so two tasks never write the
  same file: no store lock is taken; a per-task lock `task-k.lock` keeps a rerun from
  overlapping a still-running copy of the same task). Every chunk file is written
  atomically (written aside, then renamed); at the end the per-frame statistics of its
  frames (`task-k.stats.npz`), then the task's record `task-k.json` (frames written with
  their provenance, files skipped) are written atomically. A killed task leaves no
  record, and rerunning it rewrites its chunks.
* `finalise_store` (exclusive store lock): a task without a record makes it fail with
  `IncompleteConversionError` naming each unfinished task's time range; otherwise every
  step of a finished range without a frame is a gap (`missing_frame`, its chunk deleted
  if a killed run left one), provenance is merged into `source_files` in time order,
  the tasks' per-frame statistics are merged (nowcast_infill.io.frame_stats; `precip` is
  read only for the frames of a task without them), and the metadata is consolidated.
  The plan folder is then removed.

Until finalised, the store reads as all missing (`missing_frame` True everywhere) and
carries the attribute `conversion_incomplete`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import time as _time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np

from nowcast_infill import schema
from nowcast_infill.errors import UserError
from nowcast_infill.io.bundles import MEMBER_SEPARATOR
from nowcast_infill.io.conversion_plan import SPLITS, split_by_inputs, split_by_time
from nowcast_infill.io.convert import expand_inputs, iter_items, read_items, source_name
from nowcast_infill.io.dated_inputs import date_inputs, inputs_for_range, outside_span_error
from nowcast_infill.io.frame_stats import PartialStats, compute_frame_stats
from nowcast_infill.io.importers import ConversionError, Frame
from nowcast_infill.io.radolan import time_from_dwd_name
from nowcast_infill.io.store import (
    DEFAULT_SHARDS,
    SourceRecord,
    check_consistent,
    create_skeleton,
    encode_times,
    iso_time,
    new_store_attrs,
    precip_layout,
    read_state,
    whole_frame_chunk_writer,
)
from nowcast_infill.io.store_lock import DEFAULT_LOCK_TIMEOUT_S, StoreLock
from nowcast_infill.registry import get_method

log = logging.getLogger(__name__)

PLAN = "plan.json"
# The attribute of a planned store until `finalise_store` succeeds.
INCOMPLETE_ATTR = "conversion_incomplete"


class IncompleteConversionError(UserError):
    """`finalise_store` found tasks without a record; `.incomplete` lists (task, first time, last time, state)."""

    def __init__(self, message: str, incomplete: list[tuple[int, str, str, str]]):
        super().__init__(message)
        self.incomplete = incomplete


def conversion_dir(output: str | Path) -> Path:
    """The folder beside `output` holding the plan and the task records: `NAME.zarr.conversion`."""
    return Path(str(output).rstrip("/") + ".conversion")


def _write_json_atomic(path: Path, payload: dict) -> None:
    part = path.with_name(path.name + f".part-{os.getpid()}")
    part.write_text(json.dumps(payload, indent=1))
    os.replace(part, path)


def load_plan(output: str | Path) -> dict:
    """The plan of the store `output`; UserError naming it when there is none."""
    path = conversion_dir(output) / PLAN
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{output}: no conversion plan ({path} is absent); run `ni-convert step=plan inputs=... "
            f"output={output} tasks=N` first (or the store was finalised already)."
        ) from None


def plan_store(
    inputs,
    output: str | Path,
    source: str,
    tasks: int = 1,
    time_range=None,
    time_step_s: int | None = None,
    skip_bad: bool = False,
    chunks: dict | None = None,
    shards: dict | None = DEFAULT_SHARDS,
    compression: dict | None = None,
    history: str | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
    split: str = "inputs",
    **importer_options,
) -> dict:
    """Create the store `output` sized for its whole time range and split it into `tasks` (see the module doc).

    split="inputs": inputs (sorted by time, as DWD names sort) are cut into `tasks`
    contiguous runs of files or bundles; task k owns the time steps from its first frame to
    the step before task k+1's. split="time" (needs `time_range`): the steps of the range
    are cut into `tasks` equal runs, and each task finds its own inputs when it runs, by the
    date stamps in the names `inputs` matches (nowcast_infill/io/dated_inputs.py); the plan
    keeps `inputs` as written, not a file list. time_range: [first, last] time of the store
    (UTC); null: the first and last frame of the inputs. time_step_s: the store's step;
    null: the product's interval. Returns the plan (also written to NAME.zarr.conversion/plan.json).
    """
    if split not in SPLITS:
        raise UserError(f"split={split!r}: must be one of {', '.join(SPLITS)}.")
    if split == "time" and not time_range:
        raise UserError(
            "split=time: needs time_range=[first, last] (the range the tasks share out); pass it, or "
            "split=inputs to split the input list."
        )
    get_method("source", source, **importer_options)
    files = expand_inputs(inputs)
    output = Path(output)
    history = (
        history
        or f"nowcast_infill.io.region_writer.plan_store(source={source!r}, inputs={inputs!r}, output={str(output)!r})"
    )
    with StoreLock(output, timeout=lock_timeout, command=history):
        if output.exists():
            raise UserError(
                f"{output}: exists already; step=plan creates a new store: choose another output= or delete it "
                f"(to finish a planned store run step=write for its tasks, then step=finalise)."
            )
        split_tasks = split_by_time if split == "time" else split_by_inputs
        ref, start, end, step_s, task_list = split_tasks(
            files, int(tasks), time_range, time_step_s, source, importer_options
        )
        n_steps = int((end - start) // np.timedelta64(step_s, "s")) + 1
        _create_planned_store(output, ref, n_steps, start, step_s, source, chunks, shards, compression, history)
        plan = {
            "store": str(output),
            "source": source,
            "importer_options": importer_options,
            "skip_bad": bool(skip_bad),
            "time_step_s": step_s,
            "start": iso_time(start),
            "end": iso_time(end),
            "n_time": n_steps,
            "history": history,
            "split": split,
            "inputs": [str(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)],
            "tasks": task_list,
        }
        conv = conversion_dir(output)
        shutil.rmtree(conv, ignore_errors=True)  # records of an earlier plan that never became a store
        conv.mkdir()
        _write_json_atomic(conv / PLAN, plan)
        os.replace(output.with_name(output.name + ".planning"), output)  # the store appears whole, plan beside it
    return plan


def _create_planned_store(
    output: Path,
    ref: Frame,
    n_steps: int,
    start: np.datetime64,
    step_s: int,
    source: str,
    chunks,
    shards,
    compression,
    history: str,
) -> None:
    import zarr

    building = output.with_name(output.name + ".planning")
    shutil.rmtree(building, ignore_errors=True)
    precip_chunks, precip_shards = precip_layout(ref.grid.shape, chunks, shards)
    if (precip_shards or precip_chunks)[0] != 1:
        raise UserError(
            f"chunks.time={precip_chunks[0]} / shards.time: a store written by many writers holds one time "
            "step per stored file (so writers never share a file); use chunks.time=1 and shards=null "
            "(or shards.time=1), or convert in one process."
        )
    create_skeleton(building, ref, chunks, compression, shards)
    group = zarr.open_group(building, mode="r+")
    schema.store_array(group, schema.PRECIP).resize((n_steps, *ref.grid.shape))
    times = start + np.arange(n_steps) * np.timedelta64(step_s, "s")
    time_arr = schema.store_array(group, "time")
    time_arr.resize((n_steps,))
    units, calendar = cast(str, time_arr.attrs["units"]), cast(str, time_arr.attrs["calendar"])
    time_arr[:] = encode_times(times, units, calendar, np.dtype(time_arr.dtype))
    missing_frame = schema.store_array(group, schema.MISSING_FRAME)
    missing_frame.resize((n_steps,))
    missing_frame[:] = True  # nothing is there until finalise says so
    attrs = new_store_attrs({}, [ref], [], {ref.source: SourceRecord("", "", "")}, source, [], history, step_s)
    attrs.update(
        source_files=[],
        **{
            INCOMPLETE_ATTR: "planned for many writers and not finalised: every frame reads as "
            "missing until `ni-convert step=finalise` succeeds"
        },
    )
    group.attrs.put(attrs)
    _consolidate(building)


def _consolidate(path: Path) -> None:
    import zarr

    with warnings.catch_warnings():
        # zarr 3 flags consolidated metadata as not yet in the v3 spec; xarray reads it.
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(path)


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
        state = read_state(output)
        assert state is not None  # plan_store wrote the store before the plan beside it
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
        _write_json_atomic(record_path, record)
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


def _task_running(output: Path, task: int) -> bool:
    from nowcast_infill.io.store_lock import StoreLockedError

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
        _consolidate(output)
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
