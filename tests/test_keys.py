"""Build keys (issue 22, item 3): every input an artifact is made from is in its key.

The structural rule: :mod:`xcit_export.keys` declares, for every field of ``RunOptions`` (and of
``Inputs``, what a run loaded), which artifacts read it (or that none does, with the reason). These
tests change every field, and every option of every target, in turn and check that exactly the
artifacts that read it get a new key; an option added to ``RunOptions`` and classified nowhere
fails the first test. Keys are computed without exporting anything (``pipeline.build_keys``), so
this is fast.

Then the three stale-artifact cases of the issue, end to end where it is cheap: tensorrt-fp16
reads the calibration set, TensorRT's golden inputs come from the evaluation set, and the
features neck is seeded even with checkpoint weights. And a reused artifact whose file is empty
(a torn write) is rebuilt, not an error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from xcit_export import keys
from xcit_export import pipeline
from xcit_export.options import Inputs, RunOptions
from xcit_export.targets import all_targets

MODEL = "xcit_nano_12_p16_224"


def _x(n, seed, size=16):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


@pytest.fixture(autouse=True)
def _pretrained_offline(monkeypatch):
    """``--weights pretrained`` keys on the Hub file's hash (models/weights.py, tested with a filled
    HF cache in test_model.py); here, offline, a fixed stand-in for that hash."""
    from xcit_export.models import weights

    monkeypatch.setattr(weights, "_pretrained_id", lambda spec: f"{spec.hub_id}:0123abcd")


@dataclasses.dataclass(frozen=True)
class Config:
    """A run's options and the inputs it loaded, changed field by field (each field lives in one)."""

    options: RunOptions
    inputs: Inputs

    @property
    def targets(self):
        return self.options.targets


def replace(config: Config, **changes) -> Config:
    """``config`` with ``changes`` applied to whichever of options and inputs holds each field."""
    mine = {k: v for k, v in changes.items() if k in keys.INPUT_FIELDS}
    inputs = dataclasses.replace(config.inputs, **mine) if mine else config.inputs
    rest = {k: v for k, v in changes.items() if k not in keys.INPUT_FIELDS}
    return Config(config.options.replace(**rest) if rest else config.options, inputs)


def build_keys(config: Config, evaluation_given: bool = True) -> dict:
    return pipeline.build_keys(config.options, config.inputs, evaluation_given)


@pytest.fixture(scope="module")
def base() -> Config:
    """Every registered target, random weights, a small calibration array and no evaluation set."""
    return Config(RunOptions(MODEL, sorted(all_targets()), out=Path("unused"), input_size=(64, 64)),
                  Inputs(calib_data=_x(4, 0)))


def _changes(config: Config, tmp_path: Path) -> dict[str, list]:
    """A few different values for every RunOptions / Inputs field an artifact reads."""
    ckpt = tmp_path / "weights.pth"
    ckpt.write_bytes(b"not really a checkpoint, but a file with content")
    return {
        "model": ["xcit_nano_12_p8_224"],
        "weights": ["pretrained", str(ckpt)],
        "seed": [1],
        "num_classes": [10, 0],
        "input_size": [(96, 96)],
        "batch": [1, 4],
        "opset": [config.options.opset - 1],
        "output": ["embedding", "tokens", "features"],
        "input_format": ["nhwc", "nhwc-uint8"],
        "dynamic_size": [True],
        "eval_sizes": [((64, 64), (96, 128))],
        "calib": ["demo"],
        "calib_size": [200],
        "calib_data": [_x(4, 1), _x(5, 0)],
        "calib_id": ["a-content-hash"],
        "calib_labels": [np.arange(4)],
        "on_bad_image": ["skip"],
        "class_index": ["classes.json"],
        "eval": ["demo"],
        "eval_size": [100],
        "eval_data": [(_x(4, 2), None), (_x(4, 2), np.arange(4))],
        "eval_id": ["demo (0123456789ab)"],
        "eval_count": [16],
    }


