"""Any composite pysteps can import (KNMI HDF5, ODIM, OPERA, BOM, FMI, MeteoSwiss, MRMS).

The importer is chosen by `pysteps_importer=<name>` and looked up with
`pysteps.io.get_method(name, "importer")`; its metadata (unit, transform, accutime,
projection, corner coordinates) decides how the field becomes mm/h.

pySTEPS describes a field by two metadata keys: `unit` is the physical quantity
(`mm/h` rate, `mm` depth over `accutime` minutes, `dBZ` reflectivity) and `transform`
the scale the values are in (`None` linear, `"dB"` 10*log10, `"log"`/`"BoxCox"`).
So `unit="dBZ", transform="dB"` (what fmi_pgm and odim_hdf5 DBZH return) holds dBZ,
and `unit="dBZ", transform=None` holds linear Z (mm^6 m^-3), exactly as
`pysteps.utils.conversion.to_rainrate` reads them. `dBR` (dB of a rain rate in mm/h,
used by some pySTEPS outputs) is accepted too. The inverse transforms set values
below the metadata `threshold` to 0 (no rain), as pySTEPS does.
"""

from __future__ import annotations

import inspect
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nowcast_infill.errors import UserError
from nowcast_infill.io.importers import (
    DBZ_TO_MM_H_DEFAULT_ZR,
    ConversionError,
    Frame,
    accumulation_to_mm_h,
    describe_accumulation,
    make_grid,
)

# The default when neither the importer's metadata nor `fn_pattern` gives the time:
# YYYYMMDDHHMM[SS], optionally with _, T or - between date and clock (KNMI, RMI, BOM names).
_TIME_IN_NAME = re.compile(r"(?<!\d)(\d{8})[_T-]?(\d{4})(\d{2})?(?!\d)")

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

# The transforms pySTEPS' `to_rainrate` undoes that are accepted here.
TRANSFORMS = (None, "dB", "log", "BoxCox")
UNITS = ("mm/h", "mm", "dBZ", "dBR")


class PystepsOptionError(UserError, ValueError):
    """An option of the pysteps importer (`pysteps_importer`, `fn_pattern`, ...) is wrong."""


# ---------------------------------------------------------------------------- time


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
    match = _TIME_IN_NAME.search(path.name)
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


def _inverse_transform(values: np.ndarray, transform, meta: dict) -> np.ndarray:
    """Linear values from `transform`-scaled ones; below the metadata threshold -> 0 (pySTEPS' rule)."""
    threshold = meta.get("threshold")
    threshold = -10.0 if threshold is None else float(threshold)  # pySTEPS' default
    if transform == "dB":
        forward = lambda v: np.power(10.0, v / 10.0)  # noqa: E731
    else:  # log = Box-Cox with lambda 0
        lam = float(meta.get("BoxCox_lambda") or 0.0)
        forward = np.exp if lam == 0.0 else (lambda v: np.exp(np.log(lam * v + 1.0) / lam))  # noqa: E731
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        linear = forward(values)
        linear[linear < forward(np.float64(threshold))] = 0.0  # NaN compares False: no-data stays NaN
    return linear


