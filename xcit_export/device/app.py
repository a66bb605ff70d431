"""``device_check.pyz``: the device half of xcit-export in one file, written into every bundle.

On the device (a Jetson, an RTX PC), with only numpy, TensorRT's Python bindings and cuda-python::

    tar xzf M-tensorrt-int8.tar.gz && cd M-tensorrt-int8
    python3 device_check.pyz .

The archive is a standard-library zipapp (PEP 441) built by :func:`build_pyz` at bundle time from
this package's own device-side modules (:data:`DEVICE_MODULES`), so it is the same code that
``xcit-export device-check`` runs, not a copy kept by hand. Those modules stay Python 3.8
compatible and import neither torch, onnx nor click (tests/test_device_app.py checks both).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

PYZ_NAME = "device_check.pyz"
MIN_PYTHON = (3, 8)

# Package-relative paths of everything device-check imports (and nothing that needs torch/onnx/click).
DEVICE_MODULES = (
    "__init__.py", "errors.py", "io.py", "fingerprint.py",
    "evaluate/__init__.py", "evaluate/validate.py", "evaluate/profiling.py",
    "device/__init__.py", "device/bundle.py", "device/app.py",
    "targets/__init__.py", "targets/base.py", "targets/onnxruntime.py",
    "quantize/__init__.py", "quantize/ort_int8.py",
    "targets/tensorrt/__init__.py", "targets/tensorrt/device.py", "targets/tensorrt/engine.py",
    "targets/tensorrt/options.py", "targets/tensorrt/precision_onnx.py", "targets/tensorrt/runner.py",
    "targets/tensorrt/layer_profile.py",
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 device_check.pyz",
        description="Verify an xcit-export bundle against its manifest, build its TensorRT engine on this device, "
                    "check the golden outputs against thresholds.json and time it. Exit 0 only if every check passed.")
    p.add_argument("bundle", nargs="?", default=".", help="bundle folder or its .tar.gz (default: .)")
    p.add_argument("--work", help="folder for the engine and the report (default: BUNDLE/device-check)")
    p.add_argument("--report", help="report file (default: <work>/report.json)")
    p.add_argument("--require-engine", action="store_true", help="fail unless a TensorRT engine is built and run")
    p.add_argument("--threads", type=int, help="CPU threads for the onnxruntime stand-in")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up inferences (default 10)")
    p.add_argument("--iterations", type=int, default=50, help="timed inferences (default 50)")
    p.add_argument("--cuda-graph", action="store_true", help="replay inference as a CUDA graph")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the per-layer-type breakdown from TensorRT's layer profiler (run by default)")
    return p


def main(argv: list | None = None) -> int:
    """``python3 device_check.pyz [BUNDLE]``: 0 when every check passed, 1 otherwise."""
    from .bundle import device_check, summary_lines
    from ..errors import XcitExportError

    args = _parser().parse_args(argv)
    bundle = Path(args.bundle)
    if not bundle.exists():
        print(f"error: bundle '{bundle}' does not exist; give the bundle folder (or run from inside it: "
              f"python3 {PYZ_NAME} .)", file=sys.stderr)
        return 1
    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    try:
        report = device_check(bundle, work_dir=Path(args.work) if args.work else None,
                              report_path=Path(args.report) if args.report else None,
                              require_engine=args.require_engine, threads=args.threads, warmup=args.warmup,
                              iterations=args.iterations, cuda_graph=args.cuda_graph, profile=args.profile,
                              progress=say)
    except XcitExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in summary_lines(report):
        print(line)
    return 0 if report["passed"] else 1


__all__ = ["DEVICE_MODULES", "PYZ_NAME", "build_pyz", "main"]
