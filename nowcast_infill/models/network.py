"""The network contract: what `RadarModule`, tiled evaluation and checkpoint inference rely on.

A network is any `torch.nn.Module` built as

    net = NetClass(in_frames=T_in, out_frames=T_out, aux_channels=A, task="infill"|"nowcast",
                   [prior_frames=T_out when model.prior is set], **the model.net options)

that satisfies `RadarNetwork` below. `PConvUNet` (models/components/unet.py) is the package's
one network; a new network is one module with such a class plus one `conf/model/<name>.yaml`
whose `net._target_` points at it (docs/architecture.md, "add a network").
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class RadarNetwork(Protocol):
    """A radar network as the framework uses it.

    Attributes:
        in_frames: `T_in`, input frames per sample.
        out_frames: `T_out`, output frames per sample.
        aux_channels: `A`, auxiliary fields per input frame (0 = none).
        size_multiple: `H` and `W` of the input must be multiples of this (pixels; e.g.
            `2**depth` for a U-Net). Tiled evaluation and inference cut tiles of such sizes.
        output_floor: 0-d buffer, the lowest value the network outputs (normalised units of
            0 mm/h); saved with the weights, so a checkpoint's floor can be checked against a
            normaliser.
    """

    in_frames: int
    out_frames: int
    aux_channels: int
    output_floor: torch.Tensor

    @property
    def size_multiple(self) -> int: ...

    def set_output_floor(self, value: float) -> None:
        """Set `output_floor` (normalised units), e.g. to `Normalizer.floor`."""
        ...

    def __call__(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        aux: torch.Tensor | None = None,
        aux_mask: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
        prior_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Inputs and output, all in normalised units:

        x: `(B, T_in, 1, H, W)` radar; values where `x_mask` is 0 are ignored (may be NaN).
        x_mask: `(B, T_in, 1, H, W)` 0/1, 1 = observed and valid.
        aux: `(B, T_in, A, h, w)` z-scored auxiliary fields or None (A = 0); aux_mask: same shape.
        prior: `(B, T_out, 1, H, W)` a classical method's answer (only with `prior_frames`);
            prior_mask: same shape, 1 where it has a value.
        returns: `(B, T_out, 1, H, W)`, `>= output_floor`.
        """
        ...


def check_network(net: object, where: str = "model.net") -> RadarNetwork:
    """`net` when it satisfies `RadarNetwork`, else a TypeError naming the missing members."""
    missing = [
        name
        for name in ("in_frames", "out_frames", "aux_channels", "output_floor", "size_multiple", "set_output_floor")
        if not hasattr(net, name)
    ]
    if missing or not callable(net):
        raise TypeError(
            f"{where}: {type(net).__name__} does not satisfy the network contract "
            f"(nowcast_infill/models/network.py RadarNetwork); missing: {', '.join(missing) or '__call__'}."
        )
    return net  # type: ignore[return-value]


__all__ = ["RadarNetwork", "check_network"]
