"""Docs that run: every fenced command in README.md and docs/*.md works as written.

The convention (docs/development.md, "Commands in the docs"): every fenced block is tagged.

* ``sh``: commands (a ``# needs: <what>`` line of its own marks every command after it in the
  block). Each ``xcit-export`` command is parsed by the real click parser (its options
  exist) and every file it names that is not made by an earlier command exists in the repository;
  then :func:`docs_run` runs the commands once, page by page in a scratch folder, with small-input
  overrides (:data:`SMALL`; the few in :data:`ALL_ONLY` only with ``XCIT_DOCS_ALL=1``), and checks
  its exit status (0, or 1 where the line's comment says
  ``exit 1``). A command whose comment says ``# needs: <what>`` needs hardware or a network the
  suite does not have: it is parsed, never run, and the files it reads must exist once the page's
  commands before it ran (the device's ``tar xzf ...tar.gz`` finds the bundle the page made).
  A comment that starts with ``exit 1`` says the command may exit 1 (``# exit 1 when another
  candidate wins``). ``make setup`` and the test command are what CI runs (``.ci/run``).
* ``text``: synopses and listings, not commands. ``python``: the README's API example, run by
  tests/test_api.py. ``toml``: parsed. ``yaml``: parsed, its ``run:`` commands checked as ``sh``.

docs/reference.md is generated from the code (tools/cli_reference.py) and must be current.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from xcit_export.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "calibration" / "README.md"]
TAGS = {"sh", "text", "python", "toml", "yaml"}
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
XCIT = ("xcit-export", ".venv/bin/xcit-export")
RUN_BY_CI = {"make setup", ".venv/bin/python -m pytest -q"}  # .ci/run: the suite runs inside these
# Small inputs for every command that runs a model: a 32x32 input (2x2 patches), few images, two
# timed runs, no profiler. Recipes keep their model and input size (their `gate` compares with a
# full-size baseline) and get small data and latency tables instead (RECIPE_SMALL).
SMALL = ["--input-size", "32", "--eval-count", "4", "--calib-size", "32", "--warmup", "0", "--iterations", "2",
         "--no-profile"]
RECIPE_SMALL = {"data": {"calib_size": 32, "eval_size": 16}, "latency": {"warmup": 0, "iterations": 2}}
# What every suite run executes costs about a minute on an idle 2-core machine: the main job, the
# Jetson flow (build, bundle, the tarball the device unpacks) and the CI gate (recipe and gate).
# The commands below, each a minute or more even on small inputs (every target built, twice for
# --target auto; NNCF; four sizes), run with XCIT_DOCS_ALL=1 (as in the review of a docs change:
# `XCIT_DOCS_ALL=1 .venv/bin/python -m pytest -q tests/test_docs.py`); their code paths run in
# the suite anyway (tests/evaluate/test_auto.py, test_openvino.py, test_dynamic_size.py, test_tensorrt_rtx.py).
ALL_ONLY = ("--target auto", "--recipe recipes/intel-cpu.toml", "--dynamic-size",
            "--explain",  # docs/explain.md: INT8 builds, NNCF and ModelOpt twice (--fix); tests/diagnose/test_diagnose.py runs it
            "-t onnxruntime-fp32,onnxruntime-int8,openvino-fp32,openvino-int8,tensorrt-fp16,tensorrt-int8")


@dataclass
class Command:
    page: Path
    text: str  # the command as written (one && part), without the comment
    args: list[str]
    comment: str = ""
    needs: str | None = None
    block: int = 0
    tag: str = "sh"
    extra: dict = field(default_factory=dict)

    @property
    def xcit(self) -> bool:
        return bool(self.args) and self.args[0] in XCIT

    @property
    def may_exit_1(self) -> bool:
        return self.comment.startswith("exit 1")

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}: {self.text}"


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(page.read_text())]


def _split_comment(line: str) -> tuple[str, str]:
    """``code  # comment`` -> (code, comment); a ``#`` inside quotes is code."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def _shell_lines(tag: str, body: str) -> list[str]:
    if tag == "sh":
        return body.replace("\\\n", " ").splitlines()
    if tag == "yaml":  # a workflow: the commands of its `run:` steps
        import yaml

        out = []
        for job in (yaml.safe_load(body).get("jobs") or {}).values():
            for step in job.get("steps", []):
                out += str(step.get("run", "")).replace("\\\n", " ").splitlines()
        return out
    return []


