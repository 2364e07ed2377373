"""Fixed evaluation hole masks: the same masks for every val/test pass and every method.

A set is `n` masks `(n, H, W)` bool drawn with one seed on a store's coverage; each sample
then scores only the hidden pixels valid in its own target frame
(`data.masks.hole_targets(mask, valid_of_frame)`). Sets are saved beside the results
(`data/mask_io.save_mask_set`) so other methods can be scored on the very same holes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nowcast_infill.data.mask_io import save_mask_set
from nowcast_infill.data.masks import MaskGenerator, build_mask_generator
from nowcast_infill.data.store_windows import StoreWindows


def make_eval_mask_set(
    spec: Mapping[str, Any] | MaskGenerator,
    n: int,
    seed: int,
    valid: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
) -> np.ndarray:
    """n masks (n, H, W) bool drawn with np.random.default_rng(seed): the same for the same inputs.

    Masks are returned as drawn (not and-ed with `valid`); score `hole_targets(mask, valid_of_frame)`.
    """
    gen = spec if callable(spec) else build_mask_generator(spec)
    rng = np.random.default_rng(seed)
    return np.stack([np.asarray(gen(rng, valid, lat, lon), dtype=bool) for _ in range(int(n))])


def store_eval_mask_sets(
    generator: MaskGenerator, n: int, seed: int, plans: Sequence[StoreWindows]
) -> list[np.ndarray]:
    """The set `(n, H_k, W_k)` bool of each store, drawn on its coverage (pixels valid in any
    frame); each sample then keeps only the hidden pixels valid in its own target frame."""
    return [
        np.asarray(make_eval_mask_set(generator, n, seed, plan.coverage, plan.lat, plan.lon), bool) for plan in plans
    ]


def save_store_eval_masks(
    directory: str | Path, mask_sets: Sequence[np.ndarray], spec: Mapping[str, Any] | MaskGenerator, seed: int
) -> list[Path]:
    """Save the set of each store: `eval_masks.npz` for the first, `eval_masks.store<k>.npz` for
    store k >= 1; returns the files written, in store order."""
    return [
        save_mask_set(Path(directory) / ("eval_masks.npz" if k == 0 else f"eval_masks.store{k}.npz"), masks, spec, seed)
        for k, masks in enumerate(mask_sets)
    ]
