"""README.md stays a page for users: short, and every docs/ page reachable from it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _links(page: Path) -> set[Path]:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    return {(page.parent / t).resolve() for t in targets if not t.startswith(("http:", "https:"))}


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) < 200


def test_every_docs_page_is_reachable_from_the_readme():
    seen, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        for target in _links(page) - seen:
            seen.add(target)
            if target.suffix == ".md" and target.exists():
                todo.append(target)
    pages = {p.resolve() for p in (ROOT / "docs").glob("*.md")}
    assert not pages - seen, f"not linked from README.md (or a page it links): {sorted(p.name for p in pages - seen)}"


def test_the_readme_gives_the_test_command_ci_runs():
    command = ".venv/bin/python -m pytest -q"
    assert command in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
