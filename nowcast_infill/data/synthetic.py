"""Deterministic synthetic radar data in the store schema (docs/schema.md).

This is the embedded default data set: `make demo` and the tests run on it when no
real archive is given. The model behind it, in one paragraph:

* A latent Gaussian field `L` with a power-law spatial spectrum (2-D power
  ~ |k|^-slope below a scale break, flat above it) is advected by a smoothly
  varying wind (semi-Lagrangian, cubic interpolation on a periodic padded domain)
  and renewed as an AR(1) process in the Lagrangian frame, so rain keeps its
  structure while it moves and slowly evolves.
* A large-scale, slowly evolving "instability" field `H` (warm, moist air) is not
  advected. Rain occurs where `Z = (L + kappa*H) / sqrt(1 + kappa^2)` exceeds the
  threshold that gives the wanted wet fraction: cells grow as the wind carries them
  into high `H` and decay as they leave it.
* Rain rate is `scale * (exp(growth * (Z - z0)) - 1)` mm/h above the threshold
  (intermittent, log-normal-like tail, continuous at the rain edge) and exactly 0 below.
* Auxiliary fields on an `aux_factor` times coarser grid: `aux_u`, `aux_v` (the
  advecting wind, m/s, components along the grid x and y axes) and `aux_t` (K),
  a temperature that rises with `H` (plus a weak meridional gradient), so it tells
  a model where rain will grow.
* The grid is a window of the RADOLAN polar-stereographic projection; pixels farther
  than `coverage_radius_km` from every DWD radar are no-data (NaN), as in RADOLAN.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import ndimage
from scipy.special import ndtri

from nowcast_infill import schema
from nowcast_infill.data.radar_sites import (
    RADOLAN_GRID_ORIGIN_KM,
    RADOLAN_HEADER_SITES,
    RADOLAN_PROJ4,
    coverage_mask,
    great_circle_km,
    sites_from_codes,
)
from nowcast_infill.errors import BadValueError, OutputExistsError
from nowcast_infill.io.importers import make_grid
from nowcast_infill.io.store import PRECIP_ATTRS

# Lusatia / Polish border: two DWD radars (Prötzel, Dresden) inside a 256 km window and
# ~23% of it beyond 150 km of any radar, i.e. a realistic coverage edge with no-data.
DEFAULT_CENTER_LAT = 51.6
DEFAULT_CENTER_LON = 14.9


def _radial_wavenumber(shape: tuple[int, int], spacing_km: float) -> np.ndarray:
    """|k| (cycles/km) on the rfft2 grid of `shape`."""
    ky = np.fft.fftfreq(shape[0], d=spacing_km)
    kx = np.fft.rfftfreq(shape[1], d=spacing_km)
    return np.hypot(ky[:, None], kx[None, :])


def _power_law_filter(shape: tuple[int, int], spacing_km: float, slope: float, scale_break_km: float) -> np.ndarray:
    """rfft2 amplitude filter: power ~ |k|^-slope for scales below `scale_break_km`, flat above, 0 at k=0."""
    k = _radial_wavenumber(shape, spacing_km)
    k_break = 1.0 / scale_break_km
    amplitude = np.power(np.maximum(k, k_break), -slope / 2.0)
    amplitude[0, 0] = 0.0  # no mean: fields are standardised anomalies
    return amplitude


def _filtered_noise(rng: np.random.Generator, amplitude: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Gaussian field (shape) with spectrum `amplitude`**2, zero mean, unit std."""
    white = rng.standard_normal(shape)
    field = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=shape)
    return _standardise(field)


def _standardise(field: np.ndarray) -> np.ndarray:
    return (field - field.mean()) / field.std()


def _advect(field: np.ndarray, shift_rows: np.ndarray, shift_cols: np.ndarray) -> np.ndarray:
    """Semi-Lagrangian step on a periodic grid: value at each pixel taken from its departure point.

    shift_rows/shift_cols: (H, W) displacement in pixels over one step (towards +row/+col).
    """
    rows, cols = np.indices(field.shape, dtype=np.float64)
    # cubic spline keeps numerical diffusion low over hundreds of steps
    return ndimage.map_coordinates(field, [rows - shift_rows, cols - shift_cols], order=3, mode="grid-wrap")


