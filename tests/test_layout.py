"""The package layout (issues 21 and 28): a folder per stage, no two modules that import each other,
and the stages in an order: no module imports from a later stage (a higher floor). Imports inside
functions count too (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xcit_export"
STAGES = {"models", "data", "quantize", "targets", "evaluate", "report", "device", "scale", "diagnose"}

# The floors, lowest first: a module imports from its own floor and lower ones only. Every top-level
# module and stage folder is on exactly one floor (a new one must be placed here).
FLOORS = [
    {"errors", "version", "values", "io", "fingerprint", "outdir", "verdict"},  # helpers every stage may use (verdict: the one pass/fail function)
    {"models"},  # the zoo, weights, the deployed form
    {"data"},  # image sets
    {"evaluate"},  # comparing outputs, counts, latency, the verdict's rules
    {"quantize"},  # precision conversion, sensitivity
    {"targets"},  # the registry: build, load, profile
    {"diagnose"},  # where the accuracy went: points, marked and cut graphs, remedies, the FP16 pre-flight
    {"options"},  # a run's options, declared once
    {"keys", "plan"},  # what made an artifact; a run checked before any work
    {"export"},  # PyTorch -> checked ONNX
    {"report"},  # report.json/.md/.html
    {"console"},  # what a person sees
    {"device"},  # bundles and device-check
    {"scale.executor", "scale.sharding", "scale"},  # where work runs: executors and their task functions
    {"engine"},  # the one engine: prepare, build, evaluate, measure, record
    {"pipeline", "recipe"},  # a single run; a recipe read into run options
    {"scale.matrix"},  # a recipe's matrix, on the engine
    {"api"},
    {"cli"},
    {"xcit_export"},  # the package's lazy front door
]


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_init else parts)] = (path, is_init)
    return out


def _import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_init) in mods.items():
        base = name.split(".") if is_init else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    prefix = base[: len(base) - (node.level - 1)]
                    target = ".".join(prefix + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    dep = sub if sub in mods else target
                    if dep in mods and dep != name:
                        graph[name].add(dep)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods and a.name != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_stage_is_a_folder_and_the_top_level_holds_entry_points_and_helpers():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert STAGES <= folders
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert not top & {"zoo", "weights", "data", "precision", "sensitivity", "validate", "profiling", "auto",
                      "report", "gate", "bundle", "executor", "matrix", "sharding"}


def _floor(module: str) -> int:
    """The floor of ``module`` (``xcit_export.scale.matrix``): its own entry (``scale.matrix``) if it
    has one, else its top-level module's or stage folder's (``scale``)."""
    parts = module.split(".")[1:] or ["xcit_export"]
    for name in (".".join(parts[:2]), parts[0]):
        for i, names in enumerate(FLOORS):
            if name in names:
                return i
    raise AssertionError(f"{module} is on no floor: add '{parts[0]}' to tests/test_layout.py FLOORS")


def test_every_module_is_on_a_floor():
    for module in _modules():
        _floor(module)
    tops = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | \
           {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    named = {n for n in set().union(*FLOORS) - {"xcit_export"} if "." not in n}
    assert named == tops, f"FLOORS names modules that do not exist: {sorted(named - tops)}"


def test_no_module_imports_from_a_higher_floor():
    upward = sorted(f"{a} -> {b}" for a, deps in _import_graph().items() for b in deps if _floor(b) > _floor(a))
    assert upward == []


def test_every_relative_import_names_a_module_of_the_package():
    """A lazy ``from ..x import y`` inside a function is only run when the function is: one left
    pointing at the wrong level (a module moved into a package) must fail here, not in a user's run."""
    import importlib.util

    wrong = []
    for name, (path, is_init) in _modules().items():
        base = name.split(".") if is_init else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                if importlib.util.find_spec(target) is None:
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {target}")
    assert wrong == []


MAX_FUNCTION_LINES = 80  # issue 28: rooms a maintainer can hold in their head


def test_no_function_is_longer_than_80_lines():
    """No function or method of the package runs over 80 lines (its def line to its last line)."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these into steps of their own: " + "; ".join(long)


TESTS = Path(__file__).resolve().parent


def test_the_tests_mirror_the_package():
    """A stage's tests live in tests/<stage>/ (a subpackage of xcit_export/ of that name); the tests of
    top-level modules and whole-run paths at tests/. Data a test reads sits in a fixtures/ folder."""
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name not in {"__pycache__"}}
    assert folders <= packages, f"tests/ folders with no package of that name: {sorted(folders - packages)}"
    misplaced = [p.name for p in TESTS.glob("test_*.py") if p.stem[len("test_"):] in packages]
    assert not misplaced, f"move these into tests/<stage>/: {misplaced}"
    for folder in folders:
        for sub in (TESTS / folder).iterdir():
            assert sub.suffix == ".py" or sub.name in {"fixtures", "__pycache__"}, f"tests/{folder}/{sub.name}"
