"""Tiles of a radar grid: the one tiling used by evaluation and by inference.

* `tile_starts` places tiles along one axis: a step of `tile - overlap`, the last tile
  shifted inward so it ends flush with the grid (every tile full size).
* Evaluation (`eval_tiles`, `tile_owners`): non-overlapping steps, so only the shifted edge
  tiles overlap their neighbours; each pixel is owned (scored) by the first tile covering it,
  so scores over tiles equal scores over the whole grid.
* Inference (`predict_tiled`): overlapping tiles blended with a linear-ramp weight that falls
  towards each tile edge, so seams vanish; weights and sums are accumulated in float64 so
  that a pointwise network gives bit-identical output tiled or not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import overload

import numpy as np
import torch
import torch.nn.functional as F

from nowcast_infill.errors import BadValueError

# (y0, x0, h, w): a tile's top-left pixel and size
Tile = tuple[int, int, int, int]


def tile_starts(length: int, tile: int, overlap: int = 0) -> list[int]:
    """Tile start offsets covering [0, length) with tiles of `tile`, last tile flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def eval_tiles(height: int, width: int, tile: int | None) -> list[Tile]:
    """(y0, x0, h, w) covering the frame; edge tiles are shifted inward so all are full size.

    `tile=None` is the whole frame as one tile.
    """
    if tile is None:
        return [(0, 0, height, width)]
    if tile > height or tile > width:
        raise BadValueError(
            f"eval_tile={tile} is larger than the frame ({height} x {width}); "
            "use data.eval_tile=null for full frames or a smaller tile."
        )
    return [(y0, x0, tile, tile) for y0 in tile_starts(height, tile) for x0 in tile_starts(width, tile)]


def tile_owners(height: int, width: int, tiles: Sequence[Tile]) -> np.ndarray:
    """(H, W) int32: the index of the first tile covering each pixel (its owner), -1 if none.

    The inward-shifted edge tiles of `eval_tiles` overlap their neighbours; a tile is scored
    only on the pixels it owns, so each pixel counts once and scores over tiles equal
    scores over the whole grid.
    """
    owners = np.full((height, width), -1, dtype=np.int32)
    for index, (y0, x0, h, w) in enumerate(tiles):
        block = owners[y0 : y0 + h, x0 : x0 + w]
        block[block < 0] = index
    return owners


def _ramp(size: int, overlap: int, dtype, device) -> torch.Tensor:
    """(size,) weight: rises linearly over `overlap` pixels at both ends, 1 inside, > 0 everywhere."""
    i = torch.arange(size, dtype=dtype, device=device)
    if overlap <= 0:
        return torch.ones(size, dtype=dtype, device=device)
    return torch.clamp(torch.minimum((i + 0.5) / overlap, (size - i - 0.5) / overlap), max=1.0)


