"""Which windows a rank draws, in which order: `WindowSampler` and the wet-window weights.

`WindowSampler` subclasses `DistributedSampler`, so Lightning does not replace it under
DDP; train shards are padded to equal length (ranks must step together), eval shards are
not padded (no sample is scored twice, so 2 ranks score what 1 rank does). It yields
`epoch * len(dataset) + index`: the epoch reaches the dataset through the index itself,
so every random draw of a sample is seeded by (seed, split, epoch, index).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence, Sized
from typing import cast

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

log = logging.getLogger(__name__)

SAMPLINGS = ("uniform", "wet")


def window_sample_weights(
    wet_fraction: np.ndarray, starts: np.ndarray, target_offsets: np.ndarray, floor: float
) -> np.ndarray:
    """Importance weights `(n_windows,)` of training windows, mean 1: the mean wet fraction of the
    target frames (`wet_fraction` `(T,)` per frame), at least `floor` so dry windows are still drawn."""
    wet = wet_fraction[np.asarray(starts)[:, None] + np.asarray(target_offsets)[None, :]].mean(axis=1)
    weights = np.maximum(wet, float(floor))
    return weights / weights.mean()


class WindowSampler(DistributedSampler):
    """Shards a split over ``num_replicas`` ranks; yields ``epoch * len(dataset) + index``.

    shuffle=True (train): a permutation seeded by (seed, epoch), padded so every rank has
    the same number of samples; with `weights` (one per sample, data.sampling=wet), as many
    draws with replacement in proportion to them instead. shuffle=False (eval): ``index[rank::num_replicas]``, not
    padded, so each sample is scored exactly once over all ranks.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        shuffle: bool,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        weights: np.ndarray | None = None,
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        if weights is not None and (not shuffle or len(weights) != self._dataset_length()):
            raise ValueError(
                f"WindowSampler: weights need shuffle=True and one weight per sample "
                f"({len(weights)} for {self._dataset_length()})."
            )
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, np.float64))

    def _dataset_length(self) -> int:
        """len(self.dataset): our datasets are map-style with a length (torch types them as a bare Dataset)."""
        return len(cast(Sized, self.dataset))

    def _indices(self) -> list[int]:
        n = self._dataset_length()
        if not self.shuffle:
            return list(range(self.rank, n, self.num_replicas))
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            # Importance sampling: n draws with replacement, the same on every rank (same seed), then sharded.
            order = torch.multinomial(self.weights, n, replacement=True, generator=generator).tolist()
        else:
            order = torch.randperm(n, generator=generator).tolist()
        total = math.ceil(n / self.num_replicas) * self.num_replicas
        order += (order * math.ceil(total / n))[: total - n]
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * self._dataset_length() if self.shuffle else 0
        return iter([offset + i for i in self._indices()])

    def __len__(self) -> int:
        return len(self._indices())


def sampling_summary(weights: np.ndarray) -> dict[str, float]:
    """Spread of importance weights `(n,)`: windows, effective sample size (Kish) and its fraction, min, max."""
    ess = float(weights.sum() ** 2 / (weights**2).sum())
    return {
        "windows": int(weights.size),
        "effective_sample_size": ess,
        "effective_fraction": ess / weights.size,
        "min_weight": float(weights.min()),
        "max_weight": float(weights.max()),
    }


def wet_window_weights(
    wet_per_store: Sequence[np.ndarray],
    starts_per_store: Sequence[np.ndarray],
    target_offsets: np.ndarray,
    *,
    floor: float,
    threshold_mm_h: float,
) -> tuple[np.ndarray, dict[str, float]]:
    """Weights `(n_windows,)`, mean 1, of the train windows of all stores in order (data.sampling=wet),
    and their `sampling_summary` (logged). `wet_per_store[k]` `(T_k,)`: the fraction of store k's
    frame pixels >= threshold_mm_h; `starts_per_store[k]`: its train window starts."""
    per_store = [
        window_sample_weights(wet, starts, target_offsets, floor)
        for wet, starts in zip(wet_per_store, starts_per_store, strict=True)
    ]
    weights = per_store[0] if len(per_store) == 1 else np.concatenate(per_store) / np.concatenate(per_store).mean()
    report = sampling_summary(weights)
    log.info(
        "train windows sampled by wet fraction >= %g mm/h (floor %g): effective sample size %.1f of %d "
        "(%.0f%%), weights %.3g..%.3g (mean 1)",
        threshold_mm_h,
        floor,
        report["effective_sample_size"],
        report["windows"],
        100 * report["effective_fraction"],
        report["min_weight"],
        report["max_weight"],
    )
    return weights, report
