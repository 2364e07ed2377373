"""RadarMetrics against the numpy reference scores, published worked examples, and DDP exactness."""

from __future__ import annotations

import math
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

from nowcast_infill.metrics import RadarMetrics, box_sum, box_sums, format_threshold, scores

THRESHOLDS = (0.1, 1.0, 5.0, 10.0)
SCALES = (1, 5, 11)


def _random_case(seed: int, b: int = 3, t: int = 3, h: int = 24, w: int = 30):
    """Rain-like fields (mm/h) with random scored masks; NaN outside the mask in both fields."""
    rng = np.random.default_rng(seed)
    target = rng.gamma(0.6, 3.0, (b, t, 1, h, w)) * (rng.random((b, t, 1, h, w)) > 0.4)
    pred = np.clip(target + rng.normal(0.0, 2.0, target.shape), 0.0, None)
    mask = rng.random(target.shape) > 0.35
    mask[0, 0] = False  # a frame without any scored pixel
    mask[1, 1, 0, :, :] = False
    mask[1, 1, 0, 3:5, 4:6] = True  # a nearly empty frame
    # round-trip through float32, as the metric receives float32 tensors
    target = target.astype(np.float32).astype(np.float64)
    pred = pred.astype(np.float32).astype(np.float64)
    target[~mask] = np.nan
    pred[~mask & (rng.random(target.shape) > 0.5)] = np.nan  # garbage outside the mask is never read
    return pred, target, mask


def _tensors(pred, target, mask):
    return (
        torch.tensor(pred, dtype=torch.float32),
        torch.tensor(target, dtype=torch.float32),
        torch.tensor(mask, dtype=torch.float32),
    )


def _reference(pred, target, mask) -> dict[str, float]:
    """The scores of scores.py on frames (..., H, W), named as RadarMetrics names them."""
    p, t, m = pred[..., 0, :, :], target[..., 0, :, :], mask[..., 0, :, :]
    out = {
        "rmse": scores.rmse(p, t, m),
        "mae": scores.mae(p, t, m),
        "bias": scores.bias(p, t, m),
        "ame": scores.ame(p, t, m),
        "temporal_corr": scores.temporal_correlation(p, t, m),
        "spatial_corr": scores.spatial_correlation(p, t, m)[0],
    }
    for thr in THRESHOLDS:
        tag = f"@{format_threshold(thr)}mmh"
        hits, misses, fas, _ = scores.contingency_table(p, t, thr, m)
        out["pod" + tag] = scores.pod(hits, misses)
        out["far" + tag] = scores.far(hits, fas)
        out["csi" + tag] = scores.csi(hits, misses, fas)
        out["fbias" + tag] = scores.frequency_bias(hits, misses, fas)
        for scale in SCALES:
            out[f"fss{tag}_{scale}px"] = scores.fss(p, t, thr, scale, m)
    return out


def _assert_close(got: dict, expected: dict, suffix: str = "", rtol: float = 1e-9, atol: float = 1e-12):
    for name, value in expected.items():
        g = float(got[name + suffix])
        if math.isnan(value):
            assert math.isnan(g), f"{name}{suffix}: expected NaN, got {g}"
        else:
            assert g == pytest.approx(value, rel=rtol, abs=atol), f"{name}{suffix}"


def test_every_score_matches_numpy_reference_overall_and_per_lead():
    pred, target, mask = _random_case(0)
    metric = RadarMetrics(thresholds=THRESHOLDS, fss_scales=SCALES, n_leads=3)
    metric.update(*_tensors(pred, target, mask))
    result = metric.compute()
    _assert_close(result, _reference(pred, target, mask))
    for lead in range(3):
        sl = slice(lead, lead + 1)
        _assert_close(result, _reference(pred[:, sl], target[:, sl], mask[:, sl]), suffix=f"/lead{lead + 1}")
    assert float(result["scored_pixels"]) == mask.sum()
    assert float(result["scored_frames"]) == np.sum(mask.sum(axis=(2, 3, 4)) > 0)
    assert set(result) >= {"csi@1mmh", "fss@0.1mmh_11px", "rmse/lead3", "fss@10mmh_5px/lead2"}


def test_several_updates_equal_one_update():
    pred, target, mask = _random_case(1, b=4)
    once = RadarMetrics(n_leads=3)
    once.update(*_tensors(pred, target, mask))
    twice = RadarMetrics(n_leads=3)
    for part in (slice(0, 1), slice(1, 4)):
        twice.update(*_tensors(pred[part], target[part], mask[part]))
    _assert_close(twice.compute(), {k: float(v) for k, v in once.compute().items()}, rtol=1e-12)


