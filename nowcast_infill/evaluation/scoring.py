"""The one evaluation path: `EvaluationMixin`, shared by networks and classical methods.

`RadarModule` (training/module.py) and `ClassicalModule` (evaluation/classical.py) both mix it
into a LightningModule. It owns the task object (frame counts, composition, score mask), the
normaliser the answers are decoded with, and one `RadarMetrics` per evaluation stage; a method
only supplies its answer in mm/h to `evaluate_batch`. Metrics are computed in mm/h, so numbers
compare across normalisers and between networks and classical methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch

from nowcast_infill.data.normalization import Normalizer
from nowcast_infill.metrics.radar_metrics import RadarMetrics
from nowcast_infill.study import METRIC_DEFAULTS
from nowcast_infill.tasks import Task, task_from_frames
from nowcast_infill.utils.logging import get_logger

log = get_logger(__name__)

STAGES = ("val", "test")
# the study's thresholds and FSS scales (nowcast_infill/study.py), also conf/model/_common.yaml's
DEFAULT_METRICS = METRIC_DEFAULTS


class EvaluationMixin:
    """Metric bookkeeping of a LightningModule whose `hparams` have `task`, `in_frames`,
    `out_frames` and `metrics` (`RadarMetrics` options: `thresholds` mm/h, `fss_scales` px).

    Call `configure_evaluation()` in `__init__` (after `save_hyperparameters`) and define
    `predict_mm_h`: the mixin's `validation_step`/`test_step` score its answer with
    `evaluate_batch`, and the epoch-end hooks log the stage with `log_stage_metrics`.
    """

    hparams: Any
    task: Task

    def configure_evaluation(self) -> None:
        """Build `self.task` and one `RadarMetrics` per stage from the hyperparameters."""
        self.task = task_from_frames(self.hparams.task, self.hparams.in_frames, self.hparams.out_frames)
        options = {**DEFAULT_METRICS, **(self.hparams.metrics or {})}
        template = RadarMetrics(
            thresholds=tuple(options["thresholds"]),
            fss_scales=tuple(options["fss_scales"]),
            n_leads=self.task.out_frames,
        )
        # ModuleDict so the metric states move with the module to the device.
        self.stage_metrics = torch.nn.ModuleDict({stage: template.clone() for stage in STAGES})
        # Per stage: scored pixels, and pixels a method left without an answer (see update_metrics).
        self._scored: dict[str, int] = {}
        self._unscored: dict[str, int] = {}

    def metric(self, stage: str) -> RadarMetrics:
        """The `RadarMetrics` of `stage` (`val` or `test`)."""
        return cast(RadarMetrics, self.stage_metrics[stage])

    # --------------------------------------------------------------- normaliser
    def attach_normalizer(self, normalizer: Normalizer) -> None:
        """Use `normalizer` when no DataModule supplies one (inference, scripts, a loaded checkpoint)."""
        self._attached_normalizer = normalizer

    @property
    def normalizer(self) -> Normalizer:
        """The attached DataModule's normaliser, else the one of `attach_normalizer` (or of the
        loaded checkpoint)."""
        trainer = getattr(self, "_trainer", None)
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        normalizer = getattr(datamodule, "normalizer", None) or self.__dict__.get("_attached_normalizer")
        if normalizer is None:
            raise RuntimeError(
                f"{type(self).__name__} needs a RadarDataModule with a fitted `normalizer` (metrics are in mm/h); "
                "pass datamodule=... to trainer.fit/test."
            )
        return normalizer

    # ------------------------------------------------------------------ metrics
    def score_mask(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """0/1 `(B, T_out, 1, H, W)`: the pixels scored (the task's rule, see nowcast_infill/tasks)."""
        return self.task.score_mask(batch)

    def evaluate_batch(
        self, stage: str, pred_mm_h: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Score `pred_mm_h` `(B, T_out, 1, H, W)` mm/h against the batch's truth; returns the step
        output `{"pred_mm_h": ...}` that callbacks (FigureCallback) read."""
        target_mm_h = self.normalizer.decode(batch["y"])
        mask = self.score_mask(batch)
        unscored = (mask > 0) & ~torch.isfinite(pred_mm_h)
        scored_pred = pred_mm_h  # the figures show the answer as given, NaN included
        if unscored.any():
            # A method that cannot answer a pixel (e.g. extrapolation from outside the domain) is
            # not scored there; the count is logged so the comparison stays honest.
            self._unscored[stage] = self._unscored.get(stage, 0) + int(unscored.sum())
            mask = mask * (~unscored).to(mask.dtype)
            scored_pred = torch.nan_to_num(pred_mm_h, nan=0.0)
        self._scored[stage] = self._scored.get(stage, 0) + int((mask > 0).sum())
        self.metric(stage).update(scored_pred, target_mm_h, mask)
        return {"pred_mm_h": pred_mm_h}

    # ------------------------------------------------------- Lightning hooks
    def predict_mm_h(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The final answer `(B, T_out, 1, H, W)` mm/h for `batch` (each module defines it)."""
        raise NotImplementedError

    def validation_step(self, batch, batch_idx):
        return self.evaluate_batch("val", self.predict_mm_h(batch), batch)

    def test_step(self, batch, batch_idx):
        return self.evaluate_batch("test", self.predict_mm_h(batch), batch)

    def on_validation_epoch_end(self) -> None:
        self.log_stage_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_stage_metrics("test")

    def log_stage_metrics(self, stage: str) -> None:
        """Log `{stage}/<score>` for every score and `{stage}/unscored_pixels`; reset the stage."""
        metric = self.metric(stage)
        values = metric.compute()
        for name, value in values.items():
            # RadarMetrics already reduced its sum/count states over ranks, so `value` is the same
            # on every rank: an all-reduce with max returns it bit for bit (a mean could round),
            # and sync_dist=True spares a Lightning warning per metric and DDP job.
            self.log(f"{stage}/{name}", value, sync_dist=True, reduce_fx="max", rank_zero_only=False)  # type: ignore[attr-defined]
        unscored = self._unscored.pop(stage, 0)
        scored = self._scored.pop(stage, 0)
        if unscored:
            log.warning(f"{stage}: {unscored} scored pixels had no prediction and were not scored ({scored} were).")
        self.log(f"{stage}/unscored_pixels", float(unscored), sync_dist=True, reduce_fx="sum")  # type: ignore[attr-defined]
        metric.reset()


__all__ = ["DEFAULT_METRICS", "STAGES", "EvaluationMixin"]
