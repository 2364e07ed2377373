"""`pip install .` (a wheel, not an editable install) ships conf/ and every ni-* command runs
from any folder: the wheel is built, installed into a fresh venv, and ni-synth + a one-step
ni-train run in a temporary folder outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO_ROOT

# What a checkout holds besides its source (run outputs, the venv, git): not copied for the build.
NOT_SOURCE_AT_TOP = {".venv", ".git", "outputs", "multirun", "wandb", "build", "dist", "data", "lightning_logs"}
NOT_SOURCE_ANYWHERE = {"__pycache__", ".pytest_cache"}


def not_source(folder: str, names: list[str]) -> set[str]:
    at_top = NOT_SOURCE_AT_TOP if Path(folder) == REPO_ROOT else set()
    return {n for n in names if n in at_top or n in NOT_SOURCE_ANYWHERE or n.endswith(".egg-info")}


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, command))}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=not_source)
    # one machine's accounts (git-ignored conf/local/default.yaml) must stay out of the wheel
    (source / "conf" / "local").mkdir(exist_ok=True)
    (source / "conf" / "local" / "default.yaml").write_text("# site accounts\n")
    run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")])
    wheel = next((tmp_path / "dist").glob("nowcast_infill-*.whl"))

    # A fresh venv that sees this interpreter's packages (torch, lightning, ...) through a
    # path file, after its own: only nowcast_infill comes from the wheel.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "_checkout_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NI_RUN_ID", "NI_DATA_DIR", "NI_LOG_DIR")}
    env.update(WANDB_MODE="offline")
    where = run([str(python), "-c", "import nowcast_infill.cli as c, nowcast_infill as n; print(n.__file__); print(c.CONFIG_DIR)"],
                cwd=elsewhere, env=env).stdout.split()
    assert all(str(purelib) in line for line in where), where  # the wheel's package and its conf/
    assert Path(where[1], "train.yaml").is_file() and Path(where[1], "model", "lstm.yaml").is_file()
    assert not Path(where[1], "local", "default.yaml").exists()

    run([str(venv / "bin" / "ni-synth"), "n_times=48", "ny=32", "nx=32"], cwd=elsewhere, env=env)
    assert (elsewhere / "data" / "synthetic.zarr").is_dir()
    run([str(venv / "bin" / "ni-train"), "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "data.batch_size=2", "data.num_workers=0", "data.crop_size=32", "data.eval_masks.n=2",
         "task.past=2", "task.future=2", "data.split.gap=2", "model.net.encoder_channels=[8,16]", "logger=csv"],
        cwd=elsewhere, env=env)
    runs = list((elsewhere / "outputs" / "infill" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "best.ckpt").is_file(), runs
