"""Normalisation that sees only valid pixels, for feature maps that are 0 outside their mask."""

from __future__ import annotations

import torch
from torch import nn


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose statistics use only valid pixels; the output is 0 outside the mask.

    ``forward(x (B, C, H, W), mask (B, 1 or C, H, W) 0/1) -> (B, C, H, W)``. Statistics are
    computed in float32 (safe under bf16 autocast). A batch with no valid pixel in a channel
    leaves that channel's running statistics unchanged.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        xf = x.float()
        m = mask.float()
        if self.training or not self.track_running_stats:
            count = m.sum(dim=(0, 2, 3)).expand(self.num_features)
            denom = count.clamp(min=1.0)
            mean = (xf * m).sum(dim=(0, 2, 3)) / denom
            var = ((xf - mean.view(1, -1, 1, 1)).square() * m).sum(dim=(0, 2, 3)) / denom
            if self.training and self.track_running_stats:
                # nn.BatchNorm2d allocates these buffers whenever track_running_stats is set
                assert self.running_mean is not None and self.running_var is not None
                assert self.num_batches_tracked is not None
                with torch.no_grad():
                    unbiased = var * count / (count - 1).clamp(min=1.0)
                    seen = count > 1
                    momentum = 0.1 if self.momentum is None else self.momentum
                    self.running_mean.copy_(
                        torch.where(seen, torch.lerp(self.running_mean, mean, momentum), self.running_mean)
                    )
                    self.running_var.copy_(
                        torch.where(seen, torch.lerp(self.running_var, unbiased, momentum), self.running_var)
                    )
                    self.num_batches_tracked.add_(1)
        else:
            assert self.running_mean is not None and self.running_var is not None
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale = scale * self.weight
            shift = shift * self.weight + self.bias
        out = (xf * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)) * m
        return out.to(x.dtype)


class MaskedGroupNorm(nn.GroupNorm):
    """Group norm over valid pixels only, per sample; the output is 0 outside the mask.

    Per sample, per group of ``num_channels / num_groups`` channels, the mean and variance
    are taken over the valid pixels of those channels. No running statistics, so training
    and evaluation compute the same thing, whatever the batch size and whatever step of a
    recurrence it is applied at (a batch norm in a recurrent cell would average statistics of
    steps whose inputs differ, e.g. the first step, which has no hidden state yet).

    ``forward(x (B, C, H, W), mask (B, 1 or C, H, W) 0/1) -> (B, C, H, W)``, computed in
    float32. A sample with no valid pixel in a group gives 0 there.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, c, h, w = x.shape
        g = self.num_groups
        xf = x.float().view(b, g, c // g, h, w)
        m = mask.float().expand(b, c, h, w).reshape(b, g, c // g, h, w)
        denom = m.sum(dim=(2, 3, 4), keepdim=True).clamp(min=1.0)
        mean = (xf * m).sum(dim=(2, 3, 4), keepdim=True) / denom
        var = ((xf - mean).square() * m).sum(dim=(2, 3, 4), keepdim=True) / denom
        out = ((xf - mean) * torch.rsqrt(var + self.eps)).view(b, c, h, w)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return (out * mask.float()).to(x.dtype)
