"""Classical priors the networks start from (`model.prior`): a forecast or fill per window.

The network receives the prior as extra input channels and predicts a correction to it
(`PConvUNet(prior_frames=...)`, residual in normalised units), so at initialisation it is as
good as the classical method and learns what that method gets wrong.

* nowcast `extrapolation` and `sprog`: the `extrapolation` baseline (pysteps dense
  Lucas-Kanade on dBR, semi-Lagrangian advection of the last frame) or the `sprog` baseline
  (S-PROG, Seed 2003, via pysteps), one frame per lead time (nowcast_infill/baselines/nowcast.py,
  with its outside and fallback rules). Each is computed once per window on the *whole* grid
  (S-PROG's cascade decomposition is global: a crop cannot be forecast on its own) and kept in
  a `WindowCache` sidecar store; a crop's prior is the whole-grid forecast cut to the crop,
  exactly what `ni-eval` scores for that method on whole frames.
* nowcast `persistence`: the last frame with data, repeated per lead time.
* infill `laplace`: the `laplace` baseline on the visible pixels of the target frame.
* infill `temporal`: `temporal_linear_fill`, linear in time between the neighbouring frames.
* infill `temporal_flow`: the `temporal_flow` baseline (optical-flow interpolation between the
  neighbouring frames, `laplace` where a neighbour lacks the pixel), computed on what the
  network sees: exactly the classical method `ni-eval` scores.

Every prior is `(T_out, h, w)` float32 mm/h with NaN where it has no value (advected in from
outside the domain, no neighbour observed); the network gets it as 0 there with a 0 mask, and
its residual is added to 0 mm/h there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nowcast_infill import registry
from nowcast_infill.baselines.temporal import make_temporal_linear
from nowcast_infill.errors import ConfigSchemaError

PRIORS = {"nowcast": ("extrapolation", "sprog", "persistence"), "infill": ("laplace", "temporal", "temporal_flow")}


def check_prior(prior: str | None, task: str) -> str | None:
    """Validate `model.prior` for `task`; None/'null'/'none' mean no prior."""
    if prior in (None, "null", "none"):
        return None
    if prior not in PRIORS.get(task, ()):
        raise ConfigSchemaError(
            f"model.prior: {prior!r} is not a {task} prior; use one of {', '.join(PRIORS.get(task, ()))} or null."
        )
    return prior


def temporal_linear_fill(x_mm_h: np.ndarray, fill_mask: np.ndarray | None) -> np.ndarray:
    """Linear-in-time infill of the centre frame from its two neighbours: the `temporal_linear`
    classical method without its spatial fallback (nowcast_infill/baselines/temporal.py).

    x_mm_h: (T_in >= 3, H, W) mm/h, NaN = missing/hidden; the centre frame (T_in // 2) is the
    target. fill_mask: (H, W) bool (None: the centre frame's NaN pixels). Each fill pixel gets
    the mean of frames c-1 and c+1 (the linear interpolant at the midpoint) where both are
    observed, the one observed value where only one is, NaN where neither. Returns (1, H, W)
    float32 mm/h; other pixels are the centre frame as given.
    """
    return make_temporal_linear(spatial=None)(x_mm_h, fill_mask=fill_mask)


def _content_id(dataset) -> dict:
    return {
        "times": str(int(np.asarray(dataset.times_ns, np.int64).sum())) + f":{len(dataset.times_ns)}",
        "first": int(dataset.times_ns[0]),
        "grid": [int(dataset.height), int(dataset.width)],
    }


class WindowPrior:
    """The prior of a dataset sample: `prior(dataset, start, box, inputs_mm_h, fill_mask)`.

    Args:
        method: a name of `PRIORS[task]`.
        task: `nowcast` or `infill`.
        n_leads: `T_out` (nowcast).
        cache_root: folder of the sidecar store of whole-grid forecasts (default `default_cache_root()`).
        threshold, zerovalue_db, lk_options: the extrapolation and sprog baselines' options.
    """

    def __init__(
        self,
        method: str,
        task: str,
        n_leads: int,
        cache_root=None,
        threshold: float = 0.1,
        zerovalue_db: float = -15.0,
        lk_options: dict | None = None,
    ):
        self.method = check_prior(method, task)
        self.task, self.n_leads = task, int(n_leads)
        self.cache_root = cache_root
        self.method_options: dict[str, Any] = {
            "threshold": float(threshold),
            "zerovalue_db": float(zerovalue_db),
            "lk_options": dict(lk_options or {}),
        }
        self._caches: dict[str, object] = {}

    def window_cache(self, dataset):
        """The `WindowCache` of `dataset`'s store, method and options: whole-grid forecasts."""
        from nowcast_infill.data.window_cache import WindowCache, default_cache_root, method_key, store_key

        store = store_key(dataset.store.path, _content_id(dataset))
        offsets = [int(o) for o in dataset.input_offsets]
        options = {**self.method_options, "n_leads": self.n_leads, "input_offsets": offsets}
        method = method_key(str(self.method), options)
        key = f"{store}/{method}"
        if key not in self._caches:
            self._caches[key] = WindowCache(self.cache_root or default_cache_root(), store, method)
        return self._caches[key]

    def __call__(
        self,
        dataset,
        start: int,
        box: tuple[int, int, int, int],
        inputs_mm_h: np.ndarray,
        fill_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """(T_out, h, w) float32 mm/h with NaN; `inputs_mm_h` (T_in, h, w) is what the network sees
        (NaN where hidden), `box` = (y0, x0, h, w) of the crop, `fill_mask` (h, w) the holes (infill)."""
        if self.method == "persistence":
            return registry.get_method("classical", "persistence", n_leads=self.n_leads)(inputs_mm_h)
        if self.method == "laplace":
            return registry.get_method("classical", "laplace")(inputs_mm_h, fill_mask=fill_mask)
        if self.method == "temporal":
            return temporal_linear_fill(inputs_mm_h, fill_mask)
        if self.method == "temporal_flow":
            return registry.get_method("classical", "temporal_flow")(inputs_mm_h, fill_mask=fill_mask)
        return self._whole_grid_forecast(dataset, int(start), box)

    def _whole_grid_forecast(self, dataset, start: int, box: tuple[int, int, int, int]) -> np.ndarray:
        """The classical nowcast `self.method` of window `start` on the whole grid (cached), cut to `box`."""

        def compute():
            full = dataset.read_precip(start, 0, 0, dataset.height, dataset.width, frames=dataset.input_offsets)
            forecast = registry.get_method("classical", str(self.method), n_leads=self.n_leads, **self.method_options)
            return {"forecast": forecast(full)}

        forecast = self.window_cache(dataset).get(start, compute)["forecast"]
        y0, x0, h, w = box
        return np.ascontiguousarray(forecast[:, y0 : y0 + h, x0 : x0 + w], dtype=np.float32)
