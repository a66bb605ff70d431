"""ViT: the plain Vision Transformer classifier (ViT-S/16 and friends), reference PyTorch code.

Paper: Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, https://arxiv.org/abs/2010.11929;
the small variant and its training recipe from Steiner et al., "How to train your ViT?" (AugReg), 2021.

Parameter names follow timm's ``VisionTransformer`` (class token, learned absolute ``pos_embed``,
pre-norm blocks, no LayerScale), so timm checkpoints load key-for-key. As in our XCiT, attention is
explicit ``matmul -> softmax -> matmul`` for export.

Any input size (``dynamic_img_size``, timm's name and behaviour): the learned position table is
sized for ``img_size``; with ``dynamic_img_size = True`` it is resampled at run time to the grid of
the input, exactly as timm's ``VisionTransformer._pos_embed`` with ``dynamic_img_size=True`` does
(``resample_abs_pos_embed``: class-token row kept, the grid resized by ``F.interpolate(size=...,
mode="bicubic", antialias=True, align_corners=False)``). The resize is always applied in that mode
(it is the identity at the native grid), so an export traces it with the grid size as a symbolic
``size`` (never a baked ``scale_factor`` or a table of the export size). The interface matches :class:`Xcit`
(``forward_features``, ``forward_head``, ``forward_intermediates``), so the pipeline and every
target treat both architectures alike.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .xcit import Mlp, init_linear_


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int]) -> torch.Tensor:
    """timm's ``resample_abs_pos_embed`` (one prefix token, bicubic, antialias) for a run-time grid."""
    cls_pos, grid_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    grid_pos = grid_pos.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid_pos = F.interpolate(grid_pos, size=(new_grid[0], new_grid[1]), mode="bicubic", antialias=True,
                             align_corners=False)
    grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([cls_pos, grid_pos], dim=1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class VisionTransformer(nn.Module):
    """ViT classifier with a class token; the position table is sized for ``img_size``."""

    def __init__(self, img_size: tuple[int, int] = (224, 224), patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.depth = depth
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.dynamic_img_size = False  # True: resample pos_embed to the input's grid (see module doc)
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer) for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        init_linear_(self)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x, grid = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        pos = resample_pos_embed(self.pos_embed, grid, self.grid_size) if self.dynamic_img_size else self.pos_embed
        return x + pos, grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, indices: tuple[int, ...]) -> list[torch.Tensor]:
        """Patch tokens after the given blocks, as ``(B, C, Hp, Wp)`` maps."""
        x, (Hp, Wp) = self._embed(x)
        out = []
        for i, blk in enumerate(self.blocks[: max(indices) + 1]):
            x = blk(x)
            if i in indices:
                out.append(x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, Hp, Wp))
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
