"""Any composite pysteps can import (KNMI HDF5, ODIM, OPERA, BOM, FMI, MeteoSwiss, MRMS).

The importer is chosen by `pysteps_importer=<name>` and looked up with
`pysteps.io.get_method(name, "importer")`; its metadata (unit, accutime, transform,
projection, corner coordinates) decides how the field becomes mm/h.
"""

from __future__ import annotations

import re
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np

from nowcast_infill.io.importers import (
    DBZ_TO_MM_H_DEFAULT_ZR,
    ConversionError,
    Frame,
    accumulation_to_mm_h,
    dbz_to_mm_h,
    describe_accumulation,
    make_grid,
)

# pysteps importers do not return the time; their file names carry it.
_TIME_IN_NAME = re.compile(r"(?<!\d)(\d{12})(?!\d)|(?<!\d)(\d{8})[_T-]?(\d{4})(?!\d)")


def time_from_filename(path: Path) -> np.datetime64:
    """UTC time stamp YYYYMMDDHHMM (optionally YYYYMMDD_HHMM) found in the file name."""
    match = _TIME_IN_NAME.search(path.name)
    if not match:
        raise ConversionError(
            path,
            "no time stamp YYYYMMDDHHMM in the file name (pysteps importers do not return one); "
            "rename the file to include it, as the archives pysteps reads do.",
        )
    digits = match.group(1) or (match.group(2) + match.group(3))
    try:
        return np.datetime64(datetime.strptime(digits, "%Y%m%d%H%M"), "ns")
    except ValueError as err:
        raise ConversionError(path, f"time stamp {digits} in the file name is not a valid date ({err}).") from err


class PystepsImporter:
    """Reads one file with `pysteps.io.get_method(pysteps_importer, "importer")`.

    Options: `pysteps_importer` (e.g. knmi_hdf5, odim_hdf5, opera_hdf5, bom_rf3, fmi_pgm,
    mch_gif, mrms_grib), `importer_kwargs` passed to it, `zr_a`/`zr_b` for dBZ fields
    (default: the file's own metadata, else Marshall-Palmer).
    """

    name = "pysteps"

    def __init__(
        self,
        pysteps_importer: str = "knmi_hdf5",
        importer_kwargs: dict | None = None,
        zr_a: float | None = None,
        zr_b: float | None = None,
        product: str | None = None,
    ):
        import pysteps.io

        try:
            self._read = pysteps.io.get_method(pysteps_importer, "importer")
        except ValueError as err:
            raise ValueError(f"pysteps_importer={pysteps_importer!r}: {err}") from err
        self.pysteps_importer = pysteps_importer
        self.importer_kwargs = dict(importer_kwargs or {})
        self.zr_override = (zr_a, zr_b)
        self.product = product

    def read(self, path: str | Path) -> list[Frame]:
        path = Path(path)
        if not path.is_file() or path.stat().st_size == 0:
            raise ConversionError(path, "file is missing or empty; re-download it or pass skip_bad=true.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                field, _quality, meta = self._read(str(path), **self.importer_kwargs)
        except Exception as err:
            raise ConversionError(
                path,
                f"pysteps importer {self.pysteps_importer} cannot read it ({type(err).__name__}: {err}); "
                "check pysteps_importer= or pass skip_bad=true.",
            ) from err

        values = np.array(field, dtype=np.float64)
        if values.ndim != 2:
            raise ConversionError(path, f"pysteps returned a field of shape {values.shape}, expected 2-D (H, W).")
        values = _undo_transform(path, values, meta.get("transform"))
        unit = str(meta.get("unit", "")).strip()
        accutime_min = float(meta.get("accutime") or 0)
        zr = None
        if unit == "mm":
            if accutime_min <= 0:
                raise ConversionError(path, "unit is mm but metadata has no accutime; pass importer_kwargs={accutime: MINUTES}.")
            interval_s = int(round(accutime_min * 60))
            precip = accumulation_to_mm_h(values, interval_s)
            conversion = describe_accumulation(interval_s)
        elif unit == "mm/h":
            interval_s = int(round(accutime_min * 60))
            precip = values.astype(np.float32)
            conversion = "mm/h as read"
        elif unit == "dBZ":
            a = self.zr_override[0] or float(meta.get("zr_a") or DBZ_TO_MM_H_DEFAULT_ZR[0])
            b = self.zr_override[1] or float(meta.get("zr_b") or DBZ_TO_MM_H_DEFAULT_ZR[1])
            zr = (a, b)
            interval_s = 0
            precip = dbz_to_mm_h(values, a, b)
            conversion = f"Z={a:g}*R^{b:g} from dBZ"
        else:
            raise ConversionError(path, f"metadata unit {unit!r} is not mm, mm/h or dBZ; this field is not precipitation.")

        grid = _grid_from_metadata(path, meta, values.shape)
        product = self.product or _product_name(path, meta)
        return [
            Frame(
                time=time_from_filename(path),
                precip=precip,
                grid=grid,
                product=product,
                accumulation_interval_s=interval_s,
                conversion=conversion,
                source=path,
                zr=zr,
            )
        ]


def _undo_transform(path: Path, values: np.ndarray, transform) -> np.ndarray:
    if transform in (None, "None"):
        return values
    if transform == "dB":
        return np.power(10.0, values / 10.0)
    if transform == "log":
        return np.exp(values)
    raise ConversionError(path, f"field is {transform}-transformed; only none, dB and log transforms can be undone.")


def _grid_from_metadata(path: Path, meta: dict, shape: tuple[int, int]):
    try:
        x1, x2, y1, y2 = (float(meta[k]) for k in ("x1", "x2", "y1", "y2"))
        projection = str(meta["projection"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConversionError(path, f"pysteps metadata lacks the grid ({err}); this importer cannot give coordinates.") from err
    nrows, ncols = shape
    dx, dy = (x2 - x1) / ncols, (y2 - y1) / nrows
    unit = meta.get("cartesian_unit", "m")
    to_km = 1.0 if unit == "km" else 1e-3
    x = x1 + (np.arange(ncols) + 0.5) * dx
    y = y1 + (np.arange(nrows) + 0.5) * dy
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
    stem = path.name.split(".")[0]
    stem = _TIME_IN_NAME.sub("", stem).strip("_-")
    return stem or str(meta.get("institution", "pysteps"))
