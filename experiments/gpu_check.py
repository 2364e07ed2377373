"""GPU check: one bounded run that measures what BENCHMARKS.md needs from a GPU machine.

Run it through `experiments/gpu_check.sh` (which caps it at 8 minutes) on the first GPU
machine; it needs no downloads and prints Markdown tables to paste into BENCHMARKS.md,
headed with the device name:

1. **Training step time** of the partial-convolution U-Net (7 levels, 64-512 channels, the
   25.8 M-parameter net of the infilling `pconv`), per variant (pconv, lstm, attention,
   lstm_attention), at 256² and 512² crops, fp32 vs bf16 autocast, channels_last off/on,
   `torch.compile` off/on, with the peak memory of each cell. The matrix is bounded so that
   it fits: fp32/bf16 x channels_last off/on for `pconv`, fp32/bf16 for the others, and
   `torch.compile` (with channels_last off/on) only for `pconv` in bf16 at the largest crop,
   where the MFU goal is stated (compiling costs ~1 min a cell).
   A step = forward under autocast, masked MSE, backward, Adam step (bench_model.make_step);
   each cell is timed as the median of `--steps` steps after `--warmup` steps, with
   `torch.cuda.synchronize()` around each.
2. **Model FLOPs per step** (`torch.utils.flop_counter.FlopCounterMode` over one forward +
   backward: convolutions and matrix products, the partial convolutions' mask convolutions
   included) and **MFU** = FLOPs / step time / the device's dense bf16 peak, looked up from
   the device name (`PEAK_BF16_DENSE_TFLOPS`, or `--peak-tflops`).
3. **Largest batch that fits** for the 7-level net (pconv, bf16, 512²): doubling, then
   bisection, on `torch.cuda.OutOfMemoryError`.
4. **ni-infill throughput** on whole 900×900 (RADOLAN RW) and 1100×900 (YW) frames: the
   inference path of `ni-infill ckpt_path=...` (`CheckpointPredictor`: normalise, tile, run
   the network, blend, decode) with an untrained 7-level pconv; frames/s and the projected
   time for a year of RW (8,760 hourly frames) and of YW (105,120 five-minute frames). Every
   tile of the frame is computed (no hole-only shortcut): the upper bound of the work a frame
   can need. Measured as ni-infill runs (fp32) and under bf16 autocast (not an ni-infill
   option yet: what adding one would give).
5. **DDP over all visible GPUs** with `experiments/bench_scaling.py` (NCCL), when present.

A time budget (`--budget-s`, default 420 s) is checked before every cell: what does not fit
is reported as "skipped (time budget)", never silently dropped, and Ctrl-C (or the shell's
timeout) still prints the tables gathered so far.

`--dry-run` runs every code path on the CPU at tiny sizes in seconds (fp32 only: bf16
autocast and torch.compile are slow or unsupported there) so the test suite keeps the
script working before a GPU appears (tests/test_gpu_check.py).

Goals to check once measured (printed against the measurements): >= 35 % MFU for the
pconv variant in bf16 at 512², >= 100 infilled 900×900 frames/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import TASKS, VARIANTS, make_batch, make_step  # noqa: E402

SEVEN_LEVEL_CHANNELS = (64, 128, 256, 512, 512, 512, 512)
AUX_CHANNELS = 2
GOAL_MFU = 0.35
GOAL_INFILL_FPS = 100.0
# one year of frames: RADOLAN RW is hourly (900 x 900), YW every 5 minutes (1100 x 900)
FRAMES_PER_YEAR = {"RW": 365 * 24, "YW": 365 * 24 * 12}
FRAME_SHAPES = {"RW": (900, 900), "YW": (1100, 900)}

# Dense (no structured sparsity) bf16 tensor-core peak, TFLOP/s, from the vendor datasheets:
# NVIDIA H100 Tensor Core GPU datasheet (2023): H100 SXM 1,979 / H100 NVL 1,671 / H100 PCIe
#   1,513 TFLOPS "with sparsity" -> 989 / 835 / 756 dense;
# NVIDIA H200 Tensor Core GPU datasheet (2024): H200 SXM 1,979 with sparsity -> 989 dense
#   (GH200 superchip: the same Hopper GPU, 989);
# NVIDIA A100 Tensor Core GPU datasheet (2021): 312 (624 with sparsity), SXM and PCIe alike;
# NVIDIA L40S datasheet (2023): 362.05 (733 with sparsity); NVIDIA L40 datasheet: 181;
# NVIDIA L4 datasheet: 121 (242 with sparsity); NVIDIA A10 datasheet: 125 (250 with sparsity);
# NVIDIA HGX B200 (2024): 2.25 PFLOPS dense FP16/BF16 per GPU (4.5 with sparsity).
# Matched as substrings of torch.cuda.get_device_name(), first match wins (so the more
# specific names come first).
PEAK_BF16_DENSE_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),   # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),   # also "GH200"
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("B200", 2250.0),
]


def peak_bf16_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of `device_name` (TFLOP/s) from PEAK_BF16_DENSE_TFLOPS, None when unknown."""
    for key, tflops in PEAK_BF16_DENSE_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


