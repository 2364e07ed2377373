"""RadarMetrics: continuous, categorical and neighbourhood scores as a torchmetrics Metric.

Every state is a float64 sum or count with `dist_reduce_fx="sum"`, kept per lead time,
so the scores over several DDP ranks are those over one process holding all samples
(up to float64 summation order). The definitions are those of `scores.py`, which the
tests use as the reference.

Speed on full radar grids (1100 x 900) without giving up exactness: all thresholds are
compared in one op in float32 (thresholds rounded up so no comparison changes); the
FSS window sums of all event planes and all scales share one separable pass of shifted
additions in uint8/int16 (exact: a window of 0/1 values sums to <= scale^2), done in row
bands small enough to stay in cache; only per-pixel terms that need it (continuous
errors, the 1 / n_window^2 weights) are float64, and their sums are BLAS dot products.
No numpy round trip, so the same code runs on CUDA tensors.
`python experiments/bench_metrics.py` times it against the numpy reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from nowcast_infill.metrics.scores import MIN_PATTERN_STD_MM_H, format_threshold
from nowcast_infill.study import FSS_SCALES_PX, METRIC_THRESHOLDS_MM_H

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


# Integer-valued float32 arithmetic is exact while every value stays below 2**24.
_FLOAT32_EXACT_INT = 2**24

# Frames per chunk are chosen so that one chunk's event planes stay near this many
# elements: large enough that per-op overhead is negligible, small enough that the
# working set (a few float32 copies) stays well below a gigabyte on full radar grids.
_CHUNK_ELEMENTS = 2**23
# Elements per row band of the FSS window sums, per CPU thread (see `_accumulate_frames`):
# ~2 MB per thread in float32, near a core's cache, yet few enough bands that the
# per-op thread synchronisation stays small. Median s per 1100 x 900 frame on the shared
# 2-core CPU for 2**18 / 2**19 / 2**20 per thread: 0.15 / 0.17 / 0.17 with one thread,
# 1.1 / 0.71 / 0.49 with two (interleaved A/B, 5 repeats, on a heavily loaded machine).
_BAND_ELEMENTS_PER_THREAD = 2**19
# On a GPU the bands only need to bound memory; large kernels are what it wants.
_BAND_ELEMENTS_GPU = 2**26


def _window_sums_along(values: torch.Tensor, dim: int, scales: Sequence[int], pad: int) -> list[torch.Tensor]:
    """Centred window sums along `dim` of `values` that is zero-padded by `pad` on both sides.

    Returns one tensor per odd scale (<= 2 * pad + 1), of length `values.shape[dim] - 2 * pad`
    along `dim`. Sums of 1, 2, 4, ... consecutive elements are built by doubling and shared by
    every scale; a scale is the sum of the power-of-two blocks of its binary digits. This costs
    O(log scale) vectorised additions per element, against a cumulative sum that is sequential
    along the axis (and several times slower on CPU) and whose running totals grow with the grid.
    """
    length = values.shape[dim] - 2 * pad
    blocks = {1: values}
    width = 1
    while 2 * width <= max(scales):
        prev = blocks[width]
        n = prev.shape[dim] - width
        blocks[2 * width] = prev.narrow(dim, 0, n) + prev.narrow(dim, width, n)
        width *= 2
    sums = []
    for scale in scales:
        offset = pad - scale // 2  # first padded index of the window of output 0
        total, owned = None, False
        for width in sorted(blocks, reverse=True):
            if scale & width:
                term = blocks[width].narrow(dim, offset, length)
                if total is None:
                    total = term  # a view of a shared block: never modified in place
                elif owned:
                    total.add_(term)
                else:
                    total, owned = total + term, True
                offset += width
        sums.append(total)
    return sums


def box_sums(values: torch.Tensor, scales: Sequence[int]) -> list[torch.Tensor]:
    """Sums over the `scale` x `scale` window centred on each pixel, zero outside the domain.

    values: `(..., H, W)` -> one `(..., H, W)` tensor per odd scale, same dtype (float or
    an integer type wide enough for the sums).
    Separable: window sums along W, then along H, sharing the power-of-two partial sums
    between scales. On integer-valued inputs (0/1 indicators) the sums are exact as long
    as they stay below 2**24 in float32 (2**53 in float64): a window of s x s indicators
    sums to at most s**2.
    """
    if any(s < 1 or s % 2 != 1 for s in scales):
        raise ValueError(f"box_sums: window scales must be odd numbers of pixels >= 1, got {list(scales)}.")
    pad = max(scales) // 2
    if pad == 0:
        return [values for _ in scales]
    return _box_sums_of_padded(torch.nn.functional.pad(values, (pad, pad, pad, pad)), scales, pad)


def _box_sums_of_padded(padded: torch.Tensor, scales: Sequence[int], pad: int) -> list[torch.Tensor]:
    """`box_sums` of a field already zero-padded by `pad` >= max(scales) // 2 on all four sides.

    padded: `(..., R + 2 pad, C + 2 pad)` -> one `(..., R, C)` tensor per scale. Row bands of a
    larger field can be passed as views that include `pad` halo rows from their neighbours.
    """
    out = []
    for scale, along_w in zip(scales, _window_sums_along(padded, -1, scales, pad)):
        # along_w still has `pad` halo rows on each side; keep the ones this scale reaches
        extra = pad - scale // 2
        rows = along_w.narrow(-2, extra, along_w.shape[-2] - 2 * extra)
        out.append(_window_sums_along(rows, -2, [scale], scale // 2)[0])
    return out


def box_sum(values: torch.Tensor, scale: int) -> torch.Tensor:
    """Sum over the `scale` x `scale` window centred on each pixel, zero outside the domain.

    values: `(..., H, W)` -> `(..., H, W)`; see `box_sums` (exact integer sums on 0/1 inputs).
    """
    return box_sums(values, [scale])[0]


def _window_sum_dtype(max_scale: int) -> torch.dtype:
    """Narrowest dtype holding window sums of 0/1 planes (<= max_scale^2) exactly.

    Narrow integers move 4x less memory than float32 through the shifted additions,
    which dominate the FSS cost; the bound rules out any overflow.
    """
    largest = max_scale * max_scale
    if largest <= torch.iinfo(torch.uint8).max:
        return torch.uint8
    if largest <= torch.iinfo(torch.int16).max:
        return torch.int16
    if largest <= torch.iinfo(torch.int32).max:
        return torch.int32
    return torch.float64


def _weighted_row_sums(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`(B, R, P) x (B, P) -> (B, R)`: sum over P of values * weight, float64.

    One matrix-vector product per batch entry: on CPU a BLAS gemv is several times
    faster than `bmm` with a single column; many small batches go through `bmm`.
    """
    if values.shape[0] <= 16:
        return torch.stack([torch.mv(v, w) for v, w in zip(values, weight)])
    return torch.bmm(values, weight.unsqueeze(2))[..., 0]


