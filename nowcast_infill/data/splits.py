"""Train/val/test blocks of a store's time axis and the windows inside them.

* `plan_splits`: contiguous frame blocks in time order, by fractions + gap, by dates,
  `test_only` (the whole store is the test split: a short event store evaluated whole) or
  `train_only` (the whole store trains: one of several training stores of another radar
  network than the one a zero-shot study scores).
* `window_offsets`: the frames a window of a task reads and predicts. This is the single
  implementation of the frame-count rule (infill: `2 * context + 1` in, 1 out; nowcast:
  `past` in, `future` out); `nowcast_infill.tasks` builds its tasks on it.
* `select_windows`: the window starts of one block that stay inside a segment and whose
  target frames exist and are valid enough, with a report of what was skipped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import numpy as np

from nowcast_infill import schema
from nowcast_infill.errors import BadValueError, UserError
from nowcast_infill.utils.instantiate import to_plain

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TASKS = ("infill", "nowcast")
DEFAULT_SPLIT = {"fractions": [0.7, 0.15, 0.15], "gap": 12}
# data.split values: the whole store is one split (the other two are empty).
TEST_ONLY = "test_only"
TRAIN_ONLY = "train_only"
WHOLE_STORE = {TEST_ONLY: "test", TRAIN_ONLY: "train"}


class EmptySplitError(UserError, ValueError):
    """A split holds no usable window (too short a store or block, or every window skipped)."""


def is_test_only(split: Any) -> bool:
    """True for `data.split=test_only`."""
    return isinstance(split, str) and split == TEST_ONLY


def present_splits(split: Any) -> tuple[str, ...]:
    """The splits `split` gives windows to: all three, or the one of `test_only` / `train_only`."""
    if isinstance(split, str) and split in WHOLE_STORE:
        return (WHOLE_STORE[split],)
    return SPLITS


def plan_splits(times: np.ndarray, split: Mapping | str | None, store: str = "<store>") -> dict[str, tuple[int, int]]:
    """Contiguous frame blocks ``{split: (start, stop)}`` (stop exclusive), in time order.

    ``split`` is ``{"fractions": [train, val, test], "gap": frames}`` (blocks by fraction of
    the frames left after removing the two gaps), ``{"dates": {"train": [first, last],
    ...}}`` (inclusive ISO times, UTC; a null ``dates`` means fractions), ``"test_only"``
    (every frame is test) or ``"train_only"`` (every frame trains); the other blocks are then
    empty. Blocks never overlap; windows never leave a block, so nothing straddles a gap.
    """
    n = len(times)
    if isinstance(split, str):
        if split not in WHOLE_STORE:
            raise BadValueError(
                f"data.split={split!r} is unknown; use {TEST_ONLY}, {TRAIN_ONLY}, {{fractions: [...], gap: N}} "
                "or {dates: {train: [first, last], val: ..., test: ...}}."
            )
        return {name: ((0, n) if name == WHOLE_STORE[split] else (0, 0)) for name in SPLITS}
    split = dict(to_plain(split) or DEFAULT_SPLIT)
    unknown = set(split) - {"fractions", "gap", "dates"}
    if unknown:
        raise BadValueError(
            f"data.split: unknown key(s) {sorted(unknown)}; use 'fractions' + 'gap', 'dates', "
            f"data.split={TEST_ONLY} or data.split={TRAIN_ONLY}."
        )
    if split.get("dates") is not None:
        return _blocks_by_dates(times, split["dates"], store)
    fractions = [float(f) for f in split.get("fractions", DEFAULT_SPLIT["fractions"])]
    gap = int(split.get("gap", DEFAULT_SPLIT["gap"]))
    if len(fractions) != 3 or min(fractions) < 0 or not 0 < sum(fractions) <= 1 + 1e-9:
        raise BadValueError(
            f"split.fractions={fractions}: need three non-negative fractions (train, val, test) summing to <= 1."
        )
    if gap < 0:
        raise BadValueError(f"split.gap={gap}: must be >= 0 frames.")
    usable = n - 2 * gap
    if usable <= 0:
        raise BadValueError(f"{store}: {n} frames cannot hold two gaps of {gap} frames; lower split.gap.")
    sizes = [math.floor(f * usable) for f in fractions]
    blocks, start = {}, 0
    for name, size in zip(SPLITS, sizes, strict=True):
        blocks[name] = (start, start + size)
        start += size + gap
    return blocks


def _blocks_by_dates(times: np.ndarray, dates: Mapping, store: str) -> dict[str, tuple[int, int]]:
    blocks = {}
    for name in SPLITS:
        bounds = dates.get(name)
        if bounds is None:
            raise BadValueError(f"split.dates.{name} is missing; give [first, last] ISO times for train, val and test.")
        first, last = (np.datetime64(str(v).replace("Z", ""), "ns") for v in bounds)
        blocks[name] = (
            int(np.searchsorted(times, first, side="left")),
            int(np.searchsorted(times, last, side="right")),
        )
    ordered = sorted(blocks.items(), key=lambda kv: kv[1][0])
    for (a, (_, a_stop)), (b, (b_start, _)) in pairwise(ordered):
        if b_start < a_stop:
            raise BadValueError(f"split.dates: '{a}' and '{b}' overlap in {store}; make the date ranges disjoint.")
    return blocks


def window_offsets(task_name: str, past: int, future: int, context: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Window length, input offsets ``(T_in,)`` and target offsets ``(T_out,)`` (frames from the window start).

    infill: ``2 * context + 1`` frames centred on the target frame; nowcast: ``past`` frames,
    then ``future`` target frames.
    """
    if task_name not in TASKS:
        raise BadValueError(f"task={task_name!r} is unknown; use one of {TASKS}.")
    checks = (("past", past, 1), ("future", future, 1)) if task_name == "nowcast" else (("context", context, 0),)
    for name, value, lowest in checks:
        if int(value) < lowest:
            raise BadValueError(f"{name}={value} is invalid for task={task_name}: it must be >= {lowest}.")
    if task_name == "infill":
        length = 2 * int(context) + 1
        return length, np.arange(length), np.array([int(context)])
    past, future = int(past), int(future)
    return past + future, np.arange(past), np.arange(past, past + future)


