"""Inputs dated by their names: which files or bundles a time range needs, without opening them.

For conversion split by time (`ni-convert step=plan split=time time_range=[a, b] tasks=N`,
nowcast_infill/io/region_writer.py): each writer owns a time range and finds its own
inputs by name instead of being handed a list by the plan.

A name's date stamp is the time of a DWD file name (`raa01-yw2017.002_10000-1708160055-dwd---bin`)
or else the last run of 12, 8 or 6 digits of the name that reads as YYYYMMDDHHMM,
YYYYMMDD or YYYYMM (DWD's bundles: `YW2017.002_201708.tar` a month,
`YW2017.002_20170816.tar.gz` a day; `YW-201708160005.tar.gz`). How long a bundle lasts is
not in its name, so the inputs sorted by stamp are taken to tile time: input i holds
frames from its stamp up to and including the next input's stamp (a daily bundle may end
with 00:00 of the next day). A writer reads each input whose span meets its range, and a
frame found outside its input's span is refused by name (`outside_span_error`): the
assumption is checked, never silently relied on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import numpy as np

from nowcast_infill.errors import UserError
from nowcast_infill.io.bundles import MEMBER_SEPARATOR, is_bundle
from nowcast_infill.io.radolan import time_from_dwd_name

_DIGIT_RUN = re.compile(r"\d+")
_STAMP_FORMATS = {12: "%Y%m%d%H%M", 8: "%Y%m%d", 6: "%Y%m"}
_NEVER = np.datetime64("NaT", "ns")


def name_time(name: str | Path) -> np.datetime64 | None:
    """The date stamp of a file, bundle or `bundle!member` name (module doc); None when it has none."""
    base = str(name).rsplit(MEMBER_SEPARATOR, 1)[-1].rsplit("/", 1)[-1]
    when = time_from_dwd_name(base)
    if when is not None:
        return np.datetime64(when, "ns")
    for run in reversed(_DIGIT_RUN.findall(base)):
        fmt = _STAMP_FORMATS.get(len(run))
        if fmt is None:
            continue
        try:
            return np.datetime64(datetime.strptime(run, fmt), "ns")
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class DatedInput:
    """An input file or bundle and the times it may hold: `start` to `end` inclusive (`end` NaT: open)."""

    path: Path
    start: np.datetime64
    end: np.datetime64

    def meets(self, first: np.datetime64, last: np.datetime64) -> bool:
        return bool(self.start <= last and (np.isnat(self.end) or self.end >= first))

    def holds(self, when: np.datetime64) -> bool:
        return bool(self.start <= when and (np.isnat(self.end) or when <= self.end))


def date_inputs(files: list[Path], option: str = "inputs") -> list[DatedInput]:
    """`files` sorted by their names' stamps, each spanning to the next one's stamp (module doc).

    Raises UserError naming the first file without a date stamp, or two inputs with the same stamp.
    """
    stamped = []
    for path in files:
        when = name_time(path)
        if when is None:
            raise UserError(
                f"{path}: no date stamp in the name (split=time finds each task's inputs by the DWD time "
                f"or a YYYYMM[DD[HHMM]] stamp in their names); rename it, or split the {option}= list "
                "between tasks instead (split=inputs)."
            )
        stamped.append((when, path))
    stamped.sort(key=lambda pair: pair[0])
    for (a, pa), (b, pb) in pairwise(stamped):
        if a == b:
            raise UserError(
                f"{pa} and {pb}: the same date stamp in their names, so split=time cannot tell which holds "
                f"which times; keep one of them in {option}=, or use split=inputs."
            )
    ends = [b for b, _ in stamped[1:]] + [_NEVER]
    return [DatedInput(path, start, end) for (start, path), end in zip(stamped, ends, strict=True)]


def inputs_for_range(dated: list[DatedInput], first: np.datetime64, last: np.datetime64) -> list[DatedInput]:
    """The inputs whose span meets [first, last], in time order."""
    return [d for d in dated if d.meets(first, last)]


def outside_span_error(when: np.datetime64, owner: DatedInput) -> str | None:
    """Why a frame at `when` found in `owner` breaks split=time's assumption; None when it does not."""
    if owner.holds(when):
        return None
    span = f"{np.datetime_as_string(owner.start, 's')} to " + (
        np.datetime_as_string(owner.end, "s") if not np.isnat(owner.end) else "the end"
    )
    kind = "bundle" if is_bundle(owner.path) else "file"
    return (
        f"time {np.datetime_as_string(when, 's')} lies outside {span}, the span split=time gives the "
        f"{kind} {owner.path} by the date stamps in the input names (each input up to the next one's stamp), so "
        "another task may need it; plan again with split=inputs."
    )
