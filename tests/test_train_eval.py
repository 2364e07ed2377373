"""End to end: ni-train on a tiny synthetic store, ni-eval from its checkpoint and of baselines,
fast_dev_run of every experiment, and resuming that continues exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nowcast_infill.pipeline.scoring import evaluate
from nowcast_infill.pipeline.fitting import train
from nowcast_infill.data.synthetic import write_synthetic_store
from test_configs import EXPERIMENTS, TINY_NET, compose_config, tiny_overrides

SMALL_WINDOWS = ["task.past=2", "task.future=2", "data.split.gap=2", "data.eval_masks.n=4"]
SHORT_FIT = ["trainer.max_epochs=2", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2"]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "synthetic.zarr"
    write_synthetic_store(path, n_times=48, ny=48, nx=48, seed=3)
    return path


def run_overrides(tmp_path: Path, store: Path, *extra: str) -> list[str]:
    return [*tiny_overrides(tmp_path, store), f"data.stats_path={tmp_path / 'stats.json'}", TINY_NET, *SMALL_WINDOWS, *extra]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(experiment, tiny_store, tmp_path):
    cfg = compose_config("train", run_overrides(tmp_path, tiny_store, f"experiment={experiment}", "debug=fast_dev_run"))
    results = train(cfg)
    assert results["global_step"] == 1
    assert np.isfinite(results["train/loss"]) and np.isfinite(results["test/rmse"])
    assert (Path(results["output_dir"]) / "config.yaml").is_file()


def test_train_then_eval_from_checkpoint(tiny_store, tmp_path):
    cfg = compose_config("train", run_overrides(tmp_path, tiny_store, *SHORT_FIT, "model.n_log_images=1"))
    trained = train(cfg)
    best = Path(trained["best_model_path"])
    assert best.is_file() and Path(trained["last_model_path"]).is_file()
    assert trained["global_step"] == 4
    assert (tmp_path / "run" / "figures" / "infill_sample0.png").is_file()

    eval_cfg = compose_config(
        "eval", [*tiny_overrides(tmp_path / "eval", tiny_store), f"data.stats_path={tmp_path / 'stats.json'}", *SMALL_WINDOWS,
                 f"ckpt_path={best}", "+trainer.limit_test_batches=2", "n_figures=2"]
    )
    evaluated = evaluate(eval_cfg)
    out = tmp_path / "eval" / "run"
    # Same checkpoint, same fixed masks, same windows: the same numbers as ni-train's test.
    for key in ("test/rmse", "test/mae", "test/csi@1mmh"):
        np.testing.assert_allclose(evaluated[key], trained[key], rtol=1e-5, equal_nan=True)
    assert evaluated["row"]["model"] == "pconv"
    # both write metrics.json, which ni-compare reads
    trained_record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    eval_record = json.loads((out / "metrics.json").read_text())
    assert (eval_record["model"], eval_record["split"], eval_record["checkpoint"]) == ("pconv", "test", str(best))
    assert eval_record["metrics"]["test/rmse"] == pytest.approx(trained_record["metrics"]["test/rmse"], rel=1e-5)
    assert (out / "metrics.csv").read_text().startswith("model,task,split,checkpoint")
    md = (out / "metrics.md").read_text().splitlines()
    assert md[0].startswith("| model | task | split | checkpoint | rmse |") and md[2].startswith("| pconv | infill | test | best-")
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == ["infill_sample0.png", "infill_sample1.png"]
    from nowcast_infill.data.masks import load_mask_set

    masks = load_mask_set(out / "eval_masks.npz")
    assert masks.masks.shape == (4, 48, 48)


def test_eval_checkpoint_with_wrong_task_is_refused(tiny_store, tmp_path):
    cfg = compose_config("train", run_overrides(tmp_path, tiny_store, "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
                                                "+trainer.limit_val_batches=1", "test=false"))
    last = train(cfg)["last_model_path"]
    eval_cfg = compose_config("eval", [*tiny_overrides(tmp_path / "eval", tiny_store), *SMALL_WINDOWS, "task=nowcast", f"ckpt_path={last}"])
    with pytest.raises(ValueError, match="trained with task=infill"):
        evaluate(eval_cfg)


def test_eval_network_without_checkpoint_is_refused(tiny_store, tmp_path):
    eval_cfg = compose_config("eval", [*tiny_overrides(tmp_path, tiny_store), *SMALL_WINDOWS, "model=lstm"])
    with pytest.raises(ValueError, match="ckpt_path"):
        evaluate(eval_cfg)


@pytest.mark.parametrize("task,baseline", [("infill", "nearest"), ("nowcast", "persistence")])
def test_eval_baseline_without_checkpoint(task, baseline, tiny_store, tmp_path):
    eval_cfg = compose_config(
        "eval", [*tiny_overrides(tmp_path, tiny_store), f"data.stats_path={tmp_path / 'stats.json'}", *SMALL_WINDOWS,
                 f"task={task}", f"model={baseline}", "+trainer.limit_test_batches=2", "n_figures=1"]
    )
    results = evaluate(eval_cfg)
    assert results["row"]["model"] == baseline and np.isfinite(results["test/rmse"])
    if task == "nowcast":
        assert "test/rmse/lead2" in results
    assert len(list((tmp_path / "run" / "figures").glob("*.png"))) == 1


def _weights(ckpt: str) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_resume_continues_and_matches_uninterrupted(tiny_store, tmp_path):
    # total_steps fixed so that the warm-up/cosine schedule is the same for both runs
    common = ["trainer.deterministic=true", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
              "+model.scheduler.total_steps=4", "test=false", "callbacks.early_stopping=null"]
    full = train(compose_config("train", run_overrides(tmp_path / "full", tiny_store, *common, "trainer.max_epochs=2")))
    half = train(compose_config("train", run_overrides(tmp_path / "half", tiny_store, *common, "trainer.max_epochs=1")))
    assert half["global_step"] == 2
    resumed = train(
        compose_config("train", run_overrides(tmp_path / "resumed", tiny_store, *common, "trainer.max_epochs=2",
                                              f"ckpt_path={half['last_model_path']}"))
    )
    assert resumed["global_step"] == full["global_step"] == 4
    a, b = _weights(full["last_model_path"]), _weights(resumed["last_model_path"])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_ni_train_cli_writes_one_run_dir(tiny_store, tmp_path):
    """The real `@hydra.main` entry point: run dir named from the job id, config saved in it."""
    import os
    import subprocess
    import sys

    # no NI_RUN_ID from an earlier in-process run: this job is named by its SLURM_JOB_ID
    env = {k: v for k, v in os.environ.items() if k != "NI_RUN_ID"}
    env.update(WANDB_MODE="offline", SLURM_JOB_ID="12345", NI_LOG_DIR=str(tmp_path / "logs"))
    overrides = [o for o in tiny_overrides(tmp_path, tiny_store) if not o.startswith("paths.")]
    cmd = [sys.executable, "-m", "nowcast_infill.cli.train", *overrides, f"data.stats_path={tmp_path / 'stats.json'}",
           TINY_NET, *SMALL_WINDOWS, "debug=fast_dev_run"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "logs" / "infill" / "runs" / "infill_pconv_12345"
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert "global batch = 2 per device x 1 devices x 1 nodes x 1 accumulation = 2" in done.stdout
    assert done.stdout.count("----- configuration -----") == 1


@pytest.mark.slow
def test_ddp_sim_two_ranks_share_one_run_dir(tiny_store, tmp_path):
    """Lightning's DDP launcher re-runs the script per rank: one run dir, one config print."""
    import os
    import sys

    from process_watch import reserve_ports, run_watched, scaled

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NI_RUN_ID", "TORCHELASTIC"))}
    env.update(WANDB_MODE="offline", NI_LOG_DIR=str(tmp_path / "logs"), MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo")
    overrides = [o for o in tiny_overrides(tmp_path, tiny_store) if not o.startswith("paths.")]
    cmd = [sys.executable, "-m", "nowcast_infill.cli.train", *overrides, f"data.stats_path={tmp_path / 'stats.json'}",
           TINY_NET, *SMALL_WINDOWS, "strategy=ddp_sim", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
           "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "callbacks.progress_bar=null",
           f"trainer.strategy.timeout.seconds={scaled(30):.0f}"]  # a rank whose peer died gives up quickly
    # A reserved port: Lightning's own pick (bind port 0, release) can be taken on a busy machine.
    with reserve_ports(1, "test_ddp_sim_two_ranks_share_one_run_dir") as [port]:
        env["MASTER_PORT"] = str(port)
        run_watched({"ni-train": cmd}, log_dir=tmp_path / "proc", idle_seconds=60, env=env)
    output = (tmp_path / "proc" / "ni-train.log").read_text()
    runs = list((tmp_path / "logs" / "infill" / "runs").iterdir())
    assert len(runs) == 1, runs
    assert (runs[0] / "config.yaml").is_file() and (runs[0] / "checkpoints" / "last.ckpt").is_file()
    assert output.count("----- configuration -----") == 1
    assert "x 2 devices x 1 nodes" in output


@pytest.mark.slow
def test_multirun_basic_launcher_runs_models_by_seeds(tiny_store, tmp_path):
    """`ni-train --multirun model=a,b seed=1,2` with Hydra's basic launcher: one job dir each."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NI_RUN_ID", "TORCHELASTIC"))}
    env.update(WANDB_MODE="offline", NI_LOG_DIR=str(tmp_path / "logs"))
    overrides = [o for o in tiny_overrides(tmp_path, tiny_store) if not o.startswith("paths.")]
    cmd = [sys.executable, "-m", "nowcast_infill.cli.train", "--multirun", "model=pconv,attention", "seed=1,2",
           "data.aux=all", *overrides, f"data.stats_path={tmp_path / 'stats.json'}", TINY_NET, *SMALL_WINDOWS,
           "debug=fast_dev_run"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sweeps = list((tmp_path / "logs" / "infill" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    # named by the swept overrides (the SweepSummary callback tells the jobs what is swept)
    assert jobs == ["0_model-pconv_seed-1", "1_model-pconv_seed-2", "2_model-attention_seed-1",
                    "3_model-attention_seed-2"], jobs
    for job in jobs:
        assert (sweeps[0] / job / "config.yaml").is_file(), job


def test_tensorboard_logger_and_rich_progress_bar(tiny_store, tmp_path):
    # Not fast_dev_run: it swaps every logger for a dummy one.
    cfg = compose_config("train", run_overrides(tmp_path, tiny_store, *SHORT_FIT, "logger=tensorboard", "callbacks=rich"))
    results = train(cfg)
    assert results["global_step"] == 4
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard event file"