def commands(page: Path) -> list[Command]:
    out = []
    for n, (tag, body) in enumerate(blocks(page)):
        block_needs = None  # a "# needs: ..." line of its own: every command after it in the block
        for line in _shell_lines(tag, body):
            code, comment = _split_comment(line)
            if not code.strip():
                if comment.startswith("needs:"):
                    block_needs = comment.split("needs:", 1)[1].strip()
                continue
            needs = comment.split("needs:", 1)[1].strip() if "needs:" in comment else block_needs
            for part in code.split("&&"):
                args = shlex.split(part)
                while args and re.match(r"^[A-Z_]+=", args[0]):  # VAR=value command ...
                    args = args[1:]
                out.append(Command(page, part.strip(), args, comment, needs, n, tag))
    return out


ALL = [c for page in PAGES if page.exists() for c in commands(page)]


def parse(args: list[str]) -> list[tuple[click.Command, click.Context]]:
    """Parse ``xcit-export ARGS`` with the real click commands (sub-commands included); raises
    click's usage errors for an unknown option or a bad value."""
    chain = []
    cmd: click.Command = main
    name, rest, parent = "xcit-export", list(args), None
    while True:
        try:
            ctx = cmd.make_context(name, rest, parent=parent)
        except click.exceptions.Exit:  # --version, --help: parsed, and they would have printed
            return chain
        chain.append((cmd, ctx))
        if not isinstance(cmd, click.Group):
            return chain
        protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args  # click 8.3 / older
        left = [*protected, *ctx.args]
        if not left:
            return chain
        name, cmd, rest = cmd.resolve_command(ctx, left)
        parent = ctx


def _paths(c: Command) -> tuple[list[str], list[str]]:
    """The files a command reads and those it writes (``--out``; ``--baseline`` with
    ``--update-baseline``): its arguments that look like paths (a folder, a .toml...)."""
    reads, writes = [], []
    for i, a in enumerate(c.args[1:], 1):
        if a.startswith("-") or "://" in a or "=" in a:
            continue
        if "/" in a or a.endswith((".toml", ".json", ".tar.gz", ".pyz")):
            flag = c.args[i - 1]
            if flag in ("--out", "-o") or (flag == "--baseline" and "--update-baseline" in c.args):
                writes.append(a)
            else:
                reads.append(a)
    return reads, writes


# --------------------------------------------------------------------------------------------

def test_every_fenced_block_is_tagged():
    untagged = [f"{p.relative_to(ROOT)} block {n + 1}: '{tag}'" for p in PAGES if p.exists()
                for n, (tag, _) in enumerate(blocks(p)) if tag not in TAGS]
    assert not untagged, f"tag every fenced block as one of {sorted(TAGS)}: {untagged}"


def test_every_command_runs_in_the_suite_or_says_what_it_needs():
    ci = (ROOT / ".ci" / "run").read_text()
    other = []
    for c in ALL:
        if c.xcit:
            parse(c.args[1:])
        elif " ".join(c.args) in RUN_BY_CI:
            assert " ".join(c.args) in ci, c.where()
        elif c.tag == "yaml" and c.args[:1] in (["pip"], ["python"]) and "install" in c.args:
            continue  # a workflow's install step: it runs on the CI runner
        elif c.needs is None:
            other.append(c.where())
    assert not other, f"commands neither run by the suite nor marked '# needs: ...': {other}"
    assert sum(c.xcit for c in ALL) > 20 and any(c.needs for c in ALL)


