"""Scaling of the real training loop with data parallelism (issue 14; results in BENCHMARKS.md).

What runs: `ni-train`'s own pieces (`build_datamodule`, `build_module`, `build_trainer` of
nowcast_infill/cli/train.py on a config composed from conf/, validated like ni-train's) on a
synthetic Zarr store written by `write_synthetic_store` (what `ni-synth` calls), with the
project's strategy configs: `strategy=single` for 1 process, `strategy=ddp_sim` (CPU, gloo) or
`strategy=ddp` (GPU) for N processes on one machine (Lightning starts the other ranks), and
`strategy=ddp_multinode` under two `torchrun --nnodes=2` launches for 2 simulated nodes.

Every configuration is one fresh launch; 1-process and N-process launches are interleaved
and repeated, and the load average is recorded before each, because the development machine
is shared. The script prints complete Markdown tables (and writes them with the raw numbers
to --out) so the numbers can be rerun on a quieter machine or a GPU node.

Definitions (T_N = mean wall time of one optimiser step with N processes, B = per-process
batch, G = global batch = N*B):

* weak scaling (B fixed, G grows with N): throughput_N = N*B / T_N samples/s and
  efficiency_N = throughput_N / (N * throughput_1) = T_1 / T_N;
* strong scaling (G fixed, B = G/N): throughput_N = G / T_N, speed-up_N = T_1 / T_N and
  efficiency_N = speed-up_N / N = T_1 / (N * T_N).

Split of one step (timestamps of a Lightning Callback, a forward hook on the network and a
DDP communication hook that wraps whatever hook the strategy config names, default the
plain all-reduce, and timestamps each bucket's all-reduce from launch to completion):

* data wait: end of the previous step -> `on_train_batch_start` (loader + batch transfer);
* forward: the network's forward (module hooks);
* forward overhead: the rest of `training_step` before backward: loss, logging, and under DDP
  its forward wrapper (which broadcasts rank 0's buffers, the batch-norm running statistics,
  before every forward unless `broadcast_buffers=False`);
* backward compute: `on_before_backward` -> the moment the last gradient bucket is ready
  (1 process: -> `on_after_backward`);
* exposed all-reduce: last bucket ready -> `on_after_backward` (DDP waits there for the
  buckets still in flight and copies their results into `.grad`: the communication *not*
  hidden behind backward);
* all-reduce: union of the buckets' launch->completion intervals; hidden = all-reduce -
  exposed (0 when the wait is longer than the all-reduce itself); overlap fraction =
  hidden / all-reduce;
* optimiser: `on_before_optimizer_step` -> `on_train_batch_end` (clipping, AdamW, scheduler,
  logging);
* other: the step minus all of the above (Lightning's closure bookkeeping between backward and
  the optimiser); reported so that a timer that missed something shows up
  (tests/test_bench_scaling.py checks it is small).

The step model (`ddp_step_seconds`) and its check: an N-process step = the step of one process
doing the same work on the same shared hardware + the wait for the slowest rank at DDP's
synchronisation points + the buffer broadcast of DDP's forward + the gradient copies into and
out of the buckets + the all-reduce not hidden behind backward. The model check measures every
input apart from the run it predicts: the reference step and the straggler term from N
independent 1-process runs started together (`concurrent`, CPU only), the collectives inside the
DDP run between its warm-up and its measured steps (`measure_ddp_collectives`: the run's own
bucket sizes, buffers and parameters, in its own process group). The projection to cluster scale
(`project_step`) is the same function with the collectives from the cited interconnect figures.

Usage::

    python experiments/bench_scaling.py                        # CPU study (tens of minutes on 2 cores)
    python experiments/bench_scaling.py --dry-run --out /tmp/s # tiny sizes, seconds (tests)
    python experiments/bench_scaling.py --accelerator gpu --backend nccl --procs 1,all \\
        --crop 256 --batch 8 --net-channels 64,128,256,512,512,512,512   # all GPUs of a node
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from nowcast_infill.study import VARIANT_NET_SWITCHES, VARIANTS  # noqa: E402

CONF_DIR = REPO_ROOT / "conf"
# The 7-level U-Net of Liu et al. (PConvUNet's default widths): the network worth scaling out.
SEVEN_LEVEL_CHANNELS = (64, 128, 256, 512, 512, 512, 512)
# DDP's default bucket cap (torch.nn.parallel.DistributedDataParallel, bucket_cap_mb=25) and
# its smaller first bucket (torch.distributed._DEFAULT_FIRST_BUCKET_BYTES, 1 MiB).
DEFAULT_BUCKET_MB = 25.0
FIRST_BUCKET_BYTES = 1024 * 1024

# Named sets of DDP options tried against each other (2 processes, weak scaling). Each maps to
# `trainer.strategy.*` overrides of conf/strategy/ddp*.yaml; "bf16_grads" registers
# torch's bf16_compress_hook (gradients all-reduced in bfloat16, half the bytes).
BF16_HOOK = "torch.distributed.algorithms.ddp_comm_hooks.default_hooks.bf16_compress_hook"
_TORCH_DDP_DEFAULTS = {"bucket_cap_mb": 25, "gradient_as_bucket_view": False, "static_graph": False,
                       "broadcast_buffers": True, "hook": None}
DDP_OPTION_SETS = {
    "torch_defaults": dict(_TORCH_DDP_DEFAULTS),
    "bucket_1mb": {**_TORCH_DDP_DEFAULTS, "bucket_cap_mb": 1},
    "bucket_100mb": {**_TORCH_DDP_DEFAULTS, "bucket_cap_mb": 100},
    "bucket_view": {**_TORCH_DDP_DEFAULTS, "gradient_as_bucket_view": True},
    "static_graph": {**_TORCH_DDP_DEFAULTS, "static_graph": True},
    "no_buffer_broadcast": {**_TORCH_DDP_DEFAULTS, "broadcast_buffers": False},
    "bf16_grads": {**_TORCH_DDP_DEFAULTS, "hook": BF16_HOOK},
}

# ----------------------------------------------------------------------------------------
# Interconnects of the projection (figures per direction; sources by name):
# * NVLink 4 (H100/H200 SXM): 900 GB/s bidirectional per GPU = 450 GB/s each way (NVIDIA H100
#   and H200 Tensor Core GPU datasheets). Used for rings inside one 8-GPU node (NVSwitch).
# * InfiniBand HDR/NDR: 100, 200, 400 Gb/s per port = 12.5, 25, 50 GB/s each way (NVIDIA
#   ConnectX-6/ConnectX-7 product briefs). "per node" = one NIC shared by the node's 8 GPUs
#   (typical HPC partition); "8 x 400 Gb/s" = one NIC per GPU as in NVIDIA DGX H100/H200.
# * Ring all-reduce time = latency + 2(N-1)/N * bytes / bus bandwidth: the bus-bandwidth
#   convention of nccl-tests (doc/PERFORMANCE.md, "busbw = algbw * 2(n-1)/n" for allreduce).
#   In a ring every link carries the same traffic, so the bus bandwidth of a multi-node ring is
#   the node's network injection bandwidth (capped by NVLink).
# * Latency per all-reduce call: NCCL's own tuning model (NVIDIA/nccl src/graph/tuning.cc, ring,
#   Simple protocol): 8.4 us base + 3.4 us per intra-node (NVLink) step + 9.6 us per inter-node
#   step, with 2(N-1) steps of which 2(nodes-1) cross nodes. One call per DDP bucket.
# These are hardware peaks: nccl-tests typically reach ~80 % of them, so the projected
# efficiencies are upper bounds for a given compute time per step.
# ----------------------------------------------------------------------------------------
GBIT = 1e9 / 8  # bytes/s per Gb/s
NVLINK4_BYTES_S = 450e9
NCCL_BASE_LATENCY_S = 8.4e-6
NCCL_NVLINK_STEP_S = 3.4e-6
NCCL_NET_STEP_S = 9.6e-6
GPUS_PER_NODE = 8


@dataclass(frozen=True)
class Interconnect:
    name: str
    intra_bytes_s: float  # bus bandwidth inside a node
    inter_bytes_s: float  # network injection bandwidth of one node
    intra_step_s: float = NCCL_NVLINK_STEP_S
    inter_step_s: float = NCCL_NET_STEP_S
    base_s: float = NCCL_BASE_LATENCY_S


INTERCONNECTS = (
    Interconnect("NVLink4 + 1x100 Gb/s IB per node", NVLINK4_BYTES_S, 100 * GBIT),
    Interconnect("NVLink4 + 1x200 Gb/s IB per node", NVLINK4_BYTES_S, 200 * GBIT),
    Interconnect("NVLink4 + 1x400 Gb/s IB per node", NVLINK4_BYTES_S, 400 * GBIT),
    Interconnect("NVLink4 + 8x400 Gb/s IB per node (DGX)", NVLINK4_BYTES_S, 8 * 400 * GBIT),
)
PROJECTED_GPUS = (8, 32, 64, 256)
# Compute assumption when no GPU step time is given (--gpu-step-ms): the FLOPs of one training
# step at the device's dense bf16 peak (H100/H200 SXM: 989 TFLOP/s, NVIDIA datasheets) times a
# model-FLOPs utilisation; 0.35 is the goal issue 14 sets for the plain pconv net at 512^2 in bf16.
H100_BF16_DENSE_FLOPS = 989e12
# HBM bandwidth for DDP's gradient copies (gradient_as_bucket_view=False): H100 SXM 3.35 TB/s
# (H100 datasheet; H200: 4.8 TB/s), the lower of the two.
H100_HBM_BYTES_S = 3.35e12
ASSUMED_MFU = 0.35


# ----------------------------------------------------------------------------------------
# The model (pure functions; tests/test_bench_scaling.py checks them by hand)
# ----------------------------------------------------------------------------------------
def ring_allreduce_seconds(
    nbytes: float,
    n_ranks: int,
    intra_bytes_s: float,
    inter_bytes_s: float | None = None,
    ranks_per_node: int | None = None,
    intra_step_s: float = 0.0,
    inter_step_s: float = 0.0,
    base_s: float = 0.0,
    n_calls: int = 1,
) -> float:
    """Time of a ring all-reduce of `nbytes` over `n_ranks`, split into `n_calls` calls (buckets).

    latency (per call) = base + (2(N-1) - 2(nodes-1)) * intra_step + 2(nodes-1) * inter_step
    bandwidth          = 2(N-1)/N * nbytes / bus bandwidth, the bus bandwidth being the slower
                         of intra (one node) and inter (several nodes) links.
    """
    if n_ranks <= 1:
        return 0.0
    per_node = ranks_per_node or n_ranks
    nodes = max(1, math.ceil(n_ranks / per_node))
    steps, inter_steps = 2 * (n_ranks - 1), 2 * (nodes - 1)
    latency = base_s + (steps - inter_steps) * intra_step_s + inter_steps * inter_step_s
    bus = intra_bytes_s if nodes == 1 or inter_bytes_s is None else min(intra_bytes_s, inter_bytes_s)
    return n_calls * latency + 2 * (n_ranks - 1) / n_ranks * nbytes / bus


def ddp_bucket_count(grad_bytes: float, bucket_cap_mb: float = DEFAULT_BUCKET_MB) -> int:
    """Buckets DDP forms: a 1 MiB first bucket, then `bucket_cap_mb` MiB ones (approximately:
    DDP never splits a parameter, so a bucket may overshoot by one tensor)."""
    if grad_bytes <= FIRST_BUCKET_BYTES:
        return 1
    return 1 + math.ceil((grad_bytes - FIRST_BUCKET_BYTES) / (bucket_cap_mb * 1024 * 1024))


def scaling_efficiency(mode: str, n: int, step_1_s: float, step_n_s: float) -> float:
    """Weak: T_1/T_N (= throughput_N / (N throughput_1) at fixed per-process batch).
    Strong: T_1/(N T_N) (= speed-up / N at fixed global batch)."""
    if mode == "weak":
        return step_1_s / step_n_s
    if mode == "strong":
        return step_1_s / (n * step_n_s)
    raise ValueError(f"mode must be 'weak' or 'strong', got {mode!r}")


def throughput(mode: str, n: int, batch: int, step_s: float) -> float:
    """Samples/s: weak `batch` is per process (N*batch per step), strong `batch` is global."""
    return (n * batch if mode == "weak" else batch) / step_s


def ring_broadcast_seconds(
    nbytes: float, n_ranks: int, intra_bytes_s: float, inter_bytes_s: float | None = None,
    ranks_per_node: int | None = None, intra_step_s: float = 0.0, inter_step_s: float = 0.0, base_s: float = 0.0,
) -> float:
    """Time of a pipelined ring (chain) broadcast: latency base + (N-1) steps (nodes-1 of them
    between nodes), bandwidth nbytes / bus bandwidth (nccl-tests: broadcast busbw = algbw)."""
    if n_ranks <= 1 or nbytes <= 0:
        return 0.0
    per_node = ranks_per_node or n_ranks
    nodes = max(1, math.ceil(n_ranks / per_node))
    steps, inter_steps = n_ranks - 1, nodes - 1
    latency = base_s + (steps - inter_steps) * intra_step_s + inter_steps * inter_step_s
    bus = intra_bytes_s if nodes == 1 or inter_bytes_s is None else min(intra_bytes_s, inter_bytes_s)
    return latency + nbytes / bus


def ddp_step_seconds(
    step_ref_s: float, allreduce_s: float, overlap: float, backward_s: float,
    broadcast_s: float = 0.0, copy_s: float = 0.0, straggler_s: float = 0.0,
) -> dict[str, float]:
    """The step model: what DDP adds to a step of one process that does the same work.

    T_N = T_ref                 one process's step (same per-process batch, same hardware sharing)
        + straggler             every collective waits for the slowest rank: E[max over ranks] - mean
                                of the work between two synchronisation points
        + broadcast             DDP's forward broadcasts rank 0's buffers (broadcast_buffers=True)
        + copy                  gradients copied into the buckets and back (gradient_as_bucket_view=False)
        + all-reduce - hidden   the gradient all-reduce, minus the measured overlap fraction hidden
                                behind backward (never more than the backward pass itself).
    Returns every term, the step and efficiency T_ref/T_N."""
    hidden = min(overlap * allreduce_s, backward_s)
    exposed = allreduce_s - hidden
    step = step_ref_s + straggler_s + broadcast_s + copy_s + exposed
    return {"allreduce_s": allreduce_s, "exposed_s": exposed, "broadcast_s": broadcast_s, "copy_s": copy_s,
            "straggler_s": straggler_s, "step_s": step, "efficiency": step_ref_s / step}


def project_step(
    step_1_s: float, grad_bytes: float, n_ranks: int, link: Interconnect, overlap: float,
    backward_s: float, n_buckets: int, ranks_per_node: int = GPUS_PER_NODE,
    buffer_bytes: float = 0.0, copy_s: float = 0.0,
) -> dict[str, float]:
    """`ddp_step_seconds` with its communication terms from the interconnect's cited figures:
    ring all-reduce of `grad_bytes` in `n_buckets` calls and one ring broadcast of `buffer_bytes`
    per forward; `copy_s` = `gradient_copy_seconds`. No straggler term: the per-step spread of a
    GPU step is not measured yet (gpu_check.sh's DDP run is where it would come from)."""
    allreduce = ring_allreduce_seconds(
        grad_bytes, n_ranks, link.intra_bytes_s, link.inter_bytes_s, ranks_per_node,
        link.intra_step_s, link.inter_step_s, link.base_s, n_buckets,
    )
    broadcast = ring_broadcast_seconds(buffer_bytes, n_ranks, link.intra_bytes_s, link.inter_bytes_s, ranks_per_node,
                                       link.intra_step_s, link.inter_step_s, link.base_s)
    return ddp_step_seconds(step_1_s, allreduce, overlap, backward_s, broadcast_s=broadcast,
                            copy_s=copy_s if n_ranks > 1 else 0.0)


def gradient_copy_seconds(grad_bytes: float, memory_bytes_s: float) -> float:
    """DDP without gradient_as_bucket_view copies every gradient into its bucket and the
    averaged result back: two copies, each reading and writing `grad_bytes`."""
    return 2 * 2 * grad_bytes / memory_bytes_s


def expected_max_seconds(samples: list[float], n: int) -> float:
    """E[max of n independent draws] from the empirical distribution of `samples` (with
    replacement): sum_k x_(k) * ((k/m)^n - ((k-1)/m)^n) over the sorted samples."""
    xs, m = sorted(samples), len(samples)
    return sum(x * ((k / m) ** n - ((k - 1) / m) ** n) for k, x in enumerate(xs, start=1))


def straggler_seconds(segments_per_rank: list[list[tuple[float, ...]]], n_ranks: int) -> float:
    """Per-step wait for the slowest rank: for each stretch of work between two synchronisation
    points (a step's segments), E[max over ranks] - E[one rank], summed over the segments.

    `segments_per_rank`: per rank, per step, the durations (s) of the segments. With n_ranks
    series (processes that ran side by side) the ranks are paired step by step, which keeps
    load that hit all of them at once; with one series the maximum is that of n_ranks
    independent draws from its steps (`expected_max_seconds`)."""
    if n_ranks <= 1:
        return 0.0
    n_segments = len(segments_per_rank[0][0])
    total = 0.0
    for k in range(n_segments):
        series = [[step[k] for step in rank] for rank in segments_per_rank]
        mean = statistics.fmean(x for s in series for x in s)
        if len(series) >= n_ranks:
            length = min(len(s) for s in series[:n_ranks])
            slowest = statistics.fmean(max(s[i] for s in series[:n_ranks]) for i in range(length))
        else:
            slowest = expected_max_seconds(series[0], n_ranks)
        total += slowest - mean
    return total


def sync_segments(step: dict, broadcast: bool) -> tuple[float, ...]:
    """One step's rank-local work between DDP's synchronisation points (from `split_step`): with
    the buffer broadcast at the start of forward there are two (data + optimiser | forward +
    backward), without it one (the whole step's work up to the last all-reduce)."""
    before = step["data_wait"] + step["optimizer"] + step["other"]
    compute = step["forward"] + step["forward_overhead"] + step["backward_compute"]
    return (before, compute) if broadcast else (before + compute,)


def batch_for_efficiency(
    target: float, step_per_sample_s: float, compute_per_sample_s: float, grad_bytes: float, n_ranks: int,
    link: Interconnect, overlap: float, largest: int = 4096, buffer_bytes: float = 0.0, copy_s: float = 0.0,
) -> int | None:
    """Smallest per-GPU batch (a power of 2) whose projected weak-scaling efficiency at `n_ranks`
    reaches `target`: compute grows with the batch, the all-reduce does not. None beyond `largest`
    (and memory is not modelled: check the batch fits)."""
    batch = 1
    while batch <= largest:
        point = project_step(step_per_sample_s * batch, grad_bytes, n_ranks, link, overlap,
                             compute_per_sample_s * batch * 2 / 3, ddp_bucket_count(grad_bytes),
                             buffer_bytes=buffer_bytes, copy_s=copy_s)
        if point["efficiency"] >= target:
            return batch
        batch *= 2
    return None


def fit_latency_bandwidth(sizes_bytes: list[float], seconds: list[float], n_ranks: int) -> dict[str, float]:
    """Least-squares T = c0 + c1 * bytes over an all-reduce sweep, read as the ring model:
    c0 = 2(N-1) * step latency, c1 = 2(N-1)/N / bus bandwidth."""
    n = len(sizes_bytes)
    mx, my = sum(sizes_bytes) / n, sum(seconds) / n
    sxx = sum((x - mx) ** 2 for x in sizes_bytes)
    c1 = sum((x - mx) * (y - my) for x, y in zip(sizes_bytes, seconds)) / sxx
    c0 = my - c1 * mx
    # A sweep disturbed by other load can make larger messages look faster: no bandwidth then.
    fit_ok = c1 > 0
    return {"step_latency_s": max(c0, 0.0) / (2 * (n_ranks - 1)),
            "bus_bytes_s": 2 * (n_ranks - 1) / n_ranks / c1 if fit_ok else math.inf,
            "intercept_s": c0, "slope_s_per_byte": c1, "fit_ok": fit_ok}


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by (start, end) intervals (buckets may be in flight together)."""
    total, current_end = 0.0, -math.inf
    for start, end in sorted(intervals):
        if start > current_end:
            total += end - start
            current_end = end
        elif end > current_end:
            total += end - current_end
            current_end = end
    return total


COMPONENTS = ("data_wait", "forward", "forward_overhead", "backward_compute", "exposed_allreduce", "optimizer", "other")


def split_step(marks: dict, previous_end: float) -> dict[str, float]:
    """One step's timestamps (perf_counter s) -> durations of COMPONENTS plus `step`,
    `allreduce` and `hidden_allreduce`. `marks`: start, forward (summed seconds), before_backward,
    after_backward, before_optimizer, end, buckets [(ready, done, bytes)]."""
    step = marks["end"] - previous_end
    data_wait = marks["start"] - previous_end
    buckets = marks.get("buckets") or []
    if buckets:
        last_ready = max(b[0] for b in buckets)
        backward = last_ready - marks["before_backward"]
        exposed = max(marks["after_backward"] - last_ready, 0.0)
        allreduce = union_seconds([(b[0], b[1]) for b in buckets])
    else:
        backward, exposed, allreduce = marks["after_backward"] - marks["before_backward"], 0.0, 0.0
    optimizer = marks["end"] - marks["before_optimizer"]
    forward_overhead = marks["before_backward"] - marks["start"] - marks["forward"]
    parts = {"data_wait": data_wait, "forward": marks["forward"], "forward_overhead": forward_overhead,
             "backward_compute": backward, "exposed_allreduce": exposed, "optimizer": optimizer}
    parts["other"] = step - sum(parts.values())
    parts.update(step=step, allreduce=allreduce, hidden_allreduce=max(allreduce - exposed, 0.0),
                 allreduce_bytes=float(sum(b[2] for b in buckets)), buckets=float(len(buckets)))
    return parts


# ----------------------------------------------------------------------------------------
# Worker: one training run (one rank), launched by the orchestrator below
# ----------------------------------------------------------------------------------------
def measure_ddp_collectives(ddp_model, bucket_bytes: list[int], repeats: int) -> dict[str, float]:
    """What DDP's communication costs in this process group, measured just before the measured
    steps (all ranks call it together): the all-reduce of every bucket size the last step used
    (as the default hook does it: divide by the world size, all-reduce), DDP's own coalesced
    broadcast of the module buffers (what every forward does with broadcast_buffers=True), and
    the two gradient copies between `.grad` and the buckets (gradient_as_bucket_view=False).
    Each collective starts after a barrier, so rank skew is not in these numbers (the model's
    straggler term is). Median over `repeats` after 2 unmeasured calls."""
    import torch
    import torch.distributed as dist

    group = ddp_model.process_group
    device = next(ddp_model.parameters()).device
    world = dist.get_world_size(group)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(operation) -> float:
        samples = []
        for i in range(repeats + 2):
            dist.barrier(group)
            sync()
            started = time.perf_counter()
            operation()
            sync()
            if i >= 2:
                samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    def allreduce_of(tensor):
        def run():
            tensor.div_(world)
            dist.all_reduce(tensor, group=group, async_op=True).get_future().wait()
        return run

    allreduce = [timed(allreduce_of(torch.zeros(n // 4, device=device))) for n in bucket_bytes]
    broadcast_bytes, broadcast = 0, 0.0
    if ddp_model.will_sync_module_buffers():
        buffers = [b.detach().clone() for b in ddp_model.modules_buffers]
        broadcast_bytes = sum(b.numel() * b.element_size() for b in buffers)
        broadcast = timed(lambda: ddp_model._default_broadcast_coalesced(bufs=buffers, authoritative_rank=0))
    copy = 0.0
    if not ddp_model.gradient_as_bucket_view:
        # one copy per parameter into its slot of a flat bucket, as the reducer does (and back)
        params = [p for p in ddp_model.parameters() if p.requires_grad]
        grads = [torch.randn_like(p) for p in params]
        flat = torch.empty(sum(p.numel() for p in params), device=device)
        views, offset = [], 0
        for p in params:
            views.append(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

        def copy_in():
            for view, grad in zip(views, grads):
                view.copy_(grad)

        copy = 2 * timed(copy_in)
    return {"micro_allreduce": sum(allreduce), "micro_buckets": float(len(bucket_bytes)),
            "micro_bucket_bytes": float(sum(bucket_bytes)), "micro_broadcast": broadcast,
            "micro_broadcast_bytes": float(broadcast_bytes), "micro_copy": copy}


def wait_for_copies(folder: Path, copy_index: int, copies: int, timeout_s: float = 600.0) -> None:
    """Start barrier of a concurrent reference run: copies meet here after their set-up, so that
    their measured steps run side by side (as DDP ranks meet at their first collective)."""
    (folder / f"ready{copy_index}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(folder.glob("ready*"))) < copies:
        if time.monotonic() > deadline:
            raise RuntimeError(f"concurrent copy {copy_index}: the other copies did not start within {timeout_s:.0f} s")
        time.sleep(0.005)


def make_step_timer(warmup_steps: int, micro_repeats: int = 10, start_barrier=None):
    import lightning as L

    class StepTimer(L.Callback):
        """Timestamps of every training step and of every DDP bucket's all-reduce."""

        def __init__(self) -> None:
            self.warmup_steps = warmup_steps
            self.comm_hook = None  # taken over from the strategy (see worker_main)
            self.steps: list[dict[str, float]] = []
            self._marks: dict = {}
            self._previous_end: float | None = None
            self._forward_started = 0.0
            self._seen = 0
            self._ddp = None
            self.micro: dict[str, float] = {}
            # CUDA kernels run asynchronously: wait for them at every timestamp of the callback
            # (not inside the comm hook, which would stall backward). On GPU the bucket-ready times
            # are when autograd reached the bucket on the CPU side: the split of a GPU step is
            # approximate, the step times are exact.
            self._sync = lambda: None

        # -- forward: hooks on the network itself
        def _forward_pre(self, module, args):
            self._sync()
            self._forward_started = time.perf_counter()

        def _forward_post(self, module, args, output):
            self._sync()
            self._marks["forward"] = self._marks.get("forward", 0.0) + time.perf_counter() - self._forward_started

        def _now(self) -> float:
            self._sync()
            return time.perf_counter()

        def on_train_start(self, trainer, pl_module):
            if start_barrier is not None:
                start_barrier()

        def on_fit_start(self, trainer, pl_module):
            if trainer.strategy.root_device.type == "cuda":
                import torch

                self._sync = torch.cuda.synchronize
            pl_module.net.register_forward_pre_hook(self._forward_pre)
            pl_module.net.register_forward_hook(self._forward_post)
            from torch.nn.parallel import DistributedDataParallel

            model = trainer.strategy.model
            if isinstance(model, DistributedDataParallel):
                self._ddp = model
                from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

                model.register_comm_hook(None, self._timed_hook(self.comm_hook or allreduce_hook))

        def _timed_hook(self, hook):
            def timed(state, bucket):
                ready = time.perf_counter()
                nbytes = bucket.buffer().numel() * bucket.buffer().element_size()
                buckets = self._marks["buckets"]

                def done(fut):
                    buckets.append((ready, time.perf_counter(), nbytes))
                    return fut.value()

                return hook(state, bucket).then(done)

            return timed

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._marks = {"start": self._now(), "forward": 0.0, "buckets": []}

        def on_before_backward(self, trainer, pl_module, loss):
            self._marks["before_backward"] = self._now()

        def on_after_backward(self, trainer, pl_module):
            self._marks["after_backward"] = self._now()

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self._marks["before_optimizer"] = self._now()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            end = self._now()
            self._marks["end"] = end
            self._seen += 1
            # Warm-up steps are not measured: DDP builds its buckets, allocators warm up.
            if self._previous_end is not None and self._seen > self.warmup_steps:
                self.steps.append(split_step(self._marks, self._previous_end))
            if self._ddp is not None and self._seen == self.warmup_steps:
                # The model's communication inputs, measured here, between the warm-up and the
                # measured steps, with the bucket sizes of the last warm-up step.
                sizes = [b[2] for b in self._marks["buckets"]]
                self.micro = measure_ddp_collectives(self._ddp, sizes, micro_repeats)
                end = self._now()
            self._previous_end = end

    return StepTimer()


def compose_train_config(args: argparse.Namespace, per_process_batch: int, procs: int, nnodes: int, option_set: str):
    from hydra import compose, initialize_config_dir

    strategy = "single" if procs * nnodes == 1 else "ddp_multinode" if nnodes > 1 else (
        "ddp" if args.accelerator == "gpu" else "ddp_sim")
    overrides = [
        "task=infill", f"model={args.variant}", "data=synthetic", f"data.store={args.store}",
        f"data.stats_path={Path(args.store).with_suffix('.normalization.json')}",
        f"data.crop_size={args.crop}", f"data.batch_size={per_process_batch}",
        "data.eval_masks.n=2", f"trainer={'gpu' if args.accelerator == 'gpu' else 'cpu'}", f"strategy={strategy}",
        "callbacks=none", "logger=none", f"paths.output_dir={args.run_dir}", f"paths.data_dir={Path(args.store).parent}",
        f"+trainer.max_steps={args.warmup + args.steps}", "trainer.max_epochs=100000",
        "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0", "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false", "+trainer.enable_checkpointing=false", "trainer.log_every_n_steps=1000000",
    ]
    if args.num_workers >= 0:
        overrides.append(f"data.num_workers={args.num_workers}")
    if args.net_channels:
        overrides.append(f"model.net.encoder_channels=[{args.net_channels}]")
    if args.precision:
        overrides.append(f"trainer.precision={args.precision}")
    if strategy == "ddp_sim" or strategy == "ddp":
        overrides.append(f"trainer.devices={procs}")
    if strategy != "single":
        overrides.append(f"trainer.strategy.process_group_backend={args.backend}")
        options = DDP_OPTION_SETS[option_set] if option_set != "config" else None
        if options is not None:
            overrides += [f"++trainer.strategy.{k}={str(v).lower() if isinstance(v, bool) else v}"
                          for k, v in options.items() if k != "hook"]
            hook = "null" if options["hook"] is None else "{_target_: hydra.utils.get_method, path: " + options["hook"] + "}"
            overrides.append(f"++trainer.strategy.ddp_comm_hook={hook}")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides), strategy


