"""The Lightning objects of a composed train/eval config: DataModule, LightningModule, Trainer.

torch / Lightning are imported inside the functions: the commands check the config first
and report a mistake before they load (seconds on a busy machine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from nowcast_infill.errors import ConfigSchemaError
from nowcast_infill.tasks import get_task
from nowcast_infill.utils.logging import rank_zero_print

if TYPE_CHECKING:
    import lightning as L

    from nowcast_infill.data.datamodule import RadarDataModule

# `model.kind` (conf/model/*.yaml): a network is trained and restored from checkpoints, a
# classical method is built from its config alone.
NETWORK, CLASSICAL = "network", "classical"


def model_kind(cfg: DictConfig) -> str:
    """`cfg.model.kind`: "network" or "classical" (ConfigSchemaError naming the key otherwise)."""
    kind = cfg.model.get("kind")
    if kind not in (NETWORK, CLASSICAL):
        raise ConfigSchemaError(
            f"model.kind: {kind!r} (model={cfg.model.get('name')}) is not {NETWORK} or {CLASSICAL}; "
            f"set kind: {NETWORK} (a trainable module) or kind: {CLASSICAL} in its conf/model/*.yaml."
        )
    return str(kind)


def build_datamodule(cfg: DictConfig) -> RadarDataModule:
    """The DataModule of `cfg.data`, checked against `cfg.task`."""
    # Plain containers, not DictConfig: the DataModule's hyperparameters go into checkpoints,
    # which torch.load(weights_only=True) must be able to read back.
    data_cfg = cfg.data
    if data_cfg.get("stores") and OmegaConf.is_missing(data_cfg, "store"):
        # data.stores (a list) stands in for the one data.store the data configs ask for
        data_cfg = data_cfg.copy()
        data_cfg.store = None
    datamodule = hydra.utils.instantiate(data_cfg, _convert_="all")
    task = get_task(
        cfg.task.name, past=cfg.task.get("past"), future=cfg.task.get("future"), context=cfg.task.get("context")
    )
    for name in ("in_frames", "out_frames"):
        have, want = getattr(datamodule, name, None), getattr(task, name)
        if have is not None and int(have) != want:
            raise ValueError(
                f"task.{name}={want} but data ({cfg.data._target_}) yields {name}={have}; "
                f"data takes task.past/future/context: check task.{name} matches them."
            )
    return datamodule


def build_module(cfg: DictConfig, datamodule: RadarDataModule | None = None) -> L.LightningModule:
    """The LightningModule of `cfg.model`; `aux_channels: null` is taken from the DataModule."""
    model_cfg = cfg.model
    if "aux_channels" in model_cfg and model_cfg.aux_channels is None:
        if datamodule is None:
            raise ValueError(
                "model.aux_channels is null (= from the data) but no DataModule was given; set it explicitly."
            )
        model_cfg = model_cfg.copy()
        with open_dict(model_cfg):
            model_cfg.aux_channels = len(datamodule.aux_names)
    model_cfg = model_cfg.copy()
    with open_dict(model_cfg):
        model_cfg.pop("kind", None)  # ours, not an argument of the module
    # Not recursive: the module keeps net/optimizer/scheduler as plain config (saved as
    # hyperparameters, so checkpoints rebuild without Hydra) and instantiates them itself.
    return hydra.utils.instantiate(model_cfg, _recursive_=False)


def build_trainer(cfg: DictConfig, callbacks: list | None = None, loggers: list | None = None) -> L.Trainer:
    """The Trainer of `cfg.trainer`. Without a progress-bar callback (and unless
    `trainer.enable_progress_bar=false`) it gets `progress_bar()` in place of Lightning's tqdm
    default: plain periodic lines when stdout is no terminal (Slurm logs), not \\r bars."""
    from lightning.pytorch.callbacks.progress import ProgressBar

    from nowcast_infill.training.callbacks import progress_bar

    callbacks = list(callbacks or [])
    if cfg.trainer.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(progress_bar())
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def report_global_batch(cfg: DictConfig, trainer: L.Trainer) -> int:
    """Print per-device batch x devices x nodes x accumulation (rank 0) and return the product."""
    from nowcast_infill.training.lr import global_batch_size

    per_device = int(cfg.data.batch_size)
    devices, nodes, accumulate = trainer.num_devices, trainer.num_nodes, trainer.accumulate_grad_batches
    total = global_batch_size(per_device, devices, nodes, accumulate)
    scaling = cfg.model.get("optimizer", {}).get("lr_scaling", "none") if "optimizer" in cfg.model else "none"
    rank_zero_print(
        f"global batch = {per_device} per device x {devices} devices x {nodes} nodes x {accumulate} accumulation "
        f"= {total} (lr scaling: {scaling})"
    )
    return total
