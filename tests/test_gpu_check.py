"""experiments/gpu_check.sh: the dry run on CPU covers every section and prints the full
tables; the FLOP counter, the peak lookup and the batch search are right on known cases;
on a CUDA machine (marker `gpu`) the real check runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

import gpu_check  # noqa: E402


def run_script(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "WANDB_MODE": "offline"}
    return subprocess.run(["bash", str(REPO / "experiments" / "gpu_check.sh"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def table_rows(text: str, header_start: str) -> list[list[str]]:
    """Cells of the Markdown table whose header row starts with `header_start` (header excluded)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_dry_run_prints_every_row_and_column(tmp_path):
    done = run_script("--dry-run", "--peak-tflops", "0.05", "--json", str(tmp_path / "gpu.json"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("## GPU check: CPU") and "DRY RUN" in out

    header = "| " + " | ".join(gpu_check.STEP_COLUMNS) + " |"
    assert header in out
    rows = table_rows(out, "| variant | crop |")
    cells = {(r[0], r[1], r[3], r[4], r[5]) for r in rows}
    # pconv: both crops x channels_last off/on; the other variants: both crops (fp32 only on CPU)
    expected = {("pconv", crop, "fp32", cl, "off") for crop in ("16²", "32²") for cl in ("off", "on")}
    expected |= {(v, crop, "fp32", "off", "off") for v in ("lstm", "attention", "lstm_attention") for crop in ("16²", "32²")}
    assert cells == expected
    for r in rows:
        step_ms, gflop, mfu = float(r[6]), float(r[9]), r[11]
        assert step_ms > 0 and gflop > 0, r
        assert mfu.endswith("%") and float(mfu[:-1]) > 0, r  # MFU from --peak-tflops
        assert r[12] == "", r  # no failed/skipped cell

    assert "### Largest batch (pconv, 3 levels)" in out  # the dry run's small net
    assert "**4** (the search cap 4" in out  # CPU: never out of memory, so the cap is reached

    infill = table_rows(out, "| product | frame |")
    assert [(r[0], r[1], r[2]) for r in infill] == [
        ("RW", "90x90", "fp32"), ("RW", "90x90", "bf16 autocast"), ("YW", "110x90", "fp32"), ("YW", "110x90", "bf16 autocast")]
    for r in infill:
        assert float(r[4]) > 0, r
    assert "8,760 frames" in infill[0][5] and "105,120 frames" in infill[2][5]

    assert "### DDP over all visible GPUs" in out
    assert "- MFU, pconv bf16 512²: goal >= 35 %" in out
    assert "- ni-infill 900x900: goal >= 100 frames/s" in out
    assert (tmp_path / "gpu.json").is_file()


def test_flop_counter_matches_hand_count_for_a_convolution():
    conv = torch.nn.Conv2d(3, 5, kernel_size=3, padding=1, bias=False)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    # forward: one multiply-add (2 FLOPs) per output pixel, output channel and kernel tap
    forward = 2 * 2 * 5 * 8 * 8 * (3 * 3 * 3)
    assert gpu_check.count_flops(lambda: conv(x)) == forward
    # backward: the gradient of the input and of the weights, each as costly as the forward
    assert gpu_check.count_flops(lambda: conv(x).sum().backward()) == 3 * forward


def test_peak_lookup_by_device_name():
    assert gpu_check.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_bf16_tflops("NVIDIA H100 NVL") == 835.0
    assert gpu_check.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert gpu_check.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.peak_bf16_tflops("NVIDIA L40S") == 362.0
    assert gpu_check.peak_bf16_tflops("NVIDIA L40") == 181.0
    assert gpu_check.peak_bf16_tflops("Tesla M40") is None


@pytest.mark.parametrize("limit", [1, 5, 16, 17, 100, 511])
def test_largest_batch_search_finds_the_edge(limit):
    tried = []

    def fits(batch):
        tried.append(batch)
        return batch <= limit

    assert gpu_check.largest_fitting(fits, start=1, cap=512) == (limit, False)
    assert len(tried) <= 2 * 10 + 1  # doubling then bisection, not a linear scan


def test_largest_batch_search_cap_and_nothing_fits():
    assert gpu_check.largest_fitting(lambda b: True, start=4, cap=100) == (100, True)
    assert gpu_check.largest_fitting(lambda b: False, start=4, cap=100) == (0, False)


@pytest.mark.gpu
@pytest.mark.slow
def test_real_gpu_check():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    done = run_script("--no-ddp", "--budget-s", "300", timeout=480)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.cuda.get_device_name(0) in done.stdout
    rows = table_rows(done.stdout, "| variant | crop |")
    assert any(r[0] == "pconv" and r[1] == "512²" and r[3] == "bf16" and r[6] != "–" for r in rows)
