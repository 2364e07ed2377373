"""Every figure of the package: sample panels, data previews, report charts, and logging them.

The one place that picks matplotlib's backend: Agg, so figures draw without a display (Slurm
nodes, CI, ssh). Callers import figures from here and never set a backend themselves.
Fields are in mm/h with no-data pixels grey (never drawn as dry), masks 0/1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from nowcast_infill.data.masks import hole_targets  # noqa: E402

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
    axes[0].imshow(
        hole_overlay, cmap=matplotlib.colors.ListedColormap([HOLE_COLOUR]), alpha=0.6, interpolation="nearest"
    )
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
    """Write `fig` as PNG (the caller closes it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def close_figure(fig) -> None:
    """Free `fig` (pyplot keeps every open figure alive otherwise)."""
    plt.close(fig)


def log_figure(logger, key: str, fig, step: int = 0) -> None:
    """Send `fig` to a Lightning logger that can take images (W&B, TensorBoard); others skip it."""
    name = type(logger).__name__
    if name == "WandbLogger":
        import wandb

        logger.experiment.log({key: wandb.Image(fig)})
    elif name == "TensorBoardLogger":
        logger.experiment.add_figure(key, fig, global_step=step, close=False)


def plot_frames_with_masks(ds, times: Sequence, masks: np.ndarray | None, path: str | Path) -> Path:
    """PNG panel: one column per frame, precip (mm/h, log colours, no-data grey) above,
    the same frame with its hole mask below (hidden pixels in magenta, hole targets
    = hidden & valid in full colour, hidden no-data lighter).

    ds: store-schema Dataset; times: time indices (int) or datetime64 values;
    masks: (len(times), H, W) bool, True = hidden, or None for the precip row only.
    """
    indices = [
        int(t)
        if isinstance(t, (int, np.integer))
        else int(np.flatnonzero(ds["time"].values == np.datetime64(t, "ns"))[0])
        for t in times
    ]
    frames = np.asarray(ds["precip"].isel(time=indices).values)
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != frames.shape:
            raise ValueError(f"plot_frames_with_masks: masks {masks.shape} do not match frames {frames.shape}.")
    rows = 1 if masks is None else 2
    fig, axes = plt.subplots(rows, len(indices), figsize=(3.2 * len(indices), 3.2 * rows), squeeze=False)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.75", under="white")
    norm = LogNorm(vmin=0.1, vmax=max(float(np.nanmax(frames)) if np.isfinite(frames).any() else 1.0, 1.0))
    extent = [float(ds["x"].min()), float(ds["x"].max()), float(ds["y"].min()), float(ds["y"].max())]
    origin = "lower" if ds["y"].values[-1] > ds["y"].values[0] else "upper"
    image = None
    for col, (idx, frame) in enumerate(zip(indices, frames, strict=True)):
        shown = np.where(frame > 0, frame, 0.01)  # dry below vmin -> white, NaN stays NaN -> grey
        shown[np.isnan(frame)] = np.nan
        ax = axes[0, col]
        image = ax.imshow(shown, origin=origin, extent=extent, cmap=cmap, norm=norm)
        ax.set_title(np.datetime_as_string(ds["time"].values[idx], unit="m") + " UTC", fontsize=8)
        if masks is not None:
            ax = axes[1, col]
            ax.imshow(shown, origin=origin, extent=extent, cmap=cmap, norm=norm)
            valid = ~np.isnan(frame)
            targets = hole_targets(masks[col], valid)
            overlay = np.zeros((*frame.shape, 4))
            overlay[targets] = (1.0, 0.0, 1.0, 0.75)
            overlay[masks[col] & ~valid] = (1.0, 0.0, 1.0, 0.25)
            ax.imshow(overlay, origin=origin, extent=extent)
            ax.set_title(f"hole targets {targets.sum() / max(valid.sum(), 1):.0%} of valid", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    assert image is not None  # plt.subplots rejects 0 columns, so the loop drew at least one frame
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="mm/h")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def sample_figure(task_name: str, target_index: int, window: dict[str, Any], decode) -> Any:
    """The panel of one evaluated window: `infill_panel` or `nowcast_strip`.

    window: CPU tensors of one sample, `(1, T, C, H, W)` (`x`, `x_mask`, `y`, `y_valid`, `hole`
    in the batch's normalised units, `pred_mm_h` in mm/h); decode: normalised -> mm/h;
    target_index: the infill target frame among the inputs (ignored for nowcasts).
    """
    x_mm_h = decode(window["x"][0]).numpy()
    y_mm_h = decode(window["y"][0]).numpy()
    pred = window["pred_mm_h"][0].numpy()
    if task_name == "infill":
        c = target_index
        return infill_panel(
            x_mm_h[c, 0],
            window["x_mask"][0, c, 0].numpy(),
            y_mm_h[0, 0],
            window["y_valid"][0, 0, 0].numpy(),
            pred[0, 0],
            window["hole"][0, 0, 0].numpy(),
        )
    return nowcast_strip(
        x_mm_h[:, 0],
        window["x_mask"][0, :, 0].numpy(),
        y_mm_h[:, 0],
        window["y_valid"][0, :, 0].numpy(),
        pred[:, 0],
    )


def bar_chart(
    names: Sequence[str],
    means: Sequence[float],
    stds: Sequence[float],
    colours: Sequence[str],
    label: str,
    title: str,
    path: Path,
) -> Path:
    """PNG of one bar per name (error bars = std, NaN std drawn as none)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4), constrained_layout=True)
    ax.bar(list(names), list(means), yerr=[0 if math.isnan(s) else s for s in stds], color=list(colours), capsize=3)
    ax.set_ylabel(label)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=30)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def lead_time_plot(
    panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, bool]]]], title: str, path: Path
) -> Path:
    """PNG with one panel per `(y label, series)`; a series is `(name, lead minutes, mean, std,
    shaded)`: solid with a shaded +- std band when `shaded` (networks), dashed otherwise."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), constrained_layout=True, squeeze=False)
    for ax, (label, series) in zip(axes[0], panels, strict=True):
        for name, minutes, mean, std, shaded in series:
            ax.plot(minutes, mean, "-" if shaded else "--", marker="o", ms=3, label=name)
            if shaded:
                ax.fill_between(minutes, mean - std, mean + std, alpha=0.15)
        ax.set_xlabel("lead time (min)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def downscaled_copy(source: str | Path, path: Path, max_width_px: int = 1000) -> Path:
    """Copy a PNG, keeping every n-th pixel so it is at most `max_width_px` wide."""
    image = plt.imread(str(source))
    step = max(1, math.ceil(image.shape[1] / max_width_px))
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, image[::step, ::step])
    return path
