"""Write docs/reference.md: every CLI option of every command and every recipe key, from the code.

    .venv/bin/python tools/cli_reference.py          # rewrite docs/reference.md
    .venv/bin/python tools/cli_reference.py --check  # exit 1 when the committed page differs

The options come from the click commands themselves (``xcit_export.cli.main`` and its
sub-commands: names, types, defaults, help), the recipe keys from ``xcit_export.recipe``'s
schema (``_SCHEMA``, ``THRESHOLD_KEYS``, ``BUDGET_KEYS``, ``_TARGET_KEYS``). A recipe key is
described by the CLI option of the same name when there is one; :data:`RECIPE_ONLY` describes the
others, and a key in neither stops this script, so a new key cannot go undocumented.
``tests/test_docs.py`` fails when the committed page is not what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference.md"

# Recipe keys with no CLI option of the same name: what they mean.
RECIPE_ONLY = {
    ("model", "name"): "zoo name (`list-models`), or a list of names: a matrix of models (`--executor`)",
    ("export", "dynamic_size"): "`true`: as `--dynamic-size`",
    ("export", "eval_sizes"): "as `--eval-sizes`: a list (`[224, \"512x768\"]`) or a comma-separated string",
    ("latency", "batch_sweep"): "list of batch sizes to time a dynamic-batch artifact at, besides the latency batch",
    ("latency", "scenarios"): "as `--scenario`: a list (`[\"single-stream\", \"offline\"]`) or `\"all\"` (docs/latency.md)",
    ("data", "eval"): "as `--eval`",
    ("auto", "max_top1_drop"): "as `--max-top1-drop` (needs `[targets] auto = true`)",
    ("auto", "min_top1_agreement"): "as `--min-top1-agreement`",
    ("auto", "min_cosine_mean"): "as `--min-cosine-mean`",
    ("auto", "require_winner"): "as `--require-winner`: the run and `gate --recipe` fail when another candidate wins",
}
TARGET_KEYS = {
    "options": "the target's own options (`list-targets --options`), e.g. `{ device = \"CPU\", hint = \"latency\" }`",
    "thresholds": "accuracy thresholds against PyTorch (table below); a target that misses one fails the run",
    "latency_budget": "latency limits in milliseconds (table below); skipped, never passed, where the target is not timed",
    "device": "device kind(s) the target must run on (`\"jetson-orin\"` or a list): makes the recipe a matrix",
}


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _names(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return f"`{param.human_readable_name}`"
    names = list(param.opts) + list(param.secondary_opts)
    return ", ".join(f"`{n}`" for n in names)


def _value(param: click.Parameter) -> str:
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    t = param.type
    if isinstance(t, click.Choice):
        return " \\| ".join(f"`{c}`" for c in t.choices)
    if isinstance(param, click.Option) and param.metavar:
        return f"`{param.metavar}`"
    name = {"integer": "N", "float": "X", "path": "PATH", "text": "TEXT"}.get(t.name, t.name.upper())
    if isinstance(t, click.IntRange):
        name = f"N >= {t.min}" if t.min is not None else "N"
    return name + (" (repeatable)" if getattr(param, "multiple", False) else "")


def _unset(value) -> bool:
    """No default given (None, an empty tuple, or click 8.3's UNSET sentinel)."""
    return value is None or value == () or type(value).__name__ == "Sentinel"


def _default(param: click.Parameter) -> str:
    if isinstance(param, click.Argument) or _unset(param.default) or \
            (isinstance(param, click.Option) and param.is_flag and param.default is False and not param.secondary_opts):
        return ""
    if isinstance(param, click.Option) and param.secondary_opts:
        return f"`{param.opts[0] if param.default else param.secondary_opts[0]}`"
    return f"`{param.default}`"


def _command_rows(cmd: click.Command) -> list[str]:
    rows = ["| option | value | default | meaning |", "|---|---|---|---|"]
    for p in cmd.params:
        if isinstance(p, click.Option) and p.hidden:
            continue
        meaning = getattr(p, "help", None) or ("argument" if isinstance(p, click.Argument) else "")
        rows.append(f"| {_names(p)} | {_value(p)} | {_default(p)} | {_cell(meaning)} |")
    return rows


def _walk(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    out = []
    for name in sorted(group.commands):
        cmd = group.commands[name]
        path = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            out += _walk(cmd, path)
        else:
            out.append((path, cmd))
    return out


def cli_options() -> dict[str, click.Option]:
    """The main command's options by parameter name (``eval_source`` is ``--eval``)."""
    from xcit_export.cli import main

    return {p.name: p for p in main.params if isinstance(p, click.Option)}


def _recipe_meaning(section: str, key: str, options: dict[str, click.Option]) -> str:
    if (section, key) in RECIPE_ONLY:
        return RECIPE_ONLY[(section, key)]
    by_flag = {o.opts[0]: o for o in options.values()}
    option = by_flag.get("--" + key.replace("_", "-"))
    if option is None:
        raise SystemExit(f"recipe key [{section}] {key} has no CLI option of the same name and no entry in "
                         f"tools/cli_reference.py's RECIPE_ONLY: say what it means there")
    return f"as `{option.opts[0]}`: {option.help or ''}"


def render() -> str:
    from xcit_export import recipe
    from xcit_export.cli import main

    lines = ["# Reference: every CLI option and recipe key", "",
             "<!-- Generated by tools/cli_reference.py from the click commands and xcit_export/recipe.py; "
             "do not edit by hand (tests/test_docs.py compares). -->", "",
             "Generated from the code: `.venv/bin/python tools/cli_reference.py` rewrites this page, and the test "
             "suite fails when it is out of date. How the options combine, with examples: [cli.md](cli.md); "
             "recipes: [recipes.md](recipes.md).", "",
             "## `xcit-export`", "", _cell(main.help or "").split(" Example:")[0], ""]
    lines += _command_rows(main)
    for path, cmd in _walk(main, "xcit-export"):
        lines += ["", f"## `{path}`", "", _cell((cmd.help or "").strip().splitlines()[0]), ""]
        lines += _command_rows(cmd)
    options = cli_options()
    lines += ["", "## Recipe keys", "",
              "A recipe is a TOML file (`recipes/*.toml`); every table is optional except `[model]` and "
              "`[targets.<name>]` (or `[targets] auto = true`). Unknown keys are refused, naming the file and "
              "the key. Relative paths resolve against the recipe's folder.", "",
              "| table | key | type | meaning |", "|---|---|---|---|"]
    for section, schema in recipe._SCHEMA.items():
        for key, types in schema.items():
            kinds = " or ".join({"str": "string", "int": "integer", "float": "number", "list": "list",
                                 "bool": "boolean"}[t.__name__] for t in types)
            lines.append(f"| `[{section}]` | `{key}` | {kinds} | {_cell(_recipe_meaning(section, key, options))} |")
    lines.append("| `[targets]` | `auto` | boolean | `true`: a `--target auto` run; `[targets.<name>]` tables may "
                 "still give options and thresholds |")
    missing = set(recipe._TARGET_KEYS) ^ set(TARGET_KEYS)
    if missing:
        raise SystemExit(f"[targets.<name>] keys changed ({', '.join(sorted(missing))}): update TARGET_KEYS in "
                         f"tools/cli_reference.py")
    for key in recipe._TARGET_KEYS:
        lines.append(f"| `[targets.<name>]` | `{key}` | | {_cell(TARGET_KEYS[key])} |")
    lines += ["", "Thresholds (`[targets.<name>] thresholds = { ... }`), fractions where they are shares:", "",
              "| key | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in recipe.THRESHOLD_KEYS.items()]
    lines += ["", "Latency budgets (`[targets.<name>] latency_budget = { ... }`), milliseconds: "
              + ", ".join(f"`{k}`" for k in recipe.BUDGET_KEYS) + ".", ""]
    return "\n".join(lines)


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run .venv/bin/python tools/cli_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
