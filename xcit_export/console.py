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
import io
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Protocol, TypeVar, runtime_checkable

from .report.formats import fmt_cosine, fmt_ms, fmt_percent, fmt_speedup  # noqa: F401 - re-exported

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
    least ``options.iterations``. With ``options.min_seconds`` the loop may run longer than that, so
    the total is not known in advance (a count and a rate, no ETA, rather than a bar that sits full)."""
    total = None if getattr(options, "min_seconds", 0) else 1 + options.warmup + options.iterations
    return counting(progress, label, infer, total, per_call=lambda _x: 1)


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
    """``12.3 s``, ``1 min 20 s``, ``2 h 05 min``: a duration a person reads at once."""
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    return f"{m // 60} h {m % 60:02d} min"


class TerminalProgress:
    """The CLI's :class:`Progress`: stage lines and, per counted loop (a *phase*: decoding, the
    evaluation pass, a latency loop), one bar on a terminal or count lines in a log.

    The story told, the same on a terminal and in a log (no TTY, no ANSI codes):

    * each stage message is a line (time, message);
    * a phase's count, rate and ETA are computed over the whole phase, from its first count: a
      stage message in between does not reset them;
    * a phase ends when its count reaches its total, with one final line (``done LABEL: N in T
      (R/s)``) printed at that moment (not when the next stage starts); a phase whose total was
      unknown or never reached ends at the next stage message; a phase that counted nothing
      prints nothing;
    * in a log, a count line every ``log_every`` seconds while a phase runs;
    * a heartbeat: when nothing was printed for ``heartbeat_every`` seconds (an engine build, NNCF
      quantization: steps that report nothing), a thread prints ``still: <stage> (1 min 20 s)``
      in a log; on a terminal the stage's spinner line shows its elapsed time.

    ``quiet``: nothing at all (errors are the caller's to print). Use as a context manager.
    """

    def __init__(self, console: Any, *, quiet: bool = False, verbose: bool = False, log_every: float = 10.0,
                 heartbeat_every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        import threading

        self.console = console
        self.quiet = quiet
        self.verbose = verbose
        self.log_every = log_every
        self.heartbeat_every = heartbeat_every
        self.clock = clock
        self.live = (not quiet) and console.is_terminal and not console.is_dumb_terminal
        self._bars: Any = None
        self._stage_task: Any = None
        self._loops: dict[str, dict[str, Any]] = {}  # label -> start, done, total, last, last_log, task, closed
        self._stage: str | None = None
        self._stage_started = clock()
        self._last_output = clock()
        self._lock = threading.RLock()  # the heartbeat thread prints too
        self._stop = threading.Event()
        self._thread: Any = None

    # -- context ------------------------------------------------------------------------------
    def __enter__(self) -> "TerminalProgress":
        import threading
        import warnings

        # A Python warning (e.g. "--calib-size 32 is small") as one line among the stage lines, not
        # Python's two-line "file:line: UserWarning:" form; the report keeps its own copy.
        self._showwarning = warnings.showwarning
        if not self.quiet:
            warnings.showwarning = self._warning
        if self.live:
            from rich.progress import BarColumn, Progress as Bars, ProgressColumn, SpinnerColumn, TextColumn
            from rich.table import Column
            from rich.text import Text

            class Figures(ProgressColumn):
                """A phase's count, rate and ETA; a stage's elapsed time (refreshed by the display)."""

                def render(self, task: Any) -> Any:
                    figures = task.fields.get("figures")
                    return Text(figures if figures is not None else _fmt_seconds(task.elapsed or 0.0), style="dim")

            # Every live row stays one line at any width (a long description is cut with "…"; the
            # stage message is printed whole above): a row that wraps makes the live area's height
            # wrong, and lines printed above it get overwritten.
            # spinner 1 + description + bar 12 + figures 38 ("50,000/50,000 123.4/s ETA 1 h 05 min") and the
            # three spaces between them stay one column short of the width.
            room = max(12, self.console.width - 56)
            self._bars = Bars(SpinnerColumn(), TextColumn("{task.description}", table_column=Column(
                                  no_wrap=True, overflow="ellipsis", max_width=room)),
                              BarColumn(bar_width=12), Figures(table_column=Column(no_wrap=True, overflow="ellipsis",
                                                                                   max_width=38)),
                              console=self.console, transient=True, refresh_per_second=8)
            self._bars.start()
        if not self.quiet and not self.live and self.heartbeat_every > 0:
            self._thread = threading.Thread(target=self._beat, name="xcit-export-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import warnings

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._end_loops()
            if self._bars is not None:
                self._bars.stop()
                self._bars = None
        warnings.showwarning = self._showwarning

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.heartbeat_every / 4)):
            self.heartbeat()

    def _warning(self, message: Any, category: Any, *_args: Any, **_kwargs: Any) -> None:
        with self._lock:
            self._print(f"warning: {message}", style="yellow")

    def _print(self, text: str, style: str | None = None, markup: str | None = None) -> None:
        """One line above the bars (terminal) or in the log; ``markup`` is the terminal's form."""
        if self._bars is not None:
            self._bars.console.print(markup if markup is not None else
                                     (f"[{style}]{_escape(text)}[/]" if style else _escape(text)), soft_wrap=False)
        else:
            self.console.print(text, markup=False, soft_wrap=True)
        self._last_output = self.clock()

    # -- Progress -----------------------------------------------------------------------------
    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._end_loops()
            stamp = _dt.datetime.now().strftime("%H:%M:%S")
            self._print(f"{stamp} {message}", markup=f"[dim]{stamp}[/] {_escape(message)}")
            if self._bars is not None:
                if self._stage_task is None:
                    self._stage_task = self._bars.add_task(_escape(message), total=None)
                else:
                    self._bars.update(self._stage_task, description=_escape(message))
                    self._bars.reset(self._stage_task, total=None)
            self._stage = message
            self._stage_started = self.clock()

    def step(self, label: str, done: int, total: int | None) -> None:
        if self.quiet:
            return
        with self._lock:
            now = self.clock()
            loop = self._loops.get(label)
            if loop is not None and loop["closed"]:
                if done == 0:  # the same label again, from the start: a new phase
                    del self._loops[label]
                    loop = None
                else:  # counts past a finished phase's total (an estimate): said once, already
                    return
            if loop is None:
                loop = self._loops[label] = {"start": now, "done": 0, "total": total, "last": now, "last_log": now,
                                             "task": None, "closed": False}
                if self._bars is not None:
                    loop["task"] = self._bars.add_task(_escape(label), total=total, figures="")
            loop["done"] = done
            loop["total"] = total
            if total is not None and done >= total and done > 0:
                self._end(label, loop, now)  # the phase is over now, not at the next stage message
                return
            if self._bars is not None:
                if now - loop["last"] < 0.1:
                    return  # the display refreshes a few times a second; counts are kept in between
                loop["last"] = now
                count, rate, eta = self._figures(loop, now)
                self._bars.update(loop["task"], completed=done, total=total,
                                  figures=" ".join(f for f in (count, rate, f"ETA {eta}" if eta else "") if f))
            elif now - loop["last_log"] >= self.log_every and done > 0:
                loop["last_log"] = loop["last"] = now
                self._print(self._log_line(label, loop, now))

    def heartbeat(self) -> None:
        """Say the run is alive when nothing was printed for ``heartbeat_every`` seconds (the
        heartbeat thread calls this about once a second in a log)."""
        if self.quiet:
            return
        with self._lock:
            now = self.clock()
            if self._stage is None or now - self._last_output < self.heartbeat_every:
                return
            running = [(label, loop) for label, loop in self._loops.items() if not loop["closed"] and loop["done"]]
            if running:
                for label, loop in running:
                    loop["last_log"] = now
                    self._print(self._log_line(label, loop, now))
            else:
                self._print(f"  still: {self._stage} ({_fmt_seconds(now - self._stage_started)})")

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _figures(loop: dict[str, Any], now: float) -> tuple[str, str, str]:
        """Count (``1,200/4,000``), rate (``92.3/s``) and time left (``30.1 s``; empty when unknown),
        over the whole phase."""
        elapsed = now - loop["start"]
        done, total = loop["done"], loop["total"]
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{_fmt_count(done)}/{_fmt_count(total)}" if total else _fmt_count(done)
        eta = _fmt_seconds((total - done) / rate) if total and rate > 0 and done < total else ""
        return count, (f"{rate:,.1f}/s" if rate > 0 else ""), eta

    def _log_line(self, label: str, loop: dict[str, Any], now: float) -> str:
        count, rate, eta = self._figures(loop, now)
        return f"  {label}: {count}" + (f", {rate}" if rate else "") + (f", ETA {eta}" if eta else "")

    def _end(self, label: str, loop: dict[str, Any], now: float) -> None:
        """A phase's final line (none when it counted nothing); its bar goes."""
        loop["closed"] = True
        if self._bars is not None and loop["task"] is not None:
            self._bars.remove_task(loop["task"])
            loop["task"] = None
        if not loop["done"]:
            return
        elapsed = now - loop["start"]
        rate = loop["done"] / elapsed if elapsed > 0 else 0.0
        of = f" of {_fmt_count(loop['total'])}" if loop["total"] and loop["done"] < loop["total"] else ""
        line = f"{label}: {_fmt_count(loop['done'])}{of} in {_fmt_seconds(elapsed)} ({rate:,.1f}/s)"
        self._print(f"  done {line}", markup=f"  [green]done[/] {_escape(line)}")

    def _end_loops(self) -> None:
        now = self.clock()
        for label, loop in self._loops.items():
            if not loop["closed"]:
                self._end(label, loop, now)
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


def _mb(entry: dict) -> str:
    size = (entry.get("artifact") or {}).get("size_bytes")
    return "-" if not size else f"{size / 1e6:.1f}"


# The results' columns: header, group ("acc": compared with PyTorch; "speed": latency and size), and
# the cell of a target entry. Headers are short so that the table fits 80 columns in two parts.
_COLUMNS: list[tuple[str, str, Callable[[dict], str]]] = [
    ("top-1", "acc", lambda t: fmt_percent((t.get("accuracy") or {}).get("top1"))),
    ("agree", "acc", lambda t: fmt_percent((t.get("accuracy") or {}).get("top1_agreement"))),
    ("cos min", "acc", lambda t: fmt_cosine((t.get("accuracy") or {}).get("cosine_min"))),
    ("max err", "acc", lambda t: _fmt((t.get("accuracy") or {}).get("max_abs_error"), ".1e")),
    ("med ms", "speed", lambda t: fmt_ms((t.get("latency") or {}).get("median_ms"))),
    ("p90 ms", "speed", lambda t: fmt_ms((t.get("latency") or {}).get("p90_ms"))),
    ("speed-up", "speed", lambda t: fmt_speedup(t.get("speedup_vs_pytorch"))),
    ("MB", "speed", _mb),
]
# What each short header means, printed under the table (for the columns it shows).
COLUMN_KEY = {"agree": "agree: top-1 agreement with PyTorch", "cos min": "cos min: lowest cosine with PyTorch's output",
              "max err": "max err: largest absolute difference", "med ms": "med/p90 ms: latency per inference",
              "speed-up": "speed-up: PyTorch's median over the target's"}


def column_key(report: dict) -> str:
    """``agree: top-1 agreement with PyTorch; ...`` for the short headers the results table shows."""
    _, columns = _result_rows(report)
    return "; ".join(COLUMN_KEY[c] for c, _ in columns if c in COLUMN_KEY)


def _status(entry: dict) -> tuple[str, str]:
    """Any status, whole (``ok``, ``failed``, ``built``...), with the thresholds' verdict when checked."""
    status = str(entry.get("status", "failed"))
    style = STATUS_STYLE.get(status, "bold yellow")
    if entry.get("passed") is False:
        return f"{status}, FAIL", "bold red"
    if status == "built":  # nothing ran the deployed artifact here: never shown as a pass (its note says why)
        return "built, not run", style
    if entry.get("passed") is True:
        return f"{status}, pass", style
    return status, style


def _result_rows(report: dict) -> tuple[list[tuple[str, str, str, dict[str, str]]], list[tuple[str, str]]]:
    """Rows ``(name, status, style, {header: cell})`` (PyTorch's first, dim) and the columns any row fills."""
    rows = report.get("targets", [])
    columns = [(name, group) for name, group, get in _COLUMNS if any(get(t) != "-" for t in rows)]
    out = []
    ref = report.get("reference") or {}
    if ref.get("latency"):
        racc, rlat = ref.get("accuracy") or {}, ref["latency"]
        cells = {"top-1": fmt_percent(racc.get("top1")), "med ms": fmt_ms(rlat.get("median_ms")),
                 "p90 ms": fmt_ms(rlat.get("p90_ms"))}
        out.append(("pytorch-eager", "reference", "dim", cells))
    for t in rows:
        label, style = _status(t)
        out.append((str(t["target"]), label, style, {name: get(t) for name, _, get in _COLUMNS}))
    return out, columns


def _table(rows: list[tuple[str, str, str, dict[str, str]]], columns: list[str], *, status: bool = True, title: str | None = None) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title, title_justify="left",
                  title_style="bold")
    table.add_column("target", no_wrap=True)
    if status:
        table.add_column("status", no_wrap=True)
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for name, label, style, cells in rows:
        dim = style == "dim"
        first = [Text(name, style="dim" if dim else "")] + ([Text(label, style=style)] if status else [])
        table.add_row(*first, *[Text(cells.get(c, ""), style="dim" if dim else "") for c in columns])
    return table