# ----------------------------------------------------------------------------------------
# Measurement primitives
# ----------------------------------------------------------------------------------------
def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step: Callable[[], object], device: str, warmup: int, steps: int) -> tuple[float, float]:
    """(seconds of the warm-up steps together, median seconds of the `steps` timed ones)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warm_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return warm_s, statistics.median(times)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` as counted by torch.utils.flop_counter (a multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def largest_fitting(fits: Callable[[int], bool], start: int, cap: int) -> tuple[int, bool]:
    """Largest batch b <= cap with fits(b), assuming fits is monotone: double from `start`
    until a failure (or the cap), then bisect. Returns (b, hit_cap); b = 0 when even `start`
    fails."""
    if not fits(start):
        return 0, False
    good, bad = start, None
    while bad is None:
        trial = min(good * 2, cap)
        if trial == good:
            return good, True
        if fits(trial):
            good = trial
        else:
            bad = trial
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good, False


def build_net(variant: str, channels, device: str, channels_last: bool) -> torch.nn.Module:
    from nowcast_infill.models.components.unet import PConvUNet

    lstm, attention = VARIANTS[variant]
    t_in, t_out = TASKS["infill"]
    net = PConvUNet(t_in, t_out, aux_channels=AUX_CHANNELS if attention else 0, lstm=lstm, attention=attention,
                    encoder_channels=tuple(channels), task="infill").to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def batch_for(variant: str, batch: int, crop: int, device: str) -> dict:
    """Random infill inputs (bench_model.make_batch); with a channels_last net the convolutions
    pick channels_last from the weights, so the 5-D inputs stay as they are."""
    _, attention = VARIANTS[variant]
    t_in, t_out = TASKS["infill"]
    return make_batch(batch, t_in, t_out, crop, AUX_CHANNELS if attention else 0, device)


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA OOM, including cuDNN/cuBLAS allocation failures raised as plain RuntimeErrors."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "ALLOC_FAILED" in text)


# ----------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------
@dataclass
class StepCell:
    variant: str
    crop: int
    batch: int
    dtype: str
    channels_last: bool
    compiled: bool
    step_ms: float = float("nan")
    warmup_s: float = float("nan")
    peak_gib: float = float("nan")
    flops: float = float("nan")
    mfu: float = float("nan")
    note: str = ""


@dataclass
class Report:
    device: str
    device_name: str
    peak_tflops: float | None
    dry_run: bool
    cells: list[StepCell] = field(default_factory=list)
    largest_batch: dict = field(default_factory=dict)
    infill: list[dict] = field(default_factory=list)
    ddp: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Budget:
    """Wall-clock budget of the whole check; `left()` in seconds."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def step_matrix(args) -> list[StepCell]:
    """The bounded matrix of step-time cells (see the module docstring)."""
    dtypes = ["fp32", "bf16"] if args.bf16 else ["fp32"]
    cells = []
    for variant in args.variants:
        for crop in args.crops:
            for dtype in dtypes:
                for channels_last in ([False, True] if variant == "pconv" else [False]):
                    cells.append(StepCell(variant, crop, args.batch, dtype, channels_last, False))
    # torch.compile costs ~1 min a cell: only where the MFU goal is stated (pconv, the
    # largest crop, bf16 when measured), and last, so the time budget cuts these first
    compile_dtype = "bf16" if args.bf16 else "fp32"
    if args.compile and "pconv" in args.variants:
        cells += [StepCell("pconv", max(args.crops), args.batch, compile_dtype, channels_last, True)
                  for channels_last in (False, True)]
    return cells