def test_every_run_option_and_input_is_classified_once():
    names = {f.name for f in dataclasses.fields(RunOptions)} | {f.name for f in dataclasses.fields(Inputs)}
    assert set(keys.INPUT_FIELDS) == {f.name for f in dataclasses.fields(Inputs)}
    read, none = set(keys.READS), set(keys.READ_BY_NONE)
    assert not read & none, f"declared both read and unread: {read & none}"
    assert names - read - none == set(), (f"RunOptions/Inputs field(s) {sorted(names - read - none)} are not "
                                          f"classified: add each to keys.READS (the artifacts that read it) or "
                                          f"keys.READ_BY_NONE (why none does)")
    assert (read | none) - names == set(), f"keys.py names fields RunOptions lacks: {sorted((read | none) - names)}"
    for readers in keys.READS.values():
        assert readers and set(readers) <= {keys.ONNX, keys.CALIBRATION, keys.EVALUATION, keys.TARGET, keys.SIZES}


def _expected(config: Config, field: str) -> set[str]:
    """Artifacts that must get a new key when ``field`` changes (from the declarations)."""
    readers = set(keys.READS[field])
    if keys.ONNX in readers:
        return {"onnx", *config.targets}
    if keys.SIZES in readers:  # every target's build records the sizes it takes
        return set(config.targets)
    out = set()
    for name in config.targets:
        target = all_targets()[name]
        reads = keys.target_reads(target, target.parse_options(config.options.target_options.get(name)),
                                  keys.max_top1_drop(config.options, name))
        if reads & readers:
            out.add(name)
    return out


@pytest.mark.parametrize("search", [False, True], ids=["plain", "with-search-options"])
def test_each_field_renews_the_keys_of_exactly_its_readers(base, tmp_path, search):
    config = base
    if search:  # the INT8 targets' sensitivity/budget search reads the evaluation set too
        config = replace(base, target_options={  # NNCF's search has max_drop only
            n: {"sensitivity": "true"} if "sensitivity" in t.options else {"max_drop": "0.01"}
            for n, t in all_targets().items() if "evaluation:search" in t.reads})
    before = build_keys(config)
    assert len(set(before.values())) == len(before)
    tested = set()
    for field, values in _changes(config, tmp_path).items():
        for value in values:
            changed_config = replace(config, **{field: value})
            after = build_keys(changed_config)
            changed = {k for k in before if before[k] != after[k]}
            assert changed == _expected(config, field), (field, value)
        tested.add(field)
    # the target's own options (every way to give them) and budget: the next test
    assert tested == set(keys.READS) - {"options", "target_options", "device", "hint", "thresholds"}


def test_every_target_option_and_budget_renews_that_targets_key_only(base):
    before = build_keys(base)
    for name, target in all_targets().items():
        for option in target.options.values():  # each set to its declared example (not its default)
            after = build_keys(replace(base, target_options={name: {option.name: option.example}}))
            assert {k for k in before if before[k] != after[k]} == {name}, (name, option.name)
        after = build_keys(replace(base, thresholds={name: {"thresholds": {"max_top1_drop": 0.02}}}))
        assert {k for k in before if before[k] != after[k]} == {name}, (name, "max_top1_drop")
    # -O KEY=VALUE, --device and --hint reach every target that takes them, and renew exactly those keys
    for field, value, takers in (("options", {"preset": "performance"}, {"openvino-int8"}),
                                 ("device", "AUTO", {n for n in before if n.startswith("openvino")}),
                                 ("hint", "throughput", {n for n in before if n.startswith("openvino")}),
                                 ("options", {"onnxruntime-int8:per_channel": "no"}, {"onnxruntime-int8"})):
        after = build_keys(replace(base, **{field: value}))
        assert {k for k in before if before[k] != after[k]} == takers, field


