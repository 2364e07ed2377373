"""Shared machinery of the result scripts (results_infill.py, results_nowcast.py).

Both scripts do the same thing for a different task: prepare stores, train each network
variant for a fixed budget and several seeds with `ni-train`'s `train(cfg)`, score every
checkpoint and every classical baseline with `ni-eval`'s `evaluate(cfg)` (the same windows,
the same fixed masks, the same metric code), then write a Markdown report whose every
number comes from those runs, plus figures. The pieces live here once.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from nowcast_infill.study import VARIANTS  # noqa: E402  (the variants every results script trains)
from nowcast_infill.utils.config import compose_config  # noqa: E402
from nowcast_infill.utils.results import format_mean_std, mean_std  # noqa: E402
from nowcast_infill.utils.results import git_commit as package_git_commit  # noqa: E402

RESULTS_DIR = REPO_ROOT / "experiments" / "results"
# git-ignored (.gitignore): converted stores, runs, logs
WORK_DIR = RESULTS_DIR / "_work"
SHARED_DATA = Path(os.environ.get("NI_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
# PNGs of the report must stay small enough to live in git
MAX_FIGURE_BYTES = 300_000


# ----------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------
def git_commit() -> str:
    """`git rev-parse HEAD` of the checkout, with '-dirty' when tracked files are modified."""
    return package_git_commit(REPO_ROOT) or "unknown (not a git checkout)"


def machine_description() -> str:
    """CPU model, cores visible to this process, OS, Python and torch versions."""
    import torch

    from nowcast_infill.utils.results import cpu_model

    cpu = cpu_model()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} CPU cores visible (shared with other jobs), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def provenance(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Commit, UTC date, machine and the exact command that produced a report."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    try:
        script = script.resolve().relative_to(REPO_ROOT)
    except ValueError:
        pass
    return {
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "command": shlex.join(["python", str(script), *argv[1:]]),
    }


# ----------------------------------------------------------------------------------------
# Stores
# ----------------------------------------------------------------------------------------
def require_inputs(folder: Path, pattern: str, what: str) -> Path:
    """`folder`, after checking it holds files matching `pattern`; else a clear error."""
    if not folder.is_dir() or not any(folder.glob(pattern)):
        raise FileNotFoundError(
            f"{folder}: no {what} files ({pattern}) found; put the shared data beside the checkout "
            f"(../shared/data) or point NI_SHARED_DATA at it, or pass --synthetic-only."
        )
    return folder


def ensure_converted(inputs: str, output: Path, source: str, **importer_options) -> Path:
    """Convert `inputs` to the Zarr store `output` once; an existing valid store is reused."""
    from nowcast_infill.io.convert import convert
    from nowcast_infill.schema import validate_store

    if output.exists():
        import xarray as xr

        with xr.open_zarr(output) as ds:
            validate_store(ds)
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    convert(inputs, output, source, progress=False, **importer_options)
    return output


def _crop_to_coverage(ds, multiple_of: int, where: Path):
    """`ds` cut to the bounding box of the pixels valid in any frame, each side a multiple of
    `multiple_of` (the U-Net needs the grid divisible by 2**depth): the box is widened into
    the all-no-data margin where the grid allows, else narrowed symmetrically. Returns
    (dataset, number of valid pixel-frames cut away), the latter 0 unless narrowed."""
    from nowcast_infill import schema

    valid = np.isfinite(ds[schema.PRECIP].values)
    covered = valid.any(axis=0)
    if not covered.any():
        raise ValueError(f"{where}: no pixel is valid in any frame; nothing to crop to (check the conversion).")
    bounds = []
    for axis, n in ((1, covered.shape[0]), (0, covered.shape[1])):
        hits = np.flatnonzero(covered.any(axis=axis))
        lo, hi = int(hits[0]), int(hits[-1]) + 1
        size = -(-(hi - lo) // multiple_of) * multiple_of
        if size > n:
            size = n // multiple_of * multiple_of
        lo = min(max(0, (lo + hi - size) // 2), n - size)
        bounds.append(slice(lo, lo + size))
    rows, cols = bounds
    dropped = int(valid.sum() - valid[:, rows, cols].sum())
    return ds.isel(y=rows, x=cols), dropped, (rows, cols)


def add_uninformative_aux(source: Path, output: Path, seed: int = 0, factor: int = 8,
                          crop_multiple_of: int | None = None) -> Path:
    """Copy the store `source` (which must have no aux fields) to `output` with aux fields
    `aux_n1`, `aux_n2` that carry no information about the rain, so that the attention
    variants can run on real radar data that has no auxiliary fields.

    The fields are smooth Gaussian noise, drawn from `seed` alone (never from the rain), on a
    grid `factor` times coarser than the radar grid, and evolving slowly in time
    (`(time, y_aux, x_aux)` float32, dimensionless). An existing `output` is reused.

    crop_multiple_of: also cut the grid to the bounding box of the pixels valid in any frame,
    sides a multiple of this (see `_crop_to_coverage`); how many valid pixels that cost (0 when
    the margins allow) goes into the store's `history` and is returned by `store_crop_note`.
    """
    import xarray as xr
    from scipy import ndimage

    from nowcast_infill import schema

    if output.exists():
        return output
    with xr.open_zarr(source) as src:
        ds = src.load()
    if schema.aux_names(ds):
        raise ValueError(f"{source}: already has aux fields {schema.aux_names(ds)}; add_uninformative_aux is for "
                         "stores without any (use the store as it is).")
    if crop_multiple_of:
        ny0, nx0 = ds.sizes["y"], ds.sizes["x"]
        ds, dropped, (rows, cols) = _crop_to_coverage(ds, crop_multiple_of, source)
        ds.attrs["crop_note"] = (f"cropped from {ny0} x {nx0} to rows {rows.start}..{rows.stop - 1}, columns "
                                 f"{cols.start}..{cols.stop - 1} ({ds.sizes['y']} x {ds.sizes['x']}, multiple of "
                                 f"{crop_multiple_of}); valid pixel-frames cut away: {dropped}")
        ds.attrs["history"] = (str(ds.attrs.get("history", "")) + "; " + ds.attrs["crop_note"]
                               + " (experiments/results_common.py)").lstrip("; ")
    n_t, ny, nx = ds.sizes["time"], ds.sizes["y"], ds.sizes["x"]
    y_aux = ds["y"].values.reshape(-1)[: ny // factor * factor].reshape(-1, factor).mean(axis=1)
    x_aux = ds["x"].values.reshape(-1)[: nx // factor * factor].reshape(-1, factor).mean(axis=1)
    rng = np.random.default_rng(seed)
    fields = {}
    for name in ("n1", "n2"):
        base = ndimage.gaussian_filter(rng.standard_normal((len(y_aux), len(x_aux))), sigma=4)
        drift = ndimage.gaussian_filter(rng.standard_normal((len(y_aux), len(x_aux))), sigma=4)
        series = np.stack([base + drift * (t / max(n_t - 1, 1)) for t in range(n_t)]).astype(np.float32)
        fields[schema.AUX_PREFIX + name] = xr.DataArray(
            series, dims=schema.AUX_DIMS,
            attrs={"units": "1", "long_name": f"uninformative noise field {name} (seed {seed}): independent of the rain"},
        )
    ds = ds.assign_coords(y_aux=("y_aux", y_aux, {"units": "km"}), x_aux=("x_aux", x_aux, {"units": "km"}))
    ds = ds.assign(fields)
    for var in ds.variables.values():
        var.encoding.clear()
    staging = output.with_name(output.name + f".tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    ds.to_zarr(staging, mode="w-", zarr_format=3, consolidated=False)
    staging.rename(output)
    return output


def store_crop_note(store: Path) -> str:
    """The crop recorded by `add_uninformative_aux` ('' when the grid was not cropped)."""
    import xarray as xr

    with xr.open_zarr(store) as ds:
        return str(ds.attrs.get("crop_note", ""))


def store_times(store: Path) -> np.ndarray:
    """The `time` axis of a store, datetime64[ns]."""
    import xarray as xr

    with xr.open_zarr(store) as ds:
        return ds["time"].values.astype("datetime64[ns]")


def frame_split(store: Path, train: tuple[int, int], val: tuple[int, int], test: tuple[int, int]) -> dict:
    """`data.split` of explicit frame ranges `(first, stop)` (stop exclusive), as the
    inclusive ISO dates the DataModule takes; frames between the ranges are the gaps."""
    times = store_times(store)
    ranges = {"train": train, "val": val, "test": test}
    out = {}
    for name, (first, stop) in ranges.items():
        if not 0 <= first < stop <= len(times):
            raise ValueError(f"{store}: {name} frames [{first}, {stop}) do not fit its {len(times)} frames.")
        out[name] = [str(times[first])[:19], str(times[stop - 1])[:19]]
    return {"dates": out}


# ----------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """The fixed training budget of one network run (the same for every variant)."""

    steps: int
    batch_size: int
    crop_size: int
    encoder_channels: tuple[int, ...]
    lr: float = 1e-3

    def describe(self) -> str:
        return (f"{self.steps} optimizer steps, batch {self.batch_size}, random {self.crop_size}x{self.crop_size} crops, "
                f"encoder channels {list(self.encoder_channels)}, AdamW lr {self.lr:g} (warm-up + cosine), "
                "no validation-based selection (the last weights are scored)")

    def overrides(self) -> list[str]:
        return [
            f"+trainer.max_steps={self.steps}",
            "trainer.max_epochs=-1",
            "trainer.min_epochs=0",
            "+trainer.limit_val_batches=0",
            "trainer.log_every_n_steps=5",
            f"data.batch_size={self.batch_size}",
            f"data.crop_size={self.crop_size}",
            f"model.net.encoder_channels=[{','.join(str(c) for c in self.encoder_channels)}]",
            f"model.optimizer.lr={self.lr}",
            # the budget is stated in steps of this batch, whatever a device count would scale
            "model.optimizer.lr_scaling=none",
            "callbacks.early_stopping=null",
            "callbacks.model_checkpoint.monitor=null",
            "callbacks.progress_bar=null",
            "+trainer.enable_progress_bar=false",
            "test=false",
        ]


@dataclass
class RunResult:
    """Scores of one method (a network variant or a classical baseline) and one seed."""

    dataset: str
    method: str
    kind: str  # "network" or "baseline"
    seed: int | None
    metrics: dict[str, float]
    train_s: float = float("nan")
    eval_s: float = float("nan")
    output_dir: str = ""
    figures: list[str] = field(default_factory=list)
    checkpoint: str = ""  # networks: the scored checkpoint (the last of the training run)


def _with_split(cfg, split: Mapping | None):
    from omegaconf import OmegaConf, open_dict

    if split is not None:
        with open_dict(cfg):
            cfg.data.split = OmegaConf.create(dict(split))
    return cfg


def add_budget_arguments(parser, classical: Sequence[str], report: str, quick_help: str) -> None:
    """The options both result scripts share: budget, seeds, variants, classical methods, folders."""
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per network run (default 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the network runs (default 0 1)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--classical", nargs="+", default=list(classical), choices=list(classical))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32], help="encoder channels of the U-Net")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"where {report} and figures/ go")
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="converted stores and run folders (git-ignored)")
    parser.add_argument("--train-override", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides of the network trainings, e.g. model.prior=extrapolation "
                             "task.loss.balanced=true model.detection_limit_mm_h=0.1 (stated in the report)")


def common_overrides(run_dir: Path, store: Path, stats_path: Path, data: str, task: Sequence[str]) -> list[str]:
    """Data, task, paths and logging shared by the training and evaluation of one dataset."""
    return [
        f"data={data}",
        f"data.store={store}",
        f"data.stats_path={stats_path}",
        "data.num_workers=0",
        # whole frames: the stores are cropped to multiples of the U-Net's 2**depth
        "data.eval_tile=null",
        f"paths.output_dir={run_dir}",
        f"paths.log_dir={run_dir.parent}",
        "logger=csv",
        *task,
    ]


def train_network(dataset: str, variant: str, seed: int, base: Sequence[str], budget: Budget, run_dir: Path,
                  split: Mapping | None = None, extra: Sequence[str] = ()) -> tuple[Path, float]:
    """Train `variant` for `budget` with `seed`; returns (last checkpoint, wall seconds)."""
    from nowcast_infill.pipeline import train

    cfg = compose_config("train", [*base, f"model={variant}", f"seed={seed}", *budget.overrides(), *extra])
    cfg = _with_split(cfg, split)
    start = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - start
    if int(result["global_step"]) != budget.steps:
        raise RuntimeError(f"{dataset}/{variant}/seed {seed}: trained {result['global_step']} steps, budget is {budget.steps}; "
                           f"see {run_dir}.")
    last = Path(result.get("last_model_path") or "")
    if not last.is_file():
        raise RuntimeError(f"{dataset}/{variant}/seed {seed}: no last checkpoint was written under {run_dir}.")
    return last, wall


def evaluate_method(dataset: str, method: str, base: Sequence[str], run_dir: Path, split: Mapping | None = None,
                    ckpt_path: Path | None = None, seed: int | None = None, n_figures: int = 1,
                    extra: Sequence[str] = ()) -> RunResult:
    """Score a checkpoint (`ckpt_path`) or the classical baseline `method` on the test split
    through `ni-eval`'s `evaluate`; returns the `test/...` metrics without the prefix."""
    from nowcast_infill.pipeline import evaluate

    overrides = [*base, f"n_figures={n_figures}", *extra]
    overrides += [f"ckpt_path={ckpt_path}", f"model={method}"] if ckpt_path else [f"model={method}"]
    cfg = _with_split(compose_config("eval", overrides), split)
    start = time.perf_counter()
    raw = evaluate(cfg, overrides)  # the task keys not among them come from the checkpoint
    wall = time.perf_counter() - start
    metrics = {k[len("test/"):]: float(v) for k, v in raw.items() if k.startswith("test/") and isinstance(v, (int, float))}
    if not metrics:
        raise RuntimeError(f"{dataset}/{method}: evaluation returned no test metrics; see {run_dir}.")
    figures = sorted(str(p) for p in (Path(raw["output_dir"]) / "figures").glob("*.png"))
    return RunResult(dataset, method, "network" if ckpt_path else "baseline", seed, metrics,
                     eval_s=wall, output_dir=str(raw["output_dir"]), figures=figures)


