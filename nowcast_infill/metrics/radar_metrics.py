"""RadarMetrics: continuous, categorical and neighbourhood scores as a torchmetrics Metric.

Every state is a float64 sum or count with `dist_reduce_fx="sum"`, kept per lead time,
so the scores over several DDP ranks are those over one process holding all samples
(up to float64 summation order). The definitions are those of `scores.py`, which the
tests use as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from nowcast_infill.metrics.scores import MIN_PATTERN_STD_MM_H, format_threshold

# States summed over the lead axis for the overall scores; every one has lead as dim 0.
_STATE_SHAPES = {
    # continuous scores over scored pixels
    "n_pixels": (),
    "sum_error": (),
    "sum_abs_error": (),
    "sum_sq_error": (),
    # field means per frame (frames with >= 1 scored pixel): AME and temporal correlation
    "n_frames": (),
    "sum_abs_mean_diff": (),
    "sum_mean_t": (),
    "sum_mean_p": (),
    "sum_mean_t2": (),
    "sum_mean_p2": (),
    "sum_mean_tp": (),
    # per-frame pattern correlation
    "sum_pattern_corr": (),
    "n_pattern_frames": (),
    "n_pattern_skipped": (),
    # contingency table per threshold
    "hits": ("K",),
    "misses": ("K",),
    "false_alarms": ("K",),
    # FSS numerator / denominator per threshold x scale
    "fss_num": ("K", "S"),
    "fss_den": ("K", "S"),
}


def box_sum(values: torch.Tensor, scale: int) -> torch.Tensor:
    """Sum over the `scale` x `scale` window centred on each pixel, zero outside the domain.

    values: `(N, H, W)` float64 -> `(N, H, W)`. Uses an integral image so the cost does
    not grow with the window (FSS scales reach tens of pixels on 1100 x 900 grids); on
    0/1 indicators in float64 the sums are exact integers.
    """
    if scale == 1:
        return values
    r = scale // 2
    # one extra zero row/column in front turns the cumulative sum into an integral image
    padded = torch.nn.functional.pad(values, (r + 1, r, r + 1, r))
    integral = padded.cumsum(-1).cumsum(-2)
    h, w = values.shape[-2:]
    return (
        integral[..., scale : scale + h, scale : scale + w]
        - integral[..., :h, scale : scale + w]
        - integral[..., scale : scale + h, :w]
        + integral[..., :h, :w]
    )


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, NaN where den == 0 (the score is undefined there, not 0)."""
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.full_like(num, float("nan")))


