"""Classical baselines: infill fills only the holes, nowcasts behave as their physics says."""

from __future__ import annotations

import time

import numpy as np
import pytest

from nowcast_infill import registry
from nowcast_infill.baselines import INFILL_BASELINES, NOWCAST_BASELINES, NothingToInfillFromError, baseline_task
from nowcast_infill.errors import BadValueError


def _plane_with_holes(size: int = 96):
    """(3, H, W) input with a disc hole and a hole touching a no-data strip; truth plane; fill mask."""
    yy, xx = np.mgrid[0:size, 0:size]
    truth = (2.0 + 0.03 * yy + 0.05 * xx).astype(np.float32)
    truth[:, :8] = np.nan  # no-data strip outside the coverage
    hole = ((yy - 50) ** 2 + (xx - 55) ** 2 < 15**2) | ((yy - 15) ** 2 + (xx - 10) ** 2 < 7**2)
    fill = hole & np.isfinite(truth)
    frame = truth.copy()
    frame[fill] = np.nan
    return np.stack([frame, frame, frame]), truth, fill


def test_every_method_is_registered_with_its_task():
    assert registry.method_names("classical") == sorted({**INFILL_BASELINES, **NOWCAST_BASELINES})
    assert {name: baseline_task(name) for name in registry.method_names("classical")} == {
        **{name: "infill" for name in INFILL_BASELINES}, **{name: "nowcast" for name in NOWCAST_BASELINES}}
    with pytest.raises(registry.UnknownMethodError, match="unknown classical method 'kriging'; valid names: .*laplace"):
        baseline_task("kriging")


def test_registry_lists_valid_names_and_checks_options():
    with pytest.raises(registry.UnknownMethodError, match="unknown classical 'kriging'; valid names: .*nearest"):
        registry.get_method("classical", "kriging")
    with pytest.raises(BadValueError, match="classical 'persistence'.*n_leads"):
        registry.get_method("classical", "persistence")


@pytest.mark.parametrize("name", sorted(INFILL_BASELINES))
def test_infill_fills_holes_only_and_keeps_observed_bits(name):
    x, truth, fill = _plane_with_holes()
    out = registry.get_method("classical", name)(x, fill_mask=fill)
    assert out.shape == (1,) + truth.shape and out.dtype == np.float32
    observed = np.isfinite(x[1])
    assert np.array_equal(out[0][observed].view(np.uint32), x[1][observed].view(np.uint32))
    assert np.isfinite(out[0][fill]).all()
    # no-data outside the coverage is not a target and stays NaN, never 0
    assert np.isnan(out[0][:, :8]).all()


@pytest.mark.parametrize("name,tol", [("linear", 1e-4), ("laplace", 0.02), ("biharmonic", 0.02)])
def test_smooth_plane_is_reconstructed(name, tol):
    x, truth, fill = _plane_with_holes()
    out = registry.get_method("classical", name)(x, fill_mask=fill)
    interior = fill.copy()
    interior[:, :30] = False  # the hole that touches no-data has a free boundary there
    assert np.abs(out[0] - truth)[interior].max() < tol
    # nearest is the reference a smooth-field method must beat
    nearest = registry.get_method("classical", "nearest")(x, fill_mask=fill)
    assert np.abs(out[0] - truth)[fill].mean() < 0.5 * np.abs(nearest[0] - truth)[fill].mean()


def test_nearest_copies_the_closest_observed_value():
    frame = np.full((5, 5), np.nan, np.float32)
    frame[0, 0], frame[4, 4] = 1.0, 9.0
    out = registry.get_method("classical", "nearest")(frame[None])
    assert out[0, 1, 0] == 1.0 and out[0, 3, 4] == 9.0


@pytest.mark.parametrize("name", ["biharmonic", "laplace"])
def test_inpainting_cap_solves_big_holes_coarsely(name):
    x, truth, fill = _plane_with_holes()
    out = registry.get_method("classical", name, max_unknowns=100)(x, fill_mask=fill)
    assert np.isfinite(out[0][fill]).all()
    assert np.abs(out[0] - truth)[fill].mean() < 0.2


def test_infill_without_any_observation_is_an_error():
    with pytest.raises(NothingToInfillFromError, match="no observed pixel"):
        registry.get_method("classical", "linear")(np.full((1, 8, 8), np.nan, np.float32))


