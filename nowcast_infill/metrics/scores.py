"""Verification scores as small pure numpy functions.

These are the reference definitions: `radar_metrics.RadarMetrics` accumulates the
same quantities as sums and counts (so it is exact under DDP) and the tests compare
it against these functions. Use them directly for one-off scores.

Conventions shared by every function:
- `pred`, `target` are arrays of frames `(..., H, W)` in mm/h (any leading dims; each
  leading index is one frame).
- `mask` is a bool (or 0/1) array of the same shape marking the scored pixels. When
  `mask` is None every pixel whose target is finite is scored (NaN = no data, never
  rain = 0). A NaN or inf in `pred` or `target` at a scored pixel raises ValueError.
- An undefined score (no scored pixels, no observed events, zero variance) is NaN.

References:
- Continuous and categorical scores: Jolliffe & Stephenson (eds.), "Forecast
  Verification: A Practitioner's Guide in Atmospheric Science", 2nd ed., Wiley 2012
  (ch. 3 categorical, ch. 5 continuous), and the WWRP/WGNE Joint Working Group on
  Forecast Verification Research pages ("Forecast verification: issues, methods and
  FAQ", https://www.cawcr.gov.au/projects/verification/).
- FSS: Roberts & Lean, "Scale-selective verification of rainfall accumulations from
  high-resolution forecasts of convective events", Mon. Wea. Rev. 136, 78-97 (2008).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nowcast_infill.registry import register

# A frame whose scored pixels vary by less than this (standard deviation, mm/h) has no
# spatial pattern to correlate: its pattern correlation is undefined and the frame is
# skipped (and counted) instead of contributing 0 or NaN.
MIN_PATTERN_STD_MM_H = 1e-6


def format_threshold(threshold: float) -> str:
    """Threshold as it appears in metric names: 0.1 -> '0.1', 1.0 -> '1', 10 -> '10'."""
    return f"{float(threshold):g}"


def _scored(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None):
    """Float64 copies of pred/target and the bool scored mask, after checking them."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {pred.shape} but target has shape {target.shape}; they must match.")
    if mask is None:
        scored = np.isfinite(target)
    else:
        scored = np.asarray(mask).astype(bool)
        if scored.shape != target.shape:
            raise ValueError(f"mask has shape {scored.shape} but target has shape {target.shape}; they must match.")
        if not np.all(np.isfinite(target[scored])):
            raise ValueError("target has NaN/inf at scored pixels: no-data pixels must be 0 in `mask`.")
    if not np.all(np.isfinite(pred[scored])):
        raise ValueError("pred has NaN/inf at scored pixels: the forecast must be finite wherever it is scored.")
    return pred, target, scored


def _safe_ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


# --- continuous scores over scored pixels (Jolliffe & Stephenson ch. 5) -------------


def rmse(pred, target, mask=None) -> float:
    """Root mean squared error over scored pixels, mm/h."""
    p, t, m = _scored(pred, target, mask)
    return float(np.sqrt(_safe_ratio(np.sum((p[m] - t[m]) ** 2), m.sum())))


def mae(pred, target, mask=None) -> float:
    """Mean absolute error over scored pixels, mm/h."""
    p, t, m = _scored(pred, target, mask)
    return _safe_ratio(np.sum(np.abs(p[m] - t[m])), m.sum())


def bias(pred, target, mask=None) -> float:
    """Mean error (additive bias) pred - truth over scored pixels, mm/h."""
    p, t, m = _scored(pred, target, mask)
    return _safe_ratio(np.sum(p[m] - t[m]), m.sum())


def _frame_means(pred, target, mask):
    """Per-frame means of pred and truth over scored pixels, frames with >= 1 scored pixel."""
    p, t, m = _scored(pred, target, mask)
    if p.ndim < 2:
        raise ValueError(f"expected frames (..., H, W), got shape {p.shape}.")
    h, w = p.shape[-2:]
    p, t, m = p.reshape(-1, h, w), t.reshape(-1, h, w), m.reshape(-1, h, w)
    n = m.sum(axis=(1, 2))
    keep = n > 0
    mean_p = np.where(m, p, 0.0).sum(axis=(1, 2))[keep] / n[keep]
    mean_t = np.where(m, t, 0.0).sum(axis=(1, 2))[keep] / n[keep]
    return mean_p, mean_t, p[keep], t[keep], m[keep]