def test_a_bad_option_in_a_doc_would_be_caught():
    with pytest.raises(click.UsageError, match="No such option"):
        parse(["--model", "m", "--target", "t", "--eval-szie", "3"])
    with pytest.raises(click.UsageError, match="No such option"):
        parse(["gate", "--baseline", "b.json", "r.json", "--nope"])


def test_files_named_by_the_docs_exist():
    missing, made = [], set()
    for c in ALL:
        if not c.xcit or c.needs:
            continue
        reads, writes = _paths(c)
        for path in reads:  # out/ is what the runs make (docs_run runs them in order)
            if not path.startswith("out/") and path not in made and not (ROOT / path).exists():
                missing.append(f"{c.where()}: {path}")
        made.update(writes)
    assert not missing, missing


def test_toml_blocks_parse():
    import tomllib

    for page in PAGES:
        for tag, body in blocks(page) if page.exists() else []:
            if tag == "toml":
                tomllib.loads(body)


def _reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_page_is_generated_from_the_code():
    ref = _reference()
    assert (ROOT / "docs" / "reference.md").read_text() == ref.render(), \
        "docs/reference.md is out of date: run .venv/bin/python tools/cli_reference.py"
    page = ref.render()
    for p in main.params:  # every option of the main command, and every recipe key, is on the page
        if isinstance(p, click.Option):
            assert f"`{p.opts[0]}`" in page, p.opts
    from xcit_export import recipe

    for section, schema in recipe._SCHEMA.items():
        for key in schema:
            assert f"| `[{section}]` | `{key}` |" in page


def test_shipped_baselines_fit_their_recipes():
    """`gate --baseline baselines/X.json --recipe recipes/X.toml` refuses a baseline of another
    model, class count or input size, or without a target the recipe runs: the shipped ones fit."""
    from xcit_export.models.zoo import get_spec
    from xcit_export.recipe import load_recipe, to_run_options

    for base in (ROOT / "baselines").glob("*.json"):
        recipe = ROOT / "recipes" / f"{base.stem}.toml"
        assert recipe.exists(), f"{base.name}: no recipes/{recipe.name} it is the baseline of"
        config = to_run_options(load_recipe(recipe))
        report = json.loads(base.read_text())
        spec = get_spec(config.model)
        assert report["model"]["name"] == config.model
        assert list(report["model"]["input_size"]) == list(config.input_size or spec.preprocessing.input_size)
        assert {t["target"] for t in report["targets"]} == set(config.targets)


# --------------------------------------------------------------------------------------------
# Running them
# --------------------------------------------------------------------------------------------

def _key(c: Command) -> tuple:
    return tuple(a for a in c.args if a not in ("--quiet", "-q") and a not in XCIT)


def _without_out(args) -> list[str]:
    args = list(args)
    for flag in ("--out", "-o"):
        if flag in args:
            i = args.index(flag)
            del args[i:i + 2]
    return args


def _out_of(args: list[str]) -> str | None:
    for flag in ("--out", "-o"):
        if flag in args:
            return args[args.index(flag) + 1]
    return None


