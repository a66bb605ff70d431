"""The bundled demo checkpoint: it loads strictly into the zoo's xcit_nano_12_p16_224 with a
10-class head and classifies the demo eval split (rendered into the cache on first use)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from xcit_export.data.sets import check_disjoint, demo_dataset
from xcit_export.data.demo import CLASSES
from xcit_export.models.weights import load_model, read_checkpoint
from xcit_export.models.zoo import get_spec

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())  # the repository
ASSETS = ROOT / "xcit_export" / "assets"
CHECKPOINT = ASSETS / "xcit_nano_12_p16_224_demo10.safetensors"
SPEC = get_spec("xcit_nano_12_p16_224").with_overrides(num_classes=len(CLASSES))


def test_metadata_describes_the_checkpoint():
    meta = json.loads(CHECKPOINT.with_suffix(".json").read_text())
    assert meta["classes"] == list(CLASSES)
    assert meta["preprocessing"] == SPEC.preprocessing.to_dict()
    assert meta["eval_top1"] >= 0.90
    assert meta["training"]["command"].startswith("python tools/train_fixture.py")


def test_checkpoint_is_fp16_timm_layout():
    state = read_checkpoint(CHECKPOINT)
    assert all(v.dtype == torch.float16 for v in state.values())
    assert state["head.weight"].shape == (len(CLASSES), 128)
    assert "pos_embed.token_projection.weight" in state  # timm's name, not 'pos_embeder'


def test_eval_top1_at_least_90_percent():
    model = load_model(SPEC, weights=str(CHECKPOINT))  # strict: raises on any key/shape mismatch
    x, y = demo_dataset("eval", pp=SPEC.preprocessing).load()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), 100):
            logits = model(torch.from_numpy(x[i:i + 100]))
            correct += int((logits.argmax(1) == torch.from_numpy(y[i:i + 100])).sum())
    top1 = correct / len(x)
    assert len(x) == 1000
    assert top1 >= 0.90, f"demo checkpoint top-1 {top1:.3f} < 0.90 on the eval split"


def test_demo_calib_and_eval_splits():
    calib, evaluation = demo_dataset("calib", option="--calib"), demo_dataset("eval")
    assert (len(calib), len(evaluation)) == (300, 1000)
    assert calib.classes == evaluation.classes == list(CLASSES)
    check_disjoint(calib, evaluation)  # raises if any image content is shared
