"""The time of a file read by a pySTEPS importer: from its metadata or from its file name.

`FilenameTime` reads a name laid out as pySTEPS' data source table (`fn_pattern`,
`fn_ext`) describes it; `time_from_filename` finds a YYYYMMDDHHMM[SS] stamp in any name;
`time_from_metadata` reads the importer's own time keys. The importer
(nowcast_infill/io/pysteps_source.py) decides which of them a file's time comes from.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nowcast_infill.errors import UserError
from nowcast_infill.io.importers import ConversionError

# The default when neither the importer's metadata nor `fn_pattern` gives the time:
# YYYYMMDDHHMM[SS], optionally with _, T or - between date and clock (KNMI, RMI, BOM names).
TIME_IN_NAME = re.compile(r"(?<!\d)(\d{8})[_T-]?(\d{4})(\d{2})?(?!\d)")

# Metadata keys a (custom) importer may use for the time of the field.
_METADATA_TIME_KEYS = ("timestamp", "timestamps", "valid_time", "time")

# strftime directives `fn_pattern` may use, as regular expressions.
_DIRECTIVES = {
    "Y": r"\d{4}",
    "y": r"\d{2}",
    "m": r"\d{2}",
    "d": r"\d{2}",
    "j": r"\d{3}",
    "H": r"\d{2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
}


class PystepsOptionError(UserError, ValueError):
    """An option of the pysteps importer (`pysteps_importer`, `fn_pattern`, ...) is wrong."""


class FilenameTime:
    """Parses the time out of a file name laid out as pySTEPS' data source table does.

    `fn_pattern` is a `datetime.strftime` format as in pySTEPS' `pystepsrc` (e.g. MeteoSwiss
    `AQC%y%j%H%M?_00005.801`, where `?` is one arbitrary character and `*` any run of
    them, as `pysteps.io.archive.find_by_date` globs), `fn_ext` the extension after the
    last dot of the pattern (e.g. `gif`, `pgm.gz`); null `fn_ext` accepts any extension.
    """

    def __init__(self, fn_pattern: str, fn_ext: str | None = None):
        self.fn_pattern, self.fn_ext = str(fn_pattern), fn_ext
        regex, formats, i = [], [], 0
        text = self.fn_pattern
        while i < len(text):
            char = text[i]
            if char == "%":
                code = text[i + 1 : i + 2]
                if code == "%":
                    regex.append("%")
                elif code in _DIRECTIVES:
                    regex.append(f"({_DIRECTIVES[code]})")
                    formats.append("%" + code)
                else:
                    raise PystepsOptionError(
                        f"importer.fn_pattern={self.fn_pattern!r}: directive %{code} is not supported; "
                        f"use {', '.join('%' + c for c in _DIRECTIVES)} (as in pySTEPS' data source table)."
                    )
                i += 2
                continue
            regex.append("." if char == "?" else ".*?" if char == "*" else re.escape(char))
            i += 1
        if not ({"%Y", "%y"} & set(formats)) or "%H" not in formats:
            raise PystepsOptionError(
                f"importer.fn_pattern={self.fn_pattern!r} holds no year (%Y or %y) or hour (%H); "
                "give the pattern of the whole name, e.g. AQC%y%j%H%M?_00005.801 with fn_ext=gif."
            )
        ext = r"(\..*)?" if fn_ext in (None, "") else r"\." + re.escape(str(fn_ext).lstrip("."))
        self._regex = re.compile("".join(regex) + ext)
        self._format = "".join(formats)

    def __call__(self, path: Path) -> np.datetime64:
        match = self._regex.fullmatch(path.name)
        if match is None:
            raise ConversionError(
                path,
                f"the file name does not match importer.fn_pattern={self.fn_pattern!r} "
                f"fn_ext={self.fn_ext!r}; fix the pattern or rename the file.",
            )
        digits = "".join(g for g in match.groups()[: len(self._format) // 2])
        try:
            return np.datetime64(datetime.strptime(digits, self._format), "ns")
        except ValueError as err:
            raise ConversionError(
                path, f"time {digits!r} read with fn_pattern {self.fn_pattern!r} is not a valid date ({err})."
            ) from err


def time_from_filename(path: Path) -> np.datetime64:
    """UTC time YYYYMMDDHHMM[SS] (also YYYYMMDD_HHMM[SS]) found in the file name."""
    match = TIME_IN_NAME.search(path.name)
    if not match:
        raise ConversionError(
            path,
            "no time in the file name and none in the importer's metadata; set importer.fn_pattern (and fn_ext) "
            "to the pySTEPS data source pattern of these files (e.g. AQC%y%j%H%M?_00005.801 / gif), "
            "or rename them to hold YYYYMMDDHHMM.",
        )
    digits = match.group(1) + match.group(2) + (match.group(3) or "00")
    try:
        return np.datetime64(datetime.strptime(digits, "%Y%m%d%H%M%S"), "ns")
    except ValueError as err:
        raise ConversionError(path, f"time stamp {digits} in the file name is not a valid date ({err}).") from err


def time_from_metadata(path: Path, meta: dict) -> np.datetime64 | None:
    """The field's time from the importer's metadata (UTC), or None when it gives none."""
    for key in _METADATA_TIME_KEYS:
        value = meta.get(key)
        if value is None:
            continue
        values = np.ravel(np.asarray(value, dtype=object))
        if values.size != 1:
            raise ConversionError(
                path, f"importer metadata {key!r} holds {values.size} times; one file must be one time."
            )
        value = values[0]
        try:
            if isinstance(value, datetime) and value.tzinfo is not None:
                value = value.astimezone(timezone.utc).replace(tzinfo=None)
            return np.datetime64(value, "ns")
        except (TypeError, ValueError) as err:
            raise ConversionError(path, f"importer metadata {key}={value!r} is not a time ({err}).") from err
    return None


# ---------------------------------------------------------------------------- values
