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
import math
import re
import warnings
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from nowcast_infill.io.importers import (
    DBZ_TO_MM_H_DEFAULT_ZR,
    DEFAULT_RATE_RANGE_MM_H,
    ConversionError,
    Frame,
    GridInfo,
    accumulation_to_mm_h,
    check_physical_range,
    dbz_to_mm_h,
    describe_accumulation,
    make_grid,
    value_range,
)

# The RADOLAN polar-stereographic projection on a sphere, in km, as in the DWD
# format description (wradlib's default `get_radolan_coordinates` uses the same).
RADOLAN_PROJ4 = "+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +x_0=0 +y_0=0 +a=6370040 +b=6370040 +units=km +no_defs"

# Precipitation depths (mm over the interval): product -> nominal interval in seconds.
# Used when the header carries no interval and to cross-check the header.
ACCUMULATION_PRODUCTS: dict[str, int] = {
    "RW": 3600,
    "RH": 3600,
    "RB": 3600,
    "RL": 3600,
    "RU": 3600,
    "RY": 300,
    "RZ": 300,
    "YW": 300,
    "SF": 86400,
    "SH": 43200,
    "SQ": 21600,
    "W1": 7 * 86400,
    "W2": 14 * 86400,
    "W3": 21 * 86400,
    "W4": 30 * 86400,
    "EB": 3600,
    "EH": 3600,
    "EW": 3600,
    "EY": 300,
    "EZ": 300,
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
# Reflectivity composites are 5-minute scans; their INT field says 5.
REFLECTIVITY_INTERVAL_S = 300

# Grid sizes (rows, cols) of each product (DWD RADOLAN format description; wradlib's
# `get_radolan_coordinates` knows each): the national composite 900x900, the extended
# national grid 1100x900 (RADKLIM, YW, WX), the DE1200 grid 1200x1100 DWD has moved
# national products to, and the European composite 1500x1400.
_NATIONAL_GRIDS = frozenset({(900, 900), (1100, 900), (1200, 1100)})
_EXTENDED_GRIDS = frozenset({(1100, 900), (1200, 1100)})
_EUROPEAN_GRIDS = frozenset({(1500, 1400)})
DOCUMENTED_GRIDS: dict[str, frozenset[tuple[int, int]]] = {
    **{
        p: _NATIONAL_GRIDS
        for p in ("RW", "RH", "RB", "RL", "RU", "RY", "RZ", "RX", "SF", "SH", "SQ", "W1", "W2", "W3", "W4")
    },
    **{p: _EXTENDED_GRIDS for p in ("YW", "WX")},
    **{p: _EUROPEAN_GRIDS for p in ("EB", "EH", "EW", "EY", "EZ", "EX")},
}
# The value unit each product's PR field gives: depths in 0.1 mm or 0.01 mm steps,
# reflectivity in RVP6 units (PR E+00). Any other PR scales every pixel wrongly.
DOCUMENTED_PRECISION: dict[str, float] = {
    **{p: 0.1 for p in ("RW", "RH", "RB", "RL", "RU", "EB", "EH", "EW", "SF", "SH", "SQ", "W1", "W2", "W3", "W4")},
    **{p: 0.01 for p in ("RY", "RZ", "YW", "EY", "EZ")},
    **{p: 1.0 for p in REFLECTIVITY_PRODUCTS},
}
# DWD's W3 and W4 files (wradlib-data showcase, 2014) carry 6527 and 9656 bytes after
# the BY bytes their header announces; every other product ends exactly at BY.
_TRAILER_AFTER_BY = frozenset({"W3", "W4"})
# RVP6 reflectivity: byte 0..255 -> -32.5..95 dBZ.
DEFAULT_DBZ_RANGE = (-32.5, 95.0)

# DWD file names: raa01-rw_10000-1811220050-dwd---bin(.gz|.bz2), RADKLIM
# raa01-yw2017.002_10000-1708160055-dwd---bin: product, site (10000 = composite) and
# the header's time stamp as YYMMDDHHMM (UTC).
_DWD_NAME = re.compile(r"^raa\d\d-(?P<product>[a-z0-9]{2})[^_]*_\d{5}-(?P<stamp>\d{10})-dwd", re.IGNORECASE)

_SUPPORTED_TEXT = ", ".join(sorted(ACCUMULATION_PRODUCTS) + sorted(REFLECTIVITY_PRODUCTS))
_FIX = "re-download it or pass skip_bad=true"


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
    except Exception as err:  # wradlib raises ValueError, a damaged size may raise others
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


@dataclass(frozen=True)
class RadolanHeader:
    """The checked header of a RADOLAN binary composite (`check_radolan_header`).

    time: naive UTC end of the interval / scan time. interval_s: the product's interval
    (the header's INT, equal to the nominal one). body_offset: index of the first pixel
    byte (one past the 0x03 that ends the header). attrs: wradlib's parse of the text.
    """

    product: str
    time: datetime
    nrows: int
    ncols: int
    bytes_per_pixel: int
    interval_s: int
    body_offset: int
    attrs: dict


def check_radolan_header(path: Path, blob: bytes, allow_nonstandard_grid: bool = False) -> RadolanHeader:
    """Parse and cross-check the header of the decompressed RADOLAN file `blob` (named `path`).

    Reads only the header text, so a wrong product or a header that disagrees with the
    file is refused in milliseconds, before any pixel is decoded: product (precipitation
    only; the one in a DWD file name), BY against GP x bytes per pixel, the pixel bytes
    against the file's size (ending exactly at the end of the file), GP against the
    product's documented grid sizes, INT and PR against the product's, and the time
    against the one in a DWD file name. Raises ConversionError naming `path`.
    """
    if not blob:
        raise ConversionError(path, f"file is empty (0 bytes); {_FIX}.")
    if blob[:1] == b"n":  # 'ncols ...': how wradlib tells an ASCII grid
        raise ConversionError(path, "is a RADOLAN ASCII grid; convert it with source=radolan_ascii.")
    end = blob.find(b"\x03")
    if end < 0:
        raise ConversionError(
            path,
            "not a readable RADOLAN binary composite: no end of header (byte 0x03) found; "
            "check the file and source=, or pass skip_bad=true.",
        )
    try:
        text = blob[:end].decode("ascii")
    except UnicodeDecodeError as err:
        raise ConversionError(
            path,
            f"not a readable RADOLAN binary composite: the {end} bytes before the end of header "
            f"(byte 0x03) are not ASCII text ({err}); check the file and source=, or pass skip_bad=true.",
        ) from err
    product = text[:2]
    _refuse_product(path, product)  # first: a classification product is refused before anything else

    from wradlib.io.radolan import parse_dwd_composite_header

    try:
        attrs = parse_dwd_composite_header(text)
    except Exception as err:  # a damaged field: wradlib raises ValueError, IndexError, KeyError, ...
        raise ConversionError(
            path, f"RADOLAN header {text[:40]!r}... is unreadable ({type(err).__name__}: {err}); {_FIX}."
        ) from err
    absent = [
        token
        for token, key in (("BY", "datasize"), ("PR", "precision"), ("INT", "intervalseconds"), ("GP", None))
        if (key is None and token not in text) or (key is not None and key not in attrs)
    ]
    if absent:
        raise ConversionError(
            path, f"RADOLAN header lacks the field(s) {', '.join(absent)}; the header is corrupt; {_FIX}."
        )

    nrows, ncols = int(attrs["nrow"]), int(attrs["ncol"])
    bytes_per_pixel = 1 if product in REFLECTIVITY_PRODUCTS else 2
    pixel_bytes = nrows * ncols * bytes_per_pixel
    body_offset = end + 1
    announced = int(attrs["datasize"])  # BY (the whole file) minus the header and its 0x03
    if nrows <= 0 or ncols <= 0 or announced != pixel_bytes:
        raise ConversionError(
            path,
            f"header fields disagree: BY {announced + body_offset} leaves {announced} bytes of pixels after the "
            f"{body_offset}-byte header, GP {nrows}x{ncols} at {bytes_per_pixel} byte(s) per pixel needs {pixel_bytes}; "
            f"the header is corrupt; {_FIX}.",
        )
    held = len(blob) - body_offset
    if held < pixel_bytes:
        raise ConversionError(
            path,
            f"file is truncated: the header announces {pixel_bytes} bytes of pixels (GP {nrows}x{ncols}), "
            f"the file holds {held}; {_FIX}.",
        )
    if held > pixel_bytes and product not in _TRAILER_AFTER_BY:
        raise ConversionError(
            path,
            f"{held - pixel_bytes} bytes follow the last pixel the header announces (GP {nrows}x{ncols}, "
            f"BY {announced + body_offset}): the header's grid does not fit the file; {_FIX}.",
        )
    if not allow_nonstandard_grid and (nrows, ncols) not in DOCUMENTED_GRIDS[product]:
        sizes = " or ".join(f"{r}x{c}" for r, c in sorted(DOCUMENTED_GRIDS[product]))
        raise ConversionError(
            path,
            f"header grid GP {nrows}x{ncols} is not a size of product {product} ({sizes}); the header is "
            f"corrupt ({_FIX}), or pass importer.allow_nonstandard_grid=true for a composite of another size.",
        )

    interval_s = int(attrs["intervalseconds"]) * (10 if product in _INT_FIELD_IN_10_MIN else 1)
    nominal_s = ACCUMULATION_PRODUCTS.get(product, REFLECTIVITY_INTERVAL_S)
    if interval_s != nominal_s:
        raise ConversionError(
            path,
            f"header INT gives an interval of {interval_s} s, product {product} is defined over {nominal_s} s; "
            f"the header is corrupt (the rates would be off by a factor {nominal_s / max(interval_s, 1):g}); {_FIX}.",
        )
    precision = float(attrs["precision"])
    if not math.isclose(precision, DOCUMENTED_PRECISION[product], rel_tol=1e-9):
        raise ConversionError(
            path,
            f"header PR gives a value unit of {precision:g}, product {product} uses "
            f"{DOCUMENTED_PRECISION[product]:g}; the header is corrupt; {_FIX}.",
        )
    when = attrs.get("datetime")
    if not isinstance(when, datetime):
        raise ConversionError(path, f"header has no valid time stamp; the file is corrupt; {_FIX}.")
    when = when.replace(tzinfo=None)
    _check_dwd_name(path, product, when)
    return RadolanHeader(
        product=product,
        time=when,
        nrows=nrows,
        ncols=ncols,
        bytes_per_pixel=bytes_per_pixel,
        interval_s=interval_s,
        body_offset=body_offset,
        attrs=attrs,
    )


def time_from_dwd_name(name: str) -> datetime | None:
    """The UTC time stamp of a DWD file name (raa01-yw2017.002_10000-1708160055-dwd---bin), None for another name."""
    match = _DWD_NAME.match(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match["stamp"], "%y%m%d%H%M")
    except ValueError:
        return None


def _check_dwd_name(path: Path, product: str, when: datetime) -> None:
    """Refuse a header whose product or time differs from the DWD file name's (when it is one)."""
    match = _DWD_NAME.match(path.name)
    if match is None:  # a renamed file: its header is all there is
        return
    named_product = match["product"].upper()
    if named_product != product:
        raise ConversionError(
            path,
            f"header product {product} differs from the file name's {named_product}; the file was relabelled "
            f"or its header is corrupt; {_FIX}.",
        )
    try:
        named = datetime.strptime(match["stamp"], "%y%m%d%H%M")
    except ValueError as err:
        raise ConversionError(
            path,
            f"file name time stamp {match['stamp']} is not a valid YYMMDDHHMM ({err}); rename the file to "
            "DWD's pattern or to a name without one.",
        ) from err
    if named != when:
        raise ConversionError(
            path,
            f"header time {when:%Y-%m-%d %H:%M} UTC differs from the file name's {named:%Y-%m-%d %H:%M} UTC "
            f"({match['stamp']}); the header or the name is wrong; {_FIX}.",
        )


class RadolanImporter:
    """DWD RADOLAN binary composites (plain, .gz or .bz2) through `wradlib.io.read_radolan_composite`.

    The header is checked first (`check_radolan_header`); then wradlib decodes the
    pixels. Accumulations become mm/h by their interval; RX/EX/WX reflectivity becomes
    mm/h by Z = zr_a * R**zr_b. No-data and clutter-flagged pixels become NaN. A rate
    outside `rate_range_mm_h` (or a reflectivity outside `dbz_range`) refuses the file.
    `allow_nonstandard_grid`: accept a GP other than the product's documented sizes.
    """

    name = "radolan"

    def __init__(
        self,
        zr_a: float = DBZ_TO_MM_H_DEFAULT_ZR[0],
        zr_b: float = DBZ_TO_MM_H_DEFAULT_ZR[1],
        rate_range_mm_h: tuple[float, float] = DEFAULT_RATE_RANGE_MM_H,
        dbz_range: tuple[float, float] = DEFAULT_DBZ_RANGE,
        allow_nonstandard_grid: bool = False,
    ):
        if zr_a <= 0 or zr_b <= 0:
            raise ValueError(f"Z-R coefficients must be positive, got zr_a={zr_a}, zr_b={zr_b}")
        self.zr = (float(zr_a), float(zr_b))
        self.rate_range_mm_h = value_range(rate_range_mm_h, "importer.rate_range_mm_h")
        self.dbz_range = value_range(dbz_range, "importer.dbz_range")
        self.allow_nonstandard_grid = bool(allow_nonstandard_grid)

    def read_header(self, path: str | Path) -> RadolanHeader:
        """The checked header of `path`, without decoding the pixels."""
        path = Path(path)
        return check_radolan_header(path, _decompressed_bytes(path, _file_bytes(path)), self.allow_nonstandard_grid)

    def read(self, path: str | Path) -> list[Frame]:
        path = Path(path)
        return self.read_bytes(path, _file_bytes(path))

    def read_bytes(self, path: str | Path, raw: bytes) -> list[Frame]:
        """The frames of the file content `raw` (as stored: plain, .gz or .bz2 by `path`'s suffix).

        `path` names the content in messages and provenance; it need not exist (a member of
        a tar bundle is named `bundle!member`, nowcast_infill/io/bundles.py).
        """
        path = Path(path)
        # One read of the file, decompressed in a single C call: wradlib's own gzip
        # stream reads it in small pieces and a separate header read opens it twice.
        blob = _decompressed_bytes(path, raw)
        header = check_radolan_header(path, blob, self.allow_nonstandard_grid)
        values = _decode_pixels(path, blob, header)
        product = header.product
        if product in REFLECTIVITY_PRODUCTS:
            dbz = values / 2.0 - 32.5
            check_physical_range(path, dbz, self.dbz_range, "reflectivity (dBZ)", "importer.dbz_range")
            precip = dbz_to_mm_h(dbz, *self.zr)
            interval_s = 0
            conversion = f"Z={self.zr[0]:g}*R^{self.zr[1]:g} from dBZ (dBZ = RVP6/2 - 32.5)"
            zr = self.zr
        else:
            interval_s = header.interval_s
            precip = accumulation_to_mm_h(values, interval_s)
            conversion = describe_accumulation(interval_s)
            zr = None
        check_physical_range(
            path, precip, self.rate_range_mm_h, f"rain rate (mm/h; {conversion})", "importer.rate_range_mm_h"
        )
        return [
            Frame(
                time=np.datetime64(header.time, "ns"),
                precip=precip,
                grid=radolan_grid(header.nrows, header.ncols, path),
                product=product,
                accumulation_interval_s=interval_s,
                conversion=conversion,
                source=path,
                zr=zr,
                radar_sites=[str(s) for s in header.attrs.get("radarlocations", [])],
            )
        ]


def _decode_pixels(path: Path, blob: bytes, header: RadolanHeader) -> np.ndarray:
    """(nrows, ncols) float64 values in the product's unit (NaN = no-data or clutter), by wradlib.

    `check_radolan_header` has bounded what wradlib reads (exactly the pixel bytes, no
    run-length decoding), so a damaged file cannot keep it busy; whatever it still
    raises becomes a ConversionError naming the file.
    """
    import wradlib

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw, attrs = wradlib.io.read_radolan_composite(io.BytesIO(blob), missing=np.nan)
        values = np.asarray(raw, dtype=np.float64)  # wradlib returns float64: no copy
        clutter = np.asarray(attrs.get("cluttermask", []), dtype=np.int64)
    except Exception as err:
        raise ConversionError(path, _describe_read_error(err, "pixel data")) from err
    if values.shape != (header.nrows, header.ncols):
        raise ConversionError(
            path,
            f"pixel array {values.shape} does not match header {header.nrows}x{header.ncols}; the file is corrupt; {_FIX}.",
        )
    if clutter.size:
        # wradlib strips the clutter bit and keeps the value; a clutter echo is not rain.
        values.reshape(-1)[clutter] = np.nan
    return values


def _file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConversionError(
            path, f"cannot read the file ({type(err).__name__}: {err}); check the path and its permissions."
        ) from err


def _decompressed_bytes(path: Path, blob: bytes) -> bytes:
    """The content of the plain, .gz or .bz2 RADOLAN file `blob` named `path` (compression chosen by suffix, as wradlib does)."""
    if not blob:
        raise ConversionError(path, f"file is empty (0 bytes); {_FIX}.")
    try:
        if path.suffix == ".gz":
            # zlib checks the gzip trailer's CRC in C; gzip.decompress computes it again in a
            # second pass. Files of several gzip members (rare) take the general path.
            inflater = zlib.decompressobj(wbits=31)
            data = inflater.decompress(blob)
            return data if inflater.eof and not inflater.unused_data else gzip.decompress(blob)
        if path.suffix == ".bz2":
            return bz2.decompress(blob)
    except Exception as err:  # zlib.error, EOFError, OSError (BadGzipFile), ValueError
        raise ConversionError(
            path,
            f"not a readable RADOLAN binary composite: its {path.suffix} compression is damaged or cut short "
            f"({type(err).__name__}: {err}); {_FIX}.",
        ) from err
    return blob


def _describe_read_error(err: Exception, what: str) -> str:
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, EOFError) or "EOF" in str(err):
        return f"file is empty or ends inside the RADOLAN {what} ({text}); {_FIX}."
    if isinstance(err, OSError) and ("not enough data" in str(err).lower() or "corrupt" in str(err).lower()):
        return f"file is truncated: fewer pixels than the header announces ({text}); {_FIX}."
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
