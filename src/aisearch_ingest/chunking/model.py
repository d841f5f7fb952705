"""The block model every parser produces and the packer consumes: :class:`Atom`, :class:`Group`, :class:`Chunk`.

Every parser (markdown, HTML, LaTeX, plain text) turns its input into a flat list of :class:`Atom` -- a piece of text
that is never cut if it fits the budget (a paragraph, a table, a table row, a code fence, a formula, a list item, a
heading) -- with the separator that follows it, the heading path it sits under (kept by :class:`HeadingState`, from
page to page) and its page. :mod:`.count` fills in the atoms' token counts, :mod:`.split` cuts the atoms that do not
fit the budget alone, and :mod:`.pack` fills :class:`Chunk` objects with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "KIND_OF", "Atom", "Chunk", "Group", "HeadingState", "line_atoms"]

#: The chunk kinds (the dominant kind of the atoms in a chunk, by tokens).
KINDS = ("text", "table", "code", "formula")

#: Atom kinds -> chunk kinds.
KIND_OF = {"text": "text", "heading": "text", "list": "text", "table": "table", "code": "code", "formula": "formula"}


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document: what gets embedded, with its context.

    Attributes:
        text: the text to embed. With ``include_headings=True`` it is prefixed with the breadcrumb and a blank line,
            less what the text already starts with: a chunk opening with its section's heading line gets only the
            ancestors (no prefix at top level).
        tokens: exact token count of ``text`` (tiktoken, or the chunker's length function).
        headings: the heading path the chunk sits under, outermost first, e.g. ``("Guide", "Install", "Linux")``.
        page_start: first 1-based page the chunk comes from, when the source has pages.
        page_end: last 1-based page the chunk comes from, when the source has pages.
        kind: ``text``, ``table``, ``code`` or ``formula`` -- the kind holding most of the chunk's tokens.
        index: 0-based position of the chunk in its document.
        count: number of chunks of the document.

    Example:
        >>> c = Chunk("x", 1, ("A", "B"), None, None, "text", 0, 1)
        >>> c.breadcrumb
        'A > B'
    """

    text: str
    tokens: int
    headings: tuple[str, ...]
    page_start: int | None
    page_end: int | None
    kind: str
    index: int
    count: int

    @property
    def breadcrumb(self) -> str:
        """The heading path joined with ``" > "`` (empty when the chunk sits under no heading)."""
        return " > ".join(self.headings)


class Group:
    """Atoms that belong together when a block is split: a table's rows or a code fence's lines.

    Attributes:
        head: atoms repeated at the top of every continuation chunk (table header and delimiter row; fence opener).
        tail: text appended when a chunk ends inside the group (the closing fence), or None.
        tail_tokens: token count of ``tail``.
    """

    __slots__ = ("head", "tail", "tail_tokens")

    def __init__(self, head: list[Atom], tail: str | None = None, tail_tokens: int = 0) -> None:
        self.head = head
        self.tail = tail
        self.tail_tokens = tail_tokens


class Atom:
    """A piece of text the packer never cuts.

    Invariants: ``text`` has no leading blank line and no trailing whitespace; ``sep`` is the whitespace that follows it
    when another atom follows in the same chunk (ends with a newline, or the join is marked unsafe); ``n`` is the
    exact token count of ``text + sep``.
    """

    # The fields every atom sets are slots; the rarely set ones are class-level defaults that an instance shadows
    # (in its ``__dict__``, created only then), so building the tens of thousands of atoms of a document stays cheap.
    __slots__ = ("__dict__", "kind", "level", "n", "nf", "page", "path", "sep", "text")

    safe: bool = True  # counts add up across the join after this atom
    group: Group | None = None
    last_in_group: bool = False
    parts: list[str] | None = None  # pre-cut sub-blocks (HTML table rows), joined by newlines in text
    head_parts: int = 0  # how many leading parts form a repeatable header
    head_len: int = 0  # length of a heading merged in front of this block (split off again if too big)
    pieces: list[Atom] | None = None  # line atoms, when the block was counted line by line
    titled: bool = False  # a heading whose title is the last entry of path (an empty title adds none)
    # For a block that may need splitting and whose both ends are additive joins: the encode of the text it was cut
    # from (see ``TokenCounter.token_ends``) and where the block starts in it, so the sub-blocks it is split into
    # are counted without encoding again (see ``count.count_tiles``).
    span: tuple[tuple[Any, Any], int] | None = None

    def __init__(
        self,
        text: str,
        sep: str,
        kind: str,
        path: tuple[str, ...],
        page: int | None = None,
        level: int = 0,
    ) -> None:
        self.text = text
        self.sep = sep
        self.kind = kind
        self.path = path
        self.page = page
        self.level = level  # heading level for heading atoms, else 0
        self.n = -1  # tokens of text + sep
        self.nf = -1  # tokens of text alone (computed lazily)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Atom({self.kind}, {self.text[:40]!r}, n={self.n})"


class HeadingState:
    """The heading stack, carried from page to page."""

    __slots__ = ("levels", "path", "titles")

    def __init__(self) -> None:
        self.levels: list[int] = []
        self.titles: list[str] = []
        self.path: tuple[str, ...] = ()

    def push(self, level: int, title: str) -> tuple[str, ...]:
        """Enter a heading of ``level`` (1 = outermost) and return the new path."""
        levels = self.levels
        titles = self.titles
        while levels and levels[-1] >= level:
            levels.pop()
            titles.pop()
        if title:
            levels.append(level)
            titles.append(title)
        self.path = tuple(titles)
        return self.path


def line_atoms(a: Atom, text: str, sep: str, kind: str) -> list[Atom]:
    """Atoms of the non-blank lines of ``text``; trailing spaces and blank lines go into the separators.

    Concatenating ``text + sep`` of the result gives back ``text + sep`` exactly, and every separator but the last
    ends with a newline, so the line counts add up to the block's count.
    """
    if a.pieces is not None and text is a.text and sep is a.sep:
        return a.pieces
    out: list[Atom] = []
    pending = ""
    path = a.path
    page = a.page
    for line in text.split("\n"):
        if out:
            pending += "\n"
        if not line or line.isspace():
            pending += line
            continue
        stripped = line.rstrip()
        if out:
            out[-1].sep = pending
        out.append(Atom(stripped, "", kind, path, page))
        pending = line[len(stripped) :]
    if out:
        out[-1].sep = pending + sep
        if text is a.text and sep is a.sep:
            a.pieces = out
    return out
