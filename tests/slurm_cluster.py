"""Session fixture: a real two-node Slurm cluster on this host (slurm/local_cluster.sh).

Import the fixture into a test module (tests/ is on ``sys.path`` under pytest's default
import mode)::

    from slurm_cluster import slurm_cluster  # noqa: F401  (pytest fixture)

The cluster gets its own state dir and a block of ports reserved for the session
(tests/process_watch.py), daemons first, then one rendezvous port per job, so it never
meets a cluster a developer started by hand or another test session's cluster. Tests skip, with the reason, when this is not root, when the Debian
packages cannot be installed, or when the daemons do not come up in time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from process_watch import reserve_ports, scaled

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_CLUSTER = REPO_ROOT / "slurm" / "local_cluster.sh"
# install (~13 MB from the Debian mirror) plus start; the start alone takes ~2 s
START_TIMEOUT_S = 300
# Rendezvous ports for the cluster's jobs (MASTER_PORT = base + job id mod this), after
# slurmctld's and the two slurmds' ports. Lightning's own default, 15000 + job id, is the
# same in every local cluster, so two test sessions on one host would share it.
JOB_PORTS = 16


def _run_cluster_script(action: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(LOCAL_CLUSTER), action], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> dict[str, str]:
    """Start a local 2-node Slurm cluster; yield the environment for its client commands.

    The yielded dict is ``os.environ`` plus ``SLURM_CONF`` (our generated config),
    ``NI_SLURM_DIR`` (its state dir, logs under ``log/``), ``MASTER_ADDR=127.0.0.1`` and
    ``GLOO_SOCKET_IFNAME=lo``. Pass it as ``env=`` to ``sbatch``/``srun``/``ni-train``;
    jobs inherit it (sbatch exports the submitting environment).
    """
    if os.geteuid() != 0:
        pytest.skip("local Slurm cluster needs root (apt-get install, slurmd running jobs as their user)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and there is no apt-get to install Debian's slurmctld/slurmd/munge")

    # Short path: the munge socket path must stay under the 108-byte sun_path limit.
    state_dir = Path(tmp_path_factory.mktemp("slurm"))
    ports = reserve_ports(3 + JOB_PORTS, f"slurm cluster {state_dir}")
    env = {
        key: value
        for key, value in os.environ.items()
        # A test session started inside a Slurm job must not leak that job into ours.
        if not key.startswith("SLURM_")
    }
    env.update(
        NI_SLURM_DIR=str(state_dir),
        NI_SLURM_PORT_BASE=str(ports.ports[0]),
        NI_SLURM_MASTER_PORT_BASE=str(ports.ports[3]),
        NI_SLURM_MASTER_PORTS=str(JOB_PORTS),
        # Both nodes idle takes ~2 s on an idle machine.
        NI_SLURM_START_TIMEOUT=f"{scaled(15):.0f}",
        SLURM_CONF=str(state_dir / "slurm.conf"),
        MASTER_ADDR="127.0.0.1",
        GLOO_SOCKET_IFNAME="lo",
    )
    try:
        yield from _start_and_stop(env, state_dir)
    finally:
        ports.release()


def _start_and_stop(env: dict[str, str], state_dir: Path):
    t0 = time.monotonic()
    try:
        started = _run_cluster_script("start", env, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _run_cluster_script("stop", env, timeout=120)
        pytest.skip(f"local Slurm cluster did not come up within {START_TIMEOUT_S} s (logs: {state_dir}/log)")
    if started.returncode != 0:
        _run_cluster_script("stop", env, timeout=120)
        pytest.skip(
            f"local Slurm cluster could not start (slurm/local_cluster.sh start exit {started.returncode}): "
            f"{started.stderr.strip()[-800:]}"
        )
    print(f"local Slurm cluster up in {time.monotonic() - t0:.1f} s, state in {state_dir}")
    try:
        yield env
    finally:
        stopped = _run_cluster_script("stop", env, timeout=120)
        if stopped.returncode != 0:
            print(f"warning: stopping the local Slurm cluster failed: {stopped.stderr}")
