"""Issue 12 §1, fair and exact scoring: same pixels for every method, each pixel once over
tiles, classical nowcasts that never crash an evaluation, temporal infilling baselines,
and eval masks whose site discs are computed once per grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nowcast_infill import registry
from nowcast_infill.data import mask_generators
from nowcast_infill.data import masks as masks_module
from nowcast_infill.data.tiling import eval_tiles, tile_owners
from nowcast_infill.metrics.radar_metrics import RadarMetrics


def _translating_rain(size=64, n=5, shift=(0.0, 2.0), seed=0):
    """(n, H, W) mm/h: two rain cells moving by `shift` px per step, wet up to the tile edge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for t in range(n):
        cy, cx = size / 2 + shift[0] * t, 8 + shift[1] * t
        field = 6 * np.exp(-(((yy - cy) / 9) ** 2 + ((xx - cx) / 9) ** 2)) + 2.0 * np.exp(-((yy - 12) / 6) ** 2)
        field += 0.2 * rng.random(field.shape)
        frames.append(np.where(field < 0.2, 0.0, field).astype(np.float32))
    return np.stack(frames)


# ------------------------------------------------------------------ same pixels
@pytest.mark.parametrize("name", ["extrapolation", "sprog"])
def test_rain_advected_from_outside_the_tile_gets_persistence_not_nan(name):
    past = _translating_rain()[:4]
    raw = registry.get_method("classical", name, n_leads=3, fill_outside=False)(past)
    assert np.isnan(raw[:, :, :2]).all()  # pySTEPS has no departure point inside the tile there
    filled = registry.get_method("classical", name, n_leads=3)(past)
    assert np.isfinite(filled).all()  # every pixel observed in the last frame gets an answer
    outside = np.isnan(raw)
    assert np.array_equal(filled[outside], np.broadcast_to(past[-1], filled.shape)[outside])
    assert np.array_equal(filled[~outside], raw[~outside])
    # missing data never becomes a number: where neither the advection nor the last frame has
    # a value (a no-data patch the rain does not move into), the forecast stays NaN
    past[:, 5:9, 30:34] = np.nan
    raw = registry.get_method("classical", name, n_leads=3, fill_outside=False)(past)
    filled = registry.get_method("classical", name, n_leads=3)(past)
    assert np.isnan(raw[:, 5:9, 30:34]).any()
    assert np.array_equal(np.isnan(filled), np.isnan(raw) & np.isnan(past[-1])[None])


# ------------------------------------------------------------------ no crash
def _dry_and_empty_tiles():
    one_wet_pixel = np.zeros((4, 48, 48), np.float32)
    one_wet_pixel[:, 20, 20] = 0.5
    rain_only_in_last = np.zeros((4, 48, 48), np.float32)
    rain_only_in_last[-1, 10:14, 10:14] = 2.0
    almost_all_nan = np.full((4, 48, 48), np.nan, np.float32)
    almost_all_nan[:, :5, :] = 0.0
    almost_all_nan[:, 2, 10] = 1.0
    return {"one_wet_pixel": one_wet_pixel, "rain_only_in_last": rain_only_in_last, "almost_all_nan": almost_all_nan}


@pytest.mark.parametrize("tile", ["one_wet_pixel", "rain_only_in_last", "almost_all_nan"])
def test_sprog_falls_back_to_persistence_on_a_nearly_dry_tile(tile):
    past = _dry_and_empty_tiles()[tile]
    sprog = registry.get_method("classical", "sprog", n_leads=2)
    out = sprog(past)  # pySTEPS raises here (singular AR fit / "x contains non-finite values")
    assert sprog.fallbacks == 1
    assert np.array_equal(out, registry.get_method("classical", "persistence", n_leads=2)(past), equal_nan=True)


def test_a_tile_without_any_data_is_a_counted_fallback_without_a_forecast():
    for name in ("extrapolation", "sprog"):
        method = registry.get_method("classical", name, n_leads=2)
        out = method(np.full((4, 16, 16), np.nan, np.float32))
        assert method.fallbacks == 1 and np.isnan(out).all()


def test_a_translating_field_is_forecast_without_fallback():
    extrapolation = registry.get_method("classical", "extrapolation", n_leads=2)
    extrapolation(_translating_rain()[:4])
    assert extrapolation.fallbacks == 0


