"""Learning-rate rules: linear scaling with the global batch, and warm-up + cosine decay.

Linear scaling (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): when the global batch
grows k-fold (more devices, nodes or gradient accumulation), multiply the learning rate by k,
and ramp it up over a warm-up period so the first large steps do not diverge. The reference
is the global batch the base `lr` was tuned for (`optimizer.reference_global_batch`); the rule
is chosen by `optimizer.lr_scaling` (`linear`, `sqrt` or `none`).

Where linear scaling stops: Goyal et al. kept SGD's accuracy up to a global batch of ~8k on
ImageNet. Our optimiser is AdamW, whose per-parameter step is normalised by the gradient's
second moment, so a k-fold batch cuts the update noise by sqrt(k), not k; the square-root rule
(Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms") keeps
the noise of the updates the same. With the default lr 1e-3 at a global batch of 8, linear
scaling reaches 8e-3-1.6e-2, an order of magnitude above the tuned value, at a global batch of
~64-128; beyond that use `lr_scaling: sqrt` (BENCHMARKS.md § Scaling). The global batch includes gradient
accumulation, so accumulating instead of adding devices does not lift this limit.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import hydra
import torch

from nowcast_infill.utils.instantiate import split_reserved
from nowcast_infill.utils.logging import get_logger

log = get_logger(__name__)

LR_SCALING_RULES = ("linear", "sqrt", "none")
# Keys of the optimizer/scheduler nodes that the framework reads; the rest go to the target.
OPTIMIZER_RESERVED = {"lr_scaling": "none", "reference_global_batch": None}
SCHEDULER_RESERVED = {"interval": "step", "frequency": 1, "monitor": "val/loss"}


def global_batch_size(per_device_batch: int, devices: int, nodes: int, accumulate_grad_batches: int) -> int:
    """Samples per optimiser step over the whole job."""
    for name, value in (
        ("per_device_batch", per_device_batch),
        ("devices", devices),
        ("nodes", nodes),
        ("accumulate_grad_batches", accumulate_grad_batches),
    ):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1 to compute the global batch, got {value!r}")
    return int(per_device_batch) * int(devices) * int(nodes) * int(accumulate_grad_batches)


def trainer_global_batch(trainer) -> int:
    """Global batch of a Lightning Trainer: the DataModule's per-device `batch_size` (attribute
    or hyperparameter) x devices x nodes x gradient accumulation."""
    datamodule = getattr(trainer, "datamodule", None)
    per_device = getattr(datamodule, "batch_size", None)
    if per_device is None:
        per_device = getattr(getattr(datamodule, "hparams", {}), "batch_size", None)
    if per_device is None:
        raise ValueError("cannot read the per-device batch size: the DataModule has no `batch_size`.")
    return global_batch_size(per_device, trainer.num_devices, trainer.num_nodes, trainer.accumulate_grad_batches)


def scaled_learning_rate(base_lr: float, global_batch: int, reference_global_batch: int, rule: str = "linear") -> float:
    """Learning rate for `global_batch` given `base_lr` tuned at `reference_global_batch`."""
    if rule not in LR_SCALING_RULES:
        raise ValueError(f"optimizer.lr_scaling={rule!r} is not one of {LR_SCALING_RULES}; use one of them.")
    if rule == "none":
        return float(base_lr)
    if int(reference_global_batch) < 1:
        raise ValueError(
            f"optimizer.reference_global_batch must be >= 1 for lr_scaling={rule}, got {reference_global_batch!r}"
        )
    ratio = global_batch / int(reference_global_batch)
    return float(base_lr) * (math.sqrt(ratio) if rule == "sqrt" else ratio)


def warmup_steps_for(
    total_steps: int,
    warmup_steps: int = 0,
    warmup_samples: int = 0,
    warmup_fraction: float = 0.0,
    global_batch: int | None = None,
) -> int:
    """Length of the warm-up in optimiser steps, from the first of these that is set:

    - `warmup_steps`: that many optimiser steps;
    - `warmup_samples`: ceil(warmup_samples / global_batch) steps, i.e. the same number of
      training samples whatever the global batch (Goyal et al. warm up over 5 epochs, not
      over a number of steps); needs `global_batch`;
    - `warmup_fraction`: that fraction of `total_steps`.

    Clipped to [0, total_steps].
    """
    for name, value in (
        ("warmup_steps", warmup_steps),
        ("warmup_samples", warmup_samples),
        ("warmup_fraction", warmup_fraction),
    ):
        if value is not None and value < 0:
            raise ValueError(f"scheduler.{name} must be >= 0, got {value}")
    if warmup_steps:
        warmup = int(warmup_steps)
    elif warmup_samples:
        if not global_batch or int(global_batch) < 1:
            raise ValueError(
                "scheduler.warmup_samples needs the global batch (the module passes it); got "
                f"global_batch={global_batch!r}. Use scheduler.warmup_steps outside a RadarModule."
            )
        warmup = math.ceil(int(warmup_samples) / int(global_batch))
    else:
        warmup = int(round((warmup_fraction or 0.0) * total_steps))
    return min(max(warmup, 0), total_steps)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_fraction: float = 0.0,
    min_lr_ratio: float = 0.0,
    warmup_samples: int = 0,
    global_batch: int | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ~0 to the base lr, then cosine decay to `min_lr_ratio` x base lr.

    The warm-up length is `warmup_steps`, else `warmup_samples` / `global_batch`, else
    `warmup_fraction` x `total_steps` (see `warmup_steps_for`). `RadarModule` fills in
    `total_steps` (the Trainer's estimated optimiser steps) and `global_batch`.
    Stepped once per optimiser step (Lightning `interval: step`).
    """
    total_steps = max(int(total_steps), 1)
    warmup = warmup_steps_for(total_steps, warmup_steps, warmup_samples, warmup_fraction, global_batch)
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"scheduler.min_lr_ratio must be within [0, 1], got {min_lr_ratio}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizers(
    optimizer: Mapping | None, scheduler: Mapping | None, parameters: Iterable[torch.nn.Parameter], trainer
) -> Any:
    """What `LightningModule.configure_optimizers` returns, from the model's config nodes.

    optimizer: partial `_target_` node of a torch optimiser plus `lr_scaling` (`linear`|`sqrt`|
        `none`) and `reference_global_batch` (the global batch `lr` was tuned at; null = this one).
    scheduler: partial `_target_` node of a scheduler, called with the optimiser, with
        `total_steps` (the Trainer's estimated optimiser steps) and `global_batch` when it accepts
        them, plus Lightning's `interval`, `frequency`, `monitor`; None for a constant lr.
    trainer: the attached Lightning Trainer (global batch, step estimate).
    """
    kwargs, ours = split_reserved(optimizer or {}, OPTIMIZER_RESERVED)
    if "_target_" not in kwargs:
        raise ValueError("model.optimizer has no _target_; e.g. torch.optim.AdamW with _partial_: true.")
    kwargs.pop("_partial_", None)
    if ours["lr_scaling"] != "none":
        if "lr" not in kwargs:
            raise ValueError("optimizer.lr_scaling needs optimizer.lr to scale.")
        reference = ours["reference_global_batch"]
        global_batch = trainer_global_batch(trainer)
        lr = scaled_learning_rate(kwargs["lr"], global_batch, reference or global_batch, ours["lr_scaling"])
        if lr != kwargs["lr"]:
            log.info(
                f"lr scaled ({ours['lr_scaling']}) for global batch {global_batch} (reference {reference}): "
                f"{kwargs['lr']:g} -> {lr:g} (optimizer.lr_scaling=none switches this off)"
            )
        kwargs["lr"] = lr
    built = hydra.utils.instantiate(kwargs, params=parameters)
    if not scheduler:
        return built
    sched_kwargs, lightning_keys = split_reserved(scheduler, SCHEDULER_RESERVED)
    sched_kwargs.pop("_partial_", None)
    target = hydra.utils.get_method(sched_kwargs["_target_"]) if "_target_" in sched_kwargs else None
    if target is None:
        raise ValueError("model.scheduler has no _target_; use null for a constant learning rate.")
    accepts = inspect.signature(target).parameters
    if "total_steps" in accepts and "total_steps" not in sched_kwargs:
        sched_kwargs["total_steps"] = int(trainer.estimated_stepping_batches)
    if "global_batch" in accepts and "global_batch" not in sched_kwargs:
        # for a warm-up stated in samples (scheduler.warmup_samples)
        sched_kwargs["global_batch"] = trainer_global_batch(trainer)
    lr_scheduler = hydra.utils.instantiate(sched_kwargs, optimizer=built)
    config = {
        "scheduler": lr_scheduler,
        "interval": lightning_keys["interval"],
        "frequency": lightning_keys["frequency"],
    }
    if isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = lightning_keys["monitor"]
    return {"optimizer": built, "lr_scheduler": config}
