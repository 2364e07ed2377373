"""LightningModules: one base for both tasks and all four variants, and a wrapper for baselines.

`RadarModule` builds its network, loss and metrics in three hooks (`configure_models`,
`configure_losses`, `configure_metrics`) from plain config dicts it saves as hyperparameters,
so `RadarModule.load_from_checkpoint(path)` rebuilds the same network without Hydra.

Tasks (tensors follow docs/schema.md § Samples, batched to `(B, T, C, H, W)`):

* `infill`: the network sees `T_in = 2*context+1` frames; the target frame (index `context`)
  has holes. The answer is a composite: the observation where the target frame's `x_mask` is 1,
  the network where it is 0. Metrics are scored on `hole` pixels.
* `nowcast`: the network predicts `T_out` future frames; loss and metrics use `y_valid` pixels,
  metrics per lead time.

Metrics are computed in mm/h: predictions and truth are decoded with the DataModule's
normaliser, so numbers compare across normalisers and with the baselines.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import hydra
import lightning as L
import torch

from nowcast_infill.study import METRIC_DEFAULTS
from nowcast_infill.utils.instantiate import split_reserved, to_plain
from nowcast_infill.utils.logging import get_logger
from nowcast_infill.utils.lr import scaled_learning_rate, trainer_global_batch

log = get_logger(__name__)

TASKS = ("infill", "nowcast")
STAGES = ("val", "test")
# Keys of the optimizer/scheduler nodes that the framework reads; the rest go to the target.
OPTIMIZER_RESERVED = {"lr_scaling": "none", "reference_global_batch": None}
SCHEDULER_RESERVED = {"interval": "step", "frequency": 1, "monitor": "val/loss"}
# the study's thresholds and FSS scales (nowcast_infill/study.py), also conf/model/_common.yaml's
DEFAULT_METRICS = METRIC_DEFAULTS
# Sample panels are drawn from windows whose target is at least this fraction valid, the
# wettest first (fraction of valid pixels with at least FIGURE_WET_MM_H).
FIGURE_MIN_VALID_FRACTION = 0.5
FIGURE_WET_MM_H = 1.0


class RadarModule(L.LightningModule):
    """Base LightningModule for radar infilling and nowcasting.

    Args:
        net: config of the network, a (partial) `_target_` node such as
            `PConvUNet(lstm=..., attention=..., encoder_channels=...)`; the module completes it
            with `in_frames`, `out_frames`, `aux_channels`.
        task: `infill` or `nowcast`.
        in_frames: `T_in` (infill: `2*context+1`; nowcast: `past`).
        out_frames: `T_out` (infill: 1; nowcast: `future`).
        aux_channels: number of auxiliary fields `A` the network receives (0 = none).
        loss: keyword arguments of `nowcast_infill.models.losses.get_loss` (`name` + options).
        optimizer: partial `_target_` node of a torch optimiser plus `lr_scaling`
            (`linear`|`none`) and `reference_global_batch` (the global batch `lr` was tuned at).
        scheduler: partial `_target_` node of a scheduler (called with the optimiser, and with
            `total_steps` when it accepts it) plus Lightning's `interval`, `frequency`,
            `monitor`; null for a constant learning rate.
        metrics: `RadarMetrics` options (`thresholds` mm/h, `fss_scales` pixels).
        n_log_images: how many validation/test windows are drawn as figures and sent to the
            logger: the wettest of those with a mostly valid target.
        name: variant label (`baseline`, `lstm`, ...) used in tables and run names.
        prior: a classical method the network starts from and corrects
            (nowcast_infill/data/priors.py): nowcast `extrapolation` | `persistence`,
            infill `laplace` | `temporal`; null = the plain network (the seed tables).
        prior_cache_dir: folder of the motion-field sidecar store (`extrapolation`); null =
            `$NOWCAST_INFILL_MOTION_CACHE` or `~/.cache/nowcast_infill/motion`.
        detection_limit_mm_h: answers below this rate are set to 0 mm/h (a radar's
            detection limit; removes the drizzle a smooth output puts into dry areas);
            null = keep every value.
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
    ) -> None:
        super().__init__()
        from nowcast_infill.data.priors import check_prior

        prior = check_prior(prior, task)
        if detection_limit_mm_h is not None and not float(detection_limit_mm_h) >= 0:
            raise ValueError(f"model.detection_limit_mm_h={detection_limit_mm_h!r}; it must be >= 0 mm/h or null.")
        if task not in TASKS:
            raise ValueError(f"model.task={task!r} is not one of {TASKS}; set task=infill or task=nowcast.")
        if task == "infill" and (in_frames % 2 != 1 or out_frames != 1):
            raise ValueError(
                f"task=infill needs an odd in_frames (2*context+1) and out_frames=1, got in_frames={in_frames}, "
                f"out_frames={out_frames}; check task.in_frames/task.out_frames."
            )
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
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()
        # Per stage: (score, one window's CPU tensors) of the sample panels, best first.
        self._figure_pool: dict[str, list[tuple[float, dict[str, torch.Tensor]]]] = {}
        # Per stage: scored pixels, and pixels a method left without an answer (see _update_metrics).
        self._scored: dict[str, int] = {}
        self._unscored: dict[str, int] = {}

    # ----------------------------------------------------------------- hooks
    def configure_models(self) -> None:
        """Build `self.net` from `hparams.net`, completed with the frame and aux counts."""
        node = dict(self.hparams.net or {})
        if "_target_" not in node:
            raise ValueError("model.net has no _target_; point it at a network class such as PConvUNet.")
        node.pop("_partial_", None)
        self.net = hydra.utils.instantiate(
            node,
            in_frames=self.hparams.in_frames,
            out_frames=self.hparams.out_frames,
            aux_channels=self.hparams.aux_channels,
            task=self.hparams.task,
            **({"prior_frames": self.hparams.out_frames} if self.hparams.get("prior") else {}),
        )

    def configure_losses(self) -> None:
        """Build `self.criterion` with `get_loss(**hparams.loss)`."""
        from nowcast_infill.models.losses import get_loss

        spec = dict(self.hparams.loss or {})
        if "name" not in spec:
            raise ValueError("model.loss has no 'name'; e.g. loss: {name: infill, preset: liu} or {name: nowcast, kind: mse}.")
        self.criterion = get_loss(**spec)

    def configure_metrics(self) -> None:
        """One `RadarMetrics` per evaluation stage, cloned from the same template."""
        from nowcast_infill.metrics.radar_metrics import RadarMetrics

        options = {**DEFAULT_METRICS, **(self.hparams.metrics or {})}
        template = RadarMetrics(
            thresholds=tuple(options["thresholds"]),
            fss_scales=tuple(options["fss_scales"]),
            n_leads=self.hparams.out_frames,
        )
        # ModuleDict so the metric states move with the module to the device.
        self.stage_metrics = torch.nn.ModuleDict({stage: template.clone() for stage in STAGES})

    # --------------------------------------------------------- data coupling
    def attach_normalizer(self, normalizer) -> None:
        """Use `normalizer` when no Trainer/DataModule is attached (inference, scripts, tests)."""
        self._attached_normalizer = normalizer

    @property
    def normalizer(self):
        """The DataModule's normaliser (restored from the checkpoint when one is loaded), else the
        one given to `attach_normalizer`."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        normalizer = getattr(datamodule, "normalizer", None) or self.__dict__.get("_attached_normalizer")
        if normalizer is None:
            raise RuntimeError(
                "RadarModule needs a RadarDataModule with a fitted `normalizer` (metrics are in mm/h); "
                "pass datamodule=... to trainer.fit/test."
            )
        return normalizer

    def _sync_with_datamodule(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        for name in ("in_frames", "out_frames"):
            have = getattr(datamodule, name, None)
            if have is not None and int(have) != self.hparams[name]:
                raise ValueError(
                    f"model.{name}={self.hparams[name]} but the DataModule yields {name}={have}; "
                    f"they come from task.{name}: override task, not one of them."
                )
        aux_names = list(getattr(datamodule, "aux_names", None) or [])
        if len(aux_names) != self.hparams.aux_channels:
            raise ValueError(
                f"model.aux_channels={self.hparams.aux_channels} but the DataModule yields {len(aux_names)} "
                f"auxiliary fields {aux_names}; set model.aux_channels={len(aux_names)} or change the data's aux list."
            )
        if hasattr(datamodule, "attach_prior"):
            datamodule.attach_prior(self.window_prior())
        normalizer = getattr(datamodule, "normalizer", None)
        if normalizer is None:
            return
        if hasattr(self.net, "set_output_floor"):
            self.net.set_output_floor(float(normalizer.floor))
        if hasattr(self.criterion, "set_decoder"):
            self.criterion.set_decoder(normalizer.decode)

    def window_prior(self):
        """The `WindowPrior` of `hparams.prior` (None without one), for the DataModule's samples."""
        from nowcast_infill.data.priors import WindowPrior

        if not self.hparams.get("prior"):
            return None
        if getattr(self, "_window_prior", None) is None:
            self._window_prior = WindowPrior(self.hparams.prior, self.hparams.task, self.hparams.out_frames,
                                             cache_root=self.hparams.get("prior_cache_dir"))
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

    # -------------------------------------------------------------- forward
    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw network output `(B, T_out, 1, H, W)`, normalised units (>= floor)."""
        if self.hparams.get("prior"):
            if "prior" not in batch:
                raise ValueError(
                    f"model.prior={self.hparams.prior} but the batch has no 'prior'; run through a Trainer with the "
                    "RadarDataModule (the module's setup attaches the prior to it)."
                )
            return self.net(batch["x"], batch["x_mask"], batch.get("aux"), batch.get("aux_mask"),
                            prior=batch["prior"], prior_mask=batch["prior_valid"])
        return self.net(batch["x"], batch["x_mask"], batch.get("aux"), batch.get("aux_mask"))

    def compose(self, raw: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Final answer in normalised units `(B, T_out, 1, H, W)`.

        Infill: observed values where the target frame is observed, the network elsewhere.
        Nowcast: the network output.
        """
        if self.hparams.task != "infill":
            return raw
        c = self.hparams.in_frames // 2
        observed = batch["x_mask"][:, c : c + 1]
        return observed * batch["x"][:, c : c + 1] + (1.0 - observed) * raw

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

    def score_mask(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """0/1 `(B, T_out, 1, H, W)`: the pixels every method of a comparison is scored on.

        Infill: hole pixels. Nowcast: valid target pixels that are also observed in the
        latest input frame with any data, the frame persistence and extrapolation start
        from: every method answers those (the baselines' outside rule fills pixels advected
        in from outside the tile with persistence, nowcast_infill/baselines/nowcast.py), so
        networks and baselines are scored on exactly the same pixels.
        Tiled evaluation (`eval_tile`) multiplies by the tile's `owned` mask, so a pixel
        covered by two overlapping edge tiles is scored once.
        """
        if self.hparams.task == "infill":
            mask = batch["hole"]
        else:
            observed = batch["x_mask"] > 0  # (B, T_in, 1, H, W)
            has_data = observed.flatten(2).any(2)  # (B, T_in)
            positions = torch.arange(has_data.shape[1], device=has_data.device)
            latest = torch.where(has_data, positions, -1).amax(1).clamp(min=0)  # (B,)
            start_frame = observed[torch.arange(observed.shape[0], device=observed.device), latest]  # (B, 1, H, W)
            mask = batch["y_valid"] * start_frame[:, None].to(batch["y_valid"].dtype)
        if "owned" in batch:
            mask = mask * batch["owned"]
        return mask

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
        pred_mm_h = self.decode_answer(self.compose(raw, batch))
        self._update_metrics("val", pred_mm_h, batch)
        self._keep_for_figures("val", pred_mm_h, batch)

    def test_step(self, batch, batch_idx):
        pred_mm_h = self.predict_mm_h(batch)
        self._update_metrics("test", pred_mm_h, batch)
        self._keep_for_figures("test", pred_mm_h, batch)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        self._log_figures("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
        self.test_figures = self._log_figures("test")

    def _update_metrics(self, stage: str, pred_mm_h: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        target_mm_h = self.normalizer.decode(batch["y"])
        mask = self.score_mask(batch)
        unscored = (mask > 0) & ~torch.isfinite(pred_mm_h)
        if unscored.any():
            # A method that cannot answer a pixel (e.g. extrapolation from outside the domain) is
            # not scored there; the count is logged so the comparison stays honest.
            self._unscored[stage] = self._unscored.get(stage, 0) + int(unscored.sum())
            mask = mask * (~unscored).to(mask.dtype)
            pred_mm_h = torch.nan_to_num(pred_mm_h, nan=0.0)
        self._scored[stage] = self._scored.get(stage, 0) + int((mask > 0).sum())
        self.stage_metrics[stage].update(pred_mm_h, target_mm_h, mask)

    def _log_metrics(self, stage: str) -> None:
        metric = self.stage_metrics[stage]
        values = metric.compute()
        for name, value in values.items():
            # RadarMetrics already reduced its sum/count states over ranks, so `value` is the same
            # on every rank: an all-reduce with max returns it bit for bit (a mean could round),
            # and sync_dist=True spares a Lightning warning per metric and DDP job.
            self.log(f"{stage}/{name}", value, sync_dist=True, reduce_fx="max", rank_zero_only=False)
        unscored = self._unscored.pop(stage, 0)
        scored = self._scored.pop(stage, 0)
        if unscored:
            log.warning(f"{stage}: {unscored} scored pixels had no prediction and were not scored ({scored} were).")
        self.log(f"{stage}/unscored_pixels", float(unscored), sync_dist=True, reduce_fx="sum")
        metric.reset()

    # --------------------------------------------------------------- figures
    # Sample panels show windows worth looking at: among those whose target is mostly valid
    # (on a real radar grid the first tiles are often outside the radar range, all no-data),
    # the wettest. Each stage keeps its best `n_log_images` candidates over the epoch.
    def _figure_scores(self, pred_mm_h: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`(B,)`: the fraction of valid target pixels with >= FIGURE_WET_MM_H for windows whose
        target is at least FIGURE_MIN_VALID_FRACTION valid and that have scored pixels; other
        windows score their valid fraction - 2, below every such window."""
        valid = batch["y_valid"] > 0
        n_valid = valid.flatten(1).sum(1)
        valid_fraction = n_valid / valid[0].numel()
        wet = (self.normalizer.decode(batch["y"]) >= FIGURE_WET_MM_H) & valid
        wet_fraction = wet.flatten(1).sum(1) / n_valid.clamp(min=1)
        has_scored = (self.score_mask(batch) > 0).flatten(1).any(1)
        eligible = (valid_fraction >= FIGURE_MIN_VALID_FRACTION) & has_scored
        return torch.where(eligible, wet_fraction.double(), valid_fraction.double() - 2.0)

    def _keep_for_figures(self, stage: str, pred_mm_h: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        """Keep the windows of `batch` that beat the stage's kept candidates (CPU copies)."""
        need = int(self.hparams.n_log_images)
        if need <= 0 or self.global_rank != 0 or (stage == "val" and self.trainer.sanity_checking):
            return
        pool = self._figure_pool.setdefault(stage, [])
        scores = self._figure_scores(pred_mm_h, batch).tolist()
        for i, score in enumerate(scores):
            if len(pool) >= need and score <= pool[-1][0]:
                continue
            kept = {k: v[i : i + 1].detach().cpu() for k, v in batch.items() if isinstance(v, torch.Tensor) and v.ndim == 5}
            kept["pred_mm_h"] = pred_mm_h[i : i + 1].detach().cpu()
            pool.append((score, kept))
            pool.sort(key=lambda item: -item[0])  # stable: among equals the earlier window stays first
            del pool[need:]

    def figures(self, stage: str = "test") -> list[tuple[str, Any]]:
        """(name, matplotlib Figure) for the windows kept at `stage`, best first; empties the pool."""
        from nowcast_infill.utils.plotting import infill_panel, nowcast_strip

        out = []
        normalizer = self.normalizer
        for index, (_, kept) in enumerate(self._figure_pool.pop(stage, [])):
            x_mm_h = normalizer.decode(kept["x"][0]).numpy()
            y_mm_h = normalizer.decode(kept["y"][0]).numpy()
            pred = kept["pred_mm_h"][0].numpy()
            if self.hparams.task == "infill":
                c = self.hparams.in_frames // 2
                fig = infill_panel(
                    x_mm_h[c, 0], kept["x_mask"][0, c, 0].numpy(), y_mm_h[0, 0],
                    kept["y_valid"][0, 0, 0].numpy(), pred[0, 0], kept["hole"][0, 0, 0].numpy(),
                )
            else:
                fig = nowcast_strip(
                    x_mm_h[:, 0], kept["x_mask"][0, :, 0].numpy(), y_mm_h[:, 0],
                    kept["y_valid"][0, :, 0].numpy(), pred[:, 0],
                )
            out.append((f"{self.hparams.task}_sample{index}", fig))
        return out

    def _log_figures(self, stage: str) -> list[tuple[str, Any]]:
        """Send the stage's sample panels to the loggers (rank 0); returns them (test: saved by ni-train/ni-eval)."""
        import matplotlib.pyplot as plt

        from nowcast_infill.utils.plotting import log_figure

        if self.trainer.global_rank != 0 or stage not in self._figure_pool:
            self._figure_pool.pop(stage, None)
            return []
        figures = self.figures(stage)
        for name, fig in figures:
            for logger in self.loggers:
                log_figure(logger, f"{stage}/{name}", fig, step=self.global_step)
        if stage != "test":
            for _, fig in figures:
                plt.close(fig)
        return figures

    # ------------------------------------------------------------ optimiser
    def global_batch(self) -> int:
        """Per-device batch x devices x nodes x accumulation of the attached Trainer."""
        return trainer_global_batch(self.trainer)

    def configure_optimizers(self):
        kwargs, ours = split_reserved(self.hparams.optimizer or {}, OPTIMIZER_RESERVED)
        if "_target_" not in kwargs:
            raise ValueError("model.optimizer has no _target_; e.g. torch.optim.AdamW with _partial_: true.")
        kwargs.pop("_partial_", None)
        if ours["lr_scaling"] != "none":
            if "lr" not in kwargs:
                raise ValueError("optimizer.lr_scaling needs optimizer.lr to scale.")
            reference = ours["reference_global_batch"]
            global_batch = self.global_batch()
            lr = scaled_learning_rate(kwargs["lr"], global_batch, reference or global_batch, ours["lr_scaling"])
            if lr != kwargs["lr"]:
                log.info(
                    f"lr scaled ({ours['lr_scaling']}) for global batch {global_batch} (reference {reference}): "
                    f"{kwargs['lr']:g} -> {lr:g} (optimizer.lr_scaling=none switches this off)"
                )
            kwargs["lr"] = lr
        optimizer = hydra.utils.instantiate(kwargs, params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        sched_kwargs, lightning_keys = split_reserved(self.hparams.scheduler, SCHEDULER_RESERVED)
        sched_kwargs.pop("_partial_", None)
        target = hydra.utils.get_method(sched_kwargs["_target_"]) if "_target_" in sched_kwargs else None
        if target is None:
            raise ValueError("model.scheduler has no _target_; use null for a constant learning rate.")
        accepts = inspect.signature(target).parameters
        if "total_steps" in accepts and "total_steps" not in sched_kwargs:
            sched_kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        if "global_batch" in accepts and "global_batch" not in sched_kwargs:
            # for a warm-up stated in samples (scheduler.warmup_samples)
            sched_kwargs["global_batch"] = self.global_batch()
        scheduler = hydra.utils.instantiate(sched_kwargs, optimizer=optimizer)
        config = {"scheduler": scheduler, "interval": lightning_keys["interval"], "frequency": lightning_keys["frequency"]}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = lightning_keys["monitor"]
        return {"optimizer": optimizer, "lr_scheduler": config}


class BaselineModule(RadarModule):
    """A classical method (`get_baseline(name)`) scored by the same metrics path as the networks.

    It has no parameters and is never trained: `trainer.test(BaselineModule(...), datamodule)`.
    The baseline sees each sample's input in mm/h with NaN where `x_mask` is 0.
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
    ) -> None:
        self._baseline_spec = {"name": name, "options": to_plain(options) or {}}
        super().__init__(
            net=None,  # configure_models builds the baseline from _baseline_spec instead
            task=task,
            in_frames=in_frames,
            out_frames=out_frames,
            aux_channels=aux_channels,
            metrics=metrics,
            n_log_images=n_log_images,
            name=name,
        )
        # Replaces the base hparams: a baseline is rebuilt from its name, not from a network config.
        self.save_hyperparameters(
            {
                "name": name,
                "options": self._baseline_spec["options"],
                "task": task,
                "in_frames": int(in_frames),
                "out_frames": int(out_frames),
                "aux_channels": int(aux_channels),
                "metrics": to_plain(metrics),
                "n_log_images": int(n_log_images),
            }
        )

    def configure_models(self) -> None:
        from nowcast_infill.baselines import baseline_task, get_baseline

        name, options = self._baseline_spec["name"], dict(self._baseline_spec["options"])
        if baseline_task(name) != self.hparams.task:
            raise ValueError(f"baseline {name!r} is a {baseline_task(name)} method but task={self.hparams.task}; set task={baseline_task(name)}.")
        if self.hparams.task == "nowcast":
            options.setdefault("n_leads", self.hparams.out_frames)
        self.baseline = get_baseline(name, **options)
        self.net = None

    def configure_losses(self) -> None:
        self.criterion = None

    def _sync_with_datamodule(self) -> None:
        # Baselines ignore auxiliary fields, so only the frame counts must agree.
        datamodule = getattr(self.trainer, "datamodule", None)
        for name in ("in_frames", "out_frames"):
            have = getattr(datamodule, name, None)
            if have is not None and int(have) != self.hparams[name]:
                raise ValueError(f"baseline {name}={self.hparams[name]} but the DataModule yields {have}; set task.{name}.")

    def predict_mm_h(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`(B, T_out, 1, H, W)` mm/h; infill keeps observed pixels of the target frame."""
        x_mm_h = self.normalizer.decode(batch["x"]).masked_fill(batch["x_mask"] == 0, float("nan"))
        x_np = x_mm_h[:, :, 0].detach().cpu().numpy()
        # Infill baselines solve only the scored hole pixels of the target frame (they are never
        # told the truth's values); other missing pixels stay NaN and are not scored.
        fill_masks = (batch["hole"][:, 0, 0] > 0).cpu().numpy() if self.hparams.task == "infill" else None
        outputs = []
        for i, sample in enumerate(x_np):
            if fill_masks is not None:
                out = self.baseline(sample, fill_mask=fill_masks[i])
            else:
                out = self.baseline(sample)
            if out.shape != (self.hparams.out_frames, *sample.shape[1:]):
                raise ValueError(
                    f"baseline {self._baseline_spec['name']!r} returned shape {out.shape}, expected "
                    f"{(self.hparams.out_frames, *sample.shape[1:])} (T_out, H, W)."
                )
            outputs.append(torch.as_tensor(out, dtype=batch["x"].dtype))
        pred = torch.stack(outputs)[:, :, None].to(batch["x"].device)
        if self.hparams.task == "infill":
            c = self.hparams.in_frames // 2
            observed = batch["x_mask"][:, c : c + 1] > 0
            pred = torch.where(observed, x_mm_h[:, c : c + 1], pred)
        return pred

    def forward(self, batch):
        return self.predict_mm_h(batch)

    def _log_metrics(self, stage: str) -> None:
        # Windows (nowcast) or pixels (temporal infill) the method answered with its documented
        # fallback since the last report (see nowcast_infill/baselines); 0 for methods without one.
        total = int(getattr(self.baseline, "fallbacks", 0))
        fallbacks, self._fallbacks_reported = total - getattr(self, "_fallbacks_reported", 0), total
        super()._log_metrics(stage)
        if fallbacks:
            log.warning(f"{stage}: {self._baseline_spec['name']} used its fallback {fallbacks} time(s).")
        self.log(f"{stage}/fallbacks", float(fallbacks), sync_dist=True, reduce_fx="sum")

    def training_step(self, batch, batch_idx):
        raise RuntimeError("a BaselineModule is not trained; run `ni-eval model=<baseline>` (trainer.test).")

    def validation_step(self, batch, batch_idx):
        pred_mm_h = self.predict_mm_h(batch)
        self._update_metrics("val", pred_mm_h, batch)
        self._keep_for_figures("val", pred_mm_h, batch)

    def configure_optimizers(self):
        raise RuntimeError("a BaselineModule has no parameters to optimise; use trainer.test, not trainer.fit.")
