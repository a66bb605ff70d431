"""XCiT: Cross-Covariance Image Transformers, our reference PyTorch implementation.

Paper: El-Nouby et al., "XCiT: Cross-Covariance Image Transformers", NeurIPS 2021,
https://arxiv.org/abs/2106.09681 (official code: facebookresearch/xcit).

The module names and parameter layout follow timm's ``timm/models/xcit.py`` exactly, so a timm
state dict loads key-for-key; official facebookresearch checkpoints are converted by
:func:`xcit_export.models.weights.official_to_timm` (fused class-attention qkv, ``pos_embeder`` naming).

Two deliberate differences from timm, both export-driven and numerically equivalent:

* attention is written as explicit ``matmul -> softmax -> matmul``; no
  ``scaled_dot_product_attention``, which older ONNX opsets and some runtimes cannot map and which
  hides the XCA temperature inside a fused op that quantizers cannot see;
* the Fourier positional encoding is computed from the feature-map size with plain tensor ops:
  at a static export size the exporter folds it into a constant; with ``--dynamic-size`` the grid
  size is symbolic and the encoding is traced as a small subgraph (``Range`` -> ``Div`` ->
  ``Sin``/``Cos`` -> 1x1 conv) that the runtime computes for whatever size it is given.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


def init_linear_(model: nn.Module) -> None:
    """timm's and the official init for every Linear: truncated normal (std .02), zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PositionalEncodingFourier(nn.Module):
    """Sinusoidal 2-D positional encoding projected to ``dim`` channels (paper, section 3.3)."""

    def __init__(self, hidden_dim: int = 32, dim: int = 768, temperature: float = 10000.0):
        super().__init__()
        self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)
        self.scale = 2 * math.pi
        self.temperature = temperature
        self.hidden_dim = hidden_dim
        self.dim = dim
        self.eps = 1e-6

    def forward(self, B: int, H: int, W: int) -> torch.Tensor:
        device = self.token_projection.weight.device
        dtype = self.token_projection.weight.dtype
        y_embed = torch.arange(1, H + 1, device=device, dtype=torch.float32).view(1, H, 1).expand(1, H, W)
        x_embed = torch.arange(1, W + 1, device=device, dtype=torch.float32).view(1, 1, W).expand(1, H, W)
        y_embed = y_embed / (y_embed[:, -1:, :] + self.eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.hidden_dim, device=device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.hidden_dim)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack([pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()], dim=4).flatten(3)
        pos_y = torch.stack([pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()], dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
        pos = self.token_projection(pos.to(dtype))
        return pos.expand(B, -1, -1, -1)  # (B, C, H, W)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution + BatchNorm, the unit of the convolutional patch embedding."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class ConvPatchEmbed(nn.Module):
    """Patch embedding by a stack of stride-2 3x3 convolutions (4 for p16, 3 for p8)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768, act_layer=nn.GELU):
        super().__init__()
        self.patch_size = patch_size
        if patch_size == 16:
            self.proj = nn.Sequential(
                conv3x3(in_chans, embed_dim // 8, 2),
                act_layer(),
                conv3x3(embed_dim // 8, embed_dim // 4, 2),
                act_layer(),
                conv3x3(embed_dim // 4, embed_dim // 2, 2),
                act_layer(),
                conv3x3(embed_dim // 2, embed_dim, 2),
            )
        elif patch_size == 8:
            self.proj = nn.Sequential(
                conv3x3(in_chans, embed_dim // 4, 2),
                act_layer(),
                conv3x3(embed_dim // 4, embed_dim // 2, 2),
                act_layer(),
                conv3x3(embed_dim // 2, embed_dim, 2),
            )
        else:
            raise ValueError(f"XCiT patch size must be 8 or 16, got {patch_size}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        Hp, Wp = x.shape[2], x.shape[3]
        return x.flatten(2).transpose(1, 2), (Hp, Wp)  # (B, N, C)


class Mlp(nn.Module):
    """Two-layer perceptron with GELU (timm's ``Mlp`` parameter names: fc1, fc2)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LPI(nn.Module):
    """Local Patch Interaction: two depth-wise 3x3 convolutions on the token grid (section 3.2)."""

    def __init__(self, in_features: int, act_layer=nn.GELU, kernel_size: int = 3):
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding, groups=in_features)
        self.act = act_layer()
        self.bn = nn.BatchNorm2d(in_features)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding, groups=in_features)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        x = x.permute(0, 2, 1).reshape(B, C, H, W)
        x = self.conv2(self.bn(self.act(self.conv1(x))))
        return x.reshape(B, C, N).permute(0, 2, 1)


