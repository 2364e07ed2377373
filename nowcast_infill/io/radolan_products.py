"""What DWD's RADOLAN format description says about each product, shared by both RADOLAN importers.

Which products hold precipitation (depths over an interval or RVP6 reflectivity), their
nominal intervals, grid sizes and value units, and the projection of their grids; the
binary importer (nowcast_infill/io/radolan.py) checks headers against these tables, the
ASCII importer (nowcast_infill/io/radolan_ascii.py) the product in a file name.
"""

from __future__ import annotations

from pathlib import Path

from nowcast_infill.io.importers import ConversionError

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
INT_FIELD_IN_10_MIN = frozenset({"W1", "W2", "W3", "W4"})
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
TRAILER_AFTER_BY = frozenset({"W3", "W4"})
# RVP6 reflectivity: byte 0..255 -> -32.5..95 dBZ.
DEFAULT_DBZ_RANGE = (-32.5, 95.0)

_SUPPORTED_TEXT = ", ".join(sorted(ACCUMULATION_PRODUCTS) + sorted(REFLECTIVITY_PRODUCTS))


def check_precipitation_product(path: Path, product: str) -> None:
    """Refuse (ConversionError naming `path`) a product that is not a precipitation product known here."""
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
