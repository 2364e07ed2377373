"""ni-train on a real local Slurm cluster (2 nodes on this host, slurm/local_cluster.sh).

- slurm/train_multinode.sbatch trains with DDP over 2 nodes x 1 task (CPU, gloo) to
  completion, in one run directory named after the job, with checkpoints;
- a job requeued mid-run resumes from its last checkpoint (slow);
- slurm/sweep_array.sbatch runs every line of a sweep file as one array task;
- `ni-train --multirun hydra/launcher=slurm` completes through submitit (no sacct here).

Skipped with the reason when the cluster cannot be started (not root, no packages).
Jobs are waited for with a load-scaled budget (tests/process_watch.py); a job past it is
cancelled, so it cannot hold the nodes for the next test, and the failure shows its state
and log. Multi-node jobs get a short process-group timeout, so a rank whose peer died
fails in seconds (srun --kill-on-bad-exit then ends the job).
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

from process_watch import LoadScaledBudget, run_watched, scaled, wait_until
from slurm_cluster import slurm_cluster  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.slurm

REPO_ROOT = Path(__file__).resolve().parents[1]
# Wall time of one tiny ni-train job (queue, start, 1 epoch, test) on an idle 2-core
# machine: ~20-40 s; jobs may take 4x this times the load (LoadScaledBudget).
IDLE_JOB_S = 60
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE")

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


def multinode_train(*overrides: str) -> list[str]:
    """slurm/train_multinode.sbatch on 2 nodes x 1 task; ranks give up on a gone peer quickly."""
    # Joining the group takes under a second idle; only a dead or stuck peer takes 30 s.
    timeout = f"trainer.strategy.timeout.seconds={scaled(30):.0f}"
    return ["--nodes=2", "--ntasks-per-node=1", *ONE_CPU_NO_GPU, "slurm/train_multinode.sbatch", *overrides, timeout]


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
    """Submit from the repository root; return (0 if every task COMPLETED else 1, job id).

    Logs go to ``log_dir/<job name>-<job id>.out``, for arrays ``<name>-<array id>_<task>.out``.
    With ``wait``, the job (all array tasks) is waited for; past the budget it is cancelled.
    """
    pattern = "%x-%A_%a.out" if any(a.startswith("--array") for a in args) else "%x-%j.out"
    cmd = ["sbatch", "--parsable", f"--output={log_dir}/{pattern}", *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=scaled(15))
    job_id = proc.stdout.strip().splitlines()[0].split(";")[0] if proc.stdout.strip() else ""
    assert job_id, f"sbatch {args} did not submit: {proc.stderr}"
    if not wait:
        return proc.returncode, job_id
    states = wait_for_job(env, job_id, log_dir)
    return (0 if set(states.values()) == {"COMPLETED"} else 1), job_id


def job_states(env: dict[str, str], job: str) -> dict[str, str]:
    """JobState of each task of ``job`` (one for a plain job, one per array task)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True, timeout=scaled(15))
    assert out.returncode == 0, f"scontrol show job {job}: {out.stderr}"
    return dict(re.findall(r"^JobId=(\S+) .*?JobState=(\S+)", out.stdout, flags=re.M))


def wait_for_job(env: dict[str, str], job: str, log_dir: Path, idle_seconds: float = IDLE_JOB_S) -> dict[str, str]:
    """Wait until every task of ``job`` is in a final state; cancel it and fail past the budget."""
    budget = LoadScaledBudget(idle_seconds)
    while True:
        states = job_states(env, job)
        if states and all(state in FINAL_STATES for state in states.values()):
            return states
        if budget.expired():
            subprocess.run(["scancel", job], env=env, timeout=scaled(15))
            raise AssertionError(
                f"job {job} not finished after {budget}; cancelled. States: {states}\n"
                f"{job_log(log_dir, f'*{job}*.out')[-6000:]}"
            )
        time.sleep(1)


def job_log(log_dir: Path, pattern: str) -> str:
    logs = sorted(log_dir.glob(pattern))
    return "\n".join(p.read_text(errors="replace") for p in logs)


