"""Check our reference XCiT against timm's implementation with the same state dict.

timm needs torchvision, which cannot be installed beside torch 2.13 here. timm's XCiT itself is
pure PyTorch; torchvision is only imported by unrelated modules (FrozenBatchNorm2d, transforms).
So this script installs an import stub for ``torchvision`` (any attribute is an inert class) and
imports timm from wherever it is installed (``pip install --no-deps timm huggingface_hub pyyaml``).
Nothing from the stub is executed by the XCiT code path.

Usage: python tools/timm_parity.py [--size 64] [MODEL ...]   (default: every model in the zoo)
Exit status is non-zero if any model differs by max |diff| >= 1e-4.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import sys
import types


class _AnyAttr(type):
    """Metaclass: every attribute of a stub class is another distinct stub class."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyAttr(name, (), {})


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyAttr(name, (), {})


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = _StubModule(spec.name)
        mod.__path__ = []
        return mod

    def exec_module(self, module):
        pass


def import_timm():
    sys.meta_path.insert(0, _TorchvisionStub())
    import timm  # noqa: F401

    return timm


def compare(name: str, size: int, timm) -> float:
    import torch

    from xcit_export.models.zoo import build_model, get_spec

    spec = get_spec(name)
    p = spec.patch_size
    size = max(p * 2, size // p * p)
    spec = spec.with_overrides(input_size=(size, size))
    torch.manual_seed(0)
    extra = {"img_size": size} if spec.arch == "vit" else {}  # ViT's position table is sized at build
    ref = timm.create_model(name, pretrained=False, **extra).eval()
    # Perturb every parameter and buffer so LayerScale, BN statistics and temperatures matter.
    with torch.no_grad():
        for t in list(ref.parameters()) + [b for b in ref.buffers() if b.dtype.is_floating_point]:
            t.add_(torch.randn_like(t) * 0.05)
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.abs_().add_(0.5)
    with torch.device("meta"):  # skip a second random init: every tensor comes from timm's state dict
        ours = build_model(spec)
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    return diff


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("models", nargs="*")
    args = ap.parse_args()
    timm = import_timm()
    from xcit_export.models.zoo import MODELS

    names = args.models or list(MODELS)
    worst = 0.0
    for name in names:
        d = compare(name, args.size, timm)
        worst = max(worst, d)
        print(f"{name:28s} max|ours - timm| = {d:.3e}  {'OK' if d < 1e-4 else 'FAIL'}")
    print(f"timm {timm.__version__}: worst {worst:.3e} over {len(names)} models")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
