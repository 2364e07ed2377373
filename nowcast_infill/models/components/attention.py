"""Auxiliary-field encoder and CBAM-style attention fused into the U-Net skip connections.

Auxiliary fields (wind, temperature, ...) are encoded by their own partial-convolution
encoder whose levels match the radar encoder's resolutions. At each level the auxiliary
features decide *which* radar channels matter (channel attention: shared MLP over the
masked average and maximum of the auxiliary features) and the re-weighted radar features
decide *where* (spatial attention: a 7x7 partial convolution over their channel mean and
maximum), as in CBAM (Woo et al. 2018) but with the channel weights driven by the
auxiliary fields. Both weights multiply the radar skip features, so pixels outside the
radar mask stay 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nowcast_infill.models.components.partial_conv import PartialConv2d


def resize_to_grid(
    values: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear resize of masked fields that never mixes in missing values.

    ``values``, ``mask``: ``(B, C, h, w)`` (units kept), mask 0/1. Returns ``(B, C, H, W)``
    values, 0 where the returned 0/1 mask is 0. The value is the mask-weighted bilinear
    average (normalised convolution); a target pixel is valid when any valid source
    pixel contributes to it.
    """
    if tuple(values.shape[-2:]) == tuple(size):
        return values, mask
    mask = mask.to(values.dtype)
    weighted = F.interpolate(values * mask, size=size, mode="bilinear", align_corners=False)
    weight = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    new_mask = (weight > 1e-6).to(values.dtype)
    return weighted / weight.clamp(min=1e-6) * new_mask, new_mask


class AuxEncoder(nn.Module):
    """Stride-2 partial-convolution encoder for auxiliary fields.

    Args:
        in_channels: auxiliary input channels (``T_in * A``: frames stacked as channels,
            one mask channel each).
        level_channels: output channels per level; level ``i`` (1-based) is at ``H / 2**i``.
        conv_cls: partial convolution class.

    ``forward(aux (B, C_a, h, w), aux_mask (B, C_a, h, w), grid (H, W)) ->
    list of (features (B, C_i, H/2**i, W/2**i), mask)`` for ``i = 1..len(level_channels)``.
    The fields are first resized to the radar ``grid`` when their shape differs.
    """

    def __init__(
        self, in_channels: int, level_channels: Sequence[int], conv_cls: type[PartialConv2d] = PartialConv2d
    ) -> None:
        super().__init__()
        widths = (in_channels, *level_channels)
        self.layers = nn.ModuleList(
            conv_cls(
                widths[i],
                widths[i + 1],
                3,
                stride=2,
                mask_groups=(1,) * in_channels if i == 0 else None,
                input_is_masked=True,
            )
            for i in range(len(level_channels))
        )

    def forward(
        self, aux: torch.Tensor, aux_mask: torch.Tensor, grid: tuple[int, int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        feat, mask = resize_to_grid(aux, aux_mask, grid)
        levels = []
        for layer in self.layers:
            feat, mask = layer(feat, mask)
            feat = F.relu(feat)
            levels.append((feat, mask))
        return levels


def masked_channel_stats(feat: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel average and maximum over valid pixels: ``(B, C)`` each (0 when none valid).

    feat: ``(B, C, H, W)``; mask: ``(B, 1 or C, H, W)`` 0/1.
    """
    mask = mask.to(feat.dtype)
    count = mask.sum(dim=(2, 3)).clamp(min=1.0)
    avg = (feat * mask).sum(dim=(2, 3)) / count
    hidden = torch.finfo(feat.dtype).min
    peak = torch.where(mask > 0, feat, torch.full_like(feat, hidden)).amax(dim=(2, 3))
    peak = torch.where(peak == hidden, torch.zeros_like(peak), peak)
    return avg, peak


class AuxChannelSpatialAttention(nn.Module):
    """CBAM-style attention on radar skip features driven by auxiliary features.

    Args:
        channels: radar feature channels ``C``.
        aux_channels: auxiliary feature channels ``C_a`` at the same level.
        reduction: hidden width of the channel MLP is ``max(C // reduction, 4)``.
        spatial_kernel: kernel of the spatial-attention partial convolution.

    ``forward(feat (B, C, H, W), feat_mask (B, 1 or C, H, W), aux_feat (B, C_a, H, W),
    aux_mask) -> (B, C, H, W)`` = ``feat * channel_weight (B, C, 1, 1) * spatial_weight
    (B, 1, H, W)``, weights in (0, 1).
    """

    def __init__(
        self,
        channels: int,
        aux_channels: int,
        reduction: int = 4,
        spatial_kernel: int = 7,
        conv_cls: type[PartialConv2d] = PartialConv2d,
    ) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.channel_mlp = nn.Sequential(nn.Linear(aux_channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.spatial = conv_cls(2, 1, spatial_kernel, input_is_masked=True)

    def forward(
        self, feat: torch.Tensor, feat_mask: torch.Tensor, aux_feat: torch.Tensor, aux_mask: torch.Tensor
    ) -> torch.Tensor:
        avg, peak = masked_channel_stats(aux_feat, aux_mask)
        channel_weight = torch.sigmoid(self.channel_mlp(avg) + self.channel_mlp(peak))
        feat = feat * channel_weight.to(feat.dtype)[:, :, None, None]
        maps = torch.cat([feat.mean(dim=1, keepdim=True), feat.amax(dim=1, keepdim=True)], dim=1)
        spatial_logit, _ = self.spatial(maps, feat_mask.amax(dim=1, keepdim=True))
        return feat * torch.sigmoid(spatial_logit).to(feat.dtype)