def runs_folder(work: Path, name: str, train_overrides: Sequence[str] = ()) -> Path:
    """`<work>/runs/<name>[_<overrides>]`: one run folder per set of training overrides (characters
    Hydra would parse in a path become `_`), so runs with and without a prior never share one."""
    suffix = re.sub(r"[^A-Za-z0-9.]+", "_", "_".join(train_overrides))
    return work / "runs" / (f"{name}_{suffix}" if suffix else name)


def run_methods(dataset: str, runs_dir: Path, overrides: Callable[[Path], list[str]], budget: Budget,
                seeds: Sequence[int], variants: Sequence[str], classical: Sequence[str],
                split: Mapping | None = None, train_extra: Sequence[str] = (),
                eval_overrides: Callable[[Path], list[str]] | None = None) -> list[RunResult]:
    """Train and score every network variant x seed, then score each classical method once.

    Run folders go under `runs_dir` (`<variant>_seed<seed>`, its `_eval` twin, `<method>_eval`);
    `overrides(run_dir)` gives the train/eval overrides of a run writing to `run_dir`, or of the
    trainings only when `eval_overrides(run_dir)` gives the evaluations' (another store: a
    zero-shot study); `train_extra` are further overrides of the network trainings only (e.g.
    `model.prior=...`; the evaluation reads them back from the checkpoint).
    """
    scoring = eval_overrides or overrides
    results: list[RunResult] = []
    for seed in seeds:
        for variant in variants:
            run_dir = runs_dir / f"{variant}_seed{seed}"
            log(f"{dataset}: train {variant} seed {seed}")
            ckpt, train_s = train_network(dataset, variant, seed, overrides(run_dir), budget, run_dir, split, train_extra)
            eval_dir = run_dir.with_name(run_dir.name + "_eval")
            result = evaluate_method(dataset, variant, scoring(eval_dir), eval_dir, split, ckpt_path=ckpt, seed=seed)
            result.train_s, result.checkpoint = train_s, str(ckpt)
            log(f"{dataset}: {variant} seed {seed}: rmse {result.metrics.get('rmse'):.4f}, "
                f"train {train_s:.0f} s, eval {result.eval_s:.0f} s")
            results.append(result)
    for method in classical:
        eval_dir = runs_dir / f"{method}_eval"
        log(f"{dataset}: evaluate {method}")
        result = evaluate_method(dataset, method, scoring(eval_dir), eval_dir, split)
        log(f"{dataset}: {method}: rmse {result.metrics.get('rmse'):.4f}, eval {result.eval_s:.0f} s")
        results.append(result)
    return results


