"""DataModule start-up and throughput against archive length (issue 13, § Benchmarks).

Writes RADOLAN-size stores (1100 x 900 pixels, 5-min steps) of 1 day and of a longer
period with the project's own `StoreWriter` (one commit per day, the per-frame
statistics written as it goes), then measures, each in a fresh process so that peak RSS
is the DataModule's own:

- `setup` seconds, imports excluded (timed apart as `imports_s`) (nowcast, 4 past + 4 future frames, stored statistics, normaliser fitted
  from the stored per-frame moments: no `precip` chunk is read);
- first-batch latency (train loader, 256 x 256 crops, batch 8, num_workers 0);
- training-crop samples/s over the next `--batches` batches;
- peak RSS (ru_maxrss) of the process.

Goal: the long store's setup and first batch within 1.2x of the day's; samples/s and peak
RSS flat. With --scan-baseline it also times one pass over every frame of the day store
(`frame_stats.stats_in_memory`: what `setup` cost before statistics were stored, per rank
and start), to scale by archive length.

Frames: a bank of 16 smooth rain fields (log-normal cells, ~15 % of the covered pixels
wet, rates in 0.12 mm/h steps as YW's 0.01 mm per 5 min), rolled a little each step,
rain in 3-hour episodes two in five (the other frames dry), NaN outside a union of
150 km circles around 17 radar-like sites.

`measure_datamodule(store_path) -> dict` is importable (experiments/bench_archive.py).
Usage: python experiments/bench_archive_datamodule.py [--days 1 7] [--rounds 3] [--batches 12] [--keep DIR] [--scan-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HEIGHT, WIDTH = 1100, 900
STEP_S = 300
FRAMES_PER_DAY = 86400 // STEP_S
PROJ4 = "+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +a=6370040 +b=6370040 +units=km +no_defs"


def _frame_bank(seed: int = 0, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W) float32 rain fields in mm/h (>= 0) and the (H, W) coverage mask."""
    from scipy.ndimage import gaussian_filter, zoom

    rng = np.random.default_rng(seed)
    bank = np.empty((n, HEIGHT, WIDTH), np.float32)
    for k in range(n):
        coarse = gaussian_filter(rng.standard_normal((HEIGHT // 4, WIDTH // 4)), 6.0)
        field = zoom(coarse / coarse.std(), 4, order=1)[:HEIGHT, :WIDTH]
        wet = field > np.quantile(field, 0.85)
        rate = np.exp(1.2 * (field - np.quantile(field, 0.85))) - 1.0 + 0.12
        bank[k] = np.where(wet, np.round(rate / 0.12) * 0.12, 0.0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    coverage = np.zeros((HEIGHT, WIDTH), bool)
    for cy, cx in rng.uniform([150, 150], [HEIGHT - 150, WIDTH - 150], size=(17, 2)):
        coverage |= (yy - cy) ** 2 + (xx - cx) ** 2 < 150 ** 2
    return bank, coverage


def write_store(path: Path, n_frames: int, start: str = "2021-06-01T00:05") -> dict:
    """A `n_frames` store of synthetic RADOLAN-size frames at `path`, one commit per day; returns timings."""
    from nowcast_infill.io.importers import Frame, make_grid
    from nowcast_infill.io.store import SourceRecord, StoreWriter, iso_time

    bank, coverage = _frame_bank()
    grid = make_grid(-443.5 + np.arange(WIDTH, dtype=np.float64), -4758.5 + np.arange(HEIGHT, dtype=np.float64), PROJ4)
    t0 = np.datetime64(start, "ns")
    started = time.perf_counter()
    for day_start in range(0, n_frames, FRAMES_PER_DAY):
        stop = min(n_frames, day_start + FRAMES_PER_DAY)
        with StoreWriter(path, source_name="bench_archive_datamodule", expected_frames=stop - day_start,
                         history="experiments/bench_archive_datamodule.py") as writer:
            for t in range(day_start, stop):
                raining = (t // 36) % 5 < 2  # 3-hour episodes, two in five
                frame = np.roll(bank[t % len(bank)], (3 * t) % HEIGHT, axis=0) if raining else np.zeros((HEIGHT, WIDTH), np.float32)
                frame = np.where(coverage, frame, np.nan).astype(np.float32)
                when = t0 + np.timedelta64(STEP_S * t, "s")
                name = f"synthetic_{t:06d}"
                writer.add(Frame(time=when, precip=frame, grid=grid, product="YW-synthetic", accumulation_interval_s=STEP_S,
                                 conversion="synthetic mm/h", source=Path(name)),
                           SourceRecord(name=name, sha256=f"{t:064x}", time=iso_time(when)))
            writer.commit()
    seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"frames": n_frames, "write_s": round(seconds, 1), "frames_per_s": round(n_frames / seconds, 1),
            "bytes_per_frame": int(size / n_frames)}


def frame_stats_cost_ms(repeats: int = 20) -> dict:
    """Milliseconds of `frame_statistics` (what StoreWriter adds per frame) on a wet and a dry bank frame."""
    from nowcast_infill.io.frame_stats import frame_statistics

    bank, coverage = _frame_bank(n=1)
    out = {}
    for name, frame in (("wet", bank[0]), ("dry", np.zeros_like(bank[0]))):
        frame = np.where(coverage, frame, np.nan).astype(np.float32)
        started = time.perf_counter()
        for _ in range(repeats):
            frame_statistics(frame)
        out[name] = 1000 * (time.perf_counter() - started) / repeats
    return out


def measure_datamodule(store_path: str | Path, *, batches: int = 12, batch_size: int = 8, crop_size: int = 256,
                       scan_baseline: bool = False) -> dict:
    """Setup seconds, first-batch latency, training-crop samples/s and peak RSS (MiB) of this process.

    Run it in a fresh process (as `__main__` does) for a peak RSS that is the DataModule's alone.
    """
    from nowcast_infill.data.datamodule import RadarDataModule
    from nowcast_infill.io import frame_stats

    result: dict = {"store": str(store_path)}
    # Imports are a fixed cost of any start (xarray, pandas, dask and their plug-ins: ~1-5 s
    # on this loaded machine), not of the archive: timed apart so setup_s is what scales.
    started = time.perf_counter()
    import xarray  # noqa: F401
    from xarray.namedarray.parallelcompat import list_chunkmanagers

    list_chunkmanagers()
    result["imports_s"] = time.perf_counter() - started
    started = time.perf_counter()
    dm = RadarDataModule(store=store_path, task="nowcast", past=4, future=4, crop_size=crop_size, batch_size=batch_size,
                         num_workers=0, split={"fractions": [0.7, 0.15, 0.15], "gap": 12}, min_valid_fraction=0.05,
                         seed=0)
    dm.setup()
    result["setup_s"] = time.perf_counter() - started
    loader = dm.train_dataloader()
    started = time.perf_counter()
    it = iter(loader)
    next(it)
    result["first_batch_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(batches):
        next(it)
    result["samples_per_s"] = batches * batch_size / (time.perf_counter() - started)
    result["train_windows"] = len(dm.datasets["train"])
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if scan_baseline:
        started = time.perf_counter()
        frame_stats.stats_in_memory(store_path)
        result["scan_all_frames_s"] = time.perf_counter() - started
    return result


def _measure_in_fresh_process(store: Path, batches: int, scan_baseline: bool) -> dict:
    cmd = [sys.executable, __file__, "--measure", str(store), "--batches", str(batches)] + (["--scan-baseline"] if scan_baseline else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, nargs="+", default=[1, 7], help="store lengths in days (first = reference)")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds per store")
    parser.add_argument("--keep", type=Path, default=None, help="write the stores here and keep them")
    parser.add_argument("--scan-baseline", action="store_true")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure_datamodule(args.measure, batches=args.batches, scan_baseline=args.scan_baseline)))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_archive_dm-"))
    written, rounds = {}, []
    try:
        for days in args.days:
            store = root / f"synthetic_{days}d.zarr"
            if not store.exists():
                written[days] = write_store(store, days * FRAMES_PER_DAY)
                print(f"# wrote {days} d: {json.dumps(written[days])}", flush=True)
        # Rounds interleave the stores (order rotated), each measured in a fresh process, so
        # all see the same machine load; the table gives the median over rounds (min-max).
        for r in range(args.rounds):
            order = args.days[r % len(args.days):] + args.days[:r % len(args.days)]
            for days in order:
                store = root / f"synthetic_{days}d.zarr"
                got = _measure_in_fresh_process(store, args.batches, args.scan_baseline and r == 0 and days == args.days[0])
                rounds.append({"days": days, "round": r, **got})
                print(f"# round {r} {days} d: {json.dumps(rounds[-1])}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    keys = ("imports_s", "setup_s", "first_batch_s", "samples_per_s", "peak_rss_mib")
    rows = []
    for days in args.days:
        mine = [m for m in rounds if m["days"] == days]
        row = {"days": days, "frames": days * FRAMES_PER_DAY, "train_windows": mine[0]["train_windows"],
               **written.get(days, {})}
        for key in keys:
            values = sorted(m[key] for m in mine)
            row[key] = statistics.median(values)
            row[key + "_range"] = (values[0], values[-1])
        row.update({k: v for m in mine for k, v in m.items() if k == "scan_all_frames_s"})
        rows.append(row)
    ref = rows[0]

    def cell(r, key, fmt):
        lo, hi = r[key + "_range"]
        ratio = "" if r is ref else f" = {r[key] / ref[key]:.2f}x"
        return f"{r[key]:{fmt}} ({lo:{fmt}}-{hi:{fmt}}){ratio}"

    print(f"\n{args.rounds} rounds; median (min-max), ratio to the {ref['days']} d store")
    print("\n| store | frames | train windows | setup s | first batch s | samples/s | peak RSS MiB | imports s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['days']} d | {r['frames']} | {r['train_windows']} | {cell(r, 'setup_s', '.2f')} | "
              f"{cell(r, 'first_batch_s', '.2f')} | {cell(r, 'samples_per_s', '.1f')} | {cell(r, 'peak_rss_mib', '.0f')} | "
              f"{r['imports_s']:.2f} |")
    if written:
        print("\n| store | write frames/s (StoreWriter, 1 process, statistics included) | bytes/frame |\n|---|---|---|")
        for days, w in written.items():
            print(f"| {days} d | {w['frames_per_s']} | {w['bytes_per_frame']} |")
    if "scan_all_frames_s" in ref:
        per_frame = ref["scan_all_frames_s"] / ref["frames"]
        print(f"\nOne pass over every frame (the pre-statistics setup, per rank and start): {ref['scan_all_frames_s']:.1f} s "
              f"for {ref['frames']} frames = {1000 * per_frame:.1f} ms/frame; a year of YW (105,120 frames): "
              f"{per_frame * 105120 / 60:.0f} min.")
    cost = frame_stats_cost_ms()
    print(f"\nPer-frame statistics while writing (frame_statistics, 1100x900): {cost['wet']:.1f} ms a wet frame, "
          f"{cost['dry']:.1f} ms a dry one.")
    print("BENCH_ARCHIVE_DATAMODULE " + json.dumps({"rows": rows, "frame_stats_ms": cost}))


if __name__ == "__main__":
    main()
