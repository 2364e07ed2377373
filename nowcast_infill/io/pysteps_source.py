"""Any composite pysteps can import (KNMI HDF5, ODIM, OPERA, BOM, FMI, MeteoSwiss, MRMS).

The importer is chosen by `pysteps_importer=<name>` and looked up with
`pysteps.io.get_method(name, "importer")`; its metadata (unit, transform, accutime,
projection, corner coordinates) decides how the field becomes mm/h.

How the field becomes mm/h is nowcast_infill/io/pysteps_units.py; how a file's time is
found, nowcast_infill/io/pysteps_time.py.
"""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import numpy as np

from nowcast_infill.io.importers import ConversionError, Frame, make_grid
from nowcast_infill.io.pysteps_time import (
    TIME_IN_NAME,
    FilenameTime,
    PystepsOptionError,
    time_from_filename,
    time_from_metadata,
)
from nowcast_infill.io.pysteps_units import field_to_mm_h

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
            match = TIME_IN_NAME.search(path.name)
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
    match = TIME_IN_NAME.search(stem)
    if match:
        parts = (stem[: match.start()].rstrip("._-"), stem[match.end() :].lstrip("._-"))
        stem = "_".join(p for p in parts if p)
    return stem or str(meta.get("institution", "pysteps"))
