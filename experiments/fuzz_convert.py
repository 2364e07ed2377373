"""Fuzz `convert()` with damaged copies of real DWD RADOLAN files.

Each case is one real file (../shared/data/radolan) with one mutation: bytes replaced in
the pixel body or in the header, the file cut short, bytes appended, a header field
edited (GP with BY to another grid, BY, PR, INT, product, time), or a byte replaced in
or cut from its gzip stream. Each case is converted on its own into a new store by
`nowcast_infill.io.convert.convert` (in this process, one reader) and must end as one of

  refused                  ConversionError whose message names the file as it was given
  identical                a store equal to the unmutated file's
  identical_except_flipped equal except at the pixels whose bytes were replaced

"Equal" compares what the store says about the rain: `precip` (NaN = NaN), `time`,
`missing_frame`, and the attributes source_product, accumulation_interval_s,
conversion, zr_a/zr_b (not source_files, whose SHA-256 must differ, nor the radar
site list a damaged header may spell differently). Anything else is counted as
other_exception (another exception type, a ConversionError not naming the file, or a
store differing elsewhere); a case taking over 5 s counts as over_5s too.

Usage: python experiments/fuzz_convert.py [--cases 1000] [--seed 0] [--data DIR]
Prints a table of cases per mutation kind x outcome, the slowest case, and how long a
non-rain product (PG, as is and relabelled) takes to be refused; exit status 1
when a case ended as other_exception or over_5s. tests/test_fuzz_convert.py runs the
same generator on fewer cases.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_RADOLAN = Path(os.environ.get("NI_SHARED_DATA", REPO.parent / "shared" / "data")) / "radolan"
MAX_CASE_S = 5.0

KINDS = ("body_bytes", "header_byte", "truncate", "trailing_bytes", "edit_grid", "edit_BY", "edit_PR", "edit_INT",
         "edit_product", "edit_time", "gzip_byte", "gzip_truncate")
OUTCOMES = ("refused", "identical", "identical_except_flipped", "other_exception", "over_5s")
# Default sources: small national grids of four products (2-byte depths of two
# precisions, 1-byte reflectivity) and the 1100x900 YW with its U and VR fields.
DEFAULT_SOURCES = ("rw/raa01-rw_10000-1811220050-dwd---bin.gz", "ry/raa01-ry_10000-2001011530-dwd---bin.gz",
                   "misc/raa01-rx_10000-1408102050-dwd---bin.gz", "yw/raa01-yw2017.002_10000-1708160100-dwd---bin.gz",
                   "misc/raa01-rw_10000-1408102050-dwd---bin.gz", "showcase/raa01-rz_10000-1408102050-dwd---bin.gz")
_STORE_ATTRS = ("source_product", "accumulation_interval_s", "conversion", "zr_a", "zr_b")


@dataclass
class Source:
    """One unmutated file: its decompressed bytes, header length and reference store contents."""

    path: Path
    name: str  # the DWD name without .gz: the name every mutated copy keeps
    data: bytes
    header_end: int  # index of the 0x03 that ends the header
    bytes_per_pixel: int
    reference: dict = field(default_factory=dict)


@dataclass
class Case:
    kind: str
    source: Source
    data: bytes  # what the case file holds (gzip bytes for the gzip kinds)
    suffix: str  # "" or ".gz"
    flipped: frozenset[int] = frozenset()  # flat pixel indices whose bytes were replaced
    note: str = ""


def load_source(path: Path) -> Source:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    product = data[:2].decode()
    return Source(path=path, name=path.name.removesuffix(".gz"), data=data, header_end=data.index(b"\x03"),
                  bytes_per_pixel=1 if product in ("RX", "EX", "WX") else 2)


def _replace_field(header: str, pattern: str, new: str) -> str:
    """`header` with the first match of `pattern`'s group (the value) set to `new`, right-aligned in its width."""
    start, end = re.search(pattern, header).span(1)
    return header[:start] + new.rjust(end - start) + header[end:]


def _with_header(src: Source, header: str) -> bytes:
    return header.encode("ascii") + src.data[src.header_end:]


