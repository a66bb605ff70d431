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

from ..errors import BrokenReferenceError, XcitExportError
from ..verdict import output_problems  # noqa: F401 - the one rule lives in verdict.py; imported here by older callers


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------

def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[-1])
    return np.argsort(-x, axis=-1, kind="stable")[..., :k]


def per_sample_errors(target: np.ndarray, reference: np.ndarray):
    """Flattened float64 outputs, element-wise absolute errors, per-sample cosines and per-sample
    relative errors: what :func:`compare_outputs` and the sharded counts (``counts.AccuracyCounts``)
    are built from.

    The cosine of a sample is never better than the data allows: NaN when either output holds a
    non-finite value (the comparison is undefined), 0 when exactly one output is all zeros (no
    agreement in direction), and 1 only when both are all zeros (identical outputs).

    The relative error of a sample is ``||target - reference|| / ||reference||`` (L2 over the
    flattened output): unlike the cosine and the top-1 class it sees a scale or a shift (logits 3x
    PyTorch's: cosine 1.0, relative error 2.0). NaN where either output is not finite; inf where the
    reference is all zeros and the target is not.
    """
    t = target.astype(np.float64).reshape(len(target), -1)
    r = reference.astype(np.float64).reshape(len(reference), -1)
    if t.shape != r.shape:
        raise ValueError(f"target output shape {target.shape} != reference {reference.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(t - r)
        nt, nr = np.linalg.norm(t, axis=1), np.linalg.norm(r, axis=1)
        denom = nt * nr
        dot = (t * r).sum(axis=1)
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), np.where((nt == 0) & (nr == 0), 1.0, 0.0))
        dn = np.sqrt((err * err).sum(axis=1))
        rel = np.where(nr > 0, dn / np.where(nr > 0, nr, 1.0), np.where(dn == 0, 0.0, np.inf))
    finite = np.isfinite(t).all(axis=1) & np.isfinite(r).all(axis=1)
    # A norm that overflows float64 (|x| ~ 1e154) leaves a finite row with an inf/NaN cosine.
    cos = np.where(finite & np.isfinite(cos), np.clip(cos, -1.0, 1.0), np.nan)
    rel = np.where(finite, rel, np.nan)
    return t, r, err, cos, rel


def nonfinite_samples(output: np.ndarray) -> int:
    """How many samples (rows along axis 0) of ``output`` hold a NaN or an infinity."""
    flat = np.asarray(output).reshape(len(output), -1)
    return int((~np.isfinite(flat)).any(axis=1).sum()) if flat.size else 0


def reference_problems(reference: list[np.ndarray], names: list[str]) -> list[str]:
    """Why the PyTorch reference cannot be compared against (empty: it can): non-finite outputs."""
    out = []
    for name, r in zip(names, reference):
        bad = nonfinite_samples(r)
        if bad:
            out.append(f"output '{name}' is not finite for {bad} of {len(r)} inputs")
    return out


def constant_outputs(reference: np.ndarray) -> bool:
    """True when every input gives the same output (within float noise): agreement then says
    nothing, as any constant artifact would agree with it."""
    flat = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if len(flat) < 2 or not np.isfinite(flat).all():
        return False
    spread = np.abs(flat - flat[:1]).max()
    return bool(spread <= 1e-6 * max(1.0, float(np.abs(flat).max())))


def nonfinite_parameters(model) -> int:
    """Number of non-finite values in a PyTorch model's parameters and buffers (the likely cause
    of a non-finite reference: NaN or inf weights in a checkpoint)."""
    import torch

    total = 0
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                total += int((~torch.isfinite(tensor)).sum())
    return total


def check_weights(model) -> None:
    """Stop before any export when the model's own weights hold NaN or inf (a broken checkpoint):
    every output would be non-finite and every comparison meaningless."""
    bad = nonfinite_parameters(model)
    if bad:
        raise BrokenReferenceError(f"the PyTorch model has {bad} non-finite weight value(s) (NaN or inf): the "
                                   f"checkpoint is broken, not any export; fix or replace --weights")


def check_reference(reference: list[np.ndarray], names: list[str], model=None, inputs: str = "the evaluation inputs"
                    ) -> list[str]:
    """Check the PyTorch reference before anything is compared with it.

    A non-finite output stops the run (:class:`BrokenReferenceError` naming the cause: non-finite
    weights when ``model`` has any, else an overflow in the model on these inputs). Returns the
    report's warnings: a reference constant over the inputs (agreement then means nothing).
    """
    problems = reference_problems(reference, names)
    if problems:
        bad = nonfinite_parameters(model) if model is not None else 0
        cause = (f"the model has {bad} non-finite weight value(s) (NaN or inf in the checkpoint)" if bad else
                 "the model overflows on these inputs (check the weights and the preprocessing)")
        raise BrokenReferenceError(f"the PyTorch reference is not finite on {inputs} ({'; '.join(problems)}): "
                                   f"{cause}; nothing can be validated against it, and no export is to blame")
    return [constant_reference_warning(name, len(r)) for name, r in zip(names, reference) if constant_outputs(r)]


