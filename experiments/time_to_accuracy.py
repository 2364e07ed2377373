"""Time-to-accuracy of data-parallel training: does an N x larger global batch reach the same
validation RMSE in ~1/N the optimizer steps, with and without linear learning-rate scaling?

Every run trains the infilling `pconv` variant with `ni-train` (a subprocess running
`python -m nowcast_infill.cli.train`, so the DDP runs use Lightning's own launcher) on the
synthetic store, for the same number of *training samples*. The global batch is

    processes x per-process batch x gradient accumulation,

and the matrix covers 8, 16 and 32 on a machine with few cores by combining 1 or 2 gloo
processes with accumulation (`--layouts`, default 8 = 1x8x1, 16 = 2x8x1, 32 = 2x8x2). Each
global batch above the reference 8 runs twice: `lr_scaling=linear` (lr x batch/8) and `none`
(the lr of batch 8). Every run has the same warm-up in samples (`--warmup-samples`, i.e.
`model.scheduler.warmup_samples`) and a cosine decay over its own number of steps.

Validation runs every `--val-every` samples; the `TrainingClock` callback logs with it the
samples seen and the training wall time (validation excluded). From those curves the report
gives, per setting, the optimizer steps, samples and seconds until the validation RMSE first
falls to the target, the speed-up in steps over batch 8 against the ideal N, and the final
validation and test RMSE (test = the final weights on the test split). The target is
`--target` (e.g. a value read off a pilot run of the reference batch) or, by default, two
(`default_targets`): the largest best-validation-RMSE over all runs, which every run reaches,
and 1.05 x the final validation RMSE of batch 8, which a setting that trains worse may not.

Writes `experiments/results/scaling.md` (section "Time to accuracy"), the raw curves
`time_to_accuracy_runs.json` and `figures/time_to_accuracy.png`.

Usage::

    python experiments/time_to_accuracy.py                # the stated matrix (15 runs, ~15 min on 2 cores)
    python experiments/time_to_accuracy.py --quick        # tiny check of the pipeline (numbers meaningless)
    python experiments/time_to_accuracy.py --report-only  # rewrite the report from the saved JSON
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_common import (  # noqa: E402
    REPO_ROOT, RESULTS_DIR, WORK_DIR, format_mean_std, git_commit, keep_small, log, mean_std, provenance,
)

REFERENCE_BATCH = 8
# global batch -> (processes, per-process batch, accumulation); 2 cores: at most 2 processes
DEFAULT_LAYOUTS = {8: (1, 8, 1), 16: (2, 8, 1), 32: (2, 8, 2)}
REPORT_BEGIN = "<!-- time-to-accuracy: begin (experiments/time_to_accuracy.py) -->"
REPORT_END = "<!-- time-to-accuracy: end -->"


@dataclass(frozen=True)
class Setting:
    """One cell of the matrix: a global batch made of processes x batch x accumulation, and an lr rule."""

    processes: int
    per_process_batch: int
    accumulation: int
    lr_scaling: str

    @property
    def global_batch(self) -> int:
        return self.processes * self.per_process_batch * self.accumulation

    @property
    def name(self) -> str:
        return f"gb{self.global_batch}_{self.lr_scaling}"

    def describe(self) -> str:
        return f"{self.processes} proc x {self.per_process_batch} x {self.accumulation} acc"


@dataclass
class Run:
    """One training run: its setting, seed, validation curve and final scores."""

    setting: Setting
    seed: int
    lr: float
    steps: list[int] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    train_s: list[float] = field(default_factory=list)
    val_rmse: list[float] = field(default_factory=list)
    test_rmse: float = float("nan")
    wall_s: float = float("nan")
    run_dir: str = ""

    def first_reaching(self, target: float) -> int | None:
        """Index of the first validation with RMSE <= target (None when never)."""
        for index, value in enumerate(self.val_rmse):
            if value <= target:
                return index
        return None


def parse_layouts(text: list[str]) -> dict[int, tuple[int, int, int]]:
    """['8=1x8x1', ...] -> {8: (1, 8, 1), ...}; each product must equal its global batch."""
    out = {}
    for item in text:
        try:
            batch, layout = item.split("=")
            procs, per, acc = (int(v) for v in layout.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--layouts {item!r}: write GLOBAL=PROCSxBATCHxACCUM, e.g. 16=2x8x1") from None
        if procs * per * acc != int(batch):
            raise SystemExit(f"--layouts {item!r}: {procs} x {per} x {acc} = {procs * per * acc}, not {batch}")
        out[int(batch)] = (procs, per, acc)
    if REFERENCE_BATCH not in out:
        raise SystemExit(f"--layouts must include the reference global batch {REFERENCE_BATCH} (lr is tuned at it)")
    return out


def settings_of(layouts: dict[int, tuple[int, int, int]]) -> list[Setting]:
    """Batch 8 once (both rules give the same lr there), every larger batch with both rules."""
    out = []
    for batch, (procs, per, acc) in sorted(layouts.items()):
        rules = ["linear"] if batch == REFERENCE_BATCH else ["linear", "none"]
        out += [Setting(procs, per, acc, rule) for rule in rules]
    return out


def train_overrides(setting: Setting, seed: int, args, store: Path, stats: Path, run_dir: Path) -> list[str]:
    """The `ni-train` overrides of one run."""
    samples_per_step = setting.global_batch
    if args.samples % samples_per_step or args.val_every % (setting.processes * setting.per_process_batch):
        raise SystemExit(f"--samples {args.samples} and --val-every {args.val_every} must be multiples of the global "
                         f"batch {samples_per_step} and of processes x batch of {setting.name}")
    # val_check_interval counts micro-batches of one process, not optimizer steps
    val_interval = args.val_every // (setting.processes * setting.per_process_batch)
    strategy = ["strategy=single"] if setting.processes == 1 else [
        "strategy=ddp_sim", f"trainer.devices={setting.processes}"]
    return [
        "task=infill", "data=synthetic", "model=pconv", "logger=csv",
        f"hydra.run.dir={run_dir}", f"data.store={store}", f"data.stats_path={stats}",
        "data.num_workers=0", f"data.batch_size={setting.per_process_batch}", f"data.crop_size={args.crop}",
        f"data.eval_masks.n={args.eval_masks}",
        f"model.net.encoder_channels=[{','.join(str(c) for c in args.channels)}]",
        f"model.optimizer.lr={args.lr}", f"model.optimizer.lr_scaling={setting.lr_scaling}",
        f"model.optimizer.reference_global_batch={REFERENCE_BATCH}",
        f"model.scheduler.warmup_samples={args.warmup_samples}", "model.scheduler.warmup_fraction=0",
        *strategy, "trainer.accelerator=cpu",
        f"trainer.accumulate_grad_batches={setting.accumulation}",
        f"+trainer.max_steps={args.samples // samples_per_step}", "trainer.max_epochs=-1", "trainer.min_epochs=0",
        "trainer.check_val_every_n_epoch=null", f"+trainer.val_check_interval={val_interval}",
        "+trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1000",
        "callbacks.early_stopping=null", "callbacks.model_checkpoint.monitor=null", "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false", "callbacks.lr_monitor=null",
        "+callbacks.training_clock._target_=nowcast_infill.training.clock.TrainingClock",
        f"seed={seed}", "test=true",
    ]


def read_curve(run: Run, run_dir: Path) -> None:
    """Fill the run's curve and test RMSE from its CSV log (`<run>/csv/metrics.csv`)."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        raise RuntimeError(f"{path}: no CSV log; see {run_dir}/train.log")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))

    def value(row, key):
        text = row.get(key, "")
        return float(text) if text not in ("", None) else None

    # one validation logs val/rmse and the clock on the same logger step, possibly on separate rows
    by_step: dict[int, dict[str, float]] = {}
    for row in rows:
        step = int(float(row["step"]))
        for key in ("val/rmse", "clock/train_s", "clock/samples_seen", "clock/optimizer_steps", "test/rmse"):
            got = value(row, key)
            if got is not None:
                by_step.setdefault(step, {})[key] = got
    for step in sorted(by_step):
        entry = by_step[step]
        if "val/rmse" in entry and "clock/samples_seen" in entry:
            run.steps.append(int(entry["clock/optimizer_steps"]))
            run.samples.append(entry["clock/samples_seen"])
            run.train_s.append(entry["clock/train_s"])
            run.val_rmse.append(entry["val/rmse"])
        if "test/rmse" in entry:
            run.test_rmse = entry["test/rmse"]
    if not run.val_rmse:
        raise RuntimeError(f"{path}: no validation with val/rmse and clock/samples_seen was logged")


