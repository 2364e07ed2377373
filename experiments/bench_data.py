"""Data-plane benchmark: conversion speed and DataModule throughput.

(1) Conversion of the 12 YW + 24 RW RADOLAN files in ../shared/data/radolan/{yw,rw}:
    frames/s, and the ratio to a bare `wradlib.io.read_radolan_composite` of the same
    files, measured in the same run, interleaved, repeated; the median ratio is reported
    (goal <= 1.3). Both sides use one process unless --workers says otherwise.
(2) RadarDataModule samples/s for 256 x 256 training crops with num_workers 0, 1, 2, for
    the YW store (1100 x 900) converted with each of several chunkings.

Prints a Markdown table per part and a final machine-readable line starting `BENCH_DATA `.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NI_SHARED_DATA", REPO.parent / "shared" / "data"))
CHUNKINGS = {
    "t1_256": {"time": 1, "y": 256, "x": 256},
    "t1_frame": {"time": 1, "y": 1100, "x": 900},
    "t8_128": {"time": 8, "y": 128, "x": 128},
}


def bare_read(files: list[Path]) -> float:
    import wradlib

    start = time.perf_counter()
    for path in files:
        data, _ = wradlib.io.read_radolan_composite(str(path))
        np.asarray(data).sum()  # make sure the values were decoded
    return time.perf_counter() - start


def timed_convert(groups: dict[str, list[Path]], workdir: Path, workers: int) -> float:
    from nowcast_infill.io.convert import convert

    start = time.perf_counter()
    for name, files in groups.items():
        out = workdir / f"{name}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        convert([str(p) for p in files], out, "radolan", workers=workers, progress=False)
    return time.perf_counter() - start


def bench_conversion(repeats: int, workers: int, workdir: Path) -> dict:
    groups = {p: sorted((SHARED / "radolan" / p).glob("*")) for p in ("yw", "rw")}
    files = groups["yw"] + groups["rw"]
    if len(groups["yw"]) != 12 or len(groups["rw"]) != 24:
        raise SystemExit(f"expected 12 YW and 24 RW files under {SHARED / 'radolan'}, found "
                         f"{len(groups['yw'])} and {len(groups['rw'])}")
    bare_read(files[:2]), timed_convert({"warm": groups["yw"][:2]}, workdir, workers)  # imports, caches
    reads, converts = [], []
    for _ in range(repeats):  # interleaved so both sides see the same machine load
        reads.append(bare_read(files))
        converts.append(timed_convert(groups, workdir, workers))
    ratios = [c / r for c, r in zip(converts, reads)]
    n = len(files)
    result = {
        "frames": n, "repeats": repeats, "workers": workers,
        "read_s_median": statistics.median(reads), "convert_s_median": statistics.median(converts),
        "read_frames_per_s": n / statistics.median(reads), "convert_frames_per_s": n / statistics.median(converts),
        "ratio_median": statistics.median(ratios), "ratios": ratios,
    }
    print("\n### Conversion: 12 YW + 24 RW RADOLAN files\n")
    print("| step | median s | frames/s |\n|---|---|---|")
    print(f"| bare wradlib read | {result['read_s_median']:.2f} | {result['read_frames_per_s']:.1f} |")
    print(f"| convert() to Zarr (workers={workers}) | {result['convert_s_median']:.2f} | {result['convert_frames_per_s']:.1f} |")
    print(f"\nconvert / bare read: median {result['ratio_median']:.2f} "
          f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)}; goal <= 1.3)")
    return result


def bench_datamodule(samples: int, workdir: Path, worker_counts: list[int], convert_workers: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from nowcast_infill.data.datamodule import RadarDataModule
    from nowcast_infill.io.convert import convert

    yw = sorted((SHARED / "radolan" / "yw").glob("*"))
    stores = {}
    for name, chunks in CHUNKINGS.items():
        stores[name] = workdir / f"yw_{name}.zarr"
        shutil.rmtree(stores[name], ignore_errors=True)
        convert([str(p) for p in yw], stores[name], "radolan", workers=convert_workers, chunks=chunks, progress=False)

    def loader(name: str, num_workers: int) -> DataLoader:
        # Nowcast windows of 3 frames without hole masks: the data path alone (read, crop,
        # normalise, collate), which is what the chunking changes.
        dm = RadarDataModule(stores[name], task="nowcast", past=2, future=1, crop_size=256, batch_size=8,
                             split={"fractions": [0.5, 0.25, 0.25], "gap": 0}, seed=0, min_valid_fraction=0.05,
                             stats_path=workdir / "yw.normalization.json")
        dm.setup()
        dataset = dm.datasets["train"]
        # Distinct crops every pass: the epoch is carried in the index (see WindowSampler).
        order = [e * len(dataset) + i for e in range(-(-(samples + 8) // len(dataset))) for i in range(len(dataset))]
        return DataLoader(dataset, batch_size=8, sampler=order[: samples + 8], num_workers=num_workers)

    rates: dict[str, dict[int, list[float]]] = {name: {w: [] for w in worker_counts} for name in CHUNKINGS}
    for _ in range(2):  # interleave chunkings and worker counts, two rounds
        for num_workers in worker_counts:
            for name in CHUNKINGS:
                it = iter(loader(name, num_workers))
                next(it)  # worker start-up and first reads are not throughput
                start, n = time.perf_counter(), 0
                for batch in it:
                    n += batch["x"].shape[0]
                rates[name][num_workers].append(n / (time.perf_counter() - start))
                del it
    best = {name: {w: max(v) for w, v in per.items()} for name, per in rates.items()}
    print("\n### DataModule: 256 x 256 crops of the YW store (1100 x 900), samples/s (best of 2)\n")
    print("| chunking (time, y, x) | " + " | ".join(f"workers={w}" for w in worker_counts) + " |")
    print("|---|" + "---|" * len(worker_counts))
    for name, chunks in CHUNKINGS.items():
        row = " | ".join(f"{best[name][w]:.1f}" for w in worker_counts)
        print(f"| {name} ({chunks['time']}, {chunks['y']}, {chunks['x']}) | {row} |")
    winner = max(CHUNKINGS, key=lambda name: statistics.mean(best[name].values()))
    sizes = {name: sum(f.stat().st_size for f in (stores[name] / "precip").rglob("*") if f.is_file()) for name in CHUNKINGS}
    print(f"\nwinner (mean over worker counts): {winner} = {CHUNKINGS[winner]}; "
          f"precip bytes on disk: {', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in sizes.items())}")
    torch.set_num_threads(torch.get_num_threads())
    return {"samples_per_s": best, "winner": winner, "winner_chunks": CHUNKINGS[winner], "precip_bytes": sizes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=96, help="samples timed per (chunking, num_workers)")
    parser.add_argument("--workers", type=int, default=1, help="conversion reader processes")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip-conversion", action="store_true")
    args = parser.parse_args(argv)
    if not (SHARED / "radolan").is_dir():
        print(f"real data folder {SHARED} is absent (set NI_SHARED_DATA); nothing to benchmark", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        workdir = Path(tmp)
        conversion = None if args.skip_conversion else bench_conversion(args.repeats, args.workers, workdir)
        datamodule = bench_datamodule(args.samples, workdir, args.num_workers, args.workers)
    summary = {"conversion": conversion, "datamodule": datamodule, "total_s": time.perf_counter() - started,
               "cpus": os.cpu_count()}
    print("\nBENCH_DATA " + json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