def measure_cell(cell: StepCell, args, flops_cache: dict) -> None:
    """Fill `cell` with its step time, peak memory, FLOPs and MFU (in place)."""
    device = args.device
    net = build_net(cell.variant, args.channels, device, cell.channels_last)
    data = batch_for(cell.variant, cell.batch, cell.crop, device)
    key = (cell.variant, cell.crop, cell.batch)
    if key not in flops_cache:
        # FLOPs do not depend on dtype, layout or compilation: counted once, uncompiled
        flops_cache[key] = count_flops(make_step(net, data, device, bf16=False))
    cell.flops = flops_cache[key]
    model = torch.compile(net) if cell.compiled else net
    step = make_step(model, data, device, bf16=cell.dtype == "bf16")
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    cell.warmup_s, step_s = time_steps(step, device, args.warmup, args.steps)
    cell.step_ms = step_s * 1e3
    if cuda:
        cell.peak_gib = torch.cuda.max_memory_allocated() / 2**30
    if args.peak_tflops:
        cell.mfu = cell.flops / step_s / (args.peak_tflops * 1e12)


def run_step_cells(report: Report, args, budget: Budget) -> None:
    flops_cache: dict = {}
    for cell in step_matrix(args):
        report.cells.append(cell)
        # a compiled cell also pays for compilation: it needs more room than an eager one
        needed = args.cell_reserve_s * (4 if cell.compiled else 1)
        if budget.left() < needed + args.tail_reserve_s:
            cell.note = "skipped (time budget)"
            continue
        try:
            measure_cell(cell, args, flops_cache)
        except Exception as err:  # a failing cell (OOM, compile) must not hide the others
            cell.note = "out of memory" if is_out_of_memory(err) else f"failed: {type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''}"
        finally:
            free_memory(args.device)
        log(f"step {cell.variant} {cell.crop} {cell.dtype} cl={cell.channels_last} compile={cell.compiled}: "
            f"{cell.step_ms:.1f} ms {cell.note}")


def free_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_largest_batch(report: Report, args, budget: Budget) -> None:
    """Binary search of the largest batch of the 7-level pconv (bf16 on GPU) that trains."""
    crop, device = max(args.crops), args.device
    bf16 = args.bf16
    # no cuDNN autotuning per batch size: it costs time and its workspaces blur the OOM edge
    benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
    tries: list[tuple[int, bool]] = []

    def fits(batch: int) -> bool:
        if budget.left() < args.tail_reserve_s:
            raise TimeoutError
        net = build_net("pconv", args.channels, device, channels_last=False)
        try:
            step = make_step(net, batch_for("pconv", batch, crop, device), device, bf16=bf16)
            step()
            synchronize(device)
            ok = True
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            ok = False
        finally:
            del net
            free_memory(device)
        tries.append((batch, ok))
        return ok

    result = {"crop": crop, "dtype": "bf16" if bf16 else "fp32", "cap": args.max_batch_cap}
    try:
        batch, hit_cap = largest_fitting(fits, args.batch_search_start, args.max_batch_cap)
        result.update(batch=batch, hit_cap=hit_cap)
    except TimeoutError:
        good = max([b for b, ok in tries if ok], default=0)
        result.update(batch=good, hit_cap=False, note="search stopped by the time budget: a lower bound")
    torch.backends.cudnn.benchmark = benchmark
    result["tries"] = tries
    report.largest_batch = result
    log(f"largest batch: {result}")


def build_infill_predictor(args):
    """A CheckpointPredictor (the ni-infill network path) around an untrained 7-level pconv."""
    from nowcast_infill.checkpoint_io import TrainedTask
    from nowcast_infill.data.normalization import Normalizer
    from nowcast_infill.inference.checkpoint import CheckpointPredictor
    from nowcast_infill.training.module import RadarModule

    t_in, t_out = TASKS["infill"]
    module = RadarModule(
        net={"_target_": "nowcast_infill.models.components.unet.PConvUNet", "encoder_channels": list(args.channels),
             "lstm": False, "attention": False},
        task="infill", in_frames=t_in, out_frames=t_out, aux_channels=0,
        loss={"name": "infill", "preset": "valid_hole", "distance": "l2"}, name="pconv",
    )
    # statistics of an exponential rain field, as ni-train would fit them on a store
    rng = np.random.default_rng(0)
    normalizer = Normalizer().fit(rng.exponential(1.0, size=(4, 64, 64)).astype(np.float32))
    module.attach_normalizer(normalizer)
    return CheckpointPredictor(module, normalizer, task=TrainedTask("infill", t_in, t_out), tile=args.infill_tile, overlap=args.infill_tile // 4,
                               multiple=module.net.size_multiple, batch_size=args.infill_batch, aux_names=[], device=args.device,
                               path=Path("untrained-7-level-pconv.ckpt"))


