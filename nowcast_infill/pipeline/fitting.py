"""`ni-train`: fit a model, then test the best checkpoint; returns the metrics.

`train(cfg)` is the plain function (tests and scripts call it with a composed config);
`main` is the thin `@hydra.main` wrapper and returns `cfg.optimized_metric` for sweepers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from nowcast_infill.checkpoint_io import read_checkpoint
from nowcast_infill.cli.checks import check_run_inputs, writable_output_dir
from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.config_schema import validate_targets, validate_values
from nowcast_infill.errors import MissingInputError
from nowcast_infill.utils.config import output_dir_outside_hydra, print_config_tree, register_resolvers
from nowcast_infill.utils.logging import get_logger, quiet_known_noise, rank_zero_print

if TYPE_CHECKING:
    import lightning as L

# torch / Lightning are imported inside the functions that need them: a mistake on the
# command line is reported before they load (seconds on a busy machine).
log = get_logger(__name__)
register_resolvers()


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The DataModule of `cfg.data`, checked against `cfg.task`."""
    # Plain containers, not DictConfig: the DataModule's hyperparameters go into checkpoints,
    # which torch.load(weights_only=True) must be able to read back.
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    for name in ("in_frames", "out_frames"):
        have = getattr(datamodule, name, None)
        if have is not None and int(have) != int(cfg.task[name]):
            raise ValueError(
                f"task.{name}={cfg.task[name]} but data ({cfg.data._target_}) yields {name}={have}; "
                f"data takes task.past/future/context: check task.{name} matches them."
            )
    return datamodule


def build_module(cfg: DictConfig, datamodule: L.LightningDataModule | None = None) -> L.LightningModule:
    """The LightningModule of `cfg.model`; `aux_channels: null` is taken from the DataModule."""
    model_cfg = cfg.model
    if "aux_channels" in model_cfg and model_cfg.aux_channels is None:
        if datamodule is None:
            raise ValueError("model.aux_channels is null (= from the data) but no DataModule was given; set it explicitly.")
        model_cfg = model_cfg.copy()
        with open_dict(model_cfg):
            model_cfg.aux_channels = len(datamodule.aux_names)
    # Not recursive: the module keeps net/optimizer/scheduler as plain config (saved as
    # hyperparameters, so checkpoints rebuild without Hydra) and instantiates them itself.
    return hydra.utils.instantiate(model_cfg, _recursive_=False)


def build_trainer(cfg: DictConfig, callbacks: list | None = None, loggers: list | None = None) -> L.Trainer:
    """The Trainer of `cfg.trainer`. Without a progress-bar callback (and unless
    `trainer.enable_progress_bar=false`) it gets `progress_bar()` in place of Lightning's tqdm
    default: plain periodic lines when stdout is no terminal (Slurm logs), not \\r bars."""
    from lightning.pytorch.callbacks.progress import ProgressBar

    from nowcast_infill.utils.callbacks import progress_bar

    callbacks = list(callbacks or [])
    if cfg.trainer.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(progress_bar())
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def report_global_batch(cfg: DictConfig, trainer: L.Trainer) -> int:
    """Print per-device batch x devices x nodes x accumulation (rank 0) and return the product."""
    from nowcast_infill.utils.lr import global_batch_size

    per_device = int(cfg.data.batch_size)
    devices, nodes, accumulate = trainer.num_devices, trainer.num_nodes, trainer.accumulate_grad_batches
    total = global_batch_size(per_device, devices, nodes, accumulate)
    scaling = cfg.model.get("optimizer", {}).get("lr_scaling", "none") if "optimizer" in cfg.model else "none"
    rank_zero_print(
        f"global batch = {per_device} per device x {devices} devices x {nodes} nodes x {accumulate} accumulation "
        f"= {total} (lr scaling: {scaling})"
    )
    return total


def _scalars(metrics: dict) -> dict[str, float]:
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
        raise MissingInputError(f"ckpt_path={ckpt_path} does not exist; point it at a .ckpt file (e.g. <run>/checkpoints/last.ckpt).")
    read_checkpoint(ckpt_path)  # CheckpointError naming the file; Lightning's own load is weights-only too


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (unless `cfg.fit` is false), then test with the best checkpoint.

    Returns a dict of floats: the callback metrics after fitting and the test metrics, plus
    `best_model_path`, `last_model_path` and `output_dir` (strings).
    """
    output_dir_outside_hydra(cfg)  # a config composed in a notebook runs as well
    output_dir = writable_output_dir(cfg.paths.output_dir, "paths.output_dir")
    plain = validate_values(cfg, "train")
    check_run_inputs(cfg)
    _vet_checkpoint(cfg.get("ckpt_path"))
    validate_targets(plain)
    import lightning as L  # after the checks: they run in about a second, torch takes several

    quiet_known_noise()

    from nowcast_infill.utils.distributed import leave_process_group
    from nowcast_infill.utils.instantiate import (finish_loggers, instantiate_callbacks, instantiate_loggers,
                                                   without_logger_only_callbacks)

    print_config_tree(cfg, save_to=output_dir / "config.yaml")
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = without_logger_only_callbacks(instantiate_callbacks(cfg.get("callbacks")), loggers)
    trainer = build_trainer(cfg, callbacks, loggers)
    report_global_batch(cfg, trainer)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

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
        test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt or None, verbose=False,
                                    weights_only=True)
        results.update(_scalars(test_metrics[0] if test_metrics else {}))
        _save_test_figures(module, output_dir)
    results["output_dir"] = str(output_dir)
    results["global_step"] = int(trainer.global_step)
    if cfg.get("test", True):
        _report_test_results(cfg, trainer, results, output_dir)
    finish_loggers(trainer.loggers)
    leave_process_group()
    return results


def _report_test_results(cfg: DictConfig, trainer: L.Trainer, results: dict[str, Any], output_dir: Path) -> None:
    """Rank 0: the headline test metrics on the terminal, `metrics.json`/`metrics.csv` in the run
    folder, and a one-row table in the loggers that take tables (W&B)."""
    from nowcast_infill.utils.logging import current_rank
    from nowcast_infill.utils.results import headline_table, record_row, run_record, write_run_results
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


def _save_test_figures(module: L.LightningModule, output_dir: Path) -> None:
    from nowcast_infill.utils.logging import current_rank
    from nowcast_infill.utils.plotting import save_figure

    import matplotlib.pyplot as plt

    figures = getattr(module, "test_figures", None) or []
    if current_rank() != 0:
        return
    for name, fig in figures:
        save_figure(fig, output_dir / "figures" / f"{name}.png")
        plt.close(fig)


@hydra_command("train")
def main(cfg: DictConfig) -> float | None:
    """ni-train; returns `cfg.optimized_metric` (for sweepers) or None when it was not logged."""
    results = train(cfg)
    value = results.get(cfg.get("optimized_metric"))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        log.warning(f"optimized_metric={cfg.get('optimized_metric')} was not logged; logged: {sorted(results)}")
        return None
    return float(value)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
