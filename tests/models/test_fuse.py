"""The export form (models/fuse.py) computes what the reference computes.

What it does to the ONNX graph (no 5-D transposes, GELU fused by onnxruntime) is checked in
test_export.py on the suite's one full-size export, which is traced from the export form.
"""

from __future__ import annotations

import pytest
import torch

from xcit_export import export as ex
from xcit_export.models.fuse import export_form
from xcit_export.models.zoo import build_model, get_spec

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
