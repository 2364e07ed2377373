"""Archive predictors by name: a classical method, or a trained checkpoint (`load_predictor`).

- infill: `predictor(x_mm_h (T_in, H, W) float32 mm/h with NaN, valid_coverage (H, W) bool)
  -> (1, H, W) mm/h`, `T_in = 2 * context + 1` frames centred on the target frame;
  `valid_coverage` is where filling is wanted. Only NaN pixels inside it are taken
  from the prediction.
- nowcast: `predictor(x_mm_h (past, H, W) mm/h with NaN) -> (n_leads, H, W) mm/h`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nowcast_infill import registry
from nowcast_infill.baselines import baseline_task
from nowcast_infill.errors import BadValueError

InfillPredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
NowcastPredictor = Callable[[np.ndarray], np.ndarray]


def baseline_infill_predictor(name: str, **options) -> InfillPredictor:
    """Wrap an infill baseline as an archive predictor (fills NaN pixels inside `valid_coverage`)."""
    if baseline_task(name) != "infill":
        raise BadValueError(
            f"model={name!r} is a nowcast baseline; ni-infill needs one of nearest, linear, biharmonic, laplace."
        )
    baseline = registry.get_method("classical", name, **options)

    def predictor(x_mm_h: np.ndarray, valid_coverage: np.ndarray) -> np.ndarray:
        centre = x_mm_h[x_mm_h.shape[0] // 2]
        return baseline(x_mm_h, fill_mask=valid_coverage & ~np.isfinite(centre))

    return predictor


def load_predictor(model: str, task: str, **options) -> tuple[Callable, dict]:
    """Predictor and provenance for `model`: a baseline name or a Lightning checkpoint path.

    Returns `(predictor, info)` with `info = {"model", "sha256", "config"}` for the output
    attributes. A checkpoint (an existing file or a name ending in `.ckpt`) becomes a
    `CheckpointPredictor`; `options` then go to `load_checkpoint_predictor` (tile, overlap,
    batch_size, device, stats_path, aux), else to the baseline.
    """
    if task not in ("infill", "nowcast"):
        raise ValueError(f"task={task!r}; expected 'infill' or 'nowcast'.")
    path = Path(model)
    if model.endswith(".ckpt") or path.is_file():
        # Here, not at the top: torch and Lightning load (seconds) only when a checkpoint is used.
        from nowcast_infill.inference.checkpoint import load_checkpoint_predictor

        return load_checkpoint_predictor(model, task, **options)  # the path as the user wrote it, for messages
    try:
        kind = baseline_task(model)
    except KeyError as err:
        raise BadValueError(
            f"model={model!r} is neither an existing checkpoint file nor a baseline; {err.args[0]}"
        ) from None
    if kind != task:
        raise BadValueError(
            f"model={model!r} is a {kind} baseline, but ni-{task} needs a {task} baseline; choose "
            "model=nearest|linear|biharmonic|laplace (infill), model=persistence|extrapolation|sprog (nowcast)."
        )
    predictor = (
        baseline_infill_predictor(model, **options)
        if task == "infill"
        else registry.get_method("classical", model, **options)
    )
    info = {
        "model": model,
        "sha256": "",
        "config": json.dumps({"baseline": model, **options}, sort_keys=True, default=str),
    }
    return predictor, info
