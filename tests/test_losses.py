"""Infilling and nowcasting losses: no-data targets ignored, presets, VGG weights handling."""

from __future__ import annotations

import pytest
import torch

from nowcast_infill.models.components.vgg import VGG16Features
from nowcast_infill.models.losses import INFILL_PRESETS, InfillLoss, NowcastLoss
from nowcast_infill.registry import get_method

B, T, H, W = 2, 2, 16, 16


def _batch(seed: int = 0, t: int = T) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y_valid = (torch.rand(B, t, 1, H, W, generator=g) > 0.25).float()
    hole = (torch.rand(B, t, 1, H, W, generator=g) > 0.6).float() * y_valid
    y = torch.rand(B, t, 1, H, W, generator=g) * 2.0 * y_valid
    return {"y": y, "y_valid": y_valid, "hole": hole, "x": y * (1 - hole), "x_mask": y_valid * (1 - hole)}


def _pred(seed: int = 1, t: int = T) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, t, 1, H, W, generator=g).requires_grad_(True)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """Random-weights VGG16 state dict with torchvision's keys, plus the deeper layers a real file has."""
    torch.manual_seed(0)
    state = VGG16Features().state_dict()
    state["features.17.weight"] = torch.zeros(512, 256, 3, 3)
    state["classifier.0.weight"] = torch.zeros(4, 4)
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.pth"
    torch.save(state, path)
    return path


def _losses(vgg_file) -> dict[str, torch.nn.Module]:
    balanced = NowcastLoss("mse+mae", balanced=True)
    balanced.set_decoder(lambda z: torch.expm1(z.clamp(max=5)) * 10.0)
    return {
        "infill_liu": InfillLoss("liu", vgg_weights_path=vgg_file),
        "infill_valid_hole_tv": InfillLoss("valid_hole", tv=0.1),
        "nowcast_mse": NowcastLoss("mse"),
        "nowcast_mae": NowcastLoss("mae"),
        "nowcast_balanced": balanced,
    }


@pytest.mark.parametrize(
    "name", ["infill_liu", "infill_valid_hole_tv", "nowcast_mse", "nowcast_mae", "nowcast_balanced"]
)
def test_no_data_targets_change_nothing(name, vgg_file):
    """Garbage (even NaN/inf) in pred or y where y_valid == 0 changes neither loss nor gradient."""
    loss = _losses(vgg_file)[name]
    batch = _batch()
    pred = _pred()
    total, terms = loss(pred, batch)
    total.backward()

    invalid = batch["y_valid"] == 0
    garbage = pred.detach().clone()
    garbage[invalid] = torch.where(torch.rand(int(invalid.sum())) > 0.5, 1e6, float("nan"))
    garbage.requires_grad_(True)
    noisy = dict(batch, y=batch["y"].masked_fill(invalid, float("inf")))
    total2, terms2 = loss(garbage, noisy)
    total2.backward()
    assert torch.isfinite(total2)
    assert torch.allclose(total, total2, rtol=1e-6, atol=1e-7)
    assert terms.keys() == terms2.keys()
    assert torch.allclose(pred.grad, garbage.grad, rtol=1e-5, atol=1e-8)
    assert torch.all(garbage.grad[invalid] == 0)
    assert total > 0 and pred.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["infill_liu", "infill_valid_hole_tv", "nowcast_mse", "nowcast_balanced"])
def test_all_invalid_batch_gives_finite_zero_loss_and_zero_gradient(name, vgg_file):
    loss = _losses(vgg_file)[name]
    batch = _batch()
    batch = {k: torch.zeros_like(v) for k, v in batch.items()}
    pred = _pred()
    total, terms = loss(pred, batch)
    total.backward()
    assert total.item() == 0.0
    assert all(v.item() == 0.0 for v in terms.values())
    assert torch.all(pred.grad == 0)


def test_valid_and_hole_terms_match_a_direct_computation():
    batch = _batch()
    pred = _pred()
    valid = batch["y_valid"] == 1
    hole = batch["hole"] == 1
    err = (pred - batch["y"]).abs().detach()
    n_valid = valid.sum()
    total, terms = InfillLoss("valid_hole")(pred, batch)
    assert terms["valid"] == pytest.approx(float(err[valid & ~hole].sum() / n_valid), rel=1e-5)
    assert terms["hole"] == pytest.approx(float(err[hole].sum() / n_valid), rel=1e-5)
    assert total.item() == pytest.approx(float(terms["valid"] + 6 * terms["hole"]), rel=1e-6)
    assert set(terms) == {"valid", "hole"}


