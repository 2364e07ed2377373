"""`RadarModule`: the trainable LightningModule of every network (networks only).

It builds its network, loss and metrics from plain config dicts it saves as hyperparameters,
so `RadarModule.load_from_checkpoint(path)` rebuilds the same network without Hydra. What a
task predicts and scores (frame counts, composition of observed + predicted pixels, the score
mask) is the task object's (nowcast_infill/tasks); metric bookkeeping is the evaluation path
shared with classical methods (evaluation/scoring.py); learning-rate scaling and schedules are
training/lr.py's; figures are drawn by `training.callbacks.FigureCallback`.

Tensors follow docs/schema.md § Samples, batched to `(B, T, C, H, W)`. Metrics are computed
in mm/h: predictions and truth are decoded with the normaliser, so numbers compare across
normalisers and with the classical methods.

Checkpoints carry `checkpoint["nowcast_infill"]` (`PAYLOAD_KEY`, format 2): the task and its
frame counts, the normaliser's state, the auxiliary field names and the model name, in plain
types (readable by `torch.load(weights_only=True)`). Loading restores the normaliser from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
import lightning as L
import torch

from nowcast_infill.checkpoint_io import PAYLOAD_FORMAT, PAYLOAD_KEY, checkpoint_payload
from nowcast_infill.data.datamodule import RadarDataModule
from nowcast_infill.data.normalization import Normalizer
from nowcast_infill.data.priors import WindowPrior, check_prior
from nowcast_infill.errors import BadValueError
from nowcast_infill.evaluation.scoring import EvaluationMixin
from nowcast_infill.models.network import RadarNetwork, check_network
from nowcast_infill.registry import get_method
from nowcast_infill.training.lr import build_optimizers, trainer_global_batch
from nowcast_infill.utils.instantiate import to_plain


def normalizer_from_payload(payload: Mapping[str, Any]) -> Normalizer:
    """The `Normalizer` stored in a checkpoint payload."""
    state = payload["normalizer"]
    normalizer = Normalizer(state["kind"])
    normalizer.load_state_dict(state)
    return normalizer


class RadarModule(EvaluationMixin, L.LightningModule):
    """The trainable LightningModule of every network, for infilling and nowcasting.

    Args:
        net: config of the network, a (partial) `_target_` node such as
            `PConvUNet(lstm=..., attention=..., encoder_channels=...)`; the module completes it
            with `in_frames`, `out_frames`, `aux_channels`.
        task: `infill` or `nowcast`.
        in_frames: `T_in` (infill: `2*context+1`; nowcast: `past`).
        out_frames: `T_out` (infill: 1; nowcast: `future`).
        aux_channels: number of auxiliary fields `A` the network receives (0 = none).
        loss: keyword arguments of the registered loss (`registry.get_method("loss", name, **options)`: `name` + options).
        optimizer: partial `_target_` node of a torch optimiser plus `lr_scaling`
            (`linear`|`none`) and `reference_global_batch` (the global batch `lr` was tuned at).
        scheduler: partial `_target_` node of a scheduler (called with the optimiser, and with
            `total_steps` when it accepts it) plus Lightning's `interval`, `frequency`,
            `monitor`; null for a constant learning rate.
        metrics: `RadarMetrics` options (`thresholds` mm/h, `fss_scales` pixels).
        n_log_images: how many validation/test windows `FigureCallback` draws (the module
            itself draws nothing; training/callbacks.py).
        name: variant label (`baseline`, `lstm`, ...) used in tables and run names.
        prior: a classical method the network starts from and corrects
            (nowcast_infill/data/priors.py): nowcast `extrapolation` | `persistence`,
            infill `laplace` | `temporal`; null = the plain network (the seed tables).
        prior_cache_dir: folder of the sidecar store of whole-grid forecasts (`extrapolation`,
            `sprog`); null = `$NOWCAST_INFILL_MOTION_CACHE` or `~/.cache/nowcast_infill/motion`.
        detection_limit_mm_h: answers below this rate are set to 0 mm/h (a radar's
            detection limit; removes the drizzle a smooth output puts into dry areas);
            null = keep every value.
        kind: `network` (the model config's kind); anything else is refused.
    """

    def __init__(
        self,
        net: Mapping | None = None,
        task: str = "infill",
        in_frames: int = 1,
        out_frames: int = 1,
        aux_channels: int = 0,
        loss: Mapping | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        metrics: Mapping | None = None,
        n_log_images: int = 2,
        name: str = "radar",
        prior: str | None = None,
        prior_cache_dir: str | None = None,
        detection_limit_mm_h: float | None = None,
        kind: str = "network",
    ) -> None:
        super().__init__()
        if kind != "network":
            raise BadValueError(
                f"model.kind: is {kind!r} but RadarModule trains networks; set model.kind=network "
                "(classical methods use nowcast_infill.evaluation.classical.ClassicalModule)."
            )
        prior = check_prior(prior, task)
        if detection_limit_mm_h is not None and not float(detection_limit_mm_h) >= 0:
            raise ValueError(f"model.detection_limit_mm_h={detection_limit_mm_h!r}; it must be >= 0 mm/h or null.")
        self.save_hyperparameters(
            {
                "net": to_plain(net),
                "task": task,
                "in_frames": int(in_frames),
                "out_frames": int(out_frames),
                "aux_channels": int(aux_channels),
                "loss": to_plain(loss),
                "optimizer": to_plain(optimizer),
                "scheduler": to_plain(scheduler),
                "metrics": to_plain(metrics),
                "n_log_images": int(n_log_images),
                "name": str(name),
                "prior": prior,
                "prior_cache_dir": None if prior_cache_dir is None else str(prior_cache_dir),
                "detection_limit_mm_h": None if detection_limit_mm_h is None else float(detection_limit_mm_h),
            }
        )
        self.configure_evaluation()  # the task (checks the frame counts) and the stage metrics
        self.configure_models()
        self.configure_losses()
        self._window_prior: WindowPrior | None = None
        # auxiliary field names of the checkpoint this module was loaded from (None: not loaded)
        self._checkpoint_aux_names: list[str] | None = None

    # ----------------------------------------------------------------- hooks
    def configure_models(self) -> None:
        """Build `self.net` from `hparams.net`, completed with the frame and aux counts."""
        node = dict(self.hparams.net or {})
        if "_target_" not in node:
            raise ValueError("model.net has no _target_; point it at a network class such as PConvUNet.")
        node.pop("_partial_", None)
        self.net: RadarNetwork = check_network(
            hydra.utils.instantiate(
                node,
                in_frames=self.task.in_frames,
                out_frames=self.task.out_frames,
                aux_channels=self.hparams.aux_channels,
                task=self.task.name,
                **({"prior_frames": self.task.out_frames} if self.hparams.get("prior") else {}),
            )
        )

    def configure_losses(self) -> None:
        """Build `self.criterion`: the registered loss `hparams.loss.name` with its other keys as options."""
        spec = dict(self.hparams.loss or {})
        if "name" not in spec:
            raise ValueError(
                "model.loss has no 'name'; e.g. loss: {name: infill, preset: liu} or {name: nowcast, kind: mse}."
            )
        self.criterion = get_method("loss", spec.pop("name"), **spec)

    # --------------------------------------------------------- data coupling
    def _sync_with_datamodule(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        for key in ("in_frames", "out_frames"):
            have = getattr(datamodule, key, None)
            if have is not None and int(have) != self.hparams[key]:
                raise ValueError(
                    f"model.{key}={self.hparams[key]} but the DataModule yields {key}={have}; "
                    f"they come from task.{key}: override task, not one of them."
                )
        aux_names = list(getattr(datamodule, "aux_names", None) or [])
        if len(aux_names) != self.hparams.aux_channels:
            raise ValueError(
                f"model.aux_channels={self.hparams.aux_channels} but the DataModule yields {len(aux_names)} "
                f"auxiliary fields {aux_names}; set model.aux_channels={len(aux_names)} or change the data's aux list."
            )
        if isinstance(datamodule, RadarDataModule):
            datamodule.attach_prior(self.window_prior())
        normalizer = getattr(datamodule, "normalizer", None)
        if normalizer is None:
            return
        self.net.set_output_floor(float(normalizer.floor))
        self.criterion.set_decoder(normalizer.decode)

    def window_prior(self) -> WindowPrior | None:
        """The `WindowPrior` of `hparams.prior` (None without one), for the DataModule's samples."""
        if not self.hparams.get("prior"):
            return None
        if self._window_prior is None:
            self._window_prior = WindowPrior(
                self.hparams.prior, self.task.name, self.task.out_frames, cache_root=self.hparams.get("prior_cache_dir")
            )
        return self._window_prior

    def setup(self, stage: str) -> None:
        self._sync_with_datamodule()

    # The DataModule's state (its normaliser) is restored from a checkpoint after `setup`, so the
    # floor and decoder are synced again once the loop starts.
    def on_fit_start(self) -> None:
        self._sync_with_datamodule()

    def on_test_start(self) -> None:
        self._sync_with_datamodule()

    def on_validation_start(self) -> None:
        self._sync_with_datamodule()

    # ----------------------------------------------------------- checkpoints
    @property
    def aux_names(self) -> list[str]:
        """Auxiliary field names in channel order: the DataModule's, else the loaded checkpoint's."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(datamodule, "aux_names", None)
        if names is None:
            names = self._checkpoint_aux_names
        if names is None:
            if self.hparams.aux_channels:
                raise RuntimeError("RadarModule.aux_names: no DataModule and no checkpoint names the auxiliary fields.")
            names = []
        return list(names)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[PAYLOAD_KEY] = {
            "format": PAYLOAD_FORMAT,
            "task": {"name": self.task.name, "in_frames": self.task.in_frames, "out_frames": self.task.out_frames},
            "normalizer": self.normalizer.state_dict(),
            "aux_names": [str(name) for name in self.aux_names],
            "model_name": str(self.hparams.name),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        payload = checkpoint_payload(checkpoint)
        if payload is None:  # an older checkpoint: the DataModule state / run config carry these
            return
        self.attach_normalizer(normalizer_from_payload(payload))
        self._checkpoint_aux_names = list(payload["aux_names"])

    # -------------------------------------------------------------- forward
    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw network output `(B, T_out, 1, H, W)`, normalised units (>= floor)."""
        if self.hparams.get("prior"):
            if "prior" not in batch:
                raise ValueError(
                    f"model.prior={self.hparams.prior} but the batch has no 'prior'; run through a Trainer with the "
                    "RadarDataModule (the module's setup attaches the prior to it)."
                )
            return self.net(
                batch["x"],
                batch["x_mask"],
                batch.get("aux"),
                batch.get("aux_mask"),
                prior=batch["prior"],
                prior_mask=batch["prior_valid"],
            )
        return self.net(batch["x"], batch["x_mask"], batch.get("aux"), batch.get("aux_mask"))

    def compose(self, raw: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Final answer in normalised units `(B, T_out, 1, H, W)` (the task's composition)."""
        return self.task.compose(raw, batch)

    def predict_mm_h(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Final answer decoded to mm/h, `(B, T_out, 1, H, W)`."""
        return self.decode_answer(self.compose(self(batch), batch))

    def decode_answer(self, answer: torch.Tensor) -> torch.Tensor:
        """Normalised answer -> mm/h, 0 below `detection_limit_mm_h` when that is set."""
        pred_mm_h = self.normalizer.decode(answer)
        limit = self.hparams.get("detection_limit_mm_h")
        if limit:
            pred_mm_h = torch.where(pred_mm_h < limit, torch.zeros_like(pred_mm_h), pred_mm_h)
        return pred_mm_h

    # ------------------------------------------------------------- the loop
    def training_step(self, batch, batch_idx):
        raw = self(batch)
        total, terms = self.criterion(raw, batch)
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"training loss is {total.item()} at step {self.global_step} (terms: "
                f"{ {k: float(v) for k, v in terms.items()} }); lower optimizer.lr or check the input data."
            )
        batch_size = batch["x"].shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size, sync_dist=False)
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value, batch_size=batch_size)
        return total

    def validation_step(self, batch, batch_idx):
        raw = self(batch)
        total, _ = self.criterion(raw, batch)
        self.log("val/loss", total, prog_bar=True, batch_size=batch["x"].shape[0], sync_dist=True)
        return self.evaluate_batch("val", self.decode_answer(self.compose(raw, batch)), batch)

    # ------------------------------------------------------------ optimiser
    def global_batch(self) -> int:
        """Per-device batch x devices x nodes x accumulation of the attached Trainer."""
        return trainer_global_batch(self.trainer)

    def configure_optimizers(self):
        return build_optimizers(self.hparams.optimizer, self.hparams.scheduler, self.parameters(), self.trainer)


__all__ = ["PAYLOAD_FORMAT", "PAYLOAD_KEY", "RadarModule", "checkpoint_payload", "normalizer_from_payload"]
