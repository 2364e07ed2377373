"""Conversion by many writers, step plan: pre-size the store and split its time range into tasks.

* `plan_store` (exclusive store lock): reads the first item of each task's inputs (and
  the last input, unless `time_range` is given), creates the whole store at once, sized
  for the time range: coordinates, `time`, `missing_frame` all True, `precip` with no
  chunk written; and writes the plan `NAME.zarr.conversion/plan.json` beside it: each
  task's inputs and the time range it owns (the ranges tile the time axis). With
  split="time" the time range is cut into equal runs and the plan holds no file list:
  each task finds its inputs by the date stamps in their names (io/dated_inputs.py).

The plan folder `NAME.zarr.conversion` also holds the tasks' records (io/region_writer.py)
until `finalise_store` (io/region_finalise.py) removes it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import cast

import numpy as np

from nowcast_infill import schema
from nowcast_infill.errors import UserError
from nowcast_infill.io.consolidated import consolidate
from nowcast_infill.io.conversion_plan import SPLITS, split_by_inputs, split_by_time
from nowcast_infill.io.convert import expand_inputs
from nowcast_infill.io.importers import Frame
from nowcast_infill.io.store import (
    DEFAULT_SHARDS,
    SourceRecord,
    StoreState,
    create_skeleton,
    encode_times,
    iso_time,
    new_store_attrs,
    precip_layout,
    read_state,
)
from nowcast_infill.io.store_lock import DEFAULT_LOCK_TIMEOUT_S, StoreLock
from nowcast_infill.registry import get_method

PLAN = "plan.json"
# The attribute of a planned store until `finalise_store` succeeds.
INCOMPLETE_ATTR = "conversion_incomplete"


def conversion_dir(output: str | Path) -> Path:
    """The folder beside `output` holding the plan and the task records: `NAME.zarr.conversion`."""
    return Path(str(output).rstrip("/") + ".conversion")


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write `payload` as the JSON file `path` whole or not at all (written aside, then renamed)."""
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


def planned_store_state(output: str | Path) -> StoreState:
    """The state of the planned store `output`; UserError naming it when it is gone but its plan is still there."""
    state = read_state(Path(output))
    if state is None:
        raise UserError(
            f"{output}: the store is absent but its conversion plan {conversion_dir(output)} remains (the store was "
            f"deleted or moved after step=plan); re-run `ni-convert step=plan inputs=... output={output} tasks=N` "
            "(it replaces the old plan), then step=write for every task."
        )
    return state


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
        write_json_atomic(conv / PLAN, plan)
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
    consolidate(building)
