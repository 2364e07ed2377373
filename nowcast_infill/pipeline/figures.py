"""The test figures of a run, saved as `<output_dir>/figures/<name>.png` on rank 0.

Transitional: the module draws them at the end of its test epoch (`module.test_figures`);
once `nowcast_infill.training.callbacks.FigureCallback(output_dir, n_figures, stage="test")`
exists, the pipeline adds that callback to the Trainer and this module goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nowcast_infill.utils.logging import current_rank


def save_module_figures(module: Any, output_dir: Path) -> None:
    """Save and close the (name, matplotlib figure) pairs in `module.test_figures` (rank 0 only)."""
    import matplotlib.pyplot as plt

    from nowcast_infill.utils.plotting import save_figure

    figures = getattr(module, "test_figures", None) or []
    if current_rank() != 0:
        return
    for name, fig in figures:
        save_figure(fig, output_dir / "figures" / f"{name}.png")
        plt.close(fig)
