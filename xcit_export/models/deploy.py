"""What gets exported: a backbone plus the chosen outputs and input convention, as one module.

Outputs (``--output``):

* ``logits``: the classifier head (default);
* ``embedding``: the pooled pre-logits feature (what a ``num_classes=0`` feature extractor gives);
* ``tokens``: every token after the final norm, class token first, ``(B, 1 + N, C)``;
* ``features``: four feature maps at strides 4, 8, 16, 32 for detection necks, built like XCiT's
  detection backbone (El-Nouby et al., section 4.3): tokens after four evenly spaced blocks are
  laid out as maps and resized by transposed convolutions / max-pooling. The resizing layers
  belong to the detection model, so they are initialised from the seed, not from a classifier
  checkpoint.

Input conventions (``--input-format``), baked into the graph so the device skips a CPU pass:

* ``nchw``: float32 NCHW, already normalised with the model's mean/std (the default);
* ``nhwc``: the same, channels-last;
* ``nhwc-uint8``: raw 8-bit RGB NHWC; scaling and mean/std normalisation happen in the graph;
* ``nhwc-pm1``: float32 NHWC in [-1, 1], TensorFlow Hub's convention for ViT and XCiT.

:func:`to_input_format` converts normalised NCHW evaluation or calibration data into any format,
so the PyTorch reference and every target see identical input values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .zoo import INPUT_FORMATS, OUTPUTS

# Blocks whose outputs feed the detection pyramid (official XCiT detection configs).
_PYRAMID_BLOCKS = {12: (3, 5, 7, 11), 24: (5, 11, 17, 23)}


def pyramid_blocks(depth: int) -> tuple[int, ...]:
    return _PYRAMID_BLOCKS.get(depth, tuple(round(depth * f) - 1 for f in (0.25, 0.5, 0.75, 1.0)))


class FeaturePyramid(nn.Module):
    """Resizes four stride-``patch`` maps to strides 4, 8, 16, 32 (fpn1..fpn4 as in XCiT's code)."""

    def __init__(self, embed_dim: int, patch_size: int):
        super().__init__()

        def up(times: int) -> nn.Module:
            layers: list[nn.Module] = [nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2)]
            if times == 2:
                layers += [nn.BatchNorm2d(embed_dim), nn.GELU(), nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2)]
            return nn.Sequential(*layers)

        if patch_size == 16:
            self.fpn1, self.fpn2, self.fpn3, self.fpn4 = up(2), up(1), nn.Identity(), nn.MaxPool2d(2, 2)
        elif patch_size == 8:
            self.fpn1, self.fpn2, self.fpn3, self.fpn4 = up(1), nn.Identity(), nn.MaxPool2d(2, 2), nn.MaxPool2d(4, 4)
        else:
            raise ValueError(f"feature pyramid needs patch size 8 or 16, got {patch_size}")

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(f(m) for f, m in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), maps))


def seeds_parameters(output: str) -> bool:
    """Whether :class:`DeployModel` initialises parameters of its own from the seed for ``output``
    (the feature pyramid): then the seed decides the exported graph even for checkpoint weights."""
    return output == "features"


def output_names(output: str) -> list[str]:
    if output == "features":
        return ["features_s4", "features_s8", "features_s16", "features_s32"]
    return [output]


class DeployModel(nn.Module):
    """Backbone + input conversion + selected outputs; ``output_names`` names the ONNX outputs."""

    def __init__(self, backbone: nn.Module, preprocessing, output: str = "logits", input_format: str = "nchw",
                 seed: int = 0, dynamic_size: bool = False):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input format must be one of {INPUT_FORMATS}, got {input_format!r}")
        self.backbone = backbone.eval()
        # Any input size (--dynamic-size): a backbone with a size-bound part (ViT's position table)
        # resamples it to the input's grid at run time, as timm's dynamic_img_size does.
        self.dynamic_size = dynamic_size
        if dynamic_size and hasattr(backbone, "dynamic_img_size"):
            backbone.dynamic_img_size = True
        self.output = output
        self.input_format = input_format
        self.output_names = output_names(output)
        h, w = preprocessing.input_size
        self.input_shape = (3, h, w) if input_format == "nchw" else (h, w, 3)
        self.input_dtype = torch.uint8 if input_format == "nhwc-uint8" else torch.float32
        mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
        std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
        # x_norm = x * scale + shift, folded into one multiply-add in the graph.
        if input_format == "nhwc-uint8":
            scale, shift = 1.0 / (255.0 * std), -mean / std
        elif input_format == "nhwc-pm1":  # x = 2 * pixel01 - 1
            scale, shift = 0.5 / std, (0.5 - mean) / std
        else:
            scale, shift = torch.ones_like(std), torch.zeros_like(mean)
        self.register_buffer("in_scale", scale, persistent=False)
        self.register_buffer("in_shift", shift, persistent=False)
        if seeds_parameters(output):
            torch.manual_seed(seed)
            self.neck = FeaturePyramid(backbone.embed_dim, backbone.patch_size).eval()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_format == "nchw":
            return x
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        if self.input_format == "nhwc":
            return x
        return x * self.in_scale + self.in_shift

    def forward(self, x: torch.Tensor):
        x = self.normalise(x)
        if self.output == "logits":
            return self.backbone(x)
        if self.output == "features":
            return self.neck(self.backbone.forward_intermediates(x, pyramid_blocks(self.backbone.depth)))
        tokens = self.backbone.forward_features(x)
        if self.output == "tokens":
            return tokens
        return self.backbone.forward_head(tokens, pre_logits=True)


def to_input_format(x: np.ndarray, input_format: str, preprocessing) -> np.ndarray:
    """Normalised NCHW float32 -> the given input format (the inverse of the graph's conversion)."""
    if input_format == "nchw":
        return x
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if input_format == "nhwc":
        return nhwc
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    pixel01 = np.clip(nhwc * std + mean, 0.0, 1.0)
    if input_format == "nhwc-uint8":
        return np.round(pixel01 * 255.0).astype(np.uint8)
    return (pixel01 * 2.0 - 1.0).astype(np.float32)