def mutate(src: Source, kind: str, rng: np.random.Generator) -> Case:
    """One mutated copy of `src` of the given kind, drawn with `rng`."""
    data, end = src.data, src.header_end
    header = data[:end].decode("ascii")
    if kind == "body_bytes":
        buf = bytearray(data)
        positions = rng.choice(np.arange(end + 1, len(data)), size=int(rng.integers(1, 4)), replace=False)
        for pos in positions:
            buf[pos] = (buf[pos] + int(rng.integers(1, 256))) % 256  # always a different byte
        pixels = frozenset(int((p - end - 1) // src.bytes_per_pixel) for p in positions)
        return Case(kind, src, bytes(buf), "", pixels, f"bytes {sorted(int(p) for p in positions)}")
    if kind == "header_byte":
        buf = bytearray(data)
        pos = int(rng.integers(0, end + 1))  # the 0x03 terminator included
        buf[pos] = (buf[pos] + int(rng.integers(1, 256))) % 256
        return Case(kind, src, bytes(buf), "", note=f"byte {pos} {data[pos]:#04x}->{buf[pos]:#04x}")
    if kind == "truncate":
        cut = int(rng.integers(0, end + 1)) if rng.random() < 0.3 else int(rng.integers(end + 1, len(data)))
        return Case(kind, src, data[:cut], "", note=f"cut at {cut} of {len(data)}")
    if kind == "trailing_bytes":
        extra = rng.integers(0, 256, size=int(rng.integers(1, 4097)), dtype=np.uint8).tobytes()
        return Case(kind, src, data + extra, "", note=f"{len(extra)} bytes appended")
    if kind == "edit_grid":
        # Another grid with BY edited to match it: the scrambled-grid case of issue #9.
        shape = tuple(int(v) for v in re.search(r"GP\s*(\d+)x\s*(\d+)", header).groups())
        grids = [g for g in ((900, 900), (1100, 900), (900, 1100), (450, 1800), (800, 900), (900, 899), (1500, 1400),
                             (200, 200)) if g != shape]
        rows, cols = grids[int(rng.integers(0, len(grids)))]
        edited = _replace_field(header, r"GP(\s*\d+x\s*\d+)", f"{rows:>4}x{cols:>4}")
        size = len(edited) + 1 + rows * cols * src.bytes_per_pixel
        edited = _replace_field(edited, r"BY(\s*\d+)", str(size))
        return Case(kind, src, _with_header(src, edited), "", note=f"GP {rows}x{cols} BY {size}")
    if kind == "edit_BY":
        old = int(re.search(r"BY(\s*\d+)", header)[1])
        new = old + int(rng.choice([-2, -1, 1, 2, 1000, -1000]))
        return Case(kind, src, _with_header(src, _replace_field(header, r"BY(\s*\d+)", str(new))), "", note=f"BY {new}")
    if kind == "edit_PR":
        old = re.search(r"PR(\s*E[+-]\d\d)", header)[1].strip()
        new = str(rng.choice([v for v in ("E-03", "E-02", "E-01", "E+00", "E+01", "E+20", "E+99") if v != old]))
        return Case(kind, src, _with_header(src, _replace_field(header, r"PR(\s*E[+-]\d\d)", new)), "", note=f"PR {new}")
    if kind == "edit_INT":
        old = int(re.search(r"INT(\s*\d+)", header)[1])
        new = int(rng.choice([v for v in (1, 5, 10, 15, 30, 60, 120, 1440) if v != old]))
        return Case(kind, src, _with_header(src, _replace_field(header, r"INT(\s*\d+)", str(new))), "", note=f"INT {new}")
    if kind == "edit_product":
        old = header[:2]
        new = str(rng.choice([v for v in ("PG", "PC", "PZ", "RD", "RW", "RH", "RY", "RZ", "YW", "RX", "SF", "XX", "rw")
                              if v != old]))
        return Case(kind, src, _with_header(src, new + header[2:]), "", note=f"product {new}")
    if kind == "edit_time":
        # DDHHMM at 2..8, MMYY at 13..17: move one part to another valid value.
        part = int(rng.integers(0, 4))
        span, choices = [((2, 4), range(1, 29)), ((4, 6), range(0, 24)), ((6, 8), range(0, 60, 5)), ((13, 15), range(1, 13))][part]
        old = int(header[span[0]:span[1]])
        new = int(rng.choice([v for v in choices if v != old]))
        edited = header[:span[0]] + f"{new:02d}" + header[span[1]:]
        return Case(kind, src, _with_header(src, edited), "", note=f"time chars {span} {old:02d}->{new:02d}")
    packed = gzip.compress(data, compresslevel=6, mtime=0)
    if kind == "gzip_byte":
        buf = bytearray(packed)
        pos = int(rng.integers(0, len(buf)))
        buf[pos] = (buf[pos] + int(rng.integers(1, 256))) % 256
        return Case(kind, src, bytes(buf), ".gz", note=f"gzip byte {pos} of {len(buf)}")
    if kind == "gzip_truncate":
        cut = int(rng.integers(0, len(packed)))
        return Case(kind, src, packed[:cut], ".gz", note=f"gzip cut at {cut} of {len(packed)}")
    raise ValueError(f"unknown mutation kind {kind!r}; use one of {', '.join(KINDS)}")


def generate(sources: list[Source], n_cases: int, seed: int) -> list[Case]:
    """`n_cases` cases, kinds in turn (equal counts), sources and mutations drawn from `seed`."""
    rng = np.random.default_rng(seed)
    return [mutate(sources[int(rng.integers(0, len(sources)))], KINDS[i % len(KINDS)], rng) for i in range(n_cases)]


def _store_contents(store: Path) -> dict:
    import xarray as xr

    with xr.open_zarr(store) as ds:
        return {"precip": ds["precip"].values, "time": ds["time"].values, "missing_frame": ds["missing_frame"].values,
                **{k: ds.attrs.get(k) for k in _STORE_ATTRS}}


def _convert(path: Path, store: Path) -> None:
    from nowcast_infill.io.convert import convert

    convert([path], store, "radolan", workers=1, progress=False)


def attach_reference(src: Source, workdir: Path) -> None:
    """Convert the unmutated file (under its DWD name, uncompressed) and keep its store's contents."""
    folder = workdir / f"reference-{src.name}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / src.name
    path.write_bytes(src.data)
    _convert(path, folder / "ref.zarr")
    src.reference = _store_contents(folder / "ref.zarr")
    shutil.rmtree(folder)


def run_case(case: Case, workdir: Path, index: int) -> tuple[str, float, str]:
    """(outcome, seconds, detail) of converting `case` into a new store under `workdir`."""
    from nowcast_infill.io.importers import ConversionError

    folder = workdir / f"case-{index:05d}"
    folder.mkdir(parents=True)
    path = folder / (case.source.name + case.suffix)
    path.write_bytes(case.data)
    store = folder / "out.zarr"
    started = time.perf_counter()
    try:
        _convert(path, store)
    except ConversionError as err:
        seconds = time.perf_counter() - started
        outcome = "refused" if str(path) in str(err) else "other_exception"
        detail = str(err).replace(str(path), "<file>")
    except Exception as err:  # the fuzz's point: anything but a ConversionError is a finding
        seconds = time.perf_counter() - started
        outcome, detail = "other_exception", f"{type(err).__name__}: {err}"
    else:
        seconds = time.perf_counter() - started
        outcome, detail = _compare(case, _store_contents(store))
    shutil.rmtree(folder)
    return outcome, seconds, detail


def _compare(case: Case, got: dict) -> tuple[str, str]:
    ref = case.source.reference
    for key in ("time", "missing_frame", *_STORE_ATTRS):
        if not np.array_equal(np.asarray(got[key]), np.asarray(ref[key])):
            return "other_exception", f"store differs in {key}: {got[key]!r} vs {ref[key]!r}"
    if got["precip"].shape != ref["precip"].shape:
        return "other_exception", f"precip shape {got['precip'].shape} vs {ref['precip'].shape}"
    same = (got["precip"] == ref["precip"]) | (np.isnan(got["precip"]) & np.isnan(ref["precip"]))
    differing = set(np.flatnonzero(~same).tolist())
    if not differing:
        return "identical", ""
    if differing <= case.flipped:
        return "identical_except_flipped", f"{len(differing)} pixel(s)"
    return "other_exception", f"{len(differing - case.flipped)} pixel(s) differ outside the replaced bytes"


def run(sources: list[Path], n_cases: int, seed: int, workdir: Path, log=print) -> tuple[Counter, float, list]:
    """Counts per (kind, outcome), the slowest case's seconds, and the failing cases' descriptions."""
    loaded = [load_source(p) for p in sources]
    for src in loaded:
        attach_reference(src, workdir)
    counts: Counter = Counter()
    slowest, failures = 0.0, []
    for i, case in enumerate(generate(loaded, n_cases, seed)):
        outcome, seconds, detail = run_case(case, workdir, i)
        counts[case.kind, outcome] += 1
        if seconds > MAX_CASE_S:
            counts[case.kind, "over_5s"] += 1
        slowest = max(slowest, seconds)
        if outcome == "other_exception" or seconds > MAX_CASE_S:
            failures.append(f"case {i} {case.kind} {case.source.name} ({case.note}): {outcome} in {seconds:.2f} s: {detail}")
            log(failures[-1])
    return counts, slowest, failures


def time_non_rain_refusal(data: Path, workdir: Path, repeats: int = 5) -> dict[str, float]:
    """Best-of-`repeats` seconds `RadolanImporter.read` takes to refuse a non-rain product.

    Two files: the showcase PG composite, and the first RW file of rw/ with its header's
    product set to PG (a body wradlib would decode as run-length code for half a minute).
    """
    from nowcast_infill.io.importers import ConversionError
    from nowcast_infill.registry import get_method

    rw = load_source(data / DEFAULT_SOURCES[0])
    relabelled = workdir / rw.name
    relabelled.write_bytes(b"PG" + rw.data[2:])
    files = {"showcase PG": data / "showcase" / "raa01-pg_10000-1408102045-dwd---bin.gz", "RW relabelled PG": relabelled}
    importer, best = get_method("source", "radolan"), {}
    for label, path in files.items():
        for _ in range(repeats):
            started = time.perf_counter()
            try:
                importer.read(path)
            except ConversionError:
                best[label] = min(best.get(label, np.inf), time.perf_counter() - started)
            else:
                raise AssertionError(f"{path} was not refused")
    return best


def format_table(counts: Counter) -> str:
    kinds = [k for k in KINDS if any(counts[k, o] for o in OUTCOMES)]
    widths = [max(len(o), 5) for o in OUTCOMES]
    lines = ["| kind | " + " | ".join(OUTCOMES) + " | cases |", "|---|" + "---:|" * (len(OUTCOMES) + 1)]
    for kind in kinds:
        row = [counts[kind, o] for o in OUTCOMES]
        lines.append(f"| {kind} | " + " | ".join(f"{v:>{w}}" for v, w in zip(row, widths))
                     + f" | {sum(row) - counts[kind, 'over_5s']} |")
    total = [sum(counts[k, o] for k in kinds) for o in OUTCOMES]
    lines.append("| **all** | " + " | ".join(f"{v:>{w}}" for v, w in zip(total, widths))
                 + f" | {sum(total) - total[-1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=SHARED_RADOLAN, help="folder holding rw/ ry/ misc/ yw/ showcase/")
    args = parser.parse_args(argv)
    sources = [args.data / rel for rel in DEFAULT_SOURCES]
    absent = [str(p) for p in sources if not p.is_file()]
    if absent:
        print(f"fuzz_convert: source file(s) absent: {', '.join(absent)}; pass --data DIR", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz_convert-") as tmp:
        counts, slowest, failures = run(sources, args.cases, args.seed, Path(tmp))
        elapsed = time.perf_counter() - started
        refusal = time_non_rain_refusal(args.data, Path(tmp))
    print(f"fuzz_convert: {args.cases} cases, seed {args.seed}, sources: {', '.join(p.name for p in sources)}")
    print(format_table(counts))
    print(f"slowest case: {slowest:.3f} s; all cases: {elapsed:.1f} s; findings: {len(failures)}")
    print("non-rain product refused in (best of 5): "
          + ", ".join(f"{label} {seconds * 1000:.2f} ms" for label, seconds in refusal.items()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
