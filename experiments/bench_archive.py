"""The archive case, measured: synthetic RADOLAN-size YW archives and their conversion.

    python experiments/bench_archive.py generate --days 1 --out /tmp/yw-1d
    python experiments/bench_archive.py convert --days 1 --work /tmp/ni-archive [--slurm]

`generate` writes DWD-like YW binary files (1100 x 900, mm per 5 min in 0.01 mm, 5-min
steps; the header laid out as a real DWD YW file's, pixels encoded here) in daily
`.tar.gz` bundles, as DWD ships them. The rain is advected smooth cells with small-scale
texture over about 15 % of the grid, with a no-data region outside the radar coverage
(about 38 %, as the real YW files in ../shared/data/radolan/yw).

`convert` converts that archive with one process (`convert`, workers=1), with N local
region writers (`ni-convert step=all tasks=N`: plan, N processes, finalise), and with
`--slurm`, as a 2-task Slurm array on the local cluster (slurm/convert_array.sbatch);
it prints frames/s, store bytes per frame, and a projection for a decade of YW
(1,051,200 frames) on 1, 8 and 64 array tasks from the measured per-process rate.

`write_synthetic_archive` is importable (the tests build their tiny archives with it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

YW_SHAPE = (1100, 900)
STEP_S = 300
FRAMES_PER_DAY = 86400 // STEP_S
DECADE_FRAMES = 1_051_200  # 10 x 365 days x 288 (leap days ignored)
# RADOLAN pixel flags (DWD format description; nowcast_infill/io/radolan.py).
NO_DATA_FLAG = 0x2000
# The sites of a real YW header (raa01-yw2017.002_10000-1708160055-dwd---bin).
YW_SITES = "boo,ros,emd,hnr,umd,pro,ess,fld,drs,neu,nhb,oft,eis,tur,isn,fbg,mem"


def encode_radolan(product: str, when: datetime, hundredths_mm: np.ndarray, no_data: np.ndarray,
                   precision: str = "E-02", interval_min: int = 5, version: str = "2017.002") -> bytes:
    """A RADOLAN binary composite: the DWD header text, 0x03, then little-endian uint16 pixels.

    hundredths_mm: (H, W) integers in the product's unit (0..4095), row 0 = southern edge.
    no_data: (H, W) bool, written as the 0x2000 flag. Header fields in the order and widths
    of a real DWD YW file: product, DDHHMM, site 10000, MMYY, BY (whole file), VS, SW, PR,
    INT, U, GP, MF, VR, MS (site list).
    """
    nrows, ncols = hundredths_mm.shape
    pixels = np.clip(hundredths_mm, 0, 0x0FFF).astype("<u2")
    pixels[no_data] = NO_DATA_FLAG
    body = pixels.tobytes()
    sites = f"<{YW_SITES}>"

    def header(total: int) -> str:
        return (f"{product}{when:%d%H%M}10000{when:%m%y}BY{total:7d}VS 3SW   2.18.3PR {precision}INT{interval_min:4d}U0"
                f"GP{nrows:4d}x{ncols:4d}MF 00000000VR{version}MS{len(sites):3d}{sites}")

    text = header(0)
    total = len(text) + 1 + len(body)
    text = header(total)
    assert len(text) + 1 + len(body) == total
    return text.encode("ascii") + b"\x03" + body


def dwd_name(product: str, when: datetime, version: str = "2017.002") -> str:
    """DWD's file name of a composite, e.g. raa01-yw2017.002_10000-1708160055-dwd---bin."""
    return f"raa01-{product.lower()}{version}_10000-{when:%y%m%d%H%M}-dwd---bin"


