"""Shared fixtures: small inputs and the nano model for most tests (see DEVELOPERS.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# The helpers (trt_models, ray_cluster, html_width) live in tests/: importable from every test folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Keep every test on the same thread budget as CI (2 cores) and deterministic.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's ~/.cache; the demo data cache is shared per session."""
    cache = tmp_path_factory.getbasetemp() / "xcit-export-cache"
    monkeypatch.setenv("XCIT_EXPORT_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def ray_executor(tmp_path_factory):
    """ONE local Ray cluster for the whole session (2 CPUs, no dashboard), shut down at the end."""
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]'); Ray executor tests skipped")
    from xcit_export.scale.executor import RayExecutor

    # Workers inherit the environment at start: give them the session's demo-data cache.
    os.environ["XCIT_EXPORT_CACHE"] = str(tmp_path_factory.getbasetemp() / "xcit-export-cache")
    executor = RayExecutor(num_cpus=2)
    yield executor
    executor.close()
