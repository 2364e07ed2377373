"""Exact window sums and row reductions behind `RadarMetrics` (CPU and CUDA, no numpy round trip).

The FSS window sums of all event planes and all scales share one separable pass of shifted
additions in narrow integers (exact: a window of 0/1 values sums to <= scale^2); the sums
of float64 per-pixel terms are BLAS dot products. `python experiments/bench_metrics.py`
times `RadarMetrics` against the numpy reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def window_sums_along(values: torch.Tensor, dim: int, scales: Sequence[int], pad: int) -> list[torch.Tensor]:
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
        assert total is not None  # an odd scale has the 1 bit, so at least the width-1 block was added
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
    return box_sums_of_padded(torch.nn.functional.pad(values, (pad, pad, pad, pad)), scales, pad)


def box_sums_of_padded(padded: torch.Tensor, scales: Sequence[int], pad: int) -> list[torch.Tensor]:
    """`box_sums` of a field already zero-padded by `pad` >= max(scales) // 2 on all four sides.

    padded: `(..., R + 2 pad, C + 2 pad)` -> one `(..., R, C)` tensor per scale. Row bands of a
    larger field can be passed as views that include `pad` halo rows from their neighbours.
    """
    out = []
    for scale, along_w in zip(scales, window_sums_along(padded, -1, scales, pad), strict=True):
        # along_w still has `pad` halo rows on each side; keep the ones this scale reaches
        extra = pad - scale // 2
        rows = along_w.narrow(-2, extra, along_w.shape[-2] - 2 * extra)
        out.append(window_sums_along(rows, -2, [scale], scale // 2)[0])
    return out


def box_sum(values: torch.Tensor, scale: int) -> torch.Tensor:
    """Sum over the `scale` x `scale` window centred on each pixel, zero outside the domain.

    values: `(..., H, W)` -> `(..., H, W)`; see `box_sums` (exact integer sums on 0/1 inputs).
    """
    return box_sums(values, [scale])[0]


def window_sum_dtype(max_scale: int) -> torch.dtype:
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


def weighted_row_sums(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`(B, R, P) x (B, P) -> (B, R)`: sum over P of values * weight, float64.

    One matrix-vector product per batch entry: on CPU a BLAS gemv is several times
    faster than `bmm` with a single column; many small batches go through `bmm`.
    """
    if values.shape[0] <= 16:
        return torch.stack([torch.mv(v, w) for v, w in zip(values, weight, strict=True)])
    return torch.bmm(values, weight.unsqueeze(2))[..., 0]


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`(R, P), (R, P) -> (R,)`: sum over P of a * b, without a full-size temporary.

    A few long rows go through BLAS dot products; many short rows through one product
    and sum (there the temporary is small and the per-call overhead dominates).
    """
    if a.shape[0] <= 64:
        return torch.stack([torch.dot(x, y) for x, y in zip(a, b, strict=True)])
    return (a * b).sum(1)


def ratio_or_nan(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, NaN where den == 0 (the score is undefined there, not 0)."""
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.full_like(num, float("nan")))


__all__ = [
    "box_sum",
    "box_sums",
    "box_sums_of_padded",
    "ratio_or_nan",
    "row_dots",
    "weighted_row_sums",
    "window_sum_dtype",
    "window_sums_along",
]
