"""How a conversion by many writers is planned: the store's time axis and its split into tasks.

Used by `region_writer.plan_store` (the module doc there says what a plan is):
`split_by_inputs` cuts the time-sorted inputs into runs of files or bundles (a run's
time range is its inputs' times), `split_by_time` cuts a time range into equal runs of
steps whose tasks find their own inputs by name (nowcast_infill/io/dated_inputs.py).
Each returns (reference frame, first time, last time, step seconds, task list).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nowcast_infill.errors import UserError
from nowcast_infill.io.convert import iter_items, read_item
from nowcast_infill.io.dated_inputs import date_inputs, inputs_for_range
from nowcast_infill.io.importers import ConversionError, Frame
from nowcast_infill.io.store import iso_time


def first_frame(files: list[Path], source: str, options: dict) -> Frame:
    """The first frame of the first readable item of `files` (plain files or bundles)."""
    for item in iter_items(files, skip_bad=False, skipped=[]):
        path, frames, _digest, error = read_item(source, options, item)
        if error is not None:
            raise ConversionError(path, error.removeprefix(f"{path}: "))
        if frames:
            return frames[0]
    raise ConversionError(files[0], "holds no frame; check inputs=.")


def last_time(path: Path, source: str, options: dict) -> np.datetime64:
    """The latest frame time of the input `path` (a bundle is streamed to its last member)."""
    last = None
    for item in iter_items([path], skip_bad=False, skipped=[]):
        last = item
    if last is None:
        raise ConversionError(path, "holds no frame; check inputs=.")
    got, _, error = read_item(source, options, last)[1:]
    if error is not None:
        raise ConversionError(last.path, error.removeprefix(f"{last.path}: "))
    assert got is not None  # read_item returns frames whenever it returns no error
    return max(f.time for f in got)


def parse_time(text, option: str) -> np.datetime64:
    try:
        return np.datetime64(str(text).rstrip("Z"), "ns")
    except ValueError as err:
        raise UserError(f"{option}={text!r}: not a time; write it like 2017-08-16T00:05 (UTC).") from err


SPLITS = ("inputs", "time")


def time_axis(ref: Frame, time_range, time_step_s, last_time) -> tuple[np.datetime64, np.datetime64, int]:
    """(first, last, step seconds) of the store: `time_range` or the inputs' first / `last_time()` frame."""
    step_s = int(time_step_s or ref.accumulation_interval_s)
    if step_s <= 0:
        raise UserError(
            f"{ref.source}: product {ref.product} is instantaneous (no accumulation interval); "
            "pass time_step_s=<seconds between frames>."
        )
    start = parse_time(time_range[0], "time_range[0]") if time_range else ref.time
    end = parse_time(time_range[1], "time_range[1]") if time_range else last_time()
    if end < start or (end - start) % np.timedelta64(step_s, "s"):
        raise UserError(
            f"time_range=[{iso_time(start)}, {iso_time(end)}]: the end must be a whole number of {step_s} s "
            "steps after the start; fix time_range=."
        )
    return start, end, step_s


def split_by_inputs(files, tasks, time_range, time_step_s, source, options):
    """split=inputs: contiguous runs of `files`, each input's range cut further when tasks outnumber inputs."""
    n_tasks = max(1, min(tasks, len(files)))
    runs = [list(r) for r in np.array_split(np.arange(len(files)), n_tasks)]
    firsts = [first_frame([files[run[0]]], source, options) for run in runs]
    ref = firsts[0]
    start, end, step_s = time_axis(ref, time_range, time_step_s, lambda: last_time(files[-1], source, options))
    step = np.timedelta64(step_s, "s")
    starts = [start] + [f.time for f in firsts[1:]]
    for k, (f, t) in enumerate(zip(firsts, starts, strict=True)):
        if (f.time - start) % step or not (start <= f.time <= end) or (k and t <= starts[k - 1]):
            raise ConversionError(
                f.source,
                f"first frame {iso_time(f.time)} of task {k} is not on the {step_s} s axis "
                f"{iso_time(start)} to {iso_time(end)} after task {k - 1}'s; sort inputs= by time, or fix "
                "time_range= / time_step_s=.",
            )
    stops = [t - step for t in starts[1:]] + [end]
    # Fewer inputs than tasks (a day in one bundle, a month in 30 on 64 tasks): the time
    # range of each input is cut into several tasks, each reading the whole input and
    # keeping its own steps (members outside are passed over by their DWD file name).
    per_input = [len(share) for share in np.array_split(np.arange(max(tasks, n_tasks)), n_tasks)]
    task_list: list[dict] = []
    for run, a, b, parts in zip(runs, starts, stops, per_input, strict=True):
        n_run = int((b - a) // step) + 1
        for piece in np.array_split(np.arange(n_run), min(parts, n_run)):
            task_list.append(
                {
                    "task": len(task_list),
                    "inputs": [str(files[i]) for i in run],
                    "first": iso_time(a + int(piece[0]) * step),
                    "last": iso_time(a + int(piece[-1]) * step),
                    "select_by_time": parts > 1,
                }
            )
    return ref, start, end, step_s, task_list


def split_by_time(files, tasks, time_range, time_step_s, source, options):
    """split=time: `tasks` equal runs of the range's steps; each task finds its inputs by name when it runs."""
    first, last = (parse_time(t, f"time_range[{k}]") for k, t in enumerate(time_range))
    dated = inputs_for_range(date_inputs(files), first, last)
    if not dated:
        raise UserError(
            f"time_range=[{iso_time(first)}, {iso_time(last)}]: no input's name dates it within the range "
            f"({len(files)} input(s) matched); check inputs= and time_range=."
        )
    ref = first_frame([dated[0].path], source, options)  # grid, product and step of the store
    start, end, step_s = time_axis(ref, time_range, time_step_s, None)
    step = np.timedelta64(step_s, "s")
    if (ref.time - start) % step:
        raise ConversionError(
            ref.source,
            f"time {iso_time(ref.time)} is not on the {step_s} s axis from {iso_time(start)}; "
            "fix time_range= / time_step_s=.",
        )
    n_steps = int((end - start) // step) + 1
    task_list = [
        {
            "task": k,
            "inputs": None,
            "find_inputs": True,
            "select_by_time": True,
            "first": iso_time(start + int(piece[0]) * step),
            "last": iso_time(start + int(piece[-1]) * step),
        }
        for k, piece in enumerate(np.array_split(np.arange(n_steps), min(max(1, tasks), n_steps)))
    ]
    return ref, start, end, step_s, task_list
