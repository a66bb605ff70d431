"""What every benchmark script shares: the roofline, the machine record, alternation, peers.

* :func:`matmul_peak_gflops`: the measured FP32 matmul peak of this CPU at the benchmark's thread
  count (a 2048^3 ``torch.mm`` and ``numpy.matmul``, best of several runs). It is the ceiling a dense FP32 kernel can
  reach here, measured in the same run so a busy machine lowers the ceiling and the figures alike.
* :func:`model_gflops`: FLOPs of one forward pass (2 x multiply-accumulates of every matmul and
  convolution, depth-wise ones included) counted by ``torch.utils.flop_counter`` on the reference.
* :func:`roofline_ms` / ratio: ``FLOPs / peak``; a runner at ratio 1.0 would run every FLOP at
  matmul peak. Element-wise work, softmax and layer norms are outside the count, so ratio > 1 is
  normal; what matters is how far above 1 and how it changes with size.
* :func:`alternate`: runners timed in interleaved rounds (A B C A B C ...), the figure being the
  median of per-round medians, so load drift on a shared machine hits every runner alike.
* :class:`BenchmarkApp`: OpenVINO's own C++ ``benchmark_app`` as a runner that can take part in
  the alternation (one subprocess per round).
* :func:`torch_compile_infer`: ``torch.compile`` (inductor), the peer a PyTorch user tries first.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from xcit_export.fingerprint import device_fingerprint  # noqa: E402
from xcit_export.evaluate.validate import LatencyOptions, measure_latency  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine(threads: int) -> dict:
    """CPU model and ISA flags (every figure is quoted with them), library versions, threads."""
    fp = device_fingerprint()
    record = {"cpu": fp["cpu"], "cpu_count": fp["cpu_count"], "cpu_flags": fp["cpu_flags"], "threads": threads,
              "libraries": fp.get("libraries")}
    try:
        import openvino as ov

        record["openvino_capabilities"] = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # openvino is optional for the ONNX Runtime benchmark
        pass
    try:
        with open("/proc/loadavg") as fh:
            record["loadavg_at_start"] = fh.read().split()[:3]
    except OSError:
        pass
    return record


def matmul_peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` FP32 GFLOP/s of an ``n``^3 ``torch.mm`` on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = torch.empty(n, n)
    an, bn = a.numpy(), b.numpy()
    best = float("inf")
    # Two BLAS libraries, the faster counts: torch's MKL sgemm takes its AVX2 path on AMD CPUs (196
    # GFLOP/s on this Zen 4 at 2 threads) where numpy's OpenBLAS runs AVX-512 (240); a ceiling below
    # what a runtime's own kernels reach would flatter every ratio. numpy uses OpenBLAS's thread count
    # (OPENBLAS_NUM_THREADS, default all cores): more threads only raise the ceiling, never flatter.
    for mm in (lambda: torch.mm(a, b, out=out), lambda: np.matmul(an, bn)):
        mm()  # warm-up (thread pool, packing buffers)
        for _ in range(repeats):
            t0 = time.perf_counter()
            mm()
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def model_gflops(model, x: np.ndarray) -> float:
    """GFLOPs of ``model(x)`` for the whole batch (2 x MACs of matmuls and convolutions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.from_numpy(x))
    return counter.get_total_flops() / 1e9


def roofline_ms(gflops: float, peak_gflops: float) -> float:
    return gflops / peak_gflops * 1e3


def alternate(runners: dict[str, Callable[[], float]], rounds: int,
              on_round: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Call every ``runner()`` (returning a median in ms) once per round, in turn; per-round medians.

    The order rotates each round so that no runner always follows the same neighbour.
    """
    names = list(runners)
    medians: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            medians[name].append(runners[name]())
        if on_round:
            on_round(r)
    return medians


def timed(infer: Callable, x: np.ndarray, iterations: int, warmup: int = 3) -> Callable[[], float]:
    """A round of ``measure_latency`` (the pipeline's timer) as an ``alternate`` runner."""
    opts = LatencyOptions(warmup=warmup, iterations=iterations, min_seconds=0.0, max_seconds=60.0)
    return lambda: measure_latency(infer, x, opts).median_ms


class BenchmarkApp:
    """``benchmark_app -hint latency`` on an IR, one subprocess per round; reports its median.

    ``-infer_precision`` is passed as given (``f32`` for the FP32 comparison: without it the CPU
    plugin runs an FP32 IR in bf16 on CPUs with AVX512_BF16/AMX). Threads go in through
    ``-load_config`` (``INFERENCE_NUM_THREADS``), exactly as our runner sets them: benchmark_app
    refuses ``-nthreads`` together with ``-hint``.
    """

    def __init__(self, xml: Path, threads: int | None, precision: str | None, seconds: float = 3.0,
                 iterations: int | None = None):
        exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
        if not Path(exe).exists():
            raise SystemExit("benchmark_app not found: it ships with the openvino wheel (pip install openvino)")
        cmd = [exe, "-m", str(xml), "-d", "CPU", "-hint", "latency"]
        cmd += ["-niter", str(iterations)] if iterations else ["-t", str(max(1, round(seconds)))]
        if precision:
            cmd += ["-infer_precision", precision]
        if threads:
            config = xml.parent / f"benchmark_app_config_{threads}.json"
            config.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(threads)}}))
            cmd += ["-load_config", str(config)]
        self.cmd = cmd
        self.command = " ".join(["benchmark_app"] + cmd[1:])

    def __call__(self) -> float:
        res = subprocess.run(self.cmd, capture_output=True, text=True, timeout=600)
        out = res.stdout + res.stderr
        if res.returncode != 0:
            raise SystemExit(f"{self.command} failed ({res.returncode}):\n{out[-2000:]}")
        m = re.search(r"Median:\s+([\d.]+)\s*ms", out)
        if m is None:
            raise SystemExit(f"no median latency in benchmark_app's output:\n{out[-2000:]}")
        return float(m.group(1))


