"""Figures of infilled fields and nowcasts (matplotlib, Agg), and sending them to any logger."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

NO_DATA_COLOUR = "#bdbdbd"
HOLE_COLOUR = "#ff00ff"
RAIN_MIN_MM_H = 0.1


def _rain_image(ax, field_mm_h: np.ndarray, valid: np.ndarray, vmax: float, title: str):
    """Draw rain on a log scale; no-data pixels grey (never drawn as dry)."""
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_under("white")
    cmap.set_bad(NO_DATA_COLOUR)
    shown = np.where(valid > 0, np.maximum(field_mm_h, RAIN_MIN_MM_H * 0.5), np.nan)
    image = ax.imshow(shown, cmap=cmap, norm=LogNorm(vmin=RAIN_MIN_MM_H, vmax=max(vmax, 1.0)), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def infill_panel(x_mm_h, x_mask, truth_mm_h, truth_valid, pred_mm_h, hole):
    """Four panels: input with the hole, truth, prediction, error (prediction - truth on holes).

    All arguments are `(H, W)` arrays: fields in mm/h, masks 0/1.
    """
    vmax = float(np.nanmax(np.where(truth_valid > 0, truth_mm_h, 0))) if np.any(truth_valid > 0) else 1.0
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), constrained_layout=True)
    _rain_image(axes[0], x_mm_h, x_mask, vmax, "input (magenta: hole)")
    hole_overlay = np.ma.masked_where(~((hole > 0) | ((x_mask == 0) & (truth_valid > 0))), np.ones_like(hole))
    axes[0].imshow(hole_overlay, cmap=matplotlib.colors.ListedColormap([HOLE_COLOUR]), alpha=0.6, interpolation="nearest")
    _rain_image(axes[1], truth_mm_h, truth_valid, vmax, "truth")
    image = _rain_image(axes[2], pred_mm_h, truth_valid, vmax, "prediction")
    fig.colorbar(image, ax=axes[:3], shrink=0.8, label="mm/h")
    error = np.where(hole > 0, pred_mm_h - truth_mm_h, np.nan)
    lim = float(np.nanmax(np.abs(error))) if np.any(hole > 0) else 1.0
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad(NO_DATA_COLOUR)
    err_image = axes[3].imshow(error, cmap=cmap, vmin=-max(lim, 1e-3), vmax=max(lim, 1e-3), interpolation="nearest")
    axes[3].set_title("error on hole pixels", fontsize=9)
    axes[3].set_xticks([])
    axes[3].set_yticks([])
    fig.colorbar(err_image, ax=axes[3], shrink=0.8, label="mm/h")
    return fig


def nowcast_strip(past_mm_h, past_mask, truth_mm_h, truth_valid, pred_mm_h):
    """Last input frame, then truth (top) and prediction (bottom) for every lead time.

    `past_*`: `(T_in, H, W)`; `truth_*`, `pred_mm_h`: `(T_out, H, W)`; mm/h and 0/1 masks.
    """
    n_leads = truth_mm_h.shape[0]
    vmax = float(np.nanmax(np.where(truth_valid > 0, truth_mm_h, 0))) if np.any(truth_valid > 0) else 1.0
    fig, axes = plt.subplots(2, n_leads + 1, figsize=(2.4 * (n_leads + 1), 5), constrained_layout=True, squeeze=False)
    image = _rain_image(axes[0, 0], past_mm_h[-1], past_mask[-1], vmax, "last input")
    axes[1, 0].axis("off")
    for k in range(n_leads):
        _rain_image(axes[0, k + 1], truth_mm_h[k], truth_valid[k], vmax, f"truth lead {k + 1}")
        _rain_image(axes[1, k + 1], pred_mm_h[k], truth_valid[k], vmax, f"prediction lead {k + 1}")
    fig.colorbar(image, ax=axes, shrink=0.6, label="mm/h")
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Write `fig` as PNG and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def log_figure(logger, key: str, fig, step: int = 0) -> None:
    """Send `fig` to a Lightning logger that can take images (W&B, TensorBoard); others skip it."""
    name = type(logger).__name__
    if name == "WandbLogger":
        import wandb

        logger.experiment.log({key: wandb.Image(fig)})
    elif name == "TensorBoardLogger":
        logger.experiment.add_figure(key, fig, global_step=step, close=False)
