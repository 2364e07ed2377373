"""DDP on CPU (gloo): 2 processes equal 1 process at the same global batch; torchrun 2 nodes.

Every distributed run is a subprocess: DDP inside the pytest process would re-launch pytest
in its children and leak LOCAL_RANK/MASTER_PORT into later tests.

The equivalence runs use experiments/ddp_check.py, a tiny conv net *without batch norm*
(per-rank batch statistics would make DDP differ from one process by design, not by a
bug) on fixed-size fields with a per-pixel-mean loss and the same seeded sample order for
every world size; see its docstring for why that makes the runs exactly comparable.

Nothing here waits out a torch timeout on a busy machine (tests/process_watch.py): ports
come from a host-wide reservation outside the kernel's ephemeral range, the process group
and torchrun's rendezvous get short load-scaled timeouts, a process that fails ends its
peers within seconds, and a hung run is killed after a budget scaled to the load, with
the stacks and log tails of every process in the failure.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from process_watch import reserve_ports, run_watched, scaled

REPO_ROOT = Path(__file__).resolve().parents[1]
DDP_CHECK = REPO_ROOT / "experiments" / "ddp_check.py"
PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
# Wall time of one ddp_check run (any world size here) on an idle 2-core machine is
# 5-10 s; the watchdog allows 4x this, times the load.
IDLE_RUN_S = 15
# Joining the group or the rendezvous, and every collective, takes well under a second
# idle; 30 s idle (scaled to the load) is only reached when a peer is gone or stuck.
IDLE_JOIN_S = 30
# Same recipe for every run; only how the 8-sample global batch is split changes.
RECIPE = ["--global-batch", "8", "--max-steps", "6", "--n-samples", "32", "--seed", "3"]


def distributed_env() -> dict[str, str]:
    """This environment minus any launcher variables, plus loopback-only gloo."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "TORCHELASTIC_", "PMI_", "OMPI_"))
        and k not in {"LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_PORT"}
    }
    env.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def ddp_check_args(out: Path, *extra: str) -> list[str]:
    """experiments/ddp_check.py arguments; DDP runs get a short process-group timeout."""
    pg_timeout = ["--pg-timeout-s", f"{scaled(IDLE_JOIN_S):.0f}"] if "ddp" in extra else []
    return [str(DDP_CHECK), "--out", str(out), *RECIPE, *pg_timeout, *extra]


def run_ddp_check(out: Path, *extra: str) -> dict:
    """Run experiments/ddp_check.py in a subprocess; return its result.json (rank 0)."""
    env = distributed_env()
    with reserve_ports(1, f"ddp_check {out}") as [port]:
        env["MASTER_PORT"] = str(port)
        run_watched({"ddp_check": [PYTHON, *ddp_check_args(out, *extra)]}, log_dir=out.parent / f"{out.name}-logs",
                    idle_seconds=IDLE_RUN_S, env=env, cwd=REPO_ROOT, dump_stacks_of=[DDP_CHECK.name])  # fmt: skip
    return json.loads((out / "result.json").read_text())


def max_weight_difference(a_dir: Path, b_dir: Path, a_name: str = "weights.pt", b_name: str = "weights.pt") -> float:
    a = torch.load(a_dir / a_name, weights_only=True)
    b = torch.load(b_dir / b_name, weights_only=True)
    assert a.keys() == b.keys(), f"parameter names differ: {sorted(a)} vs {sorted(b)}"
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# float32 sums over 4 vs 8 samples in a different order: ~1e-6 after 6 SGD steps here.
WEIGHT_ATOL = 2e-5
METRIC_RTOL = 1e-5


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ddp_single")
    return out, run_ddp_check(out)


def test_ddp_two_cpu_processes_match_one_process(single_process_run, tmp_path):
    single_dir, single = single_process_run
    ddp_dir = tmp_path / "ddp2"
    ddp = run_ddp_check(ddp_dir, "--strategy", "ddp", "--devices", "2")

    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert single["global_step"] == ddp["global_step"] == 6
    # Training moved the weights far more than the tolerance, so agreement means something.
    moved = max_weight_difference(single_dir, single_dir, "init_weights.pt", "weights.pt")
    assert moved > 1000 * WEIGHT_ATOL, f"weights moved only {moved}: the run did not train"
    assert max_weight_difference(single_dir, ddp_dir, "init_weights.pt", "init_weights.pt") == 0.0
    diff = max_weight_difference(single_dir, ddp_dir)
    assert diff < WEIGHT_ATOL, f"DDP weights differ from one process by {diff} (> {WEIGHT_ATOL})"
    assert single["metrics"].keys() == ddp["metrics"].keys() == {"test/mse", "test/mae"}
    for name, value in single["metrics"].items():
        assert ddp["metrics"][name] == pytest.approx(value, rel=METRIC_RTOL), name


