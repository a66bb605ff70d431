"""CI's proof of buildability: TensorRT-RTX builds engines ahead of time, without a GPU, from our
FP32, FP16 and INT8 ONNX of xcit_nano_12_p16_224 at 224x224; a parser or builder failure fails.

Skipped only where ``tensorrt_rtx`` is not importable; CI installs ``tensorrt-rtx-cu13``.
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx-cu13 is not installed")

from xcit_export.errors import ArtifactError, ExportError, XcitExportError  # noqa: E402
from xcit_export.targets import Artifact, BuildContext, get_target  # noqa: E402
from xcit_export.targets import tensorrt as trtmod  # noqa: E402

import trt_models  # noqa: E402

PROFILE = {"min": 1, "opt": 1, "max": 8}


def _engine_meta(folder):
    return json.loads((folder / trtmod.ENGINE_META).read_text())


@pytest.fixture(scope="module")
def fp32_artifact(tmp_path_factory):
    """tensorrt-rtx-fp32 built through the target (precision ONNX, golden data, AOT engine)."""
    out = tmp_path_factory.mktemp("rtx-fp32")
    x = trt_models.inputs(4, seed=3)
    ctx = BuildContext(spec=trt_models.spec(), onnx_path=trt_models.nano_onnx(), out_dir=out, batch=None,
                       input_shape=(3, 224, 224), evaluation=(x, None), threads=2,
                       options={"compute_capability": "8.6", "max_batch": 8, "golden_count": 4})
    artifact = get_target("tensorrt-rtx-fp32").build(ctx)
    artifact.save_metadata()
    return Artifact.from_dir(out)


def test_fp32_engine_builds_ahead_of_time_for_a_named_compute_capability(fp32_artifact):
    folder = fp32_artifact.path.parent
    assert fp32_artifact.path.name == trtmod.ENGINE_FILE and fp32_artifact.path.stat().st_size > 1_000_000
    meta = _engine_meta(folder)
    assert meta["library"] == "tensorrt_rtx" and meta["strongly_typed"] is True
    assert meta["built_for"] == "ahead-of-time for sm_86" and meta["compute_capabilities"] == ["sm_86"]
    assert meta["profile"]["max"] == [8, 3, 224, 224] and meta["tf32"] is False
    # output names recorded at build time, in the ONNX's order, in engine.json and the artifact
    assert meta["output_names"] == ["logits"] == fp32_artifact.metadata["output_names"]
    assert trtmod.onnx_io_names(folder / fp32_artifact.metadata["onnx"]) == ("input", ["logits"])
    assert meta["engine_sha256"] == trtmod.engine.sha256_file(fp32_artifact.path)
    assert meta["profiling_verbosity"] == "detailed"  # the builder took it: layer types for the layer profile
    assert "no GPU here" in fp32_artifact.metadata["note"]
    # No GPU here: load() falls back to the precision-ready ONNX on onnxruntime CPU, flagged as such.
    runner = get_target("tensorrt-rtx-fp32").load(fp32_artifact, threads=2)
    try:
        assert runner.measures_latency is False and "standing in for the engine" in runner.device
        assert runner.infer(trt_models.inputs(2, seed=3))[0].shape == (2, 1000)
    finally:
        runner.close()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_fp16_and_int8_engines_build_ahead_of_time(precision, tmp_path):
    onnx_path, _ = trt_models.precision_onnx(precision)
    meta = trtmod.build_engine(onnx_path, tmp_path / trtmod.ENGINE_FILE, "tensorrt_rtx", precision, PROFILE,
                               (3, 224, 224))
    assert (tmp_path / trtmod.ENGINE_FILE).stat().st_size > 1_000_000
    assert meta["strongly_typed"] is True and meta["built_for"].startswith("portable ahead-of-time")
    assert _engine_meta(tmp_path)["onnx_sha256"] == meta["onnx_sha256"]
    assert meta["output_names"] == trtmod.onnx_io_names(onnx_path)[1] == ["logits"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_features_engines_build_and_record_the_onnx_output_order(precision, tmp_path):
    """--output features has four outputs; the runner returns them by the names recorded here."""
    onnx_path = trt_models.features_onnx(precision)
    size = trt_models.FEATURES_SIZE
    meta = trtmod.build_engine(onnx_path, tmp_path / trtmod.ENGINE_FILE, "tensorrt_rtx", precision,
                               {"min": 1, "opt": 1, "max": 2}, (3, size, size), compute_capability="8.6")
    names = trtmod.onnx_io_names(onnx_path)[1]
    assert names == ["features_s4", "features_s8", "features_s16", "features_s32"]
    assert meta["output_names"] == names == _engine_meta(tmp_path)["output_names"]
    assert meta["profile"] == {"input": "input", "min": [1, 3, size, size], "opt": [1, 3, size, size],
                               "max": [2, 3, size, size]}


def test_a_refused_compute_capability_is_an_error_not_metadata(tmp_path):
    onnx_path = _tiny_onnx(tmp_path)
    with pytest.raises(XcitExportError, match=r"refused compute_capability current GPU \(position 0\)"):
        trtmod.build_engine(onnx_path, tmp_path / "m.engine", "tensorrt_rtx", "fp32", PROFILE, (4,),
                            compute_capability="current,8.6")
    if trtmod.gpu_info() is None:
        with pytest.raises(ExportError, match="'current' needs a usable CUDA GPU here"):
            trtmod.build_engine(onnx_path, tmp_path / "m.engine", "tensorrt_rtx", "fp32", PROFILE, (4,),
                                compute_capability="current")
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / trtmod.ENGINE_META).exists()
    # two outputs whose ONNX order is not alphabetical come back in the ONNX's order
    meta = trtmod.build_engine(onnx_path, tmp_path / "m.engine", "tensorrt_rtx", "fp32", PROFILE, (4,),
                               compute_capability="8.6")
    assert meta["output_names"] == ["b_out", "a_out"] and meta["compute_capabilities"] == ["sm_86"]


def test_host_buffer_types_for_tensorrt_rtx_data_types():
    from xcit_export.targets.tensorrt.runner import host_dtype

    trt = trtmod.import_library("tensorrt_rtx")
    assert host_dtype(trt, trt.DataType.FLOAT) == np.float32 and host_dtype(trt, trt.DataType.HALF) == np.float16
    assert host_dtype(trt, trt.DataType.UINT8) == np.uint8 and host_dtype(trt, trt.DataType.BF16) == np.uint16
    with pytest.raises(ArtifactError, match="FP8 has no numpy equivalent"):
        host_dtype(trt, trt.DataType.FP8)


def _tiny_onnx(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["mm"]), helper.make_node("Relu", ["mm"], ["b_out"]),
         helper.make_node("Sigmoid", ["mm"], ["a_out"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("a_out", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")])
    path = tmp_path / "tiny.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    return path


def test_parser_rejection_names_the_node_and_the_parsers_message(tmp_path):
    """onnxruntime's quantize_static puts the qkv bias through an INT32 DequantizeLinear; NVIDIA's
    parser rejects it, and the error must say which node and why."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["mm"], name="qkv_matmul"),
         helper.make_node("DequantizeLinear", ["bias_q", "bias_scale"], ["bias"], name="qkv_bias_DequantizeLinear"),
         helper.make_node("Add", ["mm", "bias"], ["logits"], name="qkv_add")], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w"),
         numpy_helper.from_array(np.arange(4, dtype=np.int32), "bias_q"),
         numpy_helper.from_array(np.array(0.01, np.float32), "bias_scale")])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    with pytest.raises(ExportError) as info:
        trtmod.build_engine(bad, tmp_path / "bad.engine", "tensorrt_rtx", "int8", PROFILE, (4,))
    message = str(info.value)
    assert "qkv_bias_DequantizeLinear" in message and "(DequantizeLinear)" in message
    assert "Int32" in message and "bad.onnx" in message
    assert "cudaError" not in message  # the CPU-only build's driver noise is not the parser's message
    assert not (tmp_path / "bad.engine").exists()