def ame(pred, target, mask=None) -> float:
    """Absolute mean error of the field means, mm/h.

    For each frame the means of truth and prediction over its scored pixels are taken;
    AME is |mean_truth - mean_pred| averaged over the frames that have scored pixels:
    it measures how well the areal mean (the rain volume) is reproduced, independent
    of where inside the field the errors sit.
    """
    mean_p, mean_t, *_ = _frame_means(pred, target, mask)
    return float(np.mean(np.abs(mean_t - mean_p))) if mean_p.size else float("nan")


def pearson(a, b, min_std: float = 0.0) -> float:
    """Pearson correlation of two 1-D samples; NaN if n < 2 or either std is <= min_std (or 0)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or a.std() < max(min_std, 1e-300) or b.std() < max(min_std, 1e-300):
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    return float(np.sum(da * db) / np.sqrt(np.sum(da * da) * np.sum(db * db)))


def temporal_correlation(pred, target, mask=None) -> float:
    """Pearson correlation of the field-mean time series (one value per frame) of pred and truth.

    NaN with fewer than 2 frames or when either series varies by less than
    `MIN_PATTERN_STD_MM_H` (the correlation of a constant series is undefined).
    """
    mean_p, mean_t, *_ = _frame_means(pred, target, mask)
    return pearson(mean_p, mean_t, min_std=MIN_PATTERN_STD_MM_H)


def spatial_correlation(pred, target, mask=None) -> tuple[float, int]:
    """Pattern correlation per frame over its scored pixels, averaged over frames.

    Returns `(mean_correlation, n_skipped)`. A frame is skipped (and counted) when it
    has fewer than 2 scored pixels or when the standard deviation of either field over
    those pixels is below `MIN_PATTERN_STD_MM_H` (e.g. an all-dry frame): its pattern
    correlation is undefined. Frames without any scored pixel are not counted at all.
    """
    _, _, p, t, m = _frame_means(pred, target, mask)
    correlations, skipped = [], 0
    for pf, tf, mf in zip(p, t, m, strict=True):
        a, b = pf[mf], tf[mf]
        r = pearson(a, b, min_std=MIN_PATTERN_STD_MM_H)
        if np.isnan(r):
            skipped += 1
            continue
        correlations.append(r)
    return (float(np.mean(correlations)) if correlations else float("nan")), skipped


# --- categorical scores (Jolliffe & Stephenson ch. 3; WWRP verification pages) -------


def contingency_table(pred, target, threshold: float, mask=None) -> tuple[int, int, int, int]:
    """(hits, misses, false_alarms, correct_negatives) for the event `value >= threshold`."""
    p, t, m = _scored(pred, target, mask)
    fc, ob = (p >= threshold) & m, (t >= threshold) & m
    hits = int(np.sum(fc & ob))
    misses = int(np.sum(~fc & ob))
    false_alarms = int(np.sum(fc & ~ob))
    correct_negatives = int(m.sum()) - hits - misses - false_alarms
    return hits, misses, false_alarms, correct_negatives


def pod(hits, misses) -> float:
    """Probability of detection (hit rate) = hits / (hits + misses)."""
    return _safe_ratio(hits, hits + misses)


def far(hits, false_alarms) -> float:
    """False alarm ratio = false_alarms / (hits + false_alarms)."""
    return _safe_ratio(false_alarms, hits + false_alarms)


def csi(hits, misses, false_alarms) -> float:
    """Critical success index (threat score) = hits / (hits + misses + false_alarms)."""
    return _safe_ratio(hits, hits + misses + false_alarms)


def frequency_bias(hits, misses, false_alarms) -> float:
    """Frequency bias = (hits + false_alarms) / (hits + misses): forecast over observed event count."""
    return _safe_ratio(hits + false_alarms, hits + misses)


# --- fractions skill score (Roberts & Lean 2008) ---------------------------------------


def neighbourhood_fraction(event: np.ndarray, scored: np.ndarray, scale: int) -> np.ndarray:
    """Fraction of scored pixels with an event in the `scale` x `scale` window around each pixel.

    `event`, `scored`: bool `(H, W)`. Unscored pixels are excluded from both the count
    of events and the count of pixels in a window; windows reaching past the domain edge
    simply hold fewer pixels. Where a window holds no scored pixel the fraction is NaN.
    """
    if scale < 1 or scale % 2 != 1:
        raise ValueError(f"FSS neighbourhood scale must be an odd number of pixels >= 1, got {scale}.")
    # convolve with a ones kernel sums counts exactly (float64 of small integers).
    kernel = np.ones((scale, scale), dtype=np.float64)
    n_events = ndimage.convolve((event & scored).astype(np.float64), kernel, mode="constant", cval=0.0)
    n_scored = ndimage.convolve(scored.astype(np.float64), kernel, mode="constant", cval=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_scored > 0, n_events / n_scored, np.nan)


def fss_sums(pred, target, threshold: float, scale: int, mask=None) -> tuple[float, float]:
    """Numerator sum((Pf - Po)^2) and denominator sum(Pf^2) + sum(Po^2) over scored pixels of all frames."""
    p, t, m = _scored(pred, target, mask)
    h, w = p.shape[-2:]
    num = den = 0.0
    for pf, tf, mf in zip(p.reshape(-1, h, w), t.reshape(-1, h, w), m.reshape(-1, h, w), strict=True):
        frac_f = neighbourhood_fraction(pf >= threshold, mf, scale)[mf]
        frac_o = neighbourhood_fraction(tf >= threshold, mf, scale)[mf]
        num += float(np.sum((frac_f - frac_o) ** 2))
        den += float(np.sum(frac_f**2) + np.sum(frac_o**2))
    return num, den


def fss(pred, target, threshold: float, scale: int, mask=None) -> float:
    """Fractions skill score, Roberts & Lean (2008) eq. 5, pooled over frames.

    FSS = 1 - sum((Pf - Po)^2) / (sum(Pf^2) + sum(Po^2)), the sums running over the
    scored pixels of every frame (pooling sums, not averaging per-frame FSS). NaN when
    neither field has an event (the denominator is 0).
    """
    num, den = fss_sums(pred, target, threshold, scale, mask)
    return 1.0 - num / den if den > 0 else float("nan")


def fss_uniform(observed_fraction: float) -> float:
    """Roberts & Lean (2008) 'useful skill' target FSS_uniform = 0.5 + f_o / 2."""
    return 0.5 + observed_fraction / 2.0


def fss_asymptotic(observed_fraction: float, forecast_fraction: float) -> float:
    """FSS when the window covers the whole domain: 2 f_o f_f / (f_o^2 + f_f^2) (Roberts & Lean 2008)."""
    den = observed_fraction**2 + forecast_fraction**2
    return 2.0 * observed_fraction * forecast_fraction / den if den > 0 else float("nan")


# The score pieces `RadarMetrics` accumulates (registry kind "metric", metrics/pieces.py),
# named lazily so that importing these numpy references does not import torch. A new score
# is one `ScorePiece` subclass plus one such line (or an entry point `nowcast_infill.metric`).
register("metric", "continuous", "nowcast_infill.metrics.pieces:ContinuousScores")
register("metric", "field_mean", "nowcast_infill.metrics.pieces:FieldMeanScores")
register("metric", "spatial_corr", "nowcast_infill.metrics.pieces:PatternCorrelation")
register("metric", "categorical", "nowcast_infill.metrics.pieces:CategoricalScores")
register("metric", "fss", "nowcast_infill.metrics.pieces:FractionsSkillScore")
