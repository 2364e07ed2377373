"""Normalisation of precipitation (log1p based) and of auxiliary fields (z-score).

Statistics are fitted on the training split only, by streaming over it (a running
mean/variance in float64, so the archive never has to fit in memory), and saved as
JSON beside the run so evaluation and inference reuse exactly the same numbers.

Kinds for precipitation ``r`` in mm/h:

- ``log1p_scaled`` (default): ``z = log1p(r) / s`` with ``s`` the standard deviation of
  ``log1p(r)`` over the valid training pixels. ``0 mm/h -> 0``, so the physical floor is 0.
- ``log1p_zscore``: ``z = (log1p(r) - mu) / sigma``; the floor is ``-mu / sigma``.

Auxiliary fields get a plain per-variable z-score ``(a - mean) / std``.
A statistics file also records what it was fitted on (`fitted_on`: stores, frames, split
bounds), so a file fitted on another split or store is detected and refitted, not reused.
NaN (no data) stays NaN through ``encode``/``decode``: masking is the caller's job.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

KINDS = ("log1p_scaled", "log1p_zscore")
_STATE_VERSION = 1


class RunningMoments:
    """Count, mean and variance of a stream of arrays, ignoring NaN (Chan et al. merge).

    Float64 throughout: the naive sum-of-squares formula loses all precision on
    millions of near-zero rain rates.
    """

    def __init__(self, count: int = 0, mean: float = 0.0, m2: float = 0.0):
        self.count = int(count)
        self.mean = float(mean)
        self.m2 = float(m2)

    def update(self, values) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        n = values.size
        if n == 0:
            return
        batch_mean = float(values.mean())
        self.merge(n, batch_mean, float(((values - batch_mean) ** 2).sum()))

    def merge(self, count: int, mean: float, m2: float) -> RunningMoments:
        """Add the moments (`count`, `mean`, `m2` = sum of squared deviations) of another sample."""
        if count == 0:
            return self
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total
        return self

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else float("nan")


def _as_chunks(values) -> Iterable:
    """One array, or an iterable of arrays (streamed), as an iterable of arrays."""
    if isinstance(values, (np.ndarray, torch.Tensor)) or np.isscalar(values):
        return [values]
    return values


def _to_numpy(chunk) -> np.ndarray:
    if isinstance(chunk, torch.Tensor):
        return chunk.detach().cpu().numpy()
    return np.asarray(chunk)


class Normalizer:
    """Encodes mm/h to network units and back; z-scores auxiliary fields.

    Works on numpy arrays and torch tensors of any shape (e.g. ``(B, T, 1, H, W)``);
    the output has the input's type, dtype and device.
    """

    def __init__(self, kind: str = "log1p_scaled"):
        if kind not in KINDS:
            raise ValueError(f"normalization kind {kind!r} is unknown; valid kinds: {', '.join(KINDS)}.")
        self.kind = kind
        self.mean: float | None = None  # of log1p(r), used by log1p_zscore
        self.std: float | None = None  # of log1p(r)
        self.count = 0
        self.aux: dict[str, dict[str, float]] = {}  # name -> {"mean", "std", "count"}
        # What the statistics were fitted on (plain JSON types), written to and read from the
        # statistics file only; None when unknown (a file of an older version).
        self.fitted_on: Any = None

    # -- fitting ---------------------------------------------------------------------
    def fit(self, values_mm_h, aux: Mapping[str, Any] | None = None) -> Normalizer:
        """Fit on training data: an array of mm/h or an iterable of arrays (streamed).

        ``aux`` maps an auxiliary name to its values (array or iterable of arrays).
        NaN is ignored. Raises ValueError when nothing valid is seen or the spread is 0.
        """
        moments = RunningMoments()
        for chunk in _as_chunks(values_mm_h):
            moments.update(np.log1p(np.maximum(_to_numpy(chunk).astype(np.float64), 0.0)))
        return self.fit_moments(moments.count, moments.mean, moments.m2, aux=aux)

    def fit_moments(self, count: int, mean: float, m2: float, aux: Mapping[str, Any] | None = None) -> Normalizer:
        """Fit from the moments of log1p(rate) over the valid training pixels: `count`, `mean` and
        `m2` (sum of squared deviations), e.g. merged from a store's per-frame statistics
        (nowcast_infill/io/frame_stats.py) without reading any frame. Same checks as `fit`."""
        moments = RunningMoments(count, mean, m2)
        if moments.count == 0:
            raise ValueError(
                "Normalizer.fit: the training data holds no valid (non-NaN) precipitation pixel; "
                "check the store and the train split."
            )
        if not moments.std > 0:
            raise ValueError(
                "Normalizer.fit: log1p(precipitation) has zero spread on the training data "
                "(all pixels equal, e.g. completely dry); choose a train split that contains rain."
            )
        self.mean, self.std, self.count = moments.mean, moments.std, moments.count
        for name, values in (aux or {}).items():
            self.fit_aux(name, values)
        return self

    def fit_aux(self, name: str, values) -> Normalizer:
        """Fit the z-score of auxiliary field ``name`` (array or iterable of arrays, NaN ignored)."""
        moments = RunningMoments()
        for chunk in _as_chunks(values):
            moments.update(_to_numpy(chunk))
        if moments.count == 0:
            raise ValueError(f"Normalizer.fit_aux: auxiliary field {name!r} has no valid value in the training data.")
        # A constant field carries no information but must not divide by zero.
        self.aux[name] = {"mean": moments.mean, "std": moments.std if moments.std > 0 else 1.0, "count": moments.count}
        return self

    def aux_fields_sharing_stats(self) -> list[str]:
        """Aux fields whose (mean, std, count) equal another field's, sorted: two distinct physical
        fields never agree to the last bit, so such statistics were fitted on the wrong field."""
        by_stats: dict[tuple[float, float, float], list[str]] = {}
        for name, stats in self.aux.items():
            by_stats.setdefault((stats["mean"], stats["std"], stats["count"]), []).append(name)
        return sorted(name for names in by_stats.values() if len(names) > 1 for name in names)

    @property
    def fitted(self) -> bool:
        return self.std is not None

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("Normalizer is not fitted: call fit() on the training split or load() saved statistics.")

    # -- precipitation -----------------------------------------------------------------
    @property
    def floor(self) -> float:
        """Encoded value of 0 mm/h: the lower bound model outputs are clamped to."""
        self._check_fitted()
        assert self.mean is not None and self.std is not None  # fitted: fit() and load() set both
        return 0.0 if self.kind == "log1p_scaled" else -self.mean / self.std

    def _shift_scale(self) -> tuple[float, float]:
        self._check_fitted()
        assert self.mean is not None and self.std is not None  # fitted: fit() and load() set both
        return (0.0, self.std) if self.kind == "log1p_scaled" else (self.mean, self.std)

    def encode(self, mm_h):
        """mm/h -> normalised units, same shape/type; NaN stays NaN; negative rates count as 0."""
        shift, scale = self._shift_scale()
        if isinstance(mm_h, torch.Tensor):
            return (torch.log1p(torch.clamp(mm_h, min=0.0)) - shift) / scale
        mm_h = np.asarray(mm_h)
        out_dtype = mm_h.dtype if np.issubdtype(mm_h.dtype, np.floating) else np.float32
        return ((np.log1p(np.maximum(mm_h, 0.0)) - shift) / scale).astype(out_dtype, copy=False)

    def decode(self, z):
        """Normalised units -> mm/h (>= 0), same shape/type; NaN stays NaN."""
        shift, scale = self._shift_scale()
        if isinstance(z, torch.Tensor):
            return torch.clamp(torch.expm1(z * scale + shift), min=0.0)
        z = np.asarray(z)
        out_dtype = z.dtype if np.issubdtype(z.dtype, np.floating) else np.float32
        return np.maximum(np.expm1(z * scale + shift), 0.0).astype(out_dtype, copy=False)

    # -- auxiliary fields --------------------------------------------------------------
    def _aux_stats(self, name: str) -> tuple[float, float]:
        if name not in self.aux:
            raise KeyError(
                f"no statistics for auxiliary field {name!r} (fitted: {sorted(self.aux) or 'none'}); "
                "refit on the training split or delete the stale statistics file."
            )
        return self.aux[name]["mean"], self.aux[name]["std"]

    def encode_aux(self, name: str, values):
        """Z-score auxiliary field ``name`` (its own units -> dimensionless)."""
        mean, std = self._aux_stats(name)
        return (values - mean) / std

    def decode_aux(self, name: str, values):
        mean, std = self._aux_stats(name)
        return values * std + mean

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict:
        self._check_fitted()
        return {
            "version": _STATE_VERSION,
            "kind": self.kind,
            "mean": self.mean,
            "std": self.std,
            "count": self.count,
            "aux": {k: dict(v) for k, v in self.aux.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("version") != _STATE_VERSION or state.get("kind") not in KINDS:
            raise ValueError(
                f"normaliser state has version {state.get('version')!r} / kind {state.get('kind')!r}; "
                f"expected version {_STATE_VERSION} and a kind in {KINDS}. Refit the statistics."
            )
        self.kind = state["kind"]
        self.mean, self.std, self.count = float(state["mean"]), float(state["std"]), int(state["count"])
        self.aux = {
            k: {"mean": float(v["mean"]), "std": float(v["std"]), "count": int(v["count"])}
            for k, v in state.get("aux", {}).items()
        }

    def save(self, path: str | Path) -> Path:
        """Write the statistics (and `fitted_on`, when known) as JSON, atomically (a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        if self.fitted_on is not None:
            state["fitted_on"] = self.fitted_on
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        path = Path(path)
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read normalisation statistics ({err}); delete it to refit.") from err
        norm = cls(state.get("kind", "log1p_scaled") if state.get("kind") in KINDS else "log1p_scaled")
        try:
            norm.load_state_dict(state)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: invalid normalisation statistics ({err}); delete it to refit.") from err
        norm.fitted_on = state.get("fitted_on")
        return norm

    def __repr__(self) -> str:
        if not self.fitted:
            return f"Normalizer(kind={self.kind!r}, unfitted)"
        return f"Normalizer(kind={self.kind!r}, mean={self.mean:.4g}, std={self.std:.4g}, aux={sorted(self.aux)})"
