"""The points a diagnosis compares: block boundaries the model has, named by PyTorch module path.

A point is a tensor that exists, with the same value, in the PyTorch reference and in every graph
made from it. That rules out the output of a branch module itself: the export form folds XCiT's
LayerScale ``gamma`` into the branch's last layer (:mod:`xcit_export.models.fuse`), so
``blocks.3.attn``'s own output is ``gamma1 *`` the reference's in the ONNX. The *residual stream
after* each branch is the same tensor in both, so a branch's point is that stream, captured in
PyTorch as the input of the next pre-norm (or the block's output) and named by the branch's module:

* XCiT: ``patch_embed`` (tokens out of the convolutional stem), ``pos_embed`` (tokens plus the
  Fourier encoding: the input of ``blocks.0``), per XCA block ``blocks.i.attn`` (stream after
  cross-covariance attention), ``blocks.i.local_mp`` (after the local patch interaction),
  ``blocks.i.mlp`` (after the MLP: the block's output), per class-attention block
  ``cls_attn_blocks.j``, then ``norm`` and ``head``;
* ViT-S/16: ``patch_embed``, ``pos_embed`` (class token and position table added),
  ``blocks.i.attn``, ``blocks.i.mlp``, ``norm``, ``head``.

Names are relative to the backbone (timm's names, what a user reads in a checkpoint); the hooks
are placed on the :class:`~xcit_export.models.deploy.DeployModel` that was exported. Points the
model's forward pass does not reach (the head of a ``--output tokens`` export) are dropped by
:func:`xcit_export.diagnose.reference.capture`, so the list adapts to every output.
"""

from __future__ import annotations

from dataclasses import dataclass

# What each kind of point is, for the report's legend.
KINDS = {
    "patch_embed": "tokens out of the patch embedding",
    "pos_embed": "tokens with the positional encoding added (input of the first block)",
    "attn": "residual stream after the block's attention branch",
    "lpi": "residual stream after the block's local patch interaction (XCiT)",
    "mlp": "residual stream after the block's MLP branch (the block's output)",
    "class_attention": "tokens out of a class-attention block",
    "norm": "tokens after the final norm",
    "head": "the classifier's logits",
}


@dataclass(frozen=True)
class Point:
    """One compared tensor: ``module`` names it (backbone-relative PyTorch path), ``kind`` says what
    it is (:data:`KINDS`), and the hook that captures it is ``where`` (``input`` or ``output``) of
    the DeployModel submodule ``hook``."""

    module: str
    kind: str
    hook: str
    where: str  # "input" | "output"

    @property
    def block(self) -> int | None:
        """The XCA / transformer block index (``blocks.<i>...``), else None."""
        parts = self.module.split(".")
        return int(parts[1]) if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit() else None


def model_points(model) -> list[Point]:
    """Every point of ``model`` (a DeployModel, or a bare backbone) in forward order."""
    backbone = getattr(model, "backbone", model)
    prefix = "backbone." if backbone is not model else ""
    points = [Point("patch_embed", "patch_embed", f"{prefix}patch_embed", "output"),
              Point("pos_embed", "pos_embed", f"{prefix}blocks.0", "input")]
    xcit = hasattr(backbone, "cls_attn_blocks")
    for i in range(len(backbone.blocks)):
        b = f"blocks.{i}"
        if xcit:  # x += attn(norm1 x); x += local_mp(norm3 x); x += mlp(norm2 x)
            points += [Point(f"{b}.attn", "attn", f"{prefix}{b}.norm3", "input"),
                       Point(f"{b}.local_mp", "lpi", f"{prefix}{b}.norm2", "input"),
                       Point(f"{b}.mlp", "mlp", f"{prefix}{b}", "output")]
        else:  # ViT: x += attn(norm1 x); x += mlp(norm2 x)
            points += [Point(f"{b}.attn", "attn", f"{prefix}{b}.norm2", "input"),
                       Point(f"{b}.mlp", "mlp", f"{prefix}{b}", "output")]
    for j in range(len(getattr(backbone, "cls_attn_blocks", ()))):
        points.append(Point(f"cls_attn_blocks.{j}", "class_attention", f"{prefix}cls_attn_blocks.{j}", "output"))
    points.append(Point("norm", "norm", f"{prefix}norm", "output"))
    if getattr(backbone, "num_classes", 0):
        points.append(Point("head", "head", f"{prefix}head", "output"))
    return points