# ------------------------------------------------------------------ each pixel once
@pytest.mark.parametrize("height,width,tile", [(48, 48, 20), (50, 37, 16), (32, 32, 32)])
def test_tile_owners_cover_every_pixel_exactly_once(height, width, tile):
    tiles = eval_tiles(height, width, tile)
    owners = tile_owners(height, width, tiles)
    counted = np.zeros((height, width), int)
    for index, (y0, x0, h, w) in enumerate(tiles):
        counted[y0:y0 + h, x0:x0 + w] += owners[y0:y0 + h, x0:x0 + w] == index
    assert (counted == 1).all()


def test_pixel_scores_over_owned_tiles_equal_scores_over_the_whole_grid():
    rng = np.random.default_rng(0)
    truth = torch.from_numpy(rng.gamma(0.6, 2.0, (1, 2, 1, 50, 45)).astype(np.float32))
    pred = truth * 0.7 + torch.from_numpy(rng.random((1, 2, 1, 50, 45)).astype(np.float32))
    mask = torch.from_numpy((rng.random((1, 2, 1, 50, 45)) > 0.3).astype(np.float32))

    def scores(tiled: bool) -> dict[str, float]:
        metric = RadarMetrics(thresholds=(1.0,), fss_scales=(1,), n_leads=2)
        if not tiled:
            metric.update(pred, truth, mask)
        else:
            tiles = eval_tiles(50, 45, 16)
            owners = torch.from_numpy(tile_owners(50, 45, tiles))
            for index, (y0, x0, h, w) in enumerate(tiles):
                owned = (owners[y0:y0 + h, x0:x0 + w] == index).float()
                window = (..., slice(y0, y0 + h), slice(x0, x0 + w))
                metric.update(pred[window], truth[window], mask[window] * owned)
        return {k: float(v) for k, v in metric.compute().items()}

    whole, tiled = scores(False), scores(True)
    for key in ("rmse", "mae", "bias", "csi@1mmh", "scored_pixels"):
        assert tiled[key] == pytest.approx(whole[key], rel=1e-6), key


# ------------------------------------------------------------------ temporal infilling
def _hidden_centre(seq: np.ndarray, hole: np.ndarray) -> np.ndarray:
    x = seq.copy()
    x[1][hole] = np.nan
    return x


def test_temporal_linear_is_exact_for_rain_linear_in_time():
    yy, xx = np.mgrid[0:40, 0:40]
    base = (1.0 + 0.05 * yy + 0.02 * xx).astype(np.float32)
    seq = np.stack([base, base + 0.5, base + 1.0])
    hole = (yy - 20) ** 2 + (xx - 20) ** 2 < 64
    method = registry.get_method("classical", "temporal_linear")
    out = method(_hidden_centre(seq, hole), fill_mask=hole)
    np.testing.assert_allclose(out[0][hole], seq[1][hole], rtol=1e-6)
    assert method.fallbacks == 0


def test_temporal_flow_follows_the_motion_better_than_linear():
    seq = _translating_rain(size=64, n=3, shift=(0.0, 4.0))
    yy, xx = np.mgrid[0:64, 0:64]
    hole = (yy - 32) ** 2 + (xx - 12) ** 2 < 12**2  # around the moving cell
    x = _hidden_centre(seq, hole)
    errors = {}
    for name in ("temporal_linear", "temporal_flow", "laplace"):
        out = registry.get_method("classical", name)(x, fill_mask=hole)
        errors[name] = float(np.sqrt(np.mean((out[0][hole] - seq[1][hole]) ** 2)))
    assert errors["temporal_flow"] < 0.6 * errors["temporal_linear"], errors
    assert errors["temporal_flow"] < errors["laplace"], errors


@pytest.mark.parametrize("name", ["temporal_linear", "temporal_flow"])
def test_temporal_infill_falls_back_to_spatial_where_a_neighbour_is_missing(name):
    seq = _translating_rain(size=48, n=3, shift=(0.0, 1.0))
    yy, xx = np.mgrid[0:48, 0:48]
    hole = (yy - 24) ** 2 + (xx - 24) ** 2 < 100
    x = _hidden_centre(seq, hole)
    x[0, 20:24, 20:28] = np.nan  # the previous frame is missing on 32 hole pixels
    method = registry.get_method("classical", name)
    out = method(x, fill_mask=hole)
    assert np.isfinite(out[0][hole]).all()
    assert method.fallbacks >= 32
    if name == "temporal_linear":  # exactly those pixels: the spatial method, with the temporal fill around
        assert method.fallbacks == 32
        gap = np.zeros_like(hole)
        gap[20:24, 20:28] = True
        around = x.copy()
        around[1][hole & ~gap] = out[0][hole & ~gap]
        np.testing.assert_allclose(out[0][gap], registry.get_method("classical", "laplace")(around, fill_mask=gap)[0][gap], rtol=1e-5)
    with pytest.raises(ValueError, match="context >= 1"):
        method(x[:1], fill_mask=hole)