def save_results(results: Sequence[RunResult], path: Path) -> None:
    """Every run's raw metrics as JSON (beside the report, for re-plotting without re-running)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.__dict__ for r in results], indent=1, default=float))


# ----------------------------------------------------------------------------------------
# Aggregation and report
# ----------------------------------------------------------------------------------------
def group_by_method(results: Sequence[RunResult], dataset: str) -> dict[str, list[RunResult]]:
    """Runs of `dataset` per method, in first-seen order."""
    out: dict[str, list[RunResult]] = {}
    for r in results:
        if r.dataset == dataset:
            out.setdefault(r.method, []).append(r)
    return out


def best_method(groups: Mapping[str, list[RunResult]], metric: str, higher_is_better: bool) -> str | None:
    """The method with the best mean of `metric` over seeds (None when none is finite)."""
    scored = {m: mean_std(r.metrics.get(metric, float("nan")) for r in runs)[0] for m, runs in groups.items()}
    scored = {m: v for m, v in scored.items() if math.isfinite(v)}
    if not scored:
        return None
    return (max if higher_is_better else min)(scored, key=scored.get)


def metrics_table(groups: Mapping[str, list[RunResult]], columns: Sequence[tuple[str, str]], digits: int = 3) -> str:
    """Markdown table: one row per method, `columns` = (metric key, header), 'mean ± std'
    over seeds, plus seeds and mean wall time per run."""
    from nowcast_infill.utils.tables import markdown_table

    rows = []
    for method, runs in groups.items():
        row: dict[str, Any] = {"method": method, "kind": runs[0].kind, "seeds": len(runs)}
        for key, header in columns:
            row[header] = format_mean_std([r.metrics.get(key, float("nan")) for r in runs], digits)
        # Pixels scored per run (the same for every method of a fair comparison) and the
        # windows/pixels a classical method answered with its documented fallback.
        row["n_pixels"] = "/".join(sorted({str(int(r.metrics.get("scored_pixels", -1))) for r in runs}))
        row["fallbacks"] = "/".join(sorted({str(int(r.metrics.get("fallbacks", 0))) for r in runs}))
        train_s = mean_std(r.train_s for r in runs)[0]
        row["train s/run"] = "–" if math.isnan(train_s) else f"{train_s:.0f}"
        row["eval s/run"] = f"{mean_std(r.eval_s for r in runs)[0]:.0f}"
        rows.append(row)
    return markdown_table(rows, ["method", "kind", "seeds", *[h for _, h in columns], "n_pixels", "fallbacks",
                                 "train s/run", "eval s/run"])


def provenance_block(prov: Mapping[str, str], budgets: Mapping[str, Budget], seeds: Sequence[int], total_s: float) -> str:
    """Command, commit, date, machine, budget per dataset, seeds and total wall time, as a list."""
    return "\n".join([
        f"- command: `{prov['command']}`",
        f"- commit: `{prov['commit']}`",
        f"- date: {prov['date']}",
        f"- machine: {prov['machine']}",
        *[f"- budget per network run, {name}: {budget.describe()}" for name, budget in budgets.items()],
        f"- seeds: {list(seeds)} (networks; the classical baselines are deterministic and run once)",
        f"- total wall time of the script: {total_s / 60:.1f} min",
    ]) + "\n"


def winners_notes(groups: Mapping[str, list[RunResult]], metrics: Sequence[tuple[str, str, bool]]) -> list[str]:
    """One sentence per (metric key, label, higher is better): the best method by mean, and
    whether a classical baseline beats every network variant."""
    notes = []
    for key, label, higher in metrics:
        best = best_method(groups, key, higher)
        if best is None:
            notes.append(f"{label}: no method produced a finite value.")
            continue
        nets = {m: r for m, r in groups.items() if r[0].kind == "network"}
        bases = {m: r for m, r in groups.items() if r[0].kind == "baseline"}
        best_net, best_base = best_method(nets, key, higher), best_method(bases, key, higher)
        value = mean_std(r.metrics.get(key, float("nan")) for r in groups[best])[0]
        text = f"{label}: best is **{best}** ({value:.3f})"
        if best in bases and best_net is not None:
            net_value = mean_std(r.metrics.get(key, float("nan")) for r in nets[best_net])[0]
            text += f"; the classical baseline beats every network (best network: {best_net}, {net_value:.3f})"
        elif best in nets and best_base is not None:
            base_value = mean_std(r.metrics.get(key, float("nan")) for r in bases[best_base])[0]
            text += f"; best classical baseline: {best_base} ({base_value:.3f})"
        notes.append(text + ".")
    return notes


def keep_small(path: Path) -> Path:
    """Refuse a report figure over MAX_FIGURE_BYTES (the repository keeps them in git)."""
    size = path.stat().st_size
    if size > MAX_FIGURE_BYTES:
        raise RuntimeError(f"{path}: {size} bytes > {MAX_FIGURE_BYTES}; lower the figure's dpi or size.")
    return path


def bar_chart(groups: Mapping[str, list[RunResult]], metric: str, label: str, title: str, path: Path) -> Path:
    """Bars of the mean of `metric` per method, error bars = std over seeds."""
    from nowcast_infill import viz

    names = list(groups)
    stats = [mean_std(r.metrics.get(metric, float("nan")) for r in groups[m]) for m in names]
    colours = ["tab:blue" if groups[m][0].kind == "network" else "tab:grey" for m in names]
    return keep_small(viz.bar_chart(names, [s[0] for s in stats], [s[1] for s in stats], colours, label, title, path))


def lead_time_plot(groups: Mapping[str, list[RunResult]], panels: Sequence[tuple[str, str]], n_leads: int,
                   step_min: float, title: str, path: Path) -> Path:
    """One panel per (metric, label): mean over seeds of `{metric}/lead{k}` against lead time
    in minutes, shaded ± std, networks solid and baselines dashed."""
    from nowcast_infill import viz

    leads = np.arange(1, n_leads + 1)
    drawn = []
    for metric, label in panels:
        series = []
        for method, runs in groups.items():
            stats = [mean_std(r.metrics.get(f"{metric}/lead{k}", float("nan")) for r in runs) for k in leads]
            mean = np.array([s[0] for s in stats])
            std = np.array([0.0 if math.isnan(s[1]) else s[1] for s in stats])
            series.append((method, leads * step_min, mean, std, runs[0].kind == "network"))
        drawn.append((label, series))
    return keep_small(viz.lead_time_plot(drawn, title, path))


def copy_figure(source: str | Path, path: Path, max_width_px: int = 1000) -> Path:
    """Copy a PNG written by ni-eval into the report folder, downscaled if needed to stay small."""
    from nowcast_infill import viz

    return keep_small(viz.downscaled_copy(source, path, max_width_px))


def log(message: str) -> None:
    """One progress line with a timestamp, flushed (the scripts run under nohup)."""
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)