def run_one(setting: Setting, seed: int, args, store: Path, stats: Path) -> Run:
    run_dir = args.work / "tta_runs" / f"{setting.name}_seed{seed}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    lr = args.lr * (setting.global_batch / REFERENCE_BATCH if setting.lr_scaling == "linear" else 1.0)
    run = Run(setting, seed, lr, run_dir=str(run_dir))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NI_RUN_ID", "TORCHELASTIC"))}
    # a process stands for one device of fixed speed: the same threads in every process, so that
    # 2 processes have twice the compute of 1 (as 2 GPUs have twice that of 1)
    env.update(WANDB_MODE="offline", PYTHONPATH=str(REPO_ROOT), GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(29500 + (os.getpid() % 1000)), OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "nowcast_infill.cli.train", *train_overrides(setting, seed, args, store, stats, run_dir)]
    start = time.perf_counter()
    with (run_dir / "train.log").open("w") as out:
        done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    run.wall_s = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{setting.name} seed {seed}: ni-train failed (exit {done.returncode}); see {run_dir}/train.log")
    read_curve(run, run_dir)
    return run


# ----------------------------------------------------------------------------------------
# Analysis and report
# ----------------------------------------------------------------------------------------
def default_targets(runs: list[Run]) -> list[tuple[float, str]]:
    """Two targets, (value, how it was chosen), both rounded up to 0.001 mm/h:

    - the largest best-validation-RMSE over all runs: the tightest target every run reaches;
    - 1.05 x the reference batch's mean final validation RMSE: "as good as batch 8, within 5 %",
      which a setting that trains worse may never reach within the budget.
    """
    def up(value: float) -> float:
        return math.ceil(value * 1000 - 1e-9) / 1000

    targets = [(up(max(min(r.val_rmse) for r in runs)),
                "the largest best-validation-RMSE over all runs: the tightest target every run reaches")]
    reference = [r for r in runs if r.setting.global_batch == REFERENCE_BATCH]
    if reference:
        final = mean_std(r.val_rmse[-1] for r in reference)[0]
        targets.append((up(1.05 * final), f"1.05 x the mean final validation RMSE of batch {REFERENCE_BATCH} "
                                          f"({final:.4f}): as good as the reference within 5 %"))
    return targets