def run_infill(report: Report, args, budget: Budget) -> None:
    """Frames/s of the ni-infill network path per product: as ni-infill runs it (fp32), and
    under bf16 autocast (what an autocast option in ni-infill would give; not in ni-infill yet)."""
    import contextlib

    predictor = build_infill_predictor(args)
    rng = np.random.default_rng(1)
    precisions = ["fp32", "bf16 autocast"]
    for product, (ny, nx) in FRAME_SHAPES.items():
        ny, nx = (ny // args.infill_downscale, nx // args.infill_downscale)
        # three frames (context 1) of exponential rain with NaN holes (~10 % of pixels)
        frames = rng.exponential(1.0, size=(3, ny, nx)).astype(np.float32)
        frames[rng.random(frames.shape) < 0.1] = np.nan
        for precision in precisions:
            row = {"product": product, "shape": f"{ny}x{nx}", "precision": precision, "tile": args.infill_tile,
                   "tile_batch": args.infill_batch}
            report.infill.append(row)
            if budget.left() < args.cell_reserve_s + args.tail_reserve_s:
                row["note"] = "skipped (time budget)"
                continue
            autocast = (torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
                        if precision.startswith("bf16") else contextlib.nullcontext())
            with autocast:
                predictor(frames)  # warm-up: cuDNN autotuning, allocator
                synchronize(args.device)
                start = time.perf_counter()
                for _ in range(args.infill_frames):
                    predictor(frames)
                synchronize(args.device)
            fps = args.infill_frames / (time.perf_counter() - start)
            row.update(frames=args.infill_frames, fps=fps, year_hours=FRAMES_PER_YEAR[product] / fps / 3600)
            log(f"infill {product} {ny}x{nx} {precision}: {fps:.2f} frames/s")
    del predictor
    free_memory(args.device)


def run_ddp(report: Report, args, budget: Budget) -> None:
    """DDP throughput over every visible GPU through experiments/bench_scaling.py (when present)."""
    script = REPO_ROOT / "experiments" / "bench_scaling.py"
    if not script.is_file():
        report.ddp = {"note": "skipped: experiments/bench_scaling.py is not in this checkout"}
        return
    seconds = int(min(budget.left() - 10, 90 if args.dry_run else 1e9))
    if seconds < 30:
        report.ddp = {"note": "skipped (time budget)"}
        return
    if args.dry_run:
        cmd = [sys.executable, str(script), "--dry-run", "--accelerator", "cpu", "--backend", "gloo", "--procs", "1",
               "--no-nodes2"]
    else:
        gpus = max(torch.cuda.device_count(), 1)
        procs = "1" if gpus == 1 else f"1,{gpus}"
        cmd = [sys.executable, str(script), "--accelerator", "gpu", "--backend", "nccl", "--procs", procs,
               "--no-nodes2", "--variants", "pconv", "--mode", "weak", "--batch", str(args.batch), "--crop", "256",
               "--net-channels", ",".join(map(str, args.channels)), "--precision", "bf16-mixed", "--steps", "10"]
    report.ddp = {"command": " ".join(cmd[1:])}
    try:
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=seconds)
        report.ddp.update(returncode=done.returncode, output=done.stdout[-4000:], stderr=done.stderr[-2000:])
    except subprocess.TimeoutExpired:
        report.ddp["note"] = f"stopped after {seconds} s (time budget)"


