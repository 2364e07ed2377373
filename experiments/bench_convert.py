"""Conversion speed: `convert()` of the 12 YW + 24 RW RADOLAN files vs a bare wradlib read.

Both sides read the same files in one process (convert with `--workers`, default 1),
interleaved pair by pair after one warm-up pair, so both see the same machine load;
the output store is deleted outside the timed region. Prints each pair, the median
and spread, and as its last line `convert_vs_wradlib_ratio=<median>` (goal <= 1.3).
Usage: python experiments/bench_convert.py [--repeats 5] [--workers 1] [--chunks 1,256,256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NI_SHARED_DATA", REPO.parent / "shared" / "data"))


def bare_read(files: list[Path]) -> float:
    import wradlib

    start = time.perf_counter()
    for path in files:
        data, _ = wradlib.io.read_radolan_composite(str(path))
        np.asarray(data).sum()  # make sure the values were decoded
    return time.perf_counter() - start


def timed_convert(groups: dict[str, list[Path]], workdir: Path, workers: int, chunks: dict) -> float:
    from nowcast_infill.io.convert import convert

    outs = {name: workdir / f"{name}.zarr" for name in groups}
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    for name, files in groups.items():
        convert(files, outs[name], "radolan", workers=workers, chunks=chunks, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chunks", default="1,256,256", help="time,y,x chunk sizes of precip")
    args = parser.parse_args()
    chunks = dict(zip(("time", "y", "x"), map(int, args.chunks.split(","))))
    groups = {p: sorted((SHARED / "radolan" / p).glob("*")) for p in ("yw", "rw")}
    if len(groups["yw"]) != 12 or len(groups["rw"]) != 24:
        raise SystemExit(f"expected 12 YW and 24 RW files under {SHARED / 'radolan'}, found "
                         f"{len(groups['yw'])} and {len(groups['rw'])}")
    files = groups["yw"] + groups["rw"]
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        workdir = Path(tmp)
        bare_read(files[:2]), timed_convert({"warm": groups["yw"][:2]}, workdir, args.workers, chunks)
        reads, converts = [], []
        for _ in range(args.repeats):
            reads.append(bare_read(files))
            converts.append(timed_convert(groups, workdir, args.workers, chunks))
            print(f"bare read {reads[-1]:.3f} s  convert {converts[-1]:.3f} s  ratio {converts[-1] / reads[-1]:.2f}", flush=True)
    ratios = sorted(c / r for c, r in zip(converts, reads))
    n = len(files)
    print(f"frames {n}, workers {args.workers}, chunks {chunks}, load average {os.getloadavg()[0]:.1f}")
    print(f"bare read: median {statistics.median(reads):.3f} s ({n / statistics.median(reads):.1f} frames/s)")
    print(f"convert:   median {statistics.median(converts):.3f} s ({n / statistics.median(converts):.1f} frames/s)")
    print(f"ratio: median {statistics.median(ratios):.2f}, min {ratios[0]:.2f}, max {ratios[-1]:.2f} (goal <= 1.3)")
    print(f"convert_vs_wradlib_ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
