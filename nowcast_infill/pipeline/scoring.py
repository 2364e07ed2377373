"""`evaluate(cfg)`: score a checkpoint or a classical method on one split with the fixed evaluation
masks (`ni-eval`).

Writes into `paths.output_dir`: `metrics.csv`, `metrics.md`, `metrics.json`, `figures/*.png`
(input with hole / truth / prediction / error, or a strip over lead times), `eval_masks.npz`
(the hole masks scored, infill only) and `config.yaml`; metrics, figures and the table also go
to the configured loggers.

A checkpoint brings its own task and normaliser (zero-shot on another store: `ni-eval
ckpt_path=X data.store=Y`); see `pipeline.task_choice`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from nowcast_infill.checkpoint_io import TrainedModel, read_trained_model
from nowcast_infill.errors import BadValueError
from nowcast_infill.pipeline.build import (
    CLASSICAL,
    build_datamodule,
    build_module,
    build_trainer,
    model_kind,
)
from nowcast_infill.pipeline.config_checks import validate_targets, validate_values
from nowcast_infill.pipeline.inputs import check_run_inputs, writable_output_dir
from nowcast_infill.pipeline.task_choice import adopt_checkpoint_task, given_task_keys
from nowcast_infill.training.callbacks import FigureCallback
from nowcast_infill.utils.config import (
    output_dir_outside_hydra,
    print_config_tree,
    register_resolvers,
)
from nowcast_infill.utils.logging import current_rank, get_logger, rank_zero_print
from nowcast_infill.utils.results import run_record, write_run_record
from nowcast_infill.utils.tables import (
    log_table,
    markdown_table,
    metrics_row,
    write_metrics_tables,
)

if TYPE_CHECKING:
    import lightning as L

    from nowcast_infill.data.datamodule import RadarDataModule

log = get_logger(__name__)
register_resolvers()
SPLITS = ("test", "val")


def _check_model_choice(cfg: DictConfig) -> None:
    """A trainable network needs its checkpoint; a classical method is built from the config."""
    if cfg.get("ckpt_path") or model_kind(cfg) == CLASSICAL:
        return
    raise BadValueError(
        f"model={cfg.model.get('name')} is a trainable network: pass ckpt_path=<run>/checkpoints/best-*.ckpt, "
        "or choose a classical baseline (model=nearest|linear|biharmonic|laplace|temporal_linear|temporal_flow|"
        "persistence|extrapolation|sprog)."
    )


def evaluate(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate `cfg.split`; returns the `{split}/...` metrics plus `output_dir` and the table paths.

    `overrides`: the command line's overrides, which tell which task keys the user gave (a
    checkpoint's own task replaces the others); None (a config composed in a script) takes
    the config's task as given, so it must match the checkpoint's.
    """
    output_dir_outside_hydra(cfg)  # a config composed in a notebook runs as well
    output_dir = writable_output_dir(cfg.paths.output_dir, "paths.output_dir")
    split = cfg.get("split", "test")
    if split not in SPLITS:
        raise BadValueError(f"split={split}: not a split ni-eval scores; set split=test or split=val.")
    plain = validate_values(cfg, "eval")
    _check_model_choice(cfg)
    check_run_inputs(cfg)
    ckpt_path = cfg.get("ckpt_path")
    trained = read_trained_model(ckpt_path) if ckpt_path else None  # CheckpointError naming the file
    if trained is not None and adopt_checkpoint_task(cfg, trained.task, str(ckpt_path), given_task_keys(overrides)):
        plain = validate_values(cfg, "eval")  # the checkpoint's task, checked as the user's would be
    validate_targets(plain)
    import lightning as L  # after the checks: they run in about a second, torch takes several

    from nowcast_infill.utils.instantiate import (
        finish_loggers,
        instantiate_callbacks,
        instantiate_loggers,
    )
    from nowcast_infill.utils.logging import quiet_known_noise

    quiet_known_noise()

    print_config_tree(cfg, save_to=output_dir / "config.yaml")
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    module = _module(cfg, datamodule, trained)
    module.hparams["n_log_images"] = int(cfg.get("n_figures", module.hparams.get("n_log_images", 2)))
    loggers = instantiate_loggers(cfg.get("logger"))
    try:
        split = cfg.get("split", "test")
        figures = FigureCallback(output_dir if split == "test" else None, stage=split)
        trainer = build_trainer(cfg, [*instantiate_callbacks(cfg.get("callbacks")), figures], loggers)
        results = _score(cfg, trainer, module, datamodule, trained, output_dir)
    finally:
        finish_loggers(loggers)
    return results


def _module(cfg: DictConfig, datamodule: RadarDataModule, trained: TrainedModel | None) -> L.LightningModule:
    """The checkpoint's network, with the DataModule set to its normaliser; else the classical method of `cfg.model`."""
    if trained is None:
        return build_module(cfg, datamodule)
    from nowcast_infill.inference.checkpoint import checkpoint_normalizer
    from nowcast_infill.training.module import RadarModule

    if trained.normalizer_state is not None:
        # Before setup: the training normaliser, no statistics fitted, read or written for this
        # store (zero-shot on another store). An old checkpoint without one: the store's statistics.
        datamodule.use_normalizer(checkpoint_normalizer(trained))
    return trained.load_module(RadarModule)


def _score(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    trained: TrainedModel | None,
    output_dir: Path,
) -> dict[str, Any]:
    split = cfg.get("split", "test")
    ckpt_path = trained.path if trained is not None else None
    run = trainer.test if split == "test" else trainer.validate
    raw = run(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    metrics = {k: float(v) for k, v in (raw[0] if raw else {}).items()}
    label = {
        "model": trained.model_name if trained is not None else str(cfg.model.get("name")),
        "task": str(cfg.task.name),
        "split": split,
        "checkpoint": Path(ckpt_path).name if ckpt_path else "",
    }
    results: dict[str, Any] = dict(metrics)
    if current_rank() == 0:
        row = metrics_row(label, metrics, split)
        csv_path, md_path = write_metrics_tables([row], output_dir / "metrics")
        # metrics.json too, so that `ni-compare` puts evaluations (e.g. baselines) beside trained runs
        record = run_record(cfg, {**metrics, "output_dir": str(output_dir)}, split, model=label["model"])
        results.update(
            metrics_csv=str(csv_path),
            metrics_md=str(md_path),
            row=row,
            metrics_json=str(write_run_record(output_dir, record)),
        )
        rank_zero_print(markdown_table([row]))
        _save_eval_masks(datamodule, output_dir)
        log_table(trainer.loggers, "metrics_table", row)
    results["output_dir"] = str(output_dir)
    return results


def _save_eval_masks(datamodule, output_dir: Path) -> None:
    masks = getattr(datamodule, "eval_masks", None)
    if masks is None:
        return
    from nowcast_infill.data.masks import save_mask_set

    spec = getattr(datamodule, "masks", None) or {}
    seed = int(getattr(datamodule, "eval_mask_spec", {}).get("seed", 0))
    save_mask_set(output_dir / "eval_masks.npz", masks.astype(bool), spec, seed)
