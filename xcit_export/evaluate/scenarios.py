"""Latency as a deployment sees it: single-stream, multi-stream and offline scenarios, sustained.

The three scenarios are MLPerf Inference's (https://github.com/mlcommons/inference, ``loadgen/``):

* **single-stream**: one query at a time, the next issued when the last returns (a camera on a
  robot); its figure is the tail of the per-query latency (p50 / p90 / p99).
* **multi-stream**: ``streams`` frames arrive together (four cameras) and are issued at once as
  concurrent requests; a query is done when its last frame is. Its figure is the p99 of the query
  latency (MLPerf: 8 samples a query, p99; our default is 4 streams).
* **offline**: everything is available up front; the figure is images/s at the best batch and
  number of requests in flight, found by a small search (:func:`offline`).

Each backend runs them with its own mechanism (a *pool*: OpenVINO's ``AsyncInferQueue`` on the
compiled model's streams, concurrent ``run`` calls on one onnxruntime session, TensorRT execution
contexts on their own CUDA streams); this module only issues requests and does the arithmetic, so
every backend's figures mean the same thing. A pool is anything with ``streams``, ``batch``,
``submit(done)`` (start one request on its preset input, blocking while ``streams`` are in flight;
``done(t_start, t_end)`` is called when it finishes, from any thread), ``wait_all()``,
``outputs()`` (one request's outputs, to prove it computes what the single-request runner does),
``describe()`` and ``close()``.

**Sustained and stable** (``--sustain SECONDS``): a scenario run for that long keeps every
sample's time, and :func:`stability` compares the first and last thirds (the drift), measures the
spread (the coefficient of variation, and a robust one from the median absolute deviation that a
few preempted runs do not inflate) and says **stable**, **drifting** or **noisy**, with the reason
in figures. MLPerf's tail rule (``--mlperf-tail``) adds its 600 s minimum duration and its
early-stopping estimate of the tail percentile (:func:`early_stopping`, a port of LoadGen's
``early_stopping.cc``/``results.cc``).

Device-side module: Python 3.8 and numpy only (it is packed into device_check.pyz, where the
TensorRT scenarios run).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import OptionError, XcitExportError

SINGLE, MULTI, OFFLINE = "single-stream", "multi-stream", "offline"
SCENARIOS = (SINGLE, MULTI, OFFLINE)
KEYS = {SINGLE: "single_stream", MULTI: "multi_stream", OFFLINE: "offline"}  # report.json keys
DEFAULT_STREAMS = 4
DEFAULT_SECONDS = 2.0  # a multi-stream run, and the offline figure at the chosen batch and requests
MLPERF_MIN_SECONDS = 600.0  # loadgen/mlperf.conf: *.SingleStream/MultiStream/Offline.min_duration = 600000 ms
MLPERF_PERCENTILE = {SINGLE: 0.90, MULTI: 0.99}  # loadgen/mlperf.conf target_latency_percentile
MLPERF_CONFIDENCE = 0.99  # loadgen/results.cc PerformanceSummary::EarlyStopping

# Stability verdict (stability()): a drift between the first and last thirds above DRIFT is
# "drifting"; a robust coefficient of variation above NOISE, or window medians that wander more
# than WINDOW_NOISE, is "noisy". Chosen so that an idle core's inference timings (robust CV 1-5%
# here) are stable and a core shared with another busy process (timings doubled for half the
# runs) is not; tests/evaluate/test_scenarios.py pins both on recorded and synthetic series.
DRIFT = 0.10
NOISE = 0.10
WINDOW_NOISE = 0.05
MIN_WINDOW_SAMPLES = 5


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

def parse_scenarios(value: Any, option: str = "--scenario") -> Tuple[str, ...]:
    """``"single-stream,offline"``, ``["multi-stream"]`` or ``"all"`` -> the scenarios, in the
    canonical order; anything else is an error naming the choices."""
    if value is None or value == "" or value == ():
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(v).strip().lower().replace("_", "-") for v in items if str(v).strip()]
    if "all" in names:
        return SCENARIOS
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise OptionError(f"{option}: unknown scenario(s) {', '.join(unknown)}; use {', '.join(SCENARIOS)} "
                              f"or all (comma-separated)")
    return tuple(s for s in SCENARIOS if s in names)


@dataclass(frozen=True)
class ScenarioOptions:
    """What the scenario pass runs (``--scenario``, ``--streams``, ``--scenario-seconds``,
    ``--sustain``, ``--mlperf-tail``; a recipe's ``[latency]`` keys of the same names).

    ``seconds``: how long a multi-stream run and the offline figure last (each offline search
    point gets half). ``sustain``: every selected scenario runs that long instead and gets a
    stability verdict. ``mlperf_tail``: the latency scenarios run at least ``min_seconds`` (MLPerf's
    600 s unless a test lowers it) and report LoadGen's early-stopping estimate of their tail.
    """

    scenarios: Tuple[str, ...] = ()
    streams: int = DEFAULT_STREAMS
    seconds: float = DEFAULT_SECONDS
    sustain: Optional[float] = None
    mlperf_tail: bool = False
    min_seconds: float = MLPERF_MIN_SECONDS
    warmup: int = 3  # untimed queries (multi-stream) or rounds of requests (offline) first

    def check(self) -> "ScenarioOptions":
        parse_scenarios(self.scenarios)
        if isinstance(self.streams, bool) or not isinstance(self.streams, int) or self.streams < 1:
            raise OptionError(f"--streams {self.streams!r} must be a whole number of concurrent streams, 1 or more")
        if not self.seconds > 0:
            raise OptionError(f"--scenario-seconds {self.seconds} must be above 0")
        if self.sustain is not None and not self.sustain > 0:
            raise OptionError(f"--sustain {self.sustain} must be a number of seconds above 0")
        if self.mlperf_tail and not (set(self.scenarios) & {SINGLE, MULTI}):
            raise OptionError("--mlperf-tail estimates the tail of single-stream or multi-stream latency: add "
                                  "one of them to --scenario")
        return self

    @property
    def active(self) -> bool:
        return bool(self.scenarios)

    def duration(self, scenario: str) -> Optional[float]:
        """Seconds ``scenario`` runs for (None: single-stream's latency pass as it is)."""
        seconds = self.sustain
        if self.mlperf_tail and scenario in MLPERF_PERCENTILE:
            seconds = max(seconds or 0.0, self.min_seconds)
        if seconds is None and scenario != SINGLE:
            seconds = self.seconds
        return seconds

    def to_dict(self) -> dict:
        out = asdict(self)
        out["scenarios"] = list(self.scenarios)
        return out


def scenario_options(scenarios: Any = None, streams: Optional[int] = None, seconds: Optional[float] = None,
                     sustain: Optional[float] = None, mlperf_tail: bool = False,
                     option: str = "--scenario") -> ScenarioOptions:
    """The one place the CLI, the API and a recipe turn their values into :class:`ScenarioOptions`:
    names parsed, defaults filled in (``--sustain`` or ``--mlperf-tail`` alone run single-stream),
    everything checked before any work."""
    names = parse_scenarios(scenarios, option)
    if not names and (sustain is not None or mlperf_tail):
        names = (SINGLE,)
    return ScenarioOptions(scenarios=names, streams=DEFAULT_STREAMS if streams is None else streams,
                           seconds=DEFAULT_SECONDS if seconds is None else float(seconds),
                           sustain=None if sustain is None else float(sustain), mlperf_tail=bool(mlperf_tail)).check()


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------

def _r(value: Optional[float], digits: int = 4) -> Optional[float]:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def tail(ms: Sequence[float]) -> dict:
    """p50 / p90 / p99 (and mean, min, max, count) of latencies in ms."""
    a = np.asarray(ms, dtype=np.float64)
    if not len(a):
        return {"count": 0}
    return {"count": int(len(a)), "p50_ms": _r(np.percentile(a, 50)), "p90_ms": _r(np.percentile(a, 90)),
            "p99_ms": _r(np.percentile(a, 99)), "mean_ms": _r(a.mean()), "min_ms": _r(a.min()), "max_ms": _r(a.max())}


def _log_binomial_cdf(h: int, t: int, p: float) -> float:
    """log P(at most ``t`` of ``h + t`` queries are over the ``p`` percentile), i.e. LoadGen's
    ``odds(h, t, p, 0) = BetaRegularized[p, h, 1 + t]`` = sum_{x<=t} C(h+t, x) p^(h+t-x) (1-p)^x,
    summed in log space (early_stopping.cc computes the same through a hypergeometric series)."""
    n = h + t
    x = np.arange(t + 1, dtype=np.float64)
    # log C(n, x) by a cumulative sum of log((n - x + 1) / x): exact for the integers used here
    steps = np.log(n - x[1:] + 1) - np.log(x[1:])
    log_comb = np.concatenate([[0.0], np.cumsum(steps)])
    terms = log_comb + (n - x) * math.log(p) + x * math.log1p(-p)
    top = terms.max()
    return float(top + math.log(np.exp(terms - top).sum()))


def min_passing_queries(t: int, p: float, confidence: float = MLPERF_CONFIDENCE) -> int:
    """LoadGen's ``find_min_passing``: the fewest queries ``h`` under the ``p`` percentile such that
    ``t`` over it are still consistent, with ``confidence``, with a true percentile at or under the
    estimate: the smallest ``h`` with ``odds(h, t, p) <= 1 - confidence``."""
    limit = math.log(1.0 - confidence)
    lo, hi = 1, 2
    while _log_binomial_cdf(hi, t, p) > limit:
        lo, hi = hi, hi * 2
    while lo < hi:  # the smallest passing h in [lo, hi]
        mid = (lo + hi) // 2
        if _log_binomial_cdf(mid, t, p) <= limit:
            hi = mid
        else:
            lo = mid + 1
    return lo


def early_stopping(latencies_ms: Sequence[float], percentile: float,
                   confidence: float = MLPERF_CONFIDENCE) -> dict:
    """MLPerf LoadGen's early-stopping estimate of the ``percentile`` latency (single-stream: p90,
    multi-stream: p99), as ``PerformanceSummary::EarlyStopping`` computes it (loadgen/results.cc):

    ``t`` is the largest number of queries that may lie above the estimate such that ``n`` queries
    still hold at least ``min_passing_queries(t) + t``; the estimate is then the latency of the
    ``t``-th slowest query. Fewer than ``min_passing_queries(1) + 1`` queries (64 for p90, 662 for
    p99) give no estimate. The estimate is conservative: above the plain percentile of a short run.
    """
    a = np.sort(np.asarray(latencies_ms, dtype=np.float64))
    n = int(len(a))
    need = min_passing_queries(1, percentile, confidence) + 1
    out = {"percentile": percentile, "confidence": confidence, "queries": n, "min_queries": need}
    if n < need:
        out.update(estimate_ms=None, why=f"only {n} queries; early stopping needs at least {need}")
        return out
    lo, hi = 1, n  # the largest t with min_passing_queries(t) + t <= n (that sum grows with t)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if min_passing_queries(mid, percentile, confidence) + mid <= n:
            lo = mid
        else:
            hi = mid - 1
    t = lo
    out.update(estimate_ms=_r(a[n - t]), discarded=t - 1,
               plain_ms=_r(np.percentile(a, 100 * percentile)))
    return out


def _windows(times: np.ndarray, count: int) -> List[np.ndarray]:
    """Indices of ``times`` (seconds from the start) split into ``count`` equal spans of time."""
    if not len(times):
        return []
    span = max(float(times.max()), 1e-9)
    edges = np.linspace(0.0, span, count + 1)
    which = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, count - 1)
    return [np.flatnonzero(which == k) for k in range(count)]


def stability(times_s: Sequence[float], values: Sequence[float], kind: str = "latency",
              duration_s: Optional[float] = None) -> dict:
    """The stability of a sustained run: ``values`` observed at ``times_s`` (seconds from its start).

    ``kind="latency"``: values are per-query latencies (ms; lower is better). ``kind="throughput"``:
    values are completion times' images (1 a request per batch image count), turned into images/s
    per window. Returns the first and last thirds' medians (throughput: rates), the ``drift``
    between them (a fraction of the first), ``cv`` (std / mean of the samples), ``robust_cv``
    (1.4826 x median absolute deviation / median: what a few preempted runs do not move),
    ``window_cv`` (the spread of per-window medians), and a ``verdict`` with its ``reason``:

    * **noisy**: robust CV above :data:`NOISE` (the thirds of such a run differ by chance, so this is
      decided first), or window medians spread more than :data:`WINDOW_NOISE`;
    * **drifting**: not noisy, and the last third differs from the first by more than :data:`DRIFT`;
    * **stable**: neither.
    """
    t = np.asarray(times_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(t) != len(v):
        raise ValueError("times and values differ in length")
    span = float(duration_s if duration_s is not None else (t.max() if len(t) else 0.0))
    if len(v) < 3 * MIN_WINDOW_SAMPLES:
        return {"samples": int(len(v)), "verdict": "too short",
                "reason": f"{len(v)} samples over {span:.1f} s: too few to compare thirds (need "
                          f"{3 * MIN_WINDOW_SAMPLES})"}
    windows = max(3, min(12, len(t) // (MIN_WINDOW_SAMPLES * 3) * 3 or 3))
    idx = _windows(t, windows)
    if kind == "throughput":
        width = span / windows if span > 0 else 1.0
        per_window = np.array([v[i].sum() / width for i in idx]) if idx else np.array([])
        third = max(1, windows // 3)
        first, last = float(per_window[:third].mean()), float(per_window[-third:].mean())
        samples, unit = per_window, "images/s"
    else:
        thirds = _windows(t, 3)
        if any(len(i) == 0 for i in thirds):
            return {"samples": int(len(v)), "verdict": "too short",
                    "reason": f"a third of the {span:.1f} s run holds no sample (a query longer than a third)"}
        first, last = float(np.median(v[thirds[0]])), float(np.median(v[thirds[-1]]))
        per_window = np.array([np.median(v[i]) for i in idx if len(i)])
        samples, unit = v, "ms"
    mean = float(samples.mean()) if len(samples) else float("nan")
    med = float(np.median(samples)) if len(samples) else float("nan")
    cv = float(samples.std() / mean) if mean else float("nan")
    robust = float(1.4826 * np.median(np.abs(samples - med)) / med) if med else float("nan")
    wcv = float(per_window.std() / per_window.mean()) if len(per_window) > 1 and per_window.mean() else 0.0
    drift = (last - first) / first if first else float("nan")
    out = {"samples": int(len(v)), "seconds": _r(span, 2), "unit": unit, "first_third": _r(first),
           "last_third": _r(last), "drift": _r(drift), "cv": _r(cv), "robust_cv": _r(robust),
           "window_cv": _r(wcv), "windows": int(windows)}
    worse = (drift > 0) if kind != "throughput" else (drift < 0)
    moved = (f"the last third is {abs(drift):.0%} {'worse' if worse else 'better'} than the first "
             f"({first:.4g} -> {last:.4g} {unit})")
    if robust > NOISE:  # spread first: the thirds of a noisy run differ by chance
        out["verdict"] = "noisy"
        out["reason"] = (f"robust CV {robust:.0%} > {NOISE:.0%} (CV {cv:.0%})"
                         + (f"; {moved}, within that noise" if abs(drift) > DRIFT else
                            f"; first and last thirds {first:.4g} and {last:.4g} {unit}"))
    elif abs(drift) > DRIFT:
        out["verdict"] = "drifting"
        out["reason"] = f"{moved}: more than {DRIFT:.0%}, with a robust CV of only {robust:.0%}"
    elif wcv > WINDOW_NOISE:
        out["verdict"] = "noisy"
        out["reason"] = (f"window medians spread {wcv:.0%} > {WINDOW_NOISE:.0%} (robust CV {robust:.0%}); first and "
                         f"last thirds {first:.4g} and {last:.4g} {unit}")
    else:
        out["verdict"] = "stable"
        out["reason"] = (f"first and last thirds within {abs(drift):.1%} ({first:.4g} -> {last:.4g} {unit}), robust "
                         f"CV {robust:.1%}, window medians spread {wcv:.1%}")
    return out


# --------------------------------------------------------------------------------------------
# The scenario loops
# --------------------------------------------------------------------------------------------

@dataclass
class Series:
    """What one timed run recorded: per query (or request) its start and latency, plus images done."""

    starts: List[float] = field(default_factory=list)  # seconds from the run's start
    ms: List[float] = field(default_factory=list)
    images: int = 0
    seconds: float = 0.0


def single_stream(infer: Callable[[np.ndarray], object], x: np.ndarray, seconds: float, warmup: int = 3) -> Series:
    """One query at a time for ``seconds`` (the synchronous runner: what an application calls)."""
    for _ in range(warmup):
        infer(x)
    s = Series()
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        a = time.perf_counter()
        infer(x)
        b = time.perf_counter()
        s.starts.append(a - t0)
        s.ms.append((b - a) * 1e3)
        s.images += len(x)
        if b >= end:
            break
    s.seconds = time.perf_counter() - t0
    return s


class _Query:
    """Completion times of one multi-stream query's requests (callbacks may come from any thread)."""

    def __init__(self) -> None:
        self.ends: List[float] = []

    def done(self, _start: float, end: float) -> None:
        self.ends.append(end)


def multi_stream(pool, seconds: float, warmup: int = 3) -> Series:
    """Queries of ``pool.streams`` requests issued together, the next query when the last is done:
    a query's latency is from its issue to its last request's completion."""
    for _ in range(warmup):
        for _ in range(pool.streams):
            pool.submit(lambda a, b: None)
        pool.wait_all()
    s = Series()
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        q = _Query()
        a = time.perf_counter()
        for _ in range(pool.streams):
            pool.submit(q.done)
        pool.wait_all()
        b = max(q.ends) if q.ends else time.perf_counter()
        s.starts.append(a - t0)
        s.ms.append((b - a) * 1e3)
        s.images += pool.streams * pool.batch
        if time.perf_counter() >= end:
            break
    s.seconds = time.perf_counter() - t0
    return s


def offline_run(pool, seconds: float, warmup: int = 3) -> Series:
    """Keep ``pool.streams`` requests in flight for ``seconds``: images/s is what completed over the
    time from the first issue to the last completion. Each request's latency is kept too (issue to
    completion, waiting in the backend's queue included), with its completion time."""
    for _ in range(warmup * pool.streams):
        pool.submit(lambda a, b: None)
    pool.wait_all()
    s = Series()
    done: List[Tuple[float, float]] = []
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        pool.submit(lambda a, b: done.append((a, b)))
    pool.wait_all()
    s.seconds = time.perf_counter() - t0
    done.sort(key=lambda ab: ab[1])
    s.starts = [b - t0 for _a, b in done]  # completion times: what a throughput window counts
    s.ms = [(b - a) * 1e3 for a, b in done]
    s.images = len(done) * pool.batch
    return s


def _outputs_agree(got: List[np.ndarray], want: List[np.ndarray]) -> Optional[str]:
    """Why a pool's outputs are not the single-request runner's on the same input (None: they are)."""
    if len(got) != len(want):
        return f"{len(got)} outputs instead of {len(want)}"
    for g, w in zip(got, want):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g.shape != w.shape:
            return f"an output of shape {g.shape} instead of {w.shape}"
        scale = max(1e-6, float(np.abs(w).max()))
        diff = float(np.abs(g - w).max()) if g.size else 0.0
        if not np.isfinite(diff) or diff > 1e-2 * scale:
            return f"outputs differ by up to {diff:.3g} (largest reference value {scale:.3g})"
    return None


def checked(pool, reference: Optional[List[np.ndarray]]):
    """``pool``, after proving that one of its requests gives the single-request runner's outputs
    (``reference``, for the same input): a configuration that computed something else (another
    precision, a stale artifact) must not lend its timings to the target. Raises otherwise."""
    if reference is not None:
        why = _outputs_agree(pool.outputs(), reference)
        if why:
            pool.close()
            raise XcitExportError(f"{pool.describe().get('mechanism', 'the concurrent runner')}: {why} from the "
                                  f"single-request runner on the same input, so its timings are not this target's")
    return pool


# --------------------------------------------------------------------------------------------
# A scenario's record for the report
# --------------------------------------------------------------------------------------------

Meter = Callable[[], Any]  # () -> an energy recorder with stop(seconds, images) -> dict; see device/energy.py
Snapshot = Callable[[], dict]  # () -> CPU frequency / temperatures now (device/sensors.py)


def _with_conditions(record: dict, run: Callable[[], Series], meter: Optional[Meter], snapshot: Optional[Snapshot]
                     ) -> Series:
    """Run ``run`` with an energy recorder around it (``meter``) and, when given, the clocks and
    temperatures before and after (``snapshot``: sustained runs, where they matter)."""
    before = snapshot() if snapshot else None
    recorder = meter() if meter else None
    try:
        series = run()
    finally:
        energy = recorder.stop() if recorder is not None else None
    if energy is not None:
        record["energy"] = dict(energy, **_per_image(energy, series))
    if snapshot:
        record["conditions"] = {"before": before, "after": snapshot()}
    return series


def _per_image(energy: dict, series: Series) -> dict:
    """Millijoules per image from an energy record's joules or average power over the run."""
    if energy.get("available") is False or not series.images:
        return {}
    joules = energy.get("joules")
    if joules is None and energy.get("average_mw") is not None:
        joules = energy["average_mw"] / 1e3 * series.seconds
    return {} if joules is None else {"mj_per_image": _r(joules * 1e3 / series.images, 3)}


def single_stream_record(options: ScenarioOptions, infer, x: np.ndarray, latency: Optional[dict] = None,
                         meter: Optional[Meter] = None, snapshot: Optional[Snapshot] = None) -> dict:
    """``scenarios.single_stream``: from the latency pass (``latency``, report's ``latency`` entry) or,
    sustained / MLPerf, a timed run of the synchronous runner."""
    seconds = options.duration(SINGLE)
    batch = int(len(x))
    if seconds is None and latency and latency.get("samples_ms"):
        ms = latency["samples_ms"]
        rec = {"batch": batch, "streams": 1, "source": "the latency pass", **tail(ms)}
        rec["images_per_s"] = _r(batch * 1e3 / rec["p50_ms"], 2) if rec.get("p50_ms") else None
        return rec
    rec = {"batch": batch, "streams": 1, "source": f"{seconds:g} s of one query at a time"}
    series = _with_conditions(rec, lambda: single_stream(infer, x, seconds or options.seconds, options.warmup),
                              meter, snapshot)
    rec.update(tail(series.ms), seconds=_r(series.seconds, 2), images_per_s=_r(series.images / series.seconds, 2))
    _sustained(rec, options, series, SINGLE)
    return rec


def multi_stream_record(options: ScenarioOptions, pool, meter: Optional[Meter] = None,
                        snapshot: Optional[Snapshot] = None) -> dict:
    seconds = options.duration(MULTI)
    rec: Dict[str, Any] = {"streams": pool.streams, "batch": pool.batch, **pool.describe()}
    series = _with_conditions(rec, lambda: multi_stream(pool, seconds, options.warmup), meter, snapshot)
    stats = tail(series.ms)
    rec.update(queries=stats.pop("count"), **stats)
    rec.update(seconds=_r(series.seconds, 2), images_per_s=_r(series.images / series.seconds, 2))
    _sustained(rec, options, series, MULTI)
    return rec


def _sustained(rec: dict, options: ScenarioOptions, series: Series, scenario: str) -> None:
    if options.sustain is not None:
        rec["stability"] = stability(series.starts, series.ms, "latency", series.seconds)
    if options.mlperf_tail and scenario in MLPERF_PERCENTILE:
        es = early_stopping(series.ms, MLPERF_PERCENTILE[scenario])
        es["min_duration_s"] = options.min_seconds
        es["min_duration_met"] = series.seconds >= options.min_seconds
        rec["early_stopping"] = es


def offline_point(pool, seconds: float, warmup: int) -> Tuple[Series, dict]:
    series = offline_run(pool, seconds, warmup)
    stats = tail(series.ms)
    point = {"batch": pool.batch, "streams": pool.streams, **pool.describe(),
             "images_per_s": _r(series.images / series.seconds, 2), "completed": stats.get("count", 0),
             "p50_ms": stats.get("p50_ms"), "p99_ms": stats.get("p99_ms")}
    return series, point


def offline_record(options: ScenarioOptions, candidates: Sequence[Callable[[], Any]],
                   meter: Optional[Meter] = None, snapshot: Optional[Snapshot] = None,
                   progress: Callable[[str], None] = lambda m: None) -> dict:
    """``scenarios.offline``: each candidate pool (a configuration of batch and requests in flight)
    runs for half of ``options.seconds``; the fastest is then run for the whole duration (the
    search's maximum alone would be the luckiest of several noisy figures) and reported, with
    every point of the search (the throughput-vs-latency curve). A candidate that fails to open is
    listed with its error."""
    seconds = options.duration(OFFLINE) or options.seconds
    search_s = max(0.2, options.seconds / 2)
    points: List[dict] = []
    best, best_rate = None, -1.0
    seen = set()
    for open_pool in candidates:
        try:
            pool = open_pool()
        except Exception as exc:  # noqa: BLE001 - this configuration fails; the search goes on
            points.append({"error": _error(exc)})
            continue
        same = (pool.batch, pool.streams, pool.describe().get("mechanism"))
        if same in seen:  # e.g. "the backend's own choice" that is one of the counts tried anyway
            pool.close()
            continue
        seen.add(same)
        try:
            progress(f"offline: batch {pool.batch}, {pool.streams} in flight")
            _series, point = offline_point(pool, search_s, options.warmup)
        finally:
            pool.close()
        points.append(point)
        if point["images_per_s"] is not None and point["images_per_s"] > best_rate:
            best, best_rate = open_pool, point["images_per_s"]
    if best is None:
        raise XcitExportError("offline: no configuration ran (" + "; ".join(p.get("error", "") for p in points) + ")")
    rec: Dict[str, Any] = {}
    pool = best()
    try:
        series = _with_conditions(rec, lambda: offline_run(pool, seconds, options.warmup), meter, snapshot)
        stats = tail(series.ms)
        rec.update(batch=pool.batch, streams=pool.streams, **pool.describe(),
                   images_per_s=_r(series.images / series.seconds, 2), seconds=_r(series.seconds, 2),
                   completed=stats.get("count", 0), p50_ms=stats.get("p50_ms"), p99_ms=stats.get("p99_ms"))
    finally:
        pool.close()
    rec["search"] = points
    if options.sustain is not None:
        rec["stability"] = stability(series.starts, [pool.batch] * len(series.starts), "throughput", series.seconds)
    return {k: rec[k] for k in ["batch", "streams", "images_per_s", *[k for k in rec if k not in
                                                                        ("batch", "streams", "images_per_s")]]}


def _error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _guarded(what: str, run: Callable[[], dict], progress: Callable[[str], None]) -> dict:
    """A scenario's record, or ``{"error": ...}``: a scenario that fails costs its figure only (the
    target's accuracy and latency stand; a scenario is a measurement, not a verdict)."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - recorded in the scenario's place in the report
        progress(f"{what}: failed ({_error(exc)})")
        return {"error": _error(exc)}


def run_target(options: ScenarioOptions, open_runner: Callable[[], Any], open_pool: Optional[Callable[..., Any]],
               x: np.ndarray, offline_batches: Sequence[int], threads: int, latency: Optional[dict] = None,
               meter: Optional[Meter] = None, snapshot: Optional[Snapshot] = None,
               progress: Callable[[str], None] = lambda m: None, label: str = "",
               energy_note: Optional[str] = None) -> dict:
    """Every selected scenario for one artifact: the report entry's ``scenarios``.

    ``open_runner()`` opens the synchronous runner (its outputs on each input are what every pool
    must reproduce: :func:`checked`; it also times a sustained single-stream run); ``open_pool(x,
    streams)`` opens the backend's pool on ``x`` (``streams`` None: the backend's own choice), or is
    None where the target has none here. ``x`` is one query at the latency batch (a multi-stream
    frame too); ``offline_batches`` the batches the offline search tries. ``meter`` records energy
    around each scenario (None: ``energy_note`` says why there is none, once); ``snapshot`` the
    clocks and temperatures before and after each sustained one.
    """
    if options.sustain is None:
        snapshot = None
    batches = sorted({len(x), *offline_batches})
    inputs = {b: np.ascontiguousarray(np.resize(x, (b, *x.shape[1:]))) for b in batches}
    out: Dict[str, Any] = {}
    runner = open_runner()
    try:
        refs = {b: runner.infer(inputs[b]) for b in batches}
        if SINGLE in options.scenarios:
            progress(f"{label}: single-stream")
            out[KEYS[SINGLE]] = _guarded(f"{label}: single-stream", lambda: single_stream_record(
                options, runner.infer, inputs[len(x)], latency, meter, snapshot), progress)
    finally:
        runner.close()
    missing = {"error": "no concurrent runner for this target here"}
    if MULTI in options.scenarios:
        progress(f"{label}: multi-stream, {options.streams} streams")

        def multi() -> dict:
            pool = checked(open_pool(inputs[len(x)], options.streams), refs[len(x)])
            try:
                return multi_stream_record(options, pool, meter, snapshot)
            finally:
                pool.close()

        out[KEYS[MULTI]] = _guarded(f"{label}: multi-stream", multi, progress) if open_pool else dict(missing)
    if OFFLINE in options.scenarios:
        counts: List[Optional[int]] = [None, *stream_counts(threads)]
        candidates = [lambda b=b, n=n: checked(open_pool(inputs[b], n), refs[b]) for b in batches for n in counts]
        out[KEYS[OFFLINE]] = (_guarded(f"{label}: offline", lambda: offline_record(
            options, candidates, meter, snapshot, lambda m: progress(f"{label}: {m}")), progress)
            if open_pool else dict(missing))
    if meter is None and energy_note:
        out["energy"] = {"available": False, "reason": energy_note}
    return out


def stream_counts(threads: int, top: Optional[int] = None) -> List[int]:
    """Requests in flight an offline search tries: 1, 2, 4... up to the cores (and ``top``)."""
    limit = max(1, top or threads)
    out, n = [], 1
    while n <= limit:
        out.append(n)
        n *= 2
    if out[-1] != limit and limit <= 2 * out[-1]:
        out.append(limit)
    return out


__all__ = ["DEFAULT_STREAMS", "KEYS", "MULTI", "OFFLINE", "SCENARIOS", "SINGLE", "ScenarioOptions", "Series",
           "checked", "run_target", "scenario_options", "early_stopping", "min_passing_queries", "multi_stream", "multi_stream_record", "offline_record",
           "offline_run", "parse_scenarios", "single_stream", "single_stream_record", "stability", "stream_counts",
           "tail"]
