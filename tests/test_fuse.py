"""The export form (models/fuse.py): same numbers as the reference, a graph the runtimes fuse."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch

from xcit_export import export as ex
from xcit_export.models.fuse import export_form
from xcit_export.zoo import build_model, get_spec

SIZE = 64


def _randomised(name: str) -> torch.nn.Module:
    """A small-input model whose LayerScale vectors and temperatures are far from their init of 1."""
    torch.manual_seed(0)
    model = build_model(get_spec(name).with_overrides(input_size=(SIZE, SIZE))).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "gamma" in pname or "temperature" in pname:
                p.copy_(torch.empty_like(p).uniform_(0.2, 2.0))
            elif pname.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("name", ["xcit_nano_12_p16_224", "xcit_tiny_12_p8_224"])  # tokens_norm False / True
def test_export_form_computes_the_reference(name):
    model = _randomised(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.from_numpy(ex.seeded_inputs((3, SIZE, SIZE), 2, seed=1))
    with torch.inference_mode():
        ref = model(x)
        got = export_form(model)(x)
    assert (got - ref).abs().max().item() < 1e-5
    # The reference itself is untouched (the rewrite works on a copy).
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """nano at 64x64, static batch 1, exported in the export form (the default)."""
    model = _randomised("xcit_nano_12_p16_224")
    folder = tmp_path_factory.mktemp("fuse")
    raw = ex.export_onnx(model, (3, SIZE, SIZE), folder / "raw.onnx", ex.ExportOptions(batch=1))
    return model, ex.simplify_onnx(raw, folder / "model.onnx")


def test_exported_graph_keeps_parity_without_5d_transposes(exported):
    model, path = exported
    x = ex.seeded_inputs((3, SIZE, SIZE), 1, seed=2)
    assert ex.check_parity(path, x, ex.torch_reference(model, x))["logits"] < 1e-4
    # The reference's per-block (3, B, heads, C', N) qkv permute, which OpenVINO's CPU plugin runs
    # on its slow reference kernel, is not in the graph; the 3-D transposes left fold into MatMuls.
    perms = [list(a.ints) for n in onnx.load(str(path)).graph.node if n.op_type == "Transpose"
             for a in n.attribute if a.name == "perm"]
    assert perms and max(len(p) for p in perms) <= 4


def test_onnxruntime_fuses_gelu_in_the_export_form(exported, tmp_path):
    """onnxruntime's optimizer turns every exact GELU of the export form into one Gelu kernel."""
    _, path = exported
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "Erf" not in ops
    # patch embedding (3), LPI and MLP of 12 XCA blocks (24), MLP of 2 class-attention blocks (2)
    assert ops.count("Gelu") + ops.count("BiasGelu") == 29