def test_cluster_runs_a_step_on_both_nodes(slurm_cluster):  # noqa: F811
    proc = subprocess.run(
        ["srun", "-N2", "--ntasks-per-node=1", "sh", "-c", 'echo "$SLURMD_NODENAME $SLURM_PROCID $MASTER_ADDR $MASTER_PORT"'],
        env=slurm_cluster, capture_output=True, text=True, timeout=scaled(15),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = sorted(proc.stdout.split("\n")[:2])
    assert [line.rsplit(" ", 1)[0] for line in lines] == ["n1 0 127.0.0.1", "n2 1 127.0.0.1"]
    # Both tasks rendezvous on one port from this cluster's reserved block, not on
    # Lightning's 15000 + job id, which every local cluster on the host would share.
    ports = {int(line.rsplit(" ", 1)[1]) for line in lines}
    base = int(slurm_cluster["NI_SLURM_MASTER_PORT_BASE"])
    assert len(ports) == 1 and ports <= set(range(base, base + int(slurm_cluster["NI_SLURM_MASTER_PORTS"]))), lines


def test_train_multinode_sbatch_trains_on_two_nodes(slurm_env, tmp_path):
    env = dict(slurm_env, NI_LOG_DIR=str(tmp_path / "outputs"))
    code, job = sbatch(env, tmp_path, *multinode_train(*TINY_TRAIN))
    log = job_log(tmp_path, f"ni-train-{job}.out")
    assert code == 0, f"job {job} failed:\n{log[-6000:]}"

    # One run directory for the job (not one per rank), named by the job id.
    runs = sorted((tmp_path / "outputs" / "infill" / "runs").iterdir())
    assert [r.name for r in runs] == [f"infill_pconv_{job}"], runs
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
    _, job = sbatch(env, tmp_path, *multinode_train(*overrides), wait=False)
    last = tmp_path / "outputs" / "infill" / "runs" / f"infill_pconv_{job}" / "checkpoints" / "last.ckpt"
    log_so_far = lambda: job_log(tmp_path, f"ni-train-{job}.out")[-6000:]  # noqa: E731
    try:
        wait_until(last.is_file, IDLE_JOB_S, f"{last} (first epoch of job {job})", log_so_far)
        # What a preemption does: the job goes back to the queue with the same id.
        subprocess.run(["scontrol", "requeue", job], env=env, check=True, timeout=scaled(15))
        # Slurm holds a requeued job for ~2 minutes (BeginTime); release it now.
        wait_until(lambda: job_states(env, job) == {job: "PENDING"}, 15, f"job {job} pending again", log_so_far)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True, timeout=scaled(15))
    except BaseException:
        subprocess.run(["scancel", job], env=env, timeout=scaled(15))
        raise
    wait_for_job(env, job, tmp_path, idle_seconds=2 * IDLE_JOB_S)
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
    assert [(v["variant"], v["runs"], v["seeds"]) for v in variants] == [("infill_pconv", "2", "11 12")], variants
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
        *ni_train_command(), "--multirun", "hydra/launcher=slurm", "model=pconv,lstm", "seed=1",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
        *TINY_TRAIN,
    ]  # fmt: skip
    # Two jobs through submitit; the command waits for both.
    run_watched({"ni-train-multirun": cmd}, log_dir=tmp_path / "logs", idle_seconds=2 * IDLE_JOB_S, env=env, cwd=REPO_ROOT)
    multiruns = list((tmp_path / "outputs" / "infill" / "multiruns").iterdir())
    assert len(multiruns) == 1, multiruns
    jobs = sorted(p for p in multiruns[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    # sub-folders named by what the sweep varies (the SweepSummary callback tells the jobs)
    assert [j.name for j in jobs] == ["0_model-pconv", "1_model-lstm"], jobs
    for job_dir in jobs:
        assert (job_dir / "checkpoints" / "last.ckpt").is_file(), sorted(job_dir.rglob("*"))
    # submitit ran them as Slurm jobs (its folder holds one result per job).
    results = list((multiruns[0] / ".submitit").rglob("*_result.pkl"))
    assert len(results) == 2, sorted((multiruns[0] / ".submitit").rglob("*"))
    # ...and the multirun ended with one table over both (printed, and in the sweep folder)
    with open(multiruns[0] / "runs.csv") as fh:
        assert sorted(r["variant"] for r in csv.DictReader(fh)) == ["infill_lstm", "infill_pconv"]
    printed = (tmp_path / "logs" / "ni-train-multirun.log").read_text()
    assert "## Variants: mean ± std over seeds (2 runs" in printed
