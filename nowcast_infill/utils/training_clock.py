"""`TrainingClock`: log, at every validation, how much training has happened so far.

Time-to-accuracy studies (experiments/time_to_accuracy.py) compare runs with different global
batches, so validation RMSE has to be put against something that means the same in every run:
the samples seen (optimizer steps x global batch) and the wall time spent *training*. The
validation passes themselves are excluded from that time: how often a study validates is a
choice of the measurement, not a cost of the training it measures.

Logged at the end of each validation (so they land on the same step as `val/rmse`):

- `clock/train_s`: wall seconds since fit start minus the seconds spent in validation;
- `clock/samples_seen`: optimizer steps done x global batch (all processes, accumulation);
- `clock/optimizer_steps`: optimizer steps done (`trainer.global_step`; the logger's own `step`
  column counts differently under gradient accumulation);
- `clock/global_batch`: that global batch, for reading the log on its own.
"""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import Callback

from nowcast_infill.utils.lr import trainer_global_batch


class TrainingClock(Callback):
    """Training wall time (validation excluded) and samples seen, logged with each validation."""

    def __init__(self) -> None:
        self._fit_start: float | None = None
        self._validation_start: float | None = None
        self._validation_s = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._validation_s = 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the sanity check runs before on_train_start: nothing has been trained yet
        if trainer.sanity_checking or self._fit_start is None:
            return
        now = time.perf_counter()
        in_this_validation = now - (self._validation_start or now)
        train_s = now - self._fit_start - self._validation_s - in_this_validation
        batch = trainer_global_batch(trainer)
        # every rank logs its own clock; rank 0's lands in the logger (no reduction needed)
        pl_module.log("clock/train_s", float(train_s), sync_dist=False, rank_zero_only=True)
        pl_module.log("clock/samples_seen", float(trainer.global_step * batch), sync_dist=False, rank_zero_only=True)
        pl_module.log("clock/optimizer_steps", float(trainer.global_step), sync_dist=False, rank_zero_only=True)
        pl_module.log("clock/global_batch", float(batch), sync_dist=False, rank_zero_only=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_start is not None and not trainer.sanity_checking:
            self._validation_s += time.perf_counter() - self._validation_start
        self._validation_start = None
