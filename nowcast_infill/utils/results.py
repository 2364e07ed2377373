"""Results of runs and sweeps: `<run>/metrics.json`, the terminal table, and the sweep summary.

One run writes `metrics.json` (labels + every test metric) and `metrics.csv`/`metrics.md`
(through `utils.tables`, the same writer `ni-eval` uses). A sweep (a Hydra multirun, or a
Slurm array of `slurm/sweep_array.sbatch`) is summarised from the `metrics.json` of its runs:
one row per run, and mean ± std over seeds per variant, where a variant is a task, a model and
the overrides that differ between the compared runs (the seed aside).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nowcast_infill.utils.tables import HEADLINE, markdown_table, metrics_row, write_metrics_tables

RUN_METRICS_FILE = "metrics.json"
# Overrides that place or shorten a run but do not change what is compared: left out of
# variant labels (the Hydra sweep sub-folder names leave out the same keys, see
# conf/hydra/default.yaml `exclude_keys`).
NOISE_KEYS = frozenset(
    {
        "ckpt_path",
        "run_name",
        "paths.data_dir",
        "paths.log_dir",
        "paths.output_dir",
        "data.store",
        "data.stats_path",
        "data.num_workers",
        "trainer.devices",
        "trainer.num_nodes",
        "logger",
        "callbacks",
        "callbacks.progress_bar",
        "trainer.limit_train_batches",
        "trainer.limit_val_batches",
        "trainer.limit_test_batches",
    }
)
# Keys already shown by the task / model columns of a row.
LABEL_KEYS = frozenset({"task", "model", "experiment", "seed"})
# Environment variables through which a sweep tells its runs what it sweeps (read by
# `swept_overrides`): the Hydra callback sets NI_SWEPT_KEYS, slurm/sweep_array.sbatch sets
# NI_SWEPT_OVERRIDES to the line of the sweep file.
SWEPT_KEYS_ENV = "NI_SWEPT_KEYS"
SWEPT_OVERRIDES_ENV = "NI_SWEPT_OVERRIDES"


# ----------------------------------------------------------------------------- provenance
def git_commit(folder: str | Path | None = None) -> str | None:
    """`git rev-parse HEAD` of the checkout holding `folder` (default: this package), with
    '-dirty' when tracked files are modified; None outside a git checkout (an installed wheel)."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else the platform's), for benchmark provenance."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def override_key(override: str) -> str:
    """'+trainer.limit_val_batches=2' -> 'trainer.limit_val_batches'."""
    return override.split("=", 1)[0].lstrip("+~")


def _hydra_config():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def sweep_id() -> str | None:
    """The sweep this process runs in: the multirun folder's name (Hydra multirun, basic or
    Slurm launcher), else the Slurm array job id (slurm/sweep_array.sbatch); None for a single run."""
    from hydra.types import RunMode

    hydra_cfg = _hydra_config()
    if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN:
        return Path(hydra_cfg.runtime.output_dir).parent.name
    return os.environ.get("SLURM_ARRAY_JOB_ID") or None


def run_overrides() -> list[str]:
    """The command-line overrides of this run (`hydra.overrides.task`); [] without a Hydra run."""
    hydra_cfg = _hydra_config()
    return [str(o) for o in hydra_cfg.overrides.task] if hydra_cfg is not None else []


def swept_overrides() -> list[str]:
    """The overrides this run got from its sweep (e.g. ['model=lstm', 'seed=2']); [] outside a sweep."""
    line = os.environ.get(SWEPT_OVERRIDES_ENV)
    if line and os.environ.get("SLURM_ARRAY_JOB_ID"):
        return shlex.split(line)
    return multirun_swept_overrides() if sweep_id() is not None else []


def multirun_swept_overrides() -> list[str]:
    """This Hydra job's overrides whose keys its multirun sweeps (NI_SWEPT_KEYS, set by the
    SweepSummary callback); [] when they are not known."""
    keys = set(filter(None, os.environ.get(SWEPT_KEYS_ENV, "").split(",")))
    return [o for o in run_overrides() if override_key(o) in keys] if keys else []


def variant_suffix(overrides: Iterable[str]) -> str:
    """'_lr=0.001' for the overrides that define a variant beyond task, model and seed."""
    kept = [o.lstrip("+") for o in overrides if override_key(o) not in LABEL_KEYS | NOISE_KEYS]
    return "".join(f"_{o}" for o in kept)


