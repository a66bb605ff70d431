"""Honest Python versions, checked statically with vermin (only 3.11 runs here).

The package must run on the Python versions pyproject.toml names (3.10-3.12); the modules packed into
a bundle's device_check.pyz must run on 3.8 (older JetPack Pythons), and must not import torch, onnx
or click at module level.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xcit_export.device.pyz import DEVICE_MODULES

PACKAGE = Path(__file__).resolve().parents[1] / "xcit_export"


def _vermin(target: str, files: list) -> subprocess.CompletedProcess:
    exe = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    if not Path(exe).exists():
        pytest.skip("vermin is not installed (pip install -e '.[test]')")
    return subprocess.run([exe, f"-t={target}-", "--violations", "--no-tips", "--no-make-paths-absolute",
                           *map(str, files)], capture_output=True, text=True, timeout=120)


def test_device_modules_need_at_most_python_3_8():
    proc = _vermin("3.8", [PACKAGE / m for m in DEVICE_MODULES])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_needs_at_most_python_3_10():
    proc = _vermin("3.10", [PACKAGE])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_device_modules_import_no_torch_onnx_or_click_at_module_level():
    heavy = {"torch", "onnx", "click", "onnxruntime", "modelopt", "openvino", "tensorrt", "tensorrt_rtx"}
    for rel in DEVICE_MODULES:
        tree = ast.parse((PACKAGE / rel).read_text())
        top = []
        for node in tree.body:  # module level only: imports inside functions are lazy
            if isinstance(node, ast.Import):
                top += [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top.append(node.module.split(".")[0])
        assert not heavy & set(top), f"{rel} imports {heavy & set(top)} at module level"


def test_requires_python_matches_what_is_checked():
    try:
        import tomllib  # novermin: the test runs on 3.11
    except ImportError:
        import tomli as tomllib
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10,<3.13"
    assert any(d.startswith("tomli") and "python_version<'3.11'" in d for d in project["dependencies"])
