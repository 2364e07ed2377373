"""DWD RADOLAN ESRI ASCII grids (`RW_20221018-0050.asc`): precipitation depths written as text.

Rows are written north to south and flipped on reading to the south-to-north order of
the binary importer (nowcast_infill/io/radolan.py), so that a binary and an ASCII file of
the same product land in a store with identical orientation and coordinates.
"""

from __future__ import annotations

import re
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np

from nowcast_infill.io.importers import (
    DEFAULT_RATE_RANGE_MM_H,
    ConversionError,
    Frame,
    accumulation_to_mm_h,
    check_physical_range,
    describe_accumulation,
    make_grid,
    value_range,
)
from nowcast_infill.io.radolan_products import ACCUMULATION_PRODUCTS, RADOLAN_PROJ4, check_precipitation_product

_ASCII_NAME = re.compile(r"(?P<product>[A-Za-z0-9]{2})[_-](?P<date>\d{8})-(?P<hhmm>\d{4})(?:\.asc)?$")
_ASCII_KEYS = ("ncols", "nrows", "xllcorner", "yllcorner", "cellsize", "nodata_value")


class RadolanAsciiImporter:
    """DWD RADOLAN ESRI ASCII grids, e.g. `RW_20221018-0050.asc`.

    Header `ncols / nrows / xllcorner / yllcorner / cellsize / NODATA_value` (corner and
    cell size in metres), then `nrows` lines of integers in units of `precision_mm`
    (0.1 mm), north to south. Time stamp (UTC, end of interval) and product come from
    the file name. Rows are flipped to south-to-north to match `RadolanImporter`.
    A rate outside `rate_range_mm_h` refuses the file.
    """

    name = "radolan_ascii"

    def __init__(self, precision_mm: float = 0.1, rate_range_mm_h: tuple[float, float] = DEFAULT_RATE_RANGE_MM_H):
        if precision_mm <= 0:
            raise ValueError(f"precision_mm must be positive, got {precision_mm}")
        self.precision_mm = float(precision_mm)
        self.rate_range_mm_h = value_range(rate_range_mm_h, "importer.rate_range_mm_h")

    def read(self, path: str | Path) -> list[Frame]:
        return self.read_bytes(path, None)

    def read_bytes(self, path: str | Path, raw: bytes | None) -> list[Frame]:
        """The frames of the file content `raw` (as stored: plain or .gz), named `path`; None: read `path`."""
        path = Path(path)
        match = _ASCII_NAME.search(path.name.removesuffix(".gz"))
        if not match:
            raise ConversionError(
                path,
                "file name carries no product and time stamp; name it like RW_20221018-0050.asc "
                "(PRODUCT_YYYYMMDD-HHMM, UTC).",
            )
        product = match["product"].upper()
        if product not in ACCUMULATION_PRODUCTS:
            check_precipitation_product(path, product)
            raise ConversionError(
                path,
                f"RADOLAN ASCII grids hold precipitation depths; product {product} is reflectivity. "
                "Convert its binary file with source=radolan.",
            )
        try:
            when = datetime.strptime(match["date"] + match["hhmm"], "%Y%m%d%H%M")
        except ValueError as err:
            raise ConversionError(path, f"invalid time stamp in the file name ({err}); use YYYYMMDD-HHMM.") from err

        header, values = _read_esri_ascii(path, raw)
        nodata = header["nodata_value"]
        ncols, nrows, cell_m = int(header["ncols"]), int(header["nrows"]), header["cellsize"]
        missing = values == nodata
        if np.any((values < 0) & ~missing):
            raise ConversionError(
                path, f"negative values other than NODATA_value {nodata:g}; not a precipitation depth grid."
            )
        depth_mm = np.where(missing, np.nan, values * self.precision_mm)[::-1]  # north->south to south->north
        interval_s = ACCUMULATION_PRODUCTS[product]
        precip = accumulation_to_mm_h(depth_mm, interval_s)
        conversion = describe_accumulation(interval_s) + f" (ASCII integers * {self.precision_mm:g} mm)"
        check_physical_range(
            path, precip, self.rate_range_mm_h, f"rain rate (mm/h; {conversion})", "importer.rate_range_mm_h"
        )
        x_km = (header["xllcorner"] + (np.arange(ncols) + 0.5) * cell_m) / 1000.0
        y_km = (header["yllcorner"] + (np.arange(nrows) + 0.5) * cell_m) / 1000.0
        return [
            Frame(
                time=np.datetime64(when, "ns"),
                precip=precip,
                grid=make_grid(x_km, y_km, RADOLAN_PROJ4),
                product=product,
                accumulation_interval_s=interval_s,
                conversion=conversion,
                source=path,
            )
        ]


def _read_esri_ascii(path: Path, raw: bytes | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Header dict (lower-case keys) and (nrows, ncols) float64 values as written (north first).

    raw: the file's bytes as stored (plain or .gz by `path`'s suffix); None: read `path`.
    """
    import gzip

    try:
        if raw is None:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="ascii") as fh:
                lines = fh.read().splitlines()
        else:
            lines = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("ascii").splitlines()
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as err:
        raise ConversionError(path, f"not a readable text file ({type(err).__name__}: {err}); re-download it.") from err
    if not lines:
        raise ConversionError(path, "file is empty; re-download it or pass skip_bad=true.")
    header: dict[str, float] = {}
    for line_no, line in enumerate(lines[:6], start=1):
        parts = line.split()
        if len(parts) != 2 or parts[0].lower() not in _ASCII_KEYS:
            raise ConversionError(
                path,
                f"line {line_no} {line[:60]!r} is not an ESRI ASCII header line; expected the six keys "
                f"{', '.join(_ASCII_KEYS)} (case-insensitive).",
            )
        try:
            header[parts[0].lower()] = float(parts[1])
        except ValueError as err:
            raise ConversionError(path, f"header {parts[0]} value {parts[1]!r} is not a number.") from err
    absent = [k for k in _ASCII_KEYS if k not in header]
    if absent:
        raise ConversionError(path, f"header lacks {', '.join(absent)}; an ESRI ASCII grid has all six keys.")
    ncols, nrows = int(header["ncols"]), int(header["nrows"])
    rows = [line for line in lines[6:] if line.strip()]
    if len(rows) != nrows:
        raise ConversionError(
            path, f"header announces nrows={nrows} but {len(rows)} data rows follow; the file is truncated or corrupt."
        )
    try:
        values = np.array([np.array(r.split(), dtype=np.float64) for r in rows], dtype=object)
        widths = {v.size for v in values}
        if widths != {ncols}:
            raise ConversionError(
                path, f"rows hold {sorted(widths)} values, header announces ncols={ncols}; the file is corrupt."
            )
        grid = np.stack(list(values))
    except ValueError as err:
        raise ConversionError(path, f"non-numeric pixel value ({err}); the file is corrupt.") from err
    return header, grid