def test_unread_fields_leave_every_key_alone(base, tmp_path):
    before = build_keys(base)
    for field, value in {"out": tmp_path, "threads": 1, "rebuild": True, "wait": False, "warmup": 1, "iterations": 3,
                         "min_seconds": 1.0, "max_seconds": 5.0, "latency_batches": (1, 2),
                         "require_winner": "onnxruntime-fp32", "candidates": ("onnxruntime-fp32",),
                         "max_top1_drop": 0.02, "min_top1_agreement": 0.9, "min_cosine_mean": 0.9,
                         "profile": False, "progress": print}.items():
        assert build_keys(replace(base, **{field: value})) == before, field


def test_tensorrt_fp16_key_holds_the_calibration_set(base):
    # AutoCast reads the calibration images to decide what stays FP32 (the key held them for INT8 only)
    a = build_keys(replace(base, calib_data=_x(4, 0)))
    b = build_keys(replace(base, calib_data=_x(4, 9)))
    for name in ("tensorrt-fp16", "tensorrt-rtx-fp16", "tensorrt-int8"):
        assert a[name] != b[name], name
    for name in ("tensorrt-fp32", "onnxruntime-fp32", "openvino-fp16"):
        assert a[name] == b[name], name


def test_tensorrt_keys_hold_the_evaluation_set(base):
    # golden.npz and onnx_check come from the evaluation set: a new --eval is a new build
    a = build_keys(replace(base, eval_data=(_x(4, 3), np.arange(4)), eval_id="set-a"))
    b = build_keys(replace(base, eval_data=(_x(4, 3), np.arange(4)), eval_id="set-b"))
    c = build_keys(replace(base, eval_data=(_x(4, 4), np.arange(4))))
    d = build_keys(replace(base, eval_data=(_x(4, 4), np.arange(4)[::-1].copy())))
    for name in ("tensorrt-fp32", "tensorrt-fp16", "tensorrt-int8", "tensorrt-rtx-fp32"):
        assert len({a[name], b[name], c[name], d[name]}) == 4, name
    assert a["onnxruntime-int8"] == b["onnxruntime-int8"] == c["onnxruntime-int8"]  # no search asked
    # a build handed no evaluation set (the matrix without max_drop) seeds its golden inputs
    assert build_keys(base, evaluation_given=False)["tensorrt-fp32"] != build_keys(base)["tensorrt-fp32"]


def test_features_neck_seed_is_in_the_onnx_key_with_checkpoint_weights(base, tmp_path):
    ckpt = tmp_path / "classifier.pth"
    ckpt.write_bytes(b"checkpoint bytes")
    feats = replace(base, weights=str(ckpt), output="features")
    assert build_keys(feats)["onnx"] != build_keys(replace(feats, seed=1))["onnx"]
    logits = replace(feats, output="logits")  # every parameter from the file: seed unused
    assert build_keys(logits)["onnx"] == build_keys(replace(logits, seed=1))["onnx"]
    # the file's content is in the key, not only its name
    before = build_keys(logits)["onnx"]
    ckpt.write_bytes(b"other checkpoint bytes")
    assert build_keys(logits)["onnx"] != before


def test_every_target_declares_what_it_reads():
    for name, target in all_targets().items():
        if target.needs_calibration:
            assert "calibration" in target.reads, name
        if target.backend.startswith("tensorrt"):
            assert "evaluation" in target.reads, name
            if target.precision != "fp32":
                assert "calibration" in target.reads, name


# -- end to end: reruns rebuild what changed, and a torn artifact is rebuilt ---------------------