class RadarMetrics(Metric):
    """Verification scores of precipitation fields, per lead time and overall.

    `update(pred_mm_h, target_mm_h, mask)`:
        pred_mm_h, target_mm_h: `(B, T, 1, H, W)` in mm/h, T == `n_leads`.
        mask: `(B, T, 1, H, W)` 0/1, 1 = scored pixel (hole pixels for infilling, valid
        target pixels for nowcasting). Values outside the mask are never read, so NaN
        there is fine; NaN/inf at a scored pixel raises ValueError.

    `compute()` returns a flat dict of float64 scalars:
        rmse, mae, bias (mean pred - truth), ame, temporal_corr, spatial_corr (mm/h or
        unitless); pod@{thr}mmh, far@..., csi@..., fbias@... (event: value >= thr);
        fss@{thr}mmh_{scale}px; the same names with `/lead{k}` (k = 1..n_leads) for each
        lead time; and the counts scored_pixels, scored_frames, spatial_corr_skipped_frames.
        Thresholds are written with `format_threshold` (1.0 -> '1', 0.1 -> '0.1').

    A frame is one (sample, lead) field. Frames without scored pixels are ignored by the
    frame-based scores. spatial_corr skips (and counts) frames with < 2 scored pixels or
    a pattern standard deviation below `scores.MIN_PATTERN_STD_MM_H` in either field
    (e.g. all dry). Undefined scores (no events, no frames) are NaN.
    FSS (Roberts & Lean 2008): fractions are counts of exceedances among the scored
    pixels of the window over the count of scored pixels in it; sums run over scored
    pixels and are pooled over frames.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(
        self,
        thresholds: Sequence[float] = (0.1, 1.0, 5.0, 10.0),
        fss_scales: Sequence[int] = (1, 5, 11),
        n_leads: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        thresholds = [float(t) for t in thresholds]
        if not thresholds or any(not torch.isfinite(torch.tensor(t)) for t in thresholds):
            raise ValueError(f"RadarMetrics(thresholds=...) must be a non-empty list of finite mm/h values, got {thresholds}.")
        if len({format_threshold(t) for t in thresholds}) != len(thresholds):
            raise ValueError(f"RadarMetrics(thresholds=...) has duplicates: {thresholds}.")
        scales = [int(s) for s in fss_scales]
        bad = [s for s in fss_scales if int(s) != s or int(s) < 1 or int(s) % 2 != 1]
        if bad:
            raise ValueError(
                f"RadarMetrics(fss_scales=...) must be odd window sizes in pixels >= 1 (centred windows), got {list(fss_scales)}."
            )
        if len(set(scales)) != len(scales):
            raise ValueError(f"RadarMetrics(fss_scales=...) has duplicates: {scales}.")
        if int(n_leads) != n_leads or n_leads < 1:
            raise ValueError(f"RadarMetrics(n_leads=...) must be an integer >= 1, got {n_leads}.")
        self.thresholds = tuple(thresholds)
        self.fss_scales = tuple(scales)
        self.n_leads = int(n_leads)
        sizes = {"K": len(thresholds), "S": len(scales)}
        for name, dims in _STATE_SHAPES.items():
            shape = (self.n_leads, *(sizes[d] for d in dims))
            self.add_state(name, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def _check(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for name, t in (("pred_mm_h", pred), ("target_mm_h", target), ("mask", mask)):
            if t.ndim != 5 or t.shape[2] != 1:
                raise ValueError(f"RadarMetrics.update: {name} must be (B, T, 1, H, W), got shape {tuple(t.shape)}.")
        if pred.shape != target.shape or mask.shape != target.shape:
            raise ValueError(
                "RadarMetrics.update: pred_mm_h, target_mm_h and mask must have the same shape, got "
                f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}."
            )
        if pred.shape[1] != self.n_leads:
            raise ValueError(
                f"RadarMetrics.update: got T={pred.shape[1]} lead times but the metric was built with "
                f"n_leads={self.n_leads}; construct it with n_leads=T_out."
            )
        scored = mask > 0.5
        if bool((scored & ~torch.isfinite(target)).any()):
            raise ValueError("RadarMetrics.update: target_mm_h is NaN/inf at scored pixels; no-data pixels must be 0 in mask.")
        if bool((scored & ~torch.isfinite(pred)).any()):
            raise ValueError("RadarMetrics.update: pred_mm_h is NaN/inf at scored pixels; the model output must be finite.")
        return scored

    def update(self, pred_mm_h: torch.Tensor, target_mm_h: torch.Tensor, mask: torch.Tensor) -> None:
        """Accumulate sums for a batch; see the class docstring for shapes and units."""
        scored = self._check(pred_mm_h, target_mm_h, mask)
        zero = torch.zeros((), dtype=torch.float64, device=pred_mm_h.device)
        thr = torch.tensor(self.thresholds, dtype=torch.float64, device=pred_mm_h.device).view(-1, 1, 1, 1)
        # one lead at a time bounds the float64 working set to (K, B, H, W)
        for lead in range(self.n_leads):
            m = scored[:, lead, 0]
            mf = m.to(torch.float64)
            p = torch.where(m, pred_mm_h[:, lead, 0].to(torch.float64), zero)
            t = torch.where(m, target_mm_h[:, lead, 0].to(torch.float64), zero)
            err = p - t
            self.n_pixels[lead] += mf.sum()
            self.sum_error[lead] += err.sum()
            self.sum_abs_error[lead] += err.abs().sum()
            self.sum_sq_error[lead] += (err * err).sum()

            n_f = mf.sum((1, 2))
            has = n_f > 0
            hasf = has.to(torch.float64)
            mean_p = p.sum((1, 2)) / n_f.clamp(min=1)
            mean_t = t.sum((1, 2)) / n_f.clamp(min=1)
            self.n_frames[lead] += hasf.sum()
            self.sum_abs_mean_diff[lead] += ((mean_t - mean_p).abs() * hasf).sum()
            self.sum_mean_t[lead] += (mean_t * hasf).sum()
            self.sum_mean_p[lead] += (mean_p * hasf).sum()
            self.sum_mean_t2[lead] += (mean_t * mean_t * hasf).sum()
            self.sum_mean_p2[lead] += (mean_p * mean_p * hasf).sum()
            self.sum_mean_tp[lead] += (mean_t * mean_p * hasf).sum()

            dp = (p - mean_p[:, None, None]) * mf
            dt = (t - mean_t[:, None, None]) * mf
            std_p = ((dp * dp).sum((1, 2)) / n_f.clamp(min=1)).sqrt()
            std_t = ((dt * dt).sum((1, 2)) / n_f.clamp(min=1)).sqrt()
            defined = (n_f >= 2) & (std_p >= MIN_PATTERN_STD_MM_H) & (std_t >= MIN_PATTERN_STD_MM_H)
            cov = (dp * dt).sum((1, 2)) / n_f.clamp(min=1)
            corr = torch.where(defined, cov / (std_p * std_t).clamp(min=1e-300), zero)
            self.sum_pattern_corr[lead] += corr.sum()
            self.n_pattern_frames[lead] += defined.to(torch.float64).sum()
            self.n_pattern_skipped[lead] += (has & ~defined).to(torch.float64).sum()

            fc = (p[None] >= thr) & m  # (K, B, H, W) forecast events at scored pixels
            ob = (t[None] >= thr) & m
            self.hits[lead] += (fc & ob).sum((1, 2, 3)).to(torch.float64)
            self.misses[lead] += (~fc & ob).sum((1, 2, 3)).to(torch.float64)
            self.false_alarms[lead] += (fc & ~ob).sum((1, 2, 3)).to(torch.float64)

            k, b, h, w = fc.shape
            fc_f = fc.to(torch.float64).reshape(k * b, h, w)
            ob_f = ob.to(torch.float64).reshape(k * b, h, w)
            for s_idx, scale in enumerate(self.fss_scales):
                # every scored centre pixel has itself in its window, so n_window >= 1 there
                n_window = box_sum(mf, scale).clamp(min=1).repeat(k, 1, 1)
                frac_f = box_sum(fc_f, scale) / n_window
                frac_o = box_sum(ob_f, scale) / n_window
                weight = mf.repeat(k, 1, 1)
                diff = ((frac_f - frac_o) ** 2 * weight).reshape(k, -1).sum(1)
                power = ((frac_f**2 + frac_o**2) * weight).reshape(k, -1).sum(1)
                self.fss_num[lead, :, s_idx] += diff
                self.fss_den[lead, :, s_idx] += power

    def _scores(self, state: dict[str, torch.Tensor], suffix: str) -> dict[str, torch.Tensor]:
        """Scores from summed states (one lead or all leads); names end with `suffix`."""
        n = state["n_pixels"]
        out = {
            "rmse": _ratio(state["sum_sq_error"], n).sqrt(),
            "mae": _ratio(state["sum_abs_error"], n),
            "bias": _ratio(state["sum_error"], n),
            "ame": _ratio(state["sum_abs_mean_diff"], state["n_frames"]),
        }
        nf = state["n_frames"]
        cov = state["sum_mean_tp"] - state["sum_mean_t"] * state["sum_mean_p"] / nf.clamp(min=1)
        var_t = state["sum_mean_t2"] - state["sum_mean_t"] ** 2 / nf.clamp(min=1)
        var_p = state["sum_mean_p2"] - state["sum_mean_p"] ** 2 / nf.clamp(min=1)
        std_t = (var_t.clamp(min=0) / nf.clamp(min=1)).sqrt()
        std_p = (var_p.clamp(min=0) / nf.clamp(min=1)).sqrt()
        # a field-mean series without variation (or < 2 frames) has no defined correlation
        defined = (nf >= 2) & (std_t >= MIN_PATTERN_STD_MM_H) & (std_p >= MIN_PATTERN_STD_MM_H)
        out["temporal_corr"] = torch.where(
            defined, cov / (nf * std_t * std_p).clamp(min=1e-300), torch.full_like(cov, float("nan"))
        )
        out["spatial_corr"] = _ratio(state["sum_pattern_corr"], state["n_pattern_frames"])
        hits, misses, fas = state["hits"], state["misses"], state["false_alarms"]
        for i, thr in enumerate(self.thresholds):
            tag = f"@{format_threshold(thr)}mmh"
            out["pod" + tag] = _ratio(hits[i], hits[i] + misses[i])
            out["far" + tag] = _ratio(fas[i], hits[i] + fas[i])
            out["csi" + tag] = _ratio(hits[i], hits[i] + misses[i] + fas[i])
            out["fbias" + tag] = _ratio(hits[i] + fas[i], hits[i] + misses[i])
            for j, scale in enumerate(self.fss_scales):
                out[f"fss{tag}_{scale}px"] = 1.0 - _ratio(state["fss_num"][i, j], state["fss_den"][i, j])
        return {name + suffix: value for name, value in out.items()}

    def compute(self) -> dict[str, torch.Tensor]:
        """Flat dict of scores, overall and `/lead{k}`; see the class docstring."""
        states = {name: getattr(self, name) for name in _STATE_SHAPES}
        result = self._scores({name: s.sum(0) for name, s in states.items()}, "")
        result["scored_pixels"] = states["n_pixels"].sum()
        result["scored_frames"] = states["n_frames"].sum()
        result["spatial_corr_skipped_frames"] = states["n_pattern_skipped"].sum()
        for lead in range(self.n_leads):
            result.update(self._scores({name: s[lead] for name, s in states.items()}, f"/lead{lead + 1}"))
        return result
