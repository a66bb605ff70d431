"""Artifacts on disk: keyed by what made them, reused only when the key matches and every file is intact.

Every artifact folder (``onnx/``, ``<target>/``) holds ``artifact.json`` with its build key and the
sha256 of each file it consists of. A rerun reuses the folder when the key it would build with is
the recorded one and every file is there, non-empty and unchanged; anything else is rebuilt,
saying why (a torn write after a power loss, an edit), never reported as an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import XcitExportError
from ..io import sha256_file
from ..targets.base import ARTIFACT_META, Artifact

Progress = Callable[[str], None]


def file_hashes(files: list[Path]) -> dict[str, str]:
    """sha256 of each file of an artifact, recorded in its metadata so a reuse can prove it intact."""
    return {f.name: sha256_file(f) for f in files}


def intact(artifact: Artifact) -> str | None:
    """Why ``artifact``'s files cannot be reused (None: they can): one is missing or empty, differs
    from the hash recorded when it was built (a torn write after a power loss, an edit), or, for
    artifacts built before hashes were recorded, an ONNX file does not parse."""
    recorded = artifact.metadata.get("file_sha256") or {}
    for f in artifact.files:
        if not f.is_file():
            return f"{f.name} is missing"
        if f.stat().st_size == 0:
            return f"{f.name} is empty"
        if f.name in recorded:
            if sha256_file(f) != recorded[f.name]:
                return f"{f.name} does not match the hash recorded when it was built"
        elif f.suffix == ".onnx":
            import onnx

            try:
                onnx.load(str(f), load_external_data=False)
            except Exception as exc:  # noqa: BLE001 - any parse failure means: rebuild
                return f"{f.name} does not load ({type(exc).__name__})"
    return None


def reusable(folder: Path, key: str, progress: Progress = lambda msg: None) -> Artifact | None:
    """The artifact in ``folder`` if it was built with ``key`` and its files are intact, else None
    (a broken one is rebuilt, saying why, never reported as an error)."""
    meta = folder / ARTIFACT_META
    if not meta.exists():
        return None
    try:
        artifact = Artifact.from_dir(folder)
    except (XcitExportError, ValueError, KeyError, TypeError, OSError):
        progress(f"{folder.name}: rebuilding: its {ARTIFACT_META} does not load")
        return None
    if artifact.metadata.get("build_key") != key:
        return None
    problem = intact(artifact)
    if problem:
        progress(f"{folder.name}: rebuilding: {problem}")
        return None
    return artifact