def group(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.setting.name, []).append(r)
    return out


def reach_stats(runs: list[Run], target: float) -> dict[str, float | int]:
    """Mean steps / samples / train seconds to the target over the seeds that reached it."""
    hits = [(r, r.first_reaching(target)) for r in runs]
    reached = [(r, i) for r, i in hits if i is not None]
    return {
        "reached": len(reached),
        "steps": mean_std(r.steps[i] for r, i in reached)[0],
        "samples": mean_std(r.samples[i] for r, i in reached)[0],
        "train_s": mean_std(r.train_s[i] for r, i in reached)[0],
    }


def reference_group(runs: list[Run]) -> list[Run] | None:
    return next((g for g in group(runs).values() if g[0].setting.global_batch == REFERENCE_BATCH), None)


def settings_table(runs: list[Run]) -> str:
    """Per setting: layout, lr, final validation and test RMSE, wall time per run."""
    from nowcast_infill.utils.tables import markdown_table

    rows = []
    for members in group(runs).values():
        s = members[0].setting
        rows.append({
            "global batch": s.global_batch, "layout": s.describe(), "lr rule": s.lr_scaling, "lr": f"{members[0].lr:g}",
            "steps": members[0].steps[-1],
            "final val RMSE": format_mean_std([r.val_rmse[-1] for r in members]),
            "best val RMSE": format_mean_std([min(r.val_rmse) for r in members]),
            "test RMSE": format_mean_std([r.test_rmse for r in members]),
            "train s (whole run)": format_mean_std([r.train_s[-1] for r in members], 0),
            "run wall s": f"{mean_std(r.wall_s for r in members)[0]:.0f}",
        })
    return markdown_table(rows, list(rows[0]))


