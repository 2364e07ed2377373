"""PConvUNet: the four variants x both tasks on tiny synthetic batches."""

from __future__ import annotations

import itertools

import pytest
import torch

from nowcast_infill.models.components.attention import resize_to_grid
from nowcast_infill.models.components.convlstm import FORGET_BIAS, PartialConvLSTMCell, anchor_order
from nowcast_infill.models.components.norm import MaskedBatchNorm2d, MaskedGroupNorm
from nowcast_infill.models.components.unet import PConvUNet

VARIANTS = {"pconv": (False, False), "lstm": (True, False), "attention": (False, True), "lstm_attention": (True, True)}
TASKS = {"infill": (3, 1), "nowcast": (4, 3)}
CASES = list(itertools.product(VARIANTS, TASKS))
AUX = 2
FLOOR = -0.7


def build(variant: str, task: str, channels=(8, 16, 16), naive: bool = False, aux: bool = True) -> PConvUNet:
    lstm, attention = VARIANTS[variant]
    t_in, t_out = TASKS[task]
    torch.manual_seed(0)
    return PConvUNet(
        t_in, t_out, aux_channels=AUX if (aux or attention) else 0, lstm=lstm, attention=attention,
        encoder_channels=channels, task=task, output_floor=FLOOR, naive_partial_conv=naive,
    )


def batch(task: str, size: int = 32, aux_size: int = 16, seed: int = 0, b: int = 2):
    """Normalised inputs with random holes, aux on a coarser grid, and targets."""
    g = torch.Generator().manual_seed(seed)
    t_in, t_out = TASKS[task]
    x_mask = (torch.rand(b, t_in, 1, size, size, generator=g) > 0.3).float()
    x = torch.randn(b, t_in, 1, size, size, generator=g)
    aux = torch.randn(b, t_in, AUX, aux_size, aux_size, generator=g)
    aux_mask = (torch.rand(b, t_in, AUX, aux_size, aux_size, generator=g) > 0.1).float()
    y = torch.rand(b, t_out, 1, size, size, generator=g)
    return x, x_mask, aux, aux_mask, y


@pytest.mark.parametrize("variant,task", CASES)
def test_shapes_floor_and_no_gradient_from_hidden_pixels(variant, task):
    model = build(variant, task)
    x, x_mask, aux, aux_mask, _ = batch(task)
    x[x_mask == 0] = float("nan")  # hidden values must not matter, even NaN
    x.requires_grad_(True)
    out = model(x, x_mask, aux, aux_mask)
    assert out.shape == (2, TASKS[task][1], 1, 32, 32)
    assert torch.isfinite(out).all() and (out >= FLOOR).all()
    out.sum().backward()
    assert (x.grad[x_mask == 0] == 0).all(), "gradient leaked from hidden input pixels into the output"
    assert (x.grad[x_mask == 1] != 0).any()


