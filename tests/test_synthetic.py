"""Synthetic default data: determinism, schema, plausible rain, motion with the wind, aux relation."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from nowcast_infill.data.radar_sites import RADOLAN_PROJ4, great_circle_km, sites_from_codes
from nowcast_infill.data.synthetic import generate_synthetic, write_synthetic_store
from nowcast_infill.schema import validate_store


@pytest.fixture(scope="module")
def small():
    return generate_synthetic(n_times=30, ny=96, nx=96, seed=3)


def test_same_seed_bit_identical_other_seed_differs():
    a = generate_synthetic(n_times=6, ny=32, nx=32, seed=5)
    b = generate_synthetic(n_times=6, ny=32, nx=32, seed=5)
    c = generate_synthetic(n_times=6, ny=32, nx=32, seed=6)
    for name in ("precip", "aux_u", "aux_v", "aux_t"):
        assert a[name].values.tobytes() == b[name].values.tobytes()
    assert not np.array_equal(np.nan_to_num(a.precip.values), np.nan_to_num(c.precip.values))


def test_written_store_follows_schema(tmp_path):
    path = write_synthetic_store(tmp_path / "s.zarr", n_times=8, ny=32, nx=32, missing_frame_indices=[3])
    ds = xr.open_zarr(path)
    validate_store(ds, path)
    assert ds.precip.dtype == np.float32 and ds.precip.attrs["units"] == "mm h-1"
    assert ds.attrs["source"] == "synthetic" and ds.attrs["time_step_s"] == 300
    assert np.all(np.diff(ds.time.values) == np.timedelta64(300, "s"))
    assert ds.missing_frame.values.tolist() == [False] * 3 + [True] + [False] * 4
    assert np.isnan(ds.precip.values[3]).all() and ds.attrs["missing_times"] == ["2021-06-01T12:15:00"]
    assert ds.crs.attrs["proj4"] == RADOLAN_PROJ4 and ds.crs.attrs["grid_mapping_name"] == "polar_stereographic"
    assert ds.aux_u.dims == ("time", "y_aux", "x_aux") and ds.sizes["y_aux"] == 8
    # reopened values are exactly what the generator makes
    fresh = generate_synthetic(n_times=8, ny=32, nx=32, missing_frame_indices=[3])
    np.testing.assert_array_equal(ds.precip.values, fresh.precip.values)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_synthetic_store(path, n_times=8, ny=32, nx=32)
    write_synthetic_store(path, overwrite=True, n_times=4, ny=32, nx=32)
    assert xr.open_zarr(path).sizes["time"] == 4
    assert not list(tmp_path.glob("*.tmp-*")) and not list(tmp_path.glob("*.old-*"))


def test_grid_matches_wradlib_radolan_and_coverage_is_nan(small):
    import wradlib

    # the national 900 x 900 RADOLAN grid has pixel corners on whole km from its origin
    corners = wradlib.georef.get_radolan_grid(900, 900)
    assert np.allclose((small.x.values - 1.0 - corners[0, 0, 0]) % 1.0, 0.0, atol=1e-6)
    lonlat = wradlib.georef.get_radolan_grid(900, 900, wgs84=True)
    j = int(np.rint(small.x.values[0] - 1.0 - corners[0, 0, 0]))
    i = int(np.rint(small.y.values[0] - 1.0 - corners[0, 0, 1]))
    # pixel (0, 0) of the synthetic grid is centred 1 km from RADOLAN corner (i, j)
    assert abs(lonlat[i, j, 1] - small.lat.values[0, 0]) < 0.02 and abs(lonlat[i, j, 0] - small.lon.values[0, 0]) < 0.03
    lat, lon = small.lat.values, small.lon.values
    far = np.ones(lat.shape, dtype=bool)
    for site in sites_from_codes(small.attrs["radar_sites"]):
        far &= great_circle_km(lat, lon, site.lat, site.lon) > 150.0
    assert far.any() and (~far).any()
    assert np.array_equal(np.isnan(small.precip.values[0]), far)
    assert np.isnan(small.precip.values[:, far]).all() and not np.isnan(small.precip.values[:, ~far]).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_rain_is_intermittent_with_plausible_intensity(seed):
    ds = generate_synthetic(n_times=24, ny=64, nx=64, seed=seed)
    precip = ds.precip.values
    covered = ~np.isnan(precip)
    wet = (precip[covered] > 0).mean()
    assert 0.05 <= wet <= 0.40
    assert np.nanmin(precip) == 0.0
    assert 3.0 <= np.nanmax(precip) <= 80.0
    assert 0.1 <= np.median(precip[precip > 0]) <= 3.0


def test_spectrum_is_power_law_with_rain_like_slope():
    ds = generate_synthetic(n_times=16, ny=128, nx=128, seed=0)
    frames = np.nan_to_num(ds.precip.values)
    frames = frames - frames.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(frames)) ** 2).mean(axis=0)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(128) * 128, np.fft.fftfreq(128) * 128, indexing="ij"))
    radii = np.arange(4, 33)
    spectrum = np.array([power[np.rint(k) == r].mean() for r in radii])
    slope, intercept = np.polyfit(np.log(radii), np.log(spectrum), 1)
    residual = np.log(spectrum) - (slope * np.log(radii) + intercept)
    assert -4.0 <= slope <= -1.5
    assert residual.std() < 0.3  # a straight line in log-log, not a bump


def _best_shift(before, after, valid, max_shift=8):
    best = (-np.inf, 0, 0)
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            moved = np.roll(before, (dy, dx), axis=(0, 1))
            both = np.roll(valid, (dy, dx), axis=(0, 1)) & valid
            both[:max_shift] = both[-max_shift:] = False
            both[:, :max_shift] = both[:, -max_shift:] = False
            c = np.corrcoef(moved[both], after[both])[0, 1]
            if c > best[0]:
                best = (c, dy, dx)
    return best


def test_rain_moves_with_the_aux_wind(small):
    precip = small.precip.values
    valid = ~np.isnan(precip[0])
    log_rain = np.log1p(np.nan_to_num(precip))
    u = small.aux_u.values.mean(axis=(1, 2))
    v = small.aux_v.values.mean(axis=(1, 2))
    step_px = small.attrs["time_step_s"] / 2000.0  # m/s -> 2 km pixels per step
    for t, lag in ((5, 3), (20, 3)):
        corr, dy, dx = _best_shift(log_rain[t], log_rain[t + lag], valid)
        expected = np.array([v[t : t + lag].sum(), u[t : t + lag].sum()]) * step_px
        assert np.hypot(expected[0], expected[1]) > 1.5  # the test can see motion
        assert abs(dy - expected[0]) <= 1.0 and abs(dx - expected[1]) <= 1.0, (dy, dx, expected)
        assert corr > 0.4


def test_aux_temperature_marks_where_rain_is(small):
    precip = small.precip.values
    f = small.sizes["y"] // small.sizes["y_aux"]
    t, h, w = precip.shape
    blocks = precip.reshape(t, h // f, f, w // f, f)
    wet = (blocks > 0).mean(axis=(2, 4))
    ok = ~np.isnan(blocks).any(axis=(2, 4))
    temperature = small.aux_t.values
    assert np.corrcoef(temperature[ok], wet[ok])[0, 1] > 0.3
    assert 270.0 < temperature.mean() < 305.0
    assert small.aux_u.attrs["units"] == "m s-1" and small.aux_t.attrs["units"] == "K"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="aux_factor"):
        generate_synthetic(n_times=2, ny=30, nx=32)
    with pytest.raises(ValueError, match="missing_frame_indices"):
        generate_synthetic(n_times=2, ny=32, nx=32, missing_frame_indices=[5])
    with pytest.raises(ValueError, match="valid codes"):
        generate_synthetic(n_times=2, ny=32, nx=32, coverage_sites=["xyz"])


def test_plot_frames_with_masks(tmp_path, small):
    import matplotlib.pyplot as plt

    from nowcast_infill.viz import plot_frames_with_masks

    masks = np.zeros((2, 96, 96), dtype=bool)
    masks[:, 20:40, 20:60] = True
    out = plot_frames_with_masks(small, [0, 10], masks, tmp_path / "panel.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = plt.imread(str(out))[..., :3]  # (rows, cols, RGB) in [0, 1]
    # Drawn fields, not a blank canvas: many colours (rain on a log scale, no-data grey) ...
    colours = np.unique((image.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 100 and float(image.std()) > 0.05
    # ... and the hole overlay (magenta: red and blue high, green low) in the lower row only
    magenta = (image[..., 0] > 0.6) & (image[..., 1] < 0.4) & (image[..., 2] > 0.6)
    coloured = image.max(-1) - image.min(-1) > 0.2  # not white, grey or black: drawn rain
    assert (coloured & ~magenta).sum() > 2000
    rows = np.flatnonzero(magenta.any(1))
    assert magenta.sum() > 500 and rows.min() > image.shape[0] // 2
    with pytest.raises(ValueError, match="do not match"):
        plot_frames_with_masks(small, [0], masks, tmp_path / "bad.png")