# ----------------------------------------------------------------------------- one run
def run_record(cfg, results: Mapping[str, Any], stage: str = "test", model: str | None = None) -> dict[str, Any]:
    """What `<run>/metrics.json` holds: labels of the run and its `{stage}/...` metrics
    (`model`: the variant when it is not `cfg.model.name`, e.g. that of an evaluated checkpoint)."""
    metrics = {k: float(v) for k, v in results.items() if k.startswith(f"{stage}/") and _is_number(v)}
    checkpoint = results.get("best_model_path") or results.get("last_model_path") or cfg.get("ckpt_path") or None
    return {
        "run": Path(str(results.get("output_dir", cfg.paths.output_dir))).name,
        "task": str(cfg.task.name),
        "model": str(model or cfg.model.get("name")),
        "seed": int(cfg.seed),
        "sweep": sweep_id(),
        "group": sweep_id() or str(cfg.get("group", "")) or None,  # as W&B's group (conf/logger/wandb.yaml)
        "overrides": run_overrides(),
        "swept": swept_overrides(),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "commit": git_commit(),
        "split": stage,
        "metrics": metrics,
    }


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def record_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """Flat table row of a run record: labels, then metrics without their `{split}/` prefix."""
    label = {
        "model": record["model"],
        "task": record["task"],
        "seed": record["seed"],
        "sweep": record.get("sweep") or "",
        "run": record.get("run", ""),
        "checkpoint": Path(record["checkpoint"]).name if record.get("checkpoint") else "",
    }
    return metrics_row(label, record.get("metrics", {}), record.get("split", "test"))