def constant_reference_warning(name: str, count: int) -> str:
    """The report's warning for a reference output that is the same for all ``count`` inputs."""
    return (f"the PyTorch reference's output '{name}' is the same for every one of the {count} evaluation inputs: "
            f"agreement with it means nothing, so no target can pass (a zeroed head, wrong weights, or one image "
            f"repeated?)")


def compare_outputs(target: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None,
                    classify: bool = True) -> dict:
    """Agreement of ``target`` with ``reference`` (both ``(N, ...)``), plus labelled accuracy.

    * ``max_abs_error`` / ``mean_abs_error``: over all elements (NaN/inf when outputs are);
    * ``cosine_mean`` / ``cosine_min``: per-sample cosine similarity of the flattened outputs
      (NaN when any sample is not finite: see :func:`per_sample_errors`);
    * ``rel_error_mean`` / ``rel_error_max``: per-sample relative L2 error against the reference
      (scale- and shift-sensitive, where the cosine and the top-1 class are not);
    * ``finite`` / ``nonfinite_count``: whether every output is finite, how many samples are not;
    * ``top1_agreement``: fraction where the target's top-1 class equals the reference's;
    * ``top5_agreement``: fraction where the reference's top-1 class is in the target's top-5;
    * ``top1`` / ``top5`` (and ``reference_top1`` / ``reference_top5``) when labels are given.

    Whether the result may pass at all is :func:`xcit_export.verdict.judge`'s call.
    """
    t, r, err, cos, rel = per_sample_errors(target, reference)
    bad = nonfinite_samples(t)
    result = {
        "count": int(len(t)),
        "finite": bad == 0,
        "nonfinite_count": bad,
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "mean_abs_error": float(err.mean()) if err.size else 0.0,
        "cosine_mean": float(cos.mean()) if len(cos) else float("nan"),
        "cosine_min": float(cos.min()) if len(cos) else float("nan"),
        "rel_error_mean": float(rel.mean()) if len(rel) else float("nan"),
        "rel_error_max": float(rel.max()) if len(rel) else float("nan"),
        "constant": constant_outputs(target),
        "reference_constant": constant_outputs(reference),
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


# The batch the evaluation feeds PyTorch and every runner of a dynamic-batch graph (a static export
# is fed its own): one default for the streaming pass, the references, the builds and the cell keys.
EVAL_BATCH = 16


def evaluation_batch(static_batch: int | None) -> int:
    """The evaluation's batch: a static export's (``--batch``), else :data:`EVAL_BATCH`."""
    return static_batch or EVAL_BATCH


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

DEFAULT_ITERATIONS = 50
DEFAULT_MAX_SECONDS = 30.0


@dataclass
class LatencyOptions:
    """Timed loop: at least ``iterations`` runs and at least ``min_seconds``.

    ``max_seconds`` stops the loop early even when those are not met (the report's latency says
    ``capped``). Left at None, a cap of 30 s applies only to a run that asked for no more than the
    defaults (so a slow model's default 50 runs do not take minutes); an explicit ``iterations``
    above the default or ``min_seconds`` above 30 s are honoured in full.
    """

    warmup: int = 10
    iterations: int = DEFAULT_ITERATIONS
    min_seconds: float = 0.0
    max_seconds: float | None = None

    def cap(self) -> float | None:
        """Seconds after which the timed loop stops whatever was asked (None: no cap)."""
        if self.max_seconds is not None:
            return self.max_seconds
        if self.iterations <= DEFAULT_ITERATIONS and self.min_seconds <= DEFAULT_MAX_SECONDS:
            return DEFAULT_MAX_SECONDS
        return None

    def check(self) -> "LatencyOptions":
        if self.warmup < 0 or self.iterations < 1 or self.min_seconds < 0:
            raise XcitExportError(f"latency options need warmup >= 0, iterations >= 1 and min_seconds >= 0; got "
                                  f"warmup={self.warmup}, iterations={self.iterations}, min_seconds={self.min_seconds}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise XcitExportError(f"--max-seconds {self.max_seconds} must be above 0 (leave it out for the default)")
        if self.max_seconds is not None and self.max_seconds < self.min_seconds:
            raise XcitExportError(f"--min-seconds {self.min_seconds} is above --max-seconds {self.max_seconds}: "
                                  f"the timed loop could never run that long; raise --max-seconds")
        return self


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
    capped: bool = False  # the loop hit its time cap before the asked iterations / min_seconds
    load_avg_1m: float | None = None  # the host's 1-minute load average as the loop ended (report/noise.py)

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
    cap = options.cap()
    capped = False
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        infer(x)
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(times) >= options.iterations and elapsed >= options.min_seconds:
            break
        if cap is not None and elapsed >= cap:
            capped = True
            break
    ms = np.array(times) * 1e3
    median = float(np.median(ms))
    return LatencyStats(
        batch=int(len(x)), iterations=len(ms), min_ms=float(ms.min()), median_ms=median,
        mean_ms=float(ms.mean()), p90_ms=float(np.percentile(ms, 90)), p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)), max_ms=float(ms.max()),
        throughput_ips=float(len(x) * 1e3 / median), first_inference_ms=float(first * 1e3),
        samples_ms=ms.tolist(), capped=capped, load_avg_1m=_load_average())


def _load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): other work competing for the cores."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


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