def target_table(runs: list[Run], target: float) -> str:
    """Per setting: seeds reaching `target`, steps / samples / training seconds to it, and the
    speed-up in steps and in training time over the reference batch."""
    from nowcast_infill.utils.tables import markdown_table

    reference = reference_group(runs)
    ref = reach_stats(reference, target) if reference else None
    ref_ok = ref is not None and ref["reached"] == len(reference)
    rows = []
    for members in group(runs).values():
        s = members[0].setting
        stats = reach_stats(members, target)
        ok = stats["reached"] == len(members) and ref_ok
        rows.append({
            "global batch": s.global_batch, "lr rule": s.lr_scaling,
            "seeds reaching": f"{stats['reached']}/{len(members)}",
            "steps to target": f"{stats['steps']:.0f}" if stats["reached"] else "not reached",
            "samples to target": f"{stats['samples']:.0f}" if stats["reached"] else "–",
            "train s to target": f"{stats['train_s']:.1f}" if stats["reached"] else "–",
            "fewer steps than batch 8 (ideal)": (f"{ref['steps'] / stats['steps']:.2f}x ({s.global_batch // REFERENCE_BATCH}x)"
                                                 if ok else "–"),
            "faster than batch 8 in train s": f"{ref['train_s'] / stats['train_s']:.2f}x" if ok else "–",
        })
    return markdown_table(rows, list(rows[0]))


