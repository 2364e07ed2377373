"""Tiled inference, archive infilling (resumable) and nowcast products."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from factories import make_test_dataset, write_dataset, write_test_store
from process_watch import LoadScaledBudget, reserve_ports, run_watched
from nowcast_infill.errors import UserError
from nowcast_infill.inference.archive import (
    STATUS_COMPLETE, STATUS_INFILLED, STATUS_PENDING, NoValidFrameError, derive_coverage, infill_store,
)
from nowcast_infill.inference.nowcast_product import write_nowcast
from nowcast_infill.inference.outputs import open_radar_store
from nowcast_infill.inference.predictors import load_predictor
from nowcast_infill.data.tiling import predict_tiled

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- tiling

def _identity(x, x_mask, aux, aux_mask):
    return x[:, -1:]


@pytest.mark.parametrize("shape", [(900, 900), (1100, 900), (70, 100)])
def test_tiled_pointwise_fn_equals_untiled_exactly(shape):
    x = torch.rand(2, 1, *shape)
    out = predict_tiled(_identity, x, torch.ones_like(x), tile=256, overlap=32, multiple=16, batch_size=3)
    assert out.shape == (1, 1, *shape)
    assert torch.equal(out[0], x[-1])


def test_tiled_conv_seams_are_blended_away():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 7, padding=3)

    def fn(x, x_mask, aux, aux_mask):
        return conv(x[:, 0]).unsqueeze(1)

    x = torch.rand(1, 1, 300, 260)
    with torch.no_grad():
        ref = fn(x[None], None, None, None)[0]
    hard = predict_tiled(fn, x, torch.ones_like(x), tile=128, overlap=0, multiple=8)
    blended = predict_tiled(fn, x, torch.ones_like(x), tile=128, overlap=32, multiple=8)
    err_hard, err_blend = (hard - ref).abs(), (blended - ref).abs()
    assert err_blend.max() < 0.5 * err_hard.max()
    assert err_blend.mean() < 0.2 * err_hard.mean()


def test_tiled_rejects_a_wrong_fn_output():
    x = torch.rand(1, 1, 64, 64)
    with pytest.raises(ValueError, match="expected"):
        predict_tiled(lambda a, b, c, d: a[:, 0], x, torch.ones_like(x), tile=32, overlap=8)
    with pytest.raises(ValueError, match="multiple"):
        predict_tiled(_identity, x, torch.ones_like(x), tile=30, multiple=16)


# ----------------------------------------------------------------------------- archive infilling

def _store_with_holes(path: Path, n_time: int = 8, name: str = "in.zarr", **kwargs) -> tuple[Path, np.ndarray]:
    """A factory store (no-data block rows 0:10, cols 0:12) with an outage hole in frames 2, 5 and 6,
    frame 4 missing. Returns the path and the hole mask (H, W)."""
    store = write_test_store(path / name, n_time=n_time, missing=(4,), **kwargs)
    ds = xr.open_zarr(store)
    hole = np.zeros(ds["precip"].shape[1:], bool)
    hole[20:30, 20:34] = True
    hole[5:15, 8:16] = True  # touches the no-data block
    precip = ds["precip"].values
    for t in (2, 5, 6):
        precip[t][hole] = np.nan
    ds["precip"].values[:] = precip
    import zarr

    zarr.open_group(str(store), mode="r+")["precip"][:] = precip
    return store, hole


def test_archive_infill_flags_holes_and_leaves_the_rest_bit_identical(tmp_path):
    src_path, hole = _store_with_holes(tmp_path)
    predictor, info = load_predictor("linear", "infill")
    summary = infill_store(predictor, src_path, tmp_path / "out.zarr", model_info=info, progress=False)
    src, out = open_radar_store(src_path), xr.open_zarr(tmp_path / "out.zarr")
    before, after = src["precip"].values, out["precip"].values
    coverage = out["coverage"].values
    assert not coverage[:10, :12].any() and coverage[10:, 12:].all()

    status = out["infill_status"].values
    assert list(status) == [1, 1, 2, 1, 3, 2, 2, 1]
    assert summary["infilled"] == 3 and summary["not_infillable"] == 1 and summary["pending"] == 0
    for t in np.nonzero(status == STATUS_COMPLETE)[0]:
        assert np.array_equal(after[t].view(np.uint32), before[t].view(np.uint32))
    targets = hole & coverage
    for t in (2, 5, 6):
        assert np.array_equal(out["infilled"].values[t].astype(bool), targets)
        assert np.isfinite(after[t][targets]).all()
        observed = np.isfinite(before[t])
        assert np.array_equal(after[t][observed], before[t][observed])
        assert np.isnan(after[t][~coverage]).all()  # outside coverage: untouched NaN
    assert out["infilled"].values[[0, 1, 3, 4, 7]].sum() == 0
    assert np.isnan(after[4]).all() and out["missing_frame"].values[4]
    assert out.attrs["model"] == "linear" and "source_store" in out.attrs
    assert out["infilled"].attrs["flag_meanings"] == "observed_or_no_data infilled"


def test_archive_infill_outside_coverage_when_asked(tmp_path):
    src_path, _ = _store_with_holes(tmp_path)
    predictor, info = load_predictor("nearest", "infill")
    infill_store(predictor, src_path, tmp_path / "out.zarr", model_info=info, progress=False,
                 infill_outside_coverage=True)
    out = xr.open_zarr(tmp_path / "out.zarr")
    assert np.isfinite(out["precip"].values[0]).all()  # the no-data block is filled too
    assert out["infilled"].values[0][:10, :12].all()


def test_resume_refuses_a_different_model(tmp_path):
    src_path, _ = _store_with_holes(tmp_path)
    p, info = load_predictor("nearest", "infill")
    infill_store(p, src_path, tmp_path / "out.zarr", model_info=info, progress=False)
    p2, info2 = load_predictor("laplace", "infill")
    with pytest.raises(ValueError, match="delete it"):
        infill_store(p2, src_path, tmp_path / "out.zarr", model_info=info2, progress=False)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(ValueError, match="m.ckpt: cannot be read as a PyTorch checkpoint"):
        load_predictor(str(ckpt), "infill")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_predictor(str(tmp_path / "absent.ckpt"), "infill")
    with pytest.raises(ValueError, match="valid names"):
        load_predictor("unet", "infill")


SLOW_INFILL = textwrap.dedent(
    """
    import sys, time
    from nowcast_infill.inference.archive import infill_store
    from nowcast_infill.inference.predictors import load_predictor
    base, info = load_predictor("nearest", "infill")
    delay = float(sys.argv[3])
    def predictor(x, cov):
        time.sleep(delay)
        return base(x, cov)
    infill_store(predictor, sys.argv[1], sys.argv[2], model_info=info, progress=False)
    """
)


def test_resume_after_kill_writes_every_frame_once(tmp_path):
    store = write_test_store(tmp_path / "in.zarr", n_time=16)
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    precip = group["precip"][:]
    # Every frame incomplete, so every frame calls the predictor; the hole moves so the
    # derived coverage (valid in >= half the frames) still contains it.
    precip[0::2, 20:30, 20:30] = np.nan
    precip[1::2, 12:20, 30:40] = np.nan
    group["precip"][:] = precip
    out_path = tmp_path / "out.zarr"
    script = tmp_path / "slow.py"
    script.write_text(SLOW_INFILL)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(store), str(out_path), "0.4"], env=env)
    try:
        # Load-scaled: starting Python, torch and zarr and writing 3 frames takes ~10 s idle.
        budget = LoadScaledBudget(15)
        done = 0
        while not budget.expired() and proc.poll() is None:
            if (out_path / "infill_status" / "zarr.json").exists():
                done = int((zarr.open_array(str(out_path / "infill_status"), mode="r")[:] > 0).sum())
                if done >= 3:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    status = zarr.open_array(str(out_path / "infill_status"), mode="r")[:]
    finished = np.nonzero(status != STATUS_PENDING)[0]
    assert 3 <= finished.size < 16, f"kill did not land mid-way ({finished.size} frames written)"
    chunk_ids = {t: os.stat(out_path / "precip" / "c" / str(t) / "0" / "0").st_ino for t in finished}

    base, info = load_predictor("nearest", "infill")
    calls = []

    def counting(x, cov):
        calls.append(1)
        return base(x, cov)

    summary = infill_store(counting, store, out_path, model_info=info, progress=False)
    assert len(calls) == 16 - finished.size  # no frame written twice, none skipped
    assert summary["pending"] == 0 and summary["written_this_run"] == 16 - finished.size
    for t, ino in chunk_ids.items():
        assert os.stat(out_path / "precip" / "c" / str(t) / "0" / "0").st_ino == ino
    reference = tmp_path / "ref.zarr"
    infill_store(base, store, reference, model_info=info, progress=False)
    resumed, ref = xr.open_zarr(out_path), xr.open_zarr(reference)
    assert np.array_equal(resumed["precip"].values, ref["precip"].values, equal_nan=True)
    assert np.array_equal(resumed["infilled"].values, ref["infilled"].values)
    assert (resumed["infill_status"].values == STATUS_INFILLED).all()


def test_derived_coverage_ignores_missing_frames(tmp_path):
    store = write_test_store(tmp_path / "in.zarr", n_time=6, missing=(1, 2, 3, 4))
    coverage = derive_coverage(open_radar_store(store), 0.5)
    assert not coverage[:10, :12].any() and coverage[10:, 12:].all()


def _store_without_valid_frame(path: Path, kind: str) -> Path:
    ds = make_test_dataset(n_time=6, missing=range(6) if kind == "all_missing" else ())
    values = ds["precip"].values
    if kind == "all_nan":
        values[:] = np.nan  # no-data everywhere, yet not flagged missing
    elif kind == "implausible":
        values[:] = np.where(np.isnan(values), np.nan, -1.0)  # negative rates only ...
        values[2, 20:, 20:] = np.inf  # ... and +inf, 1e30
        values[3, 20:, 20:] = 1e30
    return write_dataset(path, ds)


@pytest.mark.parametrize("kind", ["all_missing", "all_nan", "implausible"])
def test_infill_refuses_a_store_without_valid_frame(tmp_path, kind, monkeypatch):
    store = _store_without_valid_frame(tmp_path / "empty.zarr", kind)
    monkeypatch.chdir(tmp_path)
    predictor, info = load_predictor("nearest", "infill")
    coverage = np.ones((40, 48), bool)  # a given coverage: nothing else would stop it
    with pytest.raises(NoValidFrameError, match=r"^empty\.zarr: no valid frame: of its 6 frames") as err:
        infill_store(predictor, "empty.zarr", "out.zarr", model_info=info, coverage=coverage, progress=False)
    assert isinstance(err.value, UserError) and not (tmp_path / "out.zarr").exists()
    # One valid pixel is enough to infill from.
    ds = xr.open_zarr(store).load()
    ds["precip"].values[5, 30, 30] = 0.5
    ds["missing_frame"].values[5] = False
    write_dataset(tmp_path / "one.zarr", ds)
    assert infill_store(predictor, "one.zarr", "out.zarr", model_info=info, coverage=coverage,
                        progress=False)["frames"] == 6


def test_ni_infill_on_a_store_without_valid_frame_exits_non_zero(tmp_path):
    _store_without_valid_frame(tmp_path / "empty.zarr", "all_nan")
    run = subprocess.run([sys.executable, "-m", "nowcast_infill.cli.infill", "input=./empty.zarr", "output=out.zarr",
                          "progress=false"], capture_output=True, text=True, cwd=tmp_path, timeout=180,
                         env={**os.environ, "NI_LOG_DIR": str(tmp_path / "logs")})
    assert run.returncode != 0
    assert "./empty.zarr: no valid frame" in run.stderr and not (tmp_path / "out.zarr").exists()


# ----------------------------------------------------------------------------- nowcast products

def test_nowcast_product_has_lead_times_and_issue_time(tmp_path):
    store = write_test_store(tmp_path / "in.zarr", n_time=8)
    predictor, info = load_predictor("persistence", "nowcast", n_leads=3)
    write_nowcast(predictor, store, tmp_path / "nc.zarr", past=4, n_leads=3, model_info=info,
                  issue_time="2021-06-01T00:25")
    src, nc = open_radar_store(store), xr.open_zarr(tmp_path / "nc.zarr")
    assert nc["precip"].dims == ("lead_time", "y", "x")
    assert list(nc["lead_time"].values) == [np.timedelta64(k * 300, "s") for k in (1, 2, 3)]
    issue = np.datetime64("2021-06-01T00:25", "ns")
    assert nc["forecast_reference_time"].values == issue
    assert nc["time"].values[0] == issue + np.timedelta64(300, "s")
    assert nc["lead_time"].attrs["standard_name"] == "forecast_period"
    last = src["precip"].sel(time=issue).values
    assert np.array_equal(nc["precip"].values[2], last, equal_nan=True)
    assert nc["precip"].attrs["units"] == "mm h-1"
    with pytest.raises(FileExistsError, match="overwrite"):
        write_nowcast(predictor, store, tmp_path / "nc.zarr", past=4, n_leads=3)


def test_cli_configs_compose_with_baselines(tmp_path):
    from hydra import compose, initialize_config_dir

    from nowcast_infill.pipeline import infill, nowcast

    store, _ = _store_with_holes(tmp_path)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("infill", overrides=[f"input={store}", f"output={tmp_path / 'o.zarr'}", "model=laplace",
                                           "progress=false"])
        assert infill(cfg)["infilled"] == 3
        cfg = compose("nowcast", overrides=[f"input={store}", f"output={tmp_path / 'n.zarr'}", "model=sprog",
                                            "past=3", "n_leads=2"])
        nowcast(cfg)
    assert xr.open_zarr(tmp_path / "n.zarr").sizes["lead_time"] == 2


# ----------------------------------------------------------------------------- trained checkpoints

def _train_tiny(tmp_path: Path, store: Path, *extra: str) -> str:
    """A few optimisation steps of a tiny PConvUNet through the real `ni-train` entry point."""
    from nowcast_infill.pipeline.fitting import train
    from test_configs import TINY_NET, compose_config, tiny_overrides

    cfg = compose_config("train", [
        *tiny_overrides(tmp_path, store), f"data.stats_path={tmp_path / 'stats.json'}", TINY_NET,
        "data.split.gap=2", "data.eval_masks.n=2", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1", "test=false", *extra,
    ])
    return train(cfg)["last_model_path"]


@pytest.fixture(scope="module")
def infill_ckpt(tmp_path_factory) -> str:
    """Infill checkpoint (context 1, crop 32, tiny net of depth 3) trained with aux fields u and t."""
    from factories import LINEAR_AUX

    tmp = tmp_path_factory.mktemp("train_infill")
    store = write_test_store(tmp / "train.zarr", n_time=40, ny=48, nx=48, aux=LINEAR_AUX)
    return _train_tiny(tmp, store, "data.aux=all")


@pytest.fixture(scope="module")
def nowcast_ckpt(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("train_nowcast")
    store = write_test_store(tmp / "train.zarr", n_time=40, ny=48, nx=48)
    return _train_tiny(tmp, store, "task=nowcast", "task.past=2", "task.future=3", "data.aux=null")


def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=overrides)


def test_ni_infill_with_checkpoint_fills_only_the_holes(infill_ckpt, tmp_path):
    from factories import LINEAR_AUX
    from nowcast_infill.pipeline import infill
    from nowcast_infill.io.files import file_sha256

    src_path, hole = _store_with_holes(tmp_path, aux=LINEAR_AUX)
    cfg = _compose("infill", [f"input={src_path}", f"output={tmp_path / 'out.zarr'}", f"ckpt_path={infill_ckpt}",
                              "progress=false", "checkpoint.device=cpu"])
    summary = infill(cfg)
    src, out = open_radar_store(src_path), xr.open_zarr(tmp_path / "out.zarr")
    before, after, coverage = src["precip"].values, out["precip"].values, out["coverage"].values
    # With one frame of context the model also fills the missing frame 4 from its neighbours.
    assert list(out["infill_status"].values) == [1, 1, 2, 1, 2, 2, 2, 1]
    assert summary["infilled"] == 4 and summary["pending"] == 0
    for t in np.nonzero(out["infill_status"].values == STATUS_COMPLETE)[0]:
        assert np.array_equal(after[t].view(np.uint32), before[t].view(np.uint32))
    for t in (2, 5, 6):
        targets = hole & coverage
        assert np.array_equal(out["infilled"].values[t].astype(bool), targets)
        assert np.isfinite(after[t][targets]).all() and (after[t][targets] >= 0).all()
        observed = np.isfinite(before[t])
        assert np.array_equal(after[t][observed].view(np.uint32), before[t][observed].view(np.uint32))
        assert np.isnan(after[t][~coverage]).all()  # outside the radar coverage: left as no data
    assert np.isfinite(after[4][coverage]).all() and np.isnan(after[4][~coverage]).all()
    assert out.attrs["model_checkpoint_sha256"] == file_sha256(infill_ckpt)
    config = json.loads(out.attrs["model_config"])
    assert config["hyper_parameters"]["task"] == "infill" and config["aux"] == ["t", "u"]
    assert config["tile"] == 32  # the training crop size, read from the run's config.yaml


def test_checkpoint_with_aux_refuses_a_store_without_aux(infill_ckpt, tmp_path):
    src_path, _ = _store_with_holes(tmp_path)
    predictor, info = load_predictor(infill_ckpt, "infill", device="cpu")
    with pytest.raises(ValueError, match=r"in\.zarr: the model .* needs auxiliary variable\(s\) aux_t, aux_u"):
        infill_store(predictor, src_path, tmp_path / "out.zarr", model_info=info, context=1, progress=False)


def test_checkpoint_infill_resumes_after_a_crash(infill_ckpt, tmp_path):
    from factories import LINEAR_AUX

    src_path, _ = _store_with_holes(tmp_path, aux=LINEAR_AUX)
    predictor, info = load_predictor(infill_ckpt, "infill", device="cpu")

    class Crash(RuntimeError):
        pass

    calls = []

    def crashing(x, cov, *, frame_index):
        if len(calls) == 2:
            raise Crash("killed")
        calls.append(int(frame_index[1]))
        return predictor(x, cov, frame_index=frame_index)

    crashing.wants_frame_index = True
    crashing.bind = predictor.bind
    with pytest.raises(Crash):
        infill_store(crashing, src_path, tmp_path / "out.zarr", model_info=info, context=1, progress=False)
    assert calls == [2, 4]
    summary = infill_store(predictor, src_path, tmp_path / "out.zarr", model_info=info, context=1, progress=False)
    assert summary["written_this_run"] == 3 and summary["pending"] == 0  # frames 0-4 were done before the crash
    infill_store(predictor, src_path, tmp_path / "ref.zarr", model_info=info, context=1, progress=False)
    resumed, ref = xr.open_zarr(tmp_path / "out.zarr"), xr.open_zarr(tmp_path / "ref.zarr")
    assert np.array_equal(resumed["precip"].values, ref["precip"].values, equal_nan=True)
    assert np.array_equal(resumed["infill_status"].values, ref["infill_status"].values)


def test_ni_nowcast_with_checkpoint_writes_its_lead_times(nowcast_ckpt, tmp_path):
    from nowcast_infill.pipeline import nowcast
    from nowcast_infill.io.files import file_sha256

    store = write_test_store(tmp_path / "in.zarr", n_time=8)
    cfg = _compose("nowcast", [f"input={store}", f"output={tmp_path / 'nc.zarr'}", f"ckpt_path={nowcast_ckpt}",
                               "issue_time=2021-06-01T00:25", "checkpoint.device=cpu"])
    nowcast(cfg)
    nc = xr.open_zarr(tmp_path / "nc.zarr")
    assert list(nc["lead_time"].values) == [np.timedelta64(k * 300, "s") for k in (1, 2, 3)]
    assert nc["forecast_reference_time"].values == np.datetime64("2021-06-01T00:25", "ns")
    forecast = nc["precip"].values
    nodata = np.zeros(forecast.shape[1:], bool)
    nodata[:10, :12] = True  # the factory's no-data block: never observed, so no forecast
    assert np.isnan(forecast[:, nodata]).all()
    assert np.isfinite(forecast[:, ~nodata]).all() and (forecast[:, ~nodata] >= 0).all()
    assert nc.attrs["model_checkpoint_sha256"] == file_sha256(nowcast_ckpt) and nc.attrs["past_frames"] == 2
    with pytest.raises(ValueError, match="trained for n_leads=3"):
        nowcast(_compose("nowcast", [f"input={store}", f"output={tmp_path / 'x.zarr'}",
                                             f"ckpt_path={nowcast_ckpt}", "n_leads=6"]))
    with pytest.raises(ValueError, match="task='nowcast'; ni-infill needs"):
        load_predictor(nowcast_ckpt, "infill")


def test_checkpoint_on_a_full_radolan_grid(infill_ckpt, tmp_path):
    """1100 x 900 (RADOLAN DE1200 rows x cols order of the YW product) by 64-px tiles, memory bounded."""
    from factories import LINEAR_AUX

    store = write_test_store(tmp_path / "big.zarr", n_time=3, ny=1100, nx=900, aux=LINEAR_AUX, aux_factor=20)
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    frame = group["precip"][1]
    frame[500:560, 300:420] = np.nan
    group["precip"][1] = frame
    predictor, info = load_predictor(infill_ckpt, "infill", tile=64, device="cpu", batch_size=16)
    # CPU time of this process (all torch threads), not wall time: a busy machine does not
    # inflate it. 60 s of wall on each of the 2 cores of the test machine.
    start = time.process_time()
    summary = infill_store(predictor, store, tmp_path / "out.zarr", model_info=info, context=1, progress=False)
    elapsed = time.process_time() - start
    out = xr.open_zarr(tmp_path / "out.zarr")["precip"].values
    assert summary["infilled"] == 1 and summary["complete"] == 2
    assert np.isfinite(out[1, 500:560, 300:420]).all() and (out[1, 500:560, 300:420] >= 0).all()
    assert elapsed < 120, f"1100x900 frame took {elapsed:.1f} s of CPU"


def test_tiled_needed_pixels_get_the_full_grid_blend_exactly():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, 1, 5, padding=2, dtype=torch.float64)

    def fn(x, x_mask, aux, aux_mask):
        return conv(x[:, 0]).unsqueeze(1)

    x = torch.rand(1, 1, 200, 170, dtype=torch.float64)
    needed = torch.zeros(200, 170, dtype=torch.bool)
    needed[90:100, 40:45] = True
    calls = []
    full = predict_tiled(fn, x, torch.ones_like(x), tile=64, overlap=16)
    part = predict_tiled(lambda *a: calls.append(1) or fn(*a), x, torch.ones_like(x), tile=64, overlap=16,
                         batch_size=1, needed=needed)
    assert torch.equal(part[..., needed], full[..., needed])
    assert torch.isnan(part[..., ~needed]).all()
    assert len(calls) < 6  # of 16 tiles, only those holding a needed pixel


DDP_INFILL = textwrap.dedent(
    """
    import sys
    from nowcast_infill.inference.archive import infill_store
    from nowcast_infill.inference.predictors import load_predictor
    if __name__ == "__main__":
        predictor, info = load_predictor(sys.argv[1], "infill", device="cpu")
        print(infill_store(predictor, sys.argv[2], sys.argv[3], model_info=info, context=1, progress=False,
                           devices=2, accelerator="cpu"))
    """
)


@pytest.mark.slow
def test_two_process_predict_writes_what_one_process_writes(infill_ckpt, tmp_path):
    """devices=2: Lightning predict under ddp_spawn (gloo, 2 CPU processes), frames split over the ranks."""
    from factories import LINEAR_AUX

    src_path, _ = _store_with_holes(tmp_path, aux=LINEAR_AUX)
    script = tmp_path / "ddp_infill.py"
    script.write_text(DDP_INFILL)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    # A reserved port: Lightning's own pick (bind port 0, release) can be taken on a busy machine.
    with reserve_ports(1, "test_two_process_predict_writes_what_one_process_writes") as [port]:
        env["MASTER_PORT"] = str(port)
        run_watched({"ddp_infill": [sys.executable, str(script), infill_ckpt, str(src_path), str(tmp_path / "ddp.zarr")]},
                    log_dir=tmp_path / "proc", idle_seconds=60, env=env)  # fmt: skip
    assert "Starting with 2 processes" in (tmp_path / "proc" / "ddp_infill.log").read_text()
    predictor, info = load_predictor(infill_ckpt, "infill", device="cpu")
    infill_store(predictor, src_path, tmp_path / "one.zarr", model_info=info, context=1, progress=False)
    ddp, one = xr.open_zarr(tmp_path / "ddp.zarr"), xr.open_zarr(tmp_path / "one.zarr")
    assert (ddp["infill_status"].values != STATUS_PENDING).all()
    np.testing.assert_array_equal(ddp["infill_status"].values, one["infill_status"].values)
    np.testing.assert_allclose(ddp["precip"].values, one["precip"].values, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(ddp["infilled"].values, one["infilled"].values)
