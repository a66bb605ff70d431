"""The PyTorch reference's outputs on disk (evaluate/reference_cache.py): computed once at the reference's
own batch, read back on a rerun, never trusted when torn, and keyed by what they depend on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xcit_export.evaluate.reference_cache import META, CachedReference, cache_root, reference_key


class Counting:
    """A 'model' whose outputs depend on the input, counting the inputs and batch sizes it saw."""

    def __init__(self):
        self.batches = []

    def __call__(self, x):
        self.batches.append(len(x))
        flat = x.reshape(len(x), -1)
        return [flat[:, :3] * 2.0, flat.sum(axis=1, keepdims=True).astype(np.float32)]


def _pass(ref, x, step):
    outs = [ref(x[i:i + step]) for i in range(0, len(x), step)]
    return [np.concatenate([o[k] for o in outs]) for k in range(2)]


X = np.random.default_rng(0).standard_normal((70, 2, 4)).astype(np.float32)


def test_a_rerun_reads_the_outputs_back_and_computes_nothing(tmp_path):
    model = Counting()
    first = CachedReference(tmp_path, "k1", model, ["a", "b"], batch=32)
    assert not first.hit
    got = _pass(first, X, 10)  # the pass hands over chunks of 10; PyTorch still runs at most 32 at once
    info = first.finish()
    assert info["written"] and info["rows"] == 70 and max(model.batches) <= 32
    want = model(X)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    model.batches.clear()
    second = CachedReference(tmp_path, "k1", model, ["a", "b"], batch=32)
    assert second.hit
    again = _pass(second, X, 35)
    assert model.batches == [] and all(np.array_equal(g, w) for g, w in zip(again, want))
    assert second.finish()["hit"] is True
    meta = json.loads((tmp_path / "k1" / META).read_text())
    assert meta["count"] == 70 and [f["name"] for f in meta["files"]] == ["a", "b"]


def test_a_torn_file_is_recomputed_not_trusted(tmp_path):
    ref = CachedReference(tmp_path, "k", Counting(), ["a", "b"])
    _pass(ref, X, 16)
    ref.finish()
    data = tmp_path / "k" / "0.bin"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF  # same size, one byte changed
    data.write_bytes(bytes(raw))
    said = []
    model = Counting()
    again = CachedReference(tmp_path, "k", model, ["a", "b"], progress=said.append)
    assert not again.hit and "does not match the sha256" in said[0]
    got = _pass(again, X, 16)
    again.finish()
    assert model.batches == [32] * 5 and np.array_equal(got[0], Counting()(X)[0])  # all 70 rows, whole batches
    assert CachedReference(tmp_path, "k", model, ["a", "b"]).hit  # rewritten whole
    (tmp_path / "k" / "1.bin").write_bytes(b"short")  # truncated
    assert not CachedReference(tmp_path, "k", model, ["a", "b"], progress=said.append).hit
    assert "wrong size" in said[-1]


def test_a_failed_pass_leaves_nothing_under_the_key(tmp_path):
    ref = CachedReference(tmp_path, "k", Counting(), ["a", "b"])
    ref(X[:10])
    ref.abort()
    assert not (tmp_path / "k").exists() and not any(tmp_path.iterdir())


def test_more_rows_than_cached_are_computed_and_the_cache_left_alone(tmp_path):
    ref = CachedReference(tmp_path, "k", Counting(), ["a", "b"])
    _pass(ref, X[:40], 20)
    ref.finish()
    model = Counting()
    longer = CachedReference(tmp_path, "k", model, ["a", "b"])
    got = _pass(longer, X, 20)
    assert model.batches == [32, 32]  # rows 40..59 and 60..69 (the cache holds 40), each run as a whole batch
    assert all(np.array_equal(g, w) for g, w in zip(got, Counting()(X)))
    longer.finish()
    assert json.loads((tmp_path / "k" / META).read_text())["count"] == 40


def test_the_key_follows_what_the_outputs_depend_on(monkeypatch, tmp_path):
    base = dict(model="xcit_nano_12_p16_224", weights_id="abc", seed=0, num_classes=1000,
                preprocessing={"input_size": [224, 224]}, output="logits", input_format="nchw", dynamic_size=False,
                images="h1")
    key = reference_key(**base)
    for field, value in (("weights_id", "abd"), ("preprocessing", {"input_size": [256, 256]}), ("output", "tokens"),
                         ("images", "h2"), ("input_format", "nhwc"), ("num_classes", 10)):
        assert reference_key(**{**base, field: value}) != key, field
    assert reference_key(**base) == key
    monkeypatch.delenv("XCIT_EXPORT_CACHE", raising=False)
    assert cache_root(tmp_path) == tmp_path / "reference-cache"
    monkeypatch.setenv("XCIT_EXPORT_CACHE", str(tmp_path / "c"))
    assert cache_root(tmp_path / "out") == tmp_path / "c" / "reference"


# The pipeline's rerun from the cache is tested in tests/test_scenario_run.py, on that module's shared run.
