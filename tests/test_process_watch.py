"""tests/process_watch.py: reserved ports, load-scaled budgets, the multi-process watchdog."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from process_watch import PORT_LOCK_DIR, _ephemeral_ports, reserve_ports, run_watched

SLEEP_FOREVER = [sys.executable, "-c", "import time; time.sleep(1000)"]


def test_reserved_ports_are_exclusive_across_processes_and_outside_the_ephemeral_range():
    with reserve_ports(3, "test a") as first, reserve_ports(3, "test b") as second:
        assert len(first) == len(second) == 3 and not set(first) & set(second)
        assert not set(first + second) & set(_ephemeral_ports())
        # Another test session (another process) cannot take a port we hold...
        lock = str(PORT_LOCK_DIR / f"{first[0]}.lock")
        take = [sys.executable, "-c", "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)", lock]
        assert subprocess.run(take, capture_output=True).returncode != 0
    # ...and can once we release it.
    assert subprocess.run(take, capture_output=True).returncode == 0


def test_a_failed_process_ends_its_waiting_peer_with_the_cause(tmp_path):
    dies = [sys.executable, "-c", "import sys; print('rank 1: cannot join'); sys.exit(3)"]
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)rank1 exited 3 .*rank0 still running.*killed.*rank 1: cannot join"):
        run_watched({"rank0": SLEEP_FOREVER, "rank1": dies}, log_dir=tmp_path, idle_seconds=600, peer_grace_idle_s=0.5)
    # Grace: 0.5 s x load per core; not the 4 x 600 s budget a hang would get.
    assert time.monotonic() - start < 60


def test_a_hung_process_is_killed_after_its_load_scaled_budget(tmp_path):
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"hang still running after .* idle-equivalent .*: hung, killed"):
        run_watched({"hang": SLEEP_FOREVER}, log_dir=tmp_path, idle_seconds=0.5)
    # 4 x 0.5 s of idle-equivalent time: at least 2 s wall, more the busier the machine.
    assert time.monotonic() - start >= 2.0


def test_cpu_burner_runs_a_command_beside_its_burners_and_returns_its_status(tmp_path):
    burner = [sys.executable, str(__file__.rsplit("/", 2)[0] + "/experiments/cpu_burner.py"), "--procs", "1", "--seconds", "30"]
    done = subprocess.run([*burner, "--", sys.executable, "-c", "import sys; sys.exit(7)"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 7, done.stderr
    assert "1 busy processes" in done.stderr and "stopped" in done.stderr
