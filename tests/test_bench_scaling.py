"""experiments/bench_scaling.py: the scaling model by hand, and a --dry-run of the real loop.

The dry run launches the real training loop (1 process, then 2 gloo processes) at tiny sizes
in subprocesses, as every DDP test does, and checks that the per-step time split accounts for
the step, that the all-reduce hook saw every gradient byte, and that the report's efficiency
is the one its own step times give.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "experiments"))

import bench_scaling as bs  # noqa: E402


def test_ring_allreduce_matches_hand_computation():
    # One node, 8 GPUs, 103.2 MB (25.8 M fp32 gradients), 450 GB/s, NCCL latencies, 5 buckets:
    # bandwidth 2*7/8 * 103.2e6 / 450e9 = 401.33 us; latency per call 8.4 + 14*3.4 = 56.0 us.
    t = bs.ring_allreduce_seconds(103.2e6, 8, 450e9, 25e9, 8, 3.4e-6, 9.6e-6, 8.4e-6, n_calls=5)
    assert t == pytest.approx(401.333e-6 + 5 * 56.0e-6, rel=1e-4)
    # 32 GPUs on 4 nodes: the ring runs at the network's 25 GB/s; 62 steps, 6 cross nodes:
    # bandwidth 2*31/32 * 103.2e6 / 25e9 = 7998.0 us; latency 8.4 + 56*3.4 + 6*9.6 = 256.4 us.
    t = bs.ring_allreduce_seconds(103.2e6, 32, 450e9, 25e9, 8, 3.4e-6, 9.6e-6, 8.4e-6, n_calls=1)
    assert t == pytest.approx(7998.0e-6 + 256.4e-6, rel=1e-4)
    assert bs.ring_allreduce_seconds(1e9, 1, 1e9) == 0.0


def test_efficiency_and_throughput_definitions():
    # weak: per-process batch 8; T_1 = 100 ms, T_2 = 125 ms -> 2*8/0.125 = 128 samples/s vs 80: 0.8
    assert bs.scaling_efficiency("weak", 2, 0.100, 0.125) == pytest.approx(0.8)
    assert bs.throughput("weak", 2, 8, 0.125) / (2 * bs.throughput("weak", 1, 8, 0.100)) == pytest.approx(0.8)
    # strong: global batch 8; T_1 = 100 ms, T_4 = 40 ms -> speed-up 2.5 of 4: 0.625
    assert bs.scaling_efficiency("strong", 4, 0.100, 0.040) == pytest.approx(0.625)
    assert bs.throughput("strong", 4, 8, 0.040) == pytest.approx(200.0)
    with pytest.raises(ValueError, match="weak"):
        bs.scaling_efficiency("linear", 2, 1.0, 1.0)


def test_latency_bandwidth_fit_recovers_the_ring_parameters():
    sizes = [4096.0, 65536.0, 1048576.0, 8388608.0]
    times = [bs.ring_allreduce_seconds(s, 2, 2e9, intra_step_s=50e-6) for s in sizes]
    fit = bs.fit_latency_bandwidth(sizes, times, 2)
    assert fit["step_latency_s"] == pytest.approx(50e-6, rel=1e-6)
    assert fit["bus_bytes_s"] == pytest.approx(2e9, rel=1e-6) and fit["fit_ok"]
    # A disturbed sweep (bigger messages faster) yields no bandwidth rather than a negative one.
    assert bs.fit_latency_bandwidth(sizes, list(reversed(times)), 2)["bus_bytes_s"] == math.inf


def test_step_split_and_overlap_by_hand():
    # Previous step ended at 0; two buckets, the second in flight while the first finishes.
    marks = {"start": 1.0, "forward": 2.0, "before_backward": 3.5, "after_backward": 7.0,
             "before_optimizer": 7.2, "end": 8.0, "buckets": [(4.0, 5.5, 100), (5.0, 6.5, 300)]}
    parts = bs.split_step(marks, previous_end=0.0)
    assert parts["data_wait"] == 1.0 and parts["forward"] == 2.0 and parts["forward_overhead"] == 0.5
    assert parts["backward_compute"] == 1.5  # 3.5 -> last bucket ready at 5.0
    assert parts["exposed_allreduce"] == 2.0  # 5.0 -> 7.0
    assert parts["allreduce"] == 2.5  # union of [4, 5.5] and [5, 6.5]
    assert parts["hidden_allreduce"] == 0.5
    assert parts["optimizer"] == pytest.approx(0.8)
    assert parts["other"] == pytest.approx(0.2)  # 7.0 -> 7.2, nothing timed it
    assert parts["allreduce_bytes"] == 400 and parts["buckets"] == 2


def test_projection_hides_at_most_the_backward_pass():
    link = bs.Interconnect("test", 100e9, 10e9, 0.0, 0.0, 0.0)
    # 16 ranks on 2 nodes, 1 GB at 10 GB/s: 2*15/16 * 0.1 s = 0.1875 s of all-reduce.
    free = bs.project_step(1.0, 1e9, 16, link, overlap=0.5, backward_s=10.0, n_buckets=1)
    assert free["allreduce_s"] == pytest.approx(0.1875)
    assert free["exposed_s"] == pytest.approx(0.09375)
    assert free["efficiency"] == pytest.approx(1.0 / 1.09375)
    capped = bs.project_step(1.0, 1e9, 16, link, overlap=0.5, backward_s=0.05, n_buckets=1)
    assert capped["exposed_s"] == pytest.approx(0.1375)


def test_ddp_step_model_adds_the_measured_terms():
    # T_ref 100 ms + straggler 4 + broadcast 1 + copies 0.5 + all-reduce 10 of which 30 % hidden
    point = bs.ddp_step_seconds(0.100, 0.010, overlap=0.3, backward_s=1.0, broadcast_s=0.001, copy_s=0.0005,
                                straggler_s=0.004)
    assert point["exposed_s"] == pytest.approx(0.007)
    assert point["step_s"] == pytest.approx(0.100 + 0.004 + 0.001 + 0.0005 + 0.007)
    assert point["efficiency"] == pytest.approx(0.100 / 0.1125)
    # the hidden part never exceeds the backward pass
    assert bs.ddp_step_seconds(0.1, 0.010, overlap=1.0, backward_s=0.002)["exposed_s"] == pytest.approx(0.008)


def test_ring_broadcast_and_gradient_copies_by_hand():
    # 16 ranks on 2 nodes, 1 MB: 15 steps, 1 across nodes; 1e6 / 10e9 = 100 us
    t = bs.ring_broadcast_seconds(1e6, 16, 100e9, 10e9, 8, intra_step_s=2e-6, inter_step_s=5e-6, base_s=1e-6)
    assert t == pytest.approx(1e-6 + 14 * 2e-6 + 5e-6 + 100e-6)
    assert bs.ring_broadcast_seconds(1e6, 1, 1e9) == 0.0 and bs.ring_broadcast_seconds(0, 8, 1e9) == 0.0
    # 103.2 MB of fp32 gradients in and out of the buckets, each copy reads and writes: 4 * 103.2e6 B at 3.35 TB/s
    assert bs.gradient_copy_seconds(103.2e6, 3.35e12) == pytest.approx(4 * 103.2e6 / 3.35e12)
    link = bs.Interconnect("test", 100e9, 10e9, 0.0, 0.0, 0.0)
    point = bs.project_step(1.0, 1e9, 16, link, 0.0, 1.0, 1, buffer_bytes=1e6, copy_s=0.01)
    assert point["step_s"] == pytest.approx(1.0 + 0.1875 + 1e6 / 10e9 + 0.01)


def test_straggler_term_is_the_expected_wait_for_the_slowest_rank():
    # two ranks side by side, one segment: max per step 3, 4 -> 3.5; mean of all 2.5 -> 1.0
    paired = [[(1.0,), (4.0,)], [(3.0,), (2.0,)]]
    assert bs.straggler_seconds(paired, 2) == pytest.approx(1.0)
    # one series, 2 ranks = 2 draws with replacement from {1, 3}: E[max] = 1/4 * 1 + 3/4 * 3 = 2.5; mean 2
    assert bs.expected_max_seconds([3.0, 1.0], 2) == pytest.approx(2.5)
    assert bs.straggler_seconds([[(1.0, 0.0), (3.0, 0.0)]], 2) == pytest.approx(0.5)
    assert bs.straggler_seconds(paired, 1) == 0.0
    # a constant step has nothing to wait for
    assert bs.straggler_seconds([[(2.0,), (2.0,)], [(2.0,), (2.0,)]], 2) == 0.0
    step = {"data_wait": 1.0, "optimizer": 0.5, "other": 0.1, "forward": 2.0, "forward_overhead": 0.2,
            "backward_compute": 3.0}
    assert bs.sync_segments(step, broadcast=True) == pytest.approx((1.6, 5.2))
    assert bs.sync_segments(step, broadcast=False) == pytest.approx((6.8,))


def test_model_check_predicts_from_the_measured_inputs():
    # One repeat: 1-process step 100 ms; the concurrent copies' mean step 110 ms, straggler with the
    # buffer broadcast 6 ms; inside the DDP run broadcast 1 ms, all-reduce 3 ms (nothing hidden),
    # copies 0.4 ms; the DDP step measured 125 ms.
    one = {"summary": {"step": 0.100}, "load": 0.1}
    concurrent = {"summary": {"step_ranks_mean": 0.110, "straggler_2sync": 0.006, "straggler_1sync": 0.009}, "load": 0.1}
    ddp = {"summary": {"step": 0.125, "overlap": 0.0, "backward_compute": 0.04, "allreduce": 0.008,
                       "allreduce_bytes": 3.4e6, "buckets": 1.0, "micro_allreduce": 0.003, "micro_broadcast": 0.001,
                       "micro_broadcast_bytes": 2e4, "micro_copy": 0.0004}, "load": 0.2}
    sweep = {"world": 2, "fit_ok": True, "bus_bytes_s": 1.7e9, "step_latency_s": 0.0}
    row = bs.model_check_row("baseline", [one], [concurrent], [ddp], sweep)
    predicted = 0.110 + 0.006 + 0.001 + 0.0004 + 0.003
    assert row["t2_predicted"] == pytest.approx(predicted)
    assert row["error"] == pytest.approx(predicted / 0.125 - 1) and row["errors"] == [pytest.approx(predicted / 0.125 - 1)]
    assert row["contention"] == pytest.approx(1.1)
    assert row["plain_error"] == pytest.approx((0.100 + 3.4e6 / 1.7e9) / 0.125 - 1)
    # no buffers to broadcast: one synchronisation point per step, so the one-segment straggler
    no_buffers = {**ddp, "summary": {**ddp["summary"], "micro_broadcast_bytes": 0.0, "micro_broadcast": 0.0}}
    row = bs.model_check_row("baseline", [one], [concurrent], [no_buffers], sweep)
    assert row["t2_predicted"] == pytest.approx(0.110 + 0.009 + 0.0004 + 0.003)
    # on GPU there is no concurrent reference: the 1-process step, no straggler term
    row = bs.model_check_row("baseline", [one], None, [ddp], None)
    assert row["t2_predicted"] == pytest.approx(0.100 + 0.001 + 0.0004 + 0.003)


def test_seven_level_net_has_the_stated_size():
    params = bs.count_parameters("pconv", bs.SEVEN_LEVEL_CHANNELS, aux_channels=3)
    assert 25.7e6 < params < 25.9e6  # issue 14: 25.8 M parameters = 103 MB in fp32
    assert bs.ddp_bucket_count(4.0 * params) == 1 + math.ceil((4.0 * params - 2**20) / (25 * 2**20))


@pytest.mark.slow
def test_dry_run_measures_the_real_loop(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT"}}
    env.update(GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", WANDB_MODE="offline", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "experiments" / "bench_scaling.py"), "--dry-run", "--ddp-option-sets", "",
         "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "bench_scaling.json").read_text())
    report = (tmp_path / "out" / "bench_scaling.md").read_text()
    for heading in ("Throughput and efficiency", "Where a step goes", "all-reduce sweep", "Model check",
                    "Projection to cluster scale", "Data feed"):
        assert heading in report
    rows = {row["world"]: row for row in results["scaling"]}
    assert set(rows) == {1, 2}
    one, two = rows[1]["components"], rows[2]["components"]
    for c in (one, two):
        timed = sum(c[k] for k in bs.COMPONENTS if k != "other")
        # every part of a step is timed by something: the untimed rest is a sliver
        assert abs(c["other"]) < 0.15 * c["step"], c
        # step = the slowest rank's mean step; the parts are rank 0's
        assert c["step"] >= 0.99 * (timed + c["other"])
        assert c["forward"] > 0 and c["backward_compute"] > 0
    assert one["allreduce"] == 0 and one["buckets"] == 0
    # The hook saw the whole fp32 gradient of the network in each step.
    assert two["allreduce_bytes"] == 4 * rows[2]["params"]
    # The wait after backward can exceed the all-reduce itself (DDP copies the results back into
    # .grad there), so hidden is what the all-reduce overlapped, never more than it took.
    assert two["allreduce"] > 0 and two["exposed_allreduce"] > 0
    assert 0 <= two["hidden_allreduce"] <= two["allreduce"] and 0 <= two["overlap"] <= 1
    # The reported efficiency is T_1 / T_2 of the runs themselves.
    assert rows[2]["efficiency"][0] == pytest.approx(rows[1]["step"][0] / rows[2]["step"][0])
    # the sweep's fit may be undetermined on a loaded machine; its timings must exist
    assert results["model_check"] and all(t > 0 for t in results["sweep"]["seconds"])
    # the model check's inputs were measured: collectives inside the DDP run, the concurrent reference
    check = results["model_check"][0]
    assert check["reference_source"] == "concurrent" and check["reference"] > 0 and check["straggler"] >= 0
    assert check["allreduce_predicted"] > 0 and check["broadcast"] > 0 and check["copy"] > 0
    ddp_run = results["runs"]["pconv/2 proc/weak/B2/config"][0]
    assert ddp_run["micro_bucket_bytes"] == 4 * rows[2]["params"]
    assert results["sweep"]["bus_bytes_s"] > 0
    assert results["data_feed"]["workers_needed"] >= 1


def test_batch_for_efficiency_solves_the_projection():
    link = bs.Interconnect("test", 100e9, 10e9, 0.0, 0.0, 0.0)
    # All-reduce 0.1875 s (as above), nothing hidden, 0.1 s per sample: 0.9 needs
    # T_1 >= 9 * 0.1875 = 1.6875 s, i.e. 16.9 samples -> the next power of 2 is 32.
    assert bs.batch_for_efficiency(0.9, 0.1, 0.1, 1e9, 16, link, overlap=0.0) == 32
    assert bs.batch_for_efficiency(0.9, 1e-6, 1e-6, 1e9, 16, link, overlap=0.0, largest=64) is None