def _width(renderable: Any) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    probe = Console(width=10_000, file=io.StringIO())
    return Measurement.get(probe, probe.options, renderable).maximum


def _blocks(rows: list[tuple[str, str, str, dict[str, str]]], columns: list[str], width: int) -> list[Any]:
    """The narrowest layout: per row its name and status, then ``header value`` pairs packed into
    lines of ``width``, never split."""
    from rich.text import Text

    out: list[Any] = []
    for name, label, style, cells in rows:
        head = Text(name, style="dim" if style == "dim" else "bold")
        if label:
            head.append("  ")
            head.append(label, style=style)
        out.append(head)
        line = ""
        for c in columns:
            if cells.get(c, "-") in ("-", ""):
                continue
            pair = f"{c} {cells[c]}"
            if line and len(line) + 2 + len(pair) > width - 2:
                out.append(Text("  " + line, style="dim" if style == "dim" else ""))
                line = ""
            line = f"{line}  {pair}" if line else pair
        if line:
            out.append(Text("  " + line, style="dim" if style == "dim" else ""))
    return out


def results_layout(report: dict, width: int) -> list[Any]:
    """The results as renderables that fit ``width`` columns, every target name and figure whole.

    One table when it fits (a CI log is 200 columns wide); else two tables, accuracy against
    PyTorch and then latency and size, each with the target's full name; below that (a very narrow
    terminal), a block per target. Columns no target has a figure for are left out.
    """
    rows, columns = _result_rows(report)
    names = [c for c, _ in columns]
    one = _table(rows, names)
    if _width(one) <= width:
        return [one]
    acc = [c for c, g in columns if g == "acc"]
    speed = [c for c, g in columns if g == "speed"]
    two = [_table(rows, acc, title="accuracy against PyTorch"),
           _table([r for r in rows if any(r[3].get(c, "-") not in ("-", "") for c in speed) or r[2] != "dim"],
                  speed, status=False, title="latency and size")]
    if max(_width(t) for t in two) <= width:
        return two
    return _blocks(rows, names, width)


