"""``device_check.pyz``: the device half of xcit-export in one file, written into every bundle.

On the device (a Jetson, an RTX PC), with only numpy, TensorRT's Python bindings and cuda-python::

    tar xzf M-tensorrt-int8.tar.gz && cd M-tensorrt-int8
    python3 device_check.pyz .

The archive is a standard-library zipapp (PEP 441) built by :func:`build_pyz` at bundle time from
this package's own device-side modules (:data:`DEVICE_MODULES`), so it is the same code that
``xcit-export device-check`` runs, not a copy kept by hand. Those modules stay Python 3.8
compatible and import neither torch, onnx nor click (tests/test_python_versions.py checks both).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipapp
from pathlib import Path

PYZ_NAME = "device_check.pyz"
MIN_PYTHON = (3, 8)

# Package-relative paths of everything device-check imports (and nothing that needs torch/onnx/click).
DEVICE_MODULES = (
    "__init__.py", "version.py", "errors.py", "io.py", "values.py", "fingerprint.py", "verdict.py",
    "evaluate/__init__.py", "evaluate/validate.py", "evaluate/profiling.py", "evaluate/scenarios.py",
    "device/__init__.py", "device/bundle.py", "device/pyz.py", "device/app.py", "device/energy.py",
    "device/sensors.py",
    "targets/__init__.py", "targets/base.py", "targets/onnxruntime/__init__.py", "targets/onnxruntime/runner.py",
    "targets/onnxruntime/int8.py", "targets/onnxruntime/profile.py", "targets/onnxruntime/pool.py",
    "quantize/__init__.py", "quantize/ort_int8.py",
    "targets/tensorrt/__init__.py", "targets/tensorrt/device.py", "targets/tensorrt/engine.py",
    "targets/tensorrt/options.py", "targets/tensorrt/precision_onnx.py", "targets/tensorrt/runner.py",
    "targets/tensorrt/layer_profile.py", "targets/tensorrt/pool.py",
    "diagnose/__init__.py", "diagnose/compare.py", "diagnose/locate.py",
)

_MAIN = '''\
"""device_check.pyz: verify this bundle, build and run its engine, write device-check/report.json."""
import sys

if sys.version_info < (3, 8):
    sys.exit("error: device_check.pyz needs Python 3.8 or newer; this is Python " + sys.version.split()[0])
try:
    import numpy  # noqa: F401
except ImportError:
    sys.exit("error: device_check.pyz needs numpy: install it (JetPack: sudo apt install python3-numpy; "
             "elsewhere: pip install numpy)")

from xcit_export.device.app import main

sys.exit(main())
'''


def build_pyz(dest: Path) -> Path:
    """Write the zipapp ``dest`` from this package's :data:`DEVICE_MODULES`."""
    root = Path(__file__).resolve().parent.parent  # the package
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="xcit-pyz-") as tmp:
        pkg = Path(tmp) / "xcit_export"
        for rel in DEVICE_MODULES:
            target = pkg / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, target)
        (Path(tmp) / "__main__.py").write_text(_MAIN, encoding="utf-8")
        zipapp.create_archive(tmp, dest, interpreter="/usr/bin/env python3", compressed=True)
    # zipapp adds only the owner's execute bit (0744); an executable gets what ``chmod +x`` of a new
    # file would give under the umask (0755 under 0022, 0700 under 0077), so another account runs it.
    from ..io import dir_mode

    os.chmod(dest, dir_mode())
    return dest


__all__ = ["DEVICE_MODULES", "MIN_PYTHON", "PYZ_NAME", "build_pyz"]