@pytest.fixture(scope="module")
def reruns(tmp_path_factory):
    """tensorrt-fp32 (precision-ready ONNX + golden data, no engine) run four times into one folder."""
    from xcit_export.pipeline import run

    out = tmp_path_factory.mktemp("reruns")
    x = _x(6, 5, 64)
    labels = np.array([0, 0, 0, 1, 1, 1])

    def once(eval_data, eval_id, messages):
        options = RunOptions(MODEL, ["tensorrt-fp32"], out=out, input_size=(64, 64), num_classes=2, profile=False,
                             warmup=1, iterations=2, target_options={"tensorrt-fp32": {"engine": "skip",
                                                                                       "golden_count": 4}})
        return run(options, Inputs(eval_data=eval_data, eval_id=eval_id), messages.append)

    logs = [[], [], [], []]
    reports = [once((x, labels), "set-a", logs[0]), once((x[::-1].copy(), labels), "set-b", logs[1])]
    golden = np.load(out / "tensorrt-fp32" / "golden.npz")["x"].copy()
    reports.append(once((x[::-1].copy(), labels), "set-b", logs[2]))
    (out / "tensorrt-fp32" / "model.fp32.onnx").write_bytes(b"")  # emptied by a power loss after the rename
    reports.append(once((x[::-1].copy(), labels), "set-b", logs[3]))
    return out, reports, logs, golden, x


def test_a_new_evaluation_set_rebuilds_tensorrt_and_an_unchanged_one_reuses(reruns):
    out, reports, logs, golden, x = reruns
    entries = [r["targets"][0] for r in reports]
    assert [e["status"] for e in entries] == ["built"] * 4  # no engine here: the ONNX ran on a stand-in
    assert [e["reused"] for e in entries[:3]] == [False, False, True]
    assert "ONNX: reusing unchanged export" in logs[1]
    # the golden inputs shipped to the device are the new set's (a stratified draw of it)
    flipped = x[::-1]
    assert all(any(np.array_equal(g, f) for f in flipped) for g in golden)
    assert entries[1]["artifact"]["onnx_check"]["selection"]["method"] == "stratified"
    assert entries[1]["artifact"]["onnx_check"]["selection"]["per_class"] == {"0": 2, "1": 2}


def test_an_empty_reused_file_is_rebuilt_not_an_error(reruns):
    out, reports, logs, _, _ = reruns
    assert "tensorrt-fp32: rebuilding: model.fp32.onnx is empty" in logs[3], logs[3]
    assert reports[3]["targets"][0]["status"] == "built" and reports[3]["targets"][0]["reused"] is False
    assert (out / "onnx" / "model.onnx").stat().st_size > 0
    import onnx

    onnx.load(str(out / "tensorrt-fp32" / "model.fp32.onnx"))


def test_reuse_checks_that_the_files_are_intact(tmp_path):
    """What a reuse trusts: the key, then every file present, non-empty, matching its recorded hash
    (or, recorded before hashes were, an ONNX that parses)."""
    import onnx
    from onnx import TensorProto, helper

    from xcit_export.engine.store import file_hashes as _file_hashes
    from xcit_export.engine.store import reusable as _reusable
    from xcit_export.targets import Artifact

    folder = tmp_path / "onnx"
    folder.mkdir()
    model = folder / "model.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(model))
    good = model.read_bytes()

    def save(**extra):
        Artifact("onnx", model, [model], {"build_key": "k", **extra}).save_metadata()

    messages = []
    save(file_sha256=_file_hashes([model]))
    assert _reusable(folder, "k", messages.append) is not None
    assert _reusable(folder, "other", messages.append) is None and messages == []
    model.write_bytes(good[:-3])  # torn: same name, other bytes
    assert _reusable(folder, "k", messages.append) is None
    assert messages[-1] == "onnx: rebuilding: model.onnx does not match the hash recorded when it was built"
    save()  # an artifact from before hashes were recorded: the ONNX must parse
    assert _reusable(folder, "k", messages.append) is None
    assert messages[-1].startswith("onnx: rebuilding: model.onnx does not load")
    model.write_bytes(good)
    assert _reusable(folder, "k", messages.append) is not None
    model.write_bytes(b"")
    assert _reusable(folder, "k", messages.append) is None and messages[-1] == "onnx: rebuilding: model.onnx is empty"
    (folder / "artifact.json").write_text('{"build_key": "k", "fi')  # a torn artifact.json
    assert _reusable(folder, "k", messages.append) is None
    assert messages[-1] == "onnx: rebuilding: its artifact.json does not load"


