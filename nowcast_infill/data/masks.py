"""Hole masks for infilling: one registry of generators (fixed evaluation sets: data/eval_masks.py).

A generator is called as `gen(rng, valid, lat, lon) -> hidden`:
  rng: np.random.Generator (all randomness comes from it, so a seed fixes the mask);
  valid: (H, W) bool, True where the ground truth has data;
  lat, lon: (H, W) degrees WGS84 of the pixel centres;
  hidden: (H, W) bool, True = pixel hidden from the network.
Hidden pixels that are no-data in the truth are never targets: callers score
`hole_targets(hidden, valid)`.

Generators (data/mask_generators.py, and `Mixture` here) are registered in the shared
registry (kind "mask"): build one with `nowcast_infill.registry.get_method("mask", name, **options)`.
Configs are plain dicts `{"name": ..., **options}` (conf/masks/*.yaml) passed to `build_mask_generator`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nowcast_infill import registry
from nowcast_infill.data.mask_generators import FileMasks, FreeForm, MaskGenerator, NodataPattern, RadarOutage
from nowcast_infill.data.mask_io import (
    MASK_VARIABLE,
    MaskSet,
    load_mask_set,
    nodata_patterns_from_store,
    read_mask_file,
    save_mask_set,
)
from nowcast_infill.errors import BadValueError


def hole_targets(hidden, valid):
    """Pixels scored as holes: hidden and valid in the truth.

    Works on numpy arrays and torch tensors of the same shape (bool or 0/1); returns bool.
    """
    if tuple(hidden.shape) != tuple(valid.shape):
        raise ValueError(f"hole_targets: hidden has shape {tuple(hidden.shape)}, valid has {tuple(valid.shape)}.")
    if isinstance(hidden, np.ndarray) or isinstance(valid, np.ndarray):
        return np.logical_and(np.asarray(hidden) != 0, np.asarray(valid) != 0)
    return (hidden != 0) & (valid != 0)


# ---------------------------------------------------------------- mixture


class Mixture:
    """Draws one component per call with probabilities `weights` (default equal)."""

    def __init__(self, components: Sequence[Mapping[str, Any]], weights: Sequence[float] | None = None):
        if not components:
            raise ValueError("mixture: components is empty; give a list of mask specs {name: ..., ...}.")
        self.components = [build_mask_generator(spec) for spec in components]
        given = np.ones(len(self.components)) if weights is None else np.asarray(weights, dtype=np.float64)
        if given.shape != (len(self.components),) or np.any(given < 0) or given.sum() <= 0:
            raise ValueError(
                f"mixture: weights {list(given)} must be {len(self.components)} non-negative numbers with a positive sum."
            )
        self.weights = given / given.sum()

    def __call__(self, rng: np.random.Generator, valid: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        return self.components[rng.choice(len(self.components), p=self.weights)](rng, valid, lat, lon)


# ---------------------------------------------------------------- registry (kind "mask")

for _name, _generator in (
    ("radar_outage", RadarOutage),
    ("nodata_pattern", NodataPattern),
    ("freeform", FreeForm),
    ("file", FileMasks),
    ("mixture", Mixture),
):
    registry.register("mask", _name, _generator)


def _plain(node: Any) -> Any:
    """OmegaConf containers to plain dicts/lists (so specs can be JSON-recorded)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(node, (DictConfig, ListConfig)):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(node, dict):  # not any Mapping: an xarray.Dataset option must stay one
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node


def build_mask_generator(spec: Mapping[str, Any]) -> MaskGenerator:
    """Generator from a plain spec `{"name": ..., **options}` (a Hydra `masks` node works too),
    built by `registry.get_method("mask", name, **options)`."""
    spec = _plain(spec)
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise BadValueError(
            f"mask spec {spec!r} needs a 'name' key; valid names are {', '.join(registry.method_names('mask'))}."
        )
    options = {k: v for k, v in spec.items() if k != "name"}
    return registry.get_method("mask", spec["name"], **options)


# The mask files and sets of data/mask_io.py are part of this module's public interface.
__all__ = [
    "MASK_VARIABLE",
    "FileMasks",
    "FreeForm",
    "MaskGenerator",
    "MaskSet",
    "Mixture",
    "NodataPattern",
    "RadarOutage",
    "build_mask_generator",
    "hole_targets",
    "load_mask_set",
    "nodata_patterns_from_store",
    "read_mask_file",
    "save_mask_set",
]
