"""Stage: compare a target with the PyTorch reference (accuracy) and time it (latency).

One accuracy function and one timer serve every runner (PyTorch eager included), so figures are
comparable across targets. The timer follows trtexec/benchmark_app: warm-up runs, then a timed
loop bounded by a count and/or a duration; percentiles are over per-inference wall times.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------

def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[-1])
    return np.argsort(-x, axis=-1, kind="stable")[..., :k]


def per_sample_errors(target: np.ndarray, reference: np.ndarray):
    """Flattened float64 outputs, element-wise absolute errors and per-sample cosines: what
    :func:`compare_outputs` and the sharded counts (``sharding.AccuracyCounts``) are built from."""
    t = target.astype(np.float64).reshape(len(target), -1)
    r = reference.astype(np.float64).reshape(len(reference), -1)
    if t.shape != r.shape:
        raise ValueError(f"target output shape {target.shape} != reference {reference.shape}")
    err = np.abs(t - r)
    denom = np.linalg.norm(t, axis=1) * np.linalg.norm(r, axis=1)
    cos = np.where(denom > 0, (t * r).sum(axis=1) / np.maximum(denom, 1e-300), 1.0)
    return t, r, err, cos


def compare_outputs(target: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None,
                    classify: bool = True) -> dict:
    """Agreement of ``target`` with ``reference`` (both ``(N, ...)``), plus labelled accuracy.

    * ``max_abs_error`` / ``mean_abs_error``: over all elements;
    * ``cosine_mean`` / ``cosine_min``: per-sample cosine similarity of the flattened outputs;
    * ``top1_agreement``: fraction where the target's top-1 class equals the reference's;
    * ``top5_agreement``: fraction where the reference's top-1 class is in the target's top-5;
    * ``top1`` / ``top5`` (and ``reference_top1`` / ``reference_top5``) when labels are given.
    """
    t, r, err, cos = per_sample_errors(target, reference)
    result = {
        "count": int(len(t)),
        "finite": bool(np.isfinite(t).all()),
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "mean_abs_error": float(err.mean()) if err.size else 0.0,
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
    }
    if classify and target.ndim == 2 and target.shape[1] > 1:
        ref_top1 = reference.argmax(axis=1)
        tgt_top5 = _topk(target, 5)
        result["top1_agreement"] = float((target.argmax(axis=1) == ref_top1).mean())
        result["top5_agreement"] = float((tgt_top5 == ref_top1[:, None]).any(axis=1).mean())
        if labels is not None:
            result.update(labelled_accuracy(target, labels))
            ref = labelled_accuracy(reference, labels)
            result["reference_top1"] = ref["top1"]
            result["reference_top5"] = ref["top5"]
    return result


def labelled_accuracy(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1 / top-5 accuracy of ``logits`` against integer ``labels``."""
    labels = np.asarray(labels)
    top5 = _topk(logits, 5)
    return {"top1": float((top5[:, 0] == labels).mean()),
            "top5": float((top5 == labels[:, None]).any(axis=1).mean()),
            "labelled_count": int(len(labels))}


def run_in_batches(infer: Callable[[np.ndarray], list[np.ndarray]], x: np.ndarray,
                   batch: int) -> list[np.ndarray]:
    """Run ``infer`` over ``x`` in batches of exactly ``batch`` (the last one padded, then cut).

    Padding keeps static-batch artifacts usable on any number of inputs.
    """
    outs: list[list[np.ndarray]] = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        res = infer(np.ascontiguousarray(chunk))
        outs.append([np.asarray(o)[:n] for o in res])
    return [np.concatenate(parts) for parts in zip(*outs)]


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------

@dataclass
class LatencyOptions:
    """Timed loop: at least ``iterations`` runs and ``min_seconds``, at most ``max_seconds``."""

    warmup: int = 10
    iterations: int = 50
    min_seconds: float = 0.0
    max_seconds: float = 30.0


@dataclass
class LatencyStats:
    batch: int
    iterations: int
    min_ms: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput_ips: float  # images per second at the median
    first_inference_ms: float
    samples_ms: list[float]  # every timed run, for distribution plots

    def to_dict(self) -> dict:
        out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        out["samples_ms"] = [round(v, 3) for v in self.samples_ms]
        return out


def measure_latency(infer: Callable[[np.ndarray], object], x: np.ndarray,
                    options: LatencyOptions = LatencyOptions()) -> LatencyStats:
    """Time ``infer(x)``: first inference, ``warmup`` untimed runs, then the timed loop."""
    t0 = time.perf_counter()
    infer(x)
    first = time.perf_counter() - t0
    for _ in range(options.warmup):
        infer(x)
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        infer(x)
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(times) >= options.iterations and elapsed >= options.min_seconds) or elapsed >= options.max_seconds:
            break
    ms = np.array(times) * 1e3
    median = float(np.median(ms))
    return LatencyStats(
        batch=int(len(x)), iterations=len(ms), min_ms=float(ms.min()), median_ms=median,
        mean_ms=float(ms.mean()), p90_ms=float(np.percentile(ms, 90)), p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)), max_ms=float(ms.max()),
        throughput_ips=float(len(x) * 1e3 / median), first_inference_ms=float(first * 1e3),
        samples_ms=ms.tolist())


def torch_infer(model, threads: int | None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """PyTorch eager as a runner-like callable, at the same thread count as the targets."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    def infer(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = model(torch.from_numpy(x))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() for o in outs]

    return infer


def rss_mb() -> float:
    """Resident memory of this process now, in MiB (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return float("nan")