def test_engine_from_another_version_is_refused(fp32_artifact, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(fp32_artifact.path.parent, folder)
    meta = _engine_meta(folder)
    meta["version"] = "0.9.0.1"
    (folder / trtmod.ENGINE_META).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"built with tensorrt_rtx 0\.9\.0\.1 but this machine has tensorrt_rtx "):
        get_target("tensorrt-rtx-fp32").load(Artifact.from_dir(folder), threads=1)


def test_engine_for_another_gpu_is_refused(fp32_artifact):
    meta = _engine_meta(fp32_artifact.path.parent)  # ahead-of-time for sm_86
    trt = trtmod.import_library("tensorrt_rtx")
    trtmod.check_engine_metadata(meta, trt, {"name": "NVIDIA GeForce RTX 3080", "compute_capability": "8.6"}, "e")
    with pytest.raises(ArtifactError, match=r"built ahead-of-time for sm_86 but this GPU .* compute capability 8\.9"):
        trtmod.check_engine_metadata(meta, trt, {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}, "e")
    # A tensorrt (Jetson) engine is tied to the GPU that built it.
    jetson = {"library": "tensorrt", "version": "10.3.0",
              "built_on": {"gpu": "Orin", "compute_capability": "8.7"}}
    fake_trt = SimpleNamespace(__version__="10.3.0", __name__="tensorrt")
    with pytest.raises(ArtifactError, match="built for Orin .* this GPU is NVIDIA A100"):
        trtmod.check_engine_metadata(jetson, fake_trt, {"name": "NVIDIA A100", "compute_capability": "8.0"}, "e")