# ------------------------------------------------------------------ mask speed
def test_radar_outage_computes_site_distances_once_per_grid(monkeypatch):
    lat, lon = np.meshgrid(np.linspace(50.5, 51.5, 40), np.linspace(6.0, 8.0, 40), indexing="ij")
    valid = np.ones(lat.shape, bool)
    spec = {"name": "radar_outage", "sites": ["ess", "fld", "nhb"], "radius_km": 80, "n_sites": [1, 2]}
    uncached = np.stack([masks_module.build_mask_generator(spec)(np.random.default_rng(s), valid, lat, lon)
                         for s in range(6)])
    calls = []
    real = mask_generators.great_circle_km
    monkeypatch.setattr(mask_generators, "great_circle_km", lambda *a: calls.append(1) or real(*a))
    generator = masks_module.build_mask_generator(spec)
    cached = np.stack([generator(np.random.default_rng(s), valid, lat, lon) for s in range(6)])
    assert len(calls) == 3  # one distance field per site, not per site and mask
    assert np.array_equal(cached, uncached) and cached.any()
    generator(np.random.default_rng(0), valid, lat + 0.1, lon)  # another grid: computed afresh
    assert len(calls) == 6


# ------------------------------------------------------------------ through ni-eval
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from nowcast_infill.data.synthetic import write_synthetic_store

    path = tmp_path_factory.mktemp("data") / "synthetic.zarr"
    write_synthetic_store(path, n_times=40, ny=48, nx=48, seed=3)
    return path


def _evaluate(tmp_path, store, *overrides):
    from test_configs import compose_config, tiny_overrides

    from nowcast_infill.pipeline.scoring import evaluate

    cfg = compose_config("eval", [*tiny_overrides(tmp_path, store), f"data.stats_path={tmp_path.parent / 'stats.json'}",
                                  "data.split.gap=2", "data.eval_masks.n=4", "n_figures=0", *overrides])
    return evaluate(cfg)


def test_overlapping_eval_tiles_score_each_pixel_once(tiny_store, tmp_path):
    # 48 px in 20 px tiles: starts 0, 20, 28, so the edge tiles overlap by 12 px.
    nowcast = ["task=nowcast", "task.past=2", "task.future=2", "model=persistence"]
    whole = _evaluate(tmp_path / "whole", tiny_store, *nowcast, "data.eval_tile=null")
    tiled = _evaluate(tmp_path / "tiled", tiny_store, *nowcast, "data.eval_tile=20")
    assert whole["test/scored_pixels"] > 0
    for key in ("test/scored_pixels", "test/rmse", "test/mae", "test/bias", "test/csi@1mmh"):
        assert tiled[key] == pytest.approx(whole[key], rel=1e-5), key
    # temporal_linear answers each hole pixel from the same pixel of the neighbouring frames,
    # so its scores cannot depend on the tiling either
    infill = ["task=infill", "model=temporal_linear"]
    holes_whole = _evaluate(tmp_path / "iw", tiny_store, *infill, "data.eval_tile=null")
    holes_tiled = _evaluate(tmp_path / "it", tiny_store, *infill, "data.eval_tile=20")
    assert holes_whole["test/scored_pixels"] > 0 and holes_whole["test/fallbacks"] == 0
    for key in ("test/scored_pixels", "test/rmse", "test/mae"):
        assert holes_tiled[key] == pytest.approx(holes_whole[key], rel=1e-5), key


def test_every_nowcast_method_is_scored_on_the_same_pixels(tiny_store, tmp_path):
    counts = {}
    for name in ("persistence", "extrapolation", "sprog"):
        result = _evaluate(tmp_path / name, tiny_store, "task=nowcast", "task.past=3", "task.future=2",
                           f"model={name}", "data.eval_tile=24")
        counts[name] = (result["test/scored_pixels"], result["test/unscored_pixels"])
        assert result["row"]["n_pixels"] == int(result["test/scored_pixels"])
        assert "test/fallbacks" in result
    assert len(set(counts.values())) == 1 and counts["persistence"][1] == 0, counts
