"""Radar sources: every importer reads its files into the same `Frame` record.

Importers are registered with the package registry as the kind `source`:
`nowcast_infill.registry.get_method("source", name, **options)` builds one. The store
writer and `convert()` only ever see `Frame` objects, whatever the file format was.

Adding a radar source: one importer module (a class with `name` and `read(path) ->
list[Frame]`, see `Importer`), one `register("source", ...)` line below (or an entry
point in the group `nowcast_infill.source` of another package), and one yaml with its
options (docs/architecture.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from nowcast_infill.errors import UserError
from nowcast_infill.registry import register
from nowcast_infill.schema import MAX_RAIN_RATE_MM_H


class ConversionError(UserError):
    """A source file cannot be converted.

    `str(err)` starts with the file path and ends with what to do about it, so a
    log line or a CLI message is enough to find and fix the file.
    """

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True, eq=False)
class GridInfo:
    """Geometry of one source grid.

    x: (W,) float64 km, projection x of pixel centres, in stored column order.
    y: (H,) float64 km, projection y of pixel centres, in stored row order.
    lat, lon: (H, W) float32 degrees WGS84 of pixel centres.
    proj4: PROJ string of the projection `x`/`y` are expressed in (units km).
    grid_mapping_name: CF grid-mapping name, e.g. "polar_stereographic".
    """

    x: np.ndarray
    y: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    proj4: str
    grid_mapping_name: str
    crs_wkt: str | None = None

    def __reduce__(self):
        # Frames travel from reader processes to the writer: send the 1-D coordinates
        # and rebuild lat/lon from the per-process cache instead of pickling 2 x (H, W).
        return (make_grid, (np.asarray(self.x), np.asarray(self.y), self.proj4))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y.size, self.x.size)

    def same_as(self, x: np.ndarray, y: np.ndarray, proj4: str, atol_km: float = 1e-3) -> bool:
        """True when `x`, `y` (km) and `proj4` describe this grid (to `atol_km`)."""
        return (
            x.shape == self.x.shape
            and y.shape == self.y.shape
            and np.allclose(x, self.x, atol=atol_km, rtol=0)
            and np.allclose(y, self.y, atol=atol_km, rtol=0)
            and " ".join(proj4.split()) == " ".join(self.proj4.split())
        )


@dataclass(eq=False)
class Frame:
    """One time step of precipitation from one source file.

    precip: (H, W) float32 mm/h, NaN = no data (outside coverage, clutter, no-data flag).
    time: numpy.datetime64[ns], UTC, end of the accumulation interval / scan time.
    accumulation_interval_s: the interval the source value accumulated over, 0 for
        instantaneous rates or reflectivity.
    conversion: human-readable description of what turned the source value into mm/h.
    zr: (a, b) of Z = a * R**b when reflectivity was converted, else None.
    """

    time: np.datetime64
    precip: np.ndarray
    grid: GridInfo
    product: str
    accumulation_interval_s: int
    conversion: str
    source: Path
    zr: tuple[float, float] | None = None
    radar_sites: list[str] = field(default_factory=list)


class Importer(Protocol):
    """Reads one file into one or more frames (a generic NetCDF may hold several times)."""

    name: str

    def read(self, path: str | Path) -> list[Frame]: ...


# Registered lazily ("module:Class") so that looking one up does not import wradlib, pysteps
# and xarray at once; each is only loaded when asked for.
register("source", "radolan", "nowcast_infill.io.radolan:RadolanImporter")
register("source", "radolan_ascii", "nowcast_infill.io.radolan_ascii:RadolanAsciiImporter")
register("source", "pysteps", "nowcast_infill.io.pysteps_source:PystepsImporter")
register("source", "xarray", "nowcast_infill.io.xarray_source:XarrayImporter")


# ---------------------------------------------------------------- shared helpers

DBZ_TO_MM_H_DEFAULT_ZR = (200.0, 1.6)  # Marshall-Palmer
# Physical range of a stored rain rate (mm/h): gauged rain rates above a few hundred mm/h
# last minutes at most, and a radar pixel averages about 1 km2 over 5 minutes or more, so
# a higher rate is a damaged PR field or pixel (the issue that set it: #9; configurable).
DEFAULT_RATE_RANGE_MM_H = (0.0, MAX_RAIN_RATE_MM_H)


def value_range(bounds, option: str) -> tuple[float, float]:
    """(low, high) floats from the two numbers `bounds` of the setting `option`; ValueError otherwise."""
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{option} must be two numbers [low, high], got {bounds!r}") from err
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"{option} must be two finite numbers with low < high, got {bounds!r}")
    return low, high


def check_physical_range(
    path: str | Path, values: np.ndarray, bounds: tuple[float, float], what: str, option: str
) -> None:
    """Raise ConversionError naming `path` when a value of `values` is infinite or outside `bounds`.

    NaN (no data) passes. `what` names the quantity and its unit for the message,
    `option` the setting that widens the range when such values are real.
    """
    low, high = bounds
    with np.errstate(invalid="ignore"):
        outside = (values < low) | (values > high)  # NaN compares False; +-inf is outside
    if not outside.any():
        return
    where = np.flatnonzero(outside)
    bad = np.asarray(values).reshape(-1)[where]
    row, col = np.unravel_index(where[0], np.shape(values))
    raise ConversionError(
        path,
        f"{where.size} pixel(s) of {what} outside the physical range {low:g} to {high:g} (from {bad.min():.6g} "
        f"to {bad.max():.6g}; first at row {row}, column {col}); the header or the pixel data is corrupt: "
        f"re-download the file or pass skip_bad=true (if such values are real, widen {option}).",
    )


def dbz_to_mm_h(dbz: np.ndarray, a: float, b: float) -> np.ndarray:
    """Rain rate (mm/h) from reflectivity (dBZ) via Z = a * R**b; NaN stays NaN."""
    z = np.power(10.0, np.asarray(dbz, dtype=np.float64) / 10.0)
    return np.power(z / a, 1.0 / b).astype(np.float32)


def accumulation_to_mm_h(depth_mm: np.ndarray, interval_s: int) -> np.ndarray:
    """Mean rate (mm/h) from a depth (mm) accumulated over `interval_s` seconds."""
    depth = np.asarray(depth_mm, dtype=np.float64)  # no copy when it is float64 already
    # Multiplied in float64 and cast on output: the same values as a float64 result cast
    # afterwards, without a frame-sized float64 temporary.
    return np.multiply(
        depth, 3600.0 / interval_s, out=np.empty(depth.shape, dtype=np.float32), dtype=np.float64, casting="same_kind"
    )


def describe_accumulation(interval_s: int) -> str:
    """The `conversion` text for an accumulation, e.g. 'mm per 300 s * 12'."""
    factor = 3600.0 / interval_s
    factor_text = f"{factor:g}" if factor >= 1 else f"{factor:.6g}"
    return f"mm per {interval_s} s * {factor_text}"


@functools.lru_cache(maxsize=16)
def _to_wgs84(proj4: str):
    import pyproj

    return pyproj.Transformer.from_crs(pyproj.CRS.from_user_input(proj4), "EPSG:4326", always_xy=True)


@functools.lru_cache(maxsize=16)
def _grid_cached(x_key: bytes, y_key: bytes, proj4: str) -> GridInfo:
    import pyproj

    x = np.frombuffer(x_key, dtype=np.float64).copy()
    y = np.frombuffer(y_key, dtype=np.float64).copy()
    xx, yy = np.meshgrid(x, y)
    lon, lat = _to_wgs84(proj4).transform(xx, yy)
    crs = pyproj.CRS.from_user_input(proj4)
    try:
        mapping = crs.to_cf().get("grid_mapping_name", "unknown")
    except Exception:  # pyproj cannot express every projection in CF terms
        mapping = "unknown"
    for arr in (x, y):
        arr.flags.writeable = False
    return GridInfo(
        x=x,
        y=y,
        lat=lat.astype(np.float32),
        lon=lon.astype(np.float32),
        proj4=proj4,
        grid_mapping_name=mapping,
        crs_wkt=crs.to_wkt(),
    )


def make_grid(x_km: np.ndarray, y_km: np.ndarray, proj4: str) -> GridInfo:
    """GridInfo for pixel-centre coordinates `x_km` (W,), `y_km` (H,) in `proj4` (units km).

    lat/lon are computed once per distinct grid and process (cached), because a
    conversion reads hundreds of frames on the same grid.
    """
    x = np.ascontiguousarray(x_km, dtype=np.float64)
    y = np.ascontiguousarray(y_km, dtype=np.float64)
    return _grid_cached(x.tobytes(), y.tobytes(), proj4)
