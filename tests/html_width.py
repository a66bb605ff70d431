"""How wide a report page's tables must be at least, read with html.parser (no browser).

A cell's least width is its longest unbreakable run: the whole text of a cell that does not wrap
(numbers: ``white-space:nowrap``), the longest word of one that wraps (``td.l``, ``td.why`` and
headers), and a target name (``span.nm``) whole wherever it is. A table's least width is the sum
of its columns' plus padding and borders; a page scrolls sideways when that exceeds the body's
width. Characters are counted at :data:`EM` of the font size (DejaVu Sans, the widest common
sans-serif, averages about 0.6 em for lower case and digits), so the estimate errs wide.
Screenshots in headless Chromium are the real check (docs/report-schema.md); this one runs in
every test run.
"""

from __future__ import annotations

from html.parser import HTMLParser

EM = 0.62
# viewport -> (font size of tables in px, horizontal padding of a cell, width the body leaves)
VIEWPORTS = {1280: (12.5, 12 + 1, 1180 - 40), 800: (11.5, 8 + 1, 800 - 16)}


class Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[dict]]] = []
        self._cell: dict | None = None
        self._nm = 0
        self._stack: list[list[list[dict]]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._stack.append([])
        elif tag == "tr" and self._stack:
            self._stack[-1].append([])
        elif tag in ("td", "th") and self._stack:
            classes = (a.get("class") or "").split()
            wraps = tag == "th" or bool({"l", "why", "cell"} & set(classes))  # td.cell: matrix.html's grid
            self._cell = {"wraps": wraps, "runs": [], "text": "", "colspan": int(a.get("colspan", 1))}
            self._stack[-1][-1].append(self._cell)
        elif tag == "span" and "nm" in (a.get("class") or "").split():
            self._nm += 1
            if self._cell is not None:
                self._cell["runs"].append("")
        elif tag == "br" and self._cell is not None:
            self._cell["text"] += " "

    def handle_endtag(self, tag):
        if tag == "table" and self._stack:
            self.tables.append(self._stack.pop())
        elif tag in ("td", "th"):
            self._cell = None
        elif tag == "span" and self._nm:
            self._nm -= 1

    def handle_data(self, data):
        if self._cell is None:
            return
        self._cell["text"] += data
        if self._nm and self._cell["runs"]:
            self._cell["runs"][-1] += data


def cell_chars(cell: dict) -> int:
    """The cell's longest unbreakable run, in characters."""
    runs = [len(r) for r in cell["runs"]]
    if cell["wraps"]:
        runs += [len(w) for w in cell["text"].split()]
    else:
        runs.append(len(cell["text"].strip()))
    return max(runs or [0])


def least_widths(page: str, viewport: int) -> list[tuple[float, list[str]]]:
    """Each table's least width in px at ``viewport`` and its first row's text."""
    font, pad, _ = VIEWPORTS[viewport]
    parser = Tables()
    parser.feed(page)
    out = []
    for rows in parser.tables:
        cols: dict[int, float] = {}
        for row in rows:
            for i, cell in enumerate(row):
                if cell["colspan"] == 1:
                    cols[i] = max(cols.get(i, 0.0), cell_chars(cell) * EM * font + pad)
        out.append((sum(cols.values()) + 1, [c["text"].strip() for c in rows[0]] if rows else []))
    return out


def too_wide(page: str, viewport: int) -> list[str]:
    """Tables that would make the page scroll sideways at ``viewport`` (none on a good page)."""
    limit = VIEWPORTS[viewport][2]
    return [f"{width:.0f} px > {limit} px: {head}" for width, head in least_widths(page, viewport) if width > limit]
