"""Planted faults: a model broken in one named block, to check that the debugger names that block.

Each function changes a backbone (an :class:`~xcit_export.models.xcit.Xcit` or a
:class:`~xcit_export.models.vit.VisionTransformer`) in place and returns what it planted. The first
two keep the FP32 function (so PyTorch's reference and the FP32 ONNX are unchanged up to rounding,
and only a lower precision feels them); the third breaks it.

* :func:`plant_outlier`: one channel of a pre-norm LayerNorm scaled up by ``factor`` (weight and
  bias) and the matching input column of the Linear that reads it scaled down by the same factor.
  ``Linear(s * y_c) / s`` is exact in real arithmetic, but the Linear's input now has one channel
  ``factor`` times larger than the rest: a per-tensor INT8 scale spent on that channel leaves the
  others a few levels (the activation outliers of LLM.int8 and SmoothQuant, planted on purpose).
* :func:`plant_fp16_overflow`: the query rows of one XCA block's ``qkv`` (weights and bias) scaled
  by ``factor``. XCA L2-normalises q over the tokens, which cancels any scale, so FP32 is
  unchanged; the query activations and their sum of squares leave FP16's range (65,504).
  (ViT: the keys are scaled down by the same factor, so q.k is unchanged.)
* :func:`plant_nan`: one weight of a block's ``mlp.fc1`` set to NaN: the reference itself is
  broken from that block on (the run stops with :class:`~xcit_export.errors.BrokenReferenceError`
  naming the parameter; :func:`xcit_export.diagnose.explain.nonfinite_origin` names the block).

``xcit-export plant-fault KIND --block N --out FILE.safetensors`` (:func:`write_planted`) writes the
planted weights of the bundled demo model (or ``--weights``) as a checkpoint ``--weights FILE`` reads.
"""

from __future__ import annotations

import torch

FAULTS = ("outlier", "fp16-overflow", "nan")


def _block(model, block: int):
    backbone = getattr(model, "backbone", model)
    if not 0 <= block < len(backbone.blocks):
        raise ValueError(f"block {block} is out of range: the model has blocks 0..{len(backbone.blocks) - 1}")
    return backbone.blocks[block]


@torch.no_grad()
def plant_outlier(model, block: int, factor: float = 100.0, branch: str = "mlp", channel: int | None = None) -> dict:
    """Scale LayerNorm channel ``channel`` of ``blocks.<block>`` (``norm2`` before the MLP, ``norm1``
    before attention, ``norm3`` before XCiT's local patch interaction) up by ``factor`` and the
    input channel of the layer that reads it (``mlp.fc1``, ``attn.qkv``, the depth-wise
    ``local_mp.conv1``) down by it (module docstring). NNCF's transformer preset applies
    SmoothQuant to MatMul inputs, which moves such an outlier into the weights and undoes an
    ``mlp`` or ``attn`` plant for ``openvino-int8``; it leaves convolutions alone, so a
    ``local_mp`` plant reaches every INT8 backend.
    ``channel`` None: the channel whose normalised output is largest in magnitude (``|weight| + |bias|``),
    so the outlier is the largest activation of the block."""
    blk = _block(model, block)
    pairs = {"mlp": ("norm2", "mlp.fc1"), "attn": ("norm1", "attn.qkv"), "local_mp": ("norm3", "local_mp.conv1")}
    if branch not in pairs or (branch == "local_mp" and not hasattr(blk, "local_mp")):
        raise ValueError(f"branch {branch!r} is not one of this block's: "
                         f"{', '.join(b for b in pairs if b != 'local_mp' or hasattr(blk, 'local_mp'))}")
    norm_name, layer_name = pairs[branch]
    norm, layer = blk.get_submodule(norm_name), blk.get_submodule(layer_name)
    if channel is None:
        channel = int((norm.weight.abs() + norm.bias.abs()).argmax())
    norm.weight[channel] *= factor
    norm.bias[channel] *= factor
    if isinstance(layer, torch.nn.Conv2d):  # LPI's depth-wise conv: output channel c reads input channel c only
        layer.weight[channel] /= factor
    else:
        layer.weight[:, channel] /= factor
    return {"fault": "outlier", "module": f"blocks.{block}.{branch}", "block": block, "channel": channel,
            "factor": factor, "planted": [f"blocks.{block}.{norm_name}", f"blocks.{block}.{layer_name}"]}


@torch.no_grad()
def plant_fp16_overflow(model, block: int, factor: float = 1e4) -> dict:
    """Scale the query rows of ``blocks.<block>.attn.qkv`` by ``factor`` (module docstring)."""
    blk = _block(model, block)
    qkv = blk.attn.qkv
    dim = qkv.weight.shape[0] // 3
    qkv.weight[:dim] *= factor
    if qkv.bias is not None:
        qkv.bias[:dim] *= factor
    if not hasattr(blk.attn, "temperature"):  # ViT: softmax(q.k) is not scale-invariant; keep q.k
        qkv.weight[dim:2 * dim] /= factor
        if qkv.bias is not None:
            qkv.bias[dim:2 * dim] /= factor
    return {"fault": "fp16-overflow", "module": f"blocks.{block}.attn", "block": block, "factor": factor,
            "planted": [f"blocks.{block}.attn.qkv"]}


