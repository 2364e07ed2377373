"""Partial convolution (Liu et al. 2018) with a single-channel mask path.

The rule, for one output pixel whose k x k window (after padding, stride,
dilation) covers the input channels ``c = 1..C_in``:

* ``valid_count = sum over channels c of sum over the window of mask_c``
* ``window_size = C_in * k_h * k_w``
* ``out = conv(x * mask, W) * window_size / valid_count + b`` if ``valid_count > 0``
* ``out = 0`` and ``new_mask = 0`` if ``valid_count == 0``; otherwise ``new_mask = 1``.

Worked example (checked literally by ``tests/test_partial_conv.py``): one input
channel, a 3x3 all-ones kernel, bias 0.5, and a 3x3 window of which 4 of the 9
pixels are valid with value 1 (the 5 others hold 100, which is never seen):
``conv(x * mask) = 4``, scale ``9 / 4``, so ``out = 4 * 9/4 + 0.5 = 9.5`` and
``new_mask = 1``. The same window with 0 of 9 valid gives ``out = 0``, ``new_mask = 0``.

Why a cheap mask path works: when the channels of the input share masks in a few
groups (one mask for a plain feature map, two for a decoder input that concatenates
upsampled features with a skip connection, one per frame for stacked input frames),
``valid_count = sum over groups g of n_channels_g * windowsum(mask_g)``, which is
one convolution of the ``G``-channel mask with a ``(1, G, k, k)`` kernel holding
``n_channels_g``: a single-channel output, instead of the reference implementation's
``(C_out, C_in, k, k)`` convolution of a ``C_in``-channel mask, whose ``C_out``
output channels are all identical. The mask path carries no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {value!r}")
    return pair


def resolve_mask_groups(
    in_channels: int, mask_groups: Sequence[int] | None, mask_channels: int, layer: str
) -> tuple[int, ...]:
    """Number of input channels each of the ``mask_channels`` mask channels covers.

    A mask has either one channel per declared group (``mask_groups``, default one
    group spanning all ``in_channels``) or one channel per input channel.
    """
    groups = (in_channels,) if mask_groups is None else tuple(int(g) for g in mask_groups)
    if mask_channels == len(groups):
        return groups
    if mask_channels == in_channels:
        return (1,) * in_channels
    raise ValueError(
        f"{layer}: mask has {mask_channels} channels but this layer expects {len(groups)} "
        f"(one per mask group {groups}) or {in_channels} (one per input channel); "
        "pass masks in the layout the layer was built for."
    )


class PartialConv2d(nn.Conv2d):
    """Partial 2-D convolution; see the module docstring for the exact rule.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, bias: as ``nn.Conv2d``.
        padding: default ``dilation * (k - 1) // 2`` ("same" for stride 1).
        mask_groups: sizes of the channel groups sharing one mask channel, summing to
            ``in_channels``; e.g. ``(c_up, c_skip)`` for a decoder input. Default: one group.
        input_is_masked: the caller guarantees ``x`` is already 0 wherever its mask is 0
            (true inside a network of partial convolutions, whose outputs are 0 outside
            their mask), so the ``x * mask`` product is skipped. Gradients with respect to
            the weights and to upstream layers are unchanged because the upstream layer
            already multiplied by its mask; only ``d out / d x`` at hidden pixels differs.

    ``forward(x, mask) -> (out, new_mask)``:
        x: ``(B, C_in, H, W)`` features (any units).
        mask: ``(B, G, H, W)`` 0/1 with ``G = len(mask_groups)`` or ``G = C_in``.
        out: ``(B, C_out, H', W')``, 0 where ``new_mask`` is 0, in ``x``'s dtype.
        new_mask: ``(B, 1, H', W')`` float32 0/1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        dilation: int | Sequence[int] = 1,
        bias: bool = True,
        mask_groups: Sequence[int] | None = None,
        input_is_masked: bool = False,
    ) -> None:
        kernel = _pair(kernel_size)
        dil = _pair(dilation)
        pad = (dil[0] * (kernel[0] - 1) // 2, dil[1] * (kernel[1] - 1) // 2) if padding is None else _pair(padding)
        super().__init__(in_channels, out_channels, kernel, stride=_pair(stride), padding=pad, dilation=dil, bias=bias)
        groups = (in_channels,) if mask_groups is None else tuple(int(g) for g in mask_groups)
        if sum(groups) != in_channels or any(g <= 0 for g in groups):
            raise ValueError(
                f"PartialConv2d: mask_groups {groups} must be positive and sum to in_channels={in_channels}."
            )
        self.mask_groups = groups
        self.input_is_masked = input_is_masked
        self.window_size = float(in_channels * kernel[0] * kernel[1])

    def valid_count(self, mask: torch.Tensor) -> torch.Tensor:
        """Valid input pixels per output window, summed over channels: ``(B, 1, H', W')`` float32."""
        groups = resolve_mask_groups(self.in_channels, self.mask_groups, mask.shape[1], type(self).__name__)
        kernel = torch.tensor(groups, dtype=torch.float32, device=mask.device).view(1, -1, 1, 1)
        kernel = kernel.expand(1, len(groups), *self.kernel_size)
        # Counts reach C_in*k*k (thousands): bf16 would round them, so the mask path stays float32.
        with torch.autocast(device_type=mask.device.type, enabled=False):
            return F.conv2d(mask.float(), kernel, None, self.stride, self.padding, self.dilation)

    # The override takes the mask too (nn.Conv2d.forward takes one input): the point of a partial conv.
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        with torch.no_grad():
            count = self.valid_count(mask)
            new_mask = (count > 0).float()
            # clamp(min=1) is exact for 0/1 masks and keeps empty windows finite before masking.
            scale = self.window_size / count.clamp(min=1.0) * new_mask
        if not self.input_is_masked:
            groups = resolve_mask_groups(self.in_channels, self.mask_groups, mask.shape[1], type(self).__name__)
            per_channel = (
                mask
                if len(groups) in (1, self.in_channels)
                else torch.repeat_interleave(mask, torch.tensor(groups, device=mask.device), dim=1)
            )
            x = x * per_channel.to(x.dtype)
        raw = F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation)
        # conv2d's backward needs only its inputs, so its output may be rescaled in place:
        # one pass for the re-normalisation, one for the masked bias.
        out = raw.mul_(scale.to(raw.dtype))
        if self.bias is not None:
            out = out.addcmul_(self.bias.view(1, -1, 1, 1).to(raw.dtype), new_mask.to(raw.dtype))
        return out, new_mask

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask_groups={self.mask_groups}, input_is_masked={self.input_is_masked}"
