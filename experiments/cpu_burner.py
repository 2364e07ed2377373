"""Keep N CPU cores busy for a bounded time, optionally while a command runs.

Used to check that the test suite passes on a loaded machine (``make test-busy``):
each burner is a process spinning in a pure-Python loop, which adds about 1 to the
load average. Burners stop by themselves at the deadline, even when this script is
killed with SIGKILL (each one checks the clock, so none outlives ``--seconds``).

Examples::

    # load +4 for 10 minutes, in the background of whatever else runs
    python experiments/cpu_burner.py --procs 4 --seconds 600

    # the whole suite beside 4 burners; the burners stop when pytest exits,
    # and the exit status is pytest's
    python experiments/cpu_burner.py --procs 4 --seconds 3600 -- .venv/bin/python -m pytest
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time


def burn_until(deadline: float) -> None:
    """Spin on one core until ``time.monotonic()`` passes ``deadline`` (seconds)."""
    # Checking the clock every 100k iterations costs nothing and bounds the overrun to
    # a few milliseconds of CPU time.
    x = 0
    while time.monotonic() < deadline:
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", type=int, default=4, help="busy processes (each adds ~1 to the load average)")
    p.add_argument("--seconds", type=float, default=600, help="hard limit: every burner exits after this")
    args = p.parse_args(argv)
    if args.procs < 1 or args.seconds <= 0:
        p.error("--procs must be >= 1 and --seconds > 0")
    return args, command


def main(argv: list[str] | None = None) -> int:
    args, command = parse_args(argv)
    deadline = time.monotonic() + args.seconds
    # CLOCK_MONOTONIC is system-wide on Linux, so children compare against the same clock.
    burners = [mp.Process(target=burn_until, args=(deadline,), daemon=True) for _ in range(args.procs)]
    for b in burners:
        b.start()
    print(
        f"cpu_burner: {args.procs} busy processes (pids {[b.pid for b in burners]}) for at most {args.seconds:.0f} s; "
        f"load average now {os.getloadavg()[0]:.1f}",
        file=sys.stderr,
        flush=True,
    )

    command_proc = subprocess.Popen(command) if command else None

    def stop() -> None:
        for b in burners:
            if b.is_alive():
                b.terminate()

    def on_sigterm(*_) -> None:
        # `kill <this pid>` (or a `timeout` around us) ends the command too, not only the burners.
        if command_proc is not None and command_proc.poll() is None:
            command_proc.terminate()
        stop()
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    status = 0
    try:
        if command_proc is not None:
            status = command_proc.wait()
        else:
            for b in burners:
                b.join()
    except KeyboardInterrupt:  # Ctrl-C reaches the command too (same process group)
        status = 130
    finally:
        stop()
        for b in burners:
            b.join()
    print(f"cpu_burner: stopped; load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