@overload
def _pad(t: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor: ...


@overload
def _pad(t: None, pad_h: int, pad_w: int) -> None: ...


def _pad(t: torch.Tensor | None, pad_h: int, pad_w: int) -> torch.Tensor | None:
    if t is None or (pad_h == 0 and pad_w == 0):
        return t
    # Zero padding with a zero mask: padded pixels are "no data", which every consumer reads from the mask.
    return F.pad(t, (0, pad_w, 0, pad_h))


@torch.no_grad()
def predict_tiled(
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    x_mask: torch.Tensor,
    aux: torch.Tensor | None = None,
    aux_mask: torch.Tensor | None = None,
    tile: int = 256,
    overlap: int = 32,
    multiple: int = 1,
    batch_size: int = 4,
    needed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predict a full grid tile by tile.

    Args:
        fn: batched forward `fn(x, x_mask, aux, aux_mask) -> (B, T_out, 1, h, w)` taking
            `x`, `x_mask` `(B, T_in, C, h, w)` and `aux`, `aux_mask` `(B, T_in, A, h, w)` or None
            (the PConvUNet forward signature).
        x: `(T_in, C, H, W)` input, any units (normalised for a network).
        x_mask: `(T_in, C, H, W)` 0/1, 1 = observed.
        aux, aux_mask: `(T_in, A, H, W)` auxiliary fields on the radar grid, or None.
        tile: tile edge in pixels, a multiple of `multiple`.
        overlap: pixels shared by neighbouring tiles, blended; `0 <= overlap < tile`.
        multiple: the network needs h, w divisible by this (e.g. `2**depth` for a U-Net).
        batch_size: tiles per call of `fn` (bounds memory).
        needed: optional `(H, W)` bool, the pixels whose prediction is wanted (e.g. the holes
            of an archive frame). Only tiles containing one are computed; every tile covering
            a needed pixel contains it, so needed pixels get exactly the full-grid blend.

    Returns:
        `(T_out, 1, H, W)` in `fn`'s units and dtype, on `x`'s device; NaN outside `needed`
        when it is given.
    """
    if x.ndim != 4 or x_mask.shape != x.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_mask {tuple(x_mask.shape)} must both be (T_in, C, H, W).")
    if aux is not None and (aux.ndim != 4 or aux.shape[0] != x.shape[0] or aux.shape[-2:] != x.shape[-2:]):
        raise ValueError(f"aux {tuple(aux.shape)} must be (T_in, A, H, W) on the grid of x {tuple(x.shape)}.")
    if multiple < 1 or tile < multiple or tile % multiple:
        raise ValueError(f"tile={tile} must be a positive multiple of multiple={multiple}.")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap={overlap} must satisfy 0 <= overlap < tile={tile}.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")
    if aux is not None and aux_mask is None:
        aux_mask = torch.isfinite(aux).to(aux.dtype)

    height, width = x.shape[-2:]
    # A grid smaller than a tile is one tile, rounded up to what the network accepts.
    tile_h = tile if height >= tile else -(-height // multiple) * multiple
    tile_w = tile if width >= tile else -(-width // multiple) * multiple
    pad_h, pad_w = max(tile_h - height, 0), max(tile_w - width, 0)
    x, x_mask = _pad(x, pad_h, pad_w), _pad(x_mask, pad_h, pad_w)
    aux, aux_mask = _pad(aux, pad_h, pad_w), _pad(aux_mask, pad_h, pad_w)
    full_h, full_w = height + pad_h, width + pad_w

    windows = [(r, c) for r in tile_starts(full_h, tile_h, overlap) for c in tile_starts(full_w, tile_w, overlap)]
    if needed is not None:
        if needed.shape != (height, width):
            raise ValueError(f"needed {tuple(needed.shape)} must be (H, W) = {(height, width)}.")
        needed = _pad(needed.to(device=x.device, dtype=torch.uint8)[None], pad_h, pad_w)[0].bool()
        windows = [(r, c) for r, c in windows if bool(needed[r : r + tile_h, c : c + tile_w].any())]
        if not windows:
            raise ValueError("needed has no True pixel: there is nothing to predict.")
    acc_dtype = torch.float64 if x.device.type != "mps" else torch.float32
    weight = _ramp(tile_h, overlap, acc_dtype, x.device)[:, None] * _ramp(tile_w, overlap, acc_dtype, x.device)[None, :]
    total: torch.Tensor | None = None
    weight_sum = torch.zeros(full_h, full_w, dtype=acc_dtype, device=x.device)
    out_dtype = None
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]

        def cut(t, chunk=chunk):
            return None if t is None else torch.stack([t[..., r : r + tile_h, c : c + tile_w] for r, c in chunk])

        pred = fn(cut(x), cut(x_mask), cut(aux), cut(aux_mask))
        if pred.ndim != 5 or pred.shape[0] != len(chunk) or pred.shape[-2:] != (tile_h, tile_w):
            raise ValueError(
                f"fn returned shape {tuple(pred.shape)}; expected (B={len(chunk)}, T_out, 1, {tile_h}, {tile_w})."
            )
        if total is None:
            out_dtype = pred.dtype
            total = torch.zeros(pred.shape[1], pred.shape[2], full_h, full_w, dtype=acc_dtype, device=x.device)
        for (r, c), p in zip(chunk, pred, strict=True):
            total[..., r : r + tile_h, c : c + tile_w] += p.to(acc_dtype) * weight
            weight_sum[r : r + tile_h, c : c + tile_w] += weight
    assert total is not None  # windows is never empty (checked above when `needed` filters it)
    out = total / weight_sum
    if needed is not None:
        out = out.masked_fill(~needed, float("nan"))
    return out[..., :height, :width].to(out_dtype)
