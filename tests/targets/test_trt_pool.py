"""The TensorRT request pool (targets/tensorrt/pool.py) against the recording double of tests/targets/test_trt_runner.py.

NOT hardware verification (no GPU, TensorRT or CUDA driver here): it checks what the pool asks of the
API: one context per stream, one engine shared only when its input shape is static (a dynamic-shape
engine's single optimisation profile serves one context at a time, so each stream gets an engine
copy), a request launched on a slot only after that slot's previous one was waited for, and
outputs equal to the single-request runner's.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from test_trt_runner import IN, OUT, FakeCudart, FakeEngine, _compute, _expected, _nptype
from xcit_export.evaluate import scenarios as sc
from xcit_export.targets.tensorrt.pool import EnginePool


class StaticEngine(FakeEngine):
    min = max = 4

    def get_tensor_shape(self, name):
        return {"input": (4, 4), "features_a": (4, 2), "features_b": (4, 3)}[name]


def _modules(engine_cls):
    cudart = FakeCudart()
    made = []

    def deserialize(data):
        made.append(engine_cls(cudart, False))
        return made[-1]

    trt = SimpleNamespace(__version__="10.3.0", ILogger=type("L", (), {"__init__": lambda self: None}),
                          nptype=_nptype, TensorIOMode=SimpleNamespace(INPUT=IN, OUTPUT=OUT),
                          Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=deserialize))
    return (trt, cudart), made


@pytest.mark.parametrize("engine_cls, copies", [(StaticEngine, 1), (FakeEngine, 3)])
def test_one_context_per_stream_and_engine_copies_only_for_dynamic_shapes(tmp_path, engine_cls, copies):
    (trt, cudart), made = _modules(engine_cls)
    path = tmp_path / "model.engine"
    path.write_bytes(b"fake")
    x = np.random.default_rng(0).standard_normal((4, 4), dtype=np.float32)
    pool = EnginePool(path, "tensorrt", x, streams=3, cuda_graph=False, output_names=["features_a", "features_b"],
                      modules=(trt, cudart))
    try:
        assert len(made) == copies and pool.copies == copies
        assert sum(len(e.contexts) for e in made) == 3  # one execution context per stream
        assert "3 execution contexts on 3 CUDA streams" in pool.describe()["mechanism"]
        a, b = pool.outputs()
        ref_a, ref_b = _expected(x)
        assert np.array_equal(a, ref_a) and np.array_equal(b, ref_b)
        done = []
        cudart.calls.clear()
        for _ in range(7):
            pool.submit(lambda s, e: done.append((s, e)))
        # slots 0,1,2 launched without waiting; the 4th request waits for slot 0's first one, and so on
        assert [c for c in cudart.calls if c == "sync"] == ["sync"] * 4
        pool.wait_all()
        assert len(done) == 7 and all(e >= s for s, e in done)
        assert [c for c in cudart.calls if c == "sync"] == ["sync"] * 7
    finally:
        pool.close()
    assert pool.slots == []


def test_scenario_loops_drive_the_engine_pool(tmp_path):
    (trt, cudart), _ = _modules(StaticEngine)
    path = tmp_path / "model.engine"
    path.write_bytes(b"fake")
    x = np.ones((4, 4), np.float32)
    pool = EnginePool(path, "tensorrt", x, streams=2, cuda_graph=False, modules=(trt, cudart))
    try:
        ref = [_compute(x)[k] for k in ("features_b", "features_a")]  # the engine's own output order here
        assert sc.checked(pool, [r.astype(np.float32) for r in ref]) is pool
        offline = sc.offline_run(pool, 0.02, warmup=1)
        assert offline.images == 4 * len(offline.ms) > 0
        multi = sc.multi_stream(pool, 0.02, warmup=1)
        assert multi.images == 2 * 4 * len(multi.ms)
    finally:
        pool.close()
