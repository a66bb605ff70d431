"""Ranges in pyproject.toml, exact versions in constraints.txt (what make setup installs), nothing unused."""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib  # novermin: the tests run on 3.11
except ImportError:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Distribution -> the module it is imported as (where the names differ).
MODULE = {"pillow": "PIL", "huggingface_hub": "huggingface_hub", "tomli": "tomli"}
# Needed but not imported by this package: torch.onnx's dynamo exporter imports onnxscript.
NOT_IMPORTED = {"onnxscript"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("-", "_")


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("-", "_")] = version
    return pins


def test_dependencies_are_ranges_and_constraints_pin_them():
    pins = _constraints()
    requirements = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values() for r in extra
                                              if not r.startswith("xcit-export")]
    for requirement in requirements:
        assert "==" not in requirement, f"{requirement}: an exact pin belongs in constraints.txt"
        name = _name(requirement)
        if "python_version<'3.11'" not in requirement:  # tomli: not installed on the 3.11 CI uses
            assert pins.get(name), f"{name} has no exact version in constraints.txt"
    torch = next(r for r in PROJECT["dependencies"] if _name(r) == "torch")
    assert torch.startswith("torch>=") and pins["torch"].startswith("2.")


def test_make_setup_installs_through_the_constraints():
    setup = (ROOT / "Makefile").read_text().split("\nsetup:", 1)[1].split("\n\n", 1)[0]
    installs = [line for line in setup.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs


def test_every_core_dependency_is_imported():
    sources = "\n".join(p.read_text() for p in (ROOT / "xcit_export").rglob("*.py"))
    for requirement in PROJECT["dependencies"]:
        name = _name(requirement)
        if name in NOT_IMPORTED:
            continue
        module = MODULE.get(name, name)
        assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), f"nothing imports {name}: drop it"
