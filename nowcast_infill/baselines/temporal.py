"""Classical temporal infilling: fill the target frame's holes from its neighbouring frames.

The spatial baselines (infill.py) read only the target frame; the LSTM variants also see
the frames before and after it. These two methods see them too:

- `temporal_linear`: linear in time between the previous and the next frame at the same
  pixel; with the target halfway between them, their mean.
- `temporal_flow`: optical-flow interpolation. Lucas–Kanade motion (pySTEPS, on dBR, as
  the `extrapolation` nowcast) from the previous to the next frame; the previous frame is
  advected forward by the target's fraction `f` of that interval and the next frame
  backward by `1 - f` (pySTEPS semi-Lagrangian), and the two are blended with weights
  `1 - f` and `f` (the nearer frame counts more). A window whose motion cannot be
  estimated (dry, or nearly all no-data) gets zero motion, i.e. `temporal_linear`.

Both are callables `(x_mm_h, *, fill_mask=None) -> (1, H, W)` mm/h like the spatial ones:
`x_mm_h` `(T_in >= 3, H, W)` float32 mm/h with NaN for missing or hidden pixels, target at
index `T_in // 2`, neighbours at `T_in // 2 - 1` and `+ 1` (one time step each, f = 0.5).

Fallback rule: a fill pixel where a neighbouring frame is itself missing (or, for
`temporal_flow`, where the advected neighbour came from outside the domain or from no-data)
is filled by the spatial method `spatial` (default `laplace`) from the target frame's
observed and temporally filled pixels. With `spatial=None`, or when the target frame has
nothing to fill from, it takes the neighbour that has the pixel, else NaN (unscored and
reported as `unscored_pixels`). The callable's `fallbacks` attribute counts those pixels
(summed over calls); `ni-eval` reports it per method (`test/fallbacks`).

`temporal_linear` with `spatial=None` is also the network's `temporal` prior
(nowcast_infill/data/priors.py: `temporal_linear_fill`): one implementation of the mean of
the neighbours, two fallbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

import numpy as np

from nowcast_infill.baselines.infill import finish_fill, infill_nearest, make_inpaint, make_linear, prepare_fill
from nowcast_infill.baselines.nowcast import FORECAST_FAILURES, CountsFallbacks, motion_field, to_db

log = logging.getLogger(__name__)

# The target sits halfway between its neighbours (one frame step on either side).
TARGET_FRACTION = 0.5


def _spatial(name: str) -> Callable:
    makers = {
        "nearest": lambda: infill_nearest,
        "linear": make_linear,
        "laplace": lambda: make_inpaint("laplace"),
        "biharmonic": lambda: make_inpaint("biharmonic"),
    }
    if name not in makers:
        raise ValueError(f"temporal infill: spatial={name!r} is not a spatial method; valid: {sorted(makers)}.")
    return makers[name]()


def _make_temporal(name: str, estimate: Callable, spatial: str | None) -> Callable:
    """Wrap `estimate(prev (H, W), next (H, W)) -> (H, W)` mm/h (NaN = no answer) with the fallback
    rule: the spatial method `spatial`, or (None) the neighbour that has the pixel, else NaN."""
    spatial_fill = _spatial(spatial) if spatial is not None else None

    def infill(x_mm_h: np.ndarray, *, fill_mask: np.ndarray | None = None) -> np.ndarray:
        """(T_in >= 3, H, W) mm/h with NaN -> (1, H, W) mm/h, hidden pixels filled from the neighbours."""
        x = np.asarray(x_mm_h, dtype=np.float32)
        if x.ndim != 3 or x.shape[0] < 3:
            raise ValueError(
                f"{name}: x_mm_h has shape {x.shape}; it needs (T_in >= 3, H, W) mm/h, the target frame and "
                "one frame on either side; set task.context >= 1."
            )
        # The target frame may be entirely hidden (a tile inside a radar outage): the
        # neighbours still answer, so no observed target pixel is required here.
        centre, fill, known = prepare_fill(x, fill_mask, need_known=False)
        if not fill.any():
            return centre.copy()[None]
        c = x.shape[0] // 2
        values = estimate(x[c - 1].astype(np.float64), x[c + 1].astype(np.float64))[fill]
        missing = ~np.isfinite(values)
        if missing.any():
            rest = np.zeros_like(fill)
            rest[fill] = missing
            counted.fallbacks += int(missing.sum())
            if spatial_fill is not None and (known | (fill & ~rest)).any():
                # The spatial method also leans on the temporally filled pixels next to the gap.
                with_temporal = x.copy()
                with_temporal[c][fill & ~rest] = np.maximum(values[~missing], 0.0)
                values[missing] = spatial_fill(with_temporal, fill_mask=rest)[0][rest]
            else:
                # No spatial fallback asked for, or nothing in the target frame to fill from:
                # the neighbour that has the pixel (NaN, i.e. unscored and counted as such,
                # where neither has it).
                values[missing] = np.where(np.isfinite(x[c - 1][rest]), x[c - 1][rest], x[c + 1][rest])
        return finish_fill(centre, fill, values)

    counted = cast(CountsFallbacks, infill)
    counted.fallbacks = 0
    infill.__name__ = f"infill_{name}"
    return infill


def make_temporal_linear(spatial: str | None = "laplace") -> Callable:
    """Linear interpolation in time between the neighbouring frames (their mean: the target is
    halfway); `spatial` fills where a neighbour is missing (None: the other neighbour, else NaN).
    See the module docstring."""

    def estimate(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return (1.0 - TARGET_FRACTION) * prev + TARGET_FRACTION * nxt

    return _make_temporal("temporal_linear", estimate, spatial)


def make_temporal_flow(
    spatial: str | None = "laplace",
    threshold: float = 0.1,
    zerovalue_db: float = -15.0,
    lk_options: dict | None = None,
) -> Callable:
    """Optical-flow interpolation between the neighbouring frames; see the module docstring."""
    lk_options = dict(lk_options or {})

    def estimate(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        from pysteps import extrapolation

        pair = np.stack([prev, nxt])
        try:
            # (2, H, W) pixels per interval prev -> next
            velocity = motion_field(to_db(pair, threshold, zerovalue_db), lk_options)
        except FORECAST_FAILURES as err:
            log.info("temporal_flow: no motion (%s); zero motion, i.e. linear in time, for this window.", err)
            velocity = np.zeros((2,) + prev.shape)
        advect = extrapolation.get_method("semilagrangian")

        def moved(field: np.ndarray, v: np.ndarray) -> np.ndarray:
            return np.asarray(advect(field, v, 1, allow_nonfinite_values=True, outval=np.nan)[0], dtype=np.float64)

        forward = moved(prev, TARGET_FRACTION * velocity)
        backward = moved(nxt, -(1.0 - TARGET_FRACTION) * velocity)
        return (1.0 - TARGET_FRACTION) * forward + TARGET_FRACTION * backward

    return _make_temporal("temporal_flow", estimate, spatial)