def test_split_states_merge_to_the_single_process_result():
    """DDP sums every state over ranks; merge_state does the same sum for two 'ranks'."""
    pred, target, mask = _random_case(2, b=4)
    single = RadarMetrics(n_leads=3)
    single.update(*_tensors(pred, target, mask))
    rank0, rank1 = RadarMetrics(n_leads=3), RadarMetrics(n_leads=3)
    rank0.update(*_tensors(pred[:2], target[:2], mask[:2]))
    rank1.update(*_tensors(pred[2:], target[2:], mask[2:]))
    rank0.merge_state(rank1)
    _assert_close(rank0.compute(), {k: float(v) for k, v in single.compute().items()}, rtol=1e-12)
    for name, default in rank0._defaults.items():
        assert getattr(rank0, name).dtype == torch.float64, name
        assert rank0._reductions[name] is not None, f"{name} has no dist reduction"


_GLOO_WORKER = textwrap.dedent(
    """
    import os, sys, json
    from datetime import timedelta
    import numpy as np, torch, torch.distributed as dist
    sys.path.insert(0, os.environ["NI_REPO"])
    from nowcast_infill.metrics import RadarMetrics
    rank, world = int(sys.argv[1]), 2
    # A short timeout: a rank whose peer died fails in seconds, not torch's 30 min.
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=float(os.environ["NI_PG_TIMEOUT_S"])))
    data = np.load(os.environ["NI_DATA"])
    part = slice(rank * 2, rank * 2 + 2)
    m = RadarMetrics(n_leads=3)
    m.update(*(torch.tensor(data[k][part], dtype=torch.float32) for k in ("pred", "target", "mask")))
    result = {k: float(v) for k, v in m.compute().items()}
    if rank == 0:
        json.dump(result, open(os.environ["NI_OUT"], "w"))
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path):
    """A real 2-process gloo group (run outside the pytest process) syncs the sums exactly."""
    import json

    from process_watch import reserve_ports, run_watched, scaled

    pred, target, mask = _random_case(3, b=4)
    np.savez(tmp_path / "data.npz", pred=pred, target=target, mask=mask)
    (tmp_path / "worker.py").write_text(_GLOO_WORKER)
    ports = reserve_ports(1, "test_two_gloo_processes_equal_one")
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(ports.ports[0]),
        GLOO_SOCKET_IFNAME="lo",
        NI_PG_TIMEOUT_S=f"{scaled(30):.0f}",
        NI_REPO=str(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        NI_DATA=str(tmp_path / "data.npz"),
        NI_OUT=str(tmp_path / "out.json"),
        OMP_NUM_THREADS="1",
    )
    with ports:  # 2 ranks starting Python + torch: ~5 s on an idle machine
        run_watched({f"rank{r}": [sys.executable, str(tmp_path / "worker.py"), str(r)] for r in range(2)},
                    log_dir=tmp_path, idle_seconds=15, env=env)  # fmt: skip
    single = RadarMetrics(n_leads=3)
    single.update(*_tensors(pred, target, mask))
    _assert_close(json.loads((tmp_path / "out.json").read_text()), {k: float(v) for k, v in single.compute().items()}, rtol=1e-12)


def test_finley_tornado_contingency_table():
    """Finley (1884) tornado forecasts, the classic worked example of categorical verification.

    Hits 28, false alarms 72, misses 23, correct negatives 2680; Jolliffe & Stephenson
    (2012, ch. 3) and the WWRP/WGNE verification pages (cawcr.gov.au/projects/verification,
    "Methods for dichotomous forecasts") give POD 0.55, FAR 0.72, CSI 0.228 (threat score)
    and frequency bias 1.96.
    """
    hits, false_alarms, misses, correct_negatives = 28, 72, 23, 2680
    pairs = [(1, 1)] * hits + [(1, 0)] * false_alarms + [(0, 1)] * misses + [(0, 0)] * correct_negatives
    fc = np.array([p for p, _ in pairs], dtype=np.float64) * 2.0  # 2 mm/h = tornado, threshold 1
    ob = np.array([o for _, o in pairs], dtype=np.float64) * 2.0
    assert scores.contingency_table(fc, ob, 1.0) == (hits, misses, false_alarms, correct_negatives)

    metric = RadarMetrics(thresholds=(1.0,), fss_scales=(1,))
    shape = (1, 1, 1, 1, fc.size)
    metric.update(torch.tensor(fc).view(shape), torch.tensor(ob).view(shape), torch.ones(shape))
    r = metric.compute()
    assert float(r["pod@1mmh"]) == pytest.approx(0.549, abs=5e-4)
    assert float(r["far@1mmh"]) == pytest.approx(0.720, abs=5e-4)
    assert float(r["csi@1mmh"]) == pytest.approx(0.228, abs=5e-4)
    assert float(r["fbias@1mmh"]) == pytest.approx(1.96, abs=5e-3)
    assert scores.pod(hits, misses) == pytest.approx(0.549, abs=5e-4)
    assert scores.far(hits, false_alarms) == pytest.approx(0.720, abs=5e-4)
    assert scores.csi(hits, misses, false_alarms) == pytest.approx(0.228, abs=5e-4)
    assert scores.frequency_bias(hits, misses, false_alarms) == pytest.approx(1.96, abs=5e-3)


@pytest.mark.parametrize("scale,shift", [(1, 0), (1, 2), (5, 1), (5, 3), (5, 5), (11, 4), (11, 7)])
def test_fss_displaced_single_pixel_has_closed_form(scale, shift):
    """FSS of one rain pixel displaced by d pixels, window n (odd), far from the edges.

    Each fraction field is 1/n^2 on the n x n square around its pixel; the two squares
    overlap on n(n-d) pixels when d < n, so sum (Pf-Po)^2 = 2nd/n^4 and
    sum Pf^2 + Po^2 = 2n^2/n^4, giving FSS = 1 - d/n (and 0 for d >= n). This is the
    idealised displacement case discussed by Roberts & Lean (2008, section 3b) and
    Mittermaier & Roberts (2010, Wea. Forecasting 25, 343-354).
    """
    size = 60
    obs = np.zeros((size, size))
    fc = np.zeros((size, size))
    obs[30, 20] = 3.0
    fc[30, 20 + shift] = 3.0
    expected = max(0.0, 1.0 - shift / scale)
    assert scores.fss(fc, obs, 1.0, scale) == pytest.approx(expected, abs=1e-12)
    metric = RadarMetrics(thresholds=(1.0,), fss_scales=(scale,))
    shape = (1, 1, 1, size, size)
    metric.update(torch.tensor(fc).view(shape), torch.tensor(obs).view(shape), torch.ones(shape))
    assert float(metric.compute()[f"fss@1mmh_{scale}px"]) == pytest.approx(expected, abs=1e-12)


def test_fss_properties_of_roberts_and_lean():
    """Roberts & Lean (2008): FSS = 1 for identical fields; with a window covering the whole
    (masked) domain every fraction is the domain frequency, so FSS = 2 f_o f_f / (f_o^2 + f_f^2)."""
    rng = np.random.default_rng(5)
    h, w = 20, 26
    obs = rng.gamma(0.5, 4.0, (h, w))
    fc = rng.gamma(0.5, 6.0, (h, w))
    mask = rng.random((h, w)) > 0.3
    assert scores.fss(obs, obs, 1.0, 5, mask) == 1.0
    f_o = np.mean(obs[mask] >= 1.0)
    f_f = np.mean(fc[mask] >= 1.0)
    whole = 2 * max(h, w) + 1
    expected = scores.fss_asymptotic(f_o, f_f)
    assert scores.fss(fc, obs, 1.0, whole, mask) == pytest.approx(expected, rel=1e-12)
    metric = RadarMetrics(thresholds=(1.0,), fss_scales=(1, whole))
    shape = (1, 1, 1, h, w)
    metric.update(torch.tensor(fc).view(shape), torch.tensor(obs).view(shape), torch.tensor(mask).view(shape).float())
    assert float(metric.compute()[f"fss@1mmh_{whole}px"]) == pytest.approx(expected, rel=1e-12)
    assert scores.fss_uniform(0.2) == pytest.approx(0.6)


def test_box_sum_equals_direct_window_sum():
    rng = np.random.default_rng(6)
    x = torch.tensor(rng.integers(0, 2, (2, 13, 17)), dtype=torch.float64)
    for scale in (1, 3, 7, 31):
        r = scale // 2
        padded = torch.nn.functional.pad(x, (r, r, r, r))
        direct = padded.unfold(1, scale, 1).unfold(2, scale, 1).sum((-1, -2))
        assert torch.equal(box_sum(x, scale), direct)


def test_constant_frames_are_skipped_by_spatial_corr_and_counted():
    target = np.zeros((1, 2, 1, 8, 8))
    pred = np.zeros_like(target)
    rng = np.random.default_rng(7)
    target[0, 1, 0] = rng.gamma(1.0, 2.0, (8, 8))
    pred[0, 1, 0] = target[0, 1, 0] * 2 + 1
    mask = np.ones_like(target, dtype=bool)
    metric = RadarMetrics(n_leads=2)
    metric.update(*_tensors(pred, target, mask))
    r = metric.compute()
    assert float(r["spatial_corr"]) == pytest.approx(1.0)  # only the rainy frame counts
    assert float(r["spatial_corr_skipped_frames"]) == 1
    assert math.isnan(float(r["spatial_corr/lead1"]))
    assert scores.spatial_correlation(pred[:, :, 0], target[:, :, 0], mask[:, :, 0]) == (pytest.approx(1.0), 1)


def test_undefined_scores_are_nan_not_zero():
    shape = (1, 1, 1, 6, 6)
    metric = RadarMetrics()
    metric.update(torch.zeros(shape), torch.zeros(shape), torch.ones(shape))
    r = metric.compute()
    assert math.isnan(float(r["pod@1mmh"])) and math.isnan(float(r["csi@1mmh"]))
    assert math.isnan(float(r["fss@1mmh_5px"]))
    assert float(r["rmse"]) == 0.0


def test_bad_input_is_refused_with_the_field_named():
    shape = (1, 2, 1, 6, 6)
    target = torch.ones(shape)
    target[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="target_mm_h is NaN"):
        RadarMetrics(n_leads=2).update(torch.ones(shape), target, torch.ones(shape))
    with pytest.raises(ValueError, match="n_leads=1"):
        RadarMetrics(n_leads=1).update(torch.ones(shape), torch.ones(shape), torch.ones(shape))
    with pytest.raises(ValueError, match=r"\(B, T, 1, H, W\)"):
        RadarMetrics().update(torch.ones(2, 6, 6), torch.ones(2, 6, 6), torch.ones(2, 6, 6))
    with pytest.raises(ValueError, match="odd"):
        RadarMetrics(fss_scales=(4,))
    with pytest.raises(ValueError, match="pred has NaN"):
        scores.rmse(np.array([np.nan, 1.0]), np.array([1.0, 1.0]))


# --- the fast update path: row bands, frame chunks, integer window sums, input dtypes -------


def _fss_reference(pred, target, mask, thresholds, scales) -> dict[str, float]:
    p, t, m = pred[..., 0, :, :], target[..., 0, :, :], mask[..., 0, :, :]
    return {
        f"fss@{format_threshold(thr)}mmh_{scale}px": scores.fss(p, t, thr, scale, m)
        for thr in thresholds
        for scale in scales
    }


@pytest.mark.parametrize("band_elements_per_thread", [1, 1440])
def test_row_bands_and_frame_chunks_match_the_reference(monkeypatch, band_elements_per_thread):
    """Bands of 1 row, and bands that do not divide the 23 rows, with one frame per chunk:
    the halo rows each band borrows from its neighbours must give the whole-field sums."""
    from nowcast_infill.metrics import pieces, radar_metrics

    monkeypatch.setattr(pieces, "BAND_ELEMENTS_PER_THREAD", band_elements_per_thread)
    monkeypatch.setattr(radar_metrics, "CHUNK_ELEMENTS", 1)
    pred, target, mask = _random_case(8, b=2, t=2, h=23, w=30)
    metric = RadarMetrics(thresholds=THRESHOLDS, fss_scales=SCALES, n_leads=2)
    metric.update(*_tensors(pred, target, mask))
    result = metric.compute()
    _assert_close(result, _reference(pred, target, mask))
    _assert_close(result, _reference(pred[:, 1:], target[:, 1:], mask[:, 1:]), suffix="/lead2")


@pytest.mark.parametrize(
    "scales,window_dtype",
    [((3, 15), torch.uint8), ((5, 17), torch.int16), ((33,), torch.int16), ((55,), torch.int16)],
)
def test_fss_at_large_scales_is_exact_in_every_window_dtype(scales, window_dtype):
    """Window sums run in the narrowest integer type that holds scale^2 (uint8 up to 15 px);
    squares of window sums leave float32 beyond 53 px (2 * 55^4 > 2^24)."""
    from nowcast_infill.metrics.window_sums import window_sum_dtype

    assert window_sum_dtype(max(scales)) == window_dtype
    pred, target, mask = _random_case(9, b=2, t=2, h=30, w=36)
    thresholds = (0.1, 5.0)
    metric = RadarMetrics(thresholds=thresholds, fss_scales=scales, n_leads=2)
    metric.update(*_tensors(pred, target, mask))
    _assert_close(metric.compute(), _fss_reference(pred, target, mask, thresholds, scales))


def test_box_sums_of_several_scales_equal_box_sum_in_integer_types():
    rng = np.random.default_rng(10)
    x = torch.tensor(rng.integers(0, 2, (3, 19, 23)), dtype=torch.uint8)
    expected = [box_sum(x.double(), s) for s in (3, 5, 11, 15)]
    for got, want in zip(box_sums(x, (3, 5, 11, 15)), expected):
        assert got.dtype == torch.uint8
        assert torch.equal(got.double(), want)


def test_values_at_the_thresholds_count_as_in_the_float64_reference():
    """Thresholds are compared in float32 after rounding them *up*: float32(0.7) =
    0.69999999 is below 0.7 in float64, so it is no event, although rounding the
    threshold to the nearest float32 would make it one; the next float32 is one."""
    f32_07 = np.float32(0.7)
    assert float(f32_07) < 0.7
    values = [f32_07, np.nextafter(f32_07, np.float32(1)), np.float32(1.0), np.nextafter(np.float32(1.0), np.float32(0))]
    pred = np.tile(np.array(values, np.float32), 4).reshape(1, 1, 1, 4, 4)
    target = np.roll(pred, 1, axis=-1)
    mask = np.ones(pred.shape, dtype=bool)
    p64, t64, m = pred.astype(np.float64)[0, :, 0], target.astype(np.float64)[0, :, 0], mask[0, :, 0]
    for dtype in (torch.float32, torch.float64):
        metric = RadarMetrics(thresholds=(0.7, 1.0), fss_scales=(1, 3))
        metric.update(torch.tensor(pred, dtype=dtype), torch.tensor(target, dtype=dtype), torch.tensor(mask))
        result = metric.compute()
        # columns (pred | target): (0.69999999 | below 1), (above 0.7 | 0.69999999), (1 | above 0.7), (below 1 | 1)
        for i, (thr, table) in enumerate(((0.7, (8, 4, 4)), (1.0, (0, 4, 4)))):
            assert scores.contingency_table(p64, t64, thr, m)[:3] == table
            got = (metric.hits[0, i], metric.misses[0, i], metric.false_alarms[0, i])
            assert tuple(int(x) for x in got) == table, (dtype, thr)
            assert float(result[f"fss@{format_threshold(thr)}mmh_3px"]) == pytest.approx(
                scores.fss(p64, t64, thr, 3, m), rel=1e-12
            )


def test_bf16_inputs_are_scored_as_their_float32_values():
    pred, target, mask = _random_case(11)
    p16, t16 = (torch.tensor(x).nan_to_num(0.0).to(torch.bfloat16) for x in (pred, target))
    m = torch.tensor(mask, dtype=torch.float32)
    from_bf16 = RadarMetrics(n_leads=3)
    from_bf16.update(p16, t16, m.to(torch.bfloat16))
    from_float32 = RadarMetrics(n_leads=3)
    from_float32.update(p16.float(), t16.float(), m)
    for name, value in from_float32.compute().items():
        got = from_bf16.compute()[name]
        assert torch.equal(got, value) or (torch.isnan(got) and torch.isnan(value)), name


def test_a_refused_batch_leaves_the_states_unchanged(monkeypatch):
    """The NaN sits in the last chunk: the chunks before it must not have been added."""
    from nowcast_infill.metrics import radar_metrics

    monkeypatch.setattr(radar_metrics, "CHUNK_ELEMENTS", 1)
    pred, target, mask = _random_case(12, b=2, t=2)
    metric = RadarMetrics(n_leads=2)
    metric.update(*_tensors(pred, target, mask))
    before = {name: getattr(metric, name).clone() for name in metric._defaults}
    bad_pred = pred.copy()
    bad_pred[1, 1, 0][mask[1, 1, 0]] = np.inf
    with pytest.raises(ValueError, match="pred_mm_h is NaN/inf"):
        metric.update(*_tensors(bad_pred, target, mask))
    for name, value in before.items():
        assert torch.equal(getattr(metric, name), value), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_update_equals_cpu_update():
    pred, target, mask = _random_case(13)
    cpu = RadarMetrics(n_leads=3)
    cpu.update(*_tensors(pred, target, mask))
    gpu = RadarMetrics(n_leads=3).to("cuda")
    gpu.update(*(x.cuda() for x in _tensors(pred, target, mask)))
    got = {k: float(v) for k, v in gpu.compute().items()}
    _assert_close(got, {k: float(v) for k, v in cpu.compute().items()}, rtol=1e-12)
    bf16 = RadarMetrics(n_leads=3).to("cuda")
    bf16.update(*(x.cuda().nan_to_num(0.0).to(torch.bfloat16) for x in _tensors(pred, target, mask)))
    assert math.isfinite(float(bf16.compute()["fss@1mmh_5px"]))
