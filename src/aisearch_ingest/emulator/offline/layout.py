"""Page layout from OCR boxes: visual rows, paragraphs of wrapped lines, column bands, grids of cells, table runs.

Pure geometry on :class:`~aisearch_ingest.emulator.offline.ocr.OCRLine` boxes (and, for :func:`cell_grid`, on any
``(x0, x1, text)`` items, as the PDF text layer gives them); no I/O, no heavy imports.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from .ocr import OCRLine, group_rows

__all__ = [
    "KV_RE",
    "Cell",
    "Row",
    "cell_grid",
    "is_tabular",
    "paragraph_text",
    "paragraphs",
    "rows_to_grid",
    "table_run",
    "visual_rows",
]

#: A ``key: value`` / ``key：value`` line (full-width colon too): a form field.
KV_RE = re.compile(r"^\s*(?P<key>[^:：]{1,60}?)\s*[:：]\s*(?P<value>.*)$")


@dataclass
class Row:
    """A visual line: its boxes (left to right) and geometry."""

    items: list[OCRLine]
    x0: float
    x1: float
    y0: float
    y1: float
    height: float

    @property
    def text(self) -> str:
        return " ".join(item.text for item in self.items)

    @property
    def yc(self) -> float:
        return (self.y0 + self.y1) / 2


def visual_rows(lines: Sequence[OCRLine]) -> list[Row]:
    """OCR boxes -> visual rows with their geometry, top to bottom."""
    out = []
    for group in group_rows(lines):
        out.append(
            Row(
                items=group,
                x0=min(item.x0 for item in group),
                x1=max(item.x1 for item in group),
                y0=min(item.y0 for item in group),
                y1=max(item.y1 for item in group),
                height=statistics.median(item.height for item in group),
            )
        )
    return out


def is_tabular(row: Row) -> bool:
    """Several boxes separated by gaps wider than a word space: looks like table cells."""
    if len(row.items) < 2:
        return False
    return any(b.x0 - a.x1 > 1.2 * max(row.height, 1.0) for a, b in pairwise(row.items))


def paragraphs(rows: Sequence[Row]) -> list[list[Row]]:
    """Merge wrapped lines into paragraphs: same block, normal line pitch, previous line filled to the margin."""
    if not rows:
        return []
    pitches = [b.yc - a.yc for a, b in pairwise(rows)]
    pitch = statistics.median(pitches) if pitches else 0.0
    right = max(row.x1 for row in rows)
    left = min(row.x0 for row in rows)
    width = max(right - left, 1.0)
    paras: list[list[Row]] = [[rows[0]]]
    for prev, row in pairwise(rows):
        same = (
            not is_tabular(prev)
            and not is_tabular(row)
            and (row.yc - prev.yc) <= 1.45 * pitch
            and (row.yc - prev.yc) <= 2.2 * max(prev.height, row.height)
            and (prev.x1 - left) >= 0.8 * width
            and (row.x0 - left) <= 2.0 * max(row.height, 1.0)
            and not (_looks_like_field(prev) or _looks_like_field(row))
            and abs(row.height - prev.height) <= 0.3 * max(row.height, prev.height)
            and not re.match(r"^\s*(\d+[.)]|[•\-*·])\s", row.text)
        )
        if same:
            paras[-1].append(row)
        else:
            paras.append([row])
    return paras


def _looks_like_field(row: Row) -> bool:
    """``Key: value`` rows (a short key of at most four words) stand on their own lines."""
    match = KV_RE.match(row.text)
    return match is not None and len(match.group("key").split()) <= 4 and bool(match.group("value"))


def paragraph_text(rows: Sequence[Row]) -> str:
    """The rows' text, one paragraph a line (wrapped lines merged)."""
    return "\n".join(" ".join(row.text for row in para) for para in paragraphs(rows))


def _bands(intervals: Sequence[tuple[float, float]], merge_gap: float) -> list[tuple[float, float]]:
    """Merge x-intervals that overlap or nearly touch into column bands, left to right."""
    bands: list[list[float]] = []
    for x0, x1 in sorted(intervals):
        if bands and x0 - bands[-1][1] <= merge_gap:
            bands[-1][1] = max(bands[-1][1], x1)
        else:
            bands.append([x0, x1])
    return [(a, b) for a, b in bands]


@dataclass
class Cell:
    """One table cell: its text and how many column bands it spans."""

    text: str
    colspan: int = 1


def cell_grid(rows: Sequence[Sequence[tuple[float, float, str]]], unit: float) -> list[list[Cell]]:
    """Rows of ``(x0, x1, text)`` items -> a grid of cells aligned on shared column bands."""
    intervals = [(x0, x1) for row in rows for x0, x1, _ in row]
    bands = _bands(intervals, merge_gap=0.8 * unit)
    grid: list[list[Cell]] = []
    for row in rows:
        texts: list[list[str]] = [[] for _ in bands]
        spans = [1] * len(bands)
        for x0, x1, text in row:
            hit = [i for i, (b0, b1) in enumerate(bands) if x0 < b1 and x1 > b0]
            if not hit:
                centre = (x0 + x1) / 2
                hit = [min(range(len(bands)), key=lambda i: abs((bands[i][0] + bands[i][1]) / 2 - centre))]
            texts[hit[0]].append(text)
            spans[hit[0]] = max(spans[hit[0]], hit[-1] - hit[0] + 1)
        cells: list[Cell] = []
        i = 0
        while i < len(bands):
            cells.append(Cell(" ".join(texts[i]), spans[i]))
            i += spans[i]
        grid.append(cells)
    return grid


def table_run(rows: Sequence[Row]) -> tuple[int, int] | None:
    """The longest run of consecutive tabular rows (at least two), as ``(start, stop)``."""
    best: tuple[int, int] | None = None
    start: int | None = None
    for i, row in enumerate([*rows, None]):
        if row is not None and is_tabular(row):
            if start is None:
                start = i
        elif start is not None:
            if i - start >= 2 and (best is None or i - start > best[1] - best[0]):
                best = (start, i)
            start = None
    return best


def rows_to_grid(rows: Sequence[Row]) -> list[list[Cell]]:
    """Tabular rows -> a grid of cells (:func:`cell_grid` with the rows' median text height as the unit)."""
    unit = statistics.median(row.height for row in rows) if rows else 1.0
    return cell_grid([[(item.x0, item.x1, item.text) for item in row.items] for row in rows], unit)
