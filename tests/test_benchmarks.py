"""The benchmark scripts run and print what BENCHMARKS.md quotes (tiny sizes, seconds)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "bench_model.py"), *args],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


@pytest.mark.slow
def test_bench_model_prints_the_ratio_last_and_the_mask_free_floor():
    lines = _run("--quick", "--skip-variants")
    assert re.fullmatch(r"pconv_vs_naive_step_ratio=\d+\.\d{3}", lines[-1])
    floor = [line for line in lines if line.startswith("maskfree_vs_naive_step_ratio=")]
    assert len(floor) == 1 and float(floor[0].split("=")[1].split()[0]) > 0


@pytest.mark.slow
def test_bench_model_profile_splits_convolution_time():
    line = _run("--quick", "--profile")[-1]
    match = re.fullmatch(r"step CPU (\S+) s: convolutions (\S+) s \(forward (\S+) s, backward (\S+) s\), everything else (\S+) s", line)
    assert match, line
    total, conv, fwd, bwd, rest = map(float, match.groups())
    assert conv > 0 and fwd > 0 and bwd > 0 and abs(conv - fwd - bwd) < 2e-3 and abs(total - conv - rest) < 2e-3
