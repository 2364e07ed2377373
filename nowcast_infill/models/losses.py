"""Training losses for infilling and nowcasting.

Every loss is called as `loss(pred, batch) -> (total, terms)`:
    pred: `(B, T_out, 1, H, W)` raw network output in normalised units.
    batch: the sample dict of docs/schema.md, batched; uses `y`, `y_valid` and (infill)
        `hole`, all `(B, T_out, 1, H, W)`.
    total: scalar tensor to back-propagate.
    terms: unweighted components, detached, for logging (e.g. `{"valid": ..., "hole": ...}`).

Only pixels with `y_valid == 1` contribute. pred and y are replaced by 0 where the
target is no-data *before* any arithmetic (via `torch.where`, whose gradient there is
exactly 0), so garbage, even NaN, in pred or y at no-data pixels changes neither the
loss nor the gradient. Means divide by `max(count, 1)`, so a batch without a valid
target pixel gives a finite 0 with zero gradient.

Losses are registered as kind `loss` (`nowcast_infill.registry`): build one with
`registry.get_method("loss", name, **options)`; a new loss is one `RadarLoss` subclass plus
one `register("loss", name, cls)` line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nowcast_infill.models.components.vgg import VGG16Features, radar_to_vgg_input
from nowcast_infill.registry import register

INFILL_TERMS = ("valid", "hole", "tv", "perceptual", "style")
INFILL_DISTANCES = ("l1", "l2")

# Weights of the infilling terms; Liu et al. 2018, "Image Inpainting for Irregular Holes
# Using Partial Convolutions", eq. 7 gives the `liu` values.
INFILL_PRESETS: dict[str, dict[str, float]] = {
    "liu": {"valid": 1.0, "hole": 6.0, "tv": 0.1, "perceptual": 0.05, "style": 120.0},
    "hole_only": {"valid": 0.0, "hole": 1.0, "tv": 0.0, "perceptual": 0.0, "style": 0.0},
    "valid_hole": {"valid": 1.0, "hole": 6.0, "tv": 0.0, "perceptual": 0.0, "style": 0.0},
}

# Shi et al. 2017, "Deep Learning for Precipitation Nowcasting: A Benchmark and a New
# Model" (HKO-7), balanced MSE/MAE: weight 1 below 2 mm/h, 2 from 2, 5 from 5, 10 from
# 10 and 30 from 30 mm/h, so heavy rain, rare in the data, is not drowned by drizzle.
SHI_THRESHOLDS_MM_H = (2.0, 5.0, 10.0, 30.0)
SHI_WEIGHTS = (1.0, 2.0, 5.0, 10.0, 30.0)


def _get(batch: dict, key: str, like: torch.Tensor, loss_name: str) -> torch.Tensor:
    if key not in batch:
        raise KeyError(
            f"{loss_name}: batch has no '{key}' (keys: {sorted(batch)}); see docs/schema.md "
            "§ Samples for the keys each task provides."
        )
    value = batch[key]
    if value.shape != like.shape:
        raise ValueError(
            f"{loss_name}: batch['{key}'] has shape {tuple(value.shape)} but pred has {tuple(like.shape)}; "
            "pred must be (B, T_out, 1, H, W) like the target."
        )
    return value


def _valid_pair(pred: torch.Tensor, batch: dict, loss_name: str):
    """(pred, y) with 0 at no-data targets, the bool valid mask and max(#valid, 1)."""
    if pred.ndim != 5 or pred.shape[2] != 1:
        raise ValueError(f"{loss_name}: pred must be (B, T_out, 1, H, W), got shape {tuple(pred.shape)}.")
    y = _get(batch, "y", pred, loss_name)
    valid = _get(batch, "y_valid", pred, loss_name) > 0.5
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    pred_v = torch.where(valid, pred, zero)
    y_v = torch.where(valid, y.to(pred.dtype), zero)
    n_valid = valid.sum().clamp(min=1).to(pred.dtype)
    return pred_v, y_v, valid, n_valid


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix `(N, C, C)` of features `(N, C, H, W)`, normalised by C*H*W (Liu et al. K_p)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w).float()  # float32 even under autocast: sums of h*w products
    return flat @ flat.transpose(1, 2) / (c * h * w)