def _row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`(R, P), (R, P) -> (R,)`: sum over P of a * b, without a full-size temporary.

    A few long rows go through BLAS dot products; many short rows through one product
    and sum (there the temporary is small and the per-call overhead dominates).
    """
    if a.shape[0] <= 64:
        return torch.stack([torch.dot(x, y) for x, y in zip(a, b)])
    return (a * b).sum(1)


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
        fss@{thr}mmh_{scale}px; with several lead times (n_leads > 1) the same names with
        `/lead{k}` (k = 1..n_leads) for each lead time (with one they would repeat the overall
        scores under a second key); and the counts scored_pixels, scored_frames, spatial_corr_skipped_frames.
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
        thresholds: Sequence[float] = METRIC_THRESHOLDS_MM_H,
        fss_scales: Sequence[int] = FSS_SCALES_PX,
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
        self._sizes = {"K": len(thresholds), "S": len(scales)}
        for name, dims in _STATE_SHAPES.items():
            shape = (self.n_leads, *(self._sizes[d] for d in dims))
            self.add_state(name, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def _check_shapes(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
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

    def _thresholds_in(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Thresholds `(K,)` such that `x >= thr` in `dtype` equals `float64(x) >= threshold`.

        A float32 field is compared in float32 (4x less traffic than float64); each
        threshold is rounded *up* to the smallest float32 not below it (0.1 ->
        0.100000001), which changes no comparison: no float32 value lies in between.
        """
        exact = torch.tensor(self.thresholds, dtype=torch.float64)
        if dtype == torch.float64:
            return exact.to(device)
        rounded = exact.to(dtype)
        up = torch.nextafter(rounded, torch.full_like(rounded, float("inf")))
        return torch.where(rounded.to(torch.float64) < exact, up, rounded).to(device)

    def update(self, pred_mm_h: torch.Tensor, target_mm_h: torch.Tensor, mask: torch.Tensor) -> None:
        """Accumulate sums for a batch; see the class docstring for shapes and units.

        Any float input dtype works (bf16/fp16 are widened to float32; float64 is kept).
        Frames are processed in chunks and their sums kept per frame; the states are only
        changed after every frame passed the checks, so a refused batch leaves no trace.
        """
        self._check_shapes(pred_mm_h, target_mm_h, mask)
        b, t, _, h, w = pred_mm_h.shape
        n_frames = b * t
        device = pred_mm_h.device
        wide = torch.float64 in (pred_mm_h.dtype, target_mm_h.dtype)
        compare_dtype = torch.float64 if wide else torch.float32
        thresholds = self._thresholds_in(compare_dtype, device)
        pad = max(self.fss_scales) // 2
        n_planes = 2 * len(self.thresholds) + 1
        # per-frame sums, frame index = sample * T + lead (row-major (B, T))
        per_frame = {
            name: torch.zeros((n_frames, *(self._sizes[d] for d in dims)), dtype=torch.float64, device=device)
            for name, dims in _STATE_SHAPES.items()
        }
        chunk = max(1, _CHUNK_ELEMENTS // (n_planes * (h + 2 * pad) * (w + 2 * pad)))
        pred_frames, target_frames, mask_frames = (x.reshape(n_frames, h, w) for x in (pred_mm_h, target_mm_h, mask))
        for start in range(0, n_frames, chunk):
            part = slice(start, min(start + chunk, n_frames))
            sums = {name: value[part] for name, value in per_frame.items()}
            self._accumulate_frames(
                pred_frames[part].to(compare_dtype),
                target_frames[part].to(compare_dtype),
                mask_frames[part] > 0.5,
                thresholds,
                sums,
            )
        for name, value in per_frame.items():
            getattr(self, name).add_(value.view(b, t, *value.shape[1:]).sum(0))

    def _accumulate_frames(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        scored: torch.Tensor,
        thresholds: torch.Tensor,
        sums: dict[str, torch.Tensor],
    ) -> None:
        """Add the sums of a chunk of frames into `sums` (float64 views `(N, ...)` of per-frame sums).

        pred, target: `(N, H, W)` mm/h in float32 (or float64 when an input was float64);
        scored: `(N, H, W)` bool; thresholds: `(K,)` in the dtype of pred (see `_thresholds_in`).
        """
        n, h, w = pred.shape
        k = thresholds.numel()
        f64 = torch.float64
        # continuous scores in float64: their sums must match a float64 reference to ~1e-12
        p = torch.where(scored, pred, 0).to(f64)
        t = torch.where(scored, target, 0).to(f64)
        sum_p, sum_t = p.flatten(1).sum(1), t.flatten(1).sum(1)
        # NaN/inf anywhere makes the frame sum non-finite, so a finite sum clears the frame
        # without a full isfinite pass; only a non-finite sum (or an overflow) is looked at closely.
        if not bool(torch.isfinite(sum_t).all()) and not bool(torch.isfinite(t).all()):
            raise ValueError("RadarMetrics.update: target_mm_h is NaN/inf at scored pixels; no-data pixels must be 0 in mask.")
        if not bool(torch.isfinite(sum_p).all()) and not bool(torch.isfinite(p).all()):
            raise ValueError("RadarMetrics.update: pred_mm_h is NaN/inf at scored pixels; the model output must be finite.")
        pad = max(self.fss_scales) // 2
        # float32 counts of 0/1 planes are exact while every (window) total stays below 2**24
        plane_dtype = torch.float32 if (h + 2 * pad) * (w + 2 * pad) < _FLOAT32_EXACT_INT else f64

        # planes: K forecast events, K observed events, scored; events only at scored pixels.
        # Zero-padded by `pad` so that row bands with their halo are plain views (FSS below).
        planes = torch.zeros((n, 2 * k + 1, h + 2 * pad, w + 2 * pad), dtype=plane_dtype, device=pred.device)
        inner = planes[:, :, pad : pad + h, pad : pad + w]
        thr = thresholds.view(1, k, 1, 1)
        torch.ge(torch.where(scored, pred, float("-inf"))[:, None], thr, out=inner[:, :k])
        torch.ge(torch.where(scored, target, float("-inf"))[:, None], thr, out=inner[:, k : 2 * k])
        inner[:, 2 * k] = scored
        flat = planes.flatten(2)  # the zero border adds nothing to the counts
        counts = flat.sum(2).to(f64)  # (N, 2K+1): forecast events, observed events, scored pixels
        n_fc, n_ob, n_scored = counts[:, :k], counts[:, k : 2 * k], counts[:, 2 * k]
        # 0/1 products summed in float32 are exact integers (< 2**24), as are the counts
        hits = _row_dots(flat[:, :k].reshape(n * k, -1), flat[:, k : 2 * k].reshape(n * k, -1)).view(n, k).to(f64)

        err = (p - t).flatten(1)
        sums["n_pixels"] += n_scored
        sums["sum_error"] += err.sum(1)
        sums["sum_sq_error"] += _row_dots(err, err)
        sums["sum_abs_error"] += err.abs_().sum(1)

        has = n_scored > 0
        hasf = has.to(f64)
        per_pixel = n_scored.clamp(min=1)
        mean_p = sum_p / per_pixel
        mean_t = sum_t / per_pixel
        sums["n_frames"] += hasf
        sums["sum_abs_mean_diff"] += (mean_t - mean_p).abs() * hasf
        sums["sum_mean_t"] += mean_t * hasf
        sums["sum_mean_p"] += mean_p * hasf
        sums["sum_mean_t2"] += mean_t * mean_t * hasf
        sums["sum_mean_p2"] += mean_p * mean_p * hasf
        sums["sum_mean_tp"] += mean_t * mean_p * hasf

        # pattern correlation from deviations (two-pass), as the reference computes it
        # p and t are not needed any more: reuse their memory for the deviations
        unscored = ~scored
        dp = p.sub_(mean_p.view(n, 1, 1)).masked_fill_(unscored, 0.0).flatten(1)
        dt = t.sub_(mean_t.view(n, 1, 1)).masked_fill_(unscored, 0.0).flatten(1)
        std_p = (_row_dots(dp, dp) / per_pixel).sqrt()
        std_t = (_row_dots(dt, dt) / per_pixel).sqrt()
        defined = (n_scored >= 2) & (std_p >= MIN_PATTERN_STD_MM_H) & (std_t >= MIN_PATTERN_STD_MM_H)
        cov = _row_dots(dp, dt) / per_pixel
        sums["sum_pattern_corr"] += torch.where(defined, cov / (std_p * std_t).clamp(min=1e-300), 0.0)
        sums["n_pattern_frames"] += defined.to(f64)
        sums["n_pattern_skipped"] += (has & ~defined).to(f64)

        sums["hits"] += hits
        sums["misses"] += n_ob - hits
        sums["false_alarms"] += n_fc - hits

        # FSS: with B the window sums of events and n_win that of scored pixels, the
        # fractions are B / n_win, so sum (Pf - Po)^2 = sum (Bf - Bo)^2 / n_win^2 over
        # scored pixels. Window sums run in narrow integers and their squares in float32,
        # both exact; only the final weighted sum runs in float64 (so the result equals
        # the float64 reference up to summation order). At scale 1 the sums reduce to
        # the contingency counts.
        big = [(j, s) for j, s in enumerate(self.fss_scales) if s > 1]
        for j, scale in enumerate(self.fss_scales):
            if scale == 1:
                sums["fss_num"][:, :, j] += (n_fc - hits) + (n_ob - hits)
                sums["fss_den"][:, :, j] += n_fc + n_ob
        if not big:
            return
        # Row bands keep every temporary at a few MB: cache-resident, and below the size
        # at which each allocation would be fresh (page-faulted) memory from the OS.
        big_scales = [s for _, s in big]
        window_dtype = _window_sum_dtype(max(big_scales))
        # squares of window sums (<= 2 scale^4) stay exact in float32 up to scale 53
        square_dtype = plane_dtype if 2 * max(big_scales) ** 4 < _FLOAT32_EXACT_INT else f64
        if pred.device.type == "cpu":
            band_elements = _BAND_ELEMENTS_PER_THREAD * torch.get_num_threads()
        else:
            band_elements = _BAND_ELEMENTS_GPU
        band = max(1, band_elements // (n * (2 * k + 1) * (w + 2 * pad)))
        for y0 in range(0, h, band):
            rows = min(band, h - y0)
            band_planes = planes[:, :, y0 : y0 + rows + 2 * pad].to(window_dtype)
            box = torch.empty((len(big), n, 2 * k + 1, rows, w), dtype=square_dtype, device=pred.device)
            for i, box_of_scale in enumerate(_box_sums_of_padded(band_planes, big_scales, pad)):
                box[i] = box_of_scale
            # every scored pixel is in its own window, so the window count is >= 1 wherever it is used
            inv_sq_count = box[:, :, 2 * k].to(f64).clamp_(min=1).pow_(-2)
            weight = torch.where(scored[None, :, y0 : y0 + rows], inv_sq_count, 0.0)
            fc_box, ob_box = box[:, :, :k], box[:, :, k : 2 * k]
            # per pixel: (Bf - Bo)^2 for the numerator, Bf^2 + Bo^2 for the denominator
            squares = torch.empty((len(big), n, 2 * k, rows, w), dtype=square_dtype, device=pred.device)
            torch.sub(fc_box, ob_box, out=squares[:, :, :k]).square_()
            torch.mul(fc_box, fc_box, out=squares[:, :, k:]).addcmul_(ob_box, ob_box)
            weighted = _weighted_row_sums(
                squares.view(len(big) * n, 2 * k, rows * w).to(f64), weight.view(len(big) * n, rows * w)
            ).view(len(big), n, 2 * k)
            for i, (j, _) in enumerate(big):
                sums["fss_num"][:, :, j] += weighted[i, :, :k]
                sums["fss_den"][:, :, j] += weighted[i, :, k:]

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
        """Flat dict of scores, overall and (n_leads > 1) `/lead{k}`; see the class docstring."""
        states = {name: getattr(self, name) for name in _STATE_SHAPES}
        result = self._scores({name: s.sum(0) for name, s in states.items()}, "")
        result["scored_pixels"] = states["n_pixels"].sum()
        result["scored_frames"] = states["n_frames"].sum()
        result["spatial_corr_skipped_frames"] = states["n_pattern_skipped"].sum()
        for lead in range(self.n_leads if self.n_leads > 1 else 0):
            result.update(self._scores({name: s[lead] for name, s in states.items()}, f"/lead{lead + 1}"))
        return result
