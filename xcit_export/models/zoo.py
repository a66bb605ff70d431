"""The model zoo: every variant, its hyperparameters and its preprocessing, as data in one table.

Names follow timm (``xcit_small_12_p16_384``). Hyperparameters are from the XCiT paper, table 1,
and timm's variant functions; preprocessing is timm's pretrained config (ImageNet mean/std,
bicubic, crop_pct 1.0). Adding a variant is adding a row; adding an architecture is adding a
builder to ``_BUILDERS``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..errors import UnknownModelError

# What a deployed graph can return and take (models/deploy.py builds each; the run options offer them).
OUTPUTS = ("logits", "embedding", "tokens", "features")
INPUT_FORMATS = ("nchw", "nhwc", "nhwc-uint8", "nhwc-pm1")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor (timm's pretrained-config fields)."""

    input_size: tuple[int, int] = (224, 224)  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 1.0
    interpolation: str = "bicubic"

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
                "crop_pct": self.crop_pct, "interpolation": self.interpolation}


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry: architecture, its constructor arguments, preprocessing, and weight sources."""

    name: str
    arch: str
    kwargs: dict[str, Any]
    preprocessing: Preprocessing
    num_classes: int = 1000
    hub_id: str | None = None  # Hugging Face repo that holds timm's weights
    official_url: str | None = None  # facebookresearch/xcit release checkpoint
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def patch_size(self) -> int:
        return int(self.kwargs["patch_size"])

    def with_overrides(self, num_classes: int | None = None,
                       input_size: tuple[int, int] | None = None) -> "ModelSpec":
        """A copy with a custom class count and/or input size (e.g. 371 classes at 256x256)."""
        spec = self
        if num_classes is not None:
            if num_classes < 0:
                raise UnknownModelError(f"--num-classes must be >= 0 (0 = feature extractor), got {num_classes}")
            spec = replace(spec, num_classes=num_classes)
        if input_size is not None:
            h, w = input_size
            p = self.patch_size
            if h <= 0 or w <= 0 or h % p or w % p:
                raise UnknownModelError(
                    f"input size {h}x{w} does not fit {self.name}: height and width must be positive "
                    f"multiples of the patch size {p} (e.g. {max(p, h // p * p)}x{max(p, w // p * p)})")
            spec = replace(spec, preprocessing=replace(spec.preprocessing, input_size=(h, w)))
        return spec


# XCiT sizes: (embed_dim, depth, num_heads, eta, tokens_norm). eta is the LayerScale init
# (1e-5 for the 24-layer models); tokens_norm is False only for nano (timm PR #747).
_XCIT_SIZES: dict[str, tuple[int, int, int, float, bool]] = {
    "nano_12": (128, 12, 4, 1.0, False),
    "tiny_12": (192, 12, 4, 1.0, True),
    "tiny_24": (192, 24, 4, 1e-5, True),
    "small_12": (384, 12, 8, 1.0, True),
    "small_24": (384, 24, 8, 1e-5, True),
    "medium_24": (512, 24, 8, 1e-5, True),
    "large_24": (768, 24, 16, 1e-5, True),
}


def _xcit_rows() -> list[ModelSpec]:
    rows = []
    for size, (dim, depth, heads, eta, tokens_norm) in _XCIT_SIZES.items():
        for patch in (16, 8):
            for res in (224, 384):
                name = f"xcit_{size}_p{patch}_{res}"
                # timm's default tag (what timm.create_model(name, pretrained=True) fetches, so the Hugging
                # Face cache is shared with timm): fb_in1k at 224, the distilled fb_dist_in1k at 384 (the
                # only weights published there). tests/models/test_timm_parity.py checks it against timm.
                tag = "fb_in1k" if res == 224 else "fb_dist_in1k"
                rows.append(ModelSpec(
                    name=name,
                    arch="xcit",
                    kwargs=dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                                eta=eta, tokens_norm=tokens_norm),
                    preprocessing=Preprocessing(input_size=(res, res)),
                    hub_id=f"timm/{name}.{tag}",
                    official_url=f"https://dl.fbaipublicfiles.com/xcit/{name}{'' if res == 224 else '_dist'}.pth",
                    description=f"XCiT-{size.split('_')[0].capitalize()}{depth} {patch}x{patch} @ {res}",
                ))
    return rows


def _vit_rows() -> list[ModelSpec]:
    # ViT-S/16 as published beside XCiT (timm's default tag: AugReg, in21k -> in1k fine-tune),
    # with timm's ViT preprocessing: mean/std 0.5, crop_pct 0.9, bicubic.
    return [ModelSpec(
        name="vit_small_patch16_224",
        arch="vit",
        kwargs=dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
        preprocessing=Preprocessing(input_size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.9),
        hub_id="timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
        description="ViT-S/16 @ 224 (plain ViT beside XCiT in the same collections)",
    )]


def _build_xcit(spec: ModelSpec):
    from .xcit import Xcit

    return Xcit(num_classes=spec.num_classes, **spec.kwargs)


def _build_vit(spec: ModelSpec):
    from .vit import VisionTransformer

    return VisionTransformer(img_size=spec.preprocessing.input_size, num_classes=spec.num_classes, **spec.kwargs)


_BUILDERS: dict[str, Callable[[ModelSpec], Any]] = {"xcit": _build_xcit, "vit": _build_vit}

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _xcit_rows() + _vit_rows()}


def get_spec(name: str) -> ModelSpec:
    """The zoo entry for ``name``; an unknown name raises with the closest matches."""
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model '{name}'.{hint} Run 'xcit-export list-models' for all names.") from None


def build_model(spec: ModelSpec):
    """Instantiate the architecture for ``spec`` (random init, eval mode)."""
    return _BUILDERS[spec.arch](spec).eval()
