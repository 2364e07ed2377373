"""Multi-process tests that fail fast, with the cause, on a busy machine.

Distributed tests used to hang rather than fail when the machine was loaded (several test
sessions at once on 2 cores): a rendezvous port taken by someone else, or a rank waiting
on a peer that had already died, waits out torch's own timeouts (600 s for torchrun's
static rendezvous, 30 min for a gloo process group) and the test only sees a bare
``TimeoutExpired``. This module gives such tests:

- :func:`reserve_ports`: TCP ports on 127.0.0.1 that no other test on this host can get
  at the same time (below the kernel's ephemeral range, so never handed out to a
  ``connect()`` or ``bind(port 0)``, and held by a lock file shared by every checkout);
- :func:`scaled` (a limit from :func:`slowness` now), :class:`LoadScaledBudget` and
  :func:`wait_until` (a budget counted in idle-machine seconds while the load changes):
  time limits scaled to how contended the CPUs are, instead of fixed wall-clock numbers;
- :func:`run_watched`: starts processes with their output in log files and returns once
  all exit 0; when one fails the others get a short grace and are then killed, and a run
  past its load-scaled budget is killed too; either way the assertion names the process
  that failed first (or the budget) and shows the tail of every log.

Tests import it as a plain module (``tests/`` is on ``sys.path`` under pytest).
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# Ports handed out to tests; the kernel's ephemeral range (usually 32768-60999) is
# excluded at run time, so a port freed for a moment cannot be reused by an unrelated
# outgoing connection before our server binds it. Below it, the range also avoids ports
# others pick by rule: Lightning under Slurm (15000 + last 4 digits of the job id),
# slurm/local_cluster.sh's default (26817), torchrun's default (29500).
TEST_PORT_RANGE = range(30000, 32700)
PORT_LOCK_DIR = Path(tempfile.gettempdir()) / "ni-test-ports"
# pytest-timeout (pyproject.toml) kills a test at 900 s with only pytest's own stack;
# our own limits stay below it so the failure shows the children's logs instead.
MAX_WAIT_S = 780.0
LOG_TAIL_CHARS = 4000


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same option as the servers we start (TCPStore, slurmctld): a TIME_WAIT left by
        # the previous test on this port does not block them, so it must not block us.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortReservation:
    """``count`` consecutive ports, held (by flock on one file per port) until :meth:`release`.

    The lock belongs to this process: it ends with :meth:`release` or when the process
    exits, however it exits, so a killed test run never leaves a port reserved.
    """

    def __init__(self, count: int, purpose: str) -> None:
        ephemeral = _ephemeral_ports()
        candidates = [p for p in TEST_PORT_RANGE if p not in ephemeral and p + count - 1 not in ephemeral]
        if not candidates:
            raise RuntimeError(
                f"no test ports: {TEST_PORT_RANGE.start}-{TEST_PORT_RANGE.stop - 1} lies inside the ephemeral "
                f"range {ephemeral.start}-{ephemeral.stop - 1} (/proc/sys/net/ipv4/ip_local_port_range)"
            )
        PORT_LOCK_DIR.mkdir(exist_ok=True)
        try:
            PORT_LOCK_DIR.chmod(0o1777)  # several users' test runs share the directory
        except OSError:
            pass
        self._fds: list[int] = []
        # A random start spreads concurrent sessions over the range instead of having them
        # all contend for its first ports.
        start = random.randrange(len(candidates))
        for i in range(0, len(candidates), count):
            base = candidates[(start + i) % len(candidates)]
            if base + count - 1 >= TEST_PORT_RANGE.stop:
                continue
            if self._take(range(base, base + count), purpose):
                self.ports = list(range(base, base + count))
                return
        raise RuntimeError(f"no {count} consecutive free test ports in {TEST_PORT_RANGE} (locks in {PORT_LOCK_DIR})")

    def _take(self, ports: range, purpose: str) -> bool:
        for port in ports:
            fd = os.open(PORT_LOCK_DIR / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self.release()
                return False
            self._fds.append(fd)
            # Something outside our tests (a developer's server) may hold the port anyway.
            if not _bindable(port):
                self.release()
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} {purpose}\n".encode())
        return True

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing drops the flock
        self._fds = []

    def __enter__(self) -> list[int]:
        return self.ports

    def __exit__(self, *exc) -> None:
        self.release()


def reserve_ports(count: int = 1, purpose: str = "test") -> PortReservation:
    """Reserve ``count`` consecutive ports; use as ``with reserve_ports(1) as [port]:``."""
    return PortReservation(count, purpose)


def load_per_core() -> float:
    """1-minute load average per core (>= 1): how many runnable processes share a core."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def slowness(sample_cpu_s: float = 0.05) -> float:
    """How many times slower than an idle machine CPU-bound work runs now (>= 1).

    The larger of :func:`load_per_core` and the wall time over CPU time of a short busy
    loop in this thread (how much of a core we get right now; the load average lags).
    """
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    while time.thread_time() - cpu0 < sample_cpu_s:
        sum(range(1000))
    contention = (time.perf_counter() - wall0) / max(time.thread_time() - cpu0, 1e-9)
    return max(contention, load_per_core())


def scaled(idle_seconds: float, margin: float = 4.0) -> float:
    """A time limit for something taking ``idle_seconds`` on an idle 2-core machine."""
    return min(MAX_WAIT_S, idle_seconds * margin * slowness())