def plot_curves(runs: list[Run], targets: list[float], path: Path) -> Path:
    """Validation RMSE against samples seen (left) and training seconds (right), mean over seeds."""
    from nowcast_infill.viz import plt  # the package's one matplotlib set-up (Agg backend)
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    colours = {8: "tab:blue", 16: "tab:orange", 32: "tab:green"}
    for name, members in group(runs).items():
        s = members[0].setting
        n = min(len(r.val_rmse) for r in members)
        rmse = np.mean([r.val_rmse[:n] for r in members], axis=0)
        style = "-" if s.lr_scaling == "linear" else "--"
        label = f"batch {s.global_batch}, lr {s.lr_scaling}" if s.global_batch != REFERENCE_BATCH else "batch 8 (reference)"
        colour = colours.get(s.global_batch)
        axes[0].plot(members[0].samples[:n], rmse, style, color=colour, marker="o", ms=2, label=label)
        axes[1].plot(np.mean([r.train_s[:n] for r in members], axis=0), rmse, style, color=colour, marker="o", ms=2)
    for ax, xlabel in zip(axes, ("training samples seen", "training wall time, validation excluded (s)")):
        for target in targets:
            ax.axhline(target, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation RMSE (mm/h)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Infilling pconv net on the synthetic store, mean over seeds; dotted: targets "
                 + ", ".join(f"{t:.3f}" for t in targets) + " mm/h", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return keep_small(path)


def verdict(runs: list[Run], target: float) -> list[str]:
    """Sentences on the claim, from the table's numbers (no fixed wording of the outcome)."""
    groups = group(runs)
    reference = reference_group(runs)
    if reference is None or reach_stats(reference, target)["reached"] < len(reference):
        return [f"- batch {REFERENCE_BATCH} itself does not reach {target:.3f} with every seed: no step ratio."]
    ref = reach_stats(reference, target)
    lines = []
    for members in groups.values():
        s = members[0].setting
        if s.global_batch == REFERENCE_BATCH:
            continue
        stats = reach_stats(members, target)
        n = s.global_batch // REFERENCE_BATCH
        if stats["reached"] < len(members):
            lines.append(f"- batch {s.global_batch}, lr {s.lr_scaling}: {stats['reached']}/{len(members)} seeds reached "
                         f"the target.")
            continue
        ratio = ref["steps"] / stats["steps"]
        lines.append(
            f"- batch {s.global_batch} ({n}x), lr {s.lr_scaling}: {stats['steps']:.0f} steps to the target against "
            f"{ref['steps']:.0f} at batch 8, a {ratio:.2f}x reduction in steps (ideal {n}x, i.e. "
            f"{100 * ratio / n:.0f} % of linear); {stats['samples']:.0f} samples against {ref['samples']:.0f}.")
    return lines


def write_report(runs: list[Run], args, prov: dict, total_s: float, targets: list[tuple[float, str]]) -> Path:
    figure = plot_curves(runs, [t for t, _ in targets], args.out / "figures" / "time_to_accuracy.png")
    quick = ["", "**--quick run: tiny budget; the numbers only show that the pipeline runs.**"] if args.quick else []
    seeds = sorted({r.seed for r in runs})
    per_target = []
    for value, source in targets:
        per_target += [
            f"### Target validation RMSE {value:.3f} mm/h", "",
            f"Chosen as {source}.", "",
            target_table(runs, value), "",
            *verdict(runs, value), "",
        ]
    body = "\n".join([
        REPORT_BEGIN,
        "## Time to accuracy: global batch 8 / 16 / 32, linear lr scaling vs none",
        *quick,
        "",
        f"The infilling `pconv` variant (encoder channels {list(args.channels)}, {args.crop}x{args.crop} crops) "
        f"trained with `ni-train` on the synthetic store for {args.samples} training samples per run (so batch 8 takes "
        f"{args.samples // 8} optimizer steps, batch 32 {args.samples // 32}); AdamW, base lr {args.lr:g} at the "
        f"reference global batch {REFERENCE_BATCH}, warm-up over {args.warmup_samples} samples "
        f"(`model.scheduler.warmup_samples`, so ceil({args.warmup_samples}/batch) steps) then cosine decay to 1 %. "
        f"Global batch = processes x per-process batch x gradient accumulation: this machine has 2 cores, so at most "
        f"2 gloo processes, {args.threads} thread(s) each (a process stands for a device of fixed speed), and "
        f"accumulation makes up the rest. Validation (whole 128x128 frames, {args.eval_masks} fixed hole masks) every "
        f"{args.val_every} samples, logged with the samples seen and the training wall time excluding validation "
        f"(`TrainingClock`). Test RMSE = the final weights on the test split. Mean ± std over seeds {seeds}.",
        "",
        settings_table(runs),
        "",
        f"\"to target\" = the first validation at or below the target (resolution {args.val_every} samples), mean over "
        "the seeds that reached it; \"train s\" = training wall time without validation, on a machine shared with "
        "other jobs (noisy: compare steps and samples first).",
        "",
        *per_target,
        f"![validation RMSE against samples seen and training time](figures/{figure.name})",
        "",
        f"- command: `{prov['command']}`",
        f"- commit: `{prov['commit']}`",
        f"- date: {prov['date']}",
        f"- machine: {prov['machine']}",
        f"- total wall time of the script: {total_s / 60:.1f} min",
        *([f"- this text rewritten from the saved runs (`--report-only`) at commit `{git_commit()}`"]
          if args.report_only else []),
        REPORT_END,
    ]) + "\n"
    report = args.out / "scaling.md"
    text = report.read_text() if report.exists() else "# Scaling\n\n"
    if REPORT_BEGIN in text and REPORT_END in text:
        head, rest = text.split(REPORT_BEGIN, 1)
        text = head + body + rest.split(REPORT_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    report.write_text(text)
    return report


def save_runs(runs: list[Run], path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=1))


def load_runs(path: Path) -> tuple[list[Run], dict]:
    data = json.loads(path.read_text())
    runs = []
    for item in data["runs"]:
        item["setting"] = Setting(**item["setting"])
        runs.append(Run(**item))
    return runs, data["meta"]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1024, help="training samples per run (default 1024)")
    parser.add_argument("--val-every", type=int, default=64, help="validate every this many samples (default 64)")
    parser.add_argument("--warmup-samples", type=int, default=128, help="lr warm-up length in samples (default 128)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--layouts", nargs="+", default=[f"{b}={p}x{n}x{a}" for b, (p, n, a) in DEFAULT_LAYOUTS.items()],
                        help="GLOBAL=PROCSxBATCHxACCUM per global batch (default 8=1x8x1 16=2x8x1 32=2x8x2)")
    parser.add_argument("--lr", type=float, default=1e-3, help=f"base lr at global batch {REFERENCE_BATCH}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--crop", type=int, default=32, help="training crop edge (px, a multiple of 8)")
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--eval-masks", type=int, default=16, help="fixed validation/test hole masks (default 16)")
    parser.add_argument("--target", type=float, default=None, help="target validation RMSE (mm/h); default: see above")
    parser.add_argument("--quick", action="store_true", help="tiny store and budget: checks the pipeline in ~1 min")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the saved JSON")
    parser.add_argument("--resume", action="store_true", help="keep the finished runs of the saved JSON, run the rest")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where scaling.md and figures/ go")
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="store and run folders (git-ignored)")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.val_every, args.warmup_samples, args.seeds, args.eval_masks = 64, 32, 16, args.seeds[:1], 4
    json_path = args.out / "time_to_accuracy_runs.json"
    if args.report_only:
        runs, meta = load_runs(json_path)
        if not runs:
            raise SystemExit(f"{json_path}: no finished run to report")
        for key in ("samples", "val_every", "warmup_samples", "lr", "crop", "channels", "eval_masks", "quick", "threads"):
            setattr(args, key, meta["args"][key])
        prov, total_s = meta["provenance"], meta["total_s"]
    else:
        from nowcast_infill.data.synthetic import write_synthetic_store

        layouts = parse_layouts(args.layouts)
        store = args.work / ("tta_synthetic_quick.zarr" if args.quick else "tta_synthetic.zarr")
        if not store.exists():
            write_synthetic_store(store, **({"n_times": 64, "ny": 64, "nx": 64} if args.quick else {}))
        stats = store.with_suffix(".normalization.json")
        prov = provenance([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
        start = time.perf_counter()
        runs, done_before = [], 0.0
        if args.resume and json_path.is_file():
            runs, old_meta = load_runs(json_path)
            changed = [k for k in ("samples", "val_every", "warmup_samples", "lr", "crop", "channels", "eval_masks",
                                   "threads")
                       if old_meta["args"][k] != getattr(args, k)]
            if changed:
                raise SystemExit(f"--resume: {json_path} was run with other {changed}; rerun without --resume")
            done_before = old_meta["total_s"]
            log(f"resuming: {len(runs)} finished runs from {json_path}")
        finished = {(r.setting, r.seed) for r in runs}
        for seed in args.seeds:
            for setting in settings_of(layouts):
                if (setting, seed) in finished:
                    continue
                log(f"{setting.name} ({setting.describe()}) seed {seed}")
                run = run_one(setting, seed, args, store, stats)
                log(f"  best val RMSE {min(run.val_rmse):.4f}, final {run.val_rmse[-1]:.4f}, test {run.test_rmse:.4f}, "
                    f"{run.wall_s:.0f} s")
                runs.append(run)
                total_s = done_before + time.perf_counter() - start
                meta = {"provenance": prov, "total_s": total_s, "args": {
                    k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
                # after every run: an interrupted matrix can be reported (--report-only) or resumed
                save_runs(runs, json_path, meta)
        total_s = done_before + time.perf_counter() - start
    targets = [(args.target, "given with --target")] if args.target is not None else default_targets(runs)
    report = write_report(runs, args, prov, total_s, targets)
    log(f"wrote {report}")
    return report


if __name__ == "__main__":
    main()
