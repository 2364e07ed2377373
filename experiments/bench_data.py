"""Data-plane benchmark: conversion speed and DataModule throughput per `precip` layout.

Layouts (`LAYOUTS`): 256 x 256 chunks one file each; whole-frame chunks; and Zarr v3
shards of one frame holding 256 x 256 inner chunks.

(1) Conversion of the 12 YW + 24 RW RADOLAN files in ../shared/data/radolan/{yw,rw}
    with each layout: frames/s, and the ratio to a bare `wradlib.io.read_radolan_composite`
    of the same files. Each round times the bare read and then every layout (order
    rotated per round), so all see the same machine load; per layout the median ratio
    and its spread over rounds (goal <= 1.3). One process unless --workers says otherwise.
(2) RadarDataModule samples/s for 256 x 256 training crops with num_workers 0, 1, 2 on
    the YW store (1100 x 900) written with each layout; rounds interleave layouts and
    worker counts; the median over rounds is reported.

The winner: among the layouts whose median conversion ratio is within --ratio-tolerance
of the lowest, the one with the highest DataModule samples/s (mean over worker counts).
Prints a Markdown table per part, a `BENCH_DATA {json}` line, and as its last lines
`bench_data_winner=<layout>` and `bench_data_winner_convert_ratio=<median ratio>`.
Usage: python experiments/bench_data.py [--repeats 3] [--samples 96] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import SHARED, bare_read, radolan_groups, timed_convert  # noqa: E402

# chunks / shards as `convert()` takes them; null y / x = the whole grid.
LAYOUTS = {
    "chunk256": {"chunks": {"time": 1, "y": 256, "x": 256}, "shards": None},
    "chunkframe": {"chunks": {"time": 1, "y": None, "x": None}, "shards": None},
    "shardframe256": {"chunks": {"time": 1, "y": 256, "x": 256}, "shards": {"time": 1, "y": None, "x": None}},
}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def bench_conversion(repeats: int, workers: int, workdir: Path) -> dict:
    groups = radolan_groups()
    files = groups["yw"] + groups["rw"]
    # Imports, caches and both grids' lat/lon (computed once per process) before timing.
    bare_read(files[:2])
    for layout in LAYOUTS.values():
        timed_convert({"warm_yw": groups["yw"][:2], "warm_rw": groups["rw"][:2]}, workdir, workers, **layout)
    reads: list[float] = []
    converts: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    ratios: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    names = list(LAYOUTS)
    for r in range(repeats):
        reads.append(bare_read(files))
        for name in names[r % len(names):] + names[: r % len(names)]:
            converts[name].append(timed_convert(groups, workdir, workers, **LAYOUTS[name]))
            ratios[name].append(converts[name][-1] / reads[-1])
        print(f"round {r + 1}: bare read {reads[-1]:.2f} s; "
              + ", ".join(f"{name} {converts[name][-1]:.2f} s" for name in names), flush=True)
    n = len(files)
    result = {
        "frames": n, "repeats": repeats, "workers": workers, "read_s": reads,
        "read_frames_per_s": n / statistics.median(reads),
        "layouts": {name: {"convert_s": converts[name], "ratios": ratios[name],
                           "ratio_median": statistics.median(ratios[name]),
                           "convert_frames_per_s": n / statistics.median(converts[name])} for name in names},
    }
    print(f"\n### Conversion: 12 YW + 24 RW RADOLAN files, {repeats} interleaved rounds, workers={workers}\n")
    print("| step | median s (min-max) | frames/s | ratio to bare read, median (min-max) |\n|---|---|---|---|")
    print(f"| bare wradlib read | {_spread(reads)} | {result['read_frames_per_s']:.1f} | 1 |")
    for name in names:
        print(f"| convert() {name} | {_spread(converts[name])} | "
              f"{result['layouts'][name]['convert_frames_per_s']:.1f} | {_spread(ratios[name])} |")
    return result


def bench_datamodule(samples: int, repeats: int, workdir: Path, worker_counts: list[int], convert_workers: int) -> dict:
    from torch.utils.data import DataLoader

    from nowcast_infill.data.datamodule import RadarDataModule
    from nowcast_infill.io.convert import convert

    yw = radolan_groups()["yw"]
    stores = {}
    for name, layout in LAYOUTS.items():
        stores[name] = workdir / f"yw_{name}.zarr"
        shutil.rmtree(stores[name], ignore_errors=True)
        convert([str(p) for p in yw], stores[name], "radolan", workers=convert_workers, progress=False, **layout)

    def loader(name: str, num_workers: int) -> DataLoader:
        # Nowcast windows of 3 frames without hole masks: the data path alone (read, crop,
        # normalise, collate), which is what the layout changes.
        dm = RadarDataModule(stores[name], task="nowcast", past=2, future=1, crop_size=256, batch_size=8,
                             split={"fractions": [0.5, 0.25, 0.25], "gap": 0}, seed=0, min_valid_fraction=0.05,
                             stats_path=workdir / "yw.normalization.json")
        dm.setup()
        dataset = dm.datasets["train"]
        # Distinct crops every pass: the epoch is carried in the index (see WindowSampler).
        order = [e * len(dataset) + i for e in range(-(-(samples + 8) // len(dataset))) for i in range(len(dataset))]
        return DataLoader(dataset, batch_size=8, sampler=order[: samples + 8], num_workers=num_workers)

    names = list(LAYOUTS)
    rates: dict[str, dict[int, list[float]]] = {name: {w: [] for w in worker_counts} for name in names}
    for r in range(repeats):
        for num_workers in worker_counts:
            for name in names[r % len(names):] + names[: r % len(names)]:
                it = iter(loader(name, num_workers))
                next(it)  # worker start-up and first reads are not throughput
                start, n = time.perf_counter(), 0
                for batch in it:
                    n += batch["x"].shape[0]
                rates[name][num_workers].append(n / (time.perf_counter() - start))
                del it
        print(f"round {r + 1}: " + "; ".join(
            f"{name} " + "/".join(f"{rates[name][w][-1]:.0f}" for w in worker_counts) for name in names), flush=True)
    median = {name: {w: statistics.median(v) for w, v in per.items()} for name, per in rates.items()}
    print(f"\n### DataModule: 256 x 256 crops of the YW store (1100 x 900), samples/s, "
          f"median (min-max) of {repeats} interleaved rounds\n")
    print("| layout | " + " | ".join(f"workers={w}" for w in worker_counts) + " | mean of medians |")
    print("|---|" + "---|" * (len(worker_counts) + 1))
    for name in names:
        row = " | ".join(f"{_spread(rates[name][w])}" for w in worker_counts)
        print(f"| {name} {_describe(LAYOUTS[name])} | {row} | {statistics.mean(median[name].values()):.1f} |")
    sizes = {name: sum(f.stat().st_size for f in (stores[name] / "precip").rglob("*") if f.is_file()) for name in names}
    files = {name: sum(1 for f in (stores[name] / "precip").rglob("*") if f.is_file()) for name in names}
    print("\nprecip on disk (12 frames): " + ", ".join(f"{k} {sizes[k] / 2**20:.1f} MiB in {files[k]} files" for k in names))
    return {"samples_per_s": rates, "median_samples_per_s": median, "precip_bytes": sizes, "precip_files": files}


def _describe(layout: dict) -> str:
    sizes = ", ".join("whole" if v is None else str(v) for v in layout["chunks"].values())
    text = f"chunks ({sizes})"
    return text + (f", shards of {layout['shards']['time']} frame" if layout["shards"] else "")


def choose_winner(conversion: dict | None, datamodule: dict, tolerance: float) -> tuple[str, list[str]]:
    """(winner, candidates): best DataModule throughput among the layouts converting fastest."""
    throughput = {name: statistics.mean(per.values()) for name, per in datamodule["median_samples_per_s"].items()}
    if conversion is None:
        candidates = list(throughput)
    else:
        ratio = {name: lay["ratio_median"] for name, lay in conversion["layouts"].items()}
        lowest = min(ratio.values())
        candidates = [name for name in ratio if ratio[name] <= lowest * (1 + tolerance)]
    return max(candidates, key=throughput.__getitem__), candidates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of each part")
    parser.add_argument("--samples", type=int, default=96, help="samples timed per (layout, num_workers, round)")
    parser.add_argument("--workers", type=int, default=1, help="conversion reader processes")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratio-tolerance", type=float, default=0.10,
                        help="layouts within this fraction of the lowest median conversion ratio compete on throughput")
    parser.add_argument("--skip-conversion", action="store_true")
    args = parser.parse_args(argv)
    if not (SHARED / "radolan").is_dir():
        print(f"real data folder {SHARED} is absent (set NI_SHARED_DATA); nothing to benchmark", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        workdir = Path(tmp)
        conversion = None if args.skip_conversion else bench_conversion(args.repeats, args.workers, workdir)
        datamodule = bench_datamodule(args.samples, args.repeats, workdir, args.num_workers, args.workers)
    winner, candidates = choose_winner(conversion, datamodule, args.ratio_tolerance)
    winner_ratio = conversion["layouts"][winner]["ratio_median"] if conversion else None
    print(f"\nlowest conversion ratio (within {args.ratio_tolerance:.0%}): {', '.join(candidates)}; "
          f"highest DataModule throughput among them: {winner} {_describe(LAYOUTS[winner])}")
    summary = {"conversion": conversion, "datamodule": datamodule, "layouts": LAYOUTS, "candidates": candidates,
               "winner": winner, "total_s": time.perf_counter() - started, "cpus": os.cpu_count(),
               "load_average_1min": os.getloadavg()[0]}
    print("\nBENCH_DATA " + json.dumps(summary, default=str))
    print(f"bench_data_winner={winner}")
    print(f"bench_data_winner_convert_ratio={'nan' if winner_ratio is None else f'{winner_ratio:.3f}'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