class LoadScaledBudget:
    """A time budget counted in idle-machine seconds: wall time divided by the load per core.

    ``LoadScaledBudget(20)`` expires after ~80 s wall (``margin`` 4) on an idle machine and
    ~320 s at 4 runnable processes per core, however the load changes in between; never
    later than :data:`MAX_WAIT_S` wall.
    """

    def __init__(self, idle_seconds: float, margin: float = 4.0) -> None:
        self.idle_seconds, self.budget = idle_seconds, idle_seconds * margin
        self.start = self._last = time.monotonic()
        self.idle_equivalent = 0.0
        self.factor = load_per_core()

    def expired(self) -> bool:
        now = time.monotonic()
        self.factor = load_per_core()
        self.idle_equivalent += (now - self._last) / self.factor
        self._last = now
        return self.idle_equivalent > self.budget or now - self.start > MAX_WAIT_S

    @property
    def wall(self) -> float:
        return time.monotonic() - self.start

    def __str__(self) -> str:
        return (
            f"{self.wall:.0f} s wall = {self.idle_equivalent:.0f} s idle-equivalent at load/core {self.factor:.1f} "
            f"(budget {self.budget:.0f} s = {self.budget / self.idle_seconds:.0f} x {self.idle_seconds:.0f} s idle; "
            f"wall cap {MAX_WAIT_S:.0f} s)"
        )


def wait_until(predicate, idle_seconds: float, what: str, explain=lambda: "") -> None:
    """Poll ``predicate()`` each second until true; fail after a :class:`LoadScaledBudget`."""
    budget = LoadScaledBudget(idle_seconds)
    while not predicate():
        if budget.expired():
            raise AssertionError(f"no {what} after {budget}\n{explain()}")
        time.sleep(1)


def _children(pid: int) -> list[int]:
    """All live descendants of ``pid`` (Linux /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # Field 4 of /proc/PID/stat is the parent; the name (field 2) may hold spaces.
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def request_stack_dumps(procs: Sequence[subprocess.Popen], scripts: Sequence[str]) -> int:
    """SIGUSR2 to each live process below ``procs`` running one of ``scripts``; returns how many.

    Those scripts register :mod:`faulthandler` on SIGUSR2 (experiments/ddp_check.py does),
    so each prints every thread's stack into its log before the watchdog kills it.
    """
    sent = 0
    for proc in procs:
        if proc.poll() is not None:
            continue
        for pid in [proc.pid, *_children(proc.pid)]:
            if any(script in _cmdline(pid) for script in scripts):
                try:
                    os.kill(pid, signal.SIGUSR2)
                    sent += 1
                except ProcessLookupError:
                    pass
    return sent


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process below it (torchrun starts its workers in new sessions)."""
    if proc.poll() is not None:
        return
    for pid in reversed(_children(proc.pid)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait()


def log_tails(logs: Mapping[str, Path], chars: int = LOG_TAIL_CHARS) -> str:
    parts = []
    for name, path in logs.items():
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        parts.append(f"----- {name} ({path}), last {chars} chars -----\n{text[-chars:]}")
    return "\n".join(parts)


def run_watched(
    commands: Mapping[str, Sequence[str]],
    *,
    log_dir: Path,
    idle_seconds: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    peer_grace_idle_s: float = 5.0,
    dump_stacks_of: Sequence[str] = (),
) -> None:
    """Run ``commands`` (name -> argv) at once; return when all exit 0, else raise AssertionError.

    Output of each goes to ``log_dir/<name>.log``. ``idle_seconds`` is how long the whole
    run takes on an idle machine; the run may take ``4 x`` that in idle-equivalent seconds
    (:class:`LoadScaledBudget`: a run that gets slower as other jobs start is not cut
    short). When a process exits non-zero, the others get ``peer_grace_idle_s`` (times the
    load per core) to end by themselves -- a
    peer of a dead rank should fail on its own within seconds -- and are then killed.
    Processes running a script named in ``dump_stacks_of`` are asked for their stacks
    (:func:`request_stack_dumps`) before a hung run is killed.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = {name: log_dir / f"{name}.log" for name in commands}
    procs: dict[str, subprocess.Popen] = {}
    handles = []
    try:
        for name, argv in commands.items():
            handle = open(logs[name], "w")
            handles.append(handle)
            procs[name] = subprocess.Popen(
                list(argv), env=dict(env) if env is not None else None, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT
            )
        budget = LoadScaledBudget(idle_seconds)
        first_failure: tuple[str, int, float] | None = None
        while True:
            time.sleep(0.5)
            hung = budget.expired()
            codes = {name: p.poll() for name, p in procs.items()}
            if first_failure is None:
                failed = [(name, c) for name, c in codes.items() if c not in (None, 0)]
                if failed:
                    first_failure = (*failed[0], budget.wall)
            running = [name for name, c in codes.items() if c is None]
            if not running:
                break
            if first_failure is not None and budget.wall - first_failure[2] > peer_grace_idle_s * budget.factor:
                name, code, when = first_failure
                raise AssertionError(
                    f"{name} exited {code} after {when:.0f} s; {', '.join(running)} still running "
                    f"{budget.wall - when:.0f} s later (waiting on a dead peer?), killed.\n{log_tails(logs)}"
                )
            if hung:
                if request_stack_dumps(list(procs.values()), dump_stacks_of):
                    time.sleep(min(10.0, 2.0 * budget.factor))  # time to write the stacks under load
                raise AssertionError(f"{', '.join(running)} still running after {budget}: hung, killed.\n{log_tails(logs)}")
        if first_failure is not None:
            name, code, when = first_failure
            raise AssertionError(
                f"{name} exited {code} after {when:.0f} s (exit codes "
                f"{ {n: p.returncode for n, p in procs.items()} }).\n{log_tails(logs)}"
            )
    finally:
        for p in procs.values():
            kill_tree(p)
        for handle in handles:
            handle.close()
