"""`ni-eval`: score a checkpoint or a classical baseline on one split with the fixed evaluation masks.

Writes into `paths.output_dir`: `metrics.csv`, `metrics.md`, `figures/*.png` (input with
hole / truth / prediction / error, or a strip over lead times), `eval_masks.npz` (the hole
masks scored, infill only) and `config.yaml`; metrics, figures and the table also go to the
configured loggers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from nowcast_infill.checkpoint_io import load_module as load_checkpoint_module
from nowcast_infill.cli.checks import check_run_inputs, writable_output_dir
from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.cli.train import build_datamodule, build_module, build_trainer
from nowcast_infill.config_schema import validate_targets, validate_values
from nowcast_infill.errors import BadValueError
from nowcast_infill.utils.config import output_dir_outside_hydra, print_config_tree, register_resolvers
from nowcast_infill.utils.logging import current_rank, get_logger, rank_zero_print
from nowcast_infill.utils.results import run_record, write_run_record
from nowcast_infill.utils.tables import log_table, markdown_table, metrics_row, write_metrics_tables

if TYPE_CHECKING:
    import lightning as L

log = get_logger(__name__)
register_resolvers()
SPLITS = ("test", "val")


def load_module(cfg: DictConfig, datamodule: L.LightningDataModule) -> tuple[L.LightningModule, str | None]:
    """(module, checkpoint path to restore through the Trainer or None) for `cfg`."""
    from nowcast_infill.models.module import RadarModule

    _check_model_choice(cfg)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        path = Path(ckpt_path)
        module = load_checkpoint_module(RadarModule, ckpt_path)  # weights-only; CheckpointError names the file
        for key in ("task", "in_frames", "out_frames"):
            want = cfg.task.name if key == "task" else int(cfg.task[key])
            if module.hparams[key] != want:
                raise BadValueError(
                    f"{path}: the checkpoint was trained with {key}={module.hparams[key]} but the config asks "
                    f"task {key}={want}; evaluate with the task it was trained on (task=..., task.past=...)."
                )
        return module, str(path)
    return build_module(cfg, datamodule), None


def _check_model_choice(cfg: DictConfig) -> None:
    """A trainable network needs its checkpoint; a baseline is built from the config."""
    if cfg.get("ckpt_path") or str(cfg.model.get("_target_", "")).endswith("BaselineModule"):
        return
    raise BadValueError(
        f"model={cfg.model.get('name')} is a trainable network: pass ckpt_path=<run>/checkpoints/best-*.ckpt, "
        "or choose a classical baseline (model=nearest|linear|biharmonic|laplace|temporal_linear|temporal_flow|persistence|extrapolation|sprog)."
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.split`; returns the `{split}/...` metrics plus `output_dir` and the table paths."""
    output_dir_outside_hydra(cfg)  # a config composed in a notebook runs as well
    output_dir = writable_output_dir(cfg.paths.output_dir, "paths.output_dir")
    split = cfg.get("split", "test")
    if split not in SPLITS:
        raise BadValueError(f"split={split}: not a split ni-eval scores; set split=test or split=val.")
    plain = validate_values(cfg, "eval")
    _check_model_choice(cfg)
    check_run_inputs(cfg)
    validate_targets(plain)
    import lightning as L  # after the checks: they run in about a second, torch takes several

    from nowcast_infill.utils.instantiate import finish_loggers, instantiate_callbacks, instantiate_loggers
    from nowcast_infill.utils.logging import quiet_known_noise

    quiet_known_noise()

    print_config_tree(cfg, save_to=output_dir / "config.yaml")
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    module, ckpt_path = load_module(cfg, datamodule)
    module.hparams.n_log_images = int(cfg.get("n_figures", module.hparams.get("n_log_images", 2)))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer = build_trainer(cfg, instantiate_callbacks(cfg.get("callbacks")), loggers)
    if split == "test":
        raw = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    else:
        raw = trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    metrics = {k: float(v) for k, v in (raw[0] if raw else {}).items()}

    label = {
        "model": str(module.hparams.get("name", cfg.model.get("name"))),
        "task": str(module.hparams.task),
        "split": split,
        "checkpoint": Path(ckpt_path).name if ckpt_path else "",
    }
    results: dict[str, Any] = dict(metrics)
    if current_rank() == 0:
        row = metrics_row(label, metrics, split)
        csv_path, md_path = write_metrics_tables([row], output_dir / "metrics")
        # metrics.json too, so that `ni-compare` puts evaluations (e.g. baselines) beside trained runs
        record = run_record(cfg, {**metrics, "output_dir": str(output_dir)}, split, model=label["model"])
        results.update(metrics_csv=str(csv_path), metrics_md=str(md_path), row=row,
                       metrics_json=str(write_run_record(output_dir, record)))
        rank_zero_print(markdown_table([row]))
        _save_figures(module, output_dir)
        _save_eval_masks(datamodule, output_dir)
        log_table(trainer.loggers, "metrics_table", row)
    finish_loggers(trainer.loggers)
    results["output_dir"] = str(output_dir)
    return results


def _save_figures(module: L.LightningModule, output_dir: Path) -> None:
    import matplotlib.pyplot as plt

    from nowcast_infill.utils.plotting import save_figure

    for name, fig in getattr(module, "test_figures", None) or []:
        save_figure(fig, output_dir / "figures" / f"{name}.png")
        plt.close(fig)


def _save_eval_masks(datamodule, output_dir: Path) -> None:
    masks = getattr(datamodule, "eval_masks", None)
    if masks is None:
        return
    from nowcast_infill.data.masks import save_mask_set

    spec = getattr(datamodule, "masks", None) or {}
    seed = int(getattr(datamodule, "eval_mask_spec", {}).get("seed", 0))
    save_mask_set(output_dir / "eval_masks.npz", masks.astype(bool), spec, seed)


@hydra_command("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