def test_unknown_compute_capability_lists_the_known_ones():
    trt = trtmod.import_library("tensorrt_rtx")
    with pytest.raises(XcitExportError, match=r"compute_capability '8\.7' is not one tensorrt_rtx .* knows .*8\.6"):
        trtmod.compute_capabilities(trt, "8.7")
    assert [trtmod._cc_text(c) for c in trtmod.compute_capabilities(trt, "8.6,sm_120")] == ["sm_86", "sm_120"]


def test_engine_and_engine_json_are_replaced_together(tmp_path, monkeypatch):
    """A failure after the engine is serialized leaves the previous pair, never a new engine with an old json."""
    onnx_path = _tiny_onnx(tmp_path)
    engine_path = tmp_path / "out" / trtmod.ENGINE_FILE
    trtmod.build_engine(onnx_path, engine_path, "tensorrt_rtx", "fp32", PROFILE, (4,), compute_capability="8.6")
    before = engine_path.read_bytes(), (engine_path.parent / trtmod.ENGINE_META).read_text()

    def broken_dumps(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trtmod.engine.json, "dumps", broken_dumps)
    with pytest.raises(OSError, match="disk full"):
        trtmod.build_engine(onnx_path, engine_path, "tensorrt_rtx", "fp32", {"min": 1, "opt": 1, "max": 2}, (4,),
                            compute_capability="8.6")
    monkeypatch.undo()
    assert (engine_path.read_bytes(), (engine_path.parent / trtmod.ENGINE_META).read_text()) == before
    assert sorted(p.name for p in engine_path.parent.iterdir()) == [trtmod.ENGINE_META, trtmod.ENGINE_FILE]
    assert json.loads(before[1])["engine_sha256"] == trtmod.engine.sha256_file(engine_path)


def test_the_layer_profiler_fits_the_real_tensorrt_rtx_api():
    """What the wheel can show without a GPU: the IProfiler subclass is a real one and collects
    reports; the attributes the layer profile uses exist. (Deserializing an engine, so attaching
    the profiler or creating an inspector, needs a GPU: not verifiable here.)"""
    import tensorrt_rtx as trt

    from xcit_export.targets.tensorrt.layer_profile import make_profiler

    profiler = make_profiler(trt)
    assert isinstance(profiler, trt.IProfiler)
    profiler.report_layer_time("node_conv2d", 0.25)
    profiler.report_layer_time("node_conv2d", 0.5)  # reported twice in one run: added
    assert profiler.take() == {"node_conv2d": 0.75} and profiler.take() == {}
    assert hasattr(trt.IExecutionContext, "profiler") and hasattr(trt.ICudaEngine, "create_engine_inspector")
    assert trt.LayerInformationFormat.JSON is not None and trt.CudaGraphStrategy.DISABLED is not None