def write_run_record(output_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write `metrics.json` (what ni-compare reads) into the run folder."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / RUN_METRICS_FILE
    _write_atomically(json_path, json.dumps(record, indent=2, sort_keys=False, default=_json_default) + "\n")
    return json_path


def write_run_results(output_dir: str | Path, record: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write `metrics.json` and `metrics.csv`/`metrics.md` (one row) into the run folder."""
    json_path = write_run_record(output_dir, record)
    csv_path, _ = write_metrics_tables([record_row(record)], Path(output_dir) / "metrics")
    return json_path, csv_path


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def headline_table(metrics: Mapping[str, float], stage: str = "test") -> str:
    """Markdown table of the headline metrics: one row, or one per lead time and 'all' for nowcasts."""
    row = metrics_row({"lead": "all"}, {k: v for k, v in metrics.items() if "/lead" not in k}, stage)
    leads = sorted({int(k.rsplit("/lead", 1)[1]) for k in metrics if k.startswith(f"{stage}/") and "/lead" in k})
    rows = []
    for lead in leads:
        suffix = f"/lead{lead}"
        rows.append(
            metrics_row(
                {"lead": str(lead)}, {k[: -len(suffix)]: v for k, v in metrics.items() if k.endswith(suffix)}, stage
            )
        )
    rows.append(row)
    columns = (["lead"] if leads else []) + [c for c in HEADLINE if c in row]
    return markdown_table(rows, columns)


# ----------------------------------------------------------------------------- statistics
def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std, count) of the finite values; std is NaN for fewer than two."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    std = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    return float(finite.mean()), std, int(finite.size)


def format_mean_std(values: Sequence[float], digits: int = 3) -> str:
    """'m ± s' over seeds ('m' alone for one value, 'n/a' when none is finite; the count
    is added when some seeds gave no finite value)."""
    mean, std, n = mean_std(values)
    if n == 0:
        return "n/a"
    text = f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return text if n == len(values) else f"{text} (n={n})"


# ----------------------------------------------------------------------------- sweeps
def find_run_records(paths: Iterable[str | Path], sweep: str | None = None) -> list[dict[str, Any]]:
    """The run records in `paths` (run folders, or folders searched for `metrics.json`),
    in path order, optionally only those of `sweep`; a run found twice (a folder and its
    parent given) counts once. Each gets `path` (its folder)."""
    from nowcast_infill.errors import BadValueError, MissingInputError

    records, seen = [], set()
    for given in paths:
        folder = Path(given)
        if folder.is_file() and folder.name == RUN_METRICS_FILE:
            files = [folder]
        elif folder.is_dir():
            files = sorted(folder.rglob(RUN_METRICS_FILE))
        else:
            raise MissingInputError(
                f"{given}: no such run or sweep folder; pass folders that hold <run>/{RUN_METRICS_FILE}."
            )
        for file in files:
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            try:
                record = json.loads(file.read_text())
            except (OSError, ValueError) as err:
                raise BadValueError(
                    f"{file}: not a readable run record ({err}); delete it or rerun that run."
                ) from None
            if sweep is not None and str(record.get("sweep")) != str(sweep):
                continue
            record["path"] = str(file.parent)
            records.append(record)
    return records


def _variant_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Override keys (beyond task/model/seed and noise) whose values differ between `records`."""
    values: dict[str, set[str]] = {}
    keys_in_order: list[str] = []
    for record in records:
        for override in record.get("overrides", []):
            key = override_key(override)
            if key in LABEL_KEYS or key in NOISE_KEYS or key.startswith("hydra."):
                continue
            if key not in values:
                keys_in_order.append(key)
            values.setdefault(key, set())
    for key in keys_in_order:
        for record in records:
            given = {override_key(o): o.split("=", 1)[1] if "=" in o else "" for o in record.get("overrides", [])}
            values[key].add(given.get(key, "(default)"))
    return [k for k in keys_in_order if len(values[k]) > 1]


def variant_label(record: Mapping[str, Any], keys: Sequence[str]) -> str:
    given = {override_key(o): o.split("=", 1)[1] if "=" in o else "" for o in record.get("overrides", [])}
    extra = " ".join(f"{k}={given.get(k, '(default)')}" for k in keys)
    return f"{record['task']}_{record['model']}" + (f" {extra}" if extra else "")


def summarize(
    records: Sequence[Mapping[str, Any]], metrics: Sequence[str] = HEADLINE
) -> tuple[list[dict], list[dict], str]:
    """(one row per run, one row per variant with mean and std over seeds, Markdown of both)."""
    keys = _variant_keys(records)
    run_rows = []
    for record in records:
        row = {"variant": variant_label(record, keys), **record_row(record)}
        run_rows.append(row)
    present = [m for m in metrics if any(m in r for r in run_rows)]
    variants: dict[str, list[dict]] = {}
    for row in run_rows:
        variants.setdefault(row["variant"], []).append(row)
    variant_rows, shown = [], []
    for name, rows in variants.items():
        numeric: dict[str, Any] = {"variant": name, "runs": len(rows), "seeds": " ".join(str(r["seed"]) for r in rows)}
        text: dict[str, Any] = dict(numeric)
        for metric in present:
            values = [float(r.get(metric, float("nan"))) for r in rows]
            mean, std, _ = mean_std(values)
            numeric[f"{metric}_mean"], numeric[f"{metric}_std"] = mean, std
            text[metric] = format_mean_std(values, digits=4)
        variant_rows.append(numeric)
        shown.append(text)
    sweeps = sorted({str(r["sweep"]) for r in run_rows if r.get("sweep")})
    run_columns = ["variant", "seed", *(["sweep"] if len(sweeps) > 1 else []), "run", *present]
    markdown = (
        f"## Variants: mean ± std over seeds ({len(records)} runs"
        + (f", sweep {', '.join(sweeps)}" if sweeps else "")
        + ")\n\n"
        + markdown_table(shown, ["variant", "runs", "seeds", *present])
        + "\n## Runs\n\n"
        + markdown_table(run_rows, run_columns)
    )
    return run_rows, variant_rows, markdown


def write_summary(out_dir: str | Path, paths: Iterable[str | Path], sweep: str | None = None) -> tuple[Path, str, list]:
    """Summarise the runs in `paths` (of `sweep`, when given) into `out_dir`: `summary.md` (both
    tables), `summary.csv` (variants: mean and std columns) and `runs.csv` (every metric of
    every run). Return the Markdown path, its text and the records.

    Writers of one folder take turns (a lock file) and read the runs once they hold it, so when
    every run of a Slurm array summarises after writing its own metrics.json, the last one to
    take the lock writes the table over all of them. Nothing is written when there are no runs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".summary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = find_run_records(paths, sweep)
        if not records:
            return out_dir / "summary.md", "", records
        run_rows, variant_rows, markdown = summarize(records)
        write_metrics_tables(run_rows, out_dir / "runs", markdown=False)
        write_metrics_tables(variant_rows, out_dir / "summary", markdown=False)
        _write_atomically(out_dir / "summary.md", markdown)
    return out_dir / "summary.md", markdown, records


def _write_atomically(path: Path, text: str) -> None:
    """Readers never see a half-written file: write beside it, then rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
