"""The engine runner's control flow against a recording double of TensorRT and cuda-python.

NOT hardware verification: no GPU, TensorRT runtime or CUDA driver is involved. The double keeps
"device" memory in host buffers, runs a tiny two-output "engine" in numpy, and records every call,
so these tests check what the runner asks of the API: output order by the ONNX's names, typed
views of byte buffers (an FP16 output), chunks padded up to the profile minimum, and CUDA-graph
recapture whenever the input shape changes (a stale graph replays the shape it was captured for,
so reusing one after a shape change gives wrong outputs here, as TensorRT documents it may on a GPU).
"""

from __future__ import annotations

import ctypes
import json
from types import SimpleNamespace

import numpy as np
import pytest

from xcit_export.errors import ArtifactError
from xcit_export.targets.tensorrt.runner import EngineRunner, from_float32, host_dtype, plan_chunks, to_float32


class _DType(SimpleNamespace):
    pass


FLOAT, HALF, BF16 = _DType(name="FLOAT"), _DType(name="HALF"), _DType(name="BF16")
IN, OUT = "INPUT", "OUTPUT"


def _nptype(dtype):
    table = {"FLOAT": np.float32, "HALF": np.float16}
    if dtype.name not in table:
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return table[dtype.name]


def _compute(x):
    """The double's "engine": ONNX outputs (a, b); the engine lists them as (b, a)."""
    return {"features_a": (x[:, :2] * 2).astype(np.float32), "features_b": (x[:, 1:4] + 1).astype(np.float16)}


class FakeCudart:
    class cudaError_t:  # noqa: N801 - cuda-python's names
        cudaSuccess = 0

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaStreamCaptureMode:  # noqa: N801
        cudaStreamCaptureModeThreadLocal = 0

    def __init__(self):
        self.calls, self._mem, self.capturing, self.captured_shape, self.graphs = [], {}, False, None, {}
        self.context = None

    def _alloc(self, n):
        buf = ctypes.create_string_buffer(n)
        self._mem[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def cudaMalloc(self, n):  # noqa: N802
        return self._alloc(n)

    def cudaMallocHost(self, n):  # noqa: N802
        return self._alloc(n)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):  # noqa: N802
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamCreate(self):  # noqa: N802
        return 0, 7

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        self.calls.append("sync")
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        self.capturing = True
        self.calls.append("begin_capture")
        return (0,)

    def cudaStreamEndCapture(self, stream):  # noqa: N802
        self.capturing = False
        self.calls.append("end_capture")
        return 0, ("graph", self.captured_shape)

    def cudaGraphInstantiateWithFlags(self, graph, flags):  # noqa: N802
        exec_id = f"exec{len(self.graphs)}"
        self.graphs[exec_id] = graph[1]
        return 0, exec_id

    def cudaGraphDestroy(self, graph):  # noqa: N802
        return (0,)

    def cudaGraphExecDestroy(self, exec_id):  # noqa: N802
        self.calls.append("destroy_graph")
        self.graphs.pop(exec_id)
        return (0,)

    def cudaGraphLaunch(self, exec_id, stream):  # noqa: N802
        self.calls.append(("launch", self.graphs[exec_id]))
        self.context.run(self.graphs[exec_id])  # replays the shape it was captured with
        return (0,)

    def cudaFree(self, p):  # noqa: N802
        return (0,)

    cudaFreeHost = cudaFree  # noqa: N815

    def cudaStreamDestroy(self, s):  # noqa: N802
        return (0,)

    def cudaEventCreate(self):  # noqa: N802
        return 0, "event"

    def cudaEventRecord(self, event, stream):  # noqa: N802
        return (0,)

    cudaEventSynchronize = cudaEventDestroy = cudaFree  # noqa: N815

    def cudaEventElapsedTime(self, start, end):  # noqa: N802
        return 0, 0.5


