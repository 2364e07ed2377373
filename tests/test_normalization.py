"""Normalizer: round trips, streaming fit, floor, persistence, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nowcast_infill.data.normalization import Normalizer, RunningMoments


@pytest.fixture
def rain() -> np.ndarray:
    rng = np.random.default_rng(1)
    values = np.maximum(rng.gamma(0.5, 3.0, size=(6, 30, 40)) - 0.5, 0.0).astype(np.float32)
    values[:, :5] = np.nan  # no-data rows
    return values


@pytest.mark.parametrize("kind", ["log1p_scaled", "log1p_zscore"])
def test_roundtrip_numpy_and_torch_and_floor(rain, kind):
    norm = Normalizer(kind).fit(rain)
    z = norm.encode(rain)
    assert z.dtype == np.float32 and z.shape == rain.shape
    assert np.array_equal(np.isnan(z), np.isnan(rain)), "NaN (no data) must stay NaN"
    np.testing.assert_allclose(norm.decode(z), rain, rtol=1e-5, atol=1e-5)
    zt = norm.encode(torch.from_numpy(rain))
    assert isinstance(zt, torch.Tensor)
    np.testing.assert_allclose(zt.numpy(), z, rtol=1e-6, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(norm.decode(zt).numpy(), rain, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert norm.floor == pytest.approx(float(norm.encode(np.zeros(1, np.float32))[0]), abs=1e-7)
    assert np.nanmin(z) >= norm.floor - 1e-6
    assert norm.decode(np.array([norm.floor - 3.0]))[0] == 0.0, "decode never returns negative rain"


def test_scaled_kind_definition(rain):
    norm = Normalizer("log1p_scaled").fit(rain)
    logs = np.log1p(rain[np.isfinite(rain)].astype(np.float64))
    assert norm.std == pytest.approx(logs.std(), rel=1e-9)
    assert norm.floor == 0.0
    np.testing.assert_allclose(norm.encode(np.float32([2.0])), np.log1p(2.0) / logs.std(), rtol=1e-6)
    zs = Normalizer("log1p_zscore").fit(rain)
    assert zs.floor == pytest.approx(-logs.mean() / logs.std())


def test_streaming_fit_equals_one_shot(rain):
    one_shot = Normalizer().fit(rain)
    streamed = Normalizer().fit(iter([rain[:1], rain[1:4], rain[4:]]))
    assert streamed.count == one_shot.count == np.isfinite(rain).sum()
    assert streamed.mean == pytest.approx(one_shot.mean, rel=1e-12)
    assert streamed.std == pytest.approx(one_shot.std, rel=1e-12)


def test_running_moments_precision():
    # Large offset: the naive sum-of-squares variance would lose every digit.
    moments = RunningMoments()
    data = 1e8 + np.random.default_rng(0).normal(size=10_000)
    for chunk in np.array_split(data, 7):
        moments.update(chunk)
    assert moments.std == pytest.approx(data.std(), rel=1e-6)


def test_aux_zscore_and_save_load_identical(tmp_path, rain):
    norm = Normalizer("log1p_zscore").fit(rain, aux={"u": iter([np.array([1.0, 3.0, np.nan]), np.array([5.0])])})
    assert norm.aux["u"]["mean"] == pytest.approx(3.0)
    assert norm.aux["u"]["std"] == pytest.approx(np.std([1.0, 3.0, 5.0]))
    path = norm.save(tmp_path / "stats" / "normalization.json")
    loaded = Normalizer.load(path)
    assert loaded.state_dict() == norm.state_dict()
    np.testing.assert_array_equal(loaded.encode(rain), norm.encode(rain))
    np.testing.assert_array_equal(loaded.encode_aux("u", np.arange(3.0)), norm.encode_aux("u", np.arange(3.0)))


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="valid kinds"):
        Normalizer("minmax")
    with pytest.raises(RuntimeError, match="not fitted"):
        Normalizer().encode(np.ones(3))
    with pytest.raises(ValueError, match="no valid"):
        Normalizer().fit(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="zero spread"):
        Normalizer().fit(np.zeros((4, 4)))
    norm = Normalizer().fit(np.arange(10.0))
    with pytest.raises(KeyError, match="'v'"):
        norm.encode_aux("v", np.ones(2))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        Normalizer.load(bad)
