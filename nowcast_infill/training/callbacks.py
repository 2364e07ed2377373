"""Lightning callbacks of the default training config (conf/callbacks/default.yaml).

- `BestCheckpoint`: Lightning's ModelCheckpoint that also keeps `<dirpath>/best.ckpt`
  pointing at the current best checkpoint, so scripts and the README can name one stable
  path while the epoch-named file keeps telling which epoch won.
- `progress_bar(...)`: the tqdm bar on a terminal, `LineProgress` (one plain line every
  `every_seconds`) when stdout is not a terminal (Slurm logs, CI, pipes), where `\\r` bars
  pile up as one endless line.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar

STABLE_BEST_NAME = "best.ckpt"


class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that refreshes `<dirpath>/best.ckpt` whenever a new best is saved.

    `best.ckpt` is a relative symlink to the epoch-named file (a copy where the filesystem
    has no symlinks); Lightning's own `_link_checkpoint` does the swap on rank 0 and the barrier.
    """

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if self.dirpath and filepath == self.best_model_path:
            self._link_checkpoint(trainer, filepath, os.path.join(self.dirpath, STABLE_BEST_NAME))


class LineProgress(ProgressBar):
    """Progress as plain lines, e.g. `train epoch 3/20 step 140/400 (35%) 4.10 it/s train/loss=0.21`,
    at most one every `every_seconds` per stage, plus one at the end of each stage."""

    def __init__(self, every_seconds: float = 30.0) -> None:
        super().__init__()
        self.every_seconds = float(every_seconds)
        self._enabled = True
        self._last_print = 0.0
        # per stage (validation runs inside a training epoch): batches done, start time
        self._done: dict[str, int] = {}
        self._stage_start: dict[str, float] = {}

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def _start(self, stage: str) -> None:
        self._stage_start[stage] = self._last_print = time.monotonic()
        self._done[stage] = 0

    def _step(self, stage: str, total: Any, force: bool = False) -> None:
        """Count one batch of `stage` (or none with `force`) and print a line when due."""
        if not force:
            self._done[stage] = self._done.get(stage, 0) + 1
        if not self.is_enabled or self.trainer.sanity_checking:
            return
        now = time.monotonic()
        if not force and now - self._last_print < self.every_seconds:
            return
        self._last_print = now
        done = self._done.get(stage, 0)
        finite = isinstance(total, (int, float)) and 0 < total < float("inf")
        total_text = f"/{int(total)} ({100 * done / total:.0f}%)" if finite else ""
        rate = done / max(now - self._stage_start.get(stage, now), 1e-9)
        epoch = f" epoch {self.trainer.current_epoch + 1}/{self.trainer.max_epochs}" if stage == "train" else ""
        metrics = {k: v for k, v in self.get_metrics(self.trainer, self.trainer.lightning_module).items() if k != "v_num"}
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        print(f"{stage}{epoch} step {done}{total_text} {rate:.2f} it/s {shown}".rstrip(), flush=True)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start("train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._step("train", self.total_train_batches)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._step("train", self.total_train_batches, force=True)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._start("validate")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._step("validate", self.total_val_batches)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._step("validate", self.total_val_batches, force=True)

    def on_test_start(self, trainer, pl_module) -> None:
        self._start("test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._step("test", trainer.num_test_batches[dataloader_idx])

    def on_test_end(self, trainer, pl_module) -> None:
        self._step("test", sum(trainer.num_test_batches), force=True)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._start("predict")

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._step("predict", trainer.num_predict_batches[dataloader_idx])


def progress_bar(refresh_rate: int = 10, every_seconds: float = 30.0, stream=None) -> ProgressBar:
    """tqdm's bar when `stream` (stdout) is a terminal, else `LineProgress(every_seconds)`."""
    stream = sys.stdout if stream is None else stream
    if getattr(stream, "isatty", lambda: False)():
        return TQDMProgressBar(refresh_rate=refresh_rate)
    return LineProgress(every_seconds=every_seconds)
