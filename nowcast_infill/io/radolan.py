"""DWD RADOLAN binary composites (plain, .gz or .bz2): the header check and the importer (pixels by wradlib).

Rows are stored south to north (row 0 = southern edge, `y` increasing), the order
wradlib returns binary composites in; the product tables this module checks headers
against are nowcast_infill/io/radolan_products.py, DWD's ASCII grids are read by
nowcast_infill/io/radolan_ascii.py.
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
from nowcast_infill.io.radolan_products import (
    ACCUMULATION_PRODUCTS,
    DEFAULT_DBZ_RANGE,
    DOCUMENTED_GRIDS,
    DOCUMENTED_PRECISION,
    INT_FIELD_IN_10_MIN,
    RADOLAN_PROJ4,
    REFLECTIVITY_INTERVAL_S,
    REFLECTIVITY_PRODUCTS,
    TRAILER_AFTER_BY,
    check_precipitation_product,
)

# DWD file names: raa01-rw_10000-1811220050-dwd---bin(.gz|.bz2), RADKLIM
# raa01-yw2017.002_10000-1708160055-dwd---bin: product, site (10000 = composite) and
# the header's time stamp as YYMMDDHHMM (UTC).
_DWD_NAME = re.compile(r"^raa\d\d-(?P<product>[a-z0-9]{2})[^_]*_\d{5}-(?P<stamp>\d{10})-dwd", re.IGNORECASE)

_FIX = "re-download it or pass skip_bad=true"


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
    check_precipitation_product(path, product)  # first: a classification product is refused before anything else

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
    if held > pixel_bytes and product not in TRAILER_AFTER_BY:
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

    interval_s = int(attrs["intervalseconds"]) * (10 if product in INT_FIELD_IN_10_MIN else 1)
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
