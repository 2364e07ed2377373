"""PartialConv2d: the documented rule, and equality with the naive full-mask convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nowcast_infill.models.components.naive_reference import NaivePartialConv2d
from nowcast_infill.models.components.partial_conv import PartialConv2d


def test_worked_example_from_docstring():
    conv = PartialConv2d(1, 1, 3, padding=0)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(0.5)
    x = torch.full((1, 1, 3, 3), 100.0)  # hidden pixels hold 100: they must never be seen
    mask = torch.zeros(1, 1, 3, 3)
    for r, c in [(0, 0), (0, 2), (1, 1), (2, 1)]:
        mask[0, 0, r, c] = 1.0
        x[0, 0, r, c] = 1.0
    out, new_mask = conv(x, mask)
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == pytest.approx(4 * 9 / 4 + 0.5)  # = 9.5
    assert new_mask.item() == 1.0

    out, new_mask = conv(x, torch.zeros_like(mask))
    assert out.item() == 0.0 and new_mask.item() == 0.0


def _random_mask(shape, generator):
    mask = (torch.rand(shape, generator=generator) > 0.6).float()
    mask[..., :7, :7] = 0.0  # a block larger than any window: windows with no valid pixel
    return mask


@pytest.mark.parametrize(
    "kernel,stride,groups,mask_channels",
    [
        (3, 1, None, 1),  # one mask for all channels
        (5, 2, None, 1),
        (3, 2, (3, 5), 2),  # decoder input: upsampled features + skip, two masks
        (7, 2, None, 8),  # stacked frames: one mask per channel
    ],
)
def test_equals_naive_reference_values_and_gradients(kernel, stride, groups, mask_channels):
    g = torch.Generator().manual_seed(kernel * 10 + stride)
    fast = PartialConv2d(8, 6, kernel, stride=stride, mask_groups=groups)
    naive = NaivePartialConv2d(8, 6, kernel, stride=stride, mask_groups=groups)
    naive.load_state_dict(fast.state_dict())
    x = torch.randn(2, 8, 16, 16, generator=g, requires_grad=True)
    mask = _random_mask((2, mask_channels, 16, 16), g)

    out_fast, mask_fast = fast(x, mask)
    out_naive, mask_naive = naive(x, mask)
    assert (mask_fast == 0).any(), "the test must include windows without any valid pixel"
    assert torch.equal(mask_naive, mask_fast.expand_as(mask_naive))
    torch.testing.assert_close(out_fast, out_naive, rtol=1e-6, atol=1e-6)
    assert (out_fast[mask_fast.expand_as(out_fast) == 0] == 0).all()

    upstream = torch.randn(out_fast.shape, generator=g)
    grads_fast = torch.autograd.grad(out_fast, [x, fast.weight, fast.bias], upstream)
    grads_naive = torch.autograd.grad(out_naive, [x, naive.weight, naive.bias], upstream)
    for name, a, b in zip(("input", "weight", "bias"), grads_fast, grads_naive, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"grad wrt {n}: {m}")


def test_no_gradient_from_hidden_pixels():
    g = torch.Generator().manual_seed(1)
    conv = PartialConv2d(4, 5, 3)
    x = torch.randn(1, 4, 12, 12, generator=g, requires_grad=True)
    mask = _random_mask((1, 4, 12, 12), g)
    out, _ = conv(x, mask)
    out.square().sum().backward()
    assert (x.grad[mask == 0] == 0).all()
    assert (x.grad[mask == 1] != 0).any()


def test_input_is_masked_skips_only_a_redundant_product():
    g = torch.Generator().manual_seed(2)
    plain = PartialConv2d(4, 3, 3, stride=2)
    trusting = PartialConv2d(4, 3, 3, stride=2, input_is_masked=True)
    trusting.load_state_dict(plain.state_dict())
    mask = _random_mask((2, 1, 12, 12), g)
    x = torch.randn(2, 4, 12, 12, generator=g) * mask
    torch.testing.assert_close(plain(x, mask)[0], trusting(x, mask)[0])


@pytest.mark.parametrize("mask_channels", [1, 2, 4])  # one mask, one per group (2, 2), one per channel
def test_unmasked_input_hidden_values_are_never_seen_by_default(mask_channels):
    """input_is_masked=False (the default): whatever sits at hidden pixels (here 1e3) leaves
    the output unchanged: the layer masks the input itself."""
    g = torch.Generator().manual_seed(4)
    conv = PartialConv2d(4, 3, 3, stride=2, mask_groups=(2, 2) if mask_channels == 2 else None)
    mask = _random_mask((2, mask_channels, 12, 12), g)
    per_channel = mask.repeat_interleave(4 // mask_channels, dim=1)
    observed = torch.randn(2, 4, 12, 12, generator=g)
    garbage = torch.where(per_channel == 1, observed, torch.full_like(observed, 1e3))
    out, new_mask = conv(garbage, mask)
    torch.testing.assert_close(out, conv(observed * per_channel, mask)[0])
    assert (new_mask == 1).any() and (out.abs() < 1e2).all(), "the 1e3 at hidden pixels leaked"


def test_input_is_masked_trusts_the_caller_and_convolves_hidden_values():
    """input_is_masked=True skips the product: hidden values that are not 0 reach the output,
    re-normalised exactly as the valid ones -- the flag changes results when its promise is broken."""
    g = torch.Generator().manual_seed(5)
    plain = PartialConv2d(4, 3, 3, stride=2)
    trusting = PartialConv2d(4, 3, 3, stride=2, input_is_masked=True)
    trusting.load_state_dict(plain.state_dict())
    mask = _random_mask((2, 1, 12, 12), g)
    x = torch.randn(2, 4, 12, 12, generator=g) + 5.0 * (1 - mask)  # hidden pixels hold ~5, not 0

    out, new_mask = trusting(x, mask)
    # the rule of the module docstring with conv(x) in place of conv(x * mask)
    count = trusting.valid_count(mask)
    raw = F.conv2d(x, trusting.weight, None, trusting.stride, trusting.padding)
    expected = (raw * trusting.window_size / count.clamp(min=1) + trusting.bias.view(1, -1, 1, 1)) * new_mask
    torch.testing.assert_close(out, expected)
    assert (out - plain(x, mask)[0]).abs().max() > 0.1, "the hidden values should have changed the output"
    torch.testing.assert_close(plain(x, mask)[0], trusting(x * mask, mask)[0])


def test_bf16_autocast_keeps_exact_counts():
    g = torch.Generator().manual_seed(3)
    conv = PartialConv2d(64, 8, 3)  # window size 576 > 256: not representable exactly in bf16
    x = torch.randn(1, 64, 8, 8, generator=g)
    mask = _random_mask((1, 1, 8, 8), g)
    count = conv.valid_count(mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        count_bf16 = conv.valid_count(mask)
        out, new_mask = conv(x, mask)
    assert count_bf16.dtype == torch.float32 and torch.equal(count, count_bf16)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), conv(x, mask)[0], rtol=0.05, atol=0.05)


def test_mask_with_wrong_channel_count_is_refused():
    conv = PartialConv2d(6, 2, 3, mask_groups=(2, 4))
    with pytest.raises(ValueError, match="mask has 3 channels.*mask group"):
        conv(torch.zeros(1, 6, 8, 8), torch.ones(1, 3, 8, 8))
    with pytest.raises(ValueError, match="sum to in_channels"):
        PartialConv2d(6, 2, 3, mask_groups=(2, 3))
