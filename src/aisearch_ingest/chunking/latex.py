r"""LaTeX (Qwen-OCR ``document_parsing`` output) -> atoms.

Sectioning commands (``\title``, ``\part``, ``\chapter``, ``\section`` ... ``\paragraph``) drive the breadcrumb;
``tabular``-like environments are tables (rows end with ``\\``); ``equation``/``align``/``$$``/``\[ \]``
and friends are formulas; ``verbatim``/``lstlisting``/``minted`` are code; ``itemize``/``enumerate`` items are list
atoms; the rest is cut into paragraphs at blank lines. A `````latex`` fence around the whole answer (as the model
returns it) is dropped. Atoms are slices of the source, as in markdown.
"""

from __future__ import annotations

import re
from itertools import accumulate

from .model import Atom, HeadingState

__all__ = ["latex_atoms"]

_SECTION = re.compile(
    r"\s*\\(title|part|chapter|section|subsection|subsubsection|paragraph|subparagraph)\*?\s*(?:\[[^\]]*\])?\s*\{(.*)\}"
)
_LEVELS = {
    "title": 1,
    "part": 1,
    "chapter": 2,
    "section": 3,
    "subsection": 4,
    "subsubsection": 5,
    "paragraph": 6,
    "subparagraph": 7,
}
_BEGIN = re.compile(r"\s*\\begin\{([A-Za-z]+\*?)\}")
_TABLES = frozenset({"tabular", "tabular*", "tabularx", "longtable", "table", "table*", "tabu", "array"})
_MATH = frozenset(
    {
        "equation", "equation*", "align", "align*", "gather", "gather*", "multline", "multline*", "eqnarray",
        "eqnarray*", "displaymath", "math", "flalign", "flalign*", "alignat", "alignat*",
    }
)  # fmt: skip
_CODE = frozenset({"verbatim", "verbatim*", "lstlisting", "minted", "Verbatim", "alltt"})
_LISTS = frozenset({"itemize", "enumerate", "description"})
_ITEM = re.compile(r"\s*\\item\b")
_CMD = re.compile(r"\\[A-Za-z]+\*?(?:\[[^\]]*\])?")


def _clean_title(title: str) -> str:
    depth = 0
    out = []
    for ch in title:
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                break
            depth -= 1
        out.append(ch)
    text = _CMD.sub("", "".join(out)).replace("{", "").replace("}", "")
    return " ".join(text.split())


def _env_end(lines: list[str], i: int, n: int, name: str) -> int:
    end = "\\end{" + name + "}"
    depth = 0
    begin = "\\begin{" + name + "}"
    for j in range(i, n):
        depth += lines[j].count(begin)
        depth -= lines[j].count(end)
        if depth <= 0:
            return j + 1
    return n


def _scan(lines: list[str]) -> list[tuple[str, int, int, int, str]]:
    n = len(lines)
    blocks: list[tuple[str, int, int, int, str]] = []
    i = 0
    while i < n:
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        s = line.lstrip()
        if s.startswith("\\"):
            m = _SECTION.match(line)
            if m is not None:
                blocks.append(("heading", i, i + 1, _LEVELS[m.group(1)], _clean_title(m.group(2))))
                i += 1
                continue
            b = _BEGIN.match(line)
            if b is not None:
                env = b.group(1)
                if env in _LISTS:
                    end = _env_end(lines, i, n, env)
                    _items(lines, i, end, blocks)
                    i = end
                    continue
                kind = "table" if env in _TABLES else "formula" if env in _MATH else "code" if env in _CODE else None
                if kind is not None:
                    end = _env_end(lines, i, n, env)
                    blocks.append((kind, i, end, 0, ""))
                    i = end
                    continue
            if s.startswith("\\["):
                j = i
                while j < n and "\\]" not in lines[j]:
                    j += 1
                blocks.append(("formula", i, min(j + 1, n), 0, ""))
                i = min(j + 1, n)
                continue
        if s.startswith("$$"):
            j = i if (len(s.rstrip()) > 2 and s.rstrip().endswith("$$")) else i + 1
            while j < n and not lines[j].rstrip().endswith("$$"):
                j += 1
            blocks.append(("formula", i, min(j + 1, n), 0, ""))
            i = min(j + 1, n)
            continue
        j = i + 1
        while j < n and lines[j].strip():
            t = lines[j].lstrip()
            if t.startswith(("\\begin{", "$$", "\\[")) or (t.startswith("\\") and _SECTION.match(lines[j])):
                break
            j += 1
        blocks.append(("text", i, j, 0, ""))
        i = j
    return blocks


def _items(lines: list[str], i: int, end: int, blocks: list[tuple[str, int, int, int, str]]) -> None:
    """One atom for the ``\\begin`` line with the first item, then one per ``\\item``."""
    starts = [k for k in range(i + 1, end) if _ITEM.match(lines[k])]
    if not starts:
        blocks.append(("list", i, end, 0, ""))
        return
    bounds = [i, *starts[1:], end]
    for k in range(len(bounds) - 1):
        s, e = bounds[k], bounds[k + 1]
        while e - 1 > s and not lines[e - 1].strip():
            e -= 1
        blocks.append(("list", s, e, 0, ""))


def latex_atoms(text: str, state: HeadingState | None = None, page: int | None = None) -> list[Atom]:
    """Cut LaTeX into atoms (slices of ``text``), tracking the heading path in ``state``.

    Args:
        text: the LaTeX (optionally wrapped in a `````latex`` fence).
        state: heading stack to continue from; updated in place.
        page: page number stamped on every atom.

    Returns:
        The atoms; the last one has an empty separator.
    """
    if state is None:
        state = HeadingState()
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and "\n" in stripped:
        first_nl = text.index("\n", text.index("```"))
        last = text.rstrip().rfind("```")
        text = text[first_nl + 1 : last]
    lines = text.split("\n")
    blocks = _scan(lines)
    offs = [0, *accumulate(len(x) + 1 for x in lines)]
    atoms: list[Atom] = []
    path = state.path
    prev: Atom | None = None
    prev_end = 0
    for kind, s, e, level, title in blocks:
        while s < e and not lines[s].strip():
            s += 1
        if s >= e:
            continue
        start = offs[s]
        end = offs[e - 1] + len(lines[e - 1].rstrip())
        if prev is not None:
            prev.sep = text[prev_end:start]
        if kind == "heading":
            path = state.push(level, title)
        atom = Atom(text[start:end], "", kind, path, page, level)
        if level and title:
            atom.titled = True
        atoms.append(atom)
        prev = atom
        prev_end = end
    return atoms
