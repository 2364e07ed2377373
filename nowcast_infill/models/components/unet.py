"""Partial-convolution U-Net for radar infilling and nowcasting, in four variants.

``PConvUNet(lstm=False, attention=False)`` is the U-Net of Liu et al. (2018): a stride-2
partial-convolution encoder (ReLU), nearest upsampling with concatenation of the skip
features *and their masks*, and a partial-convolution decoder (LeakyReLU 0.2); the input
frames are stacked as channels, each with its own mask. ``lstm=True`` replaces the
frame stacking by ConvLSTMs over time (see ``convlstm.py`` for the design),
``attention=True`` adds an auxiliary-field encoder whose features re-weight the skip
connections (see ``attention.py``); both together give the combined variant.

Every feature map is 0 outside its mask, so missing input never acts as rain = 0 and
no gradient reaches hidden input pixels (the inputs are masked once at the entry).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nowcast_infill.models.components.attention import AuxChannelSpatialAttention, AuxEncoder, resize_to_grid
from nowcast_infill.models.components.convlstm import LSTMState, PartialConvLSTM, PartialConvLSTMCell, anchor_order
from nowcast_infill.models.components.naive_reference import NaivePartialConv2d
from nowcast_infill.models.components.norm import MaskedBatchNorm2d
from nowcast_infill.models.components.partial_conv import PartialConv2d

TASKS = ("infill", "nowcast")


def default_kernel_sizes(n_layers: int) -> tuple[int, ...]:
    """Encoder kernels of Liu et al.: 7 for the first layer, 5 for the next two, then 3."""
    return tuple(7 if i == 0 else 5 if i < 3 else 3 for i in range(n_layers))


class PConvUNet(nn.Module):
    """Partial-convolution U-Net, optionally with ConvLSTM and auxiliary-field attention.

    Satisfies the network contract ``nowcast_infill.models.network.RadarNetwork``.

    Args:
        in_frames: ``T_in`` input radar frames.
        out_frames: ``T_out`` output frames (1 for infilling).
        aux_channels: ``A`` auxiliary fields per frame (0 = none). Without attention they
            are extra input channels; with attention they feed the auxiliary encoder.
        lstm: ConvLSTM over time in encoder and decoder instead of frames-as-channels.
        attention: auxiliary-field channel + spatial attention on the skip connections
            (needs ``aux_channels > 0``).
        encoder_channels: width of each stride-2 encoder layer.
        kernel_sizes: encoder kernels, default :func:`default_kernel_sizes`.
        extra_pool_layers: further stride-2 layers (kernel 3) at the last width.
        batch_norm: masked batch norm in all but the first encoder and the output layer, and
            a masked group norm of the gate pre-activations of every ConvLSTM cell.
        output_floor: lower bound of the output in normalised units (the encoded 0 mm/h,
            ``Normalizer.floor``); a buffer, see :meth:`set_output_floor`.
        task: ``"infill"`` (the centre frame is the target) or ``"nowcast"`` (the last input
            frame is the newest); decides the order in which the LSTM reads the frames. The
            task's frame counts are checked by ``nowcast_infill.tasks`` (``task_from_frames``,
            called by the module that builds this network), not here.
        decoder_kernel_size: kernel of the decoder layers.
        aux_encoder_channels: auxiliary encoder widths per level, default
            ``max(8, c // 4)`` for each encoder width ``c``.
        naive_partial_conv: build the same network from :class:`NaivePartialConv2d`
            (full mask convolutions); for tests and benchmarks only.
        prior_frames: ``P`` frames of a classical prior (``model.prior``, one per output
            frame; 0 = none, the plain network). They are extra input channels (stacked:
            ``P`` more channels; lstm: the same ``P`` channels beside every input frame) and
            the output becomes a residual on them: ``floor + relu(prior + raw - floor)``
            in normalised units, with the prior taken as the floor (0 mm/h) where its mask is
            0. The head's weights and bias start at zero, so the untrained network outputs
            the prior exactly (it starts at the classical method's skill and only learns
            corrections), and ``relu`` (not softplus) lets it say exactly "no rain".

    ``forward(x, x_mask, aux=None, aux_mask=None, prior=None, prior_mask=None)``:
        x: ``(B, T_in, 1, H, W)`` normalised radar; values where ``x_mask`` is 0 are ignored
            (they may even be NaN). ``H`` and ``W`` must be divisible by ``2**depth``.
        x_mask: ``(B, T_in, 1, H, W)`` 1 = observed and valid.
        aux: ``(B, T_in, A, h, w)`` z-scored auxiliary fields, any ``(h, w)`` (resized to
            ``(H, W)`` when different); aux_mask: same shape, default all valid.
        prior: ``(B, P, 1, H, W)`` normalised prior (needed iff ``prior_frames > 0``);
            prior_mask: same shape, 1 where the prior has a value.
        returns: ``(B, T_out, 1, H, W)`` normalised units, ``>= output_floor``
            (``output_floor + softplus(raw)``: exact bound, and a gradient everywhere, unlike
            a clamp whose gradient dies below the floor).
    """

    output_floor: torch.Tensor  # 0-d buffer, registered in __init__

    def __init__(
        self,
        in_frames: int,
        out_frames: int,
        aux_channels: int = 0,
        lstm: bool = False,
        attention: bool = False,
        encoder_channels: Sequence[int] = (64, 128, 256, 512, 512, 512, 512),
        kernel_sizes: Sequence[int] | None = None,
        extra_pool_layers: int = 0,
        batch_norm: bool = True,
        output_floor: float = 0.0,
        task: str = "nowcast",
        decoder_kernel_size: int = 3,
        aux_encoder_channels: Sequence[int] | None = None,
        naive_partial_conv: bool = False,
        prior_frames: int = 0,
    ) -> None:
        super().__init__()
        if in_frames < 1 or out_frames < 1:
            raise ValueError(f"PConvUNet: in_frames={in_frames} and out_frames={out_frames} must be >= 1.")
        if task not in TASKS:
            raise ValueError(f"PConvUNet: task={task!r}; choose one of {TASKS}.")
        if attention and aux_channels < 1:
            raise ValueError(
                "PConvUNet: attention=True needs aux_channels >= 1 (the attention is driven by aux fields)."
            )
        if not encoder_channels:
            raise ValueError("PConvUNet: encoder_channels is empty; give at least one layer width.")
        kernels = tuple(default_kernel_sizes(len(encoder_channels)) if kernel_sizes is None else kernel_sizes)
        if len(kernels) != len(encoder_channels):
            raise ValueError(
                f"PConvUNet: kernel_sizes {kernels} must have one entry per encoder_channels {tuple(encoder_channels)}."
            )
        if prior_frames not in (0, out_frames):
            raise ValueError(f"PConvUNet: prior_frames={prior_frames}; it must be 0 or out_frames={out_frames}.")
        self.in_frames, self.out_frames, self.aux_channels = in_frames, out_frames, aux_channels
        self.prior_frames = int(prior_frames)
        self.lstm, self.attention, self.task, self.batch_norm = lstm, attention, task, batch_norm
        self.anchor = in_frames // 2 if task == "infill" else in_frames - 1
        widths = (*encoder_channels, *(encoder_channels[-1],) * extra_pool_layers)
        kernels = (*kernels, *(3,) * extra_pool_layers)
        self.depth = len(widths)
        conv = NaivePartialConv2d if naive_partial_conv else PartialConv2d
        self.conv_cls = conv

        stacked_aux = 0 if attention else aux_channels
        # Raw input channels: per frame (lstm) or all frames stacked, each channel its own mask.
        # lstm: the prior's channels beside every frame; stacked: once, after the frames.
        per_frame = 1 + stacked_aux + (self.prior_frames if lstm else 0)
        self.input_channels = per_frame * (1 if lstm else in_frames) + (0 if lstm else self.prior_frames)
        levels = (self.input_channels, *widths)

        self.encoder = nn.ModuleList(
            conv(
                levels[i],
                levels[i + 1],
                kernels[i],
                stride=2,
                mask_groups=(1,) * levels[0] if i == 0 else None,
                input_is_masked=True,
            )
            for i in range(self.depth)
        )
        self.encoder_norm = nn.ModuleList(
            MaskedBatchNorm2d(levels[i + 1]) if batch_norm and i > 0 else nn.Identity() for i in range(self.depth)
        )
        # Decoder level i, deepest first, upsamples level i and concatenates the skip of level
        # i-1: its input mask groups (one per part) and its output width levels[i-1].
        decoder_levels = [((levels[i], levels[i - 1]), levels[i - 1]) for i in range(self.depth, 1, -1)]
        if lstm:
            self.encoder_lstm = nn.ModuleList(
                PartialConvLSTM(w, w, 3, conv_cls=conv, gate_norm=batch_norm) for w in widths
            )
            # Decoder level i (resolution H / 2**(i-1)) is a cell seeded by encoder level i-1.
            self.decoder_cells = nn.ModuleList(
                PartialConvLSTMCell(
                    sum(groups),
                    width,
                    decoder_kernel_size,
                    input_mask_groups=groups,
                    conv_cls=conv,
                    gate_norm=batch_norm,
                )
                for groups, width in decoder_levels
            )
            head_out = 1
        else:
            self.decoder = nn.ModuleList(
                conv(sum(groups), width, decoder_kernel_size, mask_groups=groups, input_is_masked=True)
                for groups, width in decoder_levels
            )
            self.decoder_norm = nn.ModuleList(
                MaskedBatchNorm2d(width) if batch_norm else nn.Identity() for _, width in decoder_levels
            )
            head_out = out_frames
        # The head sees every input frame at full resolution, each channel with its own mask:
        # in a hole of the target frame the neighbouring frames are the only full-resolution
        # evidence (the LSTM variant's own features start at half resolution).
        head_skip = levels[0] * (in_frames if lstm else 1)
        self.head = conv(
            levels[1] + head_skip,
            head_out,
            decoder_kernel_size,
            mask_groups=(levels[1], *(1,) * head_skip),
            input_is_masked=True,
        )
        if self.prior_frames:
            # a random head would start the residual at noise, below the prior's skill
            nn.init.zeros_(self.head.weight)
            if self.head.bias is not None:
                nn.init.zeros_(self.head.bias)
        if attention:
            aux_widths = (
                tuple(max(8, w // 4) for w in widths) if aux_encoder_channels is None else tuple(aux_encoder_channels)
            )
            if len(aux_widths) != self.depth:
                raise ValueError(
                    f"PConvUNet: aux_encoder_channels {aux_widths} needs one width per level ({self.depth})."
                )
            self.aux_encoder = AuxEncoder(in_frames * aux_channels, aux_widths, conv_cls=conv)
            self.skip_attention = nn.ModuleList(
                AuxChannelSpatialAttention(w, a, conv_cls=conv) for w, a in zip(widths, aux_widths, strict=True)
            )
        self.register_buffer("output_floor", torch.tensor(float(output_floor)))

    @property
    def size_multiple(self) -> int:
        """``H`` and ``W`` must be multiples of ``2**depth`` (one halving per encoder layer)."""
        return 2**self.depth

    def set_output_floor(self, value: float) -> None:
        """Set the lower output bound (normalised units), e.g. to ``Normalizer.floor``."""
        self.output_floor.fill_(float(value))

    # -- input handling -------------------------------------------------------------
    def _check_inputs(self, x, x_mask, aux, aux_mask) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_frames or x.shape[2] != 1:
            raise ValueError(f"PConvUNet: x has shape {tuple(x.shape)}, expected (B, T_in={self.in_frames}, 1, H, W).")
        if x_mask.shape != x.shape:
            raise ValueError(f"PConvUNet: x_mask shape {tuple(x_mask.shape)} differs from x shape {tuple(x.shape)}.")
        h, w = x.shape[-2:]
        step = self.size_multiple
        if h % step or w % step:
            raise ValueError(
                f"PConvUNet: the grid {h}x{w} is not divisible by 2**depth = {step} (depth {self.depth}); "
                f"crop or pad the domain to a multiple of {step}, or use fewer encoder layers."
            )
        if self.aux_channels:
            if aux is None:
                raise ValueError(f"PConvUNet: built with aux_channels={self.aux_channels} but no aux was given.")
            if aux.dim() != 5 or aux.shape[:3] != (x.shape[0], self.in_frames, self.aux_channels):
                raise ValueError(
                    f"PConvUNet: aux has shape {tuple(aux.shape)}, expected "
                    f"(B={x.shape[0]}, T_in={self.in_frames}, A={self.aux_channels}, h, w)."
                )
            if aux_mask is not None and aux_mask.shape != aux.shape:
                raise ValueError(
                    f"PConvUNet: aux_mask shape {tuple(aux_mask.shape)} differs from aux {tuple(aux.shape)}."
                )
        elif aux is not None:
            raise ValueError(
                f"PConvUNet: got aux with shape {tuple(aux.shape)} but the network was built with aux_channels=0."
            )

    @staticmethod
    def _masked(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # where() rather than a product: hidden values may be NaN, and they get no gradient.
        mask = (mask > 0).to(values.dtype)
        return torch.where(mask > 0, values, torch.zeros_like(values)), mask

    # -- forward --------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        aux: torch.Tensor | None = None,
        aux_mask: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
        prior_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check_inputs(x, x_mask, aux, aux_mask)
        self._check_prior(x, prior, prior_mask)
        b, t_in, _, h, w = x.shape
        x, x_mask = self._masked(x, x_mask)
        frames, frame_masks = x, x_mask  # (B, T_in, C_frame, H, W)
        aux_levels = None
        if aux is not None:
            aux_mask = torch.ones_like(aux) if aux_mask is None else aux_mask
            aux, aux_mask = self._masked(aux.to(x.dtype), aux_mask)
            if self.attention:
                aux_levels = self.aux_encoder(aux.flatten(1, 2), aux_mask.flatten(1, 2), (h, w))
            else:
                aux_grid, aux_grid_mask = resize_to_grid(aux.flatten(0, 1), aux_mask.flatten(0, 1), (h, w))
                frames = torch.cat([x, aux_grid.unflatten(0, (b, t_in))], dim=2)
                frame_masks = torch.cat([x_mask, aux_grid_mask.unflatten(0, (b, t_in))], dim=2)
        if prior is not None:
            assert prior_mask is not None  # _check_prior requires it beside a prior
            prior, prior_mask = self._masked(prior.to(x.dtype), prior_mask)
        if self.lstm:
            if prior is not None:
                assert prior_mask is not None
                per_step = (b, t_in, self.prior_frames, h, w)
                frames = torch.cat([frames, prior[:, None, :, 0].expand(per_step)], dim=2)
                frame_masks = torch.cat([frame_masks, prior_mask[:, None, :, 0].expand(per_step)], dim=2)
            raw = self._forward_lstm(frames, frame_masks, aux_levels)
        else:
            inp, inp_mask = frames.flatten(1, 2), frame_masks.flatten(1, 2)
            if prior is not None:
                assert prior_mask is not None
                inp, inp_mask = (
                    torch.cat([inp, prior.flatten(1, 2)], 1),
                    torch.cat([inp_mask, prior_mask.flatten(1, 2)], 1),
                )
            raw = self._forward_stacked(inp, inp_mask, aux_levels)
        raw = raw.float().reshape(b, self.out_frames, 1, h, w)
        if prior is None:
            return self.output_floor + F.softplus(raw)
        assert prior_mask is not None
        base = torch.where(prior_mask > 0, prior.float(), self.output_floor.expand_as(raw))
        return self.output_floor + F.relu(base + raw - self.output_floor)

    def _check_prior(self, x, prior, prior_mask) -> None:
        if self.prior_frames and prior is None:
            raise ValueError(
                f"PConvUNet: built with prior_frames={self.prior_frames} (model.prior) but no prior was given; "
                "the DataModule adds it when the module's prior is attached (RadarModule.setup)."
            )
        if not self.prior_frames and prior is not None:
            raise ValueError(
                "PConvUNet: got a prior but the network was built with prior_frames=0 (model.prior: null)."
            )
        if prior is not None:
            want = (x.shape[0], self.prior_frames, 1, *x.shape[-2:])
            if tuple(prior.shape) != want or prior_mask is None or prior_mask.shape != prior.shape:
                raise ValueError(f"PConvUNet: prior {tuple(prior.shape)} and prior_mask must both have shape {want}.")

    def _attend(self, level: int, feat, mask, aux_levels):
        if aux_levels is None:
            return feat
        aux_feat, aux_mask = aux_levels[level]
        return self.skip_attention[level](feat, mask, aux_feat.to(feat.dtype), aux_mask)

    def _encode_layer(self, i: int, feat: torch.Tensor, mask: torch.Tensor):
        feat, mask = self.encoder[i](feat, mask)
        if isinstance(self.encoder_norm[i], MaskedBatchNorm2d):
            feat = self.encoder_norm[i](feat, mask)
        return F.relu(feat), mask

    def _forward_stacked(self, inp, inp_mask, aux_levels) -> torch.Tensor:
        """inp: (B, C_in, H, W) frames (+ aux) stacked as channels -> (B, T_out, H, W) raw output."""
        skips = [(inp, inp_mask)]
        feat, mask = inp, inp_mask
        for i in range(self.depth):
            feat, mask = self._encode_layer(i, feat, mask)
            skips.append((self._attend(i, feat, mask, aux_levels), mask))
        feat, mask = skips.pop()
        for layer, norm in zip(self.decoder, self.decoder_norm, strict=True):
            skip, skip_mask = skips.pop()
            feat, mask = layer(*self._up_and_cat(feat, mask, skip, skip_mask))
            if isinstance(norm, MaskedBatchNorm2d):
                feat = norm(feat, mask)
            feat = F.leaky_relu(feat, 0.2)
        skip, skip_mask = skips.pop()
        out, _ = self.head(*self._up_and_cat(feat, mask, skip, skip_mask))
        return out

    @staticmethod
    def _up_and_cat(feat, mask, skip, skip_mask):
        feat = F.interpolate(feat, scale_factor=2, mode="nearest")
        mask = F.interpolate(mask, scale_factor=2, mode="nearest")
        return torch.cat([feat, skip.to(feat.dtype)], dim=1), torch.cat([mask, skip_mask.to(mask.dtype)], dim=1)

    def _forward_lstm(self, frames, frame_masks, aux_levels) -> torch.Tensor:
        """frames: (B, T_in, C_frame, H, W) -> (B, T_out, H, W) raw output."""
        order = anchor_order(self.in_frames, self.anchor)
        seq, seq_mask = frames[:, order], frame_masks[:, order]
        b, t = seq.shape[:2]
        skips: list[tuple[torch.Tensor, torch.Tensor]] = [(frames.flatten(1, 2), frame_masks.flatten(1, 2))]
        states: list[LSTMState] = []
        for i in range(self.depth):
            feat, mask = self._encode_layer(i, seq.flatten(0, 1), seq_mask.flatten(0, 1))
            seq, seq_mask, state = self.encoder_lstm[i](feat.unflatten(0, (b, t)), mask.unflatten(0, (b, t)))
            states.append(state)
            skips.append((self._attend(i, state.h, state.mask, aux_levels), state.mask))
        bottom, bottom_mask = skips[-1]
        # decoder_cells[j] works at encoder level depth-1-j and starts from that level's state.
        decoder_states = [states[self.depth - 2 - j] for j in range(len(self.decoder_cells))]
        outputs = []
        for _ in range(self.out_frames):
            feat, mask = bottom, bottom_mask
            for j, cell in enumerate(self.decoder_cells):
                skip, skip_mask = skips[self.depth - 1 - j]
                state = cell(*self._up_and_cat(feat, mask, skip, skip_mask), decoder_states[j])
                decoder_states[j] = state
                feat, mask = state.h, state.mask
            out, _ = self.head(*self._up_and_cat(feat, mask, *skips[0]))
            outputs.append(out)
        return torch.cat(outputs, dim=1)
