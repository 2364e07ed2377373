"""Generic NetCDF or Zarr holding a precipitation variable someone already converted.

Options: `variable` (required), `units` (override when the variable has none or a wrong
one), `accumulation_interval_s` (for depths in mm), `proj4` (when the file has no
grid-mapping with a `proj4`/`crs_wkt`), `x`/`y` coordinate names, `product`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nowcast_infill.io.files import is_zarr_path, open_by_suffix
from nowcast_infill.io.importers import (
    DBZ_TO_MM_H_DEFAULT_ZR,
    ConversionError,
    Frame,
    accumulation_to_mm_h,
    dbz_to_mm_h,
    describe_accumulation,
    make_grid,
)

_RATE_UNITS = {
    "mm h-1": 1.0,
    "mm/h": 1.0,
    "mm hr-1": 1.0,
    "mm h**-1": 1.0,
    "mm/hr": 1.0,
    "kg m-2 s-1": 3600.0,
    "mm s-1": 3600.0,
    "mm/s": 3600.0,
    "m s-1": 3.6e6,
}
_DEPTH_UNITS = {"mm": 1.0, "kg m-2": 1.0, "m": 1000.0}
_LENGTH_TO_KM = {"km": 1.0, "m": 1e-3, "metre": 1e-3, "meter": 1e-3, "metres": 1e-3, "meters": 1e-3}


class XarrayImporter:
    """Reads every time step of `variable` (dims time, y, x) from a NetCDF file or Zarr store."""

    name = "xarray"

    def __init__(
        self,
        variable: str | None = None,
        units: str | None = None,
        accumulation_interval_s: int | None = None,
        proj4: str | None = None,
        x: str = "x",
        y: str = "y",
        time: str = "time",
        product: str | None = None,
        zr_a: float = DBZ_TO_MM_H_DEFAULT_ZR[0],
        zr_b: float = DBZ_TO_MM_H_DEFAULT_ZR[1],
    ):
        if not variable:
            raise ValueError("source=xarray needs the option variable=<name of the precipitation variable>")
        self.variable, self.units, self.interval_s = variable, units, accumulation_interval_s
        self.proj4, self.dims, self.product = proj4, (time, y, x), product
        self.zr = (float(zr_a), float(zr_b))

    def _open(self, path: Path):
        if not path.exists():
            raise ConversionError(path, "does not exist; check inputs=.")
        try:
            if not is_zarr_path(path) and path.stat().st_size == 0:
                raise ConversionError(path, "file is empty; re-download it or pass skip_bad=true.")
            return open_by_suffix(path)
        except ConversionError:
            raise
        except Exception as err:
            raise ConversionError(
                path, f"not a readable NetCDF/Zarr ({type(err).__name__}: {err}); check the file or pass skip_bad=true."
            ) from err

    def read(self, path: str | Path) -> list[Frame]:
        path = Path(path)
        ds = self._open(path)
        try:
            return self._frames(path, ds)
        finally:
            ds.close()

    def _frames(self, path: Path, ds) -> list[Frame]:
        if self.variable not in ds:
            raise ConversionError(
                path, f"has no variable {self.variable!r}; it holds {sorted(map(str, ds.data_vars))}. Set variable=."
            )
        var = ds[self.variable]
        t_name, y_name, x_name = self.dims
        if set(var.dims) != {t_name, y_name, x_name}:
            raise ConversionError(
                path,
                f"variable {self.variable!r} has dims {var.dims}; expected ({t_name}, {y_name}, {x_name}) "
                "(set time=, y=, x= to the names used in the file).",
            )
        var = var.transpose(t_name, y_name, x_name)
        units = self.units or var.attrs.get("units")
        if not units:
            raise ConversionError(
                path, f"variable {self.variable!r} has no units attribute; pass units= (e.g. units='mm h-1')."
            )
        x_km = self._coord_km(path, ds, x_name)
        y_km = self._coord_km(path, ds, y_name)
        grid = make_grid(x_km, y_km, self._projection(path, ds, var))
        product = self.product or str(ds.attrs.get("source_product", self.variable))
        times = ds[t_name].values.astype("datetime64[ns]")
        frames = []
        for i, when in enumerate(times):
            precip, interval_s, conversion, zr = self._to_mm_h(path, np.asarray(var[i].values, dtype=np.float64), units)
            frames.append(
                Frame(
                    time=when,
                    precip=precip,
                    grid=grid,
                    product=product,
                    accumulation_interval_s=interval_s,
                    conversion=conversion,
                    source=path,
                    zr=zr,
                    radar_sites=[str(s) for s in np.atleast_1d(ds.attrs.get("radar_sites", []))],
                )
            )
        return frames

    def _to_mm_h(self, path: Path, values: np.ndarray, units: str):
        key = " ".join(str(units).split())
        if key in _RATE_UNITS:
            factor = _RATE_UNITS[key]
            return (values * factor).astype(np.float32), int(self.interval_s or 0), f"{key} * {factor:g}", None
        if key in _DEPTH_UNITS:
            if not self.interval_s:
                raise ConversionError(
                    path, f"units {key!r} is a depth; pass accumulation_interval_s=<seconds> to make it a rate."
                )
            depth_mm = values * _DEPTH_UNITS[key]
            return (
                accumulation_to_mm_h(depth_mm, int(self.interval_s)),
                int(self.interval_s),
                describe_accumulation(int(self.interval_s)),
                None,
            )
        if key.lower() == "dbz":
            return dbz_to_mm_h(values, *self.zr), 0, f"Z={self.zr[0]:g}*R^{self.zr[1]:g} from dBZ", self.zr
        raise ConversionError(
            path,
            f"units {key!r} cannot be converted to mm/h; known: {sorted(_RATE_UNITS) + sorted(_DEPTH_UNITS) + ['dBZ']}. "
            "Pass units= if the attribute is wrong.",
        )

    @staticmethod
    def _coord_km(path: Path, ds, name: str) -> np.ndarray:
        if name not in ds.coords and name not in ds:
            raise ConversionError(path, f"has no coordinate {name!r}; set x=/y= to the projection coordinate names.")
        coord = ds[name]
        unit = str(coord.attrs.get("units", "km"))
        if unit not in _LENGTH_TO_KM:
            raise ConversionError(path, f"coordinate {name!r} has units {unit!r}; expected km or m.")
        return np.asarray(coord.values, dtype=np.float64) * _LENGTH_TO_KM[unit]

    def _projection(self, path: Path, ds, var) -> str:
        if self.proj4:
            return self.proj4
        mapping = var.attrs.get("grid_mapping")
        if mapping and mapping in ds:
            attrs = ds[mapping].attrs
            for key in ("proj4", "proj4_params", "spatial_ref", "crs_wkt"):
                if attrs.get(key):
                    return str(attrs[key])
        raise ConversionError(path, "has no grid mapping with a proj4/crs_wkt; pass proj4='<PROJ string of x/y>'.")
