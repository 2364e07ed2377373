"""`ClassicalModule`: a classical method scored by the same evaluation path as the networks.

It is a LightningModule for `trainer.test` / `trainer.validate` only: no network, no loss, no
optimiser (`ni-eval model=<method>`). The method (nowcast_infill/baselines, `registry.get_method("classical", name)`)
sees each sample's input in mm/h with NaN where `x_mask` is 0 and answers in mm/h.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch

from nowcast_infill import registry
from nowcast_infill.baselines import baseline_task
from nowcast_infill.errors import BadValueError
from nowcast_infill.evaluation.scoring import EvaluationMixin
from nowcast_infill.utils.instantiate import to_plain
from nowcast_infill.utils.logging import get_logger

log = get_logger(__name__)


class ClassicalModule(EvaluationMixin, L.LightningModule):
    """A classical infilling or nowcasting method behind `trainer.test(module, datamodule)`.

    Args:
        name: the method (`nearest`, `linear`, `biharmonic`, `laplace`, `temporal_linear`,
            `temporal_flow`, `persistence`, `extrapolation`, `sprog`).
        task, in_frames, out_frames: as the DataModule's task (`task.*`).
        options: the method's keyword options (nowcasts get `n_leads = out_frames` by default).
        metrics: `RadarMetrics` options (`thresholds` mm/h, `fss_scales` px).
        n_log_images: sample panels drawn by `FigureCallback` (training/callbacks.py).
        aux_channels: accepted for config symmetry with networks; classical methods ignore aux.
        kind: `classical` (the model config's kind); anything else is refused.
    """

    def __init__(
        self,
        name: str,
        task: str = "infill",
        in_frames: int = 1,
        out_frames: int = 1,
        options: Mapping | None = None,
        metrics: Mapping | None = None,
        n_log_images: int = 2,
        aux_channels: int = 0,
        kind: str = "classical",
    ) -> None:
        super().__init__()
        if kind != "classical":
            raise BadValueError(
                f"model.kind: is {kind!r} but {name!r} is a classical method; set model.kind=classical."
            )
        self.save_hyperparameters(
            {
                "name": name,
                "options": to_plain(options) or {},
                "task": task,
                "in_frames": int(in_frames),
                "out_frames": int(out_frames),
                "aux_channels": int(aux_channels),
                "metrics": to_plain(metrics),
                "n_log_images": int(n_log_images),
            }
        )
        self.configure_evaluation()
        if baseline_task(name) != task:
            raise BadValueError(
                f"baseline {name!r} is a {baseline_task(name)} method but task={task}; set task={baseline_task(name)}."
            )
        method_options = dict(self.hparams.options)
        if task == "nowcast":
            method_options.setdefault("n_leads", self.task.out_frames)
        self.method = registry.get_method("classical", name, **method_options)
        self._fallbacks_reported = 0

    def setup(self, stage: str) -> None:
        # Classical methods ignore auxiliary fields, so only the frame counts must agree.
        datamodule = getattr(self.trainer, "datamodule", None)
        for key in ("in_frames", "out_frames"):
            have = getattr(datamodule, key, None)
            if have is not None and int(have) != self.hparams[key]:
                raise ValueError(
                    f"baseline {key}={self.hparams[key]} but the DataModule yields {have}; set task.{key}."
                )

    def predict_mm_h(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`(B, T_out, 1, H, W)` mm/h; infill keeps observed pixels of the target frame."""
        x_mm_h = self.normalizer.decode(batch["x"]).masked_fill(batch["x_mask"] == 0, float("nan"))
        x_np = x_mm_h[:, :, 0].detach().cpu().numpy()
        # Infill methods solve only the scored hole pixels of the target frame (they are never
        # told the truth's values); other missing pixels stay NaN and are not scored.
        fill_masks = (batch["hole"][:, 0, 0] > 0).cpu().numpy() if self.task.name == "infill" else None
        want = (self.task.out_frames, *x_np.shape[2:])
        outputs = []
        for i, sample in enumerate(x_np):
            out = self.method(sample, fill_mask=fill_masks[i]) if fill_masks is not None else self.method(sample)
            if out.shape != want:
                raise ValueError(
                    f"baseline {self.hparams.name!r} returned shape {out.shape}, expected {want} (T_out, H, W)."
                )
            outputs.append(torch.as_tensor(out, dtype=batch["x"].dtype))
        pred = torch.stack(outputs)[:, :, None].to(batch["x"].device)
        return self.task.compose(pred, {"x": x_mm_h, "x_mask": batch["x_mask"]})

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.predict_mm_h(batch)

    def log_stage_metrics(self, stage: str) -> None:
        # Windows (nowcast) or pixels (temporal infill) the method answered with its documented
        # fallback since the last report (see nowcast_infill/baselines); 0 for methods without one.
        total = int(getattr(self.method, "fallbacks", 0))
        fallbacks, self._fallbacks_reported = total - self._fallbacks_reported, total
        super().log_stage_metrics(stage)
        if fallbacks:
            log.warning(f"{stage}: {self.hparams.name} used its fallback {fallbacks} time(s).")
        self.log(f"{stage}/fallbacks", float(fallbacks), sync_dist=True, reduce_fx="sum")

    def configure_optimizers(self):
        raise RuntimeError("a ClassicalModule has no parameters to optimise; use trainer.test, not trainer.fit.")


__all__ = ["ClassicalModule"]
