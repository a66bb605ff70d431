"""The CLI end to end, and every bad input it must refuse with one clear line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from xcit_export import __version__
from xcit_export.cli import main

FAST = ["--eval-count", "4", "--warmup", "1", "--iterations", "3"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_list_models_and_targets():
    res = invoke("list-models")
    assert res.exit_code == 0
    names = [line.split()[0] for line in res.output.splitlines()]
    assert len(names) == 29 and "xcit_small_12_p16_384" in names and "vit_small_patch16_224" in names
    res = invoke("list-targets")
    assert res.exit_code == 0 and "onnxruntime-fp32" in res.output


def test_main_job_end_to_end(tmp_path):
    out = tmp_path / "run"
    res = invoke("--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--weights", "random",
                 "--input-size", "64", "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# xcit-export report")
    # What a CI log (no TTY) shows: stage lines, counted loops, then a plain table (no ANSI, no Markdown).
    text = res.output
    assert "\x1b[" not in text and "|---" not in text
    for done in ("evaluation: PyTorch and every target: 4 in", "PyTorch eager latency runs: 5 in",
                 "onnxruntime-fp32: latency runs: 5 in"):
        assert f"  done {done}" in text, done
    assert re.search(r"^target +status +agree +cos min ", text, re.M) and re.search(r"^onnxruntime-fp32 +ok, pass ", text, re.M)
    assert re.search(r"^  onnxruntime-fp32: \w+ \d+%, \w+ \d+%, \w+ \d+%$", text, re.M)  # top three op types
    assert f"report: {out / 'report.json'} (also report.md, report.html)" in text
    (entry,) = report["targets"]
    assert entry["status"] == "ok" and entry["reused"] is False
    acc, lat = entry["accuracy"], entry["latency"]
    assert acc["count"] == 4 and acc["top1_agreement"] == 1.0 and acc["cosine_min"] > 0.99999
    assert lat["iterations"] >= 3 and lat["min_ms"] <= lat["median_ms"] <= lat["max_ms"]
    assert entry["artifact"]["size_bytes"] == (out / "onnxruntime-fp32" / "model.onnx").stat().st_size
    assert report["device"]["cpu_count"] >= 1 and "torch" in report["device"]["libraries"]

    # The report's accuracy numbers reproduce with an independent onnxruntime run of the same file.
    from xcit_export.export import seeded_inputs, torch_reference
    from xcit_export.models.weights import load_model
    from xcit_export.models.zoo import get_spec

    x = seeded_inputs((3, 64, 64), 4, seed=2)
    sess = ort.InferenceSession(str(out / "onnxruntime-fp32" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    ref = torch_reference(load_model(get_spec("xcit_nano_12_p16_224").with_overrides(input_size=(64, 64))), x)[0]
    assert acc["max_abs_error"] == pytest.approx(float(np.abs(got.astype(np.float64) - ref).max()), rel=1e-3, abs=1e-7)

    # Unchanged inputs: artifacts are reused, not rebuilt. --quiet: the results only.
    res = invoke("--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--input-size", "64",
                 "--out", str(out), *FAST, "--quiet")
    assert res.exit_code == 0
    assert "done " not in res.output and "ONNX:" not in res.output
    assert re.search(r"^onnxruntime-fp32 +ok, pass ", res.output, re.M)
    assert json.loads((out / "report.json").read_text())["targets"][0]["reused"] is True


@pytest.mark.parametrize("args, message", [
    (["--model", "xcit_nano_12_p16", "--target", "onnxruntime-fp32"], "Did you mean xcit_nano_12_p16_384, xcit_nano_12_p16_224"),
    (["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp33"], "unknown target 'onnxruntime-fp33'"),
    (["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--weights", "nope.pth"],
     "checkpoint 'nope.pth' does not exist"),
    (["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--input-size", "100"],
     "multiples of the patch size 16"),
    (["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--device", "GPU"],
     "option 'device' is not used by any selected target"),
    # issue 29: inputs that are wrong stop the run before any work, in one line (usage errors: exit 2)
    (["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--eval-count", "-3"],
     "--eval-count -3 is out of range: it must be >= 1"),
    (["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--seed", "-5"],
     "--seed -5 is out of range: it must be >= 0"),
    (["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--eval-count", "0"],
     "--eval-count 0 is out of range: it must be >= 1"),
    (["--model", "xcit_nano_12_p16_224", "--target", "openvino-fp32", "--device", "GPU"],
     "OpenVINO device GPU is not available on this machine"),
    (["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--eval", "x.npz", "--dynamic-size",
      "--eval-sizes", "224,256"], "--eval 'x.npz' holds tensors preprocessed at one size"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    if "openvino-fp32" in args:
        ov = pytest.importorskip("openvino")
        if any(d.startswith("GPU") for d in ov.Core().available_devices):
            pytest.skip("this machine has an OpenVINO GPU")
    res = invoke(*args, "--out", str(tmp_path / "o"))
    usage = any(a in args for a in ("--device", "--eval-count", "--seed", "--eval-sizes"))
    assert res.exit_code == (2 if usage else 1), res.output
    assert message in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()  # refused before any work: --out as it was (issue 30)


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = invoke("--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--out", str(blocker / "sub"))
    assert res.exit_code == 1 and "is not writable" in res.output and "--out" in res.output


def test_checkpoint_with_wrong_class_count(tmp_path):
    import torch

    from xcit_export.models.zoo import build_model, get_spec

    path = tmp_path / "c10.pth"
    torch.save(build_model(get_spec("xcit_nano_12_p16_224").with_overrides(num_classes=10)).state_dict(), path)
    res = invoke("--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32", "--weights", str(path),
                 "--out", str(tmp_path / "o"))
    assert res.exit_code == 1 and "pass --num-classes 10" in res.output
    assert not (tmp_path / "o").exists()  # failed before writing anything: no lone lock file (issue 30)


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"xcit-export {__version__}"


@pytest.mark.parametrize("value", ["0", "-2"])
def test_threads_must_be_positive(tmp_path, value):
    res = CliRunner().invoke(main, ["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32",
                                    "--threads", value, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and f"--threads {value} is out of range: it must be >= 1" in res.output
    assert not (tmp_path / "o").exists()
    from xcit_export.errors import OptionError
    from xcit_export.options import RunOptions

    with pytest.raises(OptionError, match=f"--threads {value} is out of range: it must be >= 1"):
        RunOptions("xcit_nano_12_p16_224", ["onnxruntime-fp32"], out=tmp_path / "o", threads=int(value))


@pytest.mark.parametrize("option, value", [("--eval-count", "-3"), ("--eval-count", "0"), ("--seed", "-5"),
                                           ("--calib-size", "0"), ("--eval-size", "0")])
def test_numbers_out_of_range_stop_before_any_work(tmp_path, option, value):
    """Issue 29: these ended in tracebacks (or KeyError: 'logits') after the model loaded."""
    res = CliRunner().invoke(main, ["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32",
                                    option, value, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and f"{option} {value} is out of range" in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()

@pytest.mark.parametrize("option, value, message", [("--eval", "missing", r"--eval '.*missing' does not exist"),
                                                    ("--weights", "missing.pth", r"checkpoint '.*missing.pth' does not exist")])
def test_bad_inputs_leave_out_as_they_found_it(tmp_path, option, value, message):
    """Issue 29: a run refused on its inputs left an empty --out folder, or one holding a lone lock
    file; a folder that existed before is kept as it was."""
    for out in (tmp_path / "new" / "o", tmp_path / "mine"):
        if out.name == "mine":
            out.mkdir()
        res = CliRunner().invoke(main, ["--model", "xcit_nano_12_p16_224", "--target", "onnxruntime-fp32",
                                        option, str(tmp_path / value), "--out", str(out)])
        assert res.exit_code == 1 and re.search(message, res.output), res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"] and not any((tmp_path / "mine").iterdir())

def test_shards_must_be_positive(tmp_path):
    """--shards 0 is refused, not taken as 'no sharding' and silently ignored."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "ci-gate.toml"
    res = CliRunner().invoke(main, ["--recipe", str(recipe), "--shards", "0", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "Invalid value for '--shards'" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("weights", ["checkpoint", "pretrained"])
def test_int8_for_real_weights_needs_calibration_images(tmp_path, weights):
    if weights == "checkpoint":
        weights = str(tmp_path / "mine.pth")  # refused before it is read: its kind is enough
        (tmp_path / "mine.pth").write_bytes(b"checkpoint")
    res = invoke("--model", "xcit_nano_12_p16_224", "--target", "tensorrt-int8", "--weights", weights,
                 "--out", str(tmp_path / "o"))
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "target tensorrt-int8 needs calibration images: pass --calib FOLDER" in res.output
    assert f"--weights {weights}" in res.output
    assert not (tmp_path / "o" / "onnx").exists()