def field_to_mm_h(path: Path, values: np.ndarray, meta: dict, zr: tuple[float | None, float | None] = (None, None)):
    """Rain rate `(H, W)` float32 mm/h of a pySTEPS field and its metadata.

    values: `(H, W)` float64 as the importer returned it, NaN = no data.
    Returns (precip, accumulation_interval_s, conversion text, (zr_a, zr_b) or None).
    Raises ConversionError naming `path` for a unit/transform it cannot convert or when
    a value that was not no-data becomes non-finite.
    """
    unit = str(meta.get("unit", "")).strip()
    transform = meta.get("transform")
    transform = None if transform in (None, "None", "none", "") else str(transform)
    if unit not in UNITS:
        raise ConversionError(
            path,
            f"metadata unit {unit!r} is not one of {', '.join(UNITS)}; this field is not "
            "precipitation (or pysteps_importer= reads another quantity).",
        )
    if transform not in TRANSFORMS:
        raise ConversionError(
            path,
            f"metadata transform {transform!r} cannot be undone; only {', '.join(map(str, TRANSFORMS))} are supported.",
        )
    scale = "" if transform is None else f"{transform}-transformed "
    zr_used, interval_s = None, 0
    if unit == "dBR":
        # The unit itself is the dB scale of a rain rate; a dB transform only restates it.
        if transform not in (None, "dB"):
            raise ConversionError(
                path,
                f"metadata unit dBR with transform {transform!r} is contradictory "
                "(dBR is already a dB scale); fix the importer's metadata.",
            )
        precip = _inverse_transform(values, "dB", meta)
        conversion = "mm/h from dBR"
    else:
        linear = values if transform is None else _inverse_transform(values, transform, meta)
        if unit == "mm/h":
            precip = linear
            conversion = f"mm/h from {scale}mm/h" if scale else "mm/h as read"
        elif unit == "mm":
            accutime_min = float(meta.get("accutime") or 0)
            if accutime_min <= 0:
                raise ConversionError(
                    path,
                    "unit is mm but the metadata has no accutime; pass ++importer.importer_kwargs.accutime=MINUTES.",
                )
            interval_s = int(round(accutime_min * 60))
            precip = accumulation_to_mm_h(linear, interval_s)
            conversion = describe_accumulation(interval_s) + (f" from {scale}mm" if scale else "")
        else:  # dBZ: `linear` is Z in mm^6 m^-3
            a = zr[0] or float(meta.get("zr_a") or DBZ_TO_MM_H_DEFAULT_ZR[0])
            b = zr[1] or float(meta.get("zr_b") or DBZ_TO_MM_H_DEFAULT_ZR[1])
            zr_used = (a, b)
            with np.errstate(invalid="ignore"):
                precip = np.power(linear / a, 1.0 / b)
            source = "dBZ" if transform == "dB" else f"{scale}Z" if scale else "linear Z"
            conversion = f"Z={a:g}*R^{b:g} from {source}"
    precip = np.asarray(precip, dtype=np.float32)
    broken = ~np.isfinite(precip) & ~np.isnan(values)
    if broken.any():
        row, col = (int(i) for i in np.argwhere(broken)[0])
        raise ConversionError(
            path,
            f"{int(broken.sum())} pixel(s) are not finite after converting unit {unit} / transform {transform} to mm/h "
            f"(first at row {row}, column {col}: value {values[row, col]!r}); the metadata does not describe the values: "
            "check pysteps_importer= and importer.importer_kwargs (unit, accutime, zr), or pass skip_bad=true.",
        )
    return precip, interval_s, conversion, zr_used


# ---------------------------------------------------------------------------- importer