def _small_recipe(path: str, cwd: Path) -> None:
    import tomllib

    src = cwd / path
    data = tomllib.loads(src.read_text())
    for section, values in RECIPE_SMALL.items():
        data.setdefault(section, {}).update(values)

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    lines = []
    tables = {k: v for k, v in data.items() if k != "targets"}
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
    for name, table in (data.get("targets") or {}).items():
        if not isinstance(table, dict):
            lines += ["[targets]", f"{name} = {value(table)}"]
            continue
        lines.append(f"[targets.{name}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
    src.write_text("\n".join(lines) + "\n")


def _with_small_inputs(c: Command) -> list[str]:
    args = list(c.args[1:])
    first = parse(args)[-1][0]
    if first is not main or "--recipe" in args:
        return args
    if "--eval-sizes" in args:
        args[args.index("--eval-sizes") + 1] = "32,48"
    return args + SMALL + (["--eval-size", "16"] if "--eval" in args else [])


def _threshold_misses_only(out_dir: Path) -> bool:
    """Exit 1 on small inputs is fine when only thresholds were missed (they hold at full size in CI)."""
    report = json.loads((out_dir / "report.json").read_text())
    return all(t["status"] == "ok" for t in report["targets"])


def _gate_metric_misses_only(output: str) -> bool:
    fails = [line for line in output.splitlines() if line.startswith("FAIL ")]
    return bool(fails) and all(re.match(r"FAIL \S+: (top1|top5|top1_agreement|top5_agreement|cosine_mean) ", f)
                               for f in fails)


@pytest.fixture(scope="module")
def docs_run(tmp_path_factory):
    """Every runnable command of every page, once, in one scratch folder holding the repository's
    recipes and baselines: model runs with small inputs, the rest as written."""
    cwd = tmp_path_factory.mktemp("docs")
    for folder in ("recipes", "baselines"):
        shutil.copytree(ROOT / folder, cwd / folder)
    for recipe in (cwd / "recipes").glob("*.toml"):
        _small_recipe(f"recipes/{recipe.name}", cwd)
    results, seen, ran, skipped_outs = [], {}, [], set()
    everything = os.environ.get("XCIT_DOCS_ALL") == "1"
    old = os.getcwd()
    os.chdir(cwd)
    t0 = time.perf_counter()
    try:
        for c in ALL:
            if not c.xcit or c.needs:
                if c.needs:  # a device's command reads what the host made: it is there by now
                    for name in (a for a in c.args if a.endswith(".tar.gz")):
                        results.append((c, "file", any(cwd.rglob(Path(name).name))))
                continue
            key = _key(c)
            if key in seen:
                continue
            reads, writes = _paths(c)
            if not everything and (any(marker in c.text for marker in ALL_ONLY)
                                   or any(r.startswith(o) for r in reads for o in skipped_outs)):
                skipped_outs.update(writes)  # a command reading what a skipped one makes waits for XCIT_DOCS_ALL
                continue
            args = _with_small_inputs(c)
            out = _out_of(args)
            twin = next((k for k in seen if _without_out(k) == _without_out(key) and _out_of(list(k)) != out), None)
            if twin is not None and out and seen[twin] and Path(seen[twin]).exists() and not Path(out).exists():
                shutil.copytree(seen[twin], out)  # the same run elsewhere: its artifacts are reused by key
            started = time.perf_counter()
            res = CliRunner().invoke(main, args)
            ran.append((c.where(), round(time.perf_counter() - started, 1)))
            seen[key] = out or (f"out/{args[args.index('--model') + 1]}" if "--model" in args else
                                f"out/{args[args.index('-m') + 1]}" if "-m" in args else None)
            ok = res.exit_code == 0 or (res.exit_code == 1 and c.may_exit_1)
            if not ok and res.exit_code == 1 and "--recipe" in args and out and (Path(out) / "report.json").exists():
                ok = _threshold_misses_only(Path(out))
            if not ok and res.exit_code == 1 and parse(args)[-1][0].name == "gate":
                ok = _gate_metric_misses_only(res.output)
            results.append((c, "run", ok, res.exit_code, res.output[-3000:], repr(res.exception)))
    finally:
        os.chdir(old)
    return results, ran, time.perf_counter() - t0


def test_docs_commands_run_as_written(docs_run):
    results, ran, seconds = docs_run
    failed = [f"{c.where()}: exit {r[1]}\n{r[2]}\n{r[3]}" for c, kind, *r in results if kind == "run" and not r[0]]
    assert not failed, "\n\n".join(failed)
    missing = [c.where() for c, kind, *r in results if kind == "file" and not r[0]]
    assert not missing, f"a device command reads a file no command before it made: {missing}"
    assert len(ran) >= (10 if os.environ.get("XCIT_DOCS_ALL") == "1" else 4), ran
    print(f"\n{len(ran)} documented commands in {seconds:.0f} s:", *(f"{s:6.1f} s  {w}" for w, s in ran), sep="\n")
