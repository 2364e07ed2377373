"""The hole-mask generators of the registry (kind "mask"; built by data/masks.py):
radar outages, real no-data patterns, free-form shapes and masks read from a file.

A generator is called as `gen(rng, valid, lat, lon) -> hidden`:
  rng: np.random.Generator (all randomness comes from it, so a seed fixes the mask);
  valid: (H, W) bool, True where the ground truth has data;
  lat, lon: (H, W) degrees WGS84 of the pixel centres;
  hidden: (H, W) bool, True = pixel hidden from the network.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nowcast_infill.data.mask_io import MASK_VARIABLE, nodata_patterns_from_store, read_mask_file
from nowcast_infill.data.radar_sites import great_circle_km, sites_from_codes

MaskGenerator = Callable[[np.random.Generator, np.ndarray, np.ndarray, np.ndarray], np.ndarray]

# Grids whose site discs a RadarOutage keeps (see RadarOutage._site_discs).
_DISC_CACHE_GRIDS = 4


def _range(value, what: str) -> tuple[float, float]:
    """(low, high) from a number or a 2-sequence, checked low <= high."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"{what}: range [{low}, {high}] has low > high.")
    return low, high


def _check_inputs(valid: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> None:
    if valid.ndim != 2 or np.shape(lat) != valid.shape or np.shape(lon) != valid.shape:
        raise ValueError(
            f"mask generator inputs must all be (H, W): valid {valid.shape}, lat {np.shape(lat)}, lon {np.shape(lon)}."
        )


# ---------------------------------------------------------------- radar outage


class RadarOutage:
    """Coverage discs of 1..n real radar sites blanked out (a radar that is down).

    sites: DWD site codes to draw from (None = all in radar_sites.DWD_RADAR_SITES).
    radius_km: disc radius (RADOLAN uses 150 km per radar).
    n_sites: number of failed radars, an int or [min, max] drawn uniformly.
    fallback: what to do when no site's disc reaches a valid pixel of the crop (a crop
        far from the chosen sites, or a non-German grid; see min_valid_fraction): "random_centre" (default) puts
        a disc of the same radius on a random valid pixel, so the crop still gets a
        radar-shaped hole; "error" raises ValueError.
    min_valid_fraction: sites are drawn among those whose disc covers at least this
        fraction of the crop's valid pixels (and at least one), so the hole has targets
        and a disc that only grazes a corner is not picked; distance is great-circle on lat/lon.
    """

    def __init__(
        self,
        sites: Sequence[str] | None = None,
        radius_km: float = 150.0,
        n_sites: int | Sequence[int] = 1,
        fallback: str = "random_centre",
        min_valid_fraction: float = 0.02,
    ):
        if fallback not in ("random_centre", "error"):
            raise ValueError(f"radar_outage: fallback={fallback!r}; valid values are 'random_centre', 'error'.")
        if radius_km <= 0:
            raise ValueError(f"radar_outage: radius_km={radius_km} must be positive.")
        self.sites = sites_from_codes(sites)
        self.radius_km = float(radius_km)
        low, high = _range(n_sites, "radar_outage.n_sites")
        if low < 1:
            raise ValueError(f"radar_outage: n_sites must be >= 1, got {n_sites}.")
        self.n_sites = (int(low), int(high))
        self.fallback = fallback
        self.min_valid_fraction = float(min_valid_fraction)
        self._disc_cache: dict[tuple, list[np.ndarray]] = {}

    def _site_discs(self, lat: np.ndarray, lon: np.ndarray) -> list[np.ndarray]:
        """Each site's disc, (H, W) bool, on this lat/lon grid; computed once per grid.

        Evaluation mask sets draw dozens of masks on the same full grid; the great-circle
        distances to all sites (18 x H x W haversines) dominated their cost, so the discs
        are kept for the most recent grids, keyed by a hash of the coordinates.
        """
        lat64 = np.ascontiguousarray(lat, dtype=np.float64)
        lon64 = np.ascontiguousarray(lon, dtype=np.float64)
        key = (lat64.shape, hashlib.blake2b(lat64.tobytes() + lon64.tobytes(), digest_size=16).hexdigest())
        discs = self._disc_cache.get(key)
        if discs is None:
            discs = [great_circle_km(lat64, lon64, s.lat, s.lon) <= self.radius_km for s in self.sites]
            # Training crops change every call: keep only a few grids so memory stays bounded.
            if len(self._disc_cache) >= _DISC_CACHE_GRIDS:
                self._disc_cache.pop(next(iter(self._disc_cache)))
            self._disc_cache[key] = discs
        return discs

    def __call__(self, rng: np.random.Generator, valid: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        _check_inputs(valid, lat, lon)
        discs = self._site_discs(lat, lon)
        need = max(1, int(np.ceil(self.min_valid_fraction * valid.sum())))
        candidates = [d for d in discs if (d & valid).sum() >= need]
        n = int(rng.integers(self.n_sites[0], self.n_sites[1] + 1))
        if candidates:
            chosen = rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)
            return np.logical_or.reduce([candidates[i] for i in np.sort(chosen)])
        if self.fallback == "error":
            codes = ", ".join(s.code for s in self.sites)
            raise ValueError(
                f"radar_outage: no {self.radius_km:g} km disc of sites [{codes}] reaches a valid pixel of this "
                f"{valid.shape} crop (lat {np.nanmin(lat):.2f}..{np.nanmax(lat):.2f}, lon {np.nanmin(lon):.2f}.."
                f"{np.nanmax(lon):.2f}); use fallback=random_centre or sites near the data."
            )
        pool = np.flatnonzero(valid) if valid.any() else np.arange(valid.size)
        hidden = np.zeros(valid.shape, dtype=bool)
        for flat in rng.choice(pool, size=min(n, pool.size), replace=False):
            i, j = np.unravel_index(flat, valid.shape)
            hidden |= great_circle_km(lat, lon, float(lat[i, j]), float(lon[i, j])) <= self.radius_km
        return hidden


# ---------------------------------------------------------------- real no-data patterns


class NodataPattern:
    """Real no-data shapes from a store, moved over the crop.

    "Real no-data pattern" = the set of NaN pixels of one frame of a real store (coverage
    edge, clutter, gaps of a site), `nodata_patterns_from_store`. A store whose only
    no-data is the fixed area outside coverage has one pattern; hiding it unchanged
    would hide only pixels that are already no-data. So each draw places a random
    (H, W) window of a randomly chosen pattern, with random offsets of up to
    `max_shift` times the crop size beyond the pattern's edges (outside the pattern
    counts as data) and optional random flips: the real shape of a coverage edge,
    shifted onto data. Windows are redrawn until the hidden fraction of valid pixels
    lies in `fraction` or `max_tries` is reached (then the closest draw is used, with a
    warning if it hides no valid pixel).

    path: store path (Zarr/NetCDF) or xarray.Dataset; patterns: (n, Hp, Wp) bool array
    given directly instead (one of the two).
    """

    def __init__(
        self,
        path=None,
        patterns: np.ndarray | None = None,
        max_frames: int = 256,
        max_shift: float = 0.5,
        flip: bool = True,
        fraction: Sequence[float] = (0.05, 0.6),
        max_tries: int = 20,
    ):
        if (path is None) == (patterns is None):
            raise ValueError("nodata_pattern: give exactly one of path (a store with NaN no-data) or patterns.")
        bank = nodata_patterns_from_store(path, max_frames=max_frames) if path is not None else np.asarray(patterns)
        if bank.ndim == 2:
            bank = bank[None]
        if bank.ndim != 3 or bank.dtype != bool:
            raise ValueError(f"nodata_pattern: patterns must be bool (n, H, W), got {bank.dtype} {bank.shape}.")
        self.patterns = bank
        self.max_shift = float(max_shift)
        self.flip = bool(flip)
        self.fraction = _range(fraction, "nodata_pattern.fraction")
        self.max_tries = int(max_tries)

    def _draw(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        pattern = self.patterns[rng.integers(self.patterns.shape[0])]
        if self.flip:
            if rng.random() < 0.5:
                pattern = pattern[::-1]
            if rng.random() < 0.5:
                pattern = pattern[:, ::-1]
        h, w = shape
        pad_y, pad_x = int(self.max_shift * h), int(self.max_shift * w)
        hp, wp = pattern.shape
        if hp + 2 * pad_y < h or wp + 2 * pad_x < w:
            raise ValueError(
                f"nodata_pattern: patterns are {hp} x {wp}, smaller than the {h} x {w} crop even with "
                f"max_shift={self.max_shift}; use a larger max_shift or patterns from a larger grid."
            )
        oy = int(rng.integers(-pad_y, hp + pad_y - h + 1))
        ox = int(rng.integers(-pad_x, wp + pad_x - w + 1))
        hidden = np.zeros(shape, dtype=bool)
        sy, sx = max(oy, 0), max(ox, 0)
        ey, ex = min(oy + h, hp), min(ox + w, wp)
        if ey > sy and ex > sx:
            hidden[sy - oy : ey - oy, sx - ox : ex - ox] = pattern[sy:ey, sx:ex]
        return hidden

    def __call__(self, rng: np.random.Generator, valid: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        _check_inputs(valid, lat, lon)
        n_valid = max(int(valid.sum()), 1)
        low, high = self.fraction
        best, best_gap = None, np.inf
        for _ in range(self.max_tries):
            hidden = self._draw(rng, valid.shape)
            frac = (hidden & valid).sum() / n_valid
            gap = 0.0 if low <= frac <= high else min(abs(frac - low), abs(frac - high))
            if gap < best_gap:
                best, best_gap = hidden, gap
            if gap == 0.0:
                break
        if not (best & valid).any():
            warnings.warn(
                f"nodata_pattern: after {self.max_tries} draws no pattern window hides a valid pixel of this "
                f"{valid.shape} crop; the sample has no hole targets.",
                stacklevel=2,
            )
        assert best is not None  # the first draw is always kept (gap < inf); `best & valid` above needs it too
        return best


# ---------------------------------------------------------------- free-form


class FreeForm:
    """Irregular free-form holes (random thick strokes and blobs), cf. Liu et al. 2018.

    fraction: [min, max] hidden fraction of all H*W pixels; a target is drawn uniformly
        in it and strokes are added until it is reached without passing max.
    max_width: stroke width as a fraction of min(H, W) (width drawn in [0.02, max_width]).
    blob_probability: chance that a shape is an ellipse instead of a stroke.
    """

    def __init__(
        self,
        fraction: Sequence[float] = (0.1, 0.5),
        max_width: float = 0.12,
        max_vertices: int = 8,
        blob_probability: float = 0.3,
    ):
        low, high = _range(fraction, "freeform.fraction")
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"freeform: fraction {fraction} must satisfy 0 <= min <= max <= 1.")
        self.fraction = (low, high)
        self.max_width = float(max_width)
        self.max_vertices = int(max_vertices)
        self.blob_probability = float(blob_probability)

    def _shape(self, rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
        size = min(h, w)
        rows, cols = np.indices((h, w), dtype=np.float64)
        if rng.random() < self.blob_probability:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ay, ax = rng.uniform(0.03, 0.2, size=2) * size * scale
            angle = rng.uniform(0, np.pi)
            dy, dx = rows - cy, cols - cx
            r1 = (dy * np.cos(angle) + dx * np.sin(angle)) / ay
            r2 = (-dy * np.sin(angle) + dx * np.cos(angle)) / ax
            return r1**2 + r2**2 <= 1.0
        half_width = max(rng.uniform(0.02, self.max_width) * size * scale / 2, 0.5)
        py, px = rng.uniform(0, h), rng.uniform(0, w)
        angle = rng.uniform(0, 2 * np.pi)
        stroke = np.zeros((h, w), dtype=bool)
        for _ in range(int(rng.integers(1, self.max_vertices + 1))):
            angle += rng.normal(0, np.pi / 4)
            length = rng.uniform(0.05, 0.3) * size * scale
            qy = np.clip(py + length * np.sin(angle), 0, h - 1)
            qx = np.clip(px + length * np.cos(angle), 0, w - 1)
            # distance of every pixel to the segment p-q; only the bounding box is touched
            y0, y1 = int(max(min(py, qy) - half_width - 1, 0)), int(min(max(py, qy) + half_width + 2, h))
            x0, x1 = int(max(min(px, qx) - half_width - 1, 0)), int(min(max(px, qx) + half_width + 2, w))
            ry, rx = rows[y0:y1, x0:x1] - py, cols[y0:y1, x0:x1] - px
            sy, sx = qy - py, qx - px
            t = np.clip((ry * sy + rx * sx) / max(sy * sy + sx * sx, 1e-9), 0, 1)
            stroke[y0:y1, x0:x1] |= np.hypot(ry - t * sy, rx - t * sx) <= half_width
            py, px = qy, qx
        return stroke

    def __call__(self, rng: np.random.Generator, valid: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        _check_inputs(valid, lat, lon)
        h, w = valid.shape
        low, high = self.fraction
        target = rng.uniform(low, high)
        hidden = np.zeros((h, w), dtype=bool)
        scale = 1.0
        for _ in range(1000):
            if hidden.mean() >= target:
                break
            candidate = hidden | self._shape(rng, h, w, scale)
            if candidate.mean() <= high:
                hidden = candidate
            else:
                scale *= 0.7  # overshoot: smaller shapes to land inside [low, high]
        return hidden


# ---------------------------------------------------------------- masks from a file


class FileMasks:
    """Masks read from a file (read_mask_file); each call draws one of them at random."""

    def __init__(self, path: str | Path, variable: str = MASK_VARIABLE):
        self.path = Path(path)
        self.variable = variable
        self.masks = read_mask_file(self.path, variable)

    def __call__(self, rng: np.random.Generator, valid: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        _check_inputs(valid, lat, lon)
        if self.masks.shape[1:] != valid.shape:
            raise ValueError(
                f"{self.path}: masks in {self.variable!r} are {self.masks.shape[1]} x {self.masks.shape[2]} but the "
                f"data are {valid.shape[0]} x {valid.shape[1]}; make masks of the crop/tile size or evaluate on full frames."
            )
        return self.masks[rng.integers(self.masks.shape[0])].copy()
