"""RadarMetrics: continuous, categorical and neighbourhood scores as a torchmetrics Metric.

Every state is a float64 sum or count with `dist_reduce_fx="sum"`, kept per lead time,
so the scores over several DDP ranks are those over one process holding all samples
(up to float64 summation order). The scores come from the registered score pieces
(metrics/pieces.py, registry kind `metric`): a new score is one `ScorePiece` subclass and
one `register("metric", name, cls)` line. The definitions are those of `scores.py`, which
the tests use as the reference.

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

from nowcast_infill.metrics.pieces import ScoredFrames, ScorePiece, threshold_tag
from nowcast_infill.metrics.scores import format_threshold
from nowcast_infill.metrics.window_sums import box_sum, box_sums
from nowcast_infill.registry import get_method, method_names
from nowcast_infill.study import FSS_SCALES_PX, METRIC_THRESHOLDS_MM_H

# Frames per chunk are chosen so that one chunk's event planes stay near this many
# elements: large enough that per-op overhead is negligible, small enough that the
# working set (a few float32 copies) stays well below a gigabyte on full radar grids.
CHUNK_ELEMENTS = 2**23


def score_pieces(names: Sequence[str] | None = None) -> list[ScorePiece]:
    """The registered score pieces `names` (None = all), in result order (`position`, name)."""
    chosen = method_names("metric") if names is None else list(names)
    pieces = [(name, get_method("metric", name)) for name in chosen]
    return [piece for _, piece in sorted(pieces, key=lambda item: (item[1].position, item[0]))]


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
        scores: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        thresholds = [float(t) for t in thresholds]
        if not thresholds or any(not torch.isfinite(torch.tensor(t)) for t in thresholds):
            raise ValueError(
                f"RadarMetrics(thresholds=...) must be a non-empty list of finite mm/h values, got {thresholds}."
            )
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
        self.pieces = score_pieces(scores)
        # state name -> dims after the lead axis, over every piece
        self.state_dims: dict[str, tuple[str, ...]] = {}
        for piece in self.pieces:
            for name, dims in piece.states.items():
                if name in self.state_dims:
                    raise ValueError(f"RadarMetrics: two score pieces declare the state {name!r}; rename one.")
                self.state_dims[name] = tuple(dims)
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
            for name, dims in self.state_dims.items()
        }
        chunk = max(1, CHUNK_ELEMENTS // (n_planes * (h + 2 * pad) * (w + 2 * pad)))
        pred_frames, target_frames, mask_frames = (x.reshape(n_frames, h, w) for x in (pred_mm_h, target_mm_h, mask))
        for start in range(0, n_frames, chunk):
            part = slice(start, min(start + chunk, n_frames))
            sums = {name: value[part] for name, value in per_frame.items()}
            frames = ScoredFrames(
                pred_frames[part].to(compare_dtype),
                target_frames[part].to(compare_dtype),
                mask_frames[part] > 0.5,
                thresholds,
                self.fss_scales,
            )
            for piece in self.pieces:
                piece.accumulate(frames, sums)
        for name, value in per_frame.items():
            getattr(self, name).add_(value.view(b, t, *value.shape[1:]).sum(0))

    def _scores(self, state: dict[str, torch.Tensor], suffix: str) -> dict[str, torch.Tensor]:
        """Scores of every piece from summed states (one lead or all leads); names end with `suffix`.

        Order: scores without a threshold first, then per threshold (ascending as given) every
        piece's scores at it, each group in piece order.
        """
        out: dict[str, torch.Tensor] = {}
        for piece in self.pieces:
            out.update(piece.scores({name: state[name] for name in piece.states}, self.thresholds, self.fss_scales))
        tags = [threshold_tag(t) for t in self.thresholds]

        def group(name: str) -> int:
            return next((1 + i for i, tag in enumerate(tags) if tag in name), 0)

        return {name + suffix: out[name] for name in sorted(out, key=group)}

    def compute(self) -> dict[str, torch.Tensor]:
        """Flat dict of scores, overall and (n_leads > 1) `/lead{k}`; see the class docstring."""
        states = {name: getattr(self, name) for name in self.state_dims}
        result = self._scores({name: s.sum(0) for name, s in states.items()}, "")
        for piece in self.pieces:
            result.update(piece.totals({name: states[name] for name in piece.states}))
        for lead in range(self.n_leads if self.n_leads > 1 else 0):
            result.update(self._scores({name: s[lead] for name, s in states.items()}, f"/lead{lead + 1}"))
        return result


__all__ = ["CHUNK_ELEMENTS", "RadarMetrics", "box_sum", "box_sums", "score_pieces"]
