"""Benchmark of the partial-convolution U-Net (issue 3, results in BENCHMARKS.md).

1. Training step (forward, masked MSE, backward, Adam step) of ``PConvUNet`` against the
   same network built from the naive full-mask-convolution reference
   (``naive_partial_conv=True``), same weights and inputs, interleaved (the order inside
   each pair alternates) and repeated; the median of the per-pair time ratios is printed
   as the last line, ``pconv_vs_naive_step_ratio=<x>``. Default: 7 layers, 64-512 channels,
   256x256, batch 4, infill (3 frames in, 1 out). A third network in the same pairs, the
   same U-Net with *no* mask path at all (plain convolutions: ``MaskFreeConv2d``), gives the
   floor any partial-convolution layer could reach: ``maskfree_vs_naive_step_ratio``.
2. Parameters, step time and peak memory of the four variants for both tasks at a small
   size. Each variant runs in a fresh subprocess so that its peak is its own: on CPU the
   peak is the resident-set high-water mark during the timed steps minus the resident set
   before them (Linux ``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``);
   on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated before.

Usage::

    python experiments/bench_model.py                  # full comparison (minutes on 2 cores)
    python experiments/bench_model.py --quick          # tiny sizes, seconds
    python experiments/bench_model.py --device cuda --bf16 --channels-last
    python experiments/bench_model.py --profile        # where one step of ours spends its time
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nowcast_infill.models.components.partial_conv import PartialConv2d  # noqa: E402
from nowcast_infill.models.components.unet import PConvUNet  # noqa: E402
from nowcast_infill.study import VARIANT_NET_SWITCHES  # noqa: E402


class MaskFreeConv2d(PartialConv2d):
    """The cost floor of a partial convolution: the data convolution alone (plus bias),
    with no mask arithmetic; the returned mask is all ones. Not a partial convolution:
    its outputs differ; only its time is of interest."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.nn.functional.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return out, out.new_ones(out.shape[0], 1, *out.shape[2:])

# variant -> (lstm, attention) U-Net switches, in the study's order
VARIANTS = {name: (switches["lstm"], switches["attention"]) for name, switches in VARIANT_NET_SWITCHES.items()}
TASKS = {"infill": (3, 1), "nowcast": (4, 6)}


