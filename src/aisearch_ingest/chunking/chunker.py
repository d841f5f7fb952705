"""The :class:`StructuredChunker` front: picks the parser from the content type and packs its atoms."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .count import count_at
from .markdown import markdown_atoms, markdown_atoms_at
from .model import Atom, Chunk, HeadingState
from .pack import pack
from .text import plain_atoms
from .tokens import TokenCounter

if TYPE_CHECKING:  # pragma: no cover
    from ..results import ParseResult

__all__ = ["CONTENT_TYPES", "StructuredChunker"]

#: Content types the chunker understands (``text`` is an alias of ``plain``; ``md`` of ``markdown``).
CONTENT_TYPES = ("markdown", "html", "latex", "plain", "text", "json")

# Characters Python's str.isspace() calls whitespace but tiktoken's regex (Unicode White_Space) does not: a document
# containing them is counted without the additivity shortcut.
_ODD_SPACE = "\x1c\x1d\x1e\x1f"


def _odd(text: str) -> bool:
    return any(ch in text for ch in _ODD_SPACE)


_ALIASES = {"md": "markdown", "text": "plain", "txt": "plain", "htm": "html", "tex": "latex"}


class StructuredChunker:
    """Structure-aware chunking with an exact token budget.

    Markdown, HTML, LaTeX and plain text are cut into blocks that are never split when they fit (paragraphs, table
    rows, code fences, ``$$`` formulas, list items, ``<pre>``, ``<table>`` rows bound by ``rowspan``), then packed
    toward ``max_tokens``. Oversized tables are split between rows with the header row repeated; oversized code
    between lines with the fence reopened; oversized prose between sentences (``。！？`` and ``.!?``), then words,
    then tokens. Every chunk carries its heading breadcrumb and page span.

    Args:
        max_tokens: the budget; no chunk's ``tokens`` exceeds it.
        overlap_tokens: repeat up to this many tokens of whole blocks from the end of a chunk at the start of the next
            one when a section had to be split (0 = no overlap).
        encoding_name: tiktoken encoding (``cl100k_base`` works offline out of the box, see :func:`get_encoding`).
        length_function: count tokens with this instead of tiktoken.
        include_headings: prefix each chunk's text with its breadcrumb (``"A > B > C"``) and a blank line, less
            what the text already starts with (a chunk opening with its section's heading line gets only the
            ancestors, or no prefix at top level); ``Chunk.headings`` keeps the full path.
        min_tokens: a heading starts a new chunk only once the current one holds this many tokens, so tiny
            sections merge with the next one instead of becoming fragments.

    Example:
        >>> chunker = StructuredChunker(max_tokens=64)
        >>> chunks = chunker.chunk_text("# Guide\\n\\n## Install\\n\\nRun `pip install x`.\\n")
        >>> chunks[0].headings, chunks[0].kind
        (('Guide', 'Install'), 'text')
    """

    def __init__(
        self,
        max_tokens: int = 512,
        *,
        overlap_tokens: int = 0,
        encoding_name: str = "cl100k_base",
        length_function: Callable[[str], int] | None = None,
        include_headings: bool = False,
        min_tokens: int = 32,
    ) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1; got {max_tokens}")
        if overlap_tokens < 0 or overlap_tokens >= max_tokens:
            raise ValueError(f"overlap_tokens must be in [0, max_tokens); got {overlap_tokens}")
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.encoding_name = encoding_name
        self.length_function = length_function
        self.include_headings = include_headings
        self.min_tokens = min_tokens
        self._counter = TokenCounter(encoding_name, length_function)
        self._exact = TokenCounter(encoding_name, length_function)
        self._exact.additive = False

    def __repr__(self) -> str:
        return (
            f"StructuredChunker(max_tokens={self.max_tokens}, overlap_tokens={self.overlap_tokens}, "
            f"encoding_name={self.encoding_name!r}, include_headings={self.include_headings}, "
            f"min_tokens={self.min_tokens})"
        )

    def settings_key(self) -> str:
        """The settings that decide the chunks, as a stable string (for deterministic chunk ids).

        A custom ``length_function`` enters by its qualified name.
        """
        length = self.length_function
        custom = "" if length is None else f", length_function={getattr(length, '__qualname__', type(length).__name__)}"
        return f"{self!r}{custom}"

    def clear_cache(self) -> None:
        """Forget the token counts of repeated blocks memoised across documents (bounded; exact either way)."""
        self._counter.block_cache.clear()
        self._exact.block_cache.clear()

    def count_tokens(self, text: str) -> int:
        """Exact token count of ``text`` with this chunker's encoding or length function."""
        return self._counter.count(text)

    def atoms(
        self, text: str, content_type: str = "markdown", *, page: int | None = None, state: object = None
    ) -> list[Atom]:
        """The blocks of ``text`` before packing (for inspection and tests).

        Args:
            text: the document text.
            content_type: ``markdown``, ``html``, ``latex``, ``plain``/``text`` or ``json``.
            page: page number stamped on every block.
            state: heading state carried across pages (internal).

        Returns:
            The atoms.

        Raises:
            ValueError: unknown content type.
        """
        ctype = _ALIASES.get(content_type.lower(), content_type.lower())
        heading_state = state if isinstance(state, HeadingState) else HeadingState()
        if ctype == "markdown":
            return markdown_atoms(text, heading_state, page)
        if ctype == "html":
            from .html import html_atoms

            return html_atoms(text, heading_state, page)
        if ctype == "latex":
            from .latex import latex_atoms

            return latex_atoms(text, heading_state, page)
        if ctype == "plain":
            return plain_atoms(text, heading_state.path, page)
        if ctype == "json":
            return _json_atoms(text, heading_state.path, page)
        raise ValueError(f"content_type must be one of {', '.join(CONTENT_TYPES)}; got {content_type!r}")

    def chunk_text(self, text: str, content_type: str = "markdown") -> list[Chunk]:
        """Chunk one document.

        Args:
            text: the document text.
            content_type: ``markdown``, ``html``, ``latex``, ``plain``/``text`` or ``json``.

        Returns:
            The chunks in document order (``page_start``/``page_end`` are None).
        """
        odd = _odd(text)
        ctype = _ALIASES.get(content_type.lower(), content_type.lower())
        if ctype == "markdown" and not odd and self._counter.additive:
            # The fast path: atoms are consecutive slices of the text, so one encode of the text counts them all.
            atoms, cuts = markdown_atoms_at(text, HeadingState())
            # Blocks that may need splitting get their line counts from the same encode (a breadcrumb prefix takes
            # part of the budget).
            budget = self.max_tokens - (self.max_tokens // 4 if self.include_headings else 0)
            count_at(atoms, cuts, text, self._counter, budget)
            return self._pack(atoms, source=text, cuts=cuts)
        return self._pack(self.atoms(text, content_type), odd)

    def chunk_pages(self, pages: Sequence[tuple[int, str]], content_type: str = "markdown") -> list[Chunk]:
        """Chunk a paged document; chunks may span pages and the heading context carries across pages.

        Args:
            pages: ``[(page_number, page_text), ...]`` in order.
            content_type: as for :meth:`chunk_text`.

        Returns:
            The chunks, each with ``page_start`` and ``page_end``.
        """
        state = HeadingState()
        atoms: list[Atom] = []
        odd = False
        for number, page_text in pages:
            odd = odd or _odd(page_text)
            page_atoms = self.atoms(page_text, content_type, page=number, state=state)
            if atoms and page_atoms:
                joint = atoms[-1]
                joint.sep = "\n\n"
                joint.n = joint.nf = -1  # counted without a separator: count again
            atoms.extend(page_atoms)
        return self._pack(atoms, odd)

    def chunk_result(self, result: ParseResult) -> list[Chunk]:
        """Chunk a service result: per page when ``result.pages`` is set, else the whole content.

        A single-page result without ``pages`` (an image) gets page 1; a multi-page one without pages gets None.

        Args:
            result: the :class:`~aisearch_ingest.results.ParseResult`.

        Returns:
            The chunks.
        """
        if result.pages:
            return self.chunk_pages([(p.number, p.content) for p in result.pages], result.content_type)
        if result.page_num == 1:
            return self.chunk_pages([(1, result.content)], result.content_type)
        return self.chunk_text(result.content, result.content_type)

    def _pack(
        self, atoms: list[Atom], odd: bool = False, *, source: str | None = None, cuts: list[int] | None = None
    ) -> list[Chunk]:
        return pack(
            atoms,
            self._exact if odd else self._counter,
            self.max_tokens,
            overlap_tokens=self.overlap_tokens,
            min_tokens=self.min_tokens,
            include_headings=self.include_headings,
            source=source,
            cuts=cuts,
        )


def _json_atoms(text: str, path: tuple[str, ...], page: int | None) -> list[Atom]:
    """JSON: one atom when it fits (the packer keeps it whole); otherwise lines, so it can be cut between them."""
    stripped = text.strip()
    if not stripped:
        return []
    try:
        json.loads(stripped)
    except ValueError:
        return plain_atoms(text, path, page)
    return [Atom(stripped, "", "code", path, page)]
