"""The export form of a model: the same function, written so that runtimes fuse more and move less.

:func:`export_form` returns a rewritten *copy* of a model (the reference it was given is untouched)
that :func:`xcit_export.export.export_onnx` traces instead of the reference. Nothing it does changes
what the model computes, only the order of floating-point operations; the export's parity check
against the untouched reference (``PARITY_ATOL``) still decides whether the ONNX is accepted.

Rewrites, and why (per-operator profiles before and after are in BENCHMARKS.md, "Export form"):

* **Cross-covariance attention, channel-major.** The reference computes ``qkv = Linear(x)`` on
  token-major ``(B, N, 3C)`` and permutes it to ``(3, B, heads, C/heads, N)``: a 5-D Transpose per
  block that OpenVINO's CPU plugin runs on its slow reference kernel (``unknown_f32``; 14% of an
  FP32 nano inference) and that onnxruntime runs as a separate Transpose. The export form computes
  ``qkv^T = W @ x^T`` directly, ``(B, 3C, N)``, whose head split is a free Reshape; the only transpose
  left is ``x^T``, which both runtimes fold into the MatMul (OpenVINO ``transpose_b``, onnxruntime
  ``FusedMatMul``). The attention output ``(B, C, N)`` enters ``proj`` through a last-two-axes
  transpose, which folds the same way.
* **LayerScale folded into the preceding weights.** In every XCA block ``x + gamma * f(x)`` becomes
  ``x + f'(x)`` with ``gamma`` multiplied into the rows of ``attn.proj``, the output channels of the
  LPI's second depth-wise convolution and the rows of ``mlp.fc2`` (weights and biases). That is
  exact in real arithmetic (a per-output-channel scale commutes with the affine map) and moves one
  rounding. In class-attention blocks only ``gamma2`` folds (into ``mlp.fc2``): ``gamma1`` also
  scales the untouched patch tokens, so it stays a multiply.
* **GELU in the order onnxruntime fuses.** The dynamo exporter decomposes ``nn.GELU`` as
  ``x * (0.5 * (1 + erf(x / sqrt 2)))``, a form onnxruntime's ``GeluFusion`` does not match, so 29
  Erf chains ran as five element-wise kernels each. ``(0.5 * x) * (1 + erf(x / sqrt 2))`` is the
  BERT form it fuses into one ``Gelu`` (and, after a MatMul, ``BiasGelu``); OpenVINO fuses both.

The rewritten modules keep their parameters' names and shapes: a state dict of the export form is
a state dict of the reference, with the LayerScale vectors set to one.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .xcit import XCA, ClassAttentionBlock, XCABlock

# Part of the ONNX build key (pipeline.prepare_onnx): bump it when a rewrite changes the graph.
FORM_VERSION = 1


class ExportXCA(XCA):
    """XCA with ``qkv`` computed channel-major, ``(B, 3C, N)``: no 5-D permute (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        h = self.num_heads
        qkv = torch.matmul(self.qkv.weight, x.transpose(1, 2))  # (B, 3C, N)
        if self.qkv.bias is not None:
            qkv = qkv + self.qkv.bias[:, None]
        q, k, v = qkv.reshape(B, 3, h, C // h, N).unbind(1)  # each (B, h, C', N), as the reference's
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        attn = attn.softmax(dim=-1)
        out = (attn @ v).reshape(B, C, N)
        return self.proj(out.transpose(1, 2))


class ExportXCABlock(XCABlock):
    """XCA block whose LayerScale vectors were folded into ``attn.proj``, ``conv2`` and ``fc2``."""

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.local_mp(self.norm3(x), H, W)
        return x + self.mlp(self.norm2(x))


class ExportClassAttentionBlock(ClassAttentionBlock):
    """Class-attention block with ``gamma2`` folded into ``mlp.fc2`` (``gamma1`` stays)."""

    def _cls_mlp(self, cls: torch.Tensor) -> torch.Tensor:
        return self.mlp(cls)


class ExportGELU(nn.GELU):
    """Exact (erf) GELU written as ``(0.5 * x) * (1 + erf(x / sqrt 2))``, the form ORT fuses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * x) * (1.0 + torch.erf(x / math.sqrt(2.0)))


@torch.no_grad()
def _scale_rows(layer: nn.Module, gamma: torch.Tensor) -> None:
    """Multiply output channel ``i`` of a Linear or Conv (weight and bias) by ``gamma[i]``."""
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    layer.weight.mul_(gamma.view(shape))
    if layer.bias is not None:
        layer.bias.mul_(gamma)


@torch.no_grad()
def export_form(model: nn.Module) -> nn.Module:
    """A rewritten deep copy of ``model`` for tracing (module docstring); ``model`` is not modified.

    Modules other than XCiT's (ViT, detection necks) pass through, apart from exact GELUs.
    """
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if type(module) is XCABlock:
            _scale_rows(module.attn.proj, module.gamma1)
            _scale_rows(module.local_mp.conv2, module.gamma3)
            _scale_rows(module.mlp.fc2, module.gamma2)
            for gamma in (module.gamma1, module.gamma2, module.gamma3):
                gamma.fill_(1.0)
            module.__class__ = ExportXCABlock
        elif type(module) is ClassAttentionBlock:
            _scale_rows(module.mlp.fc2, module.gamma2)
            module.gamma2.fill_(1.0)
            module.__class__ = ExportClassAttentionBlock
        elif type(module) is XCA:
            module.__class__ = ExportXCA
        elif type(module) is nn.GELU and module.approximate == "none":
            module.__class__ = ExportGELU
    return model
