"""Terminal output: stage messages, progress with counts, rate and ETA, and the results as a table.

The pipeline reports through one callable, ``progress(message)``, as it always has. An object that
also has ``step(label, done, total)`` (the :class:`Progress` protocol) is told counts as well:
images decoded, reference and target outputs computed, latency runs. Pipeline code never checks
which it got: it wraps its loops with :func:`counting` (a function called once per batch) or
:func:`track` (an iterable), which cost nothing with a plain callable.

:class:`TerminalProgress` is the CLI's implementation: rich progress bars on a terminal (count,
rate, ETA) and, in a log (no TTY), plain lines (no ANSI codes): a count line every ten seconds for
long loops and one summary line per finished loop. :func:`print_report` prints a report as a rich
table with the recommendation on top.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@runtime_checkable
class Progress(Protocol):
    """What :func:`xcit_export.pipeline.run` accepts as ``progress`` when it wants counts.

    ``__call__(message)`` announces a stage (``"onnxruntime-fp32: building"``); ``step(label, done,
    total)`` says ``done`` of ``total`` items of the loop named ``label`` are finished (``total``
    None: unknown). A plain ``Callable[[str], None]`` is still accepted; it gets no counts.
    """

    def __call__(self, message: str) -> None: ...

    def step(self, label: str, done: int, total: int | None) -> None: ...


def step(progress: Callable[[str], None], label: str, done: int, total: int | None) -> None:
    """Tell ``progress`` a count if it takes counts (a :class:`Progress`); else do nothing."""
    fn = getattr(progress, "step", None)
    if fn is not None:
        fn(label, done, total)


def counting(progress: Callable[[str], None], label: str, fn: F, total: int | None,
             per_call: Callable[[Any], int] | None = None) -> F:
    """``fn`` that reports after every call how many items are done (``per_call(first argument)``,
    default ``len`` of it, i.e. the batch), capped at ``total`` when ``total`` is an item count.

    With a ``progress`` that takes no counts, ``fn`` itself is returned: no wrapper, no cost. The
    wrapper's own work (an addition and a dictionary update in :meth:`TerminalProgress.step`, under
    a microsecond) happens after ``fn`` returns.
    """
    report = getattr(progress, "step", None)
    if report is None:
        return fn
    size = per_call or len
    cap = per_call is None and total is not None  # a padded last batch must not count past the items
    done = [0]
    report(label, 0, total)  # the loop starts now: its rate and ETA count from here

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        done[0] += size(args[0]) if args else 1
        report(label, min(done[0], total) if cap else done[0], total)  # type: ignore[type-var]
        return out

    return wrapped  # type: ignore[return-value]


def track(progress: Callable[[str], None], label: str, items: Iterable[T], total: int | None,
          per_item: Callable[[T], int] | None = None) -> Iterator[T]:
    """Iterate ``items``, reporting after each how many are done (``per_item(item)`` each, default 1)."""
    report = getattr(progress, "step", None)
    if report is None:
        yield from items
        return
    done = 0
    report(label, 0, total)
    for item in items:
        yield item
        done += per_item(item) if per_item else 1
        report(label, done, total)


def stepper(progress: Callable[[str], None], label: str) -> Callable[[int, int], None] | None:
    """``on_item(done, total)`` reporting to ``progress`` under ``label``; None when it takes no counts."""
    report = getattr(progress, "step", None)
    if report is None:
        return None
    return lambda done, total: report(label, done, total)


def latency_runs(progress: Callable[[str], None], label: str, infer: F, options: Any) -> F:
    """``infer`` counting the latency loop's runs: the first inference, ``options.warmup`` and at
    least ``options.iterations`` (more when ``options.min_seconds`` holds it longer)."""
    return counting(progress, label, infer, 1 + options.warmup + options.iterations, per_call=lambda _x: 1)


class _Renamed:
    def __init__(self, progress: Callable[[str], None], old: str, new: str) -> None:
        self.progress, self.old, self.new = progress, old, new
        if hasattr(progress, "step"):
            self.step = lambda label, done, total: progress.step(label.replace(old, new, 1), done, total)  # type: ignore[attr-defined]

    def __call__(self, message: str) -> None:
        self.progress(message.replace(self.old, self.new, 1))


def renamed(progress: Callable[[str], None], old: str, new: str) -> Callable[[str], None]:
    """``progress`` with the first ``old`` in every message and label replaced by ``new``
    (``onnxruntime-fp32`` -> ``onnxruntime-fp32@batch1``); counts still pass through."""
    return _Renamed(progress, old, new)


# --------------------------------------------------------------------------------------------
# The CLI's progress display
# --------------------------------------------------------------------------------------------

def make_console(stderr: bool = False, *, force_terminal: bool | None = None, width: int | None = None) -> Any:
    """A rich Console: colours and live bars on a terminal; plain text (no ANSI codes, lines not
    wrapped at 80 columns) when the stream is a file or a pipe (``NO_COLOR`` and ``TERM=dumb``
    are honoured by rich)."""
    from rich.console import Console

    console = Console(stderr=stderr, force_terminal=force_terminal, log_path=False, highlight=False,
                      width=width)
    if not console.is_terminal and width is None:
        # A log has no width: keep table rows on one line (a table is no wider than its content).
        # COLUMNS only widens it: runners set COLUMNS=80 for their workers (pytest-xdist does), and
        # cells cut to "stat…" in a CI log would hide the verdict.
        wide = max(200, int(os.environ.get("COLUMNS", "0")) if os.environ.get("COLUMNS", "").isdigit() else 200)
        console = Console(stderr=stderr, force_terminal=False, log_path=False, highlight=False, width=wide)
    return console


def _fmt_count(n: float) -> str:
    return f"{n:,.0f}" if n >= 1000 else f"{n:g}"


def _fmt_seconds(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m}:{sec:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{sec:02d}"


class TerminalProgress:
    """The CLI's :class:`Progress`: stage lines and, per counted loop, a bar or log lines.

    On a terminal: each stage message is a line (time, message) above a live area holding the
    current stage with its elapsed time and a bar per running loop (count, rate, ETA). In a log
    (no TTY): the same stage lines, plain, and for a loop a count line every ``log_every``
    seconds (count, rate, ETA) and a summary line when it ends. A loop ends at the next stage
    message (or when the display closes), so a loop whose count overshoots its estimate (a latency
    loop held for ``--min-seconds``) is still summarised once with its true count.

    ``quiet``: nothing at all (errors are the caller's to print). Use as a context manager.
    """

    def __init__(self, console: Any, *, quiet: bool = False, verbose: bool = False, log_every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.quiet = quiet
        self.verbose = verbose
        self.log_every = log_every
        self.clock = clock
        self.live = (not quiet) and console.is_terminal and not console.is_dumb_terminal
        self._bars: Any = None
        self._stage_task: Any = None
        self._loops: dict[str, dict[str, Any]] = {}  # label -> start, done, total, last_log, task
        self._stage_started = clock()

    # -- context ------------------------------------------------------------------------------
    def __enter__(self) -> "TerminalProgress":
        import warnings

        # A Python warning (e.g. "--calib-size 32 is small") as one line among the stage lines, not
        # Python's two-line "file:line: UserWarning:" form; the report keeps its own copy.
        self._showwarning = warnings.showwarning
        if not self.quiet:
            warnings.showwarning = self._warning
        if self.live:
            from rich.progress import BarColumn, Progress as Bars, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bars = Bars(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                              TextColumn("{task.fields[count]}"), TextColumn("{task.fields[rate]}"),
                              TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                              console=self.console, transient=True, refresh_per_second=8)
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import warnings

        self._finish_loops()
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        warnings.showwarning = self._showwarning

    def _warning(self, message: Any, category: Any, *_args: Any, **_kwargs: Any) -> None:
        text = f"warning: {message}"
        if self._bars is not None:
            self._bars.console.print(f"[yellow]{_escape(text)}[/]", soft_wrap=True)
        else:
            self.console.print(text, markup=False, soft_wrap=True)

    # -- Progress -----------------------------------------------------------------------------
    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        self._finish_loops()
        stamp = _dt.datetime.now().strftime("%H:%M:%S")
        if self._bars is not None:
            self._bars.console.print(f"[dim]{stamp}[/] {_escape(message)}", soft_wrap=True)
            if self._stage_task is None:
                self._stage_task = self._bars.add_task(_escape(message), total=None, count="", rate="", eta="")
            else:
                self._bars.update(self._stage_task, description=_escape(message))
                self._bars.reset(self._stage_task, total=None)
        else:
            self.console.print(f"{stamp} {message}", markup=False, soft_wrap=True)
        self._stage_started = self.clock()

    def step(self, label: str, done: int, total: int | None) -> None:
        if self.quiet:
            return
        now = self.clock()
        loop = self._loops.get(label)
        if loop is None:
            loop = self._loops[label] = {"start": now, "done": 0, "total": total, "last": now, "task": None}
            if self._bars is not None:
                loop["task"] = self._bars.add_task(_escape(label), total=total, count="", rate="", eta="")
        loop["done"] = done
        if total is not None and done > total:
            total = done  # the estimate was low (e.g. a latency loop held for --min-seconds)
        loop["total"] = total
        if now - loop["last"] < 0.1 and (total is None or done < total):
            return  # the display refreshes a few times a second; counts are kept in between
        if self._bars is not None:
            loop["last"] = now
            count, rate, eta = self._figures(loop, now)
            self._bars.update(loop["task"], completed=done, total=total, count=count, rate=rate,
                              eta=f"ETA {eta}" if eta else "")
        elif now - loop.get("last_log", loop["start"]) >= self.log_every and (total is None or done < total):
            loop["last_log"] = loop["last"] = now
            self.console.print(self._log_line(label, loop, now), markup=False, soft_wrap=True)

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _figures(loop: dict[str, Any], now: float) -> tuple[str, str, str]:
        """Count (``1,200/4,000``), rate (``92.3/s``) and time left (``30.1 s``; empty when unknown)."""
        elapsed = now - loop["start"]
        done, total = loop["done"], loop["total"]
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{_fmt_count(done)}/{_fmt_count(total)}" if total else _fmt_count(done)
        eta = _fmt_seconds((total - done) / rate) if total and rate > 0 else ""
        return count, (f"{rate:,.1f}/s" if rate > 0 else ""), eta

    def _log_line(self, label: str, loop: dict[str, Any], now: float) -> str:
        count, rate, eta = self._figures(loop, now)
        return f"  {label}: {count}" + (f", {rate}" if rate else "") + (f", ETA {eta}" if eta else "")

    def _finish_loops(self) -> None:
        now = self.clock()
        for label, loop in self._loops.items():
            elapsed = now - loop["start"]
            rate = loop["done"] / elapsed if elapsed > 0 else 0.0
            line = f"{label}: {_fmt_count(loop['done'])} in {_fmt_seconds(elapsed)} ({rate:,.1f}/s)"
            if self._bars is not None:
                self._bars.remove_task(loop["task"])
                self._bars.console.print(f"  [green]done[/] {_escape(line)}", soft_wrap=True)
            else:
                self.console.print(f"  done {line}", markup=False, soft_wrap=True)
        self._loops.clear()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# --------------------------------------------------------------------------------------------
# The results
# --------------------------------------------------------------------------------------------

STATUS_STYLE = {"ok": "green", "built": "yellow", "failed": "bold red"}


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def top_ops_line(entry: dict, n: int = 3) -> str | None:
    """``onnxruntime-fp32: MatMul 41%, LayerNormalization 12%, Gelu 9% of 23.41 ms profiled`` (or the
    profiler's failure), the per-op profile in one short line; None when there is none."""
    prof = entry.get("op_profile")
    if prof is None:
        err = entry.get("op_profile_error")
        return f"{entry['target']}: no per-op profile ({err})" if err else None
    ops = ", ".join(f"{o['op_type']} {o['share']:.0%}" for o in prof.get("ops", [])[:n])
    return f"{entry['target']}: {ops}"


def results_table(report: dict) -> Any:
    """The targets as a rich Table: status in colour, accuracy against PyTorch, latency, size.

    Columns that no target has a figure for (labelled top-1 without labels, latency for artifacts
    timed only on a device) are left out."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rows = report.get("targets", [])
    columns: list[tuple[str, Callable[[dict], str]]] = [
        ("top-1", lambda t: _fmt((t.get("accuracy") or {}).get("top1"), ".2%")),
        ("top-1 agree", lambda t: _fmt((t.get("accuracy") or {}).get("top1_agreement"), ".2%")),
        ("cosine min", lambda t: _fmt((t.get("accuracy") or {}).get("cosine_min"), ".6f")),
        ("max abs err", lambda t: _fmt((t.get("accuracy") or {}).get("max_abs_error"), ".2e")),
        ("median ms", lambda t: _fmt((t.get("latency") or {}).get("median_ms"), ".2f")),
        ("p90 ms", lambda t: _fmt((t.get("latency") or {}).get("p90_ms"), ".2f")),
        ("vs PyTorch", lambda t: _fmt(t.get("speedup_vs_pytorch"), ".2f") + ("x" if t.get("speedup_vs_pytorch") else "")),
        ("MB", lambda t: _fmt(((t.get("artifact") or {}).get("size_bytes") or 0) / 1e6 or None, ".2f")),
    ]
    columns = [(name, get) for name, get in columns if any(get(t) != "-" for t in rows)]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("target", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for name, _ in columns:
        table.add_column(name, justify="right", no_wrap=True)
    ref = report.get("reference") or {}
    if ref.get("latency"):
        racc = ref.get("accuracy") or {}
        values = {"top-1": _fmt(racc.get("top1"), ".2%"), "median ms": _fmt(ref["latency"].get("median_ms"), ".2f"),
                  "p90 ms": _fmt(ref["latency"].get("p90_ms"), ".2f")}
        table.add_row(Text("pytorch-eager", style="dim"), Text("reference", style="dim"),
                      *[Text(values.get(name, ""), style="dim") for name, _ in columns])
    for t in rows:
        status = t.get("status", "failed")
        style = STATUS_STYLE.get(status, "bold red")
        label = status
        if t.get("passed") is False:
            label, style = f"{status}, FAIL", "bold red"
        elif t.get("passed") is True:
            label = f"{status}, pass"
        table.add_row(t["target"], Text(label, style=style), *[get(t) for _, get in columns])
    return table


def report_renderables(report: dict, *, verbose: bool = False) -> list[Any]:
    """Everything :func:`print_report` shows, top to bottom, as rich renderables."""
    from rich.text import Text

    from .evaluate.profiling import coverage_line
    from .report.int8 import int8_gain_lines, int8_markdown

    out: list[Any] = []
    rec = report.get("recommendation")
    if rec:
        head, *rest = rec.get("lines") or [f"recommendation: {rec.get('target')}"]
        out.append(Text(head, style="bold green" if rec.get("target") else "bold red"))
        if rec.get("artifact"):
            out.append(Text(f"  artifact: {rec['artifact']}"))
        for line in rest:
            out.append(Text(f"  {line}", style="dim"))
        held = (rec.get("require_winner") or {}).get("ok", True)
        if not held:
            out.append(Text(f"required winner {rec['require_winner'].get('target', rec['require_winner'])} was not "
                            f"recommended ({rec.get('target') or 'no candidate held the budget'})", style="bold red"))
        out.append(Text(""))
    m, ev, dev = report["model"], report.get("evaluation", {}), report.get("device", {})
    what = str(ev.get("description", "?"))
    if not what.startswith(str(ev.get("count"))):
        what += f" ({ev.get('count', '?')} inputs)"
    size = "x".join(str(v) for v in m.get("input_size", []))
    out.append(Text(f"{m['name']} ({m.get('weights')} weights, {m.get('num_classes')} classes, {size}, export batch "
                    f"{report.get('export', {}).get('batch')}) on {dev.get('cpu', '?')}, "
                    f"{report.get('latency_method', {}).get('threads', '?')} threads; "
                    f"evaluation: {what}", style="bold"))
    calib = ev.get("calibration")
    if calib:
        out.append(Text(f"calibration: {calib.get('source')} ({calib.get('count')} images)"
                        + (f": {calib['note']}" if calib.get("note") else ""), style="dim"))
    out.append(results_table(report))
    from .report.scenarios import console_renderables  # --scenario: a table per scenario

    out += console_renderables(report, verbose=verbose)
    for t in report.get("targets", []):
        if t.get("error"):
            out.append(Text(f"{t['target']}: {t['error']}", style="red"))
        elif t.get("note"):
            out.append(Text(f"{t['target']}: {t['note']}", style="yellow"))
    for t in report.get("targets", []):
        for c in t.get("checks", []):
            skipped = str(c.get("why", "")).startswith("skipped")
            if not c.get("ok") and not skipped:
                out.append(Text(f"FAIL {t['target']}: {c['metric']} = {c['value']} (limit {c['limit']})",
                                style="bold red"))
            elif verbose:
                out.append(Text(f"{'skip' if skipped else 'pass'} {t['target']}: {c['metric']} = {c['value']} "
                                f"(limit {c['limit']})", style="dim"))
    int8 = [line.lstrip("- ").replace("**", "") for line in (int8_markdown(report)[3:] if verbose
                                                            else int8_gain_lines(report))]
    out += [Text(line, style="yellow") for line in int8]
    profiled = [t for t in report.get("targets", []) if t.get("op_profile") or t.get("op_profile_error")]
    if profiled:
        out.append(Text("where the time goes (runtime profilers; report.md has the full story):", style="bold"
                        if verbose else "dim"))
        for t in profiled:
            line = top_ops_line(t, 6 if verbose else 3)
            if verbose and t.get("op_profile"):
                line = f"{line} ({coverage_line(t)})"
            out.append(Text(f"  {line}"))
    return out


def print_report(report: dict, console: Any, *, verbose: bool = False, json_path: Any = None) -> None:
    """Print ``report`` to ``console``: the recommendation, a line on what was run, the results
    table, errors and failed thresholds, INT8 notes, one line per target's per-op profile
    (``verbose``: every op type shown in the reports' order up to six, with the profiler's
    correction story), and where the report files are."""
    for item in report_renderables(report, verbose=verbose):
        console.print(item, soft_wrap=not hasattr(item, "columns"))
    if json_path is not None:
        console.print(f"report: {json_path} (also report.md, report.html)", markup=False, soft_wrap=True)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
