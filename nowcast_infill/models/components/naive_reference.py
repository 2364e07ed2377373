"""Naive partial convolution: the full mask convolution of the reference implementations.

Kept as the ground truth that ``PartialConv2d`` is tested against, and as the
"before" of ``experiments/bench_model.py``. It expands the mask to one channel per
input channel, convolves it with an all-ones ``(C_out, C_in, k, k)`` kernel (as much
compute as the data convolution's forward pass), multiplies ``x`` by the mask in every
layer and returns a ``C_out``-channel mask, so a network built from it carries
full-width masks through upsampling, concatenation and normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nowcast_infill.models.components.partial_conv import PartialConv2d, resolve_mask_groups


class NaivePartialConv2d(PartialConv2d):
    """Same parameters and rule as :class:`PartialConv2d`, computed the expensive way.

    ``forward(x (B, C_in, H, W), mask (B, G, H, W)) -> (out (B, C_out, H', W'),
    new_mask (B, C_out, H', W') float32 0/1)``; ``input_is_masked`` is ignored
    (the reference always multiplies).
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        groups = resolve_mask_groups(self.in_channels, self.mask_groups, mask.shape[1], type(self).__name__)
        if mask.shape[1] != self.in_channels:
            mask = torch.repeat_interleave(mask, torch.tensor(groups, device=mask.device), dim=1)
        mask = mask.to(x.dtype)
        with torch.no_grad():
            ones = torch.ones_like(self.weight)
            count = F.conv2d(mask, ones, None, self.stride, self.padding, self.dilation)
            new_mask = (count > 0).to(x.dtype)
            scale = self.window_size / count.clamp(min=1.0) * new_mask
        raw = F.conv2d(x * mask, self.weight, None, self.stride, self.padding, self.dilation)
        out = raw * scale
        if self.bias is not None:
            out = (out + self.bias.view(1, -1, 1, 1)) * new_mask
        return out, new_mask.float()