class RainField:
    """Advected smooth rain cells with texture, on a (H, W) grid, wet over about `wet_fraction` of the coverage.

    Two large smooth random fields (upsampled low-resolution noise) drift at different
    velocities and are blended with slowly turning weights, so cells move, grow and
    decay; a fine texture field gives the pixel-scale noise that sets compressibility.
    """

    def __init__(self, shape=YW_SHAPE, wet_fraction: float = 0.15, seed: int = 0, margin: int | None = None):
        from scipy import ndimage

        rng = np.random.default_rng(seed)
        self.shape = shape
        # room to drift before the windows wrap around (about 2.5 days at the velocities below)
        self.margin = margin = int(margin or max(shape))
        big = (shape[0] + margin, shape[1] + margin)

        def smooth(cell_px: int) -> np.ndarray:
            low = rng.standard_normal((big[0] // cell_px + 2, big[1] // cell_px + 2))
            return ndimage.zoom(low, cell_px, order=3)[: big[0], : big[1]].astype(np.float32)

        self.fields = [smooth(40), smooth(60)]
        self.texture = (1.0 + 0.25 * rng.standard_normal(big)).astype(np.float32)
        self.velocity = [(0.9, 1.6), (-0.5, 1.1)]  # pixels per step (about 10-20 km/h on a 1 km grid)
        sample = self.fields[0][: shape[0], : shape[1]]
        self.threshold = float(np.quantile(sample, 1.0 - wet_fraction))
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        # Coverage: an ellipse inside the grid (about 62 % of it); outside is no-data, as in a real composite.
        cy, cx = shape[0] * 0.5, shape[1] * 0.5
        self.no_data = ((yy - cy) / (0.47 * shape[0])) ** 2 + ((xx - cx) / (0.47 * shape[1])) ** 2 > 1.0

    def _window(self, field: np.ndarray, k: int, velocity) -> np.ndarray:
        h, w = self.shape
        dy = int(round(velocity[0] * k)) % self.margin
        dx = int(round(velocity[1] * k)) % self.margin
        return field[dy : dy + h, dx : dx + w]

    def frame(self, k: int) -> np.ndarray:
        """(H, W) int: YW depth of step k in 0.01 mm per 5 min (0 = dry)."""
        phase = 2 * np.pi * k / 97.0
        a = 0.5 + 0.5 * np.sin(phase)
        blend = a * self._window(self.fields[0], k, self.velocity[0]) + (1 - a) * self._window(self.fields[1], k, self.velocity[1])
        blend *= 1.0 / np.sqrt(a * a + (1 - a) * (1 - a))  # keep the blend's spread (and wet fraction) steady
        excess = np.maximum(blend - self.threshold, 0.0)
        # ~0-40 mm/h: 0.01 mm per 5 min units, textured at pixel scale
        depth = excess * 120.0 * self._window(self.texture, k, (0.0, 0.0))
        return np.rint(depth).astype(np.int32)


def write_synthetic_archive(folder: str | Path, days: float = 1.0, *, n_frames: int | None = None,
                            start: str = "2017-08-16T00:05", shape=YW_SHAPE, frames_per_bundle: int = FRAMES_PER_DAY,
                            seed: int = 0, compresslevel: int = 6, skip_steps=()) -> list[Path]:
    """Write a YW archive of `days` (or `n_frames`) 5-minute steps into daily `.tar.gz` bundles in `folder`.

    Each bundle `YW-<YYYYMMDD>.tar.gz` holds `frames_per_bundle` uncompressed DWD binary
    files named as DWD names them. `shape` other than 1100 x 900 needs
    importer.allow_nonstandard_grid=true to convert. `skip_steps`: step numbers left out
    (a missing file). Returns the bundle paths, in time order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    total = int(n_frames if n_frames is not None else round(days * FRAMES_PER_DAY))
    field = RainField(shape=shape, seed=seed)
    t0 = datetime.fromisoformat(start)
    bundles = []
    skip = set(skip_steps)
    for first in range(0, total, frames_per_bundle):
        day = t0 + timedelta(seconds=STEP_S * first)
        path = folder / f"YW-{day:%Y%m%d%H%M}.tar.gz"
        with tarfile.open(path, "w:gz", compresslevel=compresslevel) as tar:
            for k in range(first, min(first + frames_per_bundle, total)):
                if k in skip:
                    continue
                when = t0 + timedelta(seconds=STEP_S * k)
                blob = encode_radolan("YW", when, field.frame(k), field.no_data)
                info = tarfile.TarInfo(dwd_name("YW", when))
                info.size = len(blob)
                info.mtime = int(when.replace(tzinfo=timezone.utc).timestamp())
                tar.addfile(info, io.BytesIO(blob))
        bundles.append(path)
    return bundles


# ------------------------------------------------------------------ conversion measurements

def _store_bytes(store: Path) -> int:
    return sum(f.stat().st_size for f in store.rglob("*") if f.is_file())


def _ni_convert() -> list[str]:
    return [sys.executable, "-m", "nowcast_infill.cli.convert"]


def measure_single(bundles: list[Path], store: Path) -> dict:
    from nowcast_infill.io.convert import convert

    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    summary = convert([str(b) for b in bundles], store, source="radolan", workers=1, progress=False)
    seconds = time.perf_counter() - t
    return {"mode": "1 process (convert, workers=1)", "frames": summary["n_frames_written"], "seconds": seconds,
            "bytes_per_frame": _store_bytes(store) / max(1, summary["n_time_total"])}


def measure_local(bundles: list[Path], store: Path, processes: int) -> dict:
    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    out = subprocess.run([*_ni_convert(), "step=all", f"tasks={processes}", f"inputs=[{','.join(map(str, bundles))}]",
                          f"output={store}", "progress=false"], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - t
    summary = json.loads(out.stdout[out.stdout.index("{"):])
    return {"mode": f"{processes} local region writers (step=all tasks={processes})", "frames": summary["n_frames_written"],
            "seconds": seconds, "task_seconds": summary["task_seconds"], "task_cpu_seconds": summary["task_cpu_seconds"],
            "bytes_per_frame": _store_bytes(store) / max(1, summary["n_time_total"])}


def measure_slurm(bundles: list[Path], store: Path, tasks: int = 2) -> dict:
    """plan here, `tasks` array tasks through slurm/convert_array.sbatch (waited for), finalise here."""
    shutil.rmtree(store, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    subprocess.run([*_ni_convert(), "step=plan", f"tasks={tasks}", f"inputs=[{','.join(map(str, bundles))}]",
                    f"output={store}", "progress=false"], check=True, capture_output=True, env=env)
    subprocess.run(["sbatch", "--wait", f"--array=0-{tasks - 1}", "--cpus-per-task=1", "--gpus-per-node=0",
                    f"--output={store}.slurm-%a.out", str(REPO / "slurm" / "convert_array.sbatch"), str(store)],
                   check=True, capture_output=True, env=env)
    out = subprocess.run([*_ni_convert(), "step=finalise", f"output={store}"], check=True, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    summary = json.loads(out.stdout[out.stdout.index("{"):])
    return {"mode": f"{tasks} Slurm array tasks (local cluster)", "frames": summary["n_frames_written"], "seconds": seconds,
            "task_seconds": summary["task_seconds"], "task_cpu_seconds": summary["task_cpu_seconds"],
            "bytes_per_frame": _store_bytes(store) / max(1, summary["n_time_total"])}


def projection_table(per_process_fps: float, bytes_per_frame: float, input_bytes_per_frame: float,
                     fs_bandwidth_mb_s: float) -> str:
    """Markdown: hours for a decade of YW on 1, 8, 64 array tasks, capped by the shared file system's bandwidth."""
    rows = ["| array tasks | per-task rate (frames/s) | file-system cap (frames/s) | projected frames/s | decade of YW (hours) |",
            "|---|---|---|---|---|"]
    io_per_frame = bytes_per_frame + input_bytes_per_frame  # what the shared file system moves per frame
    cap = fs_bandwidth_mb_s * 1e6 / io_per_frame
    for tasks in (1, 8, 64):
        rate = min(tasks * per_process_fps, cap)
        rows.append(f"| {tasks} | {per_process_fps:.1f} | {cap:.0f} | {rate:.0f} | {DECADE_FRAMES / rate / 3600:.2f} |")
    return "\n".join(rows)


def profile_stages(bundle: Path, work: Path, n: int = 96) -> dict:
    """Seconds per frame of each stage of one region writer, on the first `n` members of `bundle`.

    stream: tar.gz decompression and member reads (bundles.work_items); decode: the RADOLAN
    importer (header checks, wradlib, mm/h, range check); write: Blosc-Zstd-1 encoding and
    the chunk file write (the same chunk writer the store uses).
    """
    import zarr

    from nowcast_infill.io.bundles import work_items
    from nowcast_infill.registry import get_method
    from nowcast_infill.io.store import whole_frame_chunk_writer
    from zarr.codecs import BloscCodec

    importer = get_method("source", "radolan")
    t = time.perf_counter()
    items = []
    for item in work_items([bundle]):
        items.append(item)
        if len(items) == n:
            break
    stream = time.perf_counter() - t
    t = time.perf_counter()
    frames = [importer.read_bytes(i.path, i.content)[0] for i in items]
    decode = time.perf_counter() - t
    target = work / "profile.zarr"
    shutil.rmtree(target, ignore_errors=True)
    array = zarr.create_array(target, shape=(n, *YW_SHAPE), chunks=(1, *YW_SHAPE), dtype=np.float32, fill_value=np.nan,
                              compressors=[BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")], zarr_format=3)
    write = whole_frame_chunk_writer(array)
    t = time.perf_counter()
    for k, f in enumerate(frames):
        write(k, f.precip)
    written = time.perf_counter() - t
    shutil.rmtree(target, ignore_errors=True)
    return {"stream": stream / n, "decode": decode / n, "write": written / n}


def _generate(args) -> list[Path]:
    out = Path(args.out)
    t = time.perf_counter()
    bundles = write_synthetic_archive(out, days=args.days)
    seconds = time.perf_counter() - t
    size = sum(b.stat().st_size for b in bundles)
    print(f"wrote {len(bundles)} bundle(s), {round(args.days * FRAMES_PER_DAY)} frames, {size / 1e6:.1f} MB "
          f"({size / (args.days * FRAMES_PER_DAY) / 1e3:.0f} kB per frame) to {out} in {seconds:.1f} s")
    return bundles


def _convert(args) -> None:
    work = Path(args.work)
    archive = work / f"yw-{args.days:g}d"
    bundles = sorted(archive.glob("YW-*.tar.gz"))
    if not bundles:
        args.out = archive
        bundles = _generate(args)
    input_bytes = sum(b.stat().st_size for b in bundles)
    results = [measure_single(bundles, work / "single.zarr")]
    for processes in args.processes:
        results.append(measure_local(bundles, work / f"local{processes}.zarr", processes))
    if args.slurm:
        results.append(measure_slurm(bundles, work / "slurm.zarr"))
    n = results[0]["frames"]
    print(f"\nConversion of a synthetic YW archive: {args.days:g} day(s), {n} frames of 1100 x 900 in "
          f"{len(bundles)} daily .tar.gz bundle(s) ({input_bytes / n / 1e3:.0f} kB per frame); "
          f"{platform.node()}, {os.cpu_count()} CPUs, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print("| mode | frames | seconds | frames/s | per-task seconds (wall / CPU) | store bytes per frame |")
    print("|---|---|---|---|---|---|")
    for r in results:
        tasks = ", ".join(f"{w:.1f} / {c:.1f}" for w, c in zip(r.get("task_seconds", []), r.get("task_cpu_seconds", []))) or "-"
        print(f"| {r['mode']} | {r['frames']} | {r['seconds']:.1f} | {r['frames'] / r['seconds']:.1f} | {tasks} | "
              f"{r['bytes_per_frame'] / 1e3:.0f} kB |")
    # The per-process rate: one region writer alone (its own task time, no plan / finalise).
    # CPU seconds, not wall: on a shared machine the wall time counts other users' load.
    one_task = results[1]["task_cpu_seconds"] if len(results) > 1 and args.processes[0] == 1 else None
    per_process = n / one_task[0] if one_task else n / results[0]["seconds"]
    print(f"\nProjection for a decade of YW ({DECADE_FRAMES:,} frames) from {per_process:.1f} frames/s per process, "
          f"a shared file system of {args.fs_bandwidth_mb_s:g} MB/s, input {input_bytes / n / 1e3:.0f} kB and store "
          f"{results[0]['bytes_per_frame'] / 1e3:.0f} kB per frame, one core per task (its CPU time), plan + finalise "
          "not counted:\n")
    print(projection_table(per_process, results[0]["bytes_per_frame"], input_bytes / n, args.fs_bandwidth_mb_s))
    _print_profile(bundles[0], work)


def _print_profile(bundle: Path, work: Path) -> None:
    stages = profile_stages(bundle, work)
    total = sum(stages.values())
    print("\nOne region writer, per frame (first 96 frames of the first bundle, stages run one after the other):\n")
    print("| stage | ms per frame | share |")
    print("|---|---|---|")
    for name, what in (("stream", "tar.gz decompression + member read"), ("decode", "RADOLAN decode to mm/h (wradlib, checks)"),
                       ("write", "Blosc-Zstd-1 encode + chunk file write")):
        print(f"| {what} | {stages[name] * 1e3:.1f} | {stages[name] / total:.0%} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a synthetic YW archive of daily .tar.gz bundles")
    gen.add_argument("--days", type=float, default=1.0, help="1 (a day), 7 (a week), 30 (a month)")
    gen.add_argument("--out", required=True)
    conv = sub.add_parser("convert", help="measure conversion frames/s and bytes per frame; print Markdown tables")
    conv.add_argument("--days", type=float, default=1.0)
    conv.add_argument("--work", default="/tmp/ni-bench-archive", help="folder for the archive (generated once) and stores")
    conv.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="local region-writer counts to measure")
    conv.add_argument("--slurm", action="store_true", help="also a 2-task array on the local Slurm cluster (sbatch on PATH)")
    conv.add_argument("--fs-bandwidth-mb-s", type=float, default=2000.0,
                      help="assumed aggregate bandwidth of the shared file system for the projection")
    prof = sub.add_parser("profile", help="per-frame time of each stage of one region writer")
    prof.add_argument("--days", type=float, default=1.0)
    prof.add_argument("--work", default="/tmp/ni-bench-archive")
    args = parser.parse_args(argv)
    if args.command == "generate":
        _generate(args)
    elif args.command == "profile":
        archive = Path(args.work) / f"yw-{args.days:g}d"
        bundles = sorted(archive.glob("YW-*.tar.gz"))
        if not bundles:
            args.out = archive
            bundles = _generate(args)
        _print_profile(bundles[0], Path(args.work))
    else:
        _convert(args)


if __name__ == "__main__":
    main()