def _blob_sequence(size=128, n_past=4, n_leads=3, shift=(1.0, 2.0), seed=0):
    """Past and future (T, H, W) mm/h of rain cells translating by `shift` px/step, with growth and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for t in range(n_past + n_leads):
        cy, cx = size / 2 - 20 + shift[0] * t, size / 2 - 30 + shift[1] * t
        field = 8 * np.exp(-(((yy - cy) / 8) ** 2 + ((xx - cx) / 12) ** 2))
        field += 3 * np.exp(-(((yy - cy - 25) / 6) ** 2 + ((xx - cx + 10) / 5) ** 2))
        field = field * (1 + 0.05 * t) + 0.3 * rng.random(field.shape)
        frames.append(np.where(field < 0.2, 0.0, field).astype(np.float32))
    seq = np.stack(frames)
    seq[:, :, :6] = np.nan  # no-data strip
    return seq[:n_past], seq[n_past:]


def test_persistence_repeats_last_valid_frame_exactly():
    past, _ = _blob_sequence(size=32)
    past[-1] = np.nan  # a missing last frame: the latest one with data is used
    out = registry.get_method("classical", "persistence", n_leads=3)(past)
    assert out.shape == (3, 32, 32)
    for lead in out:
        assert np.array_equal(lead, past[-2], equal_nan=True)


def _rmse(pred, truth):
    ok = np.isfinite(pred) & np.isfinite(truth)
    return float(np.sqrt(np.mean((pred[ok] - truth[ok]) ** 2)))


def test_extrapolation_moves_the_blob_the_right_way():
    past, future = _blob_sequence()
    persistence = registry.get_method("classical", "persistence", n_leads=3)(past)
    # CPU time, not wall time: other processes on a busy machine do not inflate it.
    start = time.process_time()
    extrap = registry.get_method("classical", "extrapolation", n_leads=3)(past)
    elapsed = time.process_time() - start
    assert extrap.shape == future.shape and extrap.dtype == np.float32
    for k in range(3):
        assert _rmse(extrap[k], future[k]) < 0.7 * _rmse(persistence[k], future[k])
    # rain arriving from the no-data strip has no forecast: NaN, not 0
    assert np.isnan(extrap[:, :, :6]).all()
    assert elapsed < 10.0  # includes pysteps' first-call import; a warm call takes ~0.1 s


def test_sprog_runs_and_needs_three_frames(caplog):
    past, future = _blob_sequence()
    extrap = registry.get_method("classical", "extrapolation", n_leads=3)(past)
    with caplog.at_level("WARNING"):
        out = registry.get_method("classical", "sprog", n_leads=3)(past)
    assert "falling back" not in caplog.text  # the real S-PROG ran, not the fallback
    assert out.shape == future.shape and np.all(out[np.isfinite(out)] >= 0)
    # same no-data pattern as extrapolation, so both are scored on the same pixels
    assert np.array_equal(np.isnan(out), np.isnan(extrap))
    persistence = registry.get_method("classical", "persistence", n_leads=3)(past)
    assert _rmse(out[-1], future[-1]) < _rmse(persistence[-1], future[-1])
    with pytest.raises(ValueError, match="at least 3"):
        registry.get_method("classical", "sprog", n_leads=3)(past[-2:])


def test_sprog_falls_back_on_a_missing_frame_in_its_window():
    past, _ = _blob_sequence(size=64)
    past[-2] = np.nan
    sprog = registry.get_method("classical", "sprog", n_leads=2)
    out = sprog(past)  # the AR(2) fit needs 3 frames with data: persistence, counted
    assert sprog.fallbacks == 1
    assert np.array_equal(out, registry.get_method("classical", "persistence", n_leads=2)(past), equal_nan=True)


def test_temporal_linear_fallback_is_a_choice_shared_with_the_prior():
    """One mean-of-neighbours implementation: the classical method fills a pixel whose neighbour
    is missing spatially (Laplace), the network's `temporal` prior (spatial=None) with the other
    neighbour, NaN where neither has it; both give the mean where both neighbours are observed."""
    from nowcast_infill.data.priors import temporal_linear_fill

    x = np.stack([np.full((6, 6), 1.0), np.full((6, 6), 4.0), np.full((6, 6), 3.0)]).astype(np.float32)
    hole = np.zeros((6, 6), bool)
    hole[1:5, 1:5] = True
    x[1][hole] = np.nan
    x[0, 2, 2] = np.nan  # only the later neighbour (3 mm/h) there
    x[0, 3, 3] = x[2, 3, 3] = np.nan  # no neighbour
    prior = registry.get_method("classical", "temporal_linear", spatial=None)(x, fill_mask=hole)[0]
    assert prior[1, 1] == 2.0 and prior[2, 2] == 3.0 and np.isnan(prior[3, 3])
    assert np.array_equal(prior, temporal_linear_fill(x, hole)[0], equal_nan=True)
    method = registry.get_method("classical", "temporal_linear")
    spatial = method(x, fill_mask=hole)[0]
    assert spatial[1, 1] == 2.0 and np.isfinite(spatial[[2, 3], [2, 3]]).all() and method.fallbacks == 2
    # Laplace from the 4 mm/h ring and the 2 mm/h temporal fill around: between the two, not 3
    assert 2.0 <= spatial[2, 2] < 3.0
