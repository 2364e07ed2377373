"""Classical methods, registered in the shared registry as kind "classical".

Build one with `nowcast_infill.registry.get_method("classical", name, **options)`; an unknown
name raises `UnknownMethodError` listing the valid ones, a bad option `BadValueError`.

Infill methods (spatial: `nearest`, `linear`, `biharmonic`, `laplace`; temporal, from the
neighbouring frames: `temporal_linear`, `temporal_flow`) return `(1, H, W)` mm/h
and accept `fill_mask=(H, W) bool`; nowcast methods (`persistence`, `extrapolation`,
`sprog`) need `n_leads` and return `(n_leads, H, W)` mm/h. All take
`x_mm_h (T_in, H, W)` float32 mm/h with NaN for missing or hidden pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from nowcast_infill import registry
from nowcast_infill.baselines.infill import NothingToInfillFromError, infill_nearest, make_inpaint, make_linear
from nowcast_infill.baselines.nowcast import make_extrapolation, make_persistence, make_sprog
from nowcast_infill.baselines.temporal import make_temporal_flow, make_temporal_linear

# name -> factory(**options) -> the method; one table per task the method solves
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
for _name, _factory in {**INFILL_BASELINES, **NOWCAST_BASELINES}.items():
    registry.register("classical", _name, _factory)


def baseline_task(name: str) -> str:
    """`"infill"` or `"nowcast"` for a classical method of this package (UnknownMethodError otherwise)."""
    if name in INFILL_BASELINES:
        return "infill"
    if name in NOWCAST_BASELINES:
        return "nowcast"
    raise registry.UnknownMethodError(
        f"unknown classical method {name!r}; valid names: {', '.join(sorted({**INFILL_BASELINES, **NOWCAST_BASELINES}))}."
    )


__all__ = [
    "INFILL_BASELINES",
    "NOWCAST_BASELINES",
    "NothingToInfillFromError",
    "baseline_task",
]