class FakeContext:
    def __init__(self, engine, cudart, fail_capture=False):
        self.engine, self.cudart, self.fail_capture = engine, cudart, fail_capture
        self.shape, self.addresses, self.shapes_set = None, {}, []
        self.profiler = None  # IExecutionContext.profiler: None until one is attached
        cudart.context = self

    def set_input_shape(self, name, shape):
        shape = tuple(shape)
        if not self.engine.min <= shape[0] <= self.engine.max:
            return False
        self.shape = shape
        self.shapes_set.append(shape)
        return True

    def get_tensor_shape(self, name):
        n = self.shape[0]
        return {"input": (n, 4), "features_a": (n, 2), "features_b": (n, 3)}[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def run(self, shape):
        n = shape[0]
        x = np.ctypeslib.as_array((ctypes.c_float * (n * 4)).from_address(self.addresses["input"])).reshape(n, 4)
        for name, value in _compute(x.copy()).items():
            ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)

    def execute_async_v3(self, stream):
        if self.cudart.capturing:
            self.cudart.calls.append(("capture_enqueue", self.shape) + (("PROFILED",) if self.profiler else ()))
            self.cudart.captured_shape = self.shape
            return not self.fail_capture
        if self.profiler is not None:  # enqueue_emits_profile=True: the run's layer times, one call per layer
            self.cudart.calls.append(("profiled_enqueue", self.shape))
            for layer, ms in self.engine.layer_runs.pop(0).items():
                self.profiler.report_layer_time(layer, ms)
        else:
            self.cudart.calls.append(("enqueue", self.shape))
        self.run(self.shape)
        return True


class FakeInspector:
    """IEngineInspector: JSON layer information; only layers built with DETAILED verbosity have a LayerType."""

    def __init__(self, layers):
        self.layers, self.execution_context = layers, None

    def get_layer_information(self, index, fmt):
        assert fmt == "JSON"
        name, kind = self.layers[index]
        return json.dumps({"Name": name, "LayerType": kind} if kind else name)


class FakeEngine:
    num_io_tensors = 3
    min, max = 2, 4

    def __init__(self, cudart, fail_capture):
        self.cudart, self.fail_capture = cudart, fail_capture
        self.layer_runs, self.inspector_layers, self.contexts = [], [], []

    @property
    def num_layers(self):
        return len(self.inspector_layers)

    def create_engine_inspector(self):
        return FakeInspector(self.inspector_layers)

    def get_tensor_name(self, i):
        return ["input", "features_b", "features_a"][i]  # engine order differs from the ONNX's

    def get_tensor_mode(self, name):
        return IN if name == "input" else OUT

    def get_tensor_shape(self, name):
        return {"input": (-1, 4), "features_a": (-1, 2), "features_b": (-1, 3)}[name]

    def get_tensor_profile_shape(self, name, index):
        return (self.min, 4), (self.min, 4), (self.max, 4)

    def get_tensor_dtype(self, name):
        return HALF if name == "features_b" else FLOAT

    def create_execution_context(self, runtime_config=None):
        self.runtime_config = runtime_config
        self.contexts.append(FakeContext(self, self.cudart, self.fail_capture))
        return self.contexts[-1]


class FakeRtxEngine(FakeEngine):
    def create_runtime_config(self):
        return SimpleNamespace(dynamic_shapes_kernel_specialization_strategy="LAZY", cuda_graph_strategy="DISABLED")


def _runner(tmp_path, cuda_graph=False, fail_capture=False, output_names=("features_a", "features_b"), rtx=False):
    cudart = FakeCudart()
    engine_cls = FakeRtxEngine if rtx else FakeEngine

    class Logger:
        def __init__(self):
            pass

    class IProfiler:  # TensorRT's docs: subclasses call IProfiler.__init__ themselves
        def __init__(self):
            self.base_initialised = True

    trt = SimpleNamespace(
        __version__="10.3.0", ILogger=Logger, nptype=_nptype, TensorIOMode=SimpleNamespace(INPUT=IN, OUTPUT=OUT),
        IProfiler=IProfiler, LayerInformationFormat=SimpleNamespace(JSON="JSON", ONELINE="ONELINE"),
        Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda data: engine_cls(cudart, fail_capture)))
    if rtx:
        trt.DynamicShapesKernelSpecializationStrategy = SimpleNamespace(LAZY="LAZY", EAGER="EAGER", NONE="NONE")
        trt.CudaGraphStrategy = SimpleNamespace(DISABLED="DISABLED", WHOLE_GRAPH_CAPTURE="WHOLE_GRAPH_CAPTURE")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"fake")
    runner = EngineRunner(engine, "tensorrt", cuda_graph=cuda_graph, output_names=output_names, modules=(trt, cudart))
    return runner, cudart