def torch_compile_infer(model, x: np.ndarray, threads: int, mode: str = "default") -> Callable:
    """``torch.compile(model, mode=mode)`` (inductor, C++ codegen for CPU), compiled on ``x``'s shape.

    Compilation happens here (first call), not in the timed rounds.
    """
    import torch

    torch.set_num_threads(threads)
    compiled = torch.compile(model, mode=mode, dynamic=False)

    def infer(a: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = compiled(torch.from_numpy(a))
        return [out.numpy()]

    infer(x)
    return infer


def summarise(medians: dict[str, list[float]]) -> dict[str, float]:
    """Median of per-round medians."""
    return {k: float(np.median(v)) for k, v in medians.items() if v}


# ------------------------------------------------------------------------------------------------
# One process per runner
# ------------------------------------------------------------------------------------------------
# Runtimes in one process disturb each other: after an inference, PyTorch's OpenMP threads, OpenVINO's
# TBB workers and onnxruntime's intra-op pool all spin for a while before sleeping, so a runner timed
# right after another one shares the cores with the previous one's spinning threads (PyTorch eager
# measured 100x slower beside OpenVINO in one process here). Each runner therefore lives in its own
# process (spawned, so no runtime state is inherited) and is timed there on request; the parent only
# alternates the requests and pauses between them so the previous runner's threads go to sleep.

def _serve(conn, factory, args) -> None:
    try:
        infer, x = factory(*args)
        conn.send(("ready", None))
    except Exception as exc:  # reported to the parent, which names the runner
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        cmd, value = conn.recv()
        if cmd == "close":
            return
        try:
            opts = LatencyOptions(warmup=3, iterations=value, min_seconds=0.0, max_seconds=120.0)
            conn.send(("ok", measure_latency(infer, x, opts).median_ms))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class Worker:
    """``factory(*args) -> (infer, x)`` run in a spawned process; calling it times one round (ms)."""

    def __init__(self, name: str, factory: Callable, args: tuple, iterations: int, pause: float = 0.5):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.name, self.iterations, self.pause = name, iterations, pause
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, factory, args), daemon=True)
        self.proc.start()
        self._expect("ready")

    def _expect(self, what: str):
        status, value = self.conn.recv()
        if status == "error":
            self.close()
            raise SystemExit(f"runner {self.name} failed: {value}")
        return value

    def __call__(self) -> float:
        time.sleep(self.pause)
        self.conn.send(("time", self.iterations))
        return self._expect("ok")

    def close(self) -> None:
        try:
            self.conn.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()


def _inputs(model_name: str, batch: int) -> np.ndarray:
    from xcit_export.export import seeded_inputs
    from xcit_export.models.zoo import get_spec

    h, w = get_spec(model_name).preprocessing.input_size
    return seeded_inputs((3, h, w), batch, seed=2)


def eager_factory(model_name: str, batch: int, threads: int):
    """PyTorch eager, random weights (seed 0), as the pipeline times it."""
    from xcit_export.evaluate.validate import torch_infer
    from xcit_export.models.weights import load_model
    from xcit_export.models.zoo import get_spec

    model = load_model(get_spec(model_name), "random", 0).eval()
    return torch_infer(model, threads), _inputs(model_name, batch)


def compile_factory(model_name: str, batch: int, threads: int, mode: str = "default"):
    from xcit_export.models.weights import load_model
    from xcit_export.models.zoo import get_spec

    model = load_model(get_spec(model_name), "random", 0).eval()
    x = _inputs(model_name, batch)
    return torch_compile_infer(model, x, threads, mode), x


def target_factory(target: str, artifact_dir: str, model_name: str, batch: int, threads: int, options: dict):
    """A target's own runner (``get_target(target).load``) on a saved artifact folder."""
    from xcit_export.targets import Artifact, get_target

    runner = get_target(target).load(Artifact.from_dir(Path(artifact_dir)), threads=threads, **options)
    return runner.infer, _inputs(model_name, batch)


def bare_ort_factory(onnx_path: str, model_name: str, batch: int, threads: int):
    """A bare ``InferenceSession.run`` loop with the runner's session options (overhead reference)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    feed_name = sess.get_inputs()[0].name
    return (lambda x: sess.run(None, {feed_name: x})), _inputs(model_name, batch)


def build(name: str, spec, onnx_path: Path, folder: Path, batch: int | None, input_shape, options: dict,
          calibration=None, threads=None):
    """Build target ``name`` into ``folder`` (no build-key reuse: a benchmark always builds fresh)."""
    from xcit_export.targets import Artifact, BuildContext, get_target

    folder.mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(spec=spec, onnx_path=onnx_path, out_dir=folder, batch=batch, input_shape=input_shape,
                       calibration=calibration, calibration_id="seeded", options=options, threads=threads)
    artifact = get_target(name).build(ctx)
    artifact.save_metadata()
    return Artifact.from_dir(folder)