@torch.no_grad()
def plant_nan(model, block: int) -> dict:
    """One NaN in ``blocks.<block>.mlp.fc1.weight``."""
    blk = _block(model, block)
    blk.mlp.fc1.weight[0, 0] = float("nan")
    return {"fault": "nan", "module": f"blocks.{block}.mlp", "block": block, "planted": [f"blocks.{block}.mlp.fc1"],
            "parameter": f"blocks.{block}.mlp.fc1.weight"}


def plant(model, kind: str, block: int, **kwargs) -> dict:
    """Plant fault ``kind`` (one of :data:`FAULTS`) in ``blocks.<block>``."""
    planters = {"outlier": plant_outlier, "fp16-overflow": plant_fp16_overflow, "nan": plant_nan}
    if kind not in planters:
        raise ValueError(f"unknown fault {kind!r}: use one of {', '.join(FAULTS)}")
    return planters[kind](model, block, **kwargs)


def _holds(init, value) -> bool:
    """Whether initializer ``init`` stores exactly ``value`` (as is, transposed, or reshaped)."""
    import numpy as np
    from onnx import numpy_helper

    if int(np.prod(init.dims)) != value.size:
        return False
    stored = numpy_helper.to_array(init)
    if stored.dtype != value.dtype:
        return False
    if value.ndim == 2 and stored.shape == value.T.shape and np.array_equal(stored, value.T):
        return True
    return np.array_equal(stored.reshape(-1), value.reshape(-1))


def copy_parameters_to_onnx(original, model, modules, onnx_in, onnx_out) -> list[str]:
    """Write the parameters of ``modules`` (backbone-relative paths, e.g. a record's ``planted``) of
    ``model`` into ``onnx_in`` (exported from ``original``, the same model before planting), saved as
    ``onnx_out``: the exported graph of the planted model without exporting again. An initializer is
    the parameter's when it has its name, else when it holds exactly the original's values, transposed
    (the exporter stores a Linear's weight as ``W^T`` for Gemm, under a generated name) or in another
    shape (the export form adds XCA's qkv bias as a column). Returns
    the initializers written; raises when a parameter has none (:func:`xcit_export.diagnose.locate.locate`
    then proves that the pair agrees at every point)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph_model = onnx.load(str(onnx_in), load_external_data=False)
    inits = {i.name: i for i in graph_model.graph.initializer}
    backbone, before = getattr(model, "backbone", model), getattr(original, "backbone", original)
    prefix = "backbone." if any(n.startswith("backbone.") for n in inits) else ""
    written = []
    for module in modules:
        old_params = dict(before.get_submodule(module).named_parameters())
        for pname, tensor in backbone.get_submodule(module).named_parameters():
            value = tensor.detach().numpy()
            old = old_params[pname].detach().numpy()
            name = f"{prefix}{module}.{pname}"
            candidates = [name] if name in inits else [n for n, init in inits.items() if _holds(init, old)]
            if not candidates:
                raise KeyError(f"no initializer of {onnx_in} holds {module}.{pname}")
            for cname in candidates:
                stored = numpy_helper.to_array(inits[cname])
                transposed = value.ndim == 2 and stored.shape == value.T.shape and np.array_equal(stored, old.T)
                new = value.T if transposed and stored.shape != value.shape else value
                inits[cname].CopyFrom(numpy_helper.from_array(
                    np.ascontiguousarray(new.astype(stored.dtype)).reshape(stored.shape), cname))
                written.append(cname)
    onnx.save(graph_model, str(onnx_out))
    return written


def write_planted(kind: str, block: int, out, *, model: str = "xcit_nano_12_p16_224", weights: str = "demo",
                  factor: float | None = None, branch: str | None = None) -> dict:
    """Load ``model`` with ``weights``, plant ``kind`` in ``blocks.<block>``, and write the state dict to
    ``out`` (safetensors, atomically): a checkpoint ``--weights out`` reads (``xcit-export plant-fault``).
    Returns the plant's record."""
    from pathlib import Path

    from safetensors.torch import save_file

    from ..errors import UsageError, XcitExportError
    from ..io import atomic_path
    from ..models.weights import default_num_classes, load_model
    from ..models.zoo import get_spec

    kwargs: dict = {"factor": factor} if factor else {}
    if branch:
        if kind != "outlier":
            raise UsageError("--branch applies to the outlier fault only")
        kwargs["branch"] = branch
    spec = get_spec(model).with_overrides(default_num_classes(weights, model))
    net = load_model(spec, weights)
    try:
        record = plant(net, kind, block, **kwargs)
    except ValueError as exc:
        raise XcitExportError(str(exc)) from None
    with atomic_path(Path(out)) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    return record
