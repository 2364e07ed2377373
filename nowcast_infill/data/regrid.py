"""Auxiliary fields (e.g. NWP wind, temperature) from their coarse grid onto radar pixels.

Aux fields live on their own `(y_aux, x_aux)` grid in the store (docs/schema.md); samples
need them on the radar grid of the crop or tile. `AuxRegridder` computes the bilinear
weights once per store and reads only the aux cells a crop touches.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _axis_interp(target: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation weights of ``target`` coordinates on ``source`` coordinates.

    Either coordinate may be increasing or decreasing. Targets within half a source cell
    beyond the outermost source centres are clamped to the edge (the aux grid spans the
    same area, its outer centres sit half a coarse cell inside); farther ones are marked
    outside. Returns (i0, i1, w1, outside): value = (1 - w1) * s[i0] + w1 * s[i1].
    """
    order = np.argsort(source)
    src = source[order].astype(np.float64)
    if src.size == 1:
        zeros = np.zeros(target.size, np.int64)
        return order[zeros], order[zeros], np.zeros(target.size), np.zeros(target.size, bool)
    step = float(np.median(np.diff(src)))
    pos = np.interp(target, src, np.arange(src.size, dtype=np.float64))
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, src.size - 1)
    w1 = pos - i0
    i1 = np.where(w1 > 0, np.minimum(i0 + 1, src.size - 1), i0)  # no neighbour when weight is 0 (NaN-safe)
    tol = 0.5 * step * (1 + 1e-6)
    outside = (target < src[0] - tol) | (target > src[-1] + tol)
    return order[i0], order[i1], w1, outside


class AuxRegridder:
    """Bilinear regridding of ``(T, y_aux, x_aux)`` fields onto radar pixel centres (km)."""

    def __init__(self, y: np.ndarray, x: np.ndarray, y_aux: np.ndarray, x_aux: np.ndarray):
        self.iy0, self.iy1, self.wy, self.out_y = _axis_interp(np.asarray(y, np.float64), np.asarray(y_aux))
        self.ix0, self.ix1, self.wx, self.out_x = _axis_interp(np.asarray(x, np.float64), np.asarray(x_aux))

    def regrid(self, read: Callable[[slice, slice], np.ndarray], rows: slice, cols: slice) -> np.ndarray:
        """Aux values on radar rows/cols ``rows``, ``cols``: ``(T, H, W)`` float32, NaN outside/no data.

        ``read(aux_rows, aux_cols)`` returns the aux block ``(T, h_aux, w_aux)``; only the
        aux cells the crop touches are read.
        """
        iy0, iy1, wy = self.iy0[rows], self.iy1[rows], self.wy[rows][:, None].astype(np.float32)
        ix0, ix1, wx = self.ix0[cols], self.ix1[cols], self.wx[cols][None, :].astype(np.float32)
        ylo, yhi = int(min(iy0.min(), iy1.min())), int(max(iy0.max(), iy1.max())) + 1
        xlo, xhi = int(min(ix0.min(), ix1.min())), int(max(ix0.max(), ix1.max())) + 1
        block = np.asarray(read(slice(ylo, yhi), slice(xlo, xhi)), np.float32)
        iy0, iy1, ix0, ix1 = iy0 - ylo, iy1 - ylo, ix0 - xlo, ix1 - xlo
        top = block[:, iy0][:, :, ix0] * (1 - wx) + block[:, iy0][:, :, ix1] * wx
        bottom = block[:, iy1][:, :, ix0] * (1 - wx) + block[:, iy1][:, :, ix1] * wx
        out = top * (1 - wy) + bottom * wy
        outside = self.out_y[rows][:, None] | self.out_x[cols][None, :]
        out[:, outside] = np.nan
        return out