@pytest.mark.parametrize("variant,task", CASES)
def test_equals_network_built_from_naive_reference(variant, task):
    fast, naive = build(variant, task), build(variant, task, naive=True)
    naive.load_state_dict(fast.state_dict())
    x, x_mask, aux, aux_mask, _ = batch(task, seed=1)
    out_fast, out_naive = fast(x, x_mask, aux, aux_mask), naive(x, x_mask, aux, aux_mask)
    torch.testing.assert_close(out_fast, out_naive, rtol=1e-5, atol=1e-5)
    out_fast.square().sum().backward()
    out_naive.square().sum().backward()
    for (name, p), q in zip(fast.named_parameters(), naive.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("variant,task", CASES)
def test_adam_steps_reduce_masked_mse(variant, task):
    model = build(variant, task, channels=(8, 16))
    x, x_mask, aux, aux_mask, y = batch(task, size=16, aux_size=8, seed=2)
    y_valid = torch.ones_like(y)
    y_valid[..., :4, :] = 0.0
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        loss = ((model(x, x_mask, aux, aux_mask) - y).square() * y_valid).sum() / y_valid.sum()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("variant,task", CASES)
def test_entirely_missing_inputs_give_finite_outputs_and_gradients(variant, task):
    model = build(variant, task)
    x, _, aux, _, y = batch(task)
    out = model(x, torch.zeros_like(x), aux, torch.zeros_like(aux))
    loss = (out - y).square().mean()
    loss.backward()
    assert torch.isfinite(out).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_autocast_and_channels_last_on_cpu(variant):
    model = build(variant, "nowcast").to(memory_format=torch.channels_last)
    x, x_mask, aux, aux_mask, y = batch("nowcast")
    x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)  # channels-last strides
    reference = model(x, x_mask, aux, aux_mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, x_mask, aux, aux_mask)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, reference, rtol=0.1, atol=0.1)
    ((out - y).square().mean()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_grid_not_divisible_by_depth_is_refused():
    model = build("pconv", "infill")
    x, x_mask, aux, aux_mask, _ = batch("infill", size=36)
    with pytest.raises(ValueError, match=r"36x36 is not divisible by 2\*\*depth = 8"):
        model(x, x_mask, aux, aux_mask)


def test_configuration_errors_are_explicit():
    with pytest.raises(ValueError, match="attention=True needs aux_channels"):
        PConvUNet(3, 1, attention=True, encoder_channels=(8,))
    with pytest.raises(ValueError, match="no aux was given"):
        build("pconv", "infill")(*batch("infill")[:2])


def test_output_floor_is_a_settable_buffer():
    model = build("pconv", "infill")
    model.set_output_floor(-2.5)
    assert model.state_dict()["output_floor"].item() == -2.5
    x, x_mask, aux, aux_mask, _ = batch("infill")
    assert (model(x, x_mask, aux, aux_mask) >= -2.5).all()


def test_extra_pool_layers_and_kernel_sizes():
    model = PConvUNet(3, 1, encoder_channels=(8, 16), extra_pool_layers=2, task="infill")
    assert [layer.kernel_size for layer in model.encoder] == [(7, 7), (5, 5), (3, 3), (3, 3)]
    assert [layer.out_channels for layer in model.encoder] == [8, 16, 16, 16]
    x, x_mask, *_ = batch("infill")
    assert model(x, x_mask).shape == (2, 1, 1, 32, 32)


def test_anchor_order_reads_the_target_frame_last():
    assert anchor_order(5, 2) == [0, 4, 1, 3, 2]
    assert anchor_order(4, 3) == [0, 1, 2, 3]


def test_masked_batch_norm_ignores_hidden_pixels():
    norm = MaskedBatchNorm2d(3)
    g = torch.Generator().manual_seed(4)
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    x = torch.randn(2, 3, 8, 8, generator=g)
    out = norm(x, mask)
    out_other = MaskedBatchNorm2d(3)(torch.where(mask > 0, x, torch.full_like(x, 1e3)), mask)
    torch.testing.assert_close(out, out_other)
    assert (out[mask.expand_as(out) == 0] == 0).all()
    valid = out.permute(1, 0, 2, 3)[mask.expand_as(out).permute(1, 0, 2, 3) > 0].view(3, -1)
    torch.testing.assert_close(valid.mean(dim=1), torch.zeros(3), atol=1e-5, rtol=0)


def test_masked_group_norm_ignores_hidden_pixels_and_has_no_running_state():
    norm = MaskedGroupNorm(2, 4)
    g = torch.Generator().manual_seed(5)
    mask = (torch.rand(3, 1, 8, 8, generator=g) > 0.4).float()
    x = torch.randn(3, 4, 8, 8, generator=g) * 5 + 2
    out = norm(x, mask)
    torch.testing.assert_close(out, norm(torch.where(mask > 0, x, torch.full_like(x, -1e3)), mask))
    assert (out[mask.expand_as(out) == 0] == 0).all()
    # per sample and group of 2 channels: zero mean, unit variance over the valid pixels
    for b in range(3):
        for group in (slice(0, 2), slice(2, 4)):
            values = out[b, group][mask[b].expand(2, 8, 8) > 0]
            assert abs(values.mean().item()) < 1e-5 and values.var(unbiased=False).item() == pytest.approx(1.0, rel=1e-3)
    torch.testing.assert_close(norm.eval()(x, mask), out)  # evaluation computes the same thing
    torch.testing.assert_close(norm(x[:1], mask[:1]), out[:1])  # and does not depend on the batch


def test_lstm_cell_gates_start_normalised_with_forget_bias():
    torch.manual_seed(0)
    cell = PartialConvLSTMCell(4, 6)
    assert cell.gates.bias is None and isinstance(cell.gate_norm, MaskedGroupNorm)
    assert (cell.gate_norm.bias[6:12] == FORGET_BIAS).all() and (cell.gate_norm.bias[:6] == 0).all()
    plain = PartialConvLSTMCell(4, 6, gate_norm=False)
    assert plain.gate_norm is None and (plain.gates.bias[6:12] == FORGET_BIAS).all()
    # features of very different scales (as partial convolutions re-normalise them) still give
    # unsaturated hidden states: what made the ConvLSTM variants predict dry holes before
    x = torch.randn(2, 4, 16, 16) * 50

    def saturated_fraction(lstm_cell) -> float:
        state = None
        for _ in range(3):
            state = lstm_cell(x, torch.ones(2, 1, 16, 16), state)
        return float((state.h.abs() > 0.95).float().mean())

    assert saturated_fraction(plain) > 0.05  # the input does saturate a cell without the norm
    assert saturated_fraction(cell) < 0.02


def test_lstm_head_sees_every_input_frame_at_full_resolution():
    """The hole of the target frame is filled at full resolution from its neighbours (as the
    stacked variants do), not only from half-resolution LSTM features."""
    for task in TASKS:
        model = build("lstm", task, aux=False)
        t_in = TASKS[task][0]
        assert model.head.mask_groups == (8, *(1,) * t_in)
        with torch.no_grad():  # cut every path but the head's direct one from the input values
            for name, p in model.named_parameters():
                if name.startswith("encoder."):
                    p.zero_()
        x, x_mask, *_ = batch(task)
        x_mask[:, model.anchor, :, 10, 10] = 0.0  # a one-pixel hole in the anchor frame
        x.requires_grad_(True)
        model(x, x_mask)[:, 0, 0, 10, 10].sum().backward()
        other = [t for t in range(t_in) if t != model.anchor][0]
        assert x.grad[:, other, 0, 9:12, 9:12].abs().sum() > 0
        assert (x.grad[:, :, 0, :8] == 0).all()


def test_resize_to_grid_never_mixes_in_missing_values():
    values = torch.tensor([[[[1.0, 1e6], [1.0, 1.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    resized, new_mask = resize_to_grid(values, mask, (4, 4))
    # The top-right target pixel interpolates from the missing source pixel only.
    expected_mask = torch.ones(1, 1, 4, 4)
    expected_mask[..., 0, 3] = 0.0
    torch.testing.assert_close(new_mask, expected_mask)
    torch.testing.assert_close(resized, expected_mask)
