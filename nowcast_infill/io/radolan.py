"""DWD RADOLAN composites: the binary format (read by wradlib) and DWD's ESRI ASCII grids.

Both importers store rows south to north (row 0 = southern edge, `y` increasing),
which is the order wradlib returns binary composites in; ASCII grids, written north
to south, are flipped on reading so that a binary and an ASCII file of the same
product land in a store with identical orientation and coordinates.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import re
import warnings
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np

from nowcast_infill.io.importers import (
    DBZ_TO_MM_H_DEFAULT_ZR,
    ConversionError,
    Frame,
    GridInfo,
    accumulation_to_mm_h,
    dbz_to_mm_h,
    describe_accumulation,
    make_grid,
)

# The RADOLAN polar-stereographic projection on a sphere, in km, as in the DWD
# format description (wradlib's default `get_radolan_coordinates` uses the same).
RADOLAN_PROJ4 = "+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +x_0=0 +y_0=0 +a=6370040 +b=6370040 +units=km +no_defs"

# Precipitation depths (mm over the interval): product -> nominal interval in seconds.
# Used when the header carries no interval and to cross-check the header.
ACCUMULATION_PRODUCTS: dict[str, int] = {
    "RW": 3600, "RH": 3600, "RB": 3600, "RL": 3600, "RU": 3600,
    "RY": 300, "RZ": 300, "YW": 300,
    "SF": 86400, "SH": 43200, "SQ": 21600,
    "W1": 7 * 86400, "W2": 14 * 86400, "W3": 21 * 86400, "W4": 30 * 86400,
    "EB": 3600, "EH": 3600, "EW": 3600, "EY": 300, "EZ": 300,
}
# One byte per pixel in RVP6 units: dBZ = value / 2 - 32.5 (instantaneous).
REFLECTIVITY_PRODUCTS = frozenset({"RX", "EX", "WX"})
# Products that carry something other than precipitation.
NON_PRECIPITATION_PRODUCTS = {
    "PG": "a precipitation-type/cloud classification (run-length coded), not a precipitation amount",
    "PC": "a precipitation-type/cloud classification (run-length coded), not a precipitation amount",
    "PZ": "a hail/convection classification product, not a precipitation amount",
    "RD": "a difference product (may be negative), not a precipitation amount",
}
# The W products write the 4-character INT field in units of 10 minutes (INT1008 =
# 7 days); wradlib reads it as minutes, so its `intervalseconds` is 10x too small.
_INT_FIELD_IN_10_MIN = frozenset({"W1", "W2", "W3", "W4"})

_SUPPORTED_TEXT = ", ".join(sorted(ACCUMULATION_PRODUCTS) + sorted(REFLECTIVITY_PRODUCTS))


def _refuse_product(path: Path, product: str) -> None:
    if product in NON_PRECIPITATION_PRODUCTS:
        raise ConversionError(
            path,
            f"RADOLAN product {product} is {NON_PRECIPITATION_PRODUCTS[product]}; "
            f"remove it from the inputs (precipitation products: {_SUPPORTED_TEXT}).",
        )
    if product not in ACCUMULATION_PRODUCTS and product not in REFLECTIVITY_PRODUCTS:
        raise ConversionError(
            path,
            f"RADOLAN product {product!r} is not a precipitation product known to nowcast_infill; "
            f"use one of {_SUPPORTED_TEXT}, or remove the file from the inputs.",
        )


def radolan_grid(nrows: int, ncols: int, path: Path | None = None) -> GridInfo:
    """GridInfo of a RADOLAN composite of `nrows` x `ncols` pixels (900x900, 1100x900, 1500x1400, ...).

    x, y are pixel centres in km, row 0 = southern edge.
    """
    try:
        return _radolan_grid_cached(int(nrows), int(ncols))
    except ValueError as err:
        raise ConversionError(
            path or Path("<radolan>"),
            f"{nrows}x{ncols} is not a RADOLAN grid size wradlib knows ({err}); the file is "
            "probably not a DWD composite.",
        ) from err


@functools.lru_cache(maxsize=8)
def _radolan_grid_cached(nrows: int, ncols: int) -> GridInfo:
    # wradlib builds a pyproj transformer on every call (~50 ms): once per grid size is enough.
    import wradlib

    x, y = wradlib.georef.get_radolan_coordinates(nrows, ncols, mode="center")
    return make_grid(np.asarray(x), np.asarray(y), RADOLAN_PROJ4)


class RadolanImporter:
    """DWD RADOLAN binary composites (plain, .gz or .bz2) through `wradlib.io.read_radolan_composite`.

    Accumulations become mm/h by their interval; RX/EX/WX reflectivity becomes mm/h
    by Z = zr_a * R**zr_b. No-data and clutter-flagged pixels become NaN.
    """

    name = "radolan"

    def __init__(self, zr_a: float = DBZ_TO_MM_H_DEFAULT_ZR[0], zr_b: float = DBZ_TO_MM_H_DEFAULT_ZR[1]):
        if zr_a <= 0 or zr_b <= 0:
            raise ValueError(f"Z-R coefficients must be positive, got zr_a={zr_a}, zr_b={zr_b}")
        self.zr = (float(zr_a), float(zr_b))

    def read_header(self, path: str | Path) -> dict:
        """The parsed RADOLAN header of `path` (wradlib), without reading the pixels."""
        import wradlib

        path = Path(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, attrs = wradlib.io.read_radolan_composite(str(path), missing=np.nan, loaddata=False)
        except Exception as err:
            if path.is_file() and path.stat().st_size == 0:
                raise ConversionError(path, "file is empty (0 bytes); re-download it or pass skip_bad=true.") from err
            if isinstance(err, EOFError):
                raise ConversionError(
                    path,
                    "not a readable RADOLAN binary composite: no end of header (byte 0x03) found "
                    f"({type(err).__name__}: {err}); check the file and source=, or pass skip_bad=true.",
                ) from err
            raise ConversionError(path, _describe_read_error(err, "header")) from err
        if attrs.get("producttype") == "ascii":
            raise ConversionError(path, "is a RADOLAN ASCII grid; convert it with source=radolan_ascii.")
        return attrs

    def read(self, path: str | Path) -> list[Frame]:
        import wradlib

        path = Path(path)
        try:
            # One read of the file, decompressed in a single C call: wradlib's own gzip
            # stream reads it in small pieces and a separate header read opens it twice.
            blob = _decompressed_bytes(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw, attrs = wradlib.io.read_radolan_composite(io.BytesIO(blob), missing=np.nan)
        except Exception as err:
            # Name the fault precisely: the header read says empty / no header / ASCII,
            # and a readable header of a non-precipitation product is refused as such.
            header = self.read_header(path)
            _refuse_product(path, str(header.get("producttype", "")).strip())
            raise ConversionError(path, _describe_read_error(err, "pixel data")) from err
        if attrs.get("producttype") == "ascii":
            raise ConversionError(path, "is a RADOLAN ASCII grid; convert it with source=radolan_ascii.")
        product = str(attrs.get("producttype", "")).strip()
        _refuse_product(path, product)

        values = np.asarray(raw, dtype=np.float64)  # wradlib returns float64: no copy
        clutter = np.asarray(attrs.get("cluttermask", []), dtype=np.int64)
        if clutter.size:
            # wradlib strips the clutter bit and keeps the value; a clutter echo is not rain.
            values.reshape(-1)[clutter] = np.nan

        if product in REFLECTIVITY_PRODUCTS:
            dbz = values / 2.0 - 32.5
            precip = dbz_to_mm_h(dbz, *self.zr)
            interval_s = 0
            conversion = f"Z={self.zr[0]:g}*R^{self.zr[1]:g} from dBZ (dBZ = RVP6/2 - 32.5)"
            zr = self.zr
        else:
            interval_s = _accumulation_interval_s(path, product, attrs)
            precip = accumulation_to_mm_h(values, interval_s)
            conversion = describe_accumulation(interval_s)
            zr = None

        nrows, ncols = int(attrs["nrow"]), int(attrs["ncol"])
        if precip.shape != (nrows, ncols):
            raise ConversionError(path, f"pixel array {precip.shape} does not match header {nrows}x{ncols}; the file is corrupt.")
        when = attrs.get("datetime")
        if not isinstance(when, datetime):
            raise ConversionError(path, "header has no valid time stamp; the file is corrupt.")
        return [
            Frame(
                time=np.datetime64(when.replace(tzinfo=None), "ns"),
                precip=precip,
                grid=radolan_grid(nrows, ncols, path),
                product=product,
                accumulation_interval_s=interval_s,
                conversion=conversion,
                source=path,
                zr=zr,
                radar_sites=[str(s) for s in attrs.get("radarlocations", [])],
            )
        ]


def _decompressed_bytes(path: Path) -> bytes:
    """The bytes of a plain, .gz or .bz2 RADOLAN file (chosen by suffix, as wradlib does)."""
    blob = path.read_bytes()
    if path.suffix == ".gz":
        # zlib checks the gzip trailer's CRC in C; gzip.decompress computes it again in a
        # second pass. Files of several gzip members (rare) take the general path.
        inflater = zlib.decompressobj(wbits=31)
        data = inflater.decompress(blob)
        return data if inflater.eof and not inflater.unused_data else gzip.decompress(blob)
    if path.suffix == ".bz2":
        return bz2.decompress(blob)
    return blob


def _accumulation_interval_s(path: Path, product: str, attrs: dict) -> int:
    nominal = ACCUMULATION_PRODUCTS[product]
    header_s = attrs.get("intervalseconds")
    if header_s is None:
        return nominal
    header_s = int(header_s) * (10 if product in _INT_FIELD_IN_10_MIN else 1)
    if header_s <= 0:
        raise ConversionError(path, f"header interval {header_s} s is not positive; the file is corrupt.")
    return header_s


def _describe_read_error(err: Exception, what: str) -> str:
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, EOFError) or "EOF" in str(err):
        return f"file is empty or ends inside the RADOLAN {what} ({text}); re-download it or pass skip_bad=true."
    if isinstance(err, OSError) and ("not enough data" in str(err).lower() or "corrupt" in str(err).lower()):
        return f"file is truncated: fewer pixels than the header announces ({text}); re-download it or pass skip_bad=true."
    return f"not a readable RADOLAN binary composite ({text}); check the file and source=, or pass skip_bad=true."


# ------------------------------------------------------------------ ASCII grids

_ASCII_NAME = re.compile(r"(?P<product>[A-Za-z0-9]{2})[_-](?P<date>\d{8})-(?P<hhmm>\d{4})(?:\.asc)?$")
_ASCII_KEYS = ("ncols", "nrows", "xllcorner", "yllcorner", "cellsize", "nodata_value")


class RadolanAsciiImporter:
    """DWD RADOLAN ESRI ASCII grids, e.g. `RW_20221018-0050.asc`.

    Header `ncols / nrows / xllcorner / yllcorner / cellsize / NODATA_value` (corner and
    cell size in metres), then `nrows` lines of integers in units of `precision_mm`
    (0.1 mm), north to south. Time stamp (UTC, end of interval) and product come from
    the file name. Rows are flipped to south-to-north to match `RadolanImporter`.
    """

    name = "radolan_ascii"

    def __init__(self, precision_mm: float = 0.1):
        if precision_mm <= 0:
            raise ValueError(f"precision_mm must be positive, got {precision_mm}")
        self.precision_mm = float(precision_mm)

    def read(self, path: str | Path) -> list[Frame]:
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
            _refuse_product(path, product)
            raise ConversionError(
                path,
                f"RADOLAN ASCII grids hold precipitation depths; product {product} is reflectivity. "
                "Convert its binary file with source=radolan.",
            )
        try:
            when = datetime.strptime(match["date"] + match["hhmm"], "%Y%m%d%H%M")
        except ValueError as err:
            raise ConversionError(path, f"invalid time stamp in the file name ({err}); use YYYYMMDD-HHMM.") from err

        header, values = _read_esri_ascii(path)
        nodata = header["nodata_value"]
        ncols, nrows, cell_m = int(header["ncols"]), int(header["nrows"]), header["cellsize"]
        missing = values == nodata
        if np.any((values < 0) & ~missing):
            raise ConversionError(
                path, f"negative values other than NODATA_value {nodata:g}; not a precipitation depth grid."
            )
        depth_mm = np.where(missing, np.nan, values * self.precision_mm)[::-1]  # north->south to south->north
        interval_s = ACCUMULATION_PRODUCTS[product]
        x_km = (header["xllcorner"] + (np.arange(ncols) + 0.5) * cell_m) / 1000.0
        y_km = (header["yllcorner"] + (np.arange(nrows) + 0.5) * cell_m) / 1000.0
        return [
            Frame(
                time=np.datetime64(when, "ns"),
                precip=accumulation_to_mm_h(depth_mm, interval_s),
                grid=make_grid(x_km, y_km, RADOLAN_PROJ4),
                product=product,
                accumulation_interval_s=interval_s,
                conversion=describe_accumulation(interval_s) + f" (ASCII integers * {self.precision_mm:g} mm)",
                source=path,
            )
        ]


def _read_esri_ascii(path: Path) -> tuple[dict[str, float], np.ndarray]:
    """Header dict (lower-case keys) and (nrows, ncols) float64 values as written (north first)."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as err:
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