def test_tv_term_is_restricted_to_the_dilated_hole():
    """One hole pixel at (5, 5): TV sees pixel pairs inside rows/cols 4..6 only (3x3 dilation)."""
    y = torch.zeros(1, 1, 1, 12, 12)
    hole = torch.zeros_like(y)
    hole[..., 5, 5] = 1
    batch = {"y": y, "y_valid": torch.ones_like(y), "hole": hole}
    pred = torch.zeros_like(y)
    pred[..., 5, 5] = 1.0
    loss = InfillLoss("hole_only", tv=1.0)
    _, terms = loss(pred, batch)
    # composite has a single 1 at (5, 5): 4 neighbouring pairs inside the 3x3 region differ by 1
    assert terms["tv"] == pytest.approx(4 / 144)
    # rough truth just outside the dilated region is invisible to TV
    far_y = y.clone()
    far_y[..., 5, 7] = 3.0
    far_y[..., 8, 8] = 3.0
    _, terms_far = loss(pred, dict(batch, y=far_y))
    assert terms_far["tv"] == pytest.approx(4 / 144)
    # inside it (at (4, 6), a corner of the dilation) it counts: pairs with (4,5) and (5,6), 3 each
    near_y = y.clone()
    near_y[..., 4, 6] = 3.0
    _, terms_near = loss(pred, dict(batch, y=near_y))
    assert terms_near["tv"] == pytest.approx((4 + 3 + 3) / 144)


def test_presets_and_overrides():
    assert INFILL_PRESETS["liu"] == {"valid": 1.0, "hole": 6.0, "tv": 0.1, "perceptual": 0.05, "style": 120.0}
    batch, pred = _batch(), _pred()
    hole_only = InfillLoss("hole_only")
    total, terms = hole_only(pred, batch)
    assert set(terms) == {"hole"} and total.item() == pytest.approx(float(terms["hole"]))
    custom = InfillLoss("valid_hole", valid=2.0, hole=0.5, tv=0.3)
    assert custom.weights == {"valid": 2.0, "hole": 0.5, "tv": 0.3, "perceptual": 0.0, "style": 0.0}
    total, terms = custom(pred, batch)
    assert total.item() == pytest.approx(float(2 * terms["valid"] + 0.5 * terms["hole"] + 0.3 * terms["tv"]), rel=1e-6)
    # the liu preset without VGG terms is valid 1, hole 6, tv 0.1
    liu_no_vgg = InfillLoss("liu", perceptual=0, style=0)
    assert liu_no_vgg.weights == {"valid": 1.0, "hole": 6.0, "tv": 0.1, "perceptual": 0.0, "style": 0.0}
    with pytest.raises(ValueError, match="valid presets"):
        InfillLoss("liu2018")
    with pytest.raises(ValueError, match="every term weight is 0"):
        InfillLoss("hole_only", hole=0)
    with pytest.raises(ValueError, match="valid names: infill, nowcast"):
        get_method("loss", "balanced_mse")
    assert isinstance(get_method("loss", "infill", preset="hole_only"), InfillLoss)
    assert get_method("loss", "nowcast", kind="mae").kind == "mae"


def test_vgg_terms_fail_at_construction_with_a_clear_message(tmp_path):
    for kwargs in ({}, {"perceptual": 0.0}, {"style": 0.0}):
        with pytest.raises(FileNotFoundError, match="vgg_weights_path.*torchvision.models.vgg16"):
            InfillLoss("liu", **kwargs)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        InfillLoss("valid_hole", perceptual=0.05, vgg_weights_path=tmp_path / "nope.pth")
    lacking = tmp_path / "lacking.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, lacking)
    with pytest.raises(ValueError, match="lacks the VGG16 keys.*features.0.bias"):
        InfillLoss("liu", vgg_weights_path=lacking)
    wrong = tmp_path / "wrong.pth"
    state = VGG16Features().state_dict()
    state["features.2.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, wrong)
    with pytest.raises(ValueError, match="wrong shape.*features.2.weight"):
        InfillLoss("liu", vgg_weights_path=wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        InfillLoss("liu", vgg_weights_path=garbage)


def test_vgg_keys_follow_torchvision_and_load(vgg_file):
    keys = list(VGG16Features().state_dict())
    conv_indices = [0, 2, 5, 7, 10, 12, 14]
    assert keys == [f"features.{i}.{p}" for i in conv_indices for p in ("weight", "bias")]
    vgg = VGG16Features.from_file(vgg_file)
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    feats = vgg(torch.randn(1, 3, 32, 40))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 16, 20), (1, 128, 8, 10), (1, 256, 4, 5)]


def test_perceptual_and_style_terms_with_random_weights(vgg_file):
    loss = InfillLoss("liu", vgg_weights_path=vgg_file)
    # the frozen VGG is a tool, not model state: it adds nothing to checkpoints
    assert loss.state_dict() == {} and list(loss.parameters()) == []
    batch = _batch()
    pred = _pred()
    total, terms = loss(pred, batch)
    total.backward()
    assert set(terms) == {"valid", "hole", "tv", "perceptual", "style"}
    assert terms["perceptual"] > 0 and terms["style"] > 0
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    weights = INFILL_PRESETS["liu"]
    assert total.item() == pytest.approx(float(sum(weights[k] * v for k, v in terms.items())), rel=1e-5)
    # a perfect prediction has no perceptual or style error
    _, perfect = loss(batch["y"].clone(), batch)
    assert perfect["perceptual"] == 0 and perfect["style"] == 0 and perfect["hole"] == 0