def worker_main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from lightning.pytorch.strategies import DDPStrategy

    from nowcast_infill.pipeline.build import build_datamodule, build_module, build_trainer
    from nowcast_infill.pipeline.config_checks import validate_config
    from nowcast_infill.utils.config import register_resolvers

    register_resolvers()
    cfg, strategy_name = compose_train_config(args, args.per_process_batch, int(args.procs), args.nnodes, args.ddp_options)
    validate_config(cfg, "train")
    import lightning as L

    # Copies of a concurrent reference run (--copy-index) draw different crops, as DDP ranks do.
    L.seed_everything(max(args.copy_index, 0), workers=True)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    barrier = None
    if args.copy_index >= 0:
        Path(args.result_dir).mkdir(parents=True, exist_ok=True)
        barrier = lambda: wait_for_copies(Path(args.result_dir), args.copy_index, int(args.copies))  # noqa: E731
    timer = make_step_timer(args.warmup, args.micro_repeats, barrier)
    trainer = build_trainer(cfg, callbacks=[timer])
    if isinstance(trainer.strategy, DDPStrategy):
        # Lightning registers comm hooks on CUDA only; the timer registers the configured hook
        # itself (wrapped in its clock) on every device, so Lightning must not do it as well.
        timer.comm_hook, trainer.strategy._ddp_comm_hook = trainer.strategy._ddp_comm_hook, None
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    wall = time.perf_counter() - started
    n_params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    result = {
        "rank": trainer.global_rank, "world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
        "strategy": strategy_name, "per_process_batch": args.per_process_batch, "params": n_params,
        "steps": timer.steps, "fit_wall_s": wall, "device": str(trainer.strategy.root_device),
        "ddp_kwargs": {k: str(v) for k, v in getattr(trainer.strategy, "_ddp_kwargs", {}).items()},
        "comm_hook": getattr(timer.comm_hook, "__name__", None), "micro": timer.micro,
    }
    out = Path(args.result_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank = args.copy_index if args.copy_index >= 0 else trainer.global_rank
    (out / f"rank{rank}.json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------
# Orchestrator
# ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(threads: int) -> dict[str, str]:
    """This environment without launcher variables, loopback rendezvous, `threads` per process."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "TORCHELASTIC_", "PMI_", "OMPI_"))
           and k not in {"LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_PORT", "LOCAL_WORLD_SIZE"}}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", WANDB_MODE="offline", PYTHONPATH=str(REPO_ROOT))
    if "GLOO_SOCKET_IFNAME" not in env:
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass
class RunSpec:
    variant: str
    procs: int  # processes per node
    nnodes: int
    mode: str  # weak | strong | concurrent (procs independent 1-process runs side by side, no DDP)
    per_process_batch: int
    option_set: str = "config"

    @property
    def world(self) -> int:
        return self.procs * self.nnodes

    @property
    def label(self) -> str:
        where = f"{self.nnodes} nodes x {self.procs}" if self.nnodes > 1 else f"{self.procs} proc"
        return f"{self.variant}/{where}/{self.mode}/B{self.per_process_batch}/{self.option_set}"


def run_one(spec: RunSpec, args: argparse.Namespace, work: Path, index: int) -> dict:
    """Launch one configuration (all its ranks); return rank results and the load average."""
    result_dir = work / f"run{index:03d}"
    launch_file = result_dir / "launch.json"
    if args.reuse_runs and launch_file.is_file():
        launch = json.loads(launch_file.read_text())
        if launch["label"] == spec.label:
            return {**launch, "ranks": [json.loads(f.read_text()) for f in sorted(result_dir.glob("rank*.json"))]}
    shutil.rmtree(result_dir, ignore_errors=True)
    worker = [sys.executable, str(Path(__file__).resolve()), "--worker", "--variant", spec.variant,
              "--procs", str(spec.procs), "--nnodes", str(spec.nnodes), "--per-process-batch", str(spec.per_process_batch),
              "--ddp-options", spec.option_set, "--result-dir", str(result_dir), "--run-dir", str(result_dir / "run"),
              "--store", str(args.store), "--crop", str(args.crop), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--threads", str(args.threads), "--num-workers", str(args.num_workers), "--backend", args.backend,
              "--accelerator", args.accelerator, "--micro-repeats", str(args.micro_repeats)]  # fmt: skip
    if args.net_channels:
        worker += ["--net-channels", args.net_channels]
    if args.precision:
        worker += ["--precision", args.precision]
    env = launch_env(args.threads)
    load = load_average()
    started = time.perf_counter()
    if spec.mode == "concurrent":
        # The reference of the model check: the same per-process work with the same sharing of
        # the machine, but no DDP (each copy its own 1-process run, started together).
        single = [*worker, "--procs", "1", "--copies", str(spec.procs)]
        procs = [subprocess.Popen([*single, "--copy-index", str(i)], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for i in range(spec.procs)]
    elif spec.nnodes == 1:
        procs = [subprocess.Popen(worker, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        env.pop("MASTER_ADDR")
        procs = [subprocess.Popen(
            [torchrun, f"--nnodes={spec.nnodes}", f"--nproc_per_node={spec.procs}", f"--node_rank={node}",
             f"--rdzv_endpoint=127.0.0.1:{env['MASTER_PORT']}", "--max_restarts=0", *worker[1:]],
            env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for node in range(spec.nnodes)]  # fmt: skip
    logs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=args.run_timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        logs.append(out or "")
    if any(p.returncode != 0 for p in procs):
        raise RuntimeError(f"run {spec.label} failed (exit {[p.returncode for p in procs]}):\n" + "\n".join(l[-4000:] for l in logs))
    ranks = [json.loads(f.read_text()) for f in sorted(result_dir.glob("rank*.json"))]
    if len(ranks) != spec.world:
        raise RuntimeError(f"run {spec.label}: {len(ranks)} rank results for world size {spec.world}")
    launch = {"spec": asdict(spec), "label": spec.label, "load_before": load, "load_after": load_average(),
              "launch_wall_s": time.perf_counter() - started}
    launch_file.write_text(json.dumps(launch))
    return {**launch, "ranks": ranks}


def summarise_run(run: dict) -> dict:
    """Mean of each step component over the measured steps of rank 0; step time = slowest rank."""
    steps = run["ranks"][0]["steps"]
    if not steps:
        raise RuntimeError(f"run {run['label']}: no measured steps (raise --steps or lower --warmup)")
    keys = (*COMPONENTS, "step", "allreduce", "hidden_allreduce", "allreduce_bytes", "buckets")
    mean = {k: statistics.fmean(s[k] for s in steps) for k in keys}
    mean["step"] = max(statistics.fmean(s["step"] for s in r["steps"]) for r in run["ranks"])
    mean["overlap"] = mean["hidden_allreduce"] / mean["allreduce"] if mean["allreduce"] > 0 else 0.0
    mean["params"] = run["ranks"][0]["params"]
    mean["step_ranks_mean"] = statistics.fmean(s["step"] for r in run["ranks"] for s in r["steps"])
    mean.update(run["ranks"][0].get("micro") or {})
    if run["spec"]["mode"] == "concurrent":
        # the wait for the slowest rank DDP would add, from the copies' steps side by side
        n = len(run["ranks"])
        for name, broadcast in (("straggler_2sync", True), ("straggler_1sync", False)):
            mean[name] = straggler_seconds([[sync_segments(s, broadcast) for s in r["steps"]] for r in run["ranks"]], n)
    return mean


def median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


# -------------------------------------------------------------------------- all-reduce sweep
def _sweep_rank(rank: int, world: int, port: int, backend: str, sizes: list[int], repeats: int, threads: int, queue) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    timings = {}
    for size in sizes:
        tensor = torch.ones(size // 4, dtype=torch.float32, device=device)
        samples = []
        for i in range(repeats + 2):
            dist.barrier()
            if backend == "nccl":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            dist.all_reduce(tensor)
            if backend == "nccl":
                torch.cuda.synchronize()
            if i >= 2:
                samples.append(time.perf_counter() - t0)
        timings[size] = statistics.median(samples)
    if rank == 0:
        queue.put(timings)
    dist.destroy_process_group()


def allreduce_sweep(world: int, backend: str, sizes: list[int], repeats: int, threads: int) -> dict:
    """Median all_reduce time per message size over `world` processes, and the ring fit."""
    import torch.multiprocessing as mp

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_sweep_rank, args=(r, world, port, backend, sizes, repeats, threads, queue)) for r in range(world)]
    for p in procs:
        p.start()
    timings = queue.get(timeout=600)
    for p in procs:
        p.join(timeout=60)
    fit = fit_latency_bandwidth([float(s) for s in sizes], [timings[s] for s in sizes], world)
    return {"world": world, "backend": backend, "sizes": sizes, "seconds": [timings[s] for s in sizes], **fit}


# -------------------------------------------------------------------- FLOPs and parameters
def projection_net(variant: str, channels, aux_channels: int, in_frames: int = 3):
    from nowcast_infill.models.components.unet import PConvUNet

    switches = VARIANT_NET_SWITCHES[variant]
    lstm, attention = switches["lstm"], switches["attention"]
    return PConvUNet(in_frames, 1, aux_channels, lstm=lstm, attention=attention, encoder_channels=tuple(channels), task="infill")


def count_parameters(variant: str, channels, aux_channels: int, in_frames: int = 3) -> int:
    net = projection_net(variant, channels, aux_channels, in_frames)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_buffer_bytes(variant: str, channels, aux_channels: int, in_frames: int = 3) -> int:
    """Bytes DDP broadcasts before every forward (broadcast_buffers=True): the batch-norm
    running statistics and the net's other buffers."""
    net = projection_net(variant, channels, aux_channels, in_frames)
    return sum(b.numel() * b.element_size() for b in net.buffers())


def training_step_flops(variant: str, channels, aux_channels: int, crop: int, batch: int) -> float:
    """FLOPs of forward + backward of one training step (torch.utils.flop_counter, batch 1 x
    `batch`: FLOPs are linear in the batch)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = projection_net(variant, channels, aux_channels).to(device)
    x = torch.randn(1, 3, 1, crop, crop, device=device)
    mask = (torch.rand(1, 3, 1, crop, crop, device=device) > 0.3).float()
    aux = torch.randn(1, 3, aux_channels, crop // 4, crop // 4, device=device) if aux_channels else None
    with FlopCounterMode(display=False) as counter:
        net(x, mask, aux, None if aux is None else torch.ones_like(aux)).square().mean().backward()
    return float(counter.get_total_flops()) * batch


# ------------------------------------------------------------------------------ data feed
def data_feed_rate(store: Path, crop: int, batch: int, n_batches: int, threads: int) -> dict:
    """Samples/s that one loader process delivers (num_workers=0: the main process does what one
    worker does) at the training crop size, after one warm-up batch."""
    import torch
    from hydra import compose, initialize_config_dir

    from nowcast_infill.pipeline.build import build_datamodule
    from nowcast_infill.utils.config import register_resolvers

    torch.set_num_threads(threads)
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            "task=infill", "data=synthetic", f"data.store={store}", f"data.stats_path={store.with_suffix('.normalization.json')}",
            f"data.crop_size={crop}", f"data.batch_size={batch}", "data.num_workers=0", "data.eval_masks.n=2",
            f"paths.data_dir={store.parent}", "paths.output_dir=.", "logger=none", "callbacks=none"])  # fmt: skip
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    next(loader)
    started, samples = time.perf_counter(), 0
    for _ in range(n_batches):
        try:
            samples += next(loader)["x"].shape[0]
        except StopIteration:
            loader = iter(datamodule.train_dataloader())
    seconds = time.perf_counter() - started
    return {"crop": crop, "batch": batch, "samples": samples, "seconds": seconds, "samples_per_s": samples / seconds,
            "aux": list(datamodule.aux_names)}


# ------------------------------------------------------------------------------ reporting
def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def machine_line() -> str:
    import torch

    from nowcast_infill.utils.results import cpu_model

    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) + f" x {torch.cuda.device_count()}" if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def build_report(results: dict) -> str:
    a = results["args"]
    lines = [f"Command: `{results['command']}`  ", f"Machine: {results['machine']}  ",
             f"Date: {results['date']}; load average (1 min) during the runs: {results['load_min']:.1f}–{results['load_max']:.1f}  ",
             f"Runs: task infill, synthetic store {results['store_shape']}, crop {a['crop']}², "
             f"{a['threads']} thread(s) per process, {a['num_workers'] if a['num_workers'] >= 0 else 'the configured'} loader workers, {a['warmup']} warm-up + "
             f"{a['steps']} measured steps per launch, {a['repeats']} interleaved repeats, net "
             f"{a['net_channels'] or 'as configured (conf/model/pconv.yaml)'}, backend {a['backend']}.", ""]

    lines += ["### Throughput and efficiency", "",
              "Weak: per-process batch fixed; efficiency = throughput_N / (N · throughput_1) = T_1/T_N. "
              "Strong: global batch fixed; efficiency = T_1 / (N · T_N). Median (min–max) over the repeats; "
              "each repeat's efficiency uses the 1-process run launched next to it.", "",
              "| variant | params | mode | processes | per-process batch | step (ms) | samples/s | efficiency |",
              "|---|---|---|---|---|---|---|---|"]
    for row in results["scaling"]:
        eff = "1 (reference)" if row["world"] == 1 else "{:.2f} ({:.2f}–{:.2f})".format(*row["efficiency"])
        lines.append(f"| {row['variant']} | {row['params']:,} | {row['mode']} | {row['where']} | {row['per_process_batch']} | "
                     f"{fmt_ms(row['step'][0])} ({fmt_ms(row['step'][1])}–{fmt_ms(row['step'][2])}) | "
                     f"{row['throughput']:.1f} | {eff} |")

    lines += ["", "### Where a step goes (ms, mean over the measured steps, median over repeats)", "",
              "| variant | processes | mode | step | data wait | forward | forward overhead | backward compute | "
              "all-reduce | exposed all-reduce | overlap | optimiser | other |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["scaling"]:
        c = row["components"]
        lines.append(f"| {row['variant']} | {row['where']} | {row['mode']} | {fmt_ms(c['step'])} | {fmt_ms(c['data_wait'])} | "
                     f"{fmt_ms(c['forward'])} | {fmt_ms(c['forward_overhead'])} | {fmt_ms(c['backward_compute'])} | {fmt_ms(c['allreduce'])} | "
                     f"{fmt_ms(c['exposed_allreduce'])} | {c['overlap']:.0%} | {fmt_ms(c['optimizer'])} | {fmt_ms(c['other'])} |")

    if results.get("options"):
        lines += ["", f"### DDP options ({results['options_world']} processes, weak scaling; step ms median (min–max))", "",
                  "| variant | option set | bucket_cap_mb | gradient_as_bucket_view | static_graph | broadcast_buffers | "
                  "comm hook | step (ms) | all-reduce (ms) | exposed (ms) | forward overhead (ms) | vs first set |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in results["options"]:
            o = DDP_OPTION_SETS[row["option_set"]]
            hook = (o["hook"] or "allreduce (fp32)").rsplit(".", 1)[-1]
            lines.append(f"| {row['variant']} | {row['option_set']} | {o['bucket_cap_mb']} | {o['gradient_as_bucket_view']} | "
                         f"{o['static_graph']} | {o['broadcast_buffers']} | {hook} | {fmt_ms(row['step'][0])} ({fmt_ms(row['step'][1])}–{fmt_ms(row['step'][2])}) | "
                         f"{fmt_ms(row['allreduce'])} | {fmt_ms(row['exposed'])} | {fmt_ms(row['forward_overhead'])} | {row['ratio']:.2f} |")

    sweep = results["sweep"]
    if sweep is None:
        lines += ["", "No all-reduce sweep and no model check: only 1 process ran."]
    else:
        lines += ["", f"### {sweep['backend']} all-reduce sweep ({sweep['world']} processes, this machine)", "",
                  "| bytes | " + " | ".join(f"{s:,}" for s in sweep["sizes"]) + " |",
                  "|---|" + "---|" * len(sweep["sizes"]),
                  "| ms | " + " | ".join(f"{t * 1e3:.3f}" for t in sweep["seconds"]) + " |", "",
                  f"Ring fit T = 2(N−1)·α + 2(N−1)/N · bytes / β: α = {sweep['step_latency_s'] * 1e6:.0f} µs per step, "
                  + (f"β = {sweep['bus_bytes_s'] / 1e9:.2f} GB/s." if sweep["fit_ok"] else
                     "β undetermined (time fell with size: the sweep was disturbed by other load; rerun).")]

        check = results["model_check"]
        n = sweep["world"]
        lines += ["", f"### Model check against the {n}-process measurement", "",
                  f"Predicted T_{n} = `ddp_step_seconds`: T_ref + straggler + buffer broadcast + gradient copies + "
                  "(1 − overlap) · all-reduce. T_ref = mean step of "
                  f"{n} independent 1-process runs started together (same per-process batch and sharing of the machine, "
                  "no DDP); straggler = E[slowest rank] − E[one rank] of the work between DDP's synchronisation "
                  "points (buffer broadcast, last all-reduce), from those runs' steps paired side by side; broadcast, "
                  "all-reduce (every bucket size of the run) and copies measured inside the DDP run between its warm-up "
                  f"and measured steps; overlap from the {n}-process split. The projection below uses the same function, "
                  "with the interconnects' figures for the collectives. Per-repeat error, median over the repeats; "
                  "\"plain\" = the earlier model, T_1 + the sweep's ring all-reduce.",
                  "", f"| variant | T_1 (ms) | T_ref (ms) | straggler (ms) | broadcast (ms) | all-reduce (ms) | "
                  f"all-reduce in the step (ms) | copies (ms) | T_{n} predicted (ms) | T_{n} measured (ms) | error | "
                  "error per repeat | plain model error |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in check:
            lines.append(f"| {row['variant']} | {fmt_ms(row['t1'])} | {fmt_ms(row['reference'])} | {fmt_ms(row['straggler'])} | "
                         f"{fmt_ms(row['broadcast'])} | {fmt_ms(row['allreduce_predicted'])} | {fmt_ms(row['allreduce_measured'])} | "
                         f"{fmt_ms(row['copy'])} | {fmt_ms(row['t2_predicted'])} | {fmt_ms(row['t2_measured'])} | "
                         f"{row['error']:+.0%} | {', '.join(f'{e:+.0%}' for e in row['errors'])} | "
                         f"{'– (no sweep fit)' if math.isnan(row['plain_error']) else format(row['plain_error'], '+.0%')} |")

    proj = results["projection"]
    lines += ["", "### Projection to cluster scale (weak scaling, 7-level net)", "",
              f"Per GPU: batch {proj['batch']}, crop {proj['crop']}², bf16 autocast with fp32 gradients (4 bytes/parameter; "
              f"bf16 gradient compression halves them). Compute per step = FLOPs (torch.utils.flop_counter, forward + "
              f"backward) / ({proj['mfu']:.0%} × {proj['peak_flops'] / 1e12:.0f} TFLOP/s dense bf16, H100/H200 SXM) "
              f"unless measured (`--gpu-step-ms`); + {proj['optimizer_fraction']:.0%} for the optimiser step as measured "
              "on CPU. Overlap fraction: the 2-process CPU measurement of the variant (the hidden part is capped at the "
              "backward pass = 2/3 of compute). Interconnects: NVLink4 450 GB/s per direction (H100/H200 datasheets), "
              "InfiniBand 100/200/400 Gb/s ports (ConnectX-6/7 product briefs); ring latency from NCCL's tuning model "
              "(src/graph/tuning.cc: 8.4 µs + 3.4 µs per NVLink step + 9.6 µs per network step); bus-bandwidth "
              "convention of nccl-tests (doc/PERFORMANCE.md). The step model is the one of the model check above "
              "(`ddp_step_seconds`): + one ring broadcast of the buffers per forward (broadcast_buffers=True), + the "
              "two gradient copies of gradient_as_bucket_view=False at 3.35 TB/s (H100 SXM HBM3), no straggler "
              "term (no GPU per-step spread measured yet). Peak figures: the efficiencies are upper bounds for the "
              "stated compute time.", "",
              "| variant | params | gradient MB (fp32) | buffer bytes | FLOPs/step | compute step (ms) | from | overlap | "
              "buckets | copies (ms) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for v in proj["variants"]:
        lines.append(f"| {v['variant']} | {v['params']:,} | {v['grad_bytes'] / 1e6:.1f} | {v['buffer_bytes']:,} | "
                     f"{v['flops'] / 1e12:.2f} T | {fmt_ms(v['step_1'])} | {v['compute_source']} | {v['overlap']:.0%} | "
                     f"{v['buckets']} | {v['copy_s'] * 1e3:.3f} |")
    header = ["| variant | interconnect | " + " | ".join(f"{n} GPUs" for n in PROJECTED_GPUS) + " |",
              "|---|---|" + "---|" * len(PROJECTED_GPUS)]
    lines += ["", "Efficiency T_1/T_N (exposed all-reduce per step), fp32 gradients:", "", *header]
    for row in proj["rows"]:
        lines.append(f"| {row['variant']} | {row['interconnect']} | " + " | ".join(
            f"{e['efficiency']:.0%} ({fmt_ms(e['exposed_s'])} ms)" for e in row["points"]) + " |")
    lines += ["", "The same with bf16 gradient compression (`bf16_grads`: half the bytes):", "", *header]
    for row in proj["rows_bf16"]:
        lines.append(f"| {row['variant']} | {row['interconnect']} | " + " | ".join(
            f"{e['efficiency']:.0%}" for e in row["points"]) + " |")
    lines += ["", f"Per-GPU batch (power of 2) at which {max(PROJECTED_GPUS)} GPUs reach ≥ 90 % (fp32 gradients; "
              "memory not modelled):", "", "| variant | " + " | ".join(link.name for link in INTERCONNECTS) + " |",
              "|---|" + "---|" * len(INTERCONNECTS)]
    for v in proj["variants"]:
        cells = [b["batch"] for b in proj["batches_90"] if b["variant"] == v["variant"]]
        lines.append(f"| {v['variant']} | " + " | ".join("> 4096" if b is None else str(b) for b in cells) + " |")

    feed = results["data_feed"]
    lines += ["", "### Data feed", "",
              f"One loader process delivers **{feed['samples_per_s']:.1f} samples/s** at {feed['crop']}² crops "
              f"(synthetic store {feed['store_shape']}, aux {', '.join(feed['aux']) or 'none'}, {feed['samples']} samples). "
              f"One GPU consumes batch {feed['batch']} per {fmt_ms(feed['gpu_step_s'])} ms step "
              f"({feed['gpu_step_source']}) = {feed['consumed_per_s']:.0f} samples/s → "
              f"**{feed['workers_needed']} workers per GPU** (ceil of the ratio × 1.25 headroom). With "
              f"{feed['cores_per_gpu']} CPU cores per GPU ({feed['workers_recommended']} workers after one core for the "
              f"training process and one for NCCL and the OS) the loader feeds {feed['fed_fraction']:.0%} of that rate."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ the study
def resolve_procs(text: str, accelerator: str) -> list[int]:
    out = []
    for item in text.split(","):
        if item == "all":
            import torch

            out.append(torch.cuda.device_count() if accelerator == "gpu" else os.cpu_count() or 1)
        else:
            out.append(int(item))
    if 1 not in out:
        out.insert(0, 1)  # every efficiency needs its 1-process reference
    return sorted(set(out))


def model_check_row(variant: str, refs: list[dict], concurrent: list[dict] | None, ddp_runs: list[dict],
                    sweep: dict | None) -> dict:
    """`ddp_step_seconds` against the measured N-process step, repeat by repeat (each repeat's
    launches ran next to each other): the reference step is the concurrent run's (N copies of
    the 1-process run side by side, no DDP; on GPU, where there is none, the 1-process run's),
    its straggler term from the copies' steps; broadcast, all-reduce and copies from the
    collectives measured inside the DDP run before its measured steps; the overlap fraction and
    the backward pass it is capped at from the DDP run's own split. Also the plain model
    (1-process step + the sweep's ring all-reduce of the gradient bytes), for comparison."""
    rows = []
    for i, ddp_run in enumerate(ddp_runs):
        d, one = ddp_run["summary"], refs[i]["summary"]
        broadcast = d.get("micro_broadcast_bytes", 0.0) > 0
        if concurrent:
            c = concurrent[i]["summary"]
            reference, straggler = c["step_ranks_mean"], c["straggler_2sync" if broadcast else "straggler_1sync"]
        else:
            reference, straggler = one["step"], 0.0
        point = ddp_step_seconds(reference, d.get("micro_allreduce", 0.0), d["overlap"], d["backward_compute"],
                                 broadcast_s=d.get("micro_broadcast", 0.0), copy_s=d.get("micro_copy", 0.0),
                                 straggler_s=straggler)
        plain = float("nan")
        if sweep is not None and sweep["fit_ok"]:
            ring = ring_allreduce_seconds(d["allreduce_bytes"], sweep["world"], sweep["bus_bytes_s"],
                                          intra_step_s=sweep["step_latency_s"], n_calls=max(int(d["buckets"]), 1))
            plain = one["step"] + (1 - d["overlap"]) * ring
        rows.append({"t1": one["step"], "reference": reference, "straggler": straggler,
                     "broadcast": point["broadcast_s"], "allreduce_predicted": point["allreduce_s"],
                     "allreduce_measured": d["allreduce"], "copy": point["copy_s"], "t2_predicted": point["step_s"],
                     "t2_measured": d["step"], "error": point["step_s"] / d["step"] - 1,
                     "plain_error": plain / d["step"] - 1, "contention": reference / one["step"],
                     "load": ddp_run["load"]})
    out = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    out.update(variant=variant, errors=[r["error"] for r in rows], reference_source="concurrent" if concurrent else "1-process")
    return out


def study(args: argparse.Namespace) -> dict:
    from nowcast_infill.data.synthetic import write_synthetic_store

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_scaling_"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "scaling.zarr"
    if not store.exists():
        write_synthetic_store(store, n_times=args.store_times, ny=args.store_size, nx=args.store_size, seed=0)
    args.store = store
    variants = args.variants.split(",")
    procs_list = resolve_procs(args.procs, args.accelerator)
    modes = args.mode.split(",")
    loads: list[float] = []
    runs: dict[str, list[dict]] = {}
    index = 0

    def launch(spec: RunSpec) -> dict:
        nonlocal index
        index += 1
        print(f"[bench_scaling] {spec.label} (load {load_average():.1f})", flush=True)
        run = run_one(spec, args, work, index)
        loads.extend([run["load_before"], run["load_after"]])
        summary = summarise_run(run)
        runs.setdefault(spec.label, []).append({"summary": summary, "load": run["load_before"]})
        return summary

    # Interleaved: in every repeat, each configuration runs once, 1-process references first.
    specs: list[RunSpec] = []
    for variant in variants:
        specs.append(RunSpec(variant, 1, 1, "weak", args.batch))
        for n in procs_list:
            if n == 1:
                continue
            if "weak" in modes:
                if args.accelerator == "cpu" and n == max(procs_list):
                    specs.append(RunSpec(variant, n, 1, "concurrent", args.batch))
                specs.append(RunSpec(variant, n, 1, "weak", args.batch))
            if "strong" in modes and args.batch % n == 0:
                specs.append(RunSpec(variant, n, 1, "strong", args.batch // n))
        if args.nodes2:
            specs.append(RunSpec(variant, 1, 2, "weak", args.batch))
    option_specs = []
    option_world = max(procs_list)
    if args.ddp_option_sets and option_world > 1:
        for variant in args.option_variants.split(","):
            for option_set in args.ddp_option_sets.split(","):
                option_specs.append(RunSpec(variant, option_world, 1, "weak", args.batch, option_set))
    for repeat in range(args.repeats):
        order = specs if repeat % 2 == 0 else list(reversed(specs))
        for spec in order + option_specs:
            launch(spec)

    sweep = allreduce_sweep(option_world, args.backend,
                            args.sweep_sizes, args.sweep_repeats, args.threads) if option_world > 1 else None

    scaling_rows, check_rows = [], []
    for variant in variants:
        ref_label = RunSpec(variant, 1, 1, "weak", args.batch).label
        refs = runs[ref_label]
        for spec in [s for s in specs if s.variant == variant and s.mode != "concurrent"]:
            reps = runs[spec.label]
            steps = [r["summary"]["step"] for r in reps]
            effs = [scaling_efficiency(spec.mode, spec.world, ref["summary"]["step"], r["summary"]["step"])
                    for ref, r in zip(refs, reps)]
            med = {k: statistics.median(r["summary"][k] for r in reps) for k in reps[0]["summary"]}
            batch = spec.per_process_batch if spec.mode == "weak" else spec.per_process_batch * spec.world
            scaling_rows.append({
                "variant": variant, "mode": spec.mode, "world": spec.world, "nnodes": spec.nnodes,
                "where": f"{spec.nnodes} nodes × {spec.procs}" if spec.nnodes > 1 else str(spec.procs),
                "per_process_batch": spec.per_process_batch, "params": int(med["params"]),
                "step": median_range(steps), "efficiency": median_range(effs),
                "throughput": throughput(spec.mode, spec.world, batch, med["step"]), "components": med,
                "loads": [r["load"] for r in reps],
            })
            if option_world > 1 and spec.world == option_world and spec.nnodes == 1 and spec.mode == "weak":
                concurrent = runs.get(RunSpec(variant, spec.procs, 1, "concurrent", args.batch).label)
                check_rows.append(model_check_row(variant, refs, concurrent, reps, sweep))

    option_rows = []
    for variant in args.option_variants.split(",") if option_specs else []:
        base = None
        for option_set in args.ddp_option_sets.split(","):
            reps = runs[RunSpec(variant, option_world, 1, "weak", args.batch, option_set).label]
            steps = [r["summary"]["step"] for r in reps]
            row = {"variant": variant, "option_set": option_set, "step": median_range(steps),
                   "allreduce": statistics.median(r["summary"]["allreduce"] for r in reps),
                   "exposed": statistics.median(r["summary"]["exposed_allreduce"] for r in reps),
                   "forward_overhead": statistics.median(r["summary"]["forward_overhead"] for r in reps)}
            base = base or row["step"][0]
            row["ratio"] = row["step"][0] / base
            option_rows.append(row)

    projection = project(args, variants, scaling_rows)
    feed = data_feed(args, work, projection)
    results = {
        "command": " ".join(["python experiments/bench_scaling.py", *sys.argv[1:]]),
        "machine": machine_line(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_min": min(loads), "load_max": max(loads), "store_shape": f"{args.store_times} × {args.store_size} × {args.store_size}",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "scaling": scaling_rows, "options": option_rows, "options_world": option_world, "sweep": sweep,
        "model_check": check_rows, "projection": projection, "data_feed": feed,
        "runs": {label: [r["summary"] for r in reps] for label, reps in runs.items()},
    }
    if not args.keep_work and not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return results


def project(args: argparse.Namespace, variants: list[str], scaling_rows: list[dict]) -> dict:
    """Weak-scaling efficiency of the 7-level net at PROJECTED_GPUS for each interconnect."""
    channels = [int(c) for c in args.projection_channels.split(",")]
    aux = 3  # the synthetic store's aux fields (u, v, t), as data.aux=all yields them
    out_variants, rows, rows_bf16, batches_90 = [], [], [], []
    for variant in variants:
        # the overlap of the largest single-node weak-scaling run
        two = max((r for r in scaling_rows if r["variant"] == variant and r["world"] > 1 and r["mode"] == "weak"
                   and r["nnodes"] == 1), key=lambda r: r["world"], default=None)
        one = next(r for r in scaling_rows if r["variant"] == variant and r["world"] == 1)
        overlap = two["components"]["overlap"] if two else 0.0
        c1 = one["components"]
        optimizer_fraction = c1["optimizer"] / (c1["forward"] + c1["backward_compute"])
        params, buffer_bytes = count_parameters(variant, channels, aux), count_buffer_bytes(variant, channels, aux)
        copy = gradient_copy_seconds(4.0 * params, H100_HBM_BYTES_S)
        flops = training_step_flops(variant, channels, aux, args.projection_crop, args.projection_batch)
        measured_here = (args.accelerator == "gpu" and args.net_channels.replace(" ", "") == args.projection_channels
                         and args.crop == args.projection_crop and args.batch == args.projection_batch)
        if args.gpu_step_ms:
            compute, source = args.gpu_step_ms / 1e3, "--gpu-step-ms"
        elif measured_here:  # this run is the projected configuration: its own 1-GPU step
            compute, source = c1["forward"] + c1["forward_overhead"] + c1["backward_compute"], "measured 1-GPU run"
        else:
            compute = flops / (args.gpu_mfu * args.gpu_peak_tflops * 1e12)
            source = f"FLOPs at {args.gpu_mfu:.0%} of {args.gpu_peak_tflops:.0f} TFLOP/s"
        step_1 = compute * (1 + optimizer_fraction)
        grad_bytes = 4.0 * params
        buckets = ddp_bucket_count(grad_bytes)
        out_variants.append({"variant": variant, "params": params, "grad_bytes": grad_bytes, "flops": flops,
                             "compute_s": compute, "step_1": step_1, "overlap": overlap, "buckets": buckets,
                             "optimizer_fraction": optimizer_fraction, "compute_source": source,
                             "buffer_bytes": buffer_bytes, "copy_s": copy})
        for link in INTERCONNECTS:
            batch_90 = batch_for_efficiency(0.9, step_1 / args.projection_batch, compute / args.projection_batch,
                                            grad_bytes, max(PROJECTED_GPUS), link, overlap,
                                            buffer_bytes=buffer_bytes, copy_s=copy)
            batches_90.append({"variant": variant, "interconnect": link.name, "batch": batch_90})
            for target, nbytes in ((rows, grad_bytes), (rows_bf16, grad_bytes / 2)):
                target.append({"variant": variant, "interconnect": link.name, "points": [
                    {"gpus": n, **project_step(step_1, nbytes, n, link, overlap, compute * 2 / 3, ddp_bucket_count(nbytes),
                                               buffer_bytes=buffer_bytes, copy_s=copy)}
                    for n in PROJECTED_GPUS]})
    return {"channels": channels, "crop": args.projection_crop, "batch": args.projection_batch, "mfu": args.gpu_mfu,
            "peak_flops": args.gpu_peak_tflops * 1e12, "gpu_step_ms": args.gpu_step_ms,
            "optimizer_fraction": statistics.median(v["optimizer_fraction"] for v in out_variants),
            "variants": out_variants, "rows": rows, "rows_bf16": rows_bf16, "batches_90": batches_90}


def data_feed(args: argparse.Namespace, work: Path, projection: dict) -> dict:
    """Samples/s of one loader process at the projection's crop vs one GPU's consumption."""
    from nowcast_infill.data.synthetic import write_synthetic_store

    size = max(args.projection_crop + 32, args.store_size)
    store = work / f"feed{size}.zarr"
    if not store.exists():
        write_synthetic_store(store, n_times=args.feed_times, ny=size, nx=size, seed=1)
    feed = data_feed_rate(store, args.projection_crop, args.projection_batch, args.feed_batches, args.threads)
    plain = next(v for v in projection["variants"] if v["variant"] == (
        VARIANTS[0] if any(v["variant"] == VARIANTS[0] for v in projection["variants"]) else projection["variants"][0]["variant"]))
    gpu_step = plain["step_1"]
    source = f"{plain['variant']}, projected net, compute {plain['compute_source']}"
    consumed = args.projection_batch / gpu_step
    needed = max(1, math.ceil(1.25 * consumed / feed["samples_per_s"]))
    # One core for the training process and one for NCCL's proxy thread and the OS.
    available = max(1, args.cpu_cores_per_gpu - 2)
    workers = min(needed, available)
    return {**feed, "store_shape": f"{args.feed_times} × {size} × {size}", "gpu_step_s": gpu_step, "gpu_step_source": source,
            "consumed_per_s": consumed, "workers_needed": needed, "cores_per_gpu": args.cpu_cores_per_gpu,
            "workers_recommended": workers, "fed_fraction": min(1.0, workers * feed["samples_per_s"] / consumed)}


# ------------------------------------------------------------------------------------ CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", default="1,2", help="processes per node, comma list; 'all' = every GPU (or CPU core)")
    p.add_argument("--nodes2", action=argparse.BooleanOptionalAction, default=None,
                   help="also run 2 simulated nodes x 1 process with torchrun (weak scaling); default: on CPU only")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--mode", default="weak,strong", help="weak, strong or both")
    p.add_argument("--batch", type=int, default=8, help="weak: per-process batch; strong: global batch")
    p.add_argument("--crop", type=int, default=64, help="training crop (pixels)")
    p.add_argument("--net-channels", default="", help="encoder widths, e.g. 64,128,256,512,512,512,512; '' = config")
    p.add_argument("--precision", default="", help="trainer.precision; '' = the trainer config's")
    p.add_argument("--steps", type=int, default=12, help="measured steps per launch")
    p.add_argument("--warmup", type=int, default=3, help="steps before measuring (DDP builds its buckets)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every configuration")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers per process; default 0 on CPU (loading inside the step), the trainer "
                        "config's on GPU (conf/trainer/gpu.yaml); -1 = the config's")
    p.add_argument("--backend", default="gloo", choices=("gloo", "nccl"))
    p.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--ddp-option-sets", default=",".join(DDP_OPTION_SETS),
                   help=f"DDP option sets to compare (of {', '.join(DDP_OPTION_SETS)}); '' = none")
    p.add_argument("--option-variants", default=",".join(VARIANTS[:2]), help="variants for the DDP option comparison")
    p.add_argument("--store-times", type=int, default=480)
    p.add_argument("--store-size", type=int, default=128)
    p.add_argument("--sweep-sizes", type=lambda s: [int(x) for x in s.split(",")],
                   default=[4096, 65536, 524288, 2097152, 8388608, 33554432], help="all-reduce sweep, bytes")
    p.add_argument("--sweep-repeats", type=int, default=7)
    p.add_argument("--projection-channels", default=",".join(map(str, SEVEN_LEVEL_CHANNELS)))
    p.add_argument("--projection-crop", type=int, default=256)
    p.add_argument("--projection-batch", type=int, default=8)
    p.add_argument("--gpu-step-ms", type=float, default=0.0, help=f"measured GPU compute ms per step ({VARIANTS[0]}); 0 = from FLOPs")
    p.add_argument("--gpu-mfu", type=float, default=ASSUMED_MFU)
    p.add_argument("--gpu-peak-tflops", type=float, default=H100_BF16_DENSE_FLOPS / 1e12)
    p.add_argument("--cpu-cores-per-gpu", type=int, default=14,
                   help="CPU cores per GPU of the target node (DGX H100/H200: 112 cores for 8 GPUs)")
    p.add_argument("--feed-times", type=int, default=64)
    p.add_argument("--feed-batches", type=int, default=12)
    p.add_argument("--run-timeout", type=int, default=900, help="seconds per launch")
    p.add_argument("--out", type=Path, default=None, help="folder for bench_scaling.json and bench_scaling.md")
    p.add_argument("--work-dir", type=Path, default=None, help="stores and run folders (kept); default a temp dir")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--reuse-runs", action="store_true",
                   help="reuse the launches already in --work-dir (same order and labels): rebuild the report only")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes: checks the machinery in seconds")
    # worker-only
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default=VARIANTS[0], help=argparse.SUPPRESS)
    p.add_argument("--nnodes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--per-process-batch", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--ddp-options", default="config", help=argparse.SUPPRESS)
    p.add_argument("--result-dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--store", default="", help=argparse.SUPPRESS)
    p.add_argument("--copy-index", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--copies", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--micro-repeats", type=int, default=10, help="repeats of each collective of the model check")
    args = p.parse_args(argv)
    if args.nodes2 is None:
        args.nodes2 = args.accelerator == "cpu"
    if args.num_workers is None:
        args.num_workers = 0 if args.accelerator == "cpu" else -1
    if args.dry_run and not args.worker:
        args.variants = args.variants if args.variants != ",".join(VARIANTS) else VARIANTS[0]
        args.procs, args.mode, args.nodes2 = "1,2", "weak", False
        args.batch, args.crop, args.net_channels = 2, 32, args.net_channels or "4,8"
        args.steps, args.warmup, args.repeats = 4, 2, 1
        args.store_times, args.store_size = 64, 32
        if args.ddp_option_sets == ",".join(DDP_OPTION_SETS):
            args.ddp_option_sets = "torch_defaults,bf16_grads"
        args.option_variants = args.variants.split(",")[0]
        args.sweep_sizes, args.sweep_repeats = [4096, 262144, 1048576], 3
        args.projection_channels, args.projection_crop, args.projection_batch = "4,8", 32, 2
        args.feed_times, args.feed_batches = 64, 3
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return None
    results = study(args)
    report = build_report(results)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_scaling.json").write_text(json.dumps(results, indent=1, default=str))
        (args.out / "bench_scaling.md").write_text(report)
    return results


if __name__ == "__main__":
    main()
