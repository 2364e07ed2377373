"""Hole-mask generators, the registry, and fixed evaluation mask sets."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from nowcast_infill import registry
from nowcast_infill.data.eval_masks import make_eval_mask_set
from nowcast_infill.data.masks import (
    build_mask_generator,
    hole_targets,
    load_mask_set,
    nodata_patterns_from_store,
    read_mask_file,
    save_mask_set,
)
from nowcast_infill.data.radar_sites import DWD_RADAR_SITES, great_circle_km, sites_from_codes
from nowcast_infill.data.synthetic import generate_synthetic
from nowcast_infill.errors import UserError

SPACING_KM = 2.0


@pytest.fixture(scope="module")
def grid():
    """valid, lat, lon (96, 96) of the synthetic domain (Lusatia, coverage edge in the east)."""
    ds = generate_synthetic(n_times=2, ny=96, nx=96, seed=0)
    return ~np.isnan(ds.precip.values[0]), ds.lat.values, ds.lon.values, ds


def test_registry_lists_valid_names():
    assert registry.method_names("mask") == ["file", "freeform", "mixture", "nodata_pattern", "radar_outage"]
    with pytest.raises(registry.UnknownMethodError, match="radar_outage.*freeform|freeform.*radar_outage"):
        build_mask_generator({"name": "nope"})
    with pytest.raises(UserError, match="'name'.*radar_outage"):
        build_mask_generator({"radius_km": 3})
    with pytest.raises(UserError, match="freeform.*bogus"):
        registry.get_method("mask", "freeform", bogus=1)


def test_radar_outage_disc_has_the_radius(grid):
    valid, lat, lon, _ = grid
    gen = registry.get_method("mask", "radar_outage", sites=["drs"], radius_km=80.0)
    hidden = gen(np.random.default_rng(0), valid, lat, lon)
    site = DWD_RADAR_SITES["drs"]
    distance = great_circle_km(lat, lon, site.lat, site.lon)
    assert hidden.any() and not hidden.all()
    # the disc edge lies within one pixel of 80 km
    assert distance[hidden].max() <= 80.0
    assert distance[~hidden].min() > 80.0 - SPACING_KM
    assert distance[hidden].max() > 80.0 - SPACING_KM


def test_radar_outage_picks_sites_reaching_the_crop_and_falls_back(grid):
    valid, lat, lon, _ = grid
    gen = registry.get_method("mask", "radar_outage", n_sites=[1, 2])
    rng = np.random.default_rng(1)
    for _ in range(10):
        assert hole_targets(gen(rng, valid, lat, lon), valid).sum() >= 0.02 * valid.sum()
    # sites far from the crop (Emden, Essen): fallback puts a disc on a valid pixel
    far = registry.get_method("mask", "radar_outage", sites=["emd", "ess"], radius_km=30.0)
    hidden = far(np.random.default_rng(2), valid, lat, lon)
    assert hole_targets(hidden, valid).any()
    refusing = registry.get_method("mask", "radar_outage", sites=["emd"], fallback="error")
    with pytest.raises(ValueError, match="emd"):
        refusing(np.random.default_rng(0), valid, lat, lon)
    with pytest.raises(ValueError, match="valid codes"):
        sites_from_codes(["zzz"])


def test_freeform_fraction_in_range(grid):
    valid, lat, lon, _ = grid
    gen = build_mask_generator({"name": "freeform", "fraction": [0.2, 0.3]})
    rng = np.random.default_rng(3)
    fractions = [gen(rng, valid, lat, lon).mean() for _ in range(20)]
    assert all(0.2 <= f <= 0.3 for f in fractions), fractions
    assert np.std(fractions) > 0  # targets are drawn, not fixed


def test_holes_never_target_nodata(grid):
    valid, lat, lon, _ = grid
    rng = np.random.default_rng(4)
    gen = build_mask_generator({"name": "mixture", "components": [{"name": "radar_outage"}, {"name": "freeform"}]})
    for _ in range(10):
        hidden = gen(rng, valid, lat, lon)
        targets = hole_targets(hidden, valid)
        assert not targets[~valid].any()
        assert np.array_equal(targets, hidden & valid)
    import torch

    t = hole_targets(torch.tensor(hidden, dtype=torch.float32), torch.tensor(valid, dtype=torch.float32))
    assert t.dtype == torch.bool and torch.equal(t, torch.from_numpy(hidden & valid))


def test_nodata_pattern_moves_real_edges_onto_data(grid):
    valid, lat, lon, ds = grid
    patterns = nodata_patterns_from_store(ds)
    assert patterns.shape == (1, 96, 96) and np.array_equal(patterns[0], ~valid)
    gen = build_mask_generator({"name": "nodata_pattern", "path": ds, "fraction": [0.05, 0.6]})
    rng = np.random.default_rng(5)
    shares = [hole_targets(gen(rng, valid, lat, lon), valid).sum() / valid.sum() for _ in range(10)]
    assert all(0.05 <= s <= 0.6 for s in shares), shares
    dry = ds.copy()
    dry["precip"] = dry.precip.fillna(0.0)
    with pytest.raises(ValueError, match="no NaN"):
        nodata_patterns_from_store(dry)


def test_file_masks_and_their_errors(tmp_path, grid):
    valid, lat, lon, _ = grid
    masks = np.zeros((3, 96, 96), dtype=np.int8)
    masks[1, :10] = 1
    path = tmp_path / "m.nc"
    xr.Dataset({"holes": (("n", "y", "x"), masks)}).to_netcdf(path, engine="h5netcdf")
    gen = registry.get_method("mask", "file", path=path, variable="holes")
    drawn = [gen(np.random.default_rng(s), valid, lat, lon) for s in range(10)]
    assert all(d.dtype == bool for d in drawn) and any(d[:10].all() for d in drawn)
    with pytest.raises(ValueError, match=r"m\.nc.*'mask'.*holes"):
        registry.get_method("mask", "file", path=path)
    with pytest.raises(ValueError, match=r"96 x 96.*64 x 64"):
        gen(np.random.default_rng(0), valid[:64, :64], lat[:64, :64], lon[:64, :64])
    frac = tmp_path / "f.nc"
    xr.Dataset({"mask": (("y", "x"), np.full((4, 4), 0.5))}).to_netcdf(frac, engine="h5netcdf")
    with pytest.raises(ValueError, match=r"f\.nc.*other than 0/1"):
        read_mask_file(frac)
    with pytest.raises(FileNotFoundError, match="absent"):
        read_mask_file(tmp_path / "absent.nc")


def test_mixture_uses_weights(grid):
    valid, lat, lon, _ = grid
    spec = {
        "name": "mixture",
        "components": [{"name": "freeform", "fraction": [0.01, 0.02]}, {"name": "freeform", "fraction": [0.5, 0.6]}],
        "weights": [0.0, 1.0],
    }
    gen = build_mask_generator(spec)
    rng = np.random.default_rng(6)
    assert all(gen(rng, valid, lat, lon).mean() >= 0.5 for _ in range(5))
    with pytest.raises(ValueError, match="weights"):
        build_mask_generator({**spec, "weights": [1.0]})


@pytest.mark.parametrize("suffix", [".npz", ".nc", ".zarr"])
def test_eval_mask_set_reproducible_and_round_trips(tmp_path, grid, suffix):
    valid, lat, lon, _ = grid
    spec = {"name": "mixture", "components": [{"name": "radar_outage"}, {"name": "freeform"}]}
    first = make_eval_mask_set(spec, 6, 42, valid, lat, lon)
    again = make_eval_mask_set(spec, 6, 42, valid, lat, lon)
    other = make_eval_mask_set(spec, 6, 43, valid, lat, lon)
    assert first.shape == (6, 96, 96) and first.dtype == bool
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    path = save_mask_set(tmp_path / f"eval_masks{suffix}", first, spec, 42)
    loaded = load_mask_set(path)
    assert np.array_equal(loaded.masks, first) and loaded.spec == spec and loaded.seed == 42
    # a saved set is usable as a `file` mask source
    assert registry.get_method("mask", "file", path=path)(np.random.default_rng(0), valid, lat, lon).shape == (96, 96)


def test_hydra_mask_configs_build():
    from pathlib import Path

    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "masks"
    for name in ("radar_outage", "freeform", "mixture"):
        spec = OmegaConf.load(conf / f"{name}.yaml")
        assert callable(build_mask_generator(spec))
    for name in ("nodata_pattern", "file"):  # need a path: mandatory in the config
        assert OmegaConf.is_missing(OmegaConf.load(conf / f"{name}.yaml"), "path")