def _expected(x):
    out = _compute(x)
    return out["features_a"], out["features_b"].astype(np.float32)


def test_outputs_come_back_by_onnx_name_with_their_dtype(tmp_path):
    runner, _ = _runner(tmp_path)
    x = np.random.default_rng(0).standard_normal((3, 4), dtype=np.float32)
    a, b = runner.infer(x)
    ref_a, ref_b = _expected(x)
    assert runner.outputs == ["features_a", "features_b"]
    assert a.dtype == np.float32 and a.shape == (3, 2) and np.array_equal(a, ref_a)
    assert b.dtype == np.float32 and b.shape == (3, 3) and np.array_equal(b, ref_b)  # FP16 buffer viewed as FP16
    runner.close()


def test_output_names_that_the_engine_lacks_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"has outputs \['features_b', 'features_a'\] but its ONNX recorded"):
        _runner(tmp_path, output_names=["logits"])


def test_remainder_chunks_are_padded_to_the_profile_minimum(tmp_path):
    runner, _ = _runner(tmp_path)
    x = np.random.default_rng(1).standard_normal((9, 4), dtype=np.float32)
    a, b = runner.infer(x)
    ref_a, ref_b = _expected(x)
    assert np.array_equal(a, ref_a) and np.array_equal(b, ref_b)
    # max 4 per chunk; the last chunk (1 input) padded to min 2; one input alone also padded
    assert runner.context.shapes_set[1:] == [(4, 4), (4, 4), (2, 4)]
    assert runner.infer(x[:1])[0].shape == (1, 2) and runner.context.shapes_set[-1] == (2, 4)
    assert plan_chunks(9, 2, 4) == [(0, 4, 4), (4, 8, 4), (8, 9, 2)]
    assert plan_chunks(3, 1, 16) == [(0, 3, 3)]


def test_cuda_graph_is_recaptured_whenever_the_shape_changes(tmp_path):
    runner, cudart = _runner(tmp_path, cuda_graph=True)
    rng = np.random.default_rng(2)
    for n, expect in ((2, "capture"), (2, "replay"), (4, "capture"), (2, "capture")):
        cudart.calls.clear()
        x = rng.standard_normal((n, 4), dtype=np.float32)
        a, b = runner.infer(x)
        ref_a, ref_b = _expected(x)
        assert np.array_equal(a, ref_a) and np.array_equal(b, ref_b), n
        graph_calls = [c for c in cudart.calls if c != "sync"]
        if expect == "replay":  # same shape as the previous call: the graph is replayed, nothing else
            assert graph_calls == [("launch", (2, 4))]
        else:  # shape differs from the previous call's: plain enqueue first (TensorRT's rule), fresh capture
            assert graph_calls[-4:] == [("enqueue", (n, 4)), "begin_capture", ("capture_enqueue", (n, 4)), "end_capture"]
            assert ("launch", (2, 4)) not in graph_calls
            assert list(cudart.graphs.values()) == [(n, 4)]  # the old shape's graph was destroyed
    cudart.calls.clear()
    assert runner.gpu_latency_ms(np.ones((2, 4), np.float32), warmup=1, iterations=2) == [0.5, 0.5]
    assert [c for c in cudart.calls if c != "sync"] == [("launch", (2, 4))] * 4  # _run + warm-up + 2 timed
    runner.close()
    assert cudart.graphs == {}


def test_a_failed_enqueue_during_capture_ends_the_capture_and_says_so(tmp_path):
    runner, cudart = _runner(tmp_path, cuda_graph=True, fail_capture=True)
    with pytest.raises(ArtifactError, match="execute_async_v3 failed during CUDA graph capture"):
        runner.infer(np.ones((2, 4), np.float32))
    assert cudart.capturing is False and cudart.graphs == {}


