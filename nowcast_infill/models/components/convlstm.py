"""Convolutional LSTM whose gates are partial convolutions.

Design (used by ``PConvUNet(lstm=True)``):

* Cell: the four gates come from one partial convolution of ``[x_t, h_{t-1}]`` with two
  mask groups (the input's mask, the hidden state's mask), so a hole in ``x_t`` is filled
  from the memory and the neighbourhood instead of being read as rain = 0. The new
  hidden/cell mask is the gate convolution's updated mask; ``h`` and ``c`` are 0 outside
  it, which keeps the invariant of every partial-convolution feature map.
* Encoder: at every U-Net level the frames are first convolved one by one (time folded
  into the batch), then a :class:`PartialConvLSTM` runs over the ``T_in`` frames. Its
  final state is the level's skip connection and seeds the decoder's cell at the same
  resolution.
* Frame order: the encoder reads the frames so that the *anchor* frame comes last: the
  newest past frame for nowcasting, the centre (target) frame for infilling, whose
  context frames are read outside-in (farthest first), so the final state has seen all
  context and the target's own observed pixels most recently. See :func:`anchor_order`.
* Decoder: ``T_out`` steps; at each step every decoder level's cell takes the
  upsampled output of the level below concatenated with the skip connection, and
  carries its state to the next step, so successive lead times differ through the
  recurrent state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from nowcast_infill.models.components.norm import MaskedGroupNorm
from nowcast_infill.models.components.partial_conv import PartialConv2d

# Initial forget-gate bias (Gers et al. 2000; Jozefowicz et al. 2015): the cell starts by
# keeping its memory instead of halving it at every step.
FORGET_BIAS = 1.0


class LSTMState(NamedTuple):
    """Hidden state ``h``, cell state ``c`` (both ``(B, C_h, H, W)``, 0 outside ``mask``) and
    their validity ``mask`` (``(B, 1, H, W)`` float 0/1, or ``(B, C_h, H, W)`` with the naive
    reference convolution)."""

    h: torch.Tensor
    c: torch.Tensor
    mask: torch.Tensor


def anchor_order(n_frames: int, anchor: int) -> list[int]:
    """Frame indices in the order the encoder reads them, ``anchor`` last.

    Frames are sorted by decreasing distance to ``anchor`` (ties: earlier frame first):
    ``anchor_order(5, 2) == [0, 4, 1, 3, 2]``; ``anchor_order(4, 3) == [0, 1, 2, 3]``.
    """
    if not 0 <= anchor < n_frames:
        raise ValueError(f"anchor frame {anchor} is outside 0..{n_frames - 1}")
    return sorted(range(n_frames), key=lambda t: (-abs(t - anchor), t))


class PartialConvLSTMCell(nn.Module):
    """One ConvLSTM step with partial-convolution gates.

    Args:
        input_channels: channels of ``x_t``.
        hidden_channels: channels of ``h`` and ``c``.
        kernel_size: gate convolution kernel.
        input_mask_groups: mask groups of ``x_t`` (see ``PartialConv2d.mask_groups``).
        conv_cls: the partial convolution class (the naive reference for tests/benchmarks).
        gate_norm: a :class:`MaskedGroupNorm` of the gate pre-activations (one group per
            gate, statistics over valid pixels of each sample). The partial convolution
            rescales each window by up to ``window_size / valid_count`` and ``[x, h]`` mixes
            features of different scales, so without it the gates saturate (|h| -> 1
            everywhere) and the gradient through them dies; it is the LSTM counterpart of the
            batch norm after every convolution of the plain U-Net (layer-normalised LSTMs,
            Ba et al. 2016, normalise per sample for the same reason).

    ``forward(x (B, C_x, H, W), x_mask (B, G_x, H, W), state: LSTMState | None) -> LSTMState``.
    """

    def __init__(
        self,
        input_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        input_mask_groups: Sequence[int] | None = None,
        conv_cls: type[PartialConv2d] = PartialConv2d,
        gate_norm: bool = True,
    ) -> None:
        super().__init__()
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        x_groups = (input_channels,) if input_mask_groups is None else tuple(input_mask_groups)
        self.gates = conv_cls(
            input_channels + hidden_channels,
            4 * hidden_channels,
            kernel_size,
            mask_groups=(*x_groups, hidden_channels),
            input_is_masked=True,
            bias=not gate_norm,  # the norm's shift replaces the bias
        )
        self.gate_norm = MaskedGroupNorm(4, 4 * hidden_channels) if gate_norm else None
        forget = slice(hidden_channels, 2 * hidden_channels)
        with torch.no_grad():
            shift = self.gate_norm.bias if self.gate_norm is not None else self.gates.bias
            assert shift is not None  # the conv has a bias exactly when there is no gate norm
            shift[forget] = FORGET_BIAS

    def initial_state(self, x: torch.Tensor, x_mask: torch.Tensor) -> LSTMState:
        """Empty state (nothing valid). Its mask follows the layout of ``x_mask``: one channel
        per hidden channel when ``x_mask`` has one channel per input channel, else one channel."""
        b, _, h, w = x.shape
        zeros = x.new_zeros(b, self.hidden_channels, h, w)
        mask_channels = self.hidden_channels if x_mask.shape[1] == self.input_channels else 1
        return LSTMState(zeros, zeros, x_mask.new_zeros(b, mask_channels, h, w, dtype=torch.float32))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, state: LSTMState | None = None) -> LSTMState:
        if state is None:
            state = self.initial_state(x, x_mask)
        h_prev = state.h.to(x.dtype)
        gates, mask = self.gates(torch.cat([x, h_prev], dim=1), torch.cat([x_mask.float(), state.mask], dim=1))
        if self.gate_norm is not None:
            gates = self.gate_norm(gates, mask)
        in_gate, forget_gate, out_gate, candidate = gates.chunk(4, dim=1)
        keep = mask.to(gates.dtype) if mask.shape[1] == 1 else mask[:, : self.hidden_channels].to(gates.dtype)
        c = (
            torch.sigmoid(forget_gate) * state.c.to(gates.dtype) + torch.sigmoid(in_gate) * torch.tanh(candidate)
        ) * keep
        h = torch.sigmoid(out_gate) * torch.tanh(c)
        return LSTMState(h, c, mask if mask.shape[1] == 1 else mask[:, : self.hidden_channels])


class PartialConvLSTM(nn.Module):
    """A :class:`PartialConvLSTMCell` run over a sequence.

    ``forward(x (B, T, C_x, H, W), x_mask (B, T, G_x, H, W), state=None) ->
    (h_seq (B, T, C_h, H, W), mask_seq (B, T, G_h, H, W), final: LSTMState)``.
    """

    def __init__(
        self,
        input_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        input_mask_groups: Sequence[int] | None = None,
        conv_cls: type[PartialConv2d] = PartialConv2d,
        gate_norm: bool = True,
    ) -> None:
        super().__init__()
        self.cell = PartialConvLSTMCell(
            input_channels, hidden_channels, kernel_size, input_mask_groups, conv_cls, gate_norm
        )

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        if x.shape[1] == 0:
            raise ValueError("PartialConvLSTM: the input sequence has no time steps (x.shape[1] == 0).")
        hs, masks = [], []
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], x_mask[:, t], state)
            hs.append(state.h)
            masks.append(state.mask)
        return torch.stack(hs, dim=1), torch.stack(masks, dim=1), state  # type: ignore[return-value]
