"""The score families `RadarMetrics` accumulates, one `ScorePiece` subclass each.

A piece declares float64 sum/count states (summed over DDP ranks), adds a chunk of frames to
them (`accumulate`) and turns summed states into named scores (`scores`). Each is registered
as kind `metric` (`nowcast_infill.registry`; the lines are in metrics/scores.py), and
`RadarMetrics` runs every registered piece, so a new score is one subclass plus one
`register("metric", name, cls)` line. The definitions match the numpy reference in
`scores.py`, which the tests compare against.

All pieces read one shared `ScoredFrames`: the chunk's fields, its scored mask, and the
intermediates several pieces need (float64 masked fields, event planes, contingency counts),
computed once per chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch

from nowcast_infill.metrics.scores import MIN_PATTERN_STD_MM_H, format_threshold
from nowcast_infill.metrics.window_sums import (
    box_sums_of_padded,
    ratio_or_nan,
    row_dots,
    weighted_row_sums,
    window_sum_dtype,
)

F64 = torch.float64
# Integer-valued float32 arithmetic is exact while every value stays below 2**24.
FLOAT32_EXACT_INT = 2**24
# Elements per row band of the FSS window sums, per CPU thread (see `FractionsSkillScore`):
# ~2 MB per thread in float32, near a core's cache, yet few enough bands that the
# per-op thread synchronisation stays small. Median s per 1100 x 900 frame on the shared
# 2-core CPU for 2**18 / 2**19 / 2**20 per thread: 0.15 / 0.17 / 0.17 with one thread,
# 1.1 / 0.71 / 0.49 with two (interleaved A/B, 5 repeats, on a heavily loaded machine).
BAND_ELEMENTS_PER_THREAD = 2**19
# On a GPU the bands only need to bound memory; large kernels are what it wants.
BAND_ELEMENTS_GPU = 2**26


class ScoredFrames:
    """A chunk of `N` frames (one frame = one sample x lead field) and what the pieces share.

    pred, target: `(N, H, W)` mm/h in float32 (float64 when an input was float64);
    scored: `(N, H, W)` bool; thresholds: `(K,)` in the dtype of pred (rounded so that
    comparisons equal float64 ones, see `RadarMetrics`); fss_scales: odd window sizes (px).

    Shared intermediates: `p`, `t` `(N, H, W)` float64 fields, 0 outside `scored`; `sum_p`,
    `sum_t`, `n_scored`, `mean_p`, `mean_t` `(N,)`; `has` `(N,)` bool (frame has scored pixels);
    `planes` `(N, 2K+1, H+2pad, W+2pad)` 0/1 (K forecast events, K observed events, scored;
    zero border of `pad = max(fss_scales)//2`); `n_fc`, `n_ob`, `hits` `(N, K)` float64 counts.
    Raises ValueError for NaN/inf at scored pixels before any sum is kept.
    """

    def __init__(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        scored: torch.Tensor,
        thresholds: torch.Tensor,
        fss_scales: Sequence[int],
    ) -> None:
        n, h, w = pred.shape
        k = thresholds.numel()
        self.pred, self.target, self.scored, self.thresholds = pred, target, scored, thresholds
        self.fss_scales = tuple(fss_scales)
        # continuous scores in float64: their sums must match a float64 reference to ~1e-12
        self.p = torch.where(scored, pred, 0).to(F64)
        self.t = torch.where(scored, target, 0).to(F64)
        self.sum_p, self.sum_t = self.p.flatten(1).sum(1), self.t.flatten(1).sum(1)
        # NaN/inf anywhere makes the frame sum non-finite, so a finite sum clears the frame
        # without a full isfinite pass; only a non-finite sum (or an overflow) is looked at closely.
        if not bool(torch.isfinite(self.sum_t).all()) and not bool(torch.isfinite(self.t).all()):
            raise ValueError(
                "RadarMetrics.update: target_mm_h is NaN/inf at scored pixels; no-data pixels must be 0 in mask."
            )
        if not bool(torch.isfinite(self.sum_p).all()) and not bool(torch.isfinite(self.p).all()):
            raise ValueError(
                "RadarMetrics.update: pred_mm_h is NaN/inf at scored pixels; the model output must be finite."
            )
        self.pad = pad = max(self.fss_scales) // 2
        # float32 counts of 0/1 planes are exact while every (window) total stays below 2**24
        self.plane_dtype = torch.float32 if (h + 2 * pad) * (w + 2 * pad) < FLOAT32_EXACT_INT else F64
        # Zero-padded by `pad` so that row bands with their halo are plain views (FSS).
        planes = torch.zeros((n, 2 * k + 1, h + 2 * pad, w + 2 * pad), dtype=self.plane_dtype, device=pred.device)
        inner = planes[:, :, pad : pad + h, pad : pad + w]
        thr = thresholds.view(1, k, 1, 1)
        torch.ge(torch.where(scored, pred, float("-inf"))[:, None], thr, out=inner[:, :k])
        torch.ge(torch.where(scored, target, float("-inf"))[:, None], thr, out=inner[:, k : 2 * k])
        inner[:, 2 * k] = scored
        self.planes = planes
        flat = planes.flatten(2)  # the zero border adds nothing to the counts
        counts = flat.sum(2).to(F64)  # (N, 2K+1): forecast events, observed events, scored pixels
        self.n_fc, self.n_ob, self.n_scored = counts[:, :k], counts[:, k : 2 * k], counts[:, 2 * k]
        # 0/1 products summed in float32 are exact integers (< 2**24), as are the counts
        self.hits = row_dots(flat[:, :k].reshape(n * k, -1), flat[:, k : 2 * k].reshape(n * k, -1)).view(n, k).to(F64)
        self.has = self.n_scored > 0
        self.per_pixel = self.n_scored.clamp(min=1)
        self.mean_p = self.sum_p / self.per_pixel
        self.mean_t = self.sum_t / self.per_pixel


class ScorePiece:
    """One family of scores. Subclasses set `states` and implement `accumulate` and `scores`.

    states: state name -> dims after the lead axis, each `"K"` (thresholds) or `"S"` (FSS
        scales); every state is a float64 sum (DDP: summed over ranks). Names must be unique
        over all registered pieces.
    position: where the piece's scores come in the result (lower first; ties by name).
    """

    states: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    position: ClassVar[float] = 100.0

    def accumulate(self, frames: ScoredFrames, sums: dict[str, torch.Tensor]) -> None:
        """Add the chunk's per-frame sums into `sums[name]` (float64 `(N, *dims)` views)."""
        raise NotImplementedError

    def scores(
        self, state: Mapping[str, torch.Tensor], thresholds: Sequence[float], fss_scales: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        """Scores from summed states (over one lead or all leads; no lead axis)."""
        raise NotImplementedError

    def totals(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Counts reported once over all leads (states with the lead axis), e.g. scored pixels."""
        return {}


def threshold_tag(threshold: float) -> str:
    """`@1mmh`: how a threshold appears in score names."""
    return f"@{format_threshold(threshold)}mmh"


class ContinuousScores(ScorePiece):
    """rmse, mae, bias (mean pred - truth) over scored pixels, mm/h; total `scored_pixels`."""

    states: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "n_pixels": (),
        "sum_error": (),
        "sum_abs_error": (),
        "sum_sq_error": (),
    }
    position = 10

    def accumulate(self, frames, sums):
        err = (frames.p - frames.t).flatten(1)
        sums["n_pixels"] += frames.n_scored
        sums["sum_error"] += err.sum(1)
        sums["sum_sq_error"] += row_dots(err, err)
        sums["sum_abs_error"] += err.abs_().sum(1)

    def scores(self, state, thresholds, fss_scales):
        n = state["n_pixels"]
        return {
            "rmse": ratio_or_nan(state["sum_sq_error"], n).sqrt(),
            "mae": ratio_or_nan(state["sum_abs_error"], n),
            "bias": ratio_or_nan(state["sum_error"], n),
        }

    def totals(self, state):
        return {"scored_pixels": state["n_pixels"].sum()}


class FieldMeanScores(ScorePiece):
    """ame (mean |field-mean difference|) and temporal_corr (of the frames' field means)."""

    states: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "n_frames": (),
        "sum_abs_mean_diff": (),
        "sum_mean_t": (),
        "sum_mean_p": (),
        "sum_mean_t2": (),
        "sum_mean_p2": (),
        "sum_mean_tp": (),
    }
    position = 20

    def accumulate(self, frames, sums):
        hasf = frames.has.to(F64)
        mean_p, mean_t = frames.mean_p, frames.mean_t
        sums["n_frames"] += hasf
        sums["sum_abs_mean_diff"] += (mean_t - mean_p).abs() * hasf
        sums["sum_mean_t"] += mean_t * hasf
        sums["sum_mean_p"] += mean_p * hasf
        sums["sum_mean_t2"] += mean_t * mean_t * hasf
        sums["sum_mean_p2"] += mean_p * mean_p * hasf
        sums["sum_mean_tp"] += mean_t * mean_p * hasf

    def scores(self, state, thresholds, fss_scales):
        nf = state["n_frames"]
        cov = state["sum_mean_tp"] - state["sum_mean_t"] * state["sum_mean_p"] / nf.clamp(min=1)
        var_t = state["sum_mean_t2"] - state["sum_mean_t"] ** 2 / nf.clamp(min=1)
        var_p = state["sum_mean_p2"] - state["sum_mean_p"] ** 2 / nf.clamp(min=1)
        std_t = (var_t.clamp(min=0) / nf.clamp(min=1)).sqrt()
        std_p = (var_p.clamp(min=0) / nf.clamp(min=1)).sqrt()
        # a field-mean series without variation (or < 2 frames) has no defined correlation
        defined = (nf >= 2) & (std_t >= MIN_PATTERN_STD_MM_H) & (std_p >= MIN_PATTERN_STD_MM_H)
        corr = torch.where(defined, cov / (nf * std_t * std_p).clamp(min=1e-300), torch.full_like(cov, float("nan")))
        return {"ame": ratio_or_nan(state["sum_abs_mean_diff"], nf), "temporal_corr": corr}

    def totals(self, state):
        return {"scored_frames": state["n_frames"].sum()}


class PatternCorrelation(ScorePiece):
    """spatial_corr: mean per-frame pattern correlation; total `spatial_corr_skipped_frames`
    (frames with < 2 scored pixels or a flat field in either input)."""

    states: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "sum_pattern_corr": (),
        "n_pattern_frames": (),
        "n_pattern_skipped": (),
    }
    position = 30

    def accumulate(self, frames, sums):
        # deviations from the frame means (two-pass), as the reference computes them
        n = frames.p.shape[0]
        unscored = ~frames.scored
        dp = (frames.p - frames.mean_p.view(n, 1, 1)).masked_fill_(unscored, 0.0).flatten(1)
        dt = (frames.t - frames.mean_t.view(n, 1, 1)).masked_fill_(unscored, 0.0).flatten(1)
        per_pixel = frames.per_pixel
        std_p = (row_dots(dp, dp) / per_pixel).sqrt()
        std_t = (row_dots(dt, dt) / per_pixel).sqrt()
        defined = (frames.n_scored >= 2) & (std_p >= MIN_PATTERN_STD_MM_H) & (std_t >= MIN_PATTERN_STD_MM_H)
        cov = row_dots(dp, dt) / per_pixel
        sums["sum_pattern_corr"] += torch.where(defined, cov / (std_p * std_t).clamp(min=1e-300), 0.0)
        sums["n_pattern_frames"] += defined.to(F64)
        sums["n_pattern_skipped"] += (frames.has & ~defined).to(F64)

    def scores(self, state, thresholds, fss_scales):
        return {"spatial_corr": ratio_or_nan(state["sum_pattern_corr"], state["n_pattern_frames"])}

    def totals(self, state):
        return {"spatial_corr_skipped_frames": state["n_pattern_skipped"].sum()}


class CategoricalScores(ScorePiece):
    """pod, far, csi, fbias per threshold (event: value >= threshold)."""

    states: ClassVar[Mapping[str, tuple[str, ...]]] = {"hits": ("K",), "misses": ("K",), "false_alarms": ("K",)}
    position = 40

    def accumulate(self, frames, sums):
        sums["hits"] += frames.hits
        sums["misses"] += frames.n_ob - frames.hits
        sums["false_alarms"] += frames.n_fc - frames.hits

    def scores(self, state, thresholds, fss_scales):
        hits, misses, fas = state["hits"], state["misses"], state["false_alarms"]
        out = {}
        for i, thr in enumerate(thresholds):
            tag = threshold_tag(thr)
            out["pod" + tag] = ratio_or_nan(hits[i], hits[i] + misses[i])
            out["far" + tag] = ratio_or_nan(fas[i], hits[i] + fas[i])
            out["csi" + tag] = ratio_or_nan(hits[i], hits[i] + misses[i] + fas[i])
            out["fbias" + tag] = ratio_or_nan(hits[i] + fas[i], hits[i] + misses[i])
        return out


class FractionsSkillScore(ScorePiece):
    """fss@{thr}mmh_{scale}px (Roberts & Lean 2008): fractions are counts of exceedances among
    the scored pixels of the window over the count of scored pixels in it; sums run over scored
    pixels and are pooled over frames.

    With B the window sums of events and n_win that of scored pixels, the fractions are
    B / n_win, so sum (Pf - Po)^2 = sum (Bf - Bo)^2 / n_win^2 over scored pixels. Window sums
    run in narrow integers and their squares in float32, both exact; only the final weighted sum
    runs in float64 (so the result equals the float64 reference up to summation order). At
    scale 1 the sums reduce to the contingency counts. Row bands keep every temporary at a few
    MB: cache-resident, and below the size at which each allocation is fresh memory from the OS.
    """

    states: ClassVar[Mapping[str, tuple[str, ...]]] = {"fss_num": ("K", "S"), "fss_den": ("K", "S")}
    position = 50

    def accumulate(self, frames, sums):
        n_fc, n_ob, hits = frames.n_fc, frames.n_ob, frames.hits
        for j, scale in enumerate(frames.fss_scales):
            if scale == 1:
                sums["fss_num"][:, :, j] += (n_fc - hits) + (n_ob - hits)
                sums["fss_den"][:, :, j] += n_fc + n_ob
        big = [(j, s) for j, s in enumerate(frames.fss_scales) if s > 1]
        if not big:
            return
        n, h, w = frames.pred.shape
        k, pad, device = frames.thresholds.numel(), frames.pad, frames.pred.device
        big_scales = [s for _, s in big]
        window_dtype = window_sum_dtype(max(big_scales))
        # squares of window sums (<= 2 scale^4) stay exact in float32 up to scale 53
        square_dtype = frames.plane_dtype if 2 * max(big_scales) ** 4 < FLOAT32_EXACT_INT else F64
        band_elements = (
            BAND_ELEMENTS_PER_THREAD * torch.get_num_threads() if device.type == "cpu" else BAND_ELEMENTS_GPU
        )
        band = max(1, band_elements // (n * (2 * k + 1) * (w + 2 * pad)))
        for y0 in range(0, h, band):
            rows = min(band, h - y0)
            band_planes = frames.planes[:, :, y0 : y0 + rows + 2 * pad].to(window_dtype)
            box = torch.empty((len(big), n, 2 * k + 1, rows, w), dtype=square_dtype, device=device)
            for i, box_of_scale in enumerate(box_sums_of_padded(band_planes, big_scales, pad)):
                box[i] = box_of_scale
            # every scored pixel is in its own window, so the window count is >= 1 wherever it is used
            inv_sq_count = box[:, :, 2 * k].to(F64).clamp_(min=1).pow_(-2)
            weight = torch.where(frames.scored[None, :, y0 : y0 + rows], inv_sq_count, 0.0)
            fc_box, ob_box = box[:, :, :k], box[:, :, k : 2 * k]
            # per pixel: (Bf - Bo)^2 for the numerator, Bf^2 + Bo^2 for the denominator
            squares = torch.empty((len(big), n, 2 * k, rows, w), dtype=square_dtype, device=device)
            torch.sub(fc_box, ob_box, out=squares[:, :, :k]).square_()
            torch.mul(fc_box, fc_box, out=squares[:, :, k:]).addcmul_(ob_box, ob_box)
            weighted = weighted_row_sums(
                squares.view(len(big) * n, 2 * k, rows * w).to(F64), weight.view(len(big) * n, rows * w)
            ).view(len(big), n, 2 * k)
            for i, (j, _) in enumerate(big):
                sums["fss_num"][:, :, j] += weighted[i, :, :k]
                sums["fss_den"][:, :, j] += weighted[i, :, k:]

    def scores(self, state, thresholds, fss_scales):
        out = {}
        for i, thr in enumerate(thresholds):
            for j, scale in enumerate(fss_scales):
                out[f"fss{threshold_tag(thr)}_{scale}px"] = 1.0 - ratio_or_nan(
                    state["fss_num"][i, j], state["fss_den"][i, j]
                )
        return out


__all__ = [
    "CategoricalScores",
    "ContinuousScores",
    "FieldMeanScores",
    "FractionsSkillScore",
    "PatternCorrelation",
    "ScorePiece",
    "ScoredFrames",
    "threshold_tag",
]