def test_bf16_and_fp16_host_types():
    assert host_dtype(SimpleNamespace(nptype=_nptype), HALF) == np.float16
    assert host_dtype(SimpleNamespace(nptype=_nptype), BF16) == np.uint16
    with pytest.raises(ArtifactError, match="FP8 has no numpy equivalent"):
        host_dtype(SimpleNamespace(nptype=_nptype), _DType(name="FP8"))
    x = np.array([1.0, -2.5, 3.140625, 1e-3], np.float32)
    bits = from_float32(x, np.dtype(np.uint16), bf16=True)
    assert bits.dtype == np.uint16 and np.allclose(to_float32(bits, bf16=True), x, rtol=1 / 128)
    assert to_float32(bits, bf16=True)[:3].tolist() == [1.0, -2.5, 3.140625]  # exactly representable in BF16


# --------------------------------------------------------------------------------------------
# Engine build helpers whose TensorRT calls return values (no TensorRT needed)
# --------------------------------------------------------------------------------------------

class _Config:
    """IBuilderConfig's timing-cache calls: set_timing_cache refuses a foreign cache (returns False)."""

    def __init__(self, refuse: bytes = b"", attach: bool = True):
        self.refuse, self.attach, self.cache = refuse, attach, None

    def create_timing_cache(self, data):
        return SimpleNamespace(data=data, serialize=lambda: b"tuned:" + data)

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        if self.refuse and cache.data == self.refuse:
            return False
        self.cache = cache if self.attach else None
        return True

    def get_timing_cache(self):
        return self.cache


def test_timing_cache_from_another_gpu_is_replaced_and_a_missing_one_is_not_written(tmp_path):
    from xcit_export.targets.tensorrt.engine import _attach_timing_cache, _save_timing_cache

    path = tmp_path / "t.cache"
    path.write_bytes(b"other-gpu")
    config = _Config(refuse=b"other-gpu")
    note = _attach_timing_cache(config, path)
    assert "made on another GPU or TensorRT version: ignored, started empty" in note and config.cache.data == b""
    assert _save_timing_cache(config, path, note) == note and path.read_bytes() == b"tuned:"
    # get_timing_cache() returns None when none is attached: no AttributeError, nothing written
    lost = _Config(attach=False)
    note = _attach_timing_cache(lost, tmp_path / "new.cache")
    assert "not written" in _save_timing_cache(lost, tmp_path / "new.cache", note)
    assert not (tmp_path / "new.cache").exists()


def test_tensorrt_rtx_compiles_shape_kernels_eagerly_and_captures_graphs_itself(tmp_path):
    runner, cudart = _runner(tmp_path, cuda_graph=True, rtx=True)
    config = runner.engine.runtime_config
    # EAGER: timed runs must not use fallback kernels while specialised ones compile (LAZY, the default)
    assert config.dynamic_shapes_kernel_specialization_strategy == "EAGER"
    assert config.cuda_graph_strategy == "WHOLE_GRAPH_CAPTURE"
    for n in (2, 4, 2):
        runner.infer(np.ones((n, 4), np.float32))
    assert "begin_capture" not in cudart.calls and cudart.graphs == {}  # TensorRT-RTX's own capture, per shape


def test_a_cuda_python_for_a_newer_driver_is_named_and_nvidia_smi_still_asked(monkeypatch):
    from xcit_export import fingerprint
    from xcit_export.targets.tensorrt import device

    class Err(SimpleNamespace):
        pass

    success, insufficient = Err(name="cudaSuccess"), Err(name="cudaErrorInsufficientDriver")
    fake = SimpleNamespace(cudaError_t=SimpleNamespace(cudaSuccess=success),
                           cudaGetDeviceCount=lambda: (insufficient, 0))
    monkeypatch.setattr(device, "_cudart", lambda: fake)
    monkeypatch.setattr(device, "cuda_python_version", lambda: "13.0.1")
    monkeypatch.setattr(fingerprint, "_gpus", lambda: ["Orin (nvgpu), 8.7, 540.4.0"])
    gpu, problem = device.gpu_status()
    assert gpu == {"name": "Orin (nvgpu)", "compute_capability": "8.7"}
    assert "cuda-python 13.0.1: cudaGetDeviceCount() returned cudaErrorInsufficientDriver" in problem
    assert "JetPack 6 (CUDA 12.6): pip install 'cuda-python==12.6.*'" in problem
    monkeypatch.setattr(fingerprint, "_gpus", lambda: [])  # no nvidia-smi: still the CUDA error, not "no GPU"
    assert device.gpu_status()[0] is None and "cudaErrorInsufficientDriver" in device.gpu_status()[1]


