"""`demo(cfg)` (`ni-demo`): generate the synthetic store, train the four infilling variants briefly, evaluate
them and the classical baselines with the same fixed masks, print one table.

Everything lands in `paths.output_dir`: `train/<variant>/` (checkpoints, W&B offline run,
CSV logs), `eval/<name>/` (metrics, figures, masks), `results.md` and `results.csv`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nowcast_infill.errors import BadValueError
from nowcast_infill.pipeline.fitting import train
from nowcast_infill.pipeline.inputs import (
    config_int,
    writable_output_dir,
    writable_output_store,
)
from nowcast_infill.pipeline.scoring import evaluate
from nowcast_infill.utils.config import CONFIG_DIR, compose_config, register_resolvers
from nowcast_infill.utils.logging import rank_zero_print
from nowcast_infill.utils.tables import markdown_table, write_metrics_tables

register_resolvers()


def ensure_store(cfg: DictConfig) -> Path:
    """The synthetic store at `cfg.store`, written with `cfg.synthetic` when absent."""
    from nowcast_infill.data.synthetic import write_synthetic_store

    path = Path(cfg.store)
    if path.exists():
        rank_zero_print(f"using the synthetic store {path}")
        return path
    start = time.perf_counter()
    write_synthetic_store(path, **dict(cfg.synthetic))
    rank_zero_print(f"wrote the synthetic store {path} in {time.perf_counter() - start:.1f} s")
    return path


def _common(cfg: DictConfig, store: Path, out: Path) -> list[str]:
    return [
        f"task={cfg.task.name}",
        f"data.store={store}",
        f"paths.data_dir={store.parent}",
        f"paths.output_dir={out}",
        f"seed={cfg.seed}",
        f"group={cfg.group}",
    ]


def check_demo_config(cfg: DictConfig) -> Path:
    """Before any work: every variant and baseline has its config, the sizes are integers, the
    output folder and the store can be written. Returns the output folder."""
    for key, group, pattern in (("variants", "experiment", f"{cfg.task.name}_{{}}"), ("baselines", "model", "{}")):
        known = sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
        for name in cfg[key]:
            if pattern.format(name) not in known:
                choices = [k.removeprefix(pattern.format("")) for k in known if k.startswith(pattern.format(""))]
                raise BadValueError(
                    f"{key}: {name!r} has no config conf/{group}/{pattern.format(name)}.yaml; "
                    f"choose from {', '.join(choices)}."
                )
    for key in ("n_times", "ny", "nx", "seed"):
        if key in cfg.synthetic:
            config_int(cfg, f"synthetic.{key}", minimum=0 if key == "seed" else 1)
    out_root = writable_output_dir(cfg.paths.output_dir, "paths.output_dir")
    writable_output_store(cfg.store, "store")
    return out_root


def demo(cfg: DictConfig) -> dict[str, Any]:
    """Run the demo; returns {'rows': [...], 'results_md': path, 'output_dir': path, 'wandb_runs': [...]}."""
    out_root = check_demo_config(cfg)
    store = ensure_store(cfg)
    rows, wandb_runs, timings = [], [], {}
    for variant in cfg.variants:
        start = time.perf_counter()
        train_dir = out_root / "train" / variant
        trained = train(
            compose_config(
                "train",
                [f"experiment={cfg.task.name}_{variant}", *_common(cfg, store, train_dir), *cfg.train_overrides],
            )
        )
        wandb_runs += sorted(str(p) for p in (train_dir / "wandb").glob("offline-run-*"))
        evaluated = evaluate(
            compose_config(
                "eval",
                [
                    f"ckpt_path={trained['best_model_path'] or trained['last_model_path']}",
                    *_common(cfg, store, out_root / "eval" / variant),
                    *cfg.eval_overrides,
                ],
            )
        )
        rows.append(evaluated["row"])
        timings[variant] = time.perf_counter() - start
    for name in cfg.baselines:
        start = time.perf_counter()
        evaluated = evaluate(
            compose_config(
                "eval", [f"model={name}", *_common(cfg, store, out_root / "eval" / name), *cfg.eval_overrides]
            )
        )
        rows.append(evaluated["row"])
        timings[name] = time.perf_counter() - start
    csv_path, md_path = write_metrics_tables(rows, out_root / "results")
    table = markdown_table(rows)
    rank_zero_print("\n" + table)
    rank_zero_print("seconds per entry (train + eval): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    rank_zero_print(f"results: {md_path} and {csv_path}")
    rank_zero_print(f"figures: {out_root / 'eval'}/<name>/figures/*.png")
    for run in wandb_runs:
        rank_zero_print(f"W&B offline run: {run}  (upload with `wandb sync {run}`)")
    return {"rows": rows, "results_md": str(md_path), "output_dir": str(out_root), "wandb_runs": wandb_runs}