def test_tensorrt_golden_data_is_listed_hashed_and_a_torn_one_rebuilds(reruns, tmp_path):
    """golden.npz is part of the artifact: listed, hashed, so a truncated one is rebuilt (it was
    reused before, and `bundle` then died with BadZipFile); not counted in the deployed size."""
    import json
    import shutil

    from xcit_export.engine.store import reusable as _reusable

    out = reruns[0]
    folder = tmp_path / "tensorrt-fp32"
    shutil.copytree(out / "tensorrt-fp32", folder)
    meta = json.loads((folder / "artifact.json").read_text())
    assert "golden.npz" in meta["files"] and "golden.npz" in meta["file_sha256"]
    assert meta["support_files"] == ["golden.npz"]
    entry = reruns[1][-1]["targets"][0]
    assert entry["artifact"]["size_bytes"] == (folder / "model.fp32.onnx").stat().st_size
    assert _reusable(folder, meta["build_key"]) is not None
    golden = folder / "golden.npz"
    golden.write_bytes(golden.read_bytes()[: golden.stat().st_size // 2])
    messages = []
    assert _reusable(folder, meta["build_key"], messages.append) is None
    assert messages == ["tensorrt-fp32: rebuilding: golden.npz does not match the hash recorded when it was built"]


def test_tensorrt_keys_hold_the_library_and_the_gpu(base, monkeypatch):
    """An engine-less build reused where an engine can be built, and an engine for GPU A reused on
    GPU B, would be stale: the library (and its version) and the GPU are in the key."""
    import types

    from xcit_export.targets import tensorrt as trt

    def keys_with(library, gpu, **options):
        monkeypatch.setattr(trt, "import_library", lambda name: library)
        monkeypatch.setattr(trt, "gpu_info", lambda device=0: gpu)
        config = replace(base, target_options={"tensorrt-fp32": options, "tensorrt-rtx-fp32": options})
        got = build_keys(config)
        return got["tensorrt-fp32"], got["tensorrt-rtx-fp32"]

    v10, v11 = types.SimpleNamespace(__version__="10.3.0"), types.SimpleNamespace(__version__="10.7.0")
    orin = {"name": "Orin", "compute_capability": "8.7"}
    rtx = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
    cases = [keys_with(None, None), keys_with(v10, None), keys_with(v10, orin), keys_with(v10, rtx),
             keys_with(v11, orin)]
    for i in (0, 1):
        assert len({c[i] for c in cases}) == len(cases)
    assert keys_with(v10, orin) == cases[2]  # the same machine reuses
    # engine=skip builds no engine anywhere: neither the library nor the GPU counts
    assert keys_with(None, None, engine="skip") == keys_with(v10, rtx, engine="skip")


def test_the_matrix_cell_key_holds_every_latency_setting():
    """A finished cell is reused when its key is unchanged: every latency setting is in it (max_seconds was not)."""
    import types

    from xcit_export.evaluate.validate import LatencyOptions
    from xcit_export.scale.matrix import Cell, cell_key

    cell = Cell(MODEL, "onnxruntime-fp32", None)
    executor = types.SimpleNamespace(name="local", threads=lambda task: 2)
    built = types.SimpleNamespace(artifact=types.SimpleNamespace(metadata={"build_key": "k"}), options={},
                                  batch1=False)

    def key(**latency):
        options = RunOptions(MODEL, **latency)
        scenarios = options.scenario_options()  # as plan_run resolves them
        plan = types.SimpleNamespace(options=options, scenarios=scenarios if scenarios.active else None)
        return cell_key(cell, plan, built, "h", executor)

    base = key()
    for field in dataclasses.fields(LatencyOptions):
        value = {"warmup": 3, "iterations": 7, "min_seconds": 1.5, "max_seconds": 12.0}[field.name]
        assert key(**{field.name: value}) != base, field.name
    assert key() == base
    offline = key(scenarios="offline")  # a cell measured without a scenario is not reused for one
    assert offline != base and key(scenarios="offline", streams=2) != offline
    assert key(scenarios="offline", sustain=30) != offline