class ClassAttn(nn.Module):
    """Class attention (CaiT): only the class token queries; q, k, v kept as separate Linears."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x[:, 0]).reshape(B, 1, h, C // h).permute(0, 2, 1, 3)
        k = self.k(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        v = self.v(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x_cls = (attn @ v).transpose(1, 2).reshape(B, 1, C)
        return self.proj(x_cls)


class ClassAttentionBlock(nn.Module):
    """Class-attention layer; ``tokens_norm`` also normalises patch tokens (timm PR #747)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, act_layer=nn.GELU,
                 norm_layer=nn.LayerNorm, eta=1.0, tokens_norm=False):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = ClassAttn(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        self.gamma1 = nn.Parameter(eta * torch.ones(dim))
        self.gamma2 = nn.Parameter(eta * torch.ones(dim))
        self.tokens_norm = tokens_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm1 = self.norm1(x)
        x_attn = torch.cat([self.attn(x_norm1), x_norm1[:, 1:]], dim=1)
        x = x + self.gamma1 * x_attn
        if self.tokens_norm:
            x = self.norm2(x)
        else:
            x = torch.cat([self.norm2(x[:, 0:1]), x[:, 1:]], dim=1)
        x_res = x
        x = torch.cat([self._cls_mlp(x[:, 0:1]), x[:, 1:]], dim=1)
        return x_res + x

    def _cls_mlp(self, cls: torch.Tensor) -> torch.Tensor:
        """The class token's MLP branch, LayerScale included (the export form folds ``gamma2``)."""
        return self.gamma2 * self.mlp(cls)


class XCA(nn.Module):
    """Cross-covariance attention: attention over channels, with L2-normalised q, k over tokens.

    The normalisation runs over all N tokens (196 at p16/224, 2,304 at p8/384), which is why the
    FP16 precision pass keeps it in FP32.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        # (3, B, heads, C', N): channels per head attend to each other across tokens.
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        attn = attn.softmax(dim=-1)
        x = (attn @ v).permute(0, 3, 1, 2).reshape(B, N, C)
        return self.proj(x)


class XCABlock(nn.Module):
    """XCA -> LPI -> MLP, each pre-normed and scaled by a LayerScale ``gamma``.

    The official code names the LPI branch ``norm3``/``gamma3`` and the MLP ``norm2``/``gamma2``;
    the names are kept so checkpoints load unchanged.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, act_layer=nn.GELU,
                 norm_layer=nn.LayerNorm, eta=1.0):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = XCA(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.gamma1 = nn.Parameter(eta * torch.ones(dim))
        self.norm3 = norm_layer(dim)
        self.local_mp = LPI(in_features=dim, act_layer=act_layer)
        self.gamma3 = nn.Parameter(eta * torch.ones(dim))
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        self.gamma2 = nn.Parameter(eta * torch.ones(dim))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.gamma1 * self.attn(self.norm1(x))
        x = x + self.gamma3 * self.local_mp(self.norm3(x), H, W)
        x = x + self.gamma2 * self.mlp(self.norm2(x))
        return x


class Xcit(nn.Module):
    """XCiT classifier. ``num_classes=0`` gives a feature extractor (pooled embedding)."""

    def __init__(self, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=True, cls_attn_layers=2, eta=1.0,
                 tokens_norm=False, global_pool="token"):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        act_layer = nn.GELU
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.depth = depth
        self.global_pool = global_pool
        self.patch_embed = ConvPatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                                          act_layer=act_layer)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = PositionalEncodingFourier(dim=embed_dim)
        self.blocks = nn.ModuleList([
            XCABlock(embed_dim, num_heads, mlp_ratio, qkv_bias, act_layer, norm_layer, eta)
            for _ in range(depth)
        ])
        self.cls_attn_blocks = nn.ModuleList([
            ClassAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, act_layer, norm_layer, eta,
                                tokens_norm)
            for _ in range(cls_attn_layers)
        ])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # Same scheme as timm/official: truncated normal (std .02) for Linear and cls token.
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_linear_(self)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x, (Hp, Wp) = self.patch_embed(x)
        # Built for batch 1 and broadcast: it then depends on the grid size only, so the exporter
        # and onnxsim fold it into one constant when the height and width are static, and it stays
        # a function of the symbolic grid (never a constant of the export size) when they are not.
        pos = self.pos_embed(1, Hp, Wp).reshape(1, -1, x.shape[1]).permute(0, 2, 1)
        return x + pos, (Hp, Wp)

    def forward_intermediates(self, x: torch.Tensor, indices: tuple[int, ...]) -> list[torch.Tensor]:
        """Patch tokens after the given XCA blocks, as ``(B, C, Hp, Wp)`` maps (detection backbone)."""
        x, (Hp, Wp) = self._embed(x)
        out = []
        for i, blk in enumerate(self.blocks[: max(indices) + 1]):
            x = blk(x, Hp, Wp)
            if i in indices:
                out.append(x.permute(0, 2, 1).reshape(x.shape[0], -1, Hp, Wp))
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm: ``(B, 1 + N, C)``, class token first."""
        B = x.shape[0]
        x, (Hp, Wp) = self._embed(x)
        for blk in self.blocks:
            x = blk(x, Hp, Wp)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        for blk in self.cls_attn_blocks:
            x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 1:].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