def select_windows(
    block: tuple[int, int],
    length: int,
    target_offsets: np.ndarray,
    *,
    missing: np.ndarray,
    valid_fraction: np.ndarray,
    segment: np.ndarray,
    min_valid_fraction: float,
    split_name: str,
    store: str,
    task_name: str,
) -> tuple[np.ndarray, dict[str, int]]:
    """Window starts ``(n,)`` int of `block` and a report of the candidates skipped.

    A window never straddles a segment boundary (time that the store does not hold); one whose
    target frames include a missing frame, or are on average less valid than
    `min_valid_fraction`, is skipped and counted (and logged). `split_name`, `store` and
    `task_name` name the block in messages. Raises EmptySplitError when no window is left.
    """
    start, stop = block
    candidates = np.arange(start, stop - length + 1)
    inside = schema.same_segment_windows(segment, candidates, length)
    straddling = int((~inside).sum())
    candidates = candidates[inside]
    if candidates.size == 0:
        across = f", and its {straddling} window(s) cross a segment boundary" if straddling else ""
        raise EmptySplitError(
            f"{store}: the {split_name} split (frames {start}..{stop - 1}, {stop - start} frames) is shorter than one "
            f"window of {length} frames (task={task_name}){across}; use a longer store, larger split.fractions for "
            f"{split_name}, a smaller split.gap, or fewer past/future/context frames."
        )
    targets = candidates[:, None] + target_offsets[None, :]
    missing_target = missing[targets].any(axis=1)
    low_valid = ~missing_target & (valid_fraction[targets].mean(axis=1) < min_valid_fraction)
    keep = ~missing_target & ~low_valid
    report = {
        "candidates": int(candidates.size),
        "kept": int(keep.sum()),
        "skipped_missing_target": int(missing_target.sum()),
        "skipped_low_valid": int(low_valid.sum()),
        "across_segments": straddling,
    }
    level = logging.WARNING if report["kept"] < report["candidates"] else logging.INFO
    log.log(
        level,
        "%s split of %s: %d of %d windows kept (%d with a missing target frame, %d with target valid fraction < %.3g)",
        split_name,
        store,
        report["kept"],
        report["candidates"],
        report["skipped_missing_target"],
        report["skipped_low_valid"],
        min_valid_fraction,
    )
    if report["kept"] == 0:
        raise EmptySplitError(
            f"{store}: every window of the {split_name} split was skipped ({report}); "
            "lower data.min_valid_fraction or choose other dates."
        )
    return candidates[keep], report