def results_table(report: dict) -> Any:
    """The targets as one rich Table (status in colour, accuracy against PyTorch, latency, size),
    whatever its width; :func:`results_layout` chooses a layout for a width."""
    rows, columns = _result_rows(report)
    return _table(rows, [c for c, _ in columns])


def sizes_layout(report: dict, width: int) -> list[Any]:
    """``--eval-sizes``: PyTorch's latency and every target's accuracy and latency at each size
    (the figures of ``report["sizes"]`` and each target's ``sizes``), fitted to ``width``: a
    table with the size in its first column (once per size) and a status column only when some
    row is not plainly ``ok``; a block per row when even that is too wide. The fitted slopes of
    latency against tokens follow."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not report.get("sizes"):
        return []
    from .report.formats import size_rows

    rows, columns = size_rows(report)
    labels = [("reference", "dim") if r["reference"] else _status(r["entry"]) for r in rows]
    status = any(label not in ("reference", "ok") for label, _ in labels)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title="at each size (--eval-sizes)",
                  title_justify="left", title_style="bold")
    table.add_column("size", no_wrap=True)
    table.add_column("target", no_wrap=True)
    if status:
        table.add_column("status", no_wrap=True)
    for c in columns:
        table.add_column(c, justify="left" if c == "timed as" else "right", no_wrap=True)
    last = None
    for r, (label, style) in zip(rows, labels):
        dim = "dim" if r["reference"] else ""
        table.add_row(Text(r["size"] if r["size"] != last else "", style="bold"), Text(r["target"], style=dim),
                      *([Text(label, style=style)] if status else []),
                      *[Text(r["cells"].get(c, ""), style=dim) for c in columns])
        last = r["size"]
    if _width(table) <= width:
        out: list[Any] = [table]
    else:
        blocks = [(f"{r['size']} {r['target']}", label, style, r["cells"]) for r, (label, style) in zip(rows, labels)]
        out = [Text("at each size (--eval-sizes)", style="bold"), *_blocks(blocks, columns, width)]
    slopes = {k: v for k, v in (report["sizes"].get("slopes") or {}).items() if v is not None}
    if slopes:
        out.append(Text("latency vs tokens, fitted log-log slope (1 = linear): "
                        + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()), style="dim"))
    return out


def scenarios_layout(report: dict, width: int, *, verbose: bool = False) -> list[Any]:
    """``--scenario``: a table per scenario (:func:`xcit_export.report.scenarios.tables`) that fits
    ``width``: whole, else its columns split over tables that each repeat the target's name, else a
    block per target; then the notes (verdicts' reasons, MLPerf's minimum, energy; all of them with
    ``verbose``)."""
    from rich.text import Text

    from .report.scenarios import QUIET_WORDS, notes, tables

    out: list[Any] = []
    for title, header, cells in tables(report):
        columns = header[1:]
        rows = [(row[0], "", "", dict(zip(columns, row[1:]))) for row in cells]
        parts: list[list[str]] = [[]]
        for c in columns:  # greedy: each column joins the last table while that still fits
            if parts[-1] and _width(_table(rows, parts[-1] + [c], status=False)) > width:
                parts.append([])
            parts[-1].append(c)
        split = [_table(rows, cols, status=False, title=title if i == 0 else None) for i, cols in enumerate(parts)]
        if max(_width(t) for t in split) <= width:
            out += split
        else:
            out += [Text(title, style="bold"), *_blocks(rows, columns, width)]
    lines = notes(report)
    if not verbose:
        lines = [line for line in lines if any(word in line for word in QUIET_WORDS)]
    return out + [Text(line, style="dim") for line in lines]


def report_renderables(report: dict, *, verbose: bool = False, width: int = 200) -> list[Any]:
    """Everything :func:`print_report` shows, top to bottom, as rich renderables, the tables laid
    out for ``width`` columns (:func:`results_layout`)."""
    from rich.text import Text

    from .report.noise import noise_line

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
    for warning in report.get("warnings", []):
        out.append(Text(f"warning: {warning}", style="bold yellow"))
    out += results_layout(report, width)
    if column_key(report):
        out.append(Text(column_key(report), style="dim"))
    noisy = noise_line(report)
    if noisy:
        out.append(Text(noisy, style="bold yellow"))
    out += sizes_layout(report, width)
    out += scenarios_layout(report, width, verbose=verbose)
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
    # Text wraps at word boundaries on a terminal; a log (no terminal) keeps each line whole.
    soft = not console.is_terminal
    for item in report_renderables(report, verbose=verbose, width=console.width):
        console.print(item, soft_wrap=soft and not hasattr(item, "columns"))
    from .report.divergence import console_lines  # --explain: the block that adds the most, the remedy, --fix

    for line in console_lines(report):
        console.print(line, markup=False, soft_wrap=soft)
    if json_path is not None:
        console.print(f"report: {json_path} (also report.md, report.html)", markup=False, soft_wrap=True)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