def make_batch(batch: int, t_in: int, t_out: int, size: int, aux_channels: int, device: str, seed: int = 0):
    """Random normalised inputs with ~30 % hidden pixels, a 0/1 valid mask on the targets,
    and auxiliary fields at half the radar resolution (exercises the resize path)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, t_in, 1, size, size, generator=g)
    x_mask = (torch.rand(batch, t_in, 1, size, size, generator=g) > 0.3).float()
    y = torch.randn(batch, t_out, 1, size, size, generator=g).abs()
    y_valid = (torch.rand(batch, t_out, 1, size, size, generator=g) > 0.1).float()
    aux = aux_mask = None
    if aux_channels:
        aux = torch.randn(batch, t_in, aux_channels, size // 2, size // 2, generator=g)
        aux_mask = torch.ones_like(aux)
    return {k: (v.to(device) if v is not None else None)
            for k, v in dict(x=x, x_mask=x_mask, y=y, y_valid=y_valid, aux=aux, aux_mask=aux_mask).items()}


def make_step(model: PConvUNet, batch: dict, device: str, bf16: bool):
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> float:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(batch["x"], batch["x_mask"], batch["aux"], batch["aux_mask"])
        loss = ((pred.float() - batch["y"]).square() * batch["y_valid"]).sum() / batch["y_valid"].sum()
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    return step


def timed(step, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def build(args, lstm: bool, attention: bool, t_in: int, t_out: int, task: str, channels, naive: bool = False):
    model = PConvUNet(
        t_in, t_out, aux_channels=args.aux_channels if attention else 0, lstm=lstm, attention=attention,
        encoder_channels=channels, task=task, naive_partial_conv=naive,
    ).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compare_with_naive(args) -> float:
    """Interleaved fast/naive training steps; returns the median per-pair time ratio."""
    channels = tuple(args.channels)
    t_in, t_out = TASKS["infill"]
    fast = build(args, False, False, t_in, t_out, "infill", channels)
    naive = build(args, False, False, t_in, t_out, "infill", channels, naive=True)
    naive.load_state_dict(fast.state_dict())
    floor = build(args, False, False, t_in, t_out, "infill", channels)
    for module in floor.modules():
        if type(module) is PartialConv2d:
            module.__class__ = MaskFreeConv2d
    batch = make_batch(args.batch, t_in, t_out, args.size, 0, args.device)
    steps = {name: make_step(model, batch, args.device, args.bf16)
             for name, model in (("pconv", fast), ("naive", naive), ("maskfree", floor))}
    warm = {name: timed(step, args.device) for name, step in steps.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for rep in range(args.repeats):
        # rotate the order so that no network always runs first (or last) in its group
        for name in names[rep % 3:] + names[: rep % 3]:
            times[name].append(timed(steps[name], args.device))
    ratios = [f / n for f, n in zip(times["pconv"], times["naive"])]
    floor_ratios = [f / n for f, n in zip(times["maskfree"], times["naive"])]
    params = sum(p.numel() for p in fast.parameters())
    print(f"\n## Training step: partial conv vs naive full-mask convolution ({args.device}, "
          f"{'bf16' if args.bf16 else 'fp32'}, {'channels_last' if args.channels_last else 'contiguous'}, "
          f"threads {torch.get_num_threads()})\n")
    print(f"layers {len(channels)}, channels {channels}, {args.size}x{args.size}, batch {args.batch}, "
          f"infill {t_in}->{t_out}, {params:,} parameters; warm-up pconv {warm['pconv']:.3f} s, naive {warm['naive']:.3f} s, "
          f"mask-free {warm['maskfree']:.3f} s\n")
    print("| group | pconv step (s) | naive step (s) | mask-free step (s) | pconv / naive | mask-free / naive |\n"
          "|---|---|---|---|---|---|")
    for i, (f, n, m, r, q) in enumerate(zip(times["pconv"], times["naive"], times["maskfree"], ratios, floor_ratios)):
        print(f"| {i} | {f:.3f} | {n:.3f} | {m:.3f} | {r:.3f} | {q:.3f} |")
    print(f"\nmaskfree_vs_naive_step_ratio={statistics.median(floor_ratios):.3f} "
          "(the floor: no mask path at all)")
    return statistics.median(ratios)


def profile_step(args) -> None:
    """One profiled training step of our network at the comparison size: convolution time
    (forward, backward) against the whole step's CPU time."""
    from torch.profiler import ProfilerActivity, profile

    t_in, t_out = TASKS["infill"]
    model = build(args, False, False, t_in, t_out, "infill", tuple(args.channels))
    step = make_step(model, make_batch(args.batch, t_in, t_out, args.size, 0, args.device), args.device, args.bf16)
    step(), step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=12))
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    conv_fwd = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mkldnn_convolution", "aten::_convolution")) / 1e6
    conv_bwd = sum(e.self_cpu_time_total for e in events if e.key == "aten::convolution_backward") / 1e6
    print(f"step CPU {total:.3f} s: convolutions {conv_fwd + conv_bwd:.3f} s "
          f"(forward {conv_fwd:.3f} s, backward {conv_bwd:.3f} s), everything else {total - conv_fwd - conv_bwd:.3f} s")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_variant(args, variant: str, task: str) -> dict:
    """Runs in a worker process: parameters, median step time, peak memory of one variant."""
    lstm, attention = VARIANTS[variant]
    t_in, t_out = TASKS[task]
    model = build(args, lstm, attention, t_in, t_out, task, tuple(args.variant_channels))
    batch = make_batch(args.variant_batch, t_in, t_out, args.variant_size, args.aux_channels if attention else 0, args.device)
    step = make_step(model, batch, args.device, args.bf16)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
        base = _rss_kib("VmRSS") * 1024
    times = [timed(step, args.device) for _ in range(1 + args.variant_repeats)]
    peak = (torch.cuda.max_memory_allocated() if cuda else _rss_kib("VmHWM") * 1024) - base
    return {"variant": variant, "task": task, "params": sum(p.numel() for p in model.parameters()),
            "first_step_s": times[0], "step_s": statistics.median(times[1:]), "peak_mib": peak / 2**20}


def variant_table(args) -> None:
    rows = []
    for task in TASKS:
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--worker", f"{variant}:{task}", *args.passthrough]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"variant {variant}/{task} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    t_sizes = ", ".join(f"{k} {a}->{b}" for k, (a, b) in TASKS.items())
    print(f"\n## Variants ({args.device}, {'bf16' if args.bf16 else 'fp32'}, channels {tuple(args.variant_channels)}, "
          f"{args.variant_size}x{args.variant_size}, batch {args.variant_batch}, {t_sizes}, "
          f"aux {args.aux_channels} fields at half resolution)\n")
    print("| task | variant | parameters | step (s, median) | first step (s) | peak memory (MiB) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['variant']} | {r['params']:,} | {r['step_s']:.3f} | {r['first_step_s']:.3f} | {r['peak_mib']:.0f} |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): smoke test of the script")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    p.add_argument("--repeats", type=int, default=3, help="interleaved pconv/naive pairs after one warm-up each")
    p.add_argument("--skip-variants", action="store_true", help="only the pconv vs naive comparison")
    p.add_argument("--profile", action="store_true", help="only a torch.profiler table of one step of ours")
    p.add_argument("--aux-channels", type=int, default=2)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--worker")]
    if args.quick:
        args.channels, args.size, args.batch = (8, 16, 32, 32), 64, 2
        args.variant_channels, args.variant_size, args.variant_batch, args.variant_repeats = (8, 16, 32), 32, 2, 2
    else:
        args.channels, args.size, args.batch = (64, 128, 256, 512, 512, 512, 512), 256, 4
        args.variant_channels, args.variant_size, args.variant_batch, args.variant_repeats = (16, 32, 64, 128), 64, 2, 3
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.worker:
        variant, task = args.worker.split(":")
        print(json.dumps(measure_variant(args, variant, task)))
        return
    if args.profile:
        profile_step(args)
        return
    if not args.skip_variants:
        variant_table(args)
    ratio = compare_with_naive(args)
    print(f"pconv_vs_naive_step_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
