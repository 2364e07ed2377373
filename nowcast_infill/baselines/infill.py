"""Classical spatial infilling baselines: nearest, linear, biharmonic and Laplace.

Every baseline is a callable `(x_mm_h, *, fill_mask=None) -> (1, H, W)` mm/h:

- `x_mm_h`: `(T_in, H, W)` float32 mm/h, NaN = missing or hidden. Only the centre
  frame (index `T_in // 2`, the infill target of docs/schema.md) is used: these are
  purely spatial methods and read only its observed pixels.
- `fill_mask`: `(H, W)` bool, the pixels to fill (hidden pixels inside the radar
  coverage). Default: every NaN pixel of the centre frame. NaN pixels outside
  `fill_mask` (e.g. no-data outside the coverage) stay NaN and are never used as data.

Observed pixels are returned bit-identical; only `fill_mask` pixels change.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage, sparse
from scipy.interpolate import griddata
from scipy.sparse.linalg import spsolve


class NothingToInfillFromError(ValueError):
    """The frame has no observed pixel a spatial method could fill the holes from."""


def prepare_fill(
    x_mm_h: np.ndarray, fill_mask: np.ndarray | None, need_known: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the input; return (centre frame (H, W), fill (H, W) bool, known (H, W) bool).

    `need_known`: a frame with holes but no observed pixel is an error (spatial methods).
    """
    x = np.asarray(x_mm_h)
    if x.ndim != 3:
        raise ValueError(f"x_mm_h has shape {x.shape}; expected (T_in, H, W) mm/h with NaN for missing.")
    centre = x[x.shape[0] // 2].astype(np.float32, copy=False)
    missing = ~np.isfinite(centre)
    if fill_mask is None:
        fill = missing
    else:
        fill = np.asarray(fill_mask, dtype=bool)
        if fill.shape != centre.shape:
            raise ValueError(f"fill_mask has shape {fill.shape}; expected {centre.shape} (H, W) like x_mm_h.")
        # An observed pixel is never overwritten, even if the caller marks it.
        fill = fill & missing
    known = ~missing
    if need_known and fill.any() and not known.any():
        raise NothingToInfillFromError(
            "the centre frame has no observed pixel, so a spatial baseline has nothing to infill from; "
            "use a model with temporal context or leave the frame missing."
        )
    return centre, fill, known


def finish_fill(centre: np.ndarray, fill: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return (1, H, W) float32: `centre` with `values` (one per fill pixel) put in, clamped to >= 0 mm/h."""
    out = centre.copy()
    # Interpolants of non-negative data can undershoot (biharmonic); rain is >= 0.
    out[fill] = np.maximum(values, 0.0).astype(np.float32)
    return out[None]


def _nearest_values(centre: np.ndarray, fill: np.ndarray, known: np.ndarray) -> np.ndarray:
    _, (iy, ix) = ndimage.distance_transform_edt(~known, return_indices=True)
    return centre[iy[fill], ix[fill]]


def infill_nearest(x_mm_h: np.ndarray, *, fill_mask: np.ndarray | None = None) -> np.ndarray:
    """Fill each hidden pixel with the nearest observed value (Euclidean). Returns (1, H, W) mm/h."""
    centre, fill, known = prepare_fill(x_mm_h, fill_mask)
    if not fill.any():
        return centre.copy()[None]
    return finish_fill(centre, fill, _nearest_values(centre, fill, known))


def _ring(fill: np.ndarray, known: np.ndarray, width: int) -> np.ndarray:
    """Observed pixels within `width` pixels of a fill pixel (the Dirichlet boundary of the holes)."""
    return ndimage.binary_dilation(fill, iterations=width) & known


def make_linear(ring_width: int = 2) -> Callable:
    """Linear (Delaunay) interpolation from the observed ring around the holes.

    Triangulating only the `ring_width`-pixel boundary ring instead of every observed
    pixel keeps it fast on full grids; inside a hole the interpolant is the same,
    because its enclosing triangles are spanned by ring pixels. Hole pixels outside the
    convex hull of the ring (holes open to the no-data area) take the nearest value.
    """
    if ring_width < 1:
        raise ValueError(f"linear: ring_width={ring_width}; it must be >= 1 pixel.")

    def infill_linear(x_mm_h: np.ndarray, *, fill_mask: np.ndarray | None = None) -> np.ndarray:
        """(T_in, H, W) mm/h with NaN -> (1, H, W) mm/h, hidden pixels linearly interpolated."""
        centre, fill, known = prepare_fill(x_mm_h, fill_mask)
        if not fill.any():
            return centre.copy()[None]
        ring = _ring(fill, known, ring_width)
        targets = np.argwhere(fill)
        values = np.full(len(targets), np.nan)
        if ring.sum() >= 3:
            points = np.argwhere(ring)
            try:
                values = griddata(points, centre[ring], targets, method="linear")
            except Exception:  # a degenerate (collinear) ring: Qhull cannot triangulate it
                pass
        outside_hull = ~np.isfinite(values)
        if outside_hull.any():
            values[outside_hull] = _nearest_values(centre, fill, known)[outside_hull]
        return finish_fill(centre, fill, values)

    return infill_linear


def _components(fill: np.ndarray, margin: int) -> tuple[np.ndarray, list[tuple[int, tuple[slice, slice]]]]:
    """Label the connected holes of `fill`; return (labels, [(label, bounding box plus `margin`)])."""
    labels, _ = ndimage.label(fill)
    boxes = []
    h, w = fill.shape
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        boxes.append(
            (
                i,
                (
                    slice(max(sl[0].start - margin, 0), min(sl[0].stop + margin, h)),
                    slice(max(sl[1].start - margin, 0), min(sl[1].stop + margin, w)),
                ),
            )
        )
    return labels, boxes


def _coarse_solve(solver, crop: np.ndarray, solve_mask: np.ndarray, max_unknowns: int) -> np.ndarray:
    """Run `solver(crop, solve_mask) -> (h, w)` at a reduced resolution when it has too many unknowns.

    The crop is block-averaged over observed pixels by an integer factor so that at most
    `max_unknowns` pixels are solved for, solved there, and bilinearly upsampled back; the
    result is a smooth fill, not a full-resolution one, which is what a cap means.
    """
    n = int(solve_mask.sum())
    if n <= max_unknowns:
        return solver(crop, solve_mask)
    factor = int(np.ceil(np.sqrt(n / max_unknowns)))
    h, w = crop.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    vals = np.zeros((hp, wp))
    obs = np.zeros((hp, wp))
    vals[:h, :w] = np.where(solve_mask, 0.0, crop)
    obs[:h, :w] = ~solve_mask
    vsum = vals.reshape(hp // factor, factor, wp // factor, factor).sum(axis=(1, 3))
    osum = obs.reshape(hp // factor, factor, wp // factor, factor).sum(axis=(1, 3))
    coarse_mask = osum == 0
    coarse = np.where(coarse_mask, 0.0, vsum / np.maximum(osum, 1))
    solved = solver(coarse, coarse_mask)
    fine = ndimage.zoom(solved, factor, order=1, mode="nearest", grid_mode=True)
    return fine[:h, :w]


def _per_hole(solver, centre, fill, known, margin, max_unknowns) -> np.ndarray:
    """Apply a crop solver to each hole's bounding box; return values for the fill pixels."""
    out = np.where(known, centre, 0.0).astype(np.float64)
    result = np.full(centre.shape, np.nan)
    labels, boxes = _components(fill, margin)
    for label, box in boxes:
        crop_known = known[box]
        if not crop_known.any():
            continue  # handled by the nearest fallback below
        # Every non-observed pixel of the crop is solved for, so no-data pixels next to a
        # hole act as free (natural) boundary instead of as fake zero-rain data.
        solved = _coarse_solve(solver, out[box], ~crop_known, max_unknowns)
        sub = labels[box] == label
        result[box][sub] = solved[sub]
    values = result[fill]
    bad = ~np.isfinite(values)
    if bad.any():
        values[bad] = _nearest_values(centre, fill, known)[bad]
    return values


def _biharmonic_crop(crop: np.ndarray, solve_mask: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    return inpaint_biharmonic(crop, solve_mask)


def _laplace_crop(crop: np.ndarray, solve_mask: np.ndarray) -> np.ndarray:
    """Solve the 5-point Laplace equation on `solve_mask` pixels of `crop`.

    Dirichlet values come from the observed 4-neighbours; neighbours outside the crop
    are simply absent (zero-flux), so each unknown averages its existing neighbours.
    A component with no observed neighbour at all is left NaN (the caller falls back).
    """
    h, w = crop.shape
    idx = -np.ones((h, w), dtype=np.int64)
    ys, xs = np.nonzero(solve_mask)
    n = len(ys)
    idx[ys, xs] = np.arange(n)
    rows, cols, data = [], [], []
    diag = np.zeros(n)
    rhs = np.zeros(n)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag[inside] += 1.0
        nyi, nxi = ny[inside], nx[inside]
        neighbour = idx[nyi, nxi]
        me = np.nonzero(inside)[0]
        unknown = neighbour >= 0
        rows.append(me[unknown])
        cols.append(neighbour[unknown])
        data.append(-np.ones(unknown.sum()))
        np.add.at(rhs, me[~unknown], crop[nyi[~unknown], nxi[~unknown]])
    labels, n_comp = ndimage.label(solve_mask)
    # Components without a Dirichlet neighbour make the system singular: pin them and report NaN.
    anchored = np.zeros(n_comp + 1, dtype=bool)
    has_known_nb = np.zeros(n, dtype=bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
        has_known_nb |= ~solve_mask[ny, nx]
    np.logical_or.at(anchored, labels[ys, xs], has_known_nb)
    floating = ~anchored[labels[ys, xs]]
    a = sparse.coo_matrix(
        (np.concatenate(data + [diag]), (np.concatenate(rows + [np.arange(n)]), np.concatenate(cols + [np.arange(n)]))),
        shape=(n, n),
    ).tocsr()
    if floating.any():
        pin = sparse.diags(floating.astype(float))
        keep = sparse.diags((~floating).astype(float))
        a = keep @ a + pin
        rhs = np.where(floating, 0.0, rhs)
    solution = spsolve(a.tocsc(), rhs)
    solution[floating] = np.nan
    out = crop.astype(np.float64).copy()
    out[ys, xs] = solution
    return out


def make_inpaint(method: str, margin: int = 8, max_unknowns: int = 40_000) -> Callable:
    """Biharmonic (scikit-image) or Laplace (sparse solve) inpainting, hole by hole.

    Each hole is solved in its bounding box plus `margin` pixels; a box with more than
    `max_unknowns` pixels to solve is solved on a coarser grid (see `_coarse_solve`),
    which bounds time and memory on radar-outage-sized holes.
    """
    solvers = {"biharmonic": _biharmonic_crop, "laplace": _laplace_crop}
    if method not in solvers:
        raise ValueError(f"inpaint method {method!r}; valid: {sorted(solvers)}.")
    if margin < 1 or max_unknowns < 16:
        raise ValueError(f"{method}: margin={margin} must be >= 1 and max_unknowns={max_unknowns} >= 16.")
    solver = solvers[method]

    def infill_inpaint(x_mm_h: np.ndarray, *, fill_mask: np.ndarray | None = None) -> np.ndarray:
        """(T_in, H, W) mm/h with NaN -> (1, H, W) mm/h, hidden pixels inpainted."""
        centre, fill, known = prepare_fill(x_mm_h, fill_mask)
        if not fill.any():
            return centre.copy()[None]
        return finish_fill(centre, fill, _per_hole(solver, centre, fill, known, margin, max_unknowns))

    infill_inpaint.__name__ = f"infill_{method}"
    return infill_inpaint
