"""Reference XCiT: shapes for every variant family, checkpoint formats, strict loading."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from xcit_export.errors import CheckpointError, UnknownModelError, WeightsDownloadError
from xcit_export.models.weights import (download_pretrained, load_model, official_to_timm, read_checkpoint,
                                 timm_to_official)
from xcit_export.models.zoo import MODELS, build_model, get_spec

SIZES = ["nano_12", "tiny_12", "tiny_24", "small_12", "small_24", "medium_24", "large_24"]


def test_zoo_has_every_seed_variant():
    expected = {f"xcit_{s}_p{p}_{r}" for s in SIZES for p in (16, 8) for r in (224, 384)}
    assert {n for n in MODELS if n.startswith("xcit_")} == expected
    for spec in (MODELS[n] for n in expected):
        pp = spec.preprocessing
        assert pp.input_size == (int(spec.name[-3:]),) * 2
        assert pp.mean == (0.485, 0.456, 0.406) and pp.std == (0.229, 0.224, 0.225)
        assert pp.crop_pct == 1.0 and pp.interpolation == "bicubic"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("patch", [16, 8])
def test_forward_shapes_small_input(size, patch):
    spec = get_spec(f"xcit_{size}_p{patch}_224").with_overrides(num_classes=7, input_size=(32, 48))
    model = build_model(spec)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        logits = model(x)
        tokens = model.forward_features(x)
    assert logits.shape == (2, 7)
    grid = (32 // patch) * (48 // patch)
    assert tokens.shape == (2, 1 + grid, model.embed_dim)
    assert torch.isfinite(logits).all()


def test_parameter_counts_match_published_sizes():
    # XCiT paper table 1 / timm: nano 3.1M, tiny12 6.7M, small12 26.3M (224, 1000 classes).
    counts = {name: sum(p.numel() for p in build_model(get_spec(name)).parameters()) / 1e6
              for name in ("xcit_nano_12_p16_224", "xcit_tiny_12_p16_224", "xcit_small_12_p16_224")}
    assert counts["xcit_nano_12_p16_224"] == pytest.approx(3.05, abs=0.1)
    assert counts["xcit_tiny_12_p16_224"] == pytest.approx(6.72, abs=0.1)
    assert counts["xcit_small_12_p16_224"] == pytest.approx(26.25, abs=0.2)


def test_custom_classes_and_input_size():
    # The published bird classifier: xcit_nano12_p16 with 371 classes at 256x256.
    spec = get_spec("xcit_nano_12_p16_224").with_overrides(num_classes=371, input_size=(256, 256))
    model = build_model(spec)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 256)).shape == (1, 371)


def test_feature_extractor_has_no_head():
    spec = get_spec("xcit_nano_12_p16_224").with_overrides(num_classes=0, input_size=(64, 64))
    with torch.no_grad():
        assert build_model(spec)(torch.randn(1, 3, 64, 64)).shape == (1, 128)


def test_bad_input_size_and_unknown_model():
    with pytest.raises(UnknownModelError, match="multiples of the patch size 16"):
        get_spec("xcit_nano_12_p16_224").with_overrides(input_size=(250, 250))
    with pytest.raises(UnknownModelError, match="Did you mean xcit_nano_12_p16_224"):
        get_spec("xcit_nano12_p16_224")


def _random_state(name="xcit_nano_12_p16_224", **over):
    torch.manual_seed(3)
    model = build_model(get_spec(name).with_overrides(**over))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model, model.state_dict()


def test_key_mapping_round_trip():
    _, state = _random_state()
    official = timm_to_official(state)
    assert "pos_embeder.token_projection.weight" in official
    assert "cls_attn_blocks.0.attn.qkv.weight" in official and "cls_attn_blocks.0.attn.q.weight" not in official
    assert official["cls_attn_blocks.1.attn.qkv.weight"].shape == (3 * 128, 128)
    back = official_to_timm(official)
    assert set(back) == set(state)
    for k in state:
        assert torch.equal(back[k], state[k]), k


@pytest.mark.parametrize("fmt", ["timm-pth", "official-pth", "timm-safetensors", "ddp-pth"])
def test_checkpoint_formats_load_identically(tmp_path, fmt):
    model, state = _random_state(num_classes=10, input_size=(64, 64))
    path = tmp_path / ("ckpt.safetensors" if "safetensors" in fmt else "ckpt.pth")
    if fmt == "timm-pth":
        torch.save(state, path)
    elif fmt == "official-pth":
        torch.save({"model": timm_to_official(state), "epoch": 3}, path)
    elif fmt == "ddp-pth":
        torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    spec = get_spec("xcit_nano_12_p16_224").with_overrides(num_classes=10, input_size=(64, 64))
    loaded = load_model(spec, str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)


def test_strict_load_errors(tmp_path):
    spec = get_spec("xcit_nano_12_p16_224").with_overrides(num_classes=10)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(spec, str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth' could not be read"):
        load_model(spec, str(junk))
    txt = tmp_path / "weights.txt"
    txt.write_text("x")
    with pytest.raises(CheckpointError, match="expected one of"):
        load_model(spec, str(txt))

    _, state = _random_state(num_classes=10)
    wrong_classes = tmp_path / "c1000.pth"
    torch.save(state, wrong_classes)
    with pytest.raises(CheckpointError, match="has 10 classes but the model is built with 371: pass --num-classes 10"):
        load_model(get_spec("xcit_nano_12_p16_224").with_overrides(num_classes=371), str(wrong_classes))

    broken = dict(state)
    broken.pop("blocks.3.attn.temperature")
    broken["blocks.3.attn.extra"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(broken, bad)
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\) \[blocks.3.attn.temperature\], "
                                              r"1 unexpected key\(s\) \[blocks.3.attn.extra\]"):
        load_model(spec, str(bad))

    # A tiny-12 checkpoint into nano: same keys, other shapes -> names the tensors.
    _, tiny = _random_state("xcit_tiny_12_p16_224", num_classes=10)
    tiny_path = tmp_path / "tiny.pth"
    torch.save({k: v for k, v in tiny.items()}, tiny_path)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_model(spec, str(tiny_path))


def test_pretrained_offline_fails_with_one_sentence(monkeypatch):
    import urllib.request

    def no_network(*_a, **_k):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(WeightsDownloadError, match="could not download pretrained weights for xcit_nano_12_p16_224"):
        download_pretrained(get_spec("xcit_nano_12_p16_224"))


def test_read_checkpoint_rejects_non_state_dict(tmp_path):
    p = tmp_path / "list.pth"
    torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_checkpoint(p)
