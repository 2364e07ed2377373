"""The first three blocks of VGG16 (Simonyan & Zisserman 2015) as a frozen feature extractor.

Used by the perceptual and style terms of the infilling loss (Liu et al. 2018 use the
pool1, pool2 and pool3 outputs). torchvision cannot be installed beside our torch, so
the layers are defined here with the indices of torchvision's `vgg16().features`
Sequential: a torchvision state dict (`features.N.weight` / `features.N.bias`) loads
directly. Weights are never downloaded at run time; they come from a local file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

# (in_channels, out_channels) of each 3x3 conv, "M" = 2x2 max pool; the VGG16
# configuration "D" up to and including the third pooling layer.
_VGG16_BLOCKS_1_TO_3: list[tuple[int, int] | Literal["M"]] = [
    (3, 64),
    (64, 64),
    "M",
    (64, 128),
    (128, 128),
    "M",
    (128, 256),
    (256, 256),
    (256, 256),
    "M",
]

# ImageNet statistics the torchvision VGG16 weights were trained with (RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HOW_TO_GET_WEIGHTS = (
    "Create the file on a machine with torchvision: "
    "`python -c \"import torch, torchvision; torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1')"
    ".state_dict(), 'vgg16.pth')\"`, copy it here and pass its path as the loss option `vgg_weights_path`, "
    "or set the perceptual and style weights to 0."
)


class VGG16Features(nn.Module):
    """Frozen VGG16 blocks 1-3 returning the pool1, pool2 and pool3 feature maps.

    forward(images `(N, 3, H, W)`, ImageNet-standardised RGB) ->
        [pool1 `(N, 64, H/2, W/2)`, pool2 `(N, 128, H/4, W/4)`, pool3 `(N, 256, H/8, W/8)`].
    """

    # indices in `features` right after which a feature map is returned (the max pools)
    POOL_INDICES = (4, 9, 16)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for spec in _VGG16_BLOCKS_1_TO_3:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(spec[0], spec[1], kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        assert len(self.features) == self.POOL_INDICES[-1] + 1

    @classmethod
    def from_file(cls, path: str | Path | None, option: str = "vgg_weights_path") -> VGG16Features:
        """Load weights from a torchvision-compatible state dict file; frozen, eval mode.

        Raises FileNotFoundError / ValueError naming `option`, the file and how to obtain
        it when the path is missing or the file lacks (or mis-shapes) the needed keys.
        Extra keys (deeper layers, the classifier) are ignored.
        """
        if path is None or str(path) == "":
            raise FileNotFoundError(
                f"`{option}` is not set but the perceptual/style loss needs VGG16 weights. {HOW_TO_GET_WEIGHTS}"
            )
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: VGG16 weights file given as `{option}` does not exist. {HOW_TO_GET_WEIGHTS}"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unreadable file gets the same actionable message
            raise ValueError(
                f"{path}: cannot read `{option}` as a torch state dict ({err}). {HOW_TO_GET_WEIGHTS}"
            ) from err
        if not isinstance(state, dict):
            raise ValueError(
                f"{path}: `{option}` holds a {type(state).__name__}, expected a state dict. {HOW_TO_GET_WEIGHTS}"
            )
        model = cls()
        wanted = model.state_dict()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise ValueError(
                f"{path}: `{option}` lacks the VGG16 keys {missing[:4]}{'...' if len(missing) > 4 else ''} "
                f"(expected torchvision vgg16 keys `features.N.weight/bias`). {HOW_TO_GET_WEIGHTS}"
            )
        wrong = [
            f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in wanted.items() if state[k].shape != v.shape
        ]
        if wrong:
            raise ValueError(
                f"{path}: `{option}` has VGG16 tensors of the wrong shape: {wrong[:3]}. {HOW_TO_GET_WEIGHTS}"
            )
        model.load_state_dict({k: state[k] for k in wanted})
        model.requires_grad_(False)
        return model.eval()

    def train(self, mode: bool = True) -> VGG16Features:
        # a fixed feature extractor: never switch to training mode with the model around it
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        x = images
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in self.POOL_INDICES:
                feats.append(x)
        return feats


def radar_to_vgg_input(z: torch.Tensor) -> torch.Tensor:
    """Normalised single-channel radar `(N, 1, H, W)` -> VGG input `(N, 3, H, W)`.

    The normalised value is read as a grey intensity on VGG's [0, 1] scale (the
    log1p-based normaliser puts typical rain within a few units of 0), repeated to the
    three RGB channels and standardised with the ImageNet mean and std the weights were
    trained with: `(z - mean_c) / std_c`. Only differences of features between images
    matter for the losses, so the exact offset is not critical; the scale keeps
    activations in the range the weights expect.
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=z.dtype, device=z.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=z.dtype, device=z.device).view(1, 3, 1, 1)
    return (z.expand(-1, 3, -1, -1) - mean) / std