class RadarLoss(nn.Module):
    """Base of the training losses: `loss(pred, batch) -> (total, terms)` (module docstring)."""

    def set_decoder(self, decode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Receive the map normalised -> mm/h (`Normalizer.decode`); the training module calls
        it once the normaliser is known. Losses computed in normalised units ignore it."""


class InfillLoss(RadarLoss):
    """Liu et al. (2018) infilling loss on radar fields, restricted to valid targets.

    Terms, each a sum over pixels divided by the number of valid target pixels (Liu
    divide by the pixel count of the image; here no-data pixels are not part of the
    image), so the preset weights keep Liu's meaning:
      valid: d(pred, y) on observed valid pixels (y_valid & ~hole);
      hole: d(pred, y) on hole pixels;
      tv: total variation of the composite (pred in holes, y elsewhere) over pixel pairs
          that both lie in the 1-pixel (3x3) dilation of the hole and are valid;
      perceptual: mean L1 between VGG16 pool1/2/3 features of output and truth plus of
          composite and truth (summed over the three layers);
      style: the same with Gram matrices of those features.
    pred must be the raw network output, not already composited with the observations
    (the valid term would then have no gradient).

    d is `distance`: `l1` = |pred - y| as in Liu et al., or `l2` = (pred - y)^2. Rain fields
    are mostly dry, so in a hole the conditional median (what L1 rewards) is often "no
    rain" even beside a storm; L2 rewards the conditional mean, which is what RMSE scores
    (the metric of the infilling study). A network that can model the hole well enough
    under L1 learns to predict dry holes: our ConvLSTM variants did (CSI 0 at 0.1 mm/h).

    Weights come from `preset` (`liu`, `hole_only`, `valid_hole`), each overridable; a
    weight of 0 skips its term. Perceptual/style need `vgg_weights_path` (a torchvision
    vgg16 state dict) and fail here, at construction, without it. The network sees no-data
    pixels as 0 in output, composite and truth alike, so they add no feature difference.
    """

    def __init__(
        self,
        preset: str = "valid_hole",
        valid: float | None = None,
        hole: float | None = None,
        tv: float | None = None,
        perceptual: float | None = None,
        style: float | None = None,
        vgg_weights_path: str | None = None,
        distance: str = "l1",
    ) -> None:
        super().__init__()
        if distance not in INFILL_DISTANCES:
            raise ValueError(f"InfillLoss: unknown distance {distance!r}; choose one of {INFILL_DISTANCES}.")
        if preset not in INFILL_PRESETS:
            raise ValueError(f"InfillLoss: unknown preset {preset!r}; valid presets: {sorted(INFILL_PRESETS)}.")
        weights = dict(INFILL_PRESETS[preset])
        overrides = {"valid": valid, "hole": hole, "tv": tv, "perceptual": perceptual, "style": style}
        for name, value in overrides.items():
            if value is not None:
                if not float(value) >= 0:
                    raise ValueError(f"InfillLoss: weight `{name}` must be >= 0, got {value}.")
                weights[name] = float(value)
        if not any(weights.values()):
            raise ValueError(f"InfillLoss: every term weight is 0 (preset {preset!r} with overrides {overrides}).")
        self.preset = preset
        self.distance = distance
        self.weights = weights
        self._vgg: VGG16Features | None = None
        if weights["perceptual"] > 0 or weights["style"] > 0:
            # Kept out of the module tree on purpose: the frozen VGG is a fixed tool, not
            # part of the model, so it stays out of checkpoints, the parameter count and
            # DDP; `_features` moves it to the input's device on first use.
            object.__setattr__(self, "_vgg", VGG16Features.from_file(vgg_weights_path, option="vgg_weights_path"))

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, distance={self.distance!r}, weights={self.weights}"

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        vgg = self._vgg
        assert vgg is not None  # built in __init__ whenever a perceptual/style weight is > 0
        if next(vgg.parameters()).device != images.device:
            vgg.to(images.device)
        return vgg(radar_to_vgg_input(images))

    def forward(self, pred: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """pred `(B, T, 1, H, W)` normalised; see the module docstring for batch and the result."""
        pred_v, y_v, valid, n_valid = _valid_pair(pred, batch, "InfillLoss")
        hole = (_get(batch, "hole", pred, "InfillLoss") > 0.5) & valid
        zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
        diff = pred_v - y_v
        err = diff.abs() if self.distance == "l1" else diff.square()
        terms: dict[str, torch.Tensor] = {}
        if self.weights["valid"] > 0:
            terms["valid"] = torch.where(valid & ~hole, err, zero).sum() / n_valid
        if self.weights["hole"] > 0:
            terms["hole"] = torch.where(hole, err, zero).sum() / n_valid

        composite = torch.where(hole, pred_v, y_v).flatten(0, 1)  # (B*T, 1, H, W)
        if self.weights["tv"] > 0:
            hole_f = hole.flatten(0, 1).to(pred.dtype)
            region = (F.max_pool2d(hole_f, 3, stride=1, padding=1) > 0) & valid.flatten(0, 1)
            pair_x = region[..., :, 1:] & region[..., :, :-1]
            pair_y = region[..., 1:, :] & region[..., :-1, :]
            dx = torch.where(pair_x, (composite[..., :, 1:] - composite[..., :, :-1]).abs(), zero)
            dy = torch.where(pair_y, (composite[..., 1:, :] - composite[..., :-1, :]).abs(), zero)
            terms["tv"] = (dx.sum() + dy.sum()) / n_valid

        if self.weights["perceptual"] > 0 or self.weights["style"] > 0:
            h, w = pred.shape[-2:]
            if h < 8 or w < 8:
                raise ValueError(
                    f"InfillLoss: perceptual/style need frames of at least 8x8 pixels (VGG pool3), got {h}x{w}."
                )
            n = composite.shape[0]
            feats = self._features(torch.cat([pred_v.flatten(0, 1), composite, y_v.flatten(0, 1)]))
            perceptual = style = pred.new_zeros(())
            for f in feats:
                f_out, f_comp, f_gt = f[:n], f[n : 2 * n], f[2 * n :]
                perceptual = perceptual + (f_out - f_gt).abs().mean() + (f_comp - f_gt).abs().mean()
                if self.weights["style"] > 0:
                    g_out, g_comp, g_gt = gram_matrix(f_out), gram_matrix(f_comp), gram_matrix(f_gt)
                    style = style + (g_out - g_gt).abs().mean() + (g_comp - g_gt).abs().mean()
            if self.weights["perceptual"] > 0:
                terms["perceptual"] = perceptual
            if self.weights["style"] > 0:
                terms["style"] = style

        total = sum(self.weights[name] * value for name, value in terms.items())
        assert isinstance(total, torch.Tensor)  # __init__ rejects all-zero weights, so terms is not empty
        return total, {name: value.detach() for name, value in terms.items()}


class NowcastLoss(RadarLoss):
    """Masked MSE / MAE of the normalised forecast, optionally intensity-weighted.

    kind: `mse`, `mae`, or `mse+mae` (the sum, as Shi et al. 2017 train with B-MSE + B-MAE).
    balanced: weight each pixel's error by the rain rate of its truth, decoded to mm/h:
        weight `weights[i]` from `thresholds[i-1]` mm/h (>=) on, `weights[0]` below the
        first threshold (defaults: Shi et al. 2017). The error stays in normalised units;
        only the weights use mm/h, so the module must hand over its normaliser's decode
        with `set_decoder(normalizer.decode)` (or `decode=` here) before training.
    Each term is sum(weight * error) over valid target pixels / number of valid target
    pixels, so heavy rain adds to, rather than redistributes, the loss.
    """

    KINDS = ("mse", "mae", "mse+mae")
    # buffers registered in __init__
    thresholds_mm_h: torch.Tensor
    rate_weights: torch.Tensor

    def __init__(
        self,
        kind: str = "mse",
        balanced: bool = False,
        thresholds: Sequence[float] = SHI_THRESHOLDS_MM_H,
        weights: Sequence[float] = SHI_WEIGHTS,
        decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"NowcastLoss: unknown kind {kind!r}; valid kinds: {list(self.KINDS)}.")
        thresholds, weights = [float(t) for t in thresholds], [float(w) for w in weights]
        if len(weights) != len(thresholds) + 1:
            raise ValueError(
                f"NowcastLoss: need one more weight than thresholds (a weight below the first threshold), "
                f"got thresholds={thresholds}, weights={weights}."
            )
        if any(b <= a for a, b in zip(thresholds, thresholds[1:], strict=False)):
            raise ValueError(f"NowcastLoss: thresholds must be strictly increasing mm/h values, got {thresholds}.")
        if any(w < 0 for w in weights):
            raise ValueError(f"NowcastLoss: weights must be >= 0, got {weights}.")
        self.kind = kind
        self.balanced = bool(balanced)
        self.register_buffer("thresholds_mm_h", torch.tensor(thresholds), persistent=False)
        self.register_buffer("rate_weights", torch.tensor(weights), persistent=False)
        self.decode = decode

    def set_decoder(self, decode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Set the map normalised -> mm/h used for the balanced weights (e.g. `Normalizer.decode`)."""
        if not callable(decode):
            raise TypeError(f"NowcastLoss.set_decoder: expected a callable, got {type(decode).__name__}.")
        self.decode = decode

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, balanced={self.balanced}"

    def pixel_weights(self, y_v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-pixel weights `(B, T, 1, H, W)`: 0 at no-data targets, rate-based if balanced."""
        if not self.balanced:
            return valid.to(y_v.dtype)
        if self.decode is None:
            raise RuntimeError(
                "NowcastLoss(balanced=True) needs the normaliser's decode to weight by rain rate in mm/h: "
                "call loss.set_decoder(datamodule.normalizer.decode) before training "
                "(RadarModule does this in setup), or use balanced=False."
            )
        with torch.no_grad():
            rate_mm_h = self.decode(y_v)
            thresholds = self.thresholds_mm_h.to(device=y_v.device, dtype=rate_mm_h.dtype)
            idx = torch.bucketize(rate_mm_h.contiguous(), thresholds, right=True)
            weights = self.rate_weights.to(y_v.device, y_v.dtype)[idx]
            return torch.where(valid, weights, torch.zeros((), dtype=y_v.dtype, device=y_v.device))

    def forward(self, pred: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """pred `(B, T, 1, H, W)` normalised; see the module docstring for batch and the result."""
        pred_v, y_v, valid, n_valid = _valid_pair(pred, batch, "NowcastLoss")
        weights = self.pixel_weights(y_v, valid)
        err = pred_v - y_v
        prefix = "balanced_" if self.balanced else ""
        terms = {}
        if self.kind in ("mse", "mse+mae"):
            terms[prefix + "mse"] = (weights * err * err).sum() / n_valid
        if self.kind in ("mae", "mse+mae"):
            terms[prefix + "mae"] = (weights * err.abs()).sum() / n_valid
        total = sum(terms.values())
        return total, {name: value.detach() for name, value in terms.items()}


register("loss", "infill", InfillLoss)
register("loss", "nowcast", NowcastLoss)
