"""Figures for the demo and reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def plot_frames_with_masks(ds, times: Sequence, masks: np.ndarray | None, path: str | Path) -> Path:
    """PNG panel: one column per frame, precip (mm/h, log colours, no-data grey) above,
    the same frame with its hole mask below (hidden pixels in magenta, hole targets
    = hidden & valid in full colour, hidden no-data lighter).

    ds: store-schema Dataset; times: time indices (int) or datetime64 values;
    masks: (len(times), H, W) bool, True = hidden, or None for the precip row only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from nowcast_infill.data.masks import hole_targets

    indices = [int(t) if isinstance(t, (int, np.integer)) else int(np.flatnonzero(ds["time"].values == np.datetime64(t, "ns"))[0]) for t in times]
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
    for col, (idx, frame) in enumerate(zip(indices, frames)):
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
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="mm/h")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