# --------------------------------------------------------------------------------------------
# Layer profile (TensorRT's IProfiler) against the double
# --------------------------------------------------------------------------------------------

# Four layers as TensorRT would name them: ONNX node names (one fused), a reformat it inserted, and
# one the inspector types (an engine built with DETAILED verbosity); run 0 is lazy initialisation.
_NODE_TYPES = {"node_conv2d_1": "Conv", "node_matmul_2": "MatMul", "node_add_3": "Add"}
_LAYER_RUNS = [
    {"node_conv2d_1": 90.0, "node_matmul_2 + node_add_3": 90.0, "Reformatting CopyNode for Input Tensor 0": 90.0,
     "gemm_0": 90.0},  # discarded: would move every median if it counted
    {"node_conv2d_1": 1.0, "node_matmul_2 + node_add_3": 2.0, "Reformatting CopyNode for Input Tensor 0": 0.5,
     "gemm_0": 3.0},
    {"node_conv2d_1": 1.2, "node_matmul_2 + node_add_3": 2.4, "Reformatting CopyNode for Input Tensor 0": 0.1,
     "gemm_0": 2.0},
    {"node_conv2d_1": 0.8, "node_matmul_2 + node_add_3": 2.2, "Reformatting CopyNode for Input Tensor 0": 0.3,
     "gemm_0": 4.0},
]
_INSPECTOR = [("node_conv2d_1", None), ("node_matmul_2 + node_add_3", None),
              ("Reformatting CopyNode for Input Tensor 0", None), ("gemm_0", "CaskGemm")]


def _profiled_runner(tmp_path, **kw):
    runner, cudart = _runner(tmp_path, **kw)
    runner.engine.layer_runs = [dict(r) for r in _LAYER_RUNS]
    runner.engine.inspector_layers = list(_INSPECTOR)
    return runner, cudart


def test_layer_times_become_per_type_medians_without_the_first_run(tmp_path):
    runner, cudart = _profiled_runner(tmp_path)
    sentinel = object()
    runner.context.profiler = sentinel  # someone else's profiler: put back afterwards
    prof = runner.layer_profile(np.ones((2, 4), np.float32), runs=4, node_types=_NODE_TYPES)
    assert runner.context.profiler is sentinel and runner.engine.layer_runs == []
    # medians of runs 1-3 per type: inspector LayerType, then ONNX op types (fused: both), then the name rule
    assert [(o["op_type"], o["ms"]) for o in prof["ops"]] == [
        ("CaskGemm", 3.0), ("MatMul+Add", 2.2), ("Conv", 1.0), ("Reformat", 0.3)]
    assert prof["total_ms"] == 6.5 and prof["runs"] == 3 and prof["batch"] == 2
    assert [o["share"] for o in prof["ops"]] == [round(3.0 / 6.5, 4), round(2.2 / 6.5, 4), round(1.0 / 6.5, 4),
                                                 round(0.3 / 6.5, 4)]
    assert prof["source"] == "TensorRT IProfiler (IExecutionContext.profiler)" and prof["wall_ms"] > 0
    assert prof["layers"] == 4 and prof["layer_types_from"] == {"inspector": 1, "onnx": 2, "name": 1}
    assert [c for c in cudart.calls if c != "sync"] == [("profiled_enqueue", (2, 4))] * 4


