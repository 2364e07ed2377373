"""experiments/bench_model.py measures what it says it measures (tiny sizes, seconds).

The numbers in BENCHMARKS.md are ratios of step times and a profile split; these tests check
that each printed number comes from the work it names: the timer times the step it is given,
the pconv / naive ratio pairs the right networks doing the same computation, and the profile
split covers one step with every convolution kernel on the convolution side.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.profiler

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "bench_model.py"


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("bench_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _printed(function, *args) -> tuple[object, list[str]]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = function(*args)
    return result, buffer.getvalue().strip().splitlines()


def test_timed_returns_the_duration_of_the_step_it_runs(bench):
    calls = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.05)

    seconds = bench.timed(step, "cpu")
    assert calls, "the step was not run"
    assert 0.05 <= seconds < 1.0  # an idle 50 ms step; generous upper bound for a loaded machine


def test_naive_comparison_times_equal_work_and_reports_the_median_ratio(bench, monkeypatch):
    """The three networks of the comparison are stepped 1 + repeats times each; pconv and naive
    compute the same losses (same weights, same batch: the ratio compares equal work); the
    mask-free floor ignores the masks; the printed ratios are the medians of the right pairs."""
    made = []  # (network name, losses of its steps) in the order the script makes the steps
    networks = {}
    real_make_step = bench.make_step

    def recording_make_step(model, batch, device, bf16):
        name, losses = ("pconv", "naive", "maskfree")[len(made)], []
        step = real_make_step(model, batch, device, bf16)
        made.append((name, losses))
        networks[name] = model

        def recorded():
            losses.append(step())

        recorded.network = name
        return recorded

    # fixed per-step durations so the expected medians are known: pconv/naive = 0.3, 0.45, 0.6
    durations = {"pconv": [9.0, 0.6, 0.9, 1.2], "naive": [9.0, 2.0, 2.0, 2.0], "maskfree": [9.0, 0.2, 0.4, 1.0]}

    def fake_timed(step, device):
        step()
        return durations[step.network].pop(0)

    monkeypatch.setattr(bench, "make_step", recording_make_step)
    monkeypatch.setattr(bench, "timed", fake_timed)
    args = bench.parse_args(["--quick", "--skip-variants", "--repeats", "3"])
    args.channels, args.size, args.batch = (4, 8, 8), 32, 1  # smaller than --quick: seconds
    ratio, lines = _printed(bench.compare_with_naive, args)

    losses = dict(made)
    assert [len(v) for v in losses.values()] == [4, 4, 4]  # one warm-up + 3 repeats each
    torch.testing.assert_close(losses["pconv"], losses["naive"], rtol=1e-5, atol=0)
    assert losses["maskfree"] != pytest.approx(losses["pconv"], rel=1e-3)
    assert losses["pconv"][-1] != losses["pconv"][0], "the optimiser step did not change the network"
    # the floor has no mask path: given input already 0 at hidden pixels (the network zeroes them
    # itself), its output ignores the mask; the partial-conv network's re-normalises by it
    batch = bench.make_batch(1, 3, 1, args.size, 0, "cpu", seed=1)
    x, mask = batch["x"] * batch["x_mask"], batch["x_mask"]
    with torch.no_grad():
        for name, mask_matters in (("maskfree", False), ("pconv", True)):
            net = networks[name]
            same = torch.equal(net(x, mask, None, None), net(x, torch.ones_like(mask), None, None))
            assert same is not mask_matters, f"{name}: output {'ignores' if same else 'depends on'} the mask"
    assert ratio == pytest.approx(statistics.median([0.6 / 2, 0.9 / 2, 1.2 / 2]))  # warm-ups (9.0) left out
    (floor_line,) = [line for line in lines if line.startswith("maskfree_vs_naive_step_ratio=")]
    assert float(floor_line.split("=")[1].split()[0]) == pytest.approx(0.2, abs=5e-4)  # median of .1, .2, .5


def test_profile_split_covers_one_step_and_every_convolution(bench, monkeypatch):
    """The profiled step runs each partial convolution once (two forward kernels: mask count and
    data; one backward: data only, the mask path has no gradient), and no convolution kernel's
    time is left in "everything else"."""
    profiles, models = [], []

    class RecordedProfile(torch.profiler.profile):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            profiles.append(self)

    real_make_step = bench.make_step

    def recording_make_step(model, *args):
        models.append(model)
        return real_make_step(model, *args)

    monkeypatch.setattr(torch.profiler, "profile", RecordedProfile)
    monkeypatch.setattr(bench, "make_step", recording_make_step)
    _, lines = _printed(bench.profile_step, bench.parse_args(["--quick", "--profile"]))

    match = re.fullmatch(
        r"step CPU (\S+) s: convolutions (\S+) s \(forward (\S+) s, backward (\S+) s\), everything else (\S+) s",
        lines[-1],
    )
    assert match, lines[-1]
    total, conv, forward, backward, rest = map(float, match.groups())
    (profile,) = profiles
    events = {event.key: event for event in profile.key_averages()}
    assert total == pytest.approx(sum(e.self_cpu_time_total for e in events.values()) / 1e6, abs=1e-3)

    (model,) = models
    from nowcast_infill.models.components.partial_conv import PartialConv2d

    layers = sum(isinstance(m, PartialConv2d) for m in model.modules())
    forward_kernels = events["aten::convolution"].count  # the dispatcher: one call per F.conv2d
    assert forward_kernels == 2 * layers
    assert events["aten::convolution_backward"].count == layers
    assert forward > 0 and backward > 0 and rest > 0

    counted = {"aten::mkldnn_convolution", "aten::_convolution", "aten::convolution_backward"}
    left_out = {k: e.self_cpu_time_total / 1e6 for k, e in events.items() if "conv" in k.lower() and k not in counted}
    assert sum(left_out.values()) < 0.05 * conv, f"convolution time counted as everything else: {left_out}"


@pytest.mark.slow
def test_bench_model_script_prints_the_ratio_last_and_the_mask_free_floor():
    """The script as BENCHMARKS.md runs it (subprocess, command-line flags, the line formats)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--skip-variants", "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"pconv_vs_naive_step_ratio=\d+\.\d{3}", lines[-1])
    rows = [line.split("|")[1:-1] for line in lines if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 2  # --repeats 2: one table row per interleaved group
    for _, pconv_s, naive_s, _, ratio, _ in rows:
        # each row's ratio is its own pair's; the times are printed to 3 decimals (±0.0005 s), which
        # at --quick's millisecond steps moves the ratio of the printed times by far more than 10 %
        p, n, half = float(pconv_s), float(naive_s), 0.0005
        low, high = max(p - half, 0.0) / (n + half), (p + half) / max(n - half, 1e-9)
        assert low - 1.5e-3 <= float(ratio) <= high + 1.5e-3, (pconv_s, naive_s, ratio)
    # the last line is the median of the table's ratios
    assert float(lines[-1].split("=")[1]) == pytest.approx(statistics.median(float(r[4]) for r in rows), abs=1.5e-3)



def test_bench_priors_times_every_prior_on_one_store(tmp_path, capsys):
    """experiments/bench_priors.py on a small synthetic store: every prior filled once per window,
    then timed warm in interleaved rounds, with the ratio to no prior from the same round."""
    import json

    from nowcast_infill.data.synthetic import write_synthetic_store

    store = tmp_path / "s.zarr"
    write_synthetic_store(store, n_times=40, ny=48, nx=48, seed=2)
    path = Path(__file__).resolve().parents[1] / "experiments" / "bench_priors.py"
    spec = importlib.util.spec_from_file_location("bench_priors", path)
    bench_priors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_priors)
    result = bench_priors.main(["--samples", "3", "--repeats", "2", "--crop", "32", "--store", str(store)])
    out = capsys.readouterr().out
    assert set(result["fill_s_per_window"]) == set(bench_priors.PRIORS)
    assert all(v > 0 for v in result["fill_s_per_window"].values())
    for name in bench_priors.PRIORS:
        assert len(result["samples_per_s"][name]) == 2
        ratios = [rate / none for rate, none in zip(result["samples_per_s"][name], result["samples_per_s"]["none"])]
        assert result["ratio_to_none"][name] == ratios
    assert out.count("\n| ") == 1 + len(bench_priors.PRIORS)
    assert json.loads(out.split("BENCH_PRIORS ", 1)[1].splitlines()[0])["windows"] == result["windows"]