class PystepsImporter:
    """Reads one file with `pysteps.io.get_method(pysteps_importer, "importer")`.

    Options: `pysteps_importer` (e.g. knmi_hdf5, odim_hdf5, opera_hdf5, bom_rf3, fmi_pgm,
    mch_gif, mrms_grib), `importer_kwargs` passed to it (as pySTEPS' data source table
    lists them, e.g. mch_gif `{product: AQC, unit: mm, accutime: 5}`), `zr_a`/`zr_b` for
    dBZ fields (default: the file's own metadata, else Marshall-Palmer), `fn_pattern` /
    `fn_ext` for the time in the file name (see `FilenameTime`), `product` for the store.

    The time of a file is the importer's metadata time when it gives one, else the
    `fn_pattern` time, else a YYYYMMDDHHMM[SS] stamp in the name; a name time that
    contradicts the metadata time is an error. File names are used as given (a symlink is
    not resolved), so a link may give a file the name its time is read from.
    """

    name = "pysteps"

    def __init__(
        self,
        pysteps_importer: str = "knmi_hdf5",
        importer_kwargs: dict | None = None,
        zr_a: float | None = None,
        zr_b: float | None = None,
        product: str | None = None,
        fn_pattern: str | None = None,
        fn_ext: str | None = None,
    ):
        import pysteps.io

        try:
            self._read = pysteps.io.get_method(pysteps_importer, "importer")
        except ValueError as err:
            raise PystepsOptionError(f"importer.pysteps_importer={pysteps_importer!r}: {err}") from err
        self.pysteps_importer = pysteps_importer
        self.importer_kwargs = dict(importer_kwargs or {})
        self.zr_override = (zr_a, zr_b)
        self.product = product
        if fn_pattern is None and fn_ext is not None:
            raise PystepsOptionError(f"importer.fn_ext={fn_ext!r} needs importer.fn_pattern as well.")
        self.name_time = FilenameTime(fn_pattern, fn_ext) if fn_pattern is not None else None

    def read(self, path: str | Path) -> list[Frame]:
        path = Path(path)
        if not path.is_file() or path.stat().st_size == 0:
            raise ConversionError(path, "file is missing or empty; re-download it or pass skip_bad=true.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                field, _quality, meta = self._read(str(path), **self.importer_kwargs)
        except Exception as err:
            raise ConversionError(path, self._explain_failure(path, err)) from err

        values = np.array(field, dtype=np.float64)
        if values.ndim != 2:
            raise ConversionError(path, f"pysteps returned a field of shape {values.shape}, expected 2-D (H, W).")
        precip, interval_s, conversion, zr = field_to_mm_h(path, values, meta, self.zr_override)
        grid = _grid_from_metadata(path, meta, values.shape)
        product = self.product or meta.get("product") or _product_name(path, meta)
        return [
            Frame(
                time=self._time(path, meta),
                precip=precip,
                grid=grid,
                product=str(product),
                accumulation_interval_s=interval_s,
                conversion=conversion,
                source=path,
                zr=zr,
            )
        ]

    def _time(self, path: Path, meta: dict) -> np.datetime64:
        from_meta = time_from_metadata(path, meta)
        from_name: np.datetime64 | None
        if self.name_time is not None:
            from_name = self.name_time(path)
        elif from_meta is None:
            from_name = time_from_filename(path)
        else:
            match = _TIME_IN_NAME.search(path.name)
            from_name = time_from_filename(path) if match else None
        if from_meta is not None and from_name is not None and from_meta != from_name:
            raise ConversionError(
                path,
                f"the importer's metadata says {from_meta} but the file name says {from_name}; "
                "rename the file or fix importer.fn_pattern.",
            )
        found = from_meta if from_meta is not None else from_name
        assert found is not None  # no metadata time: from_name was read from the file name (or raised)
        return found

    def _explain_failure(self, path: Path, err: Exception) -> str:
        """One line: what pysteps complained about and, for a keyword problem, how to pass it."""
        what = f"{type(err).__name__}: {err}"
        example = _data_source_kwargs(self.pysteps_importer)
        keyword = _keyword_in_error(self._read, err, path, self.importer_kwargs, example)
        if keyword is None:
            return (
                f"pysteps importer {self.pysteps_importer} cannot read it ({what}); check "
                "importer.pysteps_importer and importer.importer_kwargs, or pass skip_bad=true."
            )
        given = self.importer_kwargs.get(keyword, "<not given>")
        hint = f" (pySTEPS' data source table uses {example} for {self.pysteps_importer})" if example else ""
        action = (
            f"remove importer.importer_kwargs.{keyword}"
            if "unexpected keyword" in str(err)
            else f"pass ++importer.importer_kwargs.{keyword}=VALUE"
        )
        return (
            f"pysteps importer {self.pysteps_importer} failed on keyword {keyword!r} (given: {given}; {what}); "
            f"{action}{hint}."
        )


def _keyword_in_error(read, err: Exception, path: Path, given: dict, table: dict | None) -> str | None:
    """The importer keyword an exception is about, or None when it is about something else.

    Python names a missing or unexpected keyword itself; otherwise the keyword is one of
    the importer's parameters (or of pySTEPS' table entry) that the message mentions, and
    a gzip-compressed file read without `gzipped` is recognised by its name.
    """
    text = str(err)
    if isinstance(err, TypeError):
        named = re.search(r"unexpected keyword argument '(\w+)'|missing \d+ required .*?arguments?: '(\w+)'", text)
        if named:
            return named.group(1) or named.group(2)
    try:
        params = [
            p.name
            for p in inspect.signature(inspect.unwrap(read)).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "filename"
        ]
    except (TypeError, ValueError):
        params = []
    known = set(params) | set(given) | set(table or {})
    if isinstance(err, KeyError):
        return err.args[0] if err.args and err.args[0] in known else None
    if isinstance(err, (TypeError, ValueError)):
        for name in sorted(known):
            if re.search(rf"\b{re.escape(name)}\b", text):
                return name
    if "gzipped" in known and not given.get("gzipped") and path.name.endswith(".gz"):
        return "gzipped"
    return None


def _data_source_kwargs(importer: str) -> dict | None:
    """The importer_kwargs pySTEPS' own data source table (pystepsrc) gives for `importer`."""
    try:
        from pysteps import rcparams

        for source in rcparams["data_sources"].values():
            if source.get("importer") == importer:
                return dict(source.get("importer_kwargs") or {})
    except Exception:  # a missing or odd pystepsrc only loses the hint
        return None
    return None


# ---------------------------------------------------------------------------- grid / product


def _axis_centres(first: float, last: float, n: int, pixelsize) -> np.ndarray:
    """Pixel-centre coordinates from pySTEPS' x1/x2 (or y1/y2).

    pySTEPS means the outer edges, but some importers (bom_rf3) give the outermost
    centres: their span is (n - 1) pixels instead of n. Both are recognised by `pixelsize`.
    """
    span = last - first
    step = span / n
    try:
        size = abs(float(pixelsize))
    except (TypeError, ValueError):
        size = 0.0
    if n > 1 and size > 0 and np.isclose(span, (n - 1) * size, rtol=1e-6) and not np.isclose(span, n * size, rtol=1e-6):
        return first + np.arange(n) * size
    return first + (np.arange(n) + 0.5) * step


def _grid_from_metadata(path: Path, meta: dict, shape: tuple[int, int]):
    try:
        x1, x2, y1, y2 = (float(meta[k]) for k in ("x1", "x2", "y1", "y2"))
        projection = str(meta["projection"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConversionError(
            path, f"pysteps metadata lacks the grid ({err}); this importer cannot give coordinates."
        ) from err
    nrows, ncols = shape
    unit = meta.get("cartesian_unit", "m")
    to_km = 1.0 if unit == "km" else 1e-3
    x = _axis_centres(x1, x2, ncols, meta.get("xpixelsize"))
    y = _axis_centres(y1, y2, nrows, meta.get("ypixelsize"))
    if meta.get("yorigin", "upper") == "upper":
        y = y[::-1]  # row 0 is the northern edge
    return make_grid(x * to_km, y * to_km, _projection_in_km(projection))


def _projection_in_km(projection: str) -> str:
    """The PROJ string with metre-sized axes and `+units=km`, so stored km x/y match it.

    KNMI's metadata gives the ellipsoid in km (+a=6378.137) to make PROJ output km;
    current PROJ refuses such a "non-Earth" body, so the axes go back to metres.
    """

    def metres(match: re.Match) -> str:
        value = float(match.group(2))
        return f"+{match.group(1)}={value * 1000 if value < 1e5 else value:.6f}"

    projection = re.sub(r"\+(a|b|R)=([0-9.eE+-]+)", metres, projection)
    return re.sub(r"\s*\+(units|to_meter)=\S+", "", projection).strip() + " +units=km"


def _product_name(path: Path, meta: dict) -> str:
    """The file name without its extension (and .gz) and its time stamp, e.g. RAD_NL25_RAP_5min."""
    stem = re.sub(r"\.(gz|bz2|xz|zip)$", "", path.name)
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    match = _TIME_IN_NAME.search(stem)
    if match:
        parts = (stem[: match.start()].rstrip("._-"), stem[match.end() :].lstrip("._-"))
        stem = "_".join(p for p in parts if p)
    return stem or str(meta.get("institution", "pysteps"))