def test_profiling_never_captures_or_replays_a_cuda_graph_and_detaches_after(tmp_path):
    runner, cudart = _profiled_runner(tmp_path, cuda_graph=True)
    rng = np.random.default_rng(3)
    runner.infer(rng.standard_normal((2, 4), dtype=np.float32))  # captures the (2, 4) graph
    assert list(cudart.graphs.values()) == [(2, 4)] and runner.context.profiler is None
    cudart.calls.clear()
    runner.layer_profile(np.ones((4, 4), np.float32), runs=4, node_types=_NODE_TYPES)  # another shape
    assert [c for c in cudart.calls if c != "sync"] == [("profiled_enqueue", (4, 4))] * 4
    assert runner.context.profiler is None
    # after profiling at (4, 4), a (2, 4) call must not replay the graph as if the context were unchanged
    cudart.calls.clear()
    x = rng.standard_normal((2, 4), dtype=np.float32)
    a, b = runner.infer(x)
    ref_a, ref_b = _expected(x)
    assert np.array_equal(a, ref_a) and np.array_equal(b, ref_b)
    assert [c for c in cudart.calls if c != "sync"][-4:] == [("enqueue", (2, 4)), "begin_capture",
                                                             ("capture_enqueue", (2, 4)), "end_capture"]
    assert not any("PROFILED" in c for c in cudart.calls if isinstance(c, tuple))


def test_tensorrt_rtx_profiles_on_a_context_without_its_graph_capture(tmp_path):
    runner, cudart = _profiled_runner(tmp_path, cuda_graph=True, rtx=True)
    main = runner.context
    prof = runner.layer_profile(np.ones((2, 4), np.float32), runs=4, node_types=_NODE_TYPES)
    assert prof["total_ms"] == 6.5
    profiling = runner.engine.contexts[-1]
    assert profiling is not main and runner.engine.runtime_config.cuda_graph_strategy == "DISABLED"
    assert profiling.addresses == main.addresses  # bound to the runner's buffers
    assert main.profiler is None and profiling.profiler is None
    assert runner.infer(np.ones((2, 4), np.float32))[0].shape == (2, 2)  # the main context still runs


def test_profile_needs_two_runs_and_a_batch_in_the_profile(tmp_path):
    runner, _ = _profiled_runner(tmp_path)
    with pytest.raises(ArtifactError, match="runs must be 2 or more"):
        runner.layer_profile(np.ones((2, 4), np.float32), runs=1)
    with pytest.raises(ArtifactError, match="profiling batch 5 is outside the engine's profile 2..4"):
        runner.layer_profile(np.ones((5, 4), np.float32))
    runner.engine.layer_runs = [{}] * 3  # a TensorRT that never calls the profiler: said, not an empty table
    with pytest.raises(ArtifactError, match="reported no layer times"):
        runner.layer_profile(np.ones((2, 4), np.float32), runs=3)
    assert runner.context.profiler is None


def test_layer_type_rule_for_names_without_inspector_or_onnx_types():
    from xcit_export.targets.tensorrt.layer_profile import type_from_name

    assert type_from_name("/blocks.0/attn/MatMul_1") == "MatMul"
    assert type_from_name("/blocks.0/attn/MatMul + /blocks.0/attn/Add") == "MatMul+Add"
    assert type_from_name("node_Conv_1071") == "Conv" and type_from_name("node_layer_norm_3") == "layer_norm"
    assert type_from_name("node_Add_1 + node_Add_2") == "Add"  # each type once
    assert type_from_name("{ForeignNode[/blocks.0/Add.../blocks.11/Mul]}") == "ForeignNode (Myelin)"
    assert type_from_name("PWN(PWN(/mlp/act/Mul_1, /mlp/act/Erf), /mlp/act/Add)") == "PointWise"
    assert type_from_name("Reformatting CopyNode for Input Tensor 0 to node_Conv_1") == "Reformat"
    assert type_from_name("__myl_MulSumAdd_myl0_3") == "Myelin kernel"
    assert type_from_name("17") == "layer (unnamed)"  # ProfilingVerbosity.NONE names layers by index
    assert type_from_name("ONNXTRT_Broadcast_3") == "ONNXTRT_Broadcast"


def test_onnx_node_types_type_parser_suffixed_layer_names():
    from xcit_export.targets.tensorrt.layer_profile import classify

    # the ONNX parser names a node's second and third layers node_Shape_0_0, node_Shape_0_1
    types = {"node_Shape_0": "Shape", "node_conv2d": "Conv"}
    assert classify("node_Shape_0_1", {}, types) == ("Shape", "onnx")
    assert classify("node_conv2d + node_Shape_0", {}, types) == ("Conv+Shape", "onnx")
    assert classify("node_conv2d + mystery", {}, types) == ("node_conv2d + mystery", "name")
