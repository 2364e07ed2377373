"""RadarDataModule: one LightningDataModule for task=infill and task=nowcast, over one or several stores.

Reads radar stores of docs/schema.md and yields the sample dicts of docs/schema.md
§ "Samples produced by the DataModule". The jobs live beside it: splits and windows
(data/splits.py), one store's preparation (data/store_windows.py), samples
(data/dataset.py), aux regridding (data/regrid.py), tiles (data/tiling.py), the sampler
(data/sampler.py), the normaliser (data/normalization.py, data/store_normalizers.py)
and the fixed evaluation masks (data/eval_masks.py).

Several stores (`stores=[...]`): each keeps its own grid, splits, windows, frame statistics
and evaluation masks; windows of a split are drawn across all stores; batches stay
same-shaped because training uses crops and evaluation tiles (required when grids differ).
One normaliser is fitted over the train frames of all stores (default), or one per store
(`normalize_per_store=True`: samples then carry `store`, the index that picks it).

Where the normaliser comes from: data/store_normalizers.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from nowcast_infill import schema
from nowcast_infill.data.dataset import MultiStoreDataset, RadarWindowDataset
from nowcast_infill.data.eval_masks import save_store_eval_masks, store_eval_mask_sets
from nowcast_infill.data.masks import MaskGenerator, build_mask_generator
from nowcast_infill.data.normalization import Normalizer
from nowcast_infill.data.sampler import SAMPLINGS, WindowSampler, wet_window_weights
from nowcast_infill.data.splits import DEFAULT_SPLIT, is_test_only, present_splits, window_offsets
from nowcast_infill.data.store_normalizers import StoreNormalizers
from nowcast_infill.data.store_windows import (
    StoreWindows,
    WindowRules,
    check_stores_agree,
    combined_reports,
    resolve_aux,
    store_paths,
)
from nowcast_infill.errors import BadValueError, UserError
from nowcast_infill.io.store import open_store
from nowcast_infill.utils.instantiate import to_plain

log = logging.getLogger(__name__)


class SplitUnavailableError(UserError, ValueError):
    """A loader was asked for a split the configuration does not have (train/val with split=test_only,
    val/test with split=train_only)."""


class RadarDataModule(L.LightningDataModule):
    """Windows of radar Zarr stores for infilling or nowcasting.

    Batches are dicts of docs/schema.md § Samples with a leading batch dim:
    ``x``/``x_mask`` ``(B, T_in, 1, H, W)`` (normalised / 0-1), ``y``/``y_valid`` (and
    ``hole`` for infill) ``(B, T_out, 1, H, W)``, ``aux``/``aux_mask`` ``(B, T_in, A, H, W)``
    (z-scored / 0-1, only when aux is configured), ``time`` ``(B, T_out)`` int64 ns UTC;
    with several stores also ``store`` ``(B,)`` int64, the store's index in `stores`.
    """

    def __init__(
        self,
        store: str | Path | None = None,
        task: str = "infill",
        past: int = 4,
        future: int = 4,
        context: int = 1,
        crop_size: int | None = 256,
        eval_tile: int | None = None,
        split: Mapping | str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        masks: Mapping | MaskGenerator | None = None,
        eval_masks: Mapping | None = None,
        mask_context: bool = False,
        input_hole_prob: float = 0.0,
        aux: Sequence[str] | str | None = None,
        normalization: str = "log1p_scaled",
        stats_path: str | Path | None = None,
        min_valid_fraction: float = 0.05,
        crop_attempts: int = 5,
        max_rain_rate_mm_h: float = schema.MAX_RAIN_RATE_MM_H,
        sampling: str = "uniform",
        sampling_threshold_mm_h: float = 0.1,
        sampling_floor: float = 0.05,
        stats_wait_s: float = 3600.0,
        stores: Sequence[str | Path] | None = None,
        normalize_per_store: bool = False,
    ):
        # The arguments as given, in signature order (taken before any other local exists).
        init_args = {name: value for name, value in locals().items() if name not in ("self", "__class__")}
        super().__init__()
        # Checkpoints then carry crop size, aux names and split, so inference needs no run folder.
        # Plain containers only: torch's weights-only checkpoint loading refuses OmegaConf objects.
        init_args.update(
            store=None if store is None else str(store),
            masks=masks if masks is None or isinstance(masks, Mapping) else None,
            stats_path=None if stats_path is None else str(stats_path),
            stores=None if stores is None else [str(s) for s in stores],
        )
        self.save_hyperparameters(to_plain(init_args), logger=False)
        self.stores = store_paths(store, to_plain(stores))
        self.store = self.stores[0]
        self.task = task
        self.past, self.future, self.context = int(past), int(future), int(context)
        self.window_length, self.input_offsets, self.target_offsets = window_offsets(task, past, future, context)
        self.crop_size = None if crop_size is None else int(crop_size)
        self.eval_tile = None if eval_tile is None else int(eval_tile)
        self.split = to_plain(split) or dict(DEFAULT_SPLIT)
        self.test_only = is_test_only(self.split)
        self.batch_size, self.num_workers, self.pin_memory = int(batch_size), int(num_workers), bool(pin_memory)
        self.seed = int(seed)
        self.masks = to_plain(masks)
        self.eval_mask_spec = {"n": 32, "seed": self.seed + 1000, **(to_plain(eval_masks) or {})}
        self.mask_context, self.input_hole_prob = bool(mask_context), float(input_hole_prob)
        self.aux = to_plain(aux)
        self.normalization = normalization
        self.stats_path = None if stats_path in (None, "") else Path(stats_path)
        self.normalize_per_store = bool(normalize_per_store)
        self.min_valid_fraction, self.crop_attempts = float(min_valid_fraction), int(crop_attempts)
        if not 0 <= self.min_valid_fraction <= 1:
            raise BadValueError(f"min_valid_fraction={min_valid_fraction} must lie in [0, 1].")
        if not 0 <= self.input_hole_prob <= 1:
            raise BadValueError(f"input_hole_prob={input_hole_prob} must lie in [0, 1].")
        self.max_rain_rate_mm_h = float(max_rain_rate_mm_h)
        if not self.max_rain_rate_mm_h > 0:
            raise BadValueError(
                f"max_rain_rate_mm_h={max_rain_rate_mm_h} must be > 0 mm/h (default {schema.MAX_RAIN_RATE_MM_H:g})."
            )
        if sampling not in SAMPLINGS:
            raise BadValueError(
                f"data.sampling={sampling!r} is unknown; use one of {SAMPLINGS} (wet: windows drawn "
                "in proportion to their wet fraction)."
            )
        if not 0 < float(sampling_floor) <= 1:
            raise BadValueError(f"data.sampling_floor={sampling_floor} must lie in (0, 1]: the weight of a dry window.")
        self.sampling, self.sampling_floor = sampling, float(sampling_floor)
        self.sampling_threshold_mm_h = float(sampling_threshold_mm_h)
        self.stats_wait_s = float(stats_wait_s)
        # Set by setup(): importance weight of each train window (None: uniform) and their summary.
        self.train_weights: np.ndarray | None = None
        self.sampling_report: dict[str, float] = {}
        # One normaliser per store (the same object for all unless normalize_per_store); datasets
        # built in setup() hold these objects, so loading a state later updates them in place.
        self._norms = StoreNormalizers(
            normalization,
            len(self.stores),
            per_store=self.normalize_per_store,
            stats_path=self.stats_path,
            max_rain_rate_mm_h=self.max_rain_rate_mm_h,
        )
        self._aux_names: list[str] | None = None
        self.plans: list[StoreWindows] = []
        self.datasets: dict[str, RadarWindowDataset | MultiStoreDataset] = {}
        # Set by setup(): windows kept/skipped per split and the implausible store values found
        # ({"count", "first_time", "variable", "max_rain_rate_mm_h"}), summed over the stores.
        self.window_report: dict[str, dict[str, int]] = {}
        self.implausible_report: dict[str, Any] = {}
        # (n, H, W) bool fixed val/test hole masks of each store (task=infill); eval_masks: the first store's.
        self.eval_mask_sets: list[np.ndarray] = []
        self.eval_masks: np.ndarray | None = None
        self._prior = None
        self._set_up = False

    # -- public properties -----------------------------------------------------------------
    @property
    def in_frames(self) -> int:
        return int(self.input_offsets.size)

    @property
    def out_frames(self) -> int:
        return int(self.target_offsets.size)

    @property
    def aux_names(self) -> list[str]:
        """Auxiliary fields in sample order (resolves 'all' against the (first) store)."""
        if self._aux_names is None:
            self._aux_names = resolve_aux(open_store(self.store), self.aux, self.store)
        return list(self._aux_names)

    def attach_prior(self, prior) -> None:
        """Give every split's samples ``prior``/``prior_valid`` from `prior` (a
        `nowcast_infill.data.priors.WindowPrior`, or None to stop); called by the module's setup."""
        self._prior = prior
        for dataset in self.datasets.values():
            for part in dataset.parts if isinstance(dataset, MultiStoreDataset) else [dataset]:
                part.prior = prior

    @property
    def normalizer(self) -> Normalizer:
        """The normaliser of every sample (with normalize_per_store and several stores: see `normalizers`)."""
        if self._norms.per_store:
            raise BadValueError(
                "data.normalize_per_store=true gives one normaliser per store: use "
                "RadarDataModule.normalizers[sample['store']], or set data.normalize_per_store=false."
            )
        return self._norms.shared

    @property
    def normalizers(self) -> list[Normalizer]:
        """The normaliser of each store, in `stores` order (all the same object unless normalize_per_store)."""
        return list(self._norms.each)

    def use_normalizer(self, normalizer: Normalizer) -> None:
        """Normalise every store with `normalizer` (e.g. a checkpoint's, for zero-shot evaluation).

        Called before `setup`, setup then neither fits nor reads nor writes a statistics file;
        called after, the datasets switch to it in place.
        """
        self._norms.use(normalizer.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return self._norms.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the normaliser(s) of a checkpoint, in place (datasets built in setup() hold these
        objects); before setup this is `use_normalizer`: setup then fits and reads nothing. A
        per-store list must match data.stores and data.normalize_per_store (else BadValueError)."""
        self._norms.load_state_dict(state_dict)

    def _mask_generator(self) -> MaskGenerator | None:
        if self.masks is None:
            return None
        if callable(self.masks):
            return self.masks
        return build_mask_generator(self.masks)

    def _world(self) -> tuple[int, int]:
        """(num_replicas, rank) from the attached trainer, else torch.distributed, else (1, 0)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    # -- setup ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._set_up:
            return
        needs = {"fit": "train", "validate": "val", "test": "test", "predict": "test"}.get(stage or "")
        if needs is not None and needs not in present_splits(self.split):
            raise SplitUnavailableError(
                f"data.split={self.split} has no {needs} split, so stage {stage!r} cannot run; "
                "give data.split fractions or dates, or run the stage that split is for."
            )
        rank = self._world()[1]
        rules = WindowRules(
            self.task,
            self.window_length,
            self.input_offsets,
            self.target_offsets,
            self.min_valid_fraction,
            self.max_rain_rate_mm_h,
        )
        self.plans = [
            StoreWindows.prepare(
                path,
                rules,
                split=self.split,
                aux=self.aux,
                crop_size=self.crop_size,
                rank=rank,
                stats_wait_s=self.stats_wait_s,
            )
            for path in self.stores
        ]
        check_stores_agree(
            self.plans, crop_size=self.crop_size, eval_tile=self.eval_tile, splits=present_splits(self.split)
        )
        self._aux_names = list(self.plans[0].aux_names)
        self.window_report, self.implausible_report = combined_reports(self.plans)
        self._norms.prepare(self.plans, aux_names=self.aux_names, seed=self.seed, test_only=self.test_only, rank=rank)
        self.train_weights = None if self.test_only else self._sample_weights()

        generator = self._mask_generator()
        if self.task == "infill" and generator is None:
            raise BadValueError(
                "task=infill needs hole masks: set data.masks (e.g. {name: mixture}) or pass a generator."
            )
        if self.task == "nowcast" and self.input_hole_prob > 0 and generator is None:
            raise BadValueError(f"input_hole_prob={self.input_hole_prob} needs data.masks to draw the input holes.")
        if self.task == "infill":
            assert generator is not None  # task=infill without masks raised above
            n, seed = int(self.eval_mask_spec["n"]), int(self.eval_mask_spec["seed"])
            self.eval_mask_sets = store_eval_mask_sets(generator, n, seed, self.plans)
            self.eval_masks = self.eval_mask_sets[0]
        splits = present_splits(self.split)
        self.datasets = {name: self._split_dataset(name, generator) for name in splits}
        self.attach_prior(self._prior)
        self._set_up = True

    def _split_dataset(self, name: str, generator: MaskGenerator | None) -> RadarWindowDataset | MultiStoreDataset:
        masking = dict(mask_generator=generator, mask_context=self.mask_context, input_hole_prob=self.input_hole_prob)
        parts = [
            plan.dataset(
                name,
                crop_size=self.crop_size,
                eval_tile=self.eval_tile,
                eval_masks=self.eval_mask_sets[index] if self.eval_mask_sets else None,
                normalizer=normalizer,
                seed=self.seed,
                crop_attempts=self.crop_attempts,
                stream=index or None,
                **masking,
            )
            for index, (plan, normalizer) in enumerate(zip(self.plans, self._norms.each, strict=True))
        ]
        return parts[0] if len(parts) == 1 else MultiStoreDataset(parts)

    def _sample_weights(self) -> np.ndarray | None:
        """Importance weights of the train windows for data.sampling=wet (None for uniform)."""
        if self.sampling == "uniform":
            return None
        wet_per_store = []
        for plan in self.plans:
            try:
                wet_per_store.append(plan.stats.wet_fraction(self.sampling_threshold_mm_h))
            except ValueError as err:
                raise BadValueError(f"data.sampling_threshold_mm_h: {err}") from None
        weights, self.sampling_report = wet_window_weights(
            wet_per_store,
            [plan.starts["train"] for plan in self.plans],
            self.target_offsets,
            floor=self.sampling_floor,
            threshold_mm_h=self.sampling_threshold_mm_h,
        )
        return weights

    def save_eval_masks(self, directory: str | Path) -> Path:
        """Save the fixed evaluation masks beside the results (`eval_masks.npz`; with several stores
        also `eval_masks.store<k>.npz` for store k >= 1); returns the first file written."""
        if self.eval_masks is None:
            raise RuntimeError("no evaluation masks: call setup() first (task=infill only).")
        spec = self.masks if isinstance(self.masks, Mapping) else self._mask_generator()
        assert spec is not None  # eval masks exist only for task=infill, whose setup() requires masks
        return save_store_eval_masks(directory, self.eval_mask_sets, spec, int(self.eval_mask_spec["seed"]))[0]

    # -- loaders ----------------------------------------------------------------------------
    def _loader(self, name: str, *, num_replicas: int | None = None, rank: int | None = None) -> DataLoader:
        if not self._set_up:
            self.setup()
        if name not in self.datasets:
            raise SplitUnavailableError(
                f"data.split={self.split}: there is no {name} split; give data.split fractions or dates, "
                f"or run only the stage of the {'/'.join(self.datasets)} split."
            )
        dataset = self.datasets[name]
        world, this_rank = self._world()
        sampler = WindowSampler(
            dataset,
            shuffle=name == "train",
            seed=self.seed,
            weights=self.train_weights if name == "train" else None,
            num_replicas=world if num_replicas is None else num_replicas,
            rank=this_rank if rank is None else rank,
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=name == "train" and len(sampler) > self.batch_size,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
