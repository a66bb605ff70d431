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
    """No network and nothing cached: what huggingface_hub raises then becomes one sentence."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def no_network(*_a, **_k):
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                      "has been disabled / connection failed")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(WeightsDownloadError, match="could not download pretrained weights for xcit_nano_12_p16_224 "
                                                   "from .*timm/xcit_nano_12_p16_224.fb_in1k") as info:
        download_pretrained(get_spec("xcit_nano_12_p16_224"))
    assert "\n" not in str(info.value) and "--weights PATH" in str(info.value)


def _fill_hf_cache(hf_home, spec):
    """timm's weights for ``spec`` as huggingface_hub caches them (blob, snapshot link, refs/main),
    with seeded random values: what a user has after timm.create_model(..., pretrained=True)."""
    import hashlib
    import os

    torch.manual_seed(123)
    state = {k: v.contiguous() for k, v in build_model(spec).state_dict().items()}
    repo = hf_home / "hub" / ("models--" + spec.hub_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    tmp = repo / "blobs" / "tmp"
    save_file(state, str(tmp))
    blob = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, repo / "blobs" / blob)
    revision = "1" * 40
    (repo / "snapshots" / revision).mkdir(parents=True)
    os.symlink(f"../../blobs/{blob}", repo / "snapshots" / revision / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return state, blob


_LOAD_PRETRAINED = """
import sys, torch
from xcit_export.models.weights import load_model, weights_fingerprint
from xcit_export.models.zoo import get_spec
from xcit_export.errors import WeightsDownloadError
spec = get_spec("xcit_nano_12_p16_224")
try:
    model = load_model(spec, "pretrained")
except WeightsDownloadError as exc:
    print("ERROR", exc)
    sys.exit(1)
torch.save(model.state_dict(), sys.argv[1])
print("FINGERPRINT", weights_fingerprint("pretrained", 0, spec))
"""


def _load_pretrained_in(hf_home, tmp_path):
    """``load_model(spec, 'pretrained')`` in a fresh process (huggingface_hub reads its environment
    at import) with HF_HOME=hf_home, HF_HUB_OFFLINE=1 and an endpoint that refuses connections."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", _LOAD_PRETRAINED, str(tmp_path / "loaded.pth")], env=env,
                          capture_output=True, text=True, timeout=300)


def test_pretrained_loads_from_the_hugging_face_cache_offline(tmp_path):
    spec = get_spec("xcit_nano_12_p16_224")
    state, blob = _fill_hf_cache(tmp_path / "hf", spec)
    proc = _load_pretrained_in(tmp_path / "hf", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded = torch.load(tmp_path / "loaded.pth", weights_only=True)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    # The build key follows the cached file's content (its blob hash), not just the word 'pretrained'.
    import hashlib

    expected = hashlib.sha256(f"pretrained:{spec.hub_id}:{blob}".encode()).hexdigest()[:16]
    assert f"FINGERPRINT {expected}" in proc.stdout


def test_pretrained_offline_without_a_cache_is_one_sentence(tmp_path):
    proc = _load_pretrained_in(tmp_path / "empty-hf", tmp_path)
    assert proc.returncode == 1
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("ERROR")]
    assert line == ("ERROR could not download pretrained weights for xcit_nano_12_p16_224: HF_HUB_OFFLINE is set and "
                    "timm/xcit_nano_12_p16_224.fb_in1k/model.safetensors is not in the Hugging Face cache "
                    f"({tmp_path / 'empty-hf' / 'hub'}); fetch it once with network (unset HF_HUB_OFFLINE) or pass a "
                    "checkpoint file as --weights PATH")


def test_read_checkpoint_rejects_non_state_dict(tmp_path):
    p = tmp_path / "list.pth"
    torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_checkpoint(p)
