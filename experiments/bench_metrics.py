"""Benchmark of `RadarMetrics.update` on full 1100 x 900 radar frames (issue 3, "Metrics").

Times one `update` per frame with the default thresholds (0.1, 1, 5, 10 mm/h) and FSS
scales (1, 5, 11 px) and, on the same frames in the same run, the plain numpy reference
of `nowcast_infill.metrics.scores` computing the same scores. The two are interleaved
and repeated; the medians and their ratio are printed, then a Markdown row for
BENCHMARKS.md and a machine-readable last line starting `BENCH_METRICS `.

Data: by default the 12 real RADOLAN YW frames of ../shared/data/radolan/yw (mm/h),
scored as a persistence nowcast (prediction = previous frame, scored pixels = valid in
both, so the 38 % no-data area outside the coverage is masked, never rain = 0). Without
the shared data, or with `--data random`, rain-like random fields with a random mask.

Timings on a shared CPU vary several-fold between runs: compare only the ratio, and
note the wall and process CPU time together (CPU time is less sensitive to other load).
On an oversubscribed machine, OpenMP threads that spin while waiting for a descheduled
peer dominate: run with `--threads 1` or `OMP_WAIT_POLICY=PASSIVE` (printed below) to
see the metric's own cost.

Usage: python experiments/bench_metrics.py [--frames 4] [--repeats 3] [--threads N]
       [--data yw|random] [--no-reference] [--device cpu|cuda] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nowcast_infill.metrics import RadarMetrics, format_threshold, scores  # noqa: E402
from nowcast_infill.study import FSS_SCALES_PX, METRIC_THRESHOLDS_MM_H  # noqa: E402

SHARED = Path(os.environ.get("NI_SHARED_DATA", REPO.parent / "shared" / "data"))
# the study's defaults, as every model config scores
THRESHOLDS = METRIC_THRESHOLDS_MM_H
SCALES = FSS_SCALES_PX


def yw_persistence_frames(n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(pred, target, mask) `(n, 1100, 900)`: target frame i+1, prediction frame i (mm/h)."""
    from nowcast_infill.registry import get_method

    files = sorted((SHARED / "radolan" / "yw").glob("*"))[: n_frames + 1]
    if len(files) < n_frames + 1:
        raise SystemExit(f"need {n_frames + 1} YW files in {SHARED / 'radolan' / 'yw'}, found {len(files)}; use --data random")
    importer = get_method("source", "radolan")
    fields = np.stack([importer.read(f)[0].precip for f in files]).astype(np.float32)
    pred, target = fields[:-1], fields[1:]
    mask = np.isfinite(pred) & np.isfinite(target)
    return pred, target, mask, f"RADOLAN YW persistence ({SHARED / 'radolan' / 'yw'})"


def random_frames(n_frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(seed)
    shape = (n_frames, 1100, 900)
    target = (rng.gamma(0.6, 3.0, shape) * (rng.random(shape) > 0.4)).astype(np.float32)
    pred = np.clip(target + rng.normal(0.0, 2.0, shape), 0.0, None).astype(np.float32)
    mask = rng.random(shape) > 0.2
    target[~mask] = np.nan
    return pred, target, mask, "random gamma fields, 20 % unscored"


def reference_scores(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Every score RadarMetrics computes, from scores.py on frames `(n, H, W)`."""
    out = {
        "rmse": scores.rmse(pred, target, mask),
        "mae": scores.mae(pred, target, mask),
        "bias": scores.bias(pred, target, mask),
        "ame": scores.ame(pred, target, mask),
        "temporal_corr": scores.temporal_correlation(pred, target, mask),
        "spatial_corr": scores.spatial_correlation(pred, target, mask)[0],
    }
    for thr in THRESHOLDS:
        tag = f"@{format_threshold(thr)}mmh"
        hits, misses, fas, _ = scores.contingency_table(pred, target, thr, mask)
        out["csi" + tag] = scores.csi(hits, misses, fas)
        for scale in SCALES:
            out[f"fss{tag}_{scale}px"] = scores.fss(pred, target, thr, scale, mask)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4, help="frames per timed update (B=frames, T=1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data", choices=["yw", "random"], default=None)
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) numpy reference")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = args.data or ("yw" if (SHARED / "radolan" / "yw").is_dir() else "random")
    pred, target, mask, description = (yw_persistence_frames if data == "yw" else random_frames)(args.frames)
    n, h, w = pred.shape
    dtype = getattr(torch, args.dtype)
    tensors = [torch.from_numpy(x).to(args.device, dtype).view(n, 1, 1, h, w) for x in (pred, target, mask.astype(np.float32))]
    metric = RadarMetrics(thresholds=THRESHOLDS, fss_scales=SCALES).to(args.device)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    metric.update(*tensors)  # warm-up (allocator, BLAS threads, CUDA context)
    sync()
    wall, cpu, ref_wall = [], [], []
    for _ in range(args.repeats):
        metric.reset()
        start, start_cpu = time.perf_counter(), time.process_time()
        metric.update(*tensors)
        sync()
        wall.append((time.perf_counter() - start) / n)
        cpu.append((time.process_time() - start_cpu) / n)
        if not args.no_reference:
            start = time.perf_counter()
            expected = reference_scores(pred, target, mask)
            ref_wall.append((time.perf_counter() - start) / n)

    got = metric.compute()
    if not args.no_reference and args.dtype == "float32":
        worst = max(
            abs(float(got[name]) - value) / max(abs(value), 1e-12) for name, value in expected.items() if value == value
        )
        print(f"largest relative difference to the numpy reference over {len(expected)} scores: {worst:.2e}")

    median, median_cpu = statistics.median(wall), statistics.median(cpu)
    threads = torch.get_num_threads()
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "default")
    print(
        f"data: {description}; {n} frames {h}x{w}, {args.dtype} on {args.device}, "
        f"torch threads {threads}, OMP_WAIT_POLICY={wait_policy}"
    )
    print(f"RadarMetrics.update: {median:.3f} s/frame wall (median of {args.repeats}; min {min(wall):.3f}), {median_cpu:.3f} s/frame process CPU")
    ratio = ""
    if ref_wall:
        ref = statistics.median(ref_wall)
        ratio = f"{ref / median:.1f}"
        print(f"numpy reference (scores.py): {ref:.3f} s/frame wall; RadarMetrics is {ratio}x faster")
    print(
        f"| metrics update, 1100x900, K=4 thr x 3 FSS scales, {args.device} {args.dtype}, {threads} thr | "
        f"{median:.3f} s/frame | numpy ref {statistics.median(ref_wall):.3f} s/frame | ratio {ratio} |"
        if ref_wall
        else f"| metrics update, 1100x900, K=4 thr x 3 FSS scales, {args.device} {args.dtype}, {threads} thr | {median:.3f} s/frame |"
    )
    print(
        f"BENCH_METRICS s_per_frame={median:.4f} cpu_s_per_frame={median_cpu:.4f} "
        f"numpy_s_per_frame={statistics.median(ref_wall) if ref_wall else float('nan'):.4f} "
        f"speedup_vs_numpy={ratio or 'nan'} threads={threads} omp_wait_policy={wait_policy} data={data}"
    )


if __name__ == "__main__":
    main()
