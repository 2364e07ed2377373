"""The Python API (nowcast_infill/api.py) as a notebook uses it: examples/api_tour.py runs,
and `train(cfg)` works on a config composed without a Hydra run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


def test_compose_outside_hydra_names_the_run_folder(tmp_path):
    from nowcast_infill import compose

    cfg = compose("train", ["model=lstm", f"paths.log_dir={tmp_path}"])
    assert cfg.model.name == "lstm" and "hydra" not in cfg
    assert cfg.paths.output_dir.startswith(f"{tmp_path}/infill/runs/infill_lstm_")


def test_train_runs_a_config_composed_by_plain_hydra(tmp_path, capfd):
    """No `paths.output_dir` given, no Hydra run: the run folder is the one ni-train would use.
    Also: logger=none runs, best.ckpt is there, and progress without a terminal is plain lines."""
    from hydra import compose, initialize_config_dir

    from nowcast_infill import train
    from nowcast_infill.data.synthetic import write_synthetic_store
    from nowcast_infill.utils.config import register_resolvers
    from test_configs import TINY_NET

    store = write_synthetic_store(tmp_path / "s.zarr", n_times=48, ny=32, nx=32, seed=1)
    register_resolvers()
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [f"data.store={store}", f"data.stats_path={tmp_path / 'stats.json'}", f"paths.log_dir={tmp_path / 'logs'}",
                                "data.crop_size=32", "data.batch_size=2", "data.num_workers=0", "logger=none", TINY_NET,
                                "task.past=2", "task.future=2", "data.split.gap=2", "data.eval_masks.n=2",
                                "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
                                "+trainer.limit_test_batches=1"])
    results = train(cfg)
    run = tmp_path / "logs" / "infill" / "runs"
    assert results["output_dir"].startswith(str(run / "infill_pconv_"))
    # logger=none (no LearningRateMonitor crash) and the stable best.ckpt beside the epoch-named one
    checkpoints = sorted(p.name for p in (run.iterdir().__next__() / "checkpoints").iterdir())
    assert "best.ckpt" in checkpoints and any(n.startswith("best-epoch") for n in checkpoints), checkpoints
    assert "test/rmse" in results
    out, err = capfd.readouterr()
    assert "train epoch 1/1 step 1/1 (100%)" in out and "test step 1/1 (100%)" in out, out[-2000:]
    assert "\r" not in out + err
    for noise in ("💡 Tip", "srun` command is available", "LeafSpec", "sync_dist=True"):
        assert noise not in out + err, noise


@pytest.mark.slow
def test_api_tour_example_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), WANDB_MODE="offline")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "api_tour.py"), str(tmp_path / "tour")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    for line in ("trained: test/rmse =", "evaluated: test/rmse =", "infilled a 20x20 hole", "infilled Dataset: NaN pixels",
                 "nowcast issued"):
        assert line in done.stdout, done.stdout[-3000:]
