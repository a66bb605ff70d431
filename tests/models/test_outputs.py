"""Selectable outputs, input conventions baked into the graph, and ViT-S/16 through the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcit_export.models.deploy import DeployModel, pyramid_blocks, to_input_format
from xcit_export.options import RunOptions
from xcit_export.pipeline import run
from xcit_export.models.weights import load_model
from xcit_export.models.zoo import build_model, get_spec

FAST = dict(warmup=1, iterations=2)


@pytest.mark.parametrize("name", ["xcit_nano_12_p16_224", "xcit_nano_12_p8_224", "vit_small_patch16_224"])
def test_output_shapes(name):
    spec = get_spec(name).with_overrides(input_size=(64, 64))
    backbone = load_model(spec)
    x = torch.randn(2, 3, 64, 64)
    dim = backbone.embed_dim
    with torch.no_grad():
        feats = DeployModel(backbone, spec.preprocessing, "features")(x)
        assert [tuple(f.shape) for f in feats] == [(2, dim, 64 // s, 64 // s) for s in (4, 8, 16, 32)]
        emb = DeployModel(backbone, spec.preprocessing, "embedding")(x)
        tokens = DeployModel(backbone, spec.preprocessing, "tokens")(x)
        logits = DeployModel(backbone, spec.preprocessing, "logits")(x)
    grid = (64 // spec.patch_size) ** 2
    assert tokens.shape == (2, 1 + grid, dim) and emb.shape == (2, dim)
    # The embedding is the class token of the tokens, and the head maps it to the logits.
    assert torch.allclose(emb, tokens[:, 0]) and torch.allclose(backbone.head(emb), logits, atol=1e-5)


def test_tokens_of_large_p8_model_have_documented_shape():
    spec = get_spec("xcit_large_24_p8_224")
    assert pyramid_blocks(24) == (5, 11, 17, 23)
    # 1 + (224/8)^2 = 785 tokens of 768 channels; checked on the meta device (no memory, no compute).
    with torch.device("meta"):
        model = DeployModel(build_model(spec), spec.preprocessing, "tokens")
        out = model(torch.empty(1, 3, 224, 224))
    assert tuple(out.shape) == (1, 785, 768)


@pytest.mark.parametrize("fmt", ["nhwc", "nhwc-uint8", "nhwc-pm1"])
def test_input_formats_equal_the_normalised_path(fmt):
    spec = get_spec("xcit_nano_12_p16_224").with_overrides(input_size=(32, 32))
    backbone = load_model(spec)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    x = np.clip(x, -1.9, 2.0)  # inside the range a real image can reach after normalisation
    deployed = to_input_format(x, fmt, spec.preprocessing)
    assert deployed.shape == (2, 32, 32, 3)
    assert deployed.dtype == (np.uint8 if fmt == "nhwc-uint8" else np.float32)
    if fmt == "nhwc-pm1":
        assert deployed.min() >= -1 and deployed.max() <= 1
    with torch.no_grad():
        got = DeployModel(backbone, spec.preprocessing, "logits", fmt)(torch.from_numpy(deployed))
        # What the graph computes from the deployed input must equal normalising it by hand.
        pixel01 = (deployed.astype(np.float64) / 255.0 if fmt == "nhwc-uint8"
                   else (deployed + 1) / 2 if fmt == "nhwc-pm1" else None)
        if pixel01 is None:
            ref_in = x
        else:
            mean, std = np.array(spec.preprocessing.mean), np.array(spec.preprocessing.std)
            ref_in = ((pixel01 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
        want = backbone(torch.from_numpy(np.ascontiguousarray(ref_in)))
    assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("output, fmt, batch", [("features", "nhwc-uint8", None), ("tokens", "nhwc-pm1", 2),
                                                ("embedding", "nhwc", None)])
def test_outputs_and_formats_through_onnxruntime(tmp_path, output, fmt, batch):
    report = run(RunOptions("xcit_nano_12_p16_224", ["onnxruntime-fp32"], out=tmp_path, input_size=(64, 64),
                            eval_count=3, **FAST, output=output, input_format=fmt, batch=batch))
    (entry,) = report["targets"]
    assert entry["status"] == "ok", entry.get("error")
    per_output = entry.get("outputs", {output: entry["accuracy"]})
    assert len(per_output) == (4 if output == "features" else 1)
    for metrics in per_output.values():
        assert metrics["cosine_min"] > 0.99999 and "top1_agreement" not in metrics
    assert report["export"]["input_format"] == fmt


def test_vit_small_through_pipeline(tmp_path):
    report = run(RunOptions("vit_small_patch16_224", ["onnxruntime-fp32"], out=tmp_path, input_size=(64, 64),
                            eval_count=3, **FAST))
    (entry,) = report["targets"]
    assert entry["status"] == "ok" and entry["accuracy"]["top1_agreement"] == 1.0
    assert report["model"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_vit_checkpoint_at_other_size_is_resampled(tmp_path):
    spec224 = get_spec("vit_small_patch16_224").with_overrides(num_classes=5, input_size=(64, 64))
    path = tmp_path / "vit.pth"
    torch.save(load_model(spec224).state_dict(), path)
    spec96 = get_spec("vit_small_patch16_224").with_overrides(num_classes=5, input_size=(96, 96))
    model = load_model(spec96, str(path))
    assert model.pos_embed.shape == (1, 1 + 36, 384)
