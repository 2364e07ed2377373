"""`train(cfg)`: fit a model, then test the best checkpoint; returns the metrics (`ni-train`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from nowcast_infill.checkpoint_io import read_checkpoint
from nowcast_infill.errors import BadValueError, MissingInputError
from nowcast_infill.pipeline.build import (
    CLASSICAL,
    build_datamodule,
    build_module,
    build_trainer,
    model_kind,
    report_global_batch,
)
from nowcast_infill.pipeline.config_checks import validate_targets, validate_values
from nowcast_infill.pipeline.inputs import check_run_inputs, config_dict, writable_output_dir
from nowcast_infill.training.callbacks import FigureCallback
from nowcast_infill.utils.config import (
    output_dir_outside_hydra,
    print_config_tree,
    register_resolvers,
)
from nowcast_infill.utils.logging import (
    current_rank,
    get_logger,
    quiet_known_noise,
    rank_zero_print,
)

if TYPE_CHECKING:
    import lightning as L

# torch / Lightning are imported inside the functions that need them: a mistake on the
# command line is reported before they load (seconds on a busy machine).
log = get_logger(__name__)
register_resolvers()


def _scalars(metrics: Mapping) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _vet_checkpoint(ckpt_path: str | None) -> None:
    """Refuse a resume / test checkpoint that is missing or not loadable weights-only, before any work."""
    if ckpt_path is None:
        return
    if not Path(ckpt_path).is_file():
        raise MissingInputError(
            f"ckpt_path={ckpt_path} does not exist; point it at a .ckpt file (e.g. <run>/checkpoints/last.ckpt)."
        )
    read_checkpoint(ckpt_path)  # CheckpointError naming the file; Lightning's own load is weights-only too


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (unless `cfg.fit` is false), then test with the best checkpoint.

    Returns a dict of floats: the callback metrics after fitting and the test metrics, plus
    `best_model_path`, `last_model_path` and `output_dir` (strings). The loggers are finished
    also when the run fails, so a W&B run is closed rather than left to the next run.
    """
    output_dir_outside_hydra(cfg)  # a config composed in a notebook runs as well
    output_dir = writable_output_dir(cfg.paths.output_dir, "paths.output_dir")
    plain = validate_values(cfg, "train")
    if cfg.get("fit", True) and model_kind(cfg) == CLASSICAL:
        name = cfg.model.get("name")
        raise BadValueError(
            f"model={name} is a classical method (model.kind={CLASSICAL}): there is nothing to train; "
            f"score it with `ni-eval model={name}`, or train a network (model=lstm, ...)."
        )
    check_run_inputs(cfg)
    _vet_checkpoint(cfg.get("ckpt_path"))
    validate_targets(plain)
    import lightning as L  # after the checks: they run in about a second, torch takes several

    quiet_known_noise()

    from nowcast_infill.utils.distributed import leave_process_group
    from nowcast_infill.utils.instantiate import (
        finish_loggers,
        instantiate_callbacks,
        instantiate_loggers,
        without_logger_only_callbacks,
    )

    print_config_tree(cfg, save_to=output_dir / "config.yaml")
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    loggers = instantiate_loggers(cfg.get("logger"))
    try:
        callbacks = without_logger_only_callbacks(instantiate_callbacks(cfg.get("callbacks")), loggers)
        # sample panels: validation ones to the loggers, test ones also into <output_dir>/figures
        callbacks += [FigureCallback(None, stage="val"), FigureCallback(output_dir, stage="test")]
        trainer = build_trainer(cfg, callbacks, loggers)
        results = _fit_and_test(cfg, trainer, module, datamodule, output_dir)
    finally:
        finish_loggers(loggers)
    leave_process_group()
    return results


def optimized_value(cfg: DictConfig, results: dict[str, Any]) -> float | None:
    """`results[cfg.optimized_metric]` as a float for sweepers; None (with a warning) when it was not logged."""
    value = results.get(cfg.get("optimized_metric"))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        log.warning(f"optimized_metric={cfg.get('optimized_metric')} was not logged; logged: {sorted(results)}")
        return None
    return float(value)


def _fit_and_test(
    cfg: DictConfig, trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, output_dir: Path
) -> dict[str, Any]:
    report_global_batch(cfg, trainer)
    for logger in trainer.loggers:
        logger.log_hyperparams(config_dict(cfg))

    results: dict[str, Any] = {}
    if cfg.get("fit", True):
        ckpt_path = cfg.get("ckpt_path")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        results.update(_scalars(trainer.callback_metrics))

    best = ""
    checkpoint = getattr(trainer, "checkpoint_callback", None)
    if checkpoint is not None:
        best = checkpoint.best_model_path or ""
        results["last_model_path"] = getattr(checkpoint, "last_model_path", "") or ""
    results["best_model_path"] = best
    if cfg.get("test", True):
        fast = bool(cfg.trainer.get("fast_dev_run", False))
        if not best and not fast and cfg.get("fit", True):
            log.warning("no best checkpoint was saved (no checkpoint callback?): testing the weights in memory")
        # Without fitting, `ckpt_path` names the weights to test.
        test_ckpt = best or (None if cfg.get("fit", True) else cfg.get("ckpt_path"))
        test_metrics = trainer.test(
            module, datamodule=datamodule, ckpt_path=test_ckpt or None, verbose=False, weights_only=True
        )
        results.update(_scalars(test_metrics[0] if test_metrics else {}))
    results["output_dir"] = str(output_dir)
    results["global_step"] = int(trainer.global_step)
    if cfg.get("test", True):
        _report_test_results(cfg, trainer, results, output_dir)
    return results


def _report_test_results(cfg: DictConfig, trainer: L.Trainer, results: dict[str, Any], output_dir: Path) -> None:
    """Rank 0: the headline test metrics on the terminal, `metrics.json`/`metrics.csv` in the run
    folder, and a one-row table in the loggers that take tables (W&B)."""
    from nowcast_infill.utils.results import (
        headline_table,
        record_row,
        run_record,
        write_run_results,
    )
    from nowcast_infill.utils.tables import log_table

    if current_rank() != 0:
        return
    record = run_record(cfg, results)
    json_path, csv_path = write_run_results(output_dir, record)
    results["metrics_json"] = str(json_path)
    rank_zero_print(
        f"\ntest metrics of {record['task']}_{record['model']} seed {record['seed']} (mm/h; per lead time for nowcasts):\n"
        f"{headline_table(record['metrics'])}-> {json_path} and {csv_path.name}"
    )
    log_table(trainer.loggers, "summary_table", record_row(record))
