"""Lightning callbacks of the default training config (conf/callbacks/default.yaml).

- `BestCheckpoint`: Lightning's ModelCheckpoint that also keeps `<dirpath>/best.ckpt`
  pointing at the current best checkpoint, so scripts and the README can name one stable
  path while the epoch-named file keeps telling which epoch won.
- `progress_bar(...)`: the tqdm bar on a terminal, `LineProgress` (one plain line every
  `every_seconds`) when stdout is not a terminal (Slurm logs, CI, pipes), where `\\r` bars
  pile up as one endless line.
- `FigureCallback(output_dir, n_figures, stage)`: sample panels of the windows worth looking
  at, drawn with `nowcast_infill.viz` at the end of a validation or test epoch, sent to the
  loggers that take images and (with `output_dir`) saved as `<output_dir>/figures/*.png`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar

from nowcast_infill import viz

STABLE_BEST_NAME = "best.ckpt"
# Sample panels are drawn from windows whose target is at least this fraction valid, the
# wettest first (fraction of valid pixels with at least FIGURE_WET_MM_H).
FIGURE_MIN_VALID_FRACTION = 0.5
FIGURE_WET_MM_H = 1.0


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
        metrics = {
            k: v for k, v in self.get_metrics(self.trainer, self.trainer.lightning_module).items() if k != "v_num"
        }
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


class FigureCallback(Callback):
    """Draw the sample panels of one stage (`val` or `test`) of an evaluated LightningModule.

    Works with any module of the evaluation path (`RadarModule`, `ClassicalModule`): it reads
    the step output `{"pred_mm_h": (B, T_out, 1, H, W)}`, the module's `task` and `normalizer`.
    Among the windows whose target is mostly valid (on a real radar grid the first tiles are
    often outside the radar range, all no-data) it keeps the wettest `n_figures` over the epoch,
    and at the epoch's end draws them (`viz.sample_figure`), logs them to the loggers that take
    images (W&B, TensorBoard) under `<stage>/<task>_sample<k>` and, with `output_dir`, saves
    them as `<output_dir>/figures/<task>_sample<k>.png` (rank 0 only).

    Args:
        output_dir: run folder to save into; None = log only.
        n_figures: windows drawn; None = the module's `hparams.n_log_images` (default 2).
        stage: `test` or `val` (validation epochs during fitting; not the sanity check).
    """

    def __init__(self, output_dir: str | Path | None = None, n_figures: int | None = None, stage: str = "test") -> None:
        if stage not in ("val", "test"):
            raise ValueError(f"FigureCallback(stage={stage!r}): choose 'val' or 'test'.")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.n_figures = n_figures
        self.stage = stage
        self.saved: list[Path] = []  # PNGs written at the last end of the stage
        # (score, one window's CPU tensors), best first
        self._pool: list[tuple[float, dict[str, torch.Tensor]]] = []

    def _wanted(self, pl_module: L.LightningModule) -> int:
        if self.n_figures is not None:
            return int(self.n_figures)
        return int(getattr(pl_module, "hparams", {}).get("n_log_images", 2))

    @staticmethod
    def window_scores(pl_module: Any, pred_mm_h: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`(B,)`: the fraction of valid target pixels with >= FIGURE_WET_MM_H for windows whose
        target is at least FIGURE_MIN_VALID_FRACTION valid and that have scored pixels; other
        windows score their valid fraction - 2, below every such window."""
        valid = batch["y_valid"] > 0
        n_valid = valid.flatten(1).sum(1)
        valid_fraction = n_valid / valid[0].numel()
        wet = (pl_module.normalizer.decode(batch["y"]) >= FIGURE_WET_MM_H) & valid
        wet_fraction = wet.flatten(1).sum(1) / n_valid.clamp(min=1)
        has_scored = (pl_module.task.score_mask(batch) > 0).flatten(1).any(1)
        eligible = (valid_fraction >= FIGURE_MIN_VALID_FRACTION) & has_scored
        return torch.where(eligible, wet_fraction.double(), valid_fraction.double() - 2.0)

    def _keep(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Mapping[str, torch.Tensor]) -> None:
        need = self._wanted(pl_module)
        if need <= 0 or trainer.global_rank != 0 or trainer.sanity_checking or not isinstance(outputs, Mapping):
            return
        pred_mm_h = outputs["pred_mm_h"]
        for i, score in enumerate(self.window_scores(pl_module, pred_mm_h, batch).tolist()):
            if len(self._pool) >= need and score <= self._pool[-1][0]:
                continue
            kept = {
                k: v[i : i + 1].detach().cpu() for k, v in batch.items() if isinstance(v, torch.Tensor) and v.ndim == 5
            }
            kept["pred_mm_h"] = pred_mm_h[i : i + 1].detach().cpu()
            self._pool.append((score, kept))
            self._pool.sort(key=lambda item: -item[0])  # stable: among equals the earlier window stays first
            del self._pool[need:]

    def _draw(self, trainer: L.Trainer, pl_module: Any) -> None:
        pool, self._pool = self._pool, []
        self.saved = []
        if trainer.global_rank != 0:
            return
        task = pl_module.task
        for index, (_, window) in enumerate(pool):
            name = f"{task.name}_sample{index}"
            fig = viz.sample_figure(task.name, getattr(task, "target_index", 0), window, pl_module.normalizer.decode)
            for logger in trainer.loggers:
                viz.log_figure(logger, f"{self.stage}/{name}", fig, step=trainer.global_step)
            if self.output_dir is not None:
                self.saved.append(viz.save_figure(fig, self.output_dir / "figures" / f"{name}.png"))
            viz.close_figure(fig)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.stage == "val":
            self._keep(trainer, pl_module, outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.stage == "test":
            self._keep(trainer, pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.stage == "val" and not trainer.sanity_checking:
            self._draw(trainer, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self.stage == "test":
            self._draw(trainer, pl_module)
