"""Results of every run and sweep: a real 2x2 multirun (model x seed, W&B offline) ends with
metrics.json per run, one summary table over the sweep, offline W&B runs that carry what a
comparison needs; ni-compare over runs of different sweeps; ni-eval named after its
checkpoint; sample panels of wet, valid windows."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nowcast_infill.pipeline.summary import compare
from nowcast_infill.data.synthetic import write_synthetic_store
from nowcast_infill.errors import MissingInputError
from nowcast_infill.utils.results import headline_table, summarize
from test_configs import TINY_NET, compose_config, tiny_overrides

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "experiments"))
import wandb_report  # noqa: E402

SWEEP_ID = "sweep2x2"
RUNS = {"0_model-pconv_seed-1": ("pconv", 1), "1_model-pconv_seed-2": ("pconv", 2),
        "2_model-lstm_seed-1": ("lstm", 1), "3_model-lstm_seed-2": ("lstm", 2)}
TINY_FIT = ["task.past=2", "task.future=2", "data.split.gap=2", "data.eval_masks.n=4", "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
            "model.n_log_images=1", "callbacks.progress_bar=null"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    """`ni-train --multirun model=pconv,lstm seed=1,2` (basic launcher, W&B offline)."""
    root = tmp_path_factory.mktemp("sweep")
    store = root / "synthetic.zarr"
    write_synthetic_store(store, n_times=48, ny=48, nx=48, seed=3)
    cmd = [sys.executable, "-m", "nowcast_infill.cli.train", "--multirun", "model=pconv,lstm", "seed=1,2",
           f"paths.log_dir={root / 'logs'}", f"data.store={store}", f"data.stats_path={root / 'stats.json'}",
           "data.crop_size=32", "data.batch_size=2", "data.num_workers=0", TINY_NET, "logger=wandb", *TINY_FIT]
    env = dict(os.environ, NI_RUN_ID=SWEEP_ID, WANDB_MODE="offline", PYTHONPATH=str(REPO_ROOT))
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "NI_SWEPT_KEYS", "NI_SWEPT_OVERRIDES"):
        env.pop(name, None)
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return {"dir": root / "logs" / "infill" / "multiruns" / SWEEP_ID, "stdout": proc.stdout, "store": store}


@pytest.mark.slow  # shares the 2x2 multirun: ~30 s on an idle 2-core CPU
def test_every_run_writes_its_metrics(sweep):
    sweep_dir = sweep["dir"]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == sorted(RUNS)  # sub-folders carry the overrides
    for name, (model, seed) in RUNS.items():
        record = json.loads((sweep_dir / name / "metrics.json").read_text())
        assert (record["model"], record["task"], record["seed"], record["sweep"]) == (model, "infill", seed, SWEEP_ID)
        assert record["swept"] == [f"model={model}", f"seed={seed}"]
        assert "data.crop_size=32" in record["overrides"]
        assert Path(record["checkpoint"]).is_file() and Path(record["checkpoint"]).name.startswith("best-")
        assert record["commit"] is None or len(record["commit"].split("-")[0]) == 40
        assert math.isfinite(record["metrics"]["test/rmse"])
        # infill has one lead time: each score once, not again as test/rmse/lead1
        assert not [k for k in record["metrics"] if "/lead" in k]
        with open(sweep_dir / name / "metrics.csv") as fh:
            (row,) = csv.DictReader(fh)
        assert row["model"] == model and float(row["rmse"]) == pytest.approx(record["metrics"]["test/rmse"])
    # ni-train ends with its headline table on the terminal
    assert sweep["stdout"].count("test metrics of infill_") == 4
    assert "| rmse | mae | bias | ame | temporal_corr | spatial_corr | csi@1mmh |" in sweep["stdout"]


@pytest.mark.slow  # shares the 2x2 multirun: ~30 s on an idle 2-core CPU
def test_multirun_ends_with_one_summary_table(sweep):
    sweep_dir = sweep["dir"]
    assert "## Variants: mean ± std over seeds (4 runs, sweep sweep2x2)" in sweep["stdout"]
    records = {n: json.loads((sweep_dir / n / "metrics.json").read_text()) for n in RUNS}
    with open(sweep_dir / "summary.csv") as fh:
        variants = {v["variant"]: v for v in csv.DictReader(fh)}
    assert sorted(variants) == ["infill_lstm", "infill_pconv"]
    for model in ("pconv", "lstm"):
        rmse = [r["metrics"]["test/rmse"] for r in records.values() if r["model"] == model]
        row = variants[f"infill_{model}"]
        assert (row["runs"], row["seeds"]) == ("2", "1 2")
        assert float(row["rmse_mean"]) == pytest.approx(np.mean(rmse))
        assert float(row["rmse_std"]) == pytest.approx(np.std(rmse, ddof=1))
    with open(sweep_dir / "runs.csv") as fh:
        assert sorted(r["run"] for r in csv.DictReader(fh)) == sorted(RUNS)
    text = (sweep_dir / "summary.md").read_text()
    assert text.count("| infill_pconv |") == 3 and text.count("| infill_lstm |") == 3  # 1 variant + 2 run rows each


@pytest.mark.slow  # shares the 2x2 multirun: ~30 s on an idle 2-core CPU
def test_ni_compare_over_runs_of_different_sweeps(sweep, tmp_path, capsys):
    from nowcast_infill.cli.compare import main

    # runs picked from a sweep, and a run of another sweep (a copy, with its own id and a
    # different learning rate): one table; the differing override becomes part of the variant
    other = tmp_path / "other_sweep" / "0_model-lstm_seed-3"
    other.mkdir(parents=True)
    record = json.loads((sweep["dir"] / "3_model-lstm_seed-2" / "metrics.json").read_text())
    record.update(sweep="other", seed=3, overrides=[*record["overrides"], "model.optimizer.lr=0.01"])
    (other / "metrics.json").write_text(json.dumps(record))
    main([str(sweep["dir"] / "2_model-lstm_seed-1"), str(sweep["dir"] / "3_model-lstm_seed-2"), str(tmp_path / "other_sweep"),
          "--out", str(tmp_path / "cmp")])
    printed = capsys.readouterr().out
    with open(tmp_path / "cmp" / "summary.csv") as fh:
        variants = [(v["variant"], v["runs"], v["seeds"]) for v in csv.DictReader(fh)]
    assert variants == [("infill_lstm model.optimizer.lr=(default)", "2", "1 2"), ("infill_lstm model.optimizer.lr=0.01", "1", "3")]
    assert "ni-compare: 3 runs" in printed and "| sweep |" in printed
    with pytest.raises(MissingInputError, match="no metrics.json of sweep nope"):
        compare([str(sweep["dir"])], str(tmp_path / "none"), sweep="nope")


@pytest.mark.slow  # shares the 2x2 multirun: ~30 s on an idle 2-core CPU
def test_offline_wandb_runs_carry_the_comparison(sweep, tmp_path):
    runs = wandb_report.find_offline_runs([sweep["dir"]])
    assert len(runs) == 4
    for run in runs:
        model, seed = run["config"]["model"]["name"], run["config"]["seed"]
        assert run["group"] == SWEEP_ID and run["job_type"] == "train"
        assert run["name"] == f"infill_{model}_seed{seed}"
        assert {"infill", model, "data=synthetic", f"model={model}", f"seed={seed}"} <= set(run["tags"])
        record = json.loads((Path(run["path"]).parents[1] / "metrics.json").read_text())
        assert run["summary"]["test/rmse"] == pytest.approx(record["metrics"]["test/rmse"])
        assert "test/rmse/lead1" not in run["summary"]
        assert {"val/infill_sample0", "test/infill_sample0"} <= set(run["images"])
        assert "summary_table" in run["tables"]
    rows, markdown = wandb_report.report(runs)
    assert f"## group {SWEEP_ID}" in markdown
    assert sorted({r["variant"] for r in rows}) == ["infill_lstm", "infill_pconv"]
    assert wandb_report.main([str(sweep["dir"]), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "wandb_report.md").is_file() and (tmp_path / "wandb_runs.csv").is_file()


@pytest.mark.slow  # shares the 2x2 multirun: ~30 s on an idle 2-core CPU
def test_eval_is_named_after_the_checkpoint_model(sweep, tmp_path):
    record = json.loads((sweep["dir"] / "2_model-lstm_seed-1" / "metrics.json").read_text())
    cfg = compose_config("eval", [*tiny_overrides(tmp_path, sweep["store"]), f"ckpt_path={record['checkpoint']}"])
    assert cfg.run_name == "eval_infill_lstm"  # model= was left at its default (pconv)
    assert "lstm" in cfg.tags and "pconv" not in cfg.tags


def test_nowcast_headline_table_has_one_row_per_lead():
    metrics = {"test/rmse": 1.0, "test/rmse/lead1": 0.5, "test/rmse/lead2": 1.5, "test/mae": 0.7,
               "test/mae/lead1": 0.4, "test/mae/lead2": 1.0, "val/rmse": 9.0}
    lines = headline_table(metrics).splitlines()
    assert lines[0] == "| lead | rmse | mae |"
    assert lines[2:] == ["| 1 | 0.5 | 0.4 |", "| 2 | 1.5 | 1 |", "| all | 1 | 0.7 |"]


def test_summary_mean_and_std_over_seeds():
    records = [{"task": "infill", "model": m, "seed": s, "metrics": {"test/rmse": v}, "overrides": [f"model={m}", f"seed={s}"]}
               for m, s, v in (("a", 1, 1.0), ("a", 2, 3.0), ("b", 1, 2.0))]
    runs, variants, markdown = summarize(records)
    assert [(v["variant"], v["rmse_mean"], v["runs"]) for v in variants] == [("infill_a", 2.0, 2), ("infill_b", 2.0, 1)]
    assert variants[0]["rmse_std"] == pytest.approx(math.sqrt(2.0)) and math.isnan(variants[1]["rmse_std"])
    assert "| infill_a | 2 | 1 2 | 2.0000 ± 1.4142 |" in markdown


