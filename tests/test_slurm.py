"""ni-train on a real local Slurm cluster (2 nodes on this host, slurm/local_cluster.sh).

- slurm/train_multinode.sbatch trains with DDP over 2 nodes x 1 task (CPU, gloo) to
  completion, in one run directory named after the job, with checkpoints;
- a job requeued mid-run resumes from its last checkpoint (slow);
- slurm/sweep_array.sbatch runs every line of a sweep file as one array task;
- `ni-train --multirun hydra/launcher=slurm` completes through submitit (no sacct here).

Skipped with the reason when the cluster cannot be started (not root, no packages).
NI_TRAIN (e.g. "python -m nowcast_infill.cli.train") replaces the `ni-train` command
here as in the sbatch templates.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from slurm_cluster import slurm_cluster  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.slurm

REPO_ROOT = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_S = 240

# Tiny run: 32x32 crops, a 2-level U-Net of 4/8 channels. These tests check plumbing;
# the numerics of DDP against one process are in test_ddp.py.
TINY_TRAIN = [
    "logger=csv",
    "masks=mixture",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.crop_size=32",
    "data.eval_masks.n=2",
    "model.net.encoder_channels=[4,8]",
    "callbacks.progress_bar=null",
]
# Each simulated node has 1 CPU and no GPU.
ONE_CPU_NO_GPU = ["--cpus-per-task=1", "--gpus-per-node=0", "--time=15"]


def ni_train_command() -> list[str]:
    """The ni-train command line, as slurm/lib.sh resolves it (NI_TRAIN overrides)."""
    return shlex.split(os.environ.get("NI_TRAIN", str(REPO_ROOT / ".venv" / "bin" / "ni-train")))


@pytest.fixture(scope="module")
def slurm_env(slurm_cluster, tmp_path_factory) -> dict[str, str]:  # noqa: F811
    """Cluster env + a tiny synthetic store; runs write below a fresh NI_LOG_DIR."""
    from nowcast_infill.data.synthetic import write_synthetic_store

    data_dir = tmp_path_factory.mktemp("slurm_data")
    # 96 frames: val and test splits keep >= 2 windows, one per DDP rank.
    write_synthetic_store(data_dir / "synthetic.zarr", n_times=96, ny=32, nx=32, seed=5)
    env = dict(slurm_cluster)
    env.update(NI_DATA_DIR=str(data_dir), WANDB_MODE="offline", HYDRA_FULL_ERROR="1", OMP_NUM_THREADS="1")
    return env


def sbatch(env: dict[str, str], log_dir: Path, *args: str, wait: bool = True) -> tuple[int, str]:
    """Submit from the repository root; return (exit code of sbatch, job id).

    Logs go to ``log_dir/<job name>-<job id>.out``, for arrays ``<name>-<array id>_<task>.out``.
    """
    pattern = "%x-%A_%a.out" if any(a.startswith("--array") for a in args) else "%x-%j.out"
    cmd = ["sbatch", "--parsable", f"--output={log_dir}/{pattern}", *(["--wait"] if wait else []), *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    job_id = proc.stdout.strip().splitlines()[0].split(";")[0] if proc.stdout.strip() else ""
    assert job_id, f"sbatch {args} did not submit: {proc.stderr}"
    return proc.returncode, job_id


def job_log(log_dir: Path, pattern: str) -> str:
    logs = sorted(log_dir.glob(pattern))
    return "\n".join(p.read_text(errors="replace") for p in logs)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(1)


def test_cluster_runs_a_step_on_both_nodes(slurm_cluster):  # noqa: F811
    proc = subprocess.run(
        ["srun", "-N2", "--ntasks-per-node=1", "sh", "-c", 'echo "$SLURMD_NODENAME $SLURM_PROCID $MASTER_ADDR"'],
        env=slurm_cluster, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split("\n")[:2]) == ["n1 0 127.0.0.1", "n2 1 127.0.0.1"]


def test_train_multinode_sbatch_trains_on_two_nodes(slurm_env, tmp_path):
    env = dict(slurm_env, NI_LOG_DIR=str(tmp_path / "outputs"))
    code, job = sbatch(env, tmp_path, "--nodes=2", "--ntasks-per-node=1", *ONE_CPU_NO_GPU,
                       "slurm/train_multinode.sbatch", *TINY_TRAIN)  # fmt: skip
    log = job_log(tmp_path, f"ni-train-{job}.out")
    assert code == 0, f"job {job} failed:\n{log[-6000:]}"

    # One run directory for the job (not one per rank), named by the job id.
    runs = sorted((tmp_path / "outputs" / "infill" / "runs").iterdir())
    assert [r.name for r in runs] == [f"infill_baseline_{job}"], runs
    run = runs[0]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    assert (run / "config.yaml").is_file()
    # Both ranks joined one process group spanning the two nodes.
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert re.search(r"global batch = 2 per device x 1 devices x 2 nodes x 1 accumulation = 4", log), log[-3000:]
    assert "2 nodes x 1 tasks on n[1-2]" in log
    metrics = (run / "csv" / "metrics.csv").read_text()
    assert "test/rmse" in metrics.splitlines()[0]


@pytest.mark.slow
def test_requeued_job_resumes_from_last_checkpoint(slurm_env, tmp_path):
    env = dict(slurm_env, NI_LOG_DIR=str(tmp_path / "outputs"))
    overrides = [o for o in TINY_TRAIN if not o.startswith("trainer.max_epochs")] + ["trainer.max_epochs=3"]
    _, job = sbatch(env, tmp_path, "--nodes=2", "--ntasks-per-node=1", *ONE_CPU_NO_GPU,
                    "slurm/train_multinode.sbatch", *overrides, wait=False)  # fmt: skip
    last = tmp_path / "outputs" / "infill" / "runs" / f"infill_baseline_{job}" / "checkpoints" / "last.ckpt"
    wait_until(last.is_file, JOB_TIMEOUT_S, f"{last} (first epoch of job {job})")
    # What a preemption does: the job goes back to the queue with the same id.
    subprocess.run(["scontrol", "requeue", job], env=env, check=True, timeout=30)
    # Slurm holds a requeued job for ~2 minutes (BeginTime); release it now.
    wait_until(
        lambda: "JobState=PENDING" in subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout,
        60, f"job {job} pending again",
    )  # fmt: skip
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True, timeout=30)

    def finished() -> bool:
        out = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
        return bool(re.search(r"JobState=(COMPLETED|FAILED|CANCELLED|TIMEOUT)", out)) or "Invalid job id" in out

    wait_until(finished, JOB_TIMEOUT_S, f"job {job} to finish after the requeue")
    log = job_log(tmp_path, f"ni-train-{job}.out")
    state = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    assert "JobState=COMPLETED" in state or "Invalid job id" in state, f"{state}\n{log[-6000:]}"
    assert "restart 1: resuming from" in log and f"ckpt_path={last}" in log, log[-6000:]
    assert f"Restoring states from the checkpoint path at {last}" in log
    # 3 epochs x 2 batches in total, not 3 more epochs after the restart.
    import torch

    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6


def test_sweep_array_runs_every_line(slurm_env, tmp_path):
    env = dict(slurm_env, NI_LOG_DIR=str(tmp_path / "outputs"))
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("# model x seed\n\nseed=11 run_name=line0\n   \nseed=12 'run_name=line1'\n")
    code, array_job = sbatch(env, tmp_path, "--array=0-1", *ONE_CPU_NO_GPU,
                             "slurm/sweep_array.sbatch", str(sweep), *TINY_TRAIN)  # fmt: skip
    log = job_log(tmp_path, f"ni-sweep-{array_job}_*.out")
    assert code == 0, f"array job {array_job} failed:\n{log[-6000:]}"
    runs = sorted(p.name for p in (tmp_path / "outputs" / "infill" / "runs").iterdir())
    assert runs == [f"line0_{array_job}_0", f"line1_{array_job}_1"], runs
    for name, seed in zip(runs, (11, 12)):
        run = tmp_path / "outputs" / "infill" / "runs" / name
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert f"seed: {seed}" in (run / "config.yaml").read_text()
        record = json.loads((run / "metrics.json").read_text())
        assert record["sweep"] == array_job and record["seed"] == seed, record
    # The last task to finish left one table over both runs of the array.
    summary = tmp_path / "outputs" / "sweeps" / array_job
    with open(summary / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["run"], r["seed"]) for r in rows) == [(runs[0], "11"), (runs[1], "12")], rows
    with open(summary / "summary.csv") as fh:
        variants = list(csv.DictReader(fh))
    assert [(v["variant"], v["runs"], v["seeds"]) for v in variants] == [("infill_baseline", "2", "11 12")], variants
    assert "mean ± std over seeds (2 runs" in (summary / "summary.md").read_text()


def test_sweep_array_refuses_a_task_beyond_the_file(slurm_env, tmp_path):
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("seed=1\n")
    code, job = sbatch(slurm_env, tmp_path, "--array=3", *ONE_CPU_NO_GPU, "slurm/sweep_array.sbatch", str(sweep))
    assert code != 0
    assert "array task 3 but" in job_log(tmp_path, f"ni-sweep-{job}_3.out")


def test_multirun_with_slurm_launcher_completes(slurm_env, tmp_path):
    env = dict(slurm_env, NI_LOG_DIR=str(tmp_path / "outputs"))
    cmd = [
        *ni_train_command(), "--multirun", "hydra/launcher=slurm", "model=baseline,lstm", "seed=1",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
        *TINY_TRAIN,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=2 * JOB_TIMEOUT_S)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    multiruns = list((tmp_path / "outputs" / "infill" / "multiruns").iterdir())
    assert len(multiruns) == 1, multiruns
    jobs = sorted(p for p in multiruns[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    # sub-folders named by what the sweep varies (the SweepSummary callback tells the jobs)
    assert [j.name for j in jobs] == ["0_model-baseline", "1_model-lstm"], jobs
    for job_dir in jobs:
        assert (job_dir / "checkpoints" / "last.ckpt").is_file(), sorted(job_dir.rglob("*"))
    # submitit ran them as Slurm jobs (its folder holds one result per job).
    results = list((multiruns[0] / ".submitit").rglob("*_result.pkl"))
    assert len(results) == 2, sorted((multiruns[0] / ".submitit").rglob("*"))
    # ...and the multirun ended with one table over both (printed, and in the sweep folder)
    with open(multiruns[0] / "runs.csv") as fh:
        assert sorted(r["variant"] for r in csv.DictReader(fh)) == ["infill_baseline", "infill_lstm"]
    assert "## Variants: mean ± std over seeds (2 runs" in proc.stdout
