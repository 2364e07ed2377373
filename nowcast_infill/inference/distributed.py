"""Archive infilling over several devices with Lightning `predict` (one process per device).

The pending time steps are dealt out round-robin, `pending[rank::world]`, with no padding
(a padded DistributedSampler would compute some frames twice). Each rank computes its
frames in `predict_step` and a `BasePredictionWriter` commits each one as the batch ends.
Frames are disjoint chunks and `infill_status` has one chunk per step, so concurrent
ranks never write the same file and the resumability of `infill_store` holds unchanged.

`ddp_spawn` is used rather than `ddp`: it needs no re-execution of the calling script, so
it works the same from `ni-infill`, a notebook or a test; the predictor is pickled to the
workers (a `CheckpointPredictor` is).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from nowcast_infill.inference.frame_infiller import FrameInfiller


class _PendingFrames(torch.utils.data.Dataset):
    def __init__(self, frames: np.ndarray):
        self.frames = [int(t) for t in frames]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> int:
        return self.frames[i]


class ArchiveInfillModule(L.LightningModule):
    """Wraps an infill predictor so that `Trainer.predict` computes one frame per step.

    `predict_step(batch)` takes `batch` = `(1,)` int64 time index and returns
    `(t, frame (H, W) mm/h, infilled flag (H, W) uint8, status code)`.
    """

    def __init__(
        self, predictor, input_store: str | Path, output_store: str | Path, context: int, infill_outside_coverage: bool
    ):
        super().__init__()
        self.predictor = predictor
        self.input_store, self.output_store = Path(input_store), Path(output_store)
        self.context, self.infill_outside_coverage = int(context), bool(infill_outside_coverage)
        self.infiller: FrameInfiller | None = None  # opened in setup(), in the worker process
        self.written = 0

    def setup(self, stage: str) -> None:
        # Opened here, in each worker process: file handles are not shared across processes.
        self.infiller = FrameInfiller(
            self.predictor, self.input_store, self.output_store, self.context, self.infill_outside_coverage
        )

    def on_predict_start(self) -> None:
        if hasattr(self.predictor, "device"):
            self.predictor.device = self.device

    @property
    def opened(self) -> FrameInfiller:
        """The infiller `setup` opened in this process."""
        if self.infiller is None:
            raise RuntimeError("ArchiveInfillModule runs through Trainer.predict, whose setup() opens the infiller.")
        return self.infiller

    def predict_dataloader(self) -> DataLoader:
        pending = self.opened.pending()
        mine = pending[self.trainer.global_rank :: self.trainer.world_size]
        return DataLoader(_PendingFrames(mine), batch_size=1, shuffle=False, num_workers=0)

    def predict_step(self, batch, batch_idx):
        t = int(batch[0])
        return (t, *self.opened.compute(t))


class _CommitFrames(BasePredictionWriter):
    """Writes each computed frame as soon as its batch ends (status last)."""

    def __init__(self):
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        t, frame, flag, code = prediction
        pl_module.opened.commit(t, frame, flag, code)
        pl_module.written += 1


def infill_frames_distributed(
    predictor,
    input_store: str | Path,
    output_store: str | Path,
    *,
    context: int,
    infill_outside_coverage: bool,
    devices: int,
    accelerator: str = "auto",
    progress: bool = True,
) -> int:
    """Infill the pending frames of an existing infill store over `devices` processes.

    The output store must already exist (`infill_store` creates it). Returns the number
    of frames that were pending when the run started (all are written when it returns).
    """
    before = FrameInfiller(predictor, Path(input_store), Path(output_store), context, infill_outside_coverage).pending()
    module = ArchiveInfillModule(predictor, input_store, output_store, context, infill_outside_coverage)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=int(devices),
        strategy="ddp_spawn",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=bool(progress),
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[_CommitFrames()],
    )
    trainer.predict(module, return_predictions=False)
    return int(before.size)
