"""Plain text (and JSON) -> atoms: paragraphs separated by blank lines."""

from __future__ import annotations

import re

from .model import Atom

__all__ = ["plain_atoms"]

_PARAGRAPH = re.compile(r"\S[^\n]*(?:\n[ \t]*\S[^\n]*)*")


def plain_atoms(text: str, path: tuple[str, ...] = (), page: int | None = None, kind: str = "text") -> list[Atom]:
    """Cut plain text into paragraph atoms (slices of ``text``; lines with text, up to a blank line).

    Args:
        text: the text.
        path: heading path to stamp on every atom (plain text has no headings of its own).
        page: page number to stamp on every atom.
        kind: atom kind.

    Returns:
        The atoms; the last one has an empty separator.
    """
    atoms: list[Atom] = []
    prev: Atom | None = None
    prev_end = 0
    for m in _PARAGRAPH.finditer(text):
        start = text.rfind("\n", 0, m.start()) + 1  # keep the first line's indentation
        end = m.end()
        body = text[start:end].rstrip()
        if prev is not None:
            prev.sep = text[prev_end:start]
        atom = Atom(body, "", kind, path, page)
        atoms.append(atom)
        prev = atom
        prev_end = start + len(body)
    return atoms