def _periodic_gradient(field: np.ndarray, spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(d/drow, d/dcol) of a periodic field by central differences, per metre."""
    d_row = (np.roll(field, -1, axis=0) - np.roll(field, 1, axis=0)) / (2 * spacing_m)
    d_col = (np.roll(field, -1, axis=1) - np.roll(field, 1, axis=1)) / (2 * spacing_m)
    return d_row, d_col


def _block_mean(field: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping factor x factor blocks of the last two axes."""
    *lead, h, w = field.shape
    return field.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def radolan_window(
    ny: int, nx: int, spacing_km: float, center_lat: float, center_lon: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates `y` (ny,), `x` (nx,) in km of a window of the RADOLAN projection.

    The window is centred on (center_lat, center_lon); its corners are snapped to whole
    km from the national RADOLAN grid origin so its pixels tile the 1 km RADOLAN pixels.
    Rows run south to north (row 0 = southern edge, as in RADOLAN files).
    """
    import pyproj

    to_radolan = pyproj.Transformer.from_crs("EPSG:4326", pyproj.CRS.from_user_input(RADOLAN_PROJ4), always_xy=True)
    x_c, y_c = to_radolan.transform(center_lon, center_lat)
    x0, y0 = RADOLAN_GRID_ORIGIN_KM
    left = x0 + np.round(x_c - nx * spacing_km / 2 - x0)
    bottom = y0 + np.round(y_c - ny * spacing_km / 2 - y0)
    x = left + (np.arange(nx) + 0.5) * spacing_km
    y = bottom + (np.arange(ny) + 0.5) * spacing_km
    return y, x


def generate_synthetic(
    n_times: int = 192,
    ny: int = 128,
    nx: int = 128,
    spacing_km: float = 2.0,
    seed: int = 0,
    time_step_s: int = 300,
    start: str = "2021-06-01T12:00:00",
    center_lat: float = DEFAULT_CENTER_LAT,
    center_lon: float = DEFAULT_CENTER_LON,
    coverage_sites: Sequence[str] | None = RADOLAN_HEADER_SITES,
    coverage_radius_km: float = 150.0,
    aux_factor: int = 4,
    wet_fraction: float = 0.15,
    spectral_slope: float = 3.0,
    scale_break_km: float = 60.0,
    lifetime_min: float = 120.0,
    instability_weight: float = 1.0,
    wind_speed_ms: tuple[float, float] = (6.0, 14.0),
    wind_perturbation_ms: float = 2.0,
    intensity_scale_mm_h: float = 1.0,
    intensity_growth: float = 1.0,
    missing_frame_indices: Sequence[int] = (),
) -> xr.Dataset:
    """Synthetic radar data set in the store schema, bit-identical for the same arguments.

    Returns an xarray.Dataset with
      precip (n_times, ny, nx) float32 mm/h, NaN outside radar coverage and on missing frames;
      missing_frame (n_times,) bool; lat/lon (ny, nx) float32 degrees; crs;
      aux_u, aux_v (n_times, ny/aux_factor, nx/aux_factor) float32 m/s along grid x / y;
      aux_t (same) float32 K; coordinates time (UTC, step time_step_s), y/x and y_aux/x_aux in km.

    wet_fraction: expected fraction of covered pixels with rain > 0 (it varies in time).
    spectral_slope: exponent of the 2-D power spectrum of the latent field below scale_break_km.
    lifetime_min: e-folding time of the latent field's memory along trajectories (AR(1)).
    instability_weight: kappa, how strongly the aux temperature field controls where rain grows.
    missing_frame_indices: time indices written as all-NaN frames flagged in `missing_frame`,
        to exercise gap handling downstream.
    """
    if ny % aux_factor or nx % aux_factor:
        raise BadValueError(
            f"synthetic grid {ny} x {nx} is not divisible by aux_factor={aux_factor}; "
            "choose ny and nx as multiples of aux_factor."
        )
    if not 0.0 < wet_fraction < 1.0:
        raise BadValueError(f"wet_fraction={wet_fraction} must lie strictly between 0 and 1.")
    if n_times < 1:
        raise BadValueError(f"n_times={n_times} must be at least 1.")
    bad = [i for i in missing_frame_indices if not -n_times <= i < n_times]
    if bad:
        raise BadValueError(f"missing_frame_indices {bad} are outside 0..{n_times - 1}.")

    rng = np.random.default_rng(seed)
    spacing_m = spacing_km * 1000.0
    dt_s = float(time_step_s)
    # Padding: the periodic wrap-around re-enters the window only after the AR memory
    # has mostly decayed, and large scales are not forced to the window size.
    pad_y, pad_x = max(16, ny // 4), max(16, nx // 4)
    shape = (ny + 2 * pad_y, nx + 2 * pad_x)
    window = (slice(pad_y, pad_y + ny), slice(pad_x, pad_x + nx))

    rain_filter = _power_law_filter(shape, spacing_km, spectral_slope, scale_break_km)
    large_filter = _power_law_filter(shape, spacing_km, 4.5, 4 * scale_break_km)

    # Wind: a mean flow turning slowly in time plus a fixed non-divergent perturbation
    # (from a stream function), so trajectories curve but rain is not created by convergence.
    direction0 = rng.uniform(0.0, 2 * np.pi)
    speed = rng.uniform(*wind_speed_ms)
    turn_rate = np.radians(rng.uniform(-6.0, 6.0)) / 3600.0  # rad/s
    psi = _filtered_noise(rng, large_filter, shape)
    dpsi_drow, dpsi_dcol = _periodic_gradient(psi, spacing_m)
    du, dv = -dpsi_drow, dpsi_dcol
    du_scale = wind_perturbation_ms / np.sqrt(np.mean(du**2 + dv**2) / 2)
    du, dv = du * du_scale, dv * du_scale

    phi = np.exp(-dt_s / (lifetime_min * 60.0))
    phi_h = np.exp(-dt_s / (12 * 3600.0))  # instability evolves over half a day
    latent = _filtered_noise(rng, rain_filter, shape)
    instability = _filtered_noise(rng, large_filter, shape)
    z0 = float(ndtri(1.0 - wet_fraction))
    kappa = instability_weight

    precip = np.empty((n_times, ny, nx), dtype=np.float32)
    u_out = np.empty((n_times, ny, nx), dtype=np.float64)
    v_out = np.empty_like(u_out)
    h_out = np.empty_like(u_out)
    for t in range(n_times):
        direction = direction0 + turn_rate * dt_s * t
        u = speed * np.cos(direction) + du
        v = speed * np.sin(direction) + dv
        if t > 0:
            # rows follow +y (northward), columns +x (eastward on the grid)
            latent = _advect(latent, v * dt_s / spacing_m, u * dt_s / spacing_m)
            latent = _standardise(phi * latent + np.sqrt(1 - phi**2) * _filtered_noise(rng, rain_filter, shape))
            instability = _standardise(
                phi_h * instability + np.sqrt(1 - phi_h**2) * _filtered_noise(rng, large_filter, shape)
            )
        h_win = instability[window]
        # standardised over the window so the wet fraction does not hinge on the
        # window mean of a field dominated by a few large modes
        h_win = (h_win - h_win.mean()) / h_win.std()
        z = (latent[window] + kappa * h_win) / np.sqrt(1 + kappa**2)
        rate = intensity_scale_mm_h * np.expm1(intensity_growth * (z - z0))
        precip[t] = np.where(z > z0, rate, 0.0)
        u_out[t], v_out[t], h_out[t] = u[window], v[window], h_win

    y, x = radolan_window(ny, nx, spacing_km, center_lat, center_lon)
    grid = make_grid(x, y, RADOLAN_PROJ4)
    sites = sites_from_codes(coverage_sites)
    covered = coverage_mask(grid.lat, grid.lon, sites, coverage_radius_km)
    sites_in_domain = [
        s.code for s in sites if great_circle_km(grid.lat, grid.lon, s.lat, s.lon).min() <= coverage_radius_km
    ]
    precip[:, ~covered] = np.nan

    times = np.datetime64(start, "ns") + np.arange(n_times) * np.timedelta64(int(time_step_s), "s")
    missing = np.zeros(n_times, dtype=bool)
    missing[list(missing_frame_indices)] = True
    precip[missing] = np.nan

    y_aux = y.reshape(-1, aux_factor).mean(axis=1)
    x_aux = x.reshape(-1, aux_factor).mean(axis=1)
    y_rel_km = (y - y.mean())[None, :, None]
    temperature = 288.0 + 3.0 * h_out - 0.006 * y_rel_km  # K; ~0.6 K per 100 km colder northwards

    parameters = dict(
        n_times=n_times, ny=ny, nx=nx, spacing_km=spacing_km, seed=seed, time_step_s=time_step_s,
        start=start, center_lat=center_lat, center_lon=center_lon,
        coverage_sites=list(coverage_sites) if coverage_sites is not None else None,
        coverage_radius_km=coverage_radius_km, aux_factor=aux_factor, wet_fraction=wet_fraction,
        spectral_slope=spectral_slope, scale_break_km=scale_break_km, lifetime_min=lifetime_min,
        instability_weight=instability_weight, wind_speed_ms=list(wind_speed_ms),
        wind_perturbation_ms=wind_perturbation_ms, intensity_scale_mm_h=intensity_scale_mm_h,
        intensity_growth=intensity_growth, missing_frame_indices=[int(i) for i in missing_frame_indices],
    )  # fmt: skip
    aux_dims = schema.AUX_DIMS

    def aux(values: np.ndarray, units: str, long_name: str) -> xr.DataArray:
        return xr.DataArray(
            _block_mean(values, aux_factor).astype(np.float32),
            dims=aux_dims,
            attrs={"units": units, "long_name": long_name},
        )

    import nowcast_infill

    ds = xr.Dataset(
        data_vars={
            schema.PRECIP: xr.DataArray(
                precip,
                dims=schema.PRECIP_DIMS,
                attrs=dict(PRECIP_ATTRS),
            ),
            schema.MISSING_FRAME: xr.DataArray(
                missing, dims=("time",), attrs={"long_name": "frame inserted for a gap (all NaN)"}
            ),
            schema.CRS: xr.DataArray(
                np.int8(0),
                attrs={"grid_mapping_name": grid.grid_mapping_name, "proj4": grid.proj4, "crs_wkt": grid.crs_wkt or ""},
            ),
            "aux_u": aux(u_out, "m s-1", "wind component along the grid x axis (advects the rain)"),
            "aux_v": aux(v_out, "m s-1", "wind component along the grid y axis (advects the rain)"),
            "aux_t": aux(temperature, "K", "air temperature (warm anomalies are where rain grows)"),
        },
        coords={
            "time": ("time", times, {"timezone": "UTC", "long_name": "end of interval / scan time"}),
            "y": ("y", y, {"units": "km", "long_name": "projection y of pixel centre"}),
            "x": ("x", x, {"units": "km", "long_name": "projection x of pixel centre"}),
            "lat": (("y", "x"), grid.lat, {"units": "degrees_north", "long_name": "latitude"}),
            "lon": (("y", "x"), grid.lon, {"units": "degrees_east", "long_name": "longitude"}),
            "y_aux": ("y_aux", y_aux, {"units": "km", "long_name": "projection y of aux pixel centre"}),
            "x_aux": ("x_aux", x_aux, {"units": "km", "long_name": "projection x of aux pixel centre"}),
        },
        attrs={
            "nowcast_infill_schema": schema.SCHEMA_VERSION,
            "source": "synthetic",
            "source_product": "synthetic",
            "accumulation_interval_s": 0,  # instantaneous rates
            "time_step_s": int(time_step_s),
            "conversion": "none: generated directly as mm/h",
            "source_files": [],
            "skipped_files": [],
            "missing_times": [str(np.datetime_as_string(t, unit="s")) for t in times[missing]],
            "radar_sites": sites_in_domain,
            "coverage_radius_km": float(coverage_radius_km),
            "history": (
                f"nowcast_infill.data.synthetic.generate_synthetic(**{json.dumps(parameters)}); "
                f"nowcast_infill {nowcast_infill.__version__ if hasattr(nowcast_infill, '__version__') else 'dev'}, "
                f"numpy {np.__version__}, xarray {xr.__version__}, python {sys.version.split()[0]}"
            ),
        },
    )
    return ds


def default_chunks(ds: xr.Dataset) -> dict[str, int]:
    """Whole frames, 16 time steps per chunk (a 128 x 128 chunk is 1 MiB)."""
    return {"time": min(16, ds.sizes["time"]), "y": ds.sizes["y"], "x": ds.sizes["x"]}


def write_synthetic_store(
    path: str | Path,
    chunks: Mapping[str, int] | None = None,
    overwrite: bool = False,
    **kwargs,
) -> Path:
    """Generate with `generate_synthetic(**kwargs)` and write a Zarr v3 store at `path`.

    chunks: {"time", "y", "x"} chunk sizes of `precip` (aux fields share the time chunk);
    None = `default_chunks`. The store is written to `<path>.tmp-<pid>` and renamed into
    place only when complete. An existing store is refused unless `overwrite=True`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path}: a store already exists; pass overwrite=True (ni-synth overwrite=true) "
            "to replace it, or choose another output path."
        )
    ds = generate_synthetic(**kwargs)
    sizes = dict(default_chunks(ds))
    if chunks:
        unknown = set(chunks) - {"time", "y", "x"}
        if unknown:
            raise BadValueError(f"chunks has unknown dimension(s) {sorted(unknown)}; use keys time, y, x.")
        sizes.update({k: int(v) for k, v in chunks.items()})
    sizes = {k: max(1, min(v, ds.sizes[k])) for k, v in sizes.items()}
    encoding = {
        schema.PRECIP: {"chunks": (sizes["time"], sizes["y"], sizes["x"])},
        "time": {"units": "seconds since 1970-01-01 00:00:00", "dtype": "int64"},
    }
    for name in schema.aux_names(ds):
        encoding[schema.AUX_PREFIX + name] = {"chunks": (sizes["time"], ds.sizes["y_aux"], ds.sizes["x_aux"])}

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        with warnings.catch_warnings():
            # Consolidated metadata lets xarray.open_zarr(path) open the store without its
            # fallback warning; zarr warns that v3 has no spec for it yet, which is known.
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            ds.to_zarr(staging, mode="w-", zarr_format=3, consolidated=True, encoding=encoding)
        if path.exists():
            retired = path.with_name(f"{path.name}.old-{os.getpid()}")
            path.rename(retired)
            staging.rename(path)
            shutil.rmtree(retired)
        else:
            staging.rename(path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return path
