"""Scenario arithmetic (evaluate/scenarios.py): tails, MLPerf early stopping, the stability verdict,
the scenario loops over a pool, and the backends' pools on a tiny ONNX graph (fractions of a second)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from xcit_export.errors import XcitExportError
from xcit_export.evaluate import scenarios as sc

# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


def test_scenario_names_parse_to_the_canonical_order_and_unknown_ones_are_named():
    assert sc.parse_scenarios("offline,single-stream") == (sc.SINGLE, sc.OFFLINE)
    assert sc.parse_scenarios(["multi_stream"]) == (sc.MULTI,)
    assert sc.parse_scenarios("all") == sc.SCENARIOS
    assert sc.parse_scenarios(None) == ()
    with pytest.raises(XcitExportError, match="unknown scenario.*server.*single-stream, multi-stream, offline"):
        sc.parse_scenarios("server")


def test_options_are_checked_and_durations_follow_sustain_and_mlperf():
    with pytest.raises(XcitExportError, match="--streams"):
        sc.ScenarioOptions(scenarios=(sc.MULTI,), streams=0).check()
    with pytest.raises(XcitExportError, match="--sustain"):
        sc.ScenarioOptions(scenarios=(sc.SINGLE,), sustain=0).check()
    with pytest.raises(XcitExportError, match="--mlperf-tail.*single-stream or multi-stream"):
        sc.ScenarioOptions(scenarios=(sc.OFFLINE,), mlperf_tail=True).check()
    plain = sc.ScenarioOptions(scenarios=sc.SCENARIOS, seconds=1.5)
    assert plain.duration(sc.SINGLE) is None and plain.duration(sc.MULTI) == 1.5  # single-stream: the latency pass
    sustained = sc.ScenarioOptions(scenarios=sc.SCENARIOS, sustain=60)
    assert {sustained.duration(s) for s in sc.SCENARIOS} == {60}
    mlperf = sc.ScenarioOptions(scenarios=sc.SCENARIOS, mlperf_tail=True, sustain=60)
    assert mlperf.duration(sc.SINGLE) == 600 and mlperf.duration(sc.OFFLINE) == 60


# ---------------------------------------------------------------------------------------------
# MLPerf early stopping (loadgen/early_stopping.cc, results.cc)
# ---------------------------------------------------------------------------------------------


def test_early_stopping_minimum_queries_match_loadgen():
    # LoadGen's reference values: 64 queries for a p90 estimate, 662 for p99; h_min(t=0, p99) = 459
    assert sc.min_passing_queries(1, 0.90) + 1 == 64
    assert sc.min_passing_queries(1, 0.99) + 1 == 662
    assert sc.min_passing_queries(0, 0.99) == 459


def test_early_stopping_estimate_is_a_conservative_order_statistic():
    lat = np.random.default_rng(0).exponential(1.0, 5000) + 5.0
    es = sc.early_stopping(lat, 0.90)
    ordered = np.sort(lat)
    t = es["discarded"] + 1
    assert es["estimate_ms"] == pytest.approx(ordered[len(lat) - t], abs=1e-4)
    assert es["estimate_ms"] >= es["plain_ms"]  # never below the plain percentile
    assert 0 < es["discarded"] < 0.1 * len(lat)
    # with t = discarded + 1 over-latency queries, LoadGen's condition holds, and fails for one more
    assert sc.min_passing_queries(t, 0.90) + t <= len(lat) < sc.min_passing_queries(t + 1, 0.90) + t + 1
    short = sc.early_stopping(lat[:60], 0.90)
    assert short["estimate_ms"] is None and "at least 64" in short["why"]


# ---------------------------------------------------------------------------------------------
# Stability verdict: synthetic series and one recorded on this machine
# ---------------------------------------------------------------------------------------------

def _series(values, seconds=60.0):
    return np.linspace(0, seconds, len(values), endpoint=False), np.asarray(values, float)


def test_steady_timings_are_stable():
    rng = np.random.default_rng(1)
    t, v = _series(10.0 * (1 + 0.02 * rng.standard_normal(3000)))
    s = sc.stability(t, v, "latency", 60.0)
    assert s["verdict"] == "stable", s
    assert abs(s["drift"]) < 0.02 and s["robust_cv"] < 0.04 and "within" in s["reason"]


def test_a_few_preempted_runs_do_not_make_a_steady_run_noisy():
    rng = np.random.default_rng(2)
    v = 10.0 * (1 + 0.02 * rng.standard_normal(3000))
    v[rng.choice(3000, 30, replace=False)] *= 4  # 1% of runs preempted: CV rises, the robust CV does not
    s = sc.stability(*_series(v), "latency", 60.0)
    assert s["verdict"] == "stable" and s["cv"] > 0.15 > s["robust_cv"]


def test_a_warming_device_is_drifting():
    rng = np.random.default_rng(3)
    ramp = np.linspace(10.0, 13.0, 3000)  # throttling: 30% slower by the end
    s = sc.stability(*_series(ramp * (1 + 0.02 * rng.standard_normal(3000))), "latency", 60.0)
    assert s["verdict"] == "drifting" and s["drift"] > 0.15
    assert "worse than the first" in s["reason"] and "robust CV of only" in s["reason"]


def test_a_shared_core_is_noisy():
    rng = np.random.default_rng(4)
    # half the runs share the core with another busy process and take about twice as long
    v = np.where(rng.random(3000) < 0.5, 10.0, 20.0) * (1 + 0.05 * rng.standard_normal(3000))
    s = sc.stability(*_series(v), "latency", 60.0)
    assert s["verdict"] == "noisy" and s["robust_cv"] > sc.NOISE and "robust CV" in s["reason"]


def test_throughput_windows_that_wander_are_noisy_and_steady_ones_stable():
    t = np.sort(np.random.default_rng(5).uniform(0, 30, 6000))
    steady = sc.stability(t, np.ones(len(t)), "throughput", 30.0)
    assert steady["verdict"] == "stable" and steady["unit"] == "images/s"
    assert steady["first_third"] == pytest.approx(200, rel=0.1)
    # completions bunch up: every other 2.5 s window does four times the work of its neighbours
    bursty_t = np.concatenate([np.linspace(2.5 * k, 2.5 * (k + 1), 400 if k % 2 == 0 else 100, endpoint=False)
                               for k in range(12)])
    noisy = sc.stability(bursty_t, np.ones(len(bursty_t)), "throughput", 30.0)
    assert noisy["verdict"] == "noisy" and noisy["window_cv"] > 0.5


def test_too_few_samples_get_no_verdict():
    assert sc.stability([0, 1, 2], [1, 1, 1])["verdict"] == "too short"


# ---------------------------------------------------------------------------------------------
# The loops over a pool (a fake one whose requests take a known time)
# ---------------------------------------------------------------------------------------------


class FakePool:
    """``streams`` requests in flight, each taking ``ms``; finishes them in a thread like a backend."""

    def __init__(self, streams=2, batch=1, ms=2.0, outputs=None, label="fake"):
        self.streams, self.batch, self.ms = streams, batch, ms
        self.slots = threading.Semaphore(streams)
        self.threads: list = []
        self.closed = False
        self._outputs = outputs if outputs is not None else [np.ones((batch, 3), np.float32)]
        self.label = label

    def submit(self, done):
        self.slots.acquire()
        start = time.perf_counter()

        def work():
            time.sleep(self.ms / 1e3)
            done(start, time.perf_counter())
            self.slots.release()

        th = threading.Thread(target=work)
        th.start()
        self.threads.append(th)

    def wait_all(self):
        for th in self.threads:
            th.join()
        self.threads = []

    def outputs(self):
        return self._outputs

    def describe(self):
        return {"mechanism": self.label, "requests": self.streams}

    def close(self):
        self.wait_all()
        self.closed = True


def test_multi_stream_queries_wait_for_their_last_request():
    opts = sc.ScenarioOptions(scenarios=(sc.MULTI,), streams=4, seconds=0.15).check()
    pool = FakePool(streams=4, ms=5.0)
    rec = sc.multi_stream_record(opts, pool)
    assert rec["streams"] == 4 and rec["queries"] >= 5
    assert rec["p50_ms"] >= 5.0 and rec["p99_ms"] >= rec["p50_ms"]
    assert rec["images_per_s"] == pytest.approx(4 * rec["queries"] / rec["seconds"], rel=0.05)


def test_offline_search_keeps_the_fastest_configuration_and_every_point():
    opts = sc.ScenarioOptions(scenarios=(sc.OFFLINE,), seconds=0.2).check()
    made = []

    def candidate(streams):
        def open_pool():
            pool = FakePool(streams=streams, ms=10.0, label=f"{streams} in flight")
            made.append(pool)
            return pool
        return open_pool

    def broken():
        raise RuntimeError("this configuration does not compile")

    rec = sc.offline_record(opts, [candidate(1), broken, candidate(4)])
    # 4 requests of 10 ms in flight: ~400 images/s against ~100 for one (ratios: the machine may be loaded)
    assert [p.get("streams") for p in rec["search"]] == [1, None, 4]
    assert "does not compile" in rec["search"][1]["error"]
    assert rec["search"][2]["images_per_s"] > 1.8 * rec["search"][0]["images_per_s"]
    assert rec["streams"] == 4 and rec["images_per_s"] > 1.8 * rec["search"][0]["images_per_s"]
    assert all(p.closed for p in made)
    assert list(rec)[:3] == ["batch", "streams", "images_per_s"]


def test_a_pool_that_computes_something_else_is_refused():
    pool = FakePool(outputs=[np.ones((1, 3), np.float32) * 2])
    with pytest.raises(XcitExportError, match="differ.*not this target's"):
        sc.checked(pool, [np.ones((1, 3), np.float32)])
    assert pool.closed
    good = FakePool(outputs=[np.ones((1, 3), np.float32) * (1 + 1e-5)])
    assert sc.checked(good, [np.ones((1, 3), np.float32)]) is good


def test_sustained_single_stream_records_stability_and_the_mlperf_tail():
    opts = sc.ScenarioOptions(scenarios=(sc.SINGLE,), sustain=0.3, mlperf_tail=True, min_seconds=0.3).check()
    x = np.zeros((1, 3), np.float32)
    rec = sc.single_stream_record(opts, lambda a: time.sleep(0.001), x,
                                  snapshot=lambda: {"cpu_mhz": {"mean": 1000.0}},
                                  meter=lambda: SimpleNamespace(stop=lambda: {"available": True, "joules": 0.5}))
    assert rec["stability"]["verdict"] in ("stable", "noisy", "drifting") and rec["stability"]["samples"] > 50
    es = rec["early_stopping"]
    assert es["percentile"] == 0.9 and es["min_duration_met"] and es["queries"] == rec["count"]
    assert rec["conditions"]["before"]["cpu_mhz"]["mean"] == 1000.0
    assert rec["energy"]["mj_per_image"] == pytest.approx(500.0 / rec["count"], rel=1e-3)


def test_single_stream_without_sustain_is_the_latency_pass():
    opts = sc.ScenarioOptions(scenarios=(sc.SINGLE,)).check()
    rec = sc.single_stream_record(opts, None, np.zeros((2, 3)), latency={"samples_ms": [4.0, 5.0, 6.0, 100.0]})
    assert rec["source"] == "the latency pass" and rec["p50_ms"] == 5.5 and rec["batch"] == 2
    assert rec["images_per_s"] == pytest.approx(2 * 1e3 / 5.5, rel=1e-3)


def test_stream_counts():
    assert sc.stream_counts(2) == [1, 2]
    assert sc.stream_counts(6) == [1, 2, 4, 6]
    assert sc.stream_counts(1) == [1]


# ---------------------------------------------------------------------------------------------
# The backends' pools, on a tiny graph
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    """A 3x16x16 -> 10 graph (MatMul + Relu), as ONNX and as an OpenVINO IR."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = tmp_path_factory.mktemp("tiny")
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((768, 10)).astype(np.float32), "w")
    shape = helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array([-1, 768], np.int64)))
    nodes = [shape, helper.make_node("Reshape", ["x", "s"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["m"]),
             helper.make_node("Relu", ["m"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], [w])
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _artifact(path, precision="fp32"):
    return SimpleNamespace(path=Path(path), metadata={"precision": precision})


def test_onnxruntime_pool_runs_concurrent_requests_on_one_session(tiny_graph):
    from xcit_export.targets import get_target

    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    target = get_target("onnxruntime-fp32")
    runner = target.load(SimpleNamespace(path=tiny_graph, metadata={}), threads=2)
    ref = runner.infer(x)
    runner.close()
    pool = sc.checked(target.pool(_artifact(tiny_graph), x, streams=3, threads=2), ref)
    try:
        assert pool.streams == 3 and pool.batch == 2 and pool.describe()["intra_op_threads"] == 1
        series = sc.multi_stream(pool, 0.05, warmup=1)
        assert series.images == 3 * 2 * len(series.ms) and len(series.ms) >= 1
    finally:
        pool.close()


def test_openvino_pool_is_benchmark_apps_async_queue(tiny_graph, tmp_path):
    ov = pytest.importorskip("openvino")
    from xcit_export.targets import get_target

    xml = tmp_path / "model.xml"
    ov.save_model(ov.convert_model(str(tiny_graph)), str(xml))
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    target = get_target("openvino-fp32")
    pool = target.pool(_artifact(xml), x, threads=2, **target.parse_options({}))  # as the engine gives them
    try:
        info = pool.describe()
        assert "AsyncInferQueue" in info["mechanism"] and info["requests"] == info["optimal_requests"]
        assert info["reshaped_static"] is True  # the dynamic-batch IR is compiled at the scenario's shape
        series = sc.offline_run(pool, 0.05, warmup=1)
        assert series.images == len(series.ms) > 0
        assert np.isfinite(pool.outputs()[0]).all()
    finally:
        pool.close()