# ----------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------
def _num(value: float, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


STEP_COLUMNS = ["variant", "crop", "batch", "dtype", "channels_last", "compile", "step ms", "warm-up s",
                "peak GiB", "GFLOP/step", "TFLOP/s", "MFU", "note"]


def step_table(cells: list[StepCell]) -> str:
    from nowcast_infill.utils.tables import markdown_table

    rows = []
    for c in cells:
        achieved = c.flops / (c.step_ms / 1e3) / 1e12 if c.step_ms == c.step_ms and c.flops == c.flops else float("nan")
        rows.append(dict(zip(STEP_COLUMNS, [
            c.variant, f"{c.crop}²", c.batch, c.dtype, "on" if c.channels_last else "off", "on" if c.compiled else "off",
            _num(c.step_ms, ".1f"), _num(c.warmup_s, ".1f"), _num(c.peak_gib, ".2f"), _num(c.flops / 1e9, ".4g"),
            _num(achieved, ".3g"), _num(100 * c.mfu, ".3g") + (" %" if c.mfu == c.mfu else ""), c.note])))
    return markdown_table(rows, STEP_COLUMNS)


def infill_table(rows: list[dict]) -> str:
    from nowcast_infill.utils.tables import markdown_table

    out = [{"product": r["product"], "frame": r["shape"], "precision": r["precision"],
            "tile (batch)": f"{r['tile']} ({r['tile_batch']})", "frames/s": _num(r.get("fps"), ".2f"),
            "one year": (f"{FRAMES_PER_YEAR[r['product']]:,} frames: {_num(r.get('year_hours'), '.2f')} h"),
            "note": r.get("note", "")} for r in rows]
    return markdown_table(out, ["product", "frame", "precision", "tile (batch)", "frames/s", "one year", "note"])


def goals(report: Report) -> list[str]:
    """Goal vs measured, one line each."""
    best = [c for c in report.cells if c.variant == "pconv" and c.dtype == "bf16" and c.crop == 512
            and c.mfu == c.mfu]
    if best:
        top = max(best, key=lambda c: c.mfu)
        mfu_line = (f"MFU, pconv bf16 512²: goal >= {100 * GOAL_MFU:.0f} %, measured {100 * top.mfu:.1f} % "
                    f"(channels_last {'on' if top.channels_last else 'off'}, compile {'on' if top.compiled else 'off'}) "
                    f"-> {'met' if top.mfu >= GOAL_MFU else 'NOT met'}")
    else:
        mfu_line = (f"MFU, pconv bf16 512²: goal >= {100 * GOAL_MFU:.0f} %, not measured "
                    f"({'dry run' if report.dry_run else 'no bf16 512² cell with a known peak'})")
    rw = {r["precision"]: r for r in report.infill if r["product"] == "RW" and "fps" in r}
    if rw and not report.dry_run:
        measured = ", ".join(f"{precision} {r['fps']:.1f}" for precision, r in rw.items())
        as_is = rw.get("fp32")
        verdict = "not measured" if as_is is None else ("met" if as_is["fps"] >= GOAL_INFILL_FPS else "NOT met")
        fps_line = (f"ni-infill 900x900: goal >= {GOAL_INFILL_FPS:.0f} frames/s, measured {measured} -> "
                    f"{verdict} by ni-infill as it is (fp32)")
    else:
        fps_line = (f"ni-infill 900x900: goal >= {GOAL_INFILL_FPS:.0f} frames/s, not measured "
                    f"({'dry run: reduced frames' if report.dry_run else 'skipped'})")
    return [mfu_line, fps_line]


def render(report: Report, args, elapsed_s: float) -> str:
    peak = f"{report.peak_tflops:g} TFLOP/s dense bf16" if report.peak_tflops else "unknown (pass --peak-tflops)"
    title = f"## GPU check: {report.device_name}" + (" (DRY RUN on CPU: tiny sizes, numbers meaningless)" if report.dry_run else "")
    lines = [
        title, "",
        f"- device: {report.device_name} ({report.device}); peak used for MFU: {peak}",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else '–'}; "
        f"GPUs visible: {torch.cuda.device_count()}",
        f"- net: PConvUNet infill (3 frames in, 1 out), encoder channels {list(args.channels)}; aux "
        f"{AUX_CHANNELS} fields for the attention variants",
        f"- command: `experiments/gpu_check.sh {' '.join(args.argv)}`; wall time {elapsed_s:.0f} s",
        "", "### Training step", "",
        f"Median of {args.steps} steps after {args.warmup} warm-up steps (compile included in the warm-up); step = "
        "forward (autocast), masked MSE, backward, Adam. GFLOP/step from FlopCounterMode (forward + backward); "
        "MFU = GFLOP/step / step time / peak.", "",
        step_table(report.cells), "",
        f"### Largest batch (pconv, {len(args.channels)} levels)", "",
    ]
    lb = report.largest_batch
    if lb:
        cap = f" (the search cap {lb['cap']}: may fit more)" if lb.get("hit_cap") else ""
        note = f" {lb['note']}." if lb.get("note") else ""
        lines.append(f"{lb['dtype']}, {lb['crop']}² crops: **{lb['batch']}**{cap}.{note} Tries (batch, fits): {lb['tries']}")
    else:
        lines.append("not run")
    lines += ["", "### ni-infill throughput (whole frames, every tile computed)", "", infill_table(report.infill), "",
              "### DDP over all visible GPUs (experiments/bench_scaling.py)", ""]
    ddp = report.ddp
    if "note" in ddp and "returncode" not in ddp:
        lines.append(ddp["note"])
    elif ddp:
        lines.append(f"`{ddp.get('command', '')}` -> exit {ddp.get('returncode', '?')}. {ddp.get('note', '')}")
        tail = ddp.get("output", "").strip()
        if tail:
            lines += ["", tail if "|" in tail else "```\n" + tail[-2000:] + "\n```"]
        if ddp.get("returncode"):
            lines += ["", "```\n" + ddp.get("stderr", "")[-1500:] + "\n```"]
    lines += ["", "### Goals", "", *[f"- {g}" for g in goals(report)], *[f"- {n}" for n in report.notes]]
    return "\n".join(lines) + "\n"


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, tiny fixed sizes (overriding the size options), fp32, no compile: checks every code path")
    p.add_argument("--budget-s", type=float, default=420.0, help="time budget of the whole check (s)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--crops", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batch", type=int, default=8, help="batch of the step-time cells")
    p.add_argument("--steps", type=int, default=10, help="timed steps per cell")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps per cell")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="fp32 cells only")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="no torch.compile cells")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU; default: from the device name")
    p.add_argument("--batch-search-start", type=int, default=16)
    p.add_argument("--max-batch-cap", type=int, default=512)
    p.add_argument("--infill-tile", type=int, default=256, help="ni-infill tile edge (px)")
    p.add_argument("--infill-batch", type=int, default=16, help="ni-infill tiles per forward pass")
    p.add_argument("--infill-frames", type=int, default=20, help="frames timed per product")
    p.add_argument("--no-ddp", dest="ddp", action="store_false", help="skip the bench_scaling.py DDP run")
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.channels = SEVEN_LEVEL_CHANNELS
    args.infill_downscale = 1
    # seconds kept free for one more cell, and for the infill/DDP sections and the tables
    args.cell_reserve_s, args.tail_reserve_s = 15.0, 90.0
    if args.dry_run:
        args.device = "cpu"
        # one thread: the dry run is a check of the code, and threads only contend on a shared CPU
        torch.set_num_threads(1)
        args.channels = (4, 8, 8)
        args.crops, args.batch, args.steps, args.warmup = [16, 32], 2, 1, 1
        args.bf16, args.compile = False, False
        args.batch_search_start, args.max_batch_cap = 1, 4
        args.infill_tile, args.infill_batch, args.infill_frames, args.infill_downscale = 48, 8, 1, 10
        args.cell_reserve_s, args.tail_reserve_s = 1.0, 5.0
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA device visible; run it on a GPU machine, or with --dry-run on a CPU.")
        args.device = "cuda"
    return args


def main(argv: list[str] | None = None) -> Report:
    args = parse_args(argv)
    started = time.perf_counter()
    budget = Budget(args.budget_s)
    torch.manual_seed(0)
    if args.device == "cuda":
        name = torch.cuda.get_device_name(0)
        torch.backends.cudnn.benchmark = True
    else:
        import platform

        name = f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    if args.peak_tflops is None:
        args.peak_tflops = peak_bf16_tflops(name)
    report = Report(args.device, name, args.peak_tflops, args.dry_run)
    if args.peak_tflops is None:
        report.notes.append(f"no dense bf16 peak known for '{name}': MFU not computed (pass --peak-tflops)")
    try:
        run_step_cells(report, args, budget)
        run_largest_batch(report, args, budget)
        run_infill(report, args, budget)
        if args.ddp:
            run_ddp(report, args, budget)
        else:
            report.ddp = {"note": "skipped (--no-ddp)"}
    except KeyboardInterrupt:
        report.notes.append("interrupted (Ctrl-C or the 8-minute timeout of gpu_check.sh): the tables are partial")
    print(render(report, args, time.perf_counter() - started), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=1, default=str))
    return report


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