@pytest.mark.slow
def test_ddp_comparison_detects_a_different_global_batch(single_process_run, tmp_path):
    """Control: 2 processes x 8 samples (global 16) must NOT match 1 x 8, so the tolerance discriminates."""
    single_dir, _ = single_process_run
    out = tmp_path / "ddp2_global16"
    run_ddp_check(out, "--strategy", "ddp", "--devices", "2", "--global-batch", "16")
    diff = max_weight_difference(single_dir, out)
    assert diff > 100 * WEIGHT_ATOL, f"a different global batch changed the weights by only {diff}"


def run_two_torchrun_nodes(tmp_path: Path, env: dict, torchrun_args: list[str], program: list[str],
                           node1_program: list[str] | None = None) -> None:  # fmt: skip
    """Two `torchrun --nnodes=2` processes (node_rank 0 and 1) on 127.0.0.1; logs in node{r}.log.

    Both run ``program`` unless ``node1_program`` is given for node 1.

    Returns when both exit 0; fails fast otherwise (tests/process_watch.py). Static
    rendezvous (torchrun's default here): node 0's agent serves the store on the reserved
    port, and node 1 gives up after a load-scaled timeout instead of torch's 600 s if
    that store never appears.
    """
    with reserve_ports(1, f"torchrun {tmp_path}") as [port]:
        commands = {
            f"node{node_rank}": [
                TORCHRUN, "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node_rank}",
                f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_conf=timeout={scaled(IDLE_JOIN_S):.0f}",
                "--max_restarts=0", *torchrun_args, *(node1_program if node_rank == 1 and node1_program else program),
            ]
            for node_rank in (0, 1)
        }  # fmt: skip
        # Two agents and two ranks: about twice the work of one ddp_check run.
        run_watched(commands, log_dir=tmp_path, idle_seconds=2 * IDLE_RUN_S, env=env, cwd=REPO_ROOT,
                    dump_stacks_of=[DDP_CHECK.name])  # fmt: skip


def test_torchrun_two_simulated_nodes(single_process_run, tmp_path):
    """`torchrun --nnodes=2 --nproc_per_node=1` twice (node_rank 0 and 1) on 127.0.0.1."""
    single_dir, single = single_process_run
    out = tmp_path / "torchrun2"
    env = distributed_env()
    env.pop("MASTER_ADDR")  # torchrun sets it from the rendezvous endpoint
    run_two_torchrun_nodes(tmp_path, env, [], ddp_check_args(out, "--strategy", "ddp", "--num-nodes", "2"))
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["num_nodes"] == 2 and result["global_step"] == 6
    # The whole log: torchrun may append a teardown trace after node 0's store has closed.
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (tmp_path / "node1.log").read_text()
    # Two nodes are two ranks like any other: same weights as one process.
    assert max_weight_difference(single_dir, out) < WEIGHT_ATOL
    for name, value in single["metrics"].items():
        assert result["metrics"][name] == pytest.approx(value, rel=METRIC_RTOL), name


@pytest.mark.slow
def test_torchrun_node_whose_peer_died_fails_fast_with_the_cause(tmp_path):
    """Rank 1 dies before joining: rank 0 would wait in the rendezvous for 30 min; it ends in seconds."""
    dies = tmp_path / "dies.py"
    dies.write_text("raise SystemExit('rank 1 gives up before joining the process group')\n")
    env = distributed_env()
    env.pop("MASTER_ADDR")
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)node1 exited 1 .*node0 still running.*killed.*rank 1 gives up"):
        run_two_torchrun_nodes(tmp_path, env, [], ddp_check_args(tmp_path / "out", "--strategy", "ddp", "--num-nodes", "2"),
                               node1_program=[str(dies)])  # fmt: skip
    # Startup of two agents and two ranks plus the peer grace, not a timeout.
    assert time.monotonic() - start < scaled(IDLE_RUN_S)


@pytest.mark.slow
def test_ni_train_torchrun_two_simulated_nodes(tmp_path):
    """ni-train itself under two torchrun "nodes": completes, one run dir for the job."""
    from nowcast_infill.data.synthetic import write_synthetic_store
    from test_slurm import TINY_TRAIN, ni_train_command

    write_synthetic_store(tmp_path / "data" / "synthetic.zarr", n_times=96, ny=32, nx=32, seed=5)
    env = distributed_env()
    env.pop("MASTER_ADDR")
    env.update(NI_DATA_DIR=str(tmp_path / "data"), NI_LOG_DIR=str(tmp_path / "outputs"), WANDB_MODE="offline")
    run_two_torchrun_nodes(tmp_path, env, ["--rdzv_id=ni-test-job", "--no_python"],
                           [*ni_train_command(), "strategy=ddp_multinode", "trainer=cpu", *TINY_TRAIN,
                            f"trainer.strategy.timeout.seconds={scaled(IDLE_JOIN_S):.0f}"])  # fmt: skip
    logs = "\n".join((tmp_path / f"node{r}.log").read_text() for r in (0, 1))
    assert "global batch = 2 per device x 1 devices x 2 nodes x 1 accumulation = 4" in logs
    # Both nodes agree on the run directory through the rendezvous id.
    runs = sorted((tmp_path / "outputs" / "infill" / "runs").iterdir())
    assert [r.name for r in runs] == ["infill_pconv_ni-test-job"], runs
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()
