"""Conversion speed: `convert()` of the 12 YW + 24 RW RADOLAN files vs a bare wradlib read.

Both sides read the same files in one process (convert with `--workers`, default 1),
interleaved pair by pair after one warm-up pair, so both see the same machine load;
the output store is deleted outside the timed region. Prints each pair, the median
and spread, and as its last line `convert_vs_wradlib_ratio=<median>` (goal <= 1.3).
Usage: python experiments/bench_convert.py [--repeats 5] [--workers 1] [--chunks 1,256,256] [--shards 1,0,0|none]
(shard sizes time,y,x; 0 = the whole grid; default: the store's default layout).
experiments/bench_data.py reuses `bare_read`, `timed_convert` and `radolan_groups`.
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


def timed_convert(groups: dict[str, list[Path]], workdir: Path, workers: int, chunks: dict | None,
                  shards: dict | None | str = "default") -> float:
    """Seconds to convert each group of files into its own new store `workdir/<group>.zarr`.

    shards: as `convert(shards=...)`; "default" leaves the store's default layout.
    """
    from nowcast_infill.io.convert import convert

    layout = {"chunks": chunks} if shards == "default" else {"chunks": chunks, "shards": shards}
    outs = {name: workdir / f"{name}.zarr" for name in groups}
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    for name, files in groups.items():
        convert(files, outs[name], "radolan", workers=workers, progress=False, **layout)
    return time.perf_counter() - start


def radolan_groups() -> dict[str, list[Path]]:
    """The 12 YW and 24 RW files of ../shared/data/radolan; exits naming the folder when they are not there."""
    groups = {p: sorted((SHARED / "radolan" / p).glob("*")) for p in ("yw", "rw")}
    if len(groups["yw"]) != 12 or len(groups["rw"]) != 24:
        raise SystemExit(f"expected 12 YW and 24 RW files under {SHARED / 'radolan'} (set NI_SHARED_DATA), found "
                         f"{len(groups['yw'])} and {len(groups['rw'])}")
    return groups


def parse_sizes(text: str) -> dict:
    """'1,256,256' -> {'time': 1, 'y': 256, 'x': 256}; a 0 becomes None (the whole grid)."""
    return {dim: (int(v) or None) for dim, v in zip(("time", "y", "x"), text.split(","))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chunks", default="1,256,256", help="time,y,x chunk sizes of precip")
    parser.add_argument("--shards", default="default", help="time,y,x shard sizes (0 = whole grid), 'none' or 'default'")
    args = parser.parse_args()
    chunks = parse_sizes(args.chunks)
    shards = args.shards if args.shards == "default" else None if args.shards == "none" else parse_sizes(args.shards)
    groups = radolan_groups()
    files = groups["yw"] + groups["rw"]
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        workdir = Path(tmp)
        bare_read(files[:2]), timed_convert({"warm_yw": groups["yw"][:2], "warm_rw": groups["rw"][:2]}, workdir, args.workers, chunks, shards)
        reads, converts = [], []
        for _ in range(args.repeats):
            reads.append(bare_read(files))
            converts.append(timed_convert(groups, workdir, args.workers, chunks, shards))
            print(f"bare read {reads[-1]:.3f} s  convert {converts[-1]:.3f} s  ratio {converts[-1] / reads[-1]:.2f}", flush=True)
    ratios = sorted(c / r for c, r in zip(converts, reads))
    n = len(files)
    print(f"frames {n}, workers {args.workers}, chunks {chunks}, shards {shards}, load average {os.getloadavg()[0]:.1f}")
    print(f"bare read: median {statistics.median(reads):.3f} s ({n / statistics.median(reads):.1f} frames/s)")
    print(f"convert:   median {statistics.median(converts):.3f} s ({n / statistics.median(converts):.1f} frames/s)")
    print(f"ratio: median {statistics.median(ratios):.2f}, min {ratios[0]:.2f}, max {ratios[-1]:.2f} (goal <= 1.3)")
    print(f"convert_vs_wradlib_ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
