"""Classical baselines behind one registry: `get_baseline(name, **options)`.

Infill baselines (spatial: `nearest`, `linear`, `biharmonic`, `laplace`; temporal, from the
neighbouring frames: `temporal_linear`, `temporal_flow`) return `(1, H, W)` mm/h
and accept `fill_mask=(H, W) bool`; nowcast baselines (`persistence`, `extrapolation`,
`sprog`) need `n_leads` and return `(n_leads, H, W)` mm/h. All take
`x_mm_h (T_in, H, W)` float32 mm/h with NaN for missing or hidden pixels.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from nowcast_infill.baselines.infill import NothingToInfillFromError, infill_nearest, make_inpaint, make_linear
from nowcast_infill.baselines.nowcast import make_extrapolation, make_persistence, make_sprog
from nowcast_infill.baselines.temporal import make_temporal_flow, make_temporal_linear

INFILL_BASELINES: dict[str, Callable[..., Callable]] = {
    "nearest": lambda: infill_nearest,
    "linear": make_linear,
    "biharmonic": partial(make_inpaint, "biharmonic"),
    "laplace": partial(make_inpaint, "laplace"),
    "temporal_linear": make_temporal_linear,
    "temporal_flow": make_temporal_flow,
}
NOWCAST_BASELINES: dict[str, Callable[..., Callable]] = {
    "persistence": make_persistence,
    "extrapolation": make_extrapolation,
    "sprog": make_sprog,
}
BASELINES = {**INFILL_BASELINES, **NOWCAST_BASELINES}


def baseline_task(name: str) -> str:
    """`"infill"` or `"nowcast"` for a registered baseline name."""
    if name in INFILL_BASELINES:
        return "infill"
    if name in NOWCAST_BASELINES:
        return "nowcast"
    raise KeyError(f"unknown baseline {name!r}; valid names: {sorted(BASELINES)}.")


def get_baseline(name: str, **options) -> Callable:
    """Build the baseline `name` with its `options` (e.g. `n_leads=6` for nowcasting).

    Returns `fn(x_mm_h (T_in, H, W) mm/h with NaN, **ctx) -> (T_out, H, W) mm/h`.
    Raises KeyError listing the valid names, or TypeError naming the bad option.
    """
    task = baseline_task(name)
    factory = BASELINES[name]
    try:
        return factory(**options)
    except TypeError as err:
        hint = "nowcast baselines need n_leads=<int>; " if task == "nowcast" else ""
        raise TypeError(f"baseline {name!r}: bad options {sorted(options)} ({err}); {hint}see nowcast_infill/baselines/{task}.py.") from None


__all__ = [
    "BASELINES",
    "INFILL_BASELINES",
    "NOWCAST_BASELINES",
    "NothingToInfillFromError",
    "baseline_task",
    "get_baseline",
]