def test_balanced_weights_follow_shi_thresholds_in_mm_h():
    loss = NowcastLoss("mse", balanced=True)
    with pytest.raises(RuntimeError, match="set_decoder"):
        loss(_pred(), _batch())
    loss.set_decoder(lambda z: z * 10.0)  # normalised 0.1 == 1 mm/h
    rates = torch.tensor([0.0, 1.99, 2.0, 4.9, 5.0, 10.0, 29.0, 30.0, 80.0])
    y = (rates / 10.0).view(1, 1, 1, 1, -1)
    valid = torch.ones_like(y)
    valid[..., -1] = 0
    weights = loss.pixel_weights(y, valid > 0)
    assert weights.flatten().tolist() == [1.0, 1.0, 2.0, 2.0, 5.0, 10.0, 10.0, 30.0, 0.0]
    # errors of equal size cost more on heavy rain
    batch = {"y": y, "y_valid": valid}
    total, terms = loss(y + 0.1, batch)
    assert set(terms) == {"balanced_mse"}
    assert total.item() == pytest.approx(0.01 * (1 + 1 + 2 + 2 + 5 + 10 + 10 + 30) / 8, rel=1e-5)
    plain_total, _ = NowcastLoss("mse")(y + 0.1, batch)
    assert plain_total.item() == pytest.approx(0.01, rel=1e-5)


def test_nowcast_mae_and_mse_match_direct_masked_means():
    batch, pred = _batch(), _pred()
    valid = batch["y_valid"] == 1
    err = (pred - batch["y"]).detach()[valid]
    mse_total, mse_terms = NowcastLoss("mse")(pred, batch)
    mae_total, _ = NowcastLoss("mae")(pred, batch)
    both, both_terms = NowcastLoss("mse+mae")(pred, batch)
    assert mse_total.item() == pytest.approx(float((err**2).mean()), rel=1e-5)
    assert mae_total.item() == pytest.approx(float(err.abs().mean()), rel=1e-5)
    assert both.item() == pytest.approx((mse_total + mae_total).item(), rel=1e-5)
    assert set(both_terms) == {"mse", "mae"} and set(mse_terms) == {"mse"}


def test_missing_keys_and_shape_mismatch_are_named():
    batch, pred = _batch(), _pred()
    no_hole = {k: v for k, v in batch.items() if k != "hole"}
    with pytest.raises(KeyError, match="'hole'"):
        InfillLoss()(pred, no_hole)
    with pytest.raises(ValueError, match="batch\\['y'\\] has shape"):
        NowcastLoss()(pred[:, :1], batch)
    with pytest.raises(ValueError, match="unknown kind"):
        NowcastLoss("huber")


def test_infill_distance_l1_and_l2_against_a_direct_computation():
    batch, pred = _batch(seed=5), _pred(seed=6)
    valid = batch["y_valid"] > 0
    hole = (batch["hole"] > 0) & valid
    diff = (pred - batch["y"]).detach()
    n_valid = valid.sum()
    for distance, err in (("l1", diff.abs()), ("l2", diff.square())):
        _, terms = InfillLoss("valid_hole", distance=distance)(pred, batch)
        assert float(terms["hole"]) == pytest.approx(float(err[hole].sum() / n_valid), rel=1e-6)
        assert float(terms["valid"]) == pytest.approx(float(err[valid & ~hole].sum() / n_valid), rel=1e-6)
    with pytest.raises(ValueError, match=r"unknown distance 'l3'; choose one of \('l1', 'l2'\)"):
        InfillLoss("valid_hole", distance="l3")


def test_l2_rewards_the_mean_where_l1_rewards_dry_holes():
    """Why conf/task/infill.yaml trains with l2: in a hole where 1 pixel in 3 rains 3 (normalised),
    L1 is lowest for predicting dry (the median) while L2 is lowest at the mean, 1."""
    y = torch.tensor([0.0, 0.0, 3.0]).view(1, 1, 1, 1, 3)
    batch = {"y": y, "y_valid": torch.ones_like(y), "hole": torch.ones_like(y)}

    def hole_loss(distance: str, value: float) -> float:
        return float(InfillLoss("hole_only", distance=distance)(torch.full_like(y, value), batch)[0])

    assert hole_loss("l1", 0.0) < hole_loss("l1", 1.0)
    assert hole_loss("l2", 1.0) < hole_loss("l2", 0.0)
