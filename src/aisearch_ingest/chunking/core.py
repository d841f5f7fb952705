"""The chunk type, the block ("atom") model the parsers produce, and the packer that turns atoms into chunks.

Every parser (markdown, HTML, LaTeX, plain text) turns its input into a flat list of :class:`Atom` -- a piece of text
that is never cut if it fits the budget (a paragraph, a table, a table row, a code fence, a formula, a list item, a
heading) -- with the separator that follows it, the heading path it sits under and its page. The packer then fills
chunks greedily up to ``max_tokens``; atoms that do not fit alone are first split by :func:`split_oversized`
(tables between rows with the header repeated, code between lines with the fence reopened, prose between sentences,
then words, then tokens).

Token counts are exact. Each atom is counted once together with its separator; because the separators end with a
newline and every atom's first line holds text, counts add up across joins for ``cl100k_base`` (see
:mod:`.tokens`), so the atoms of a document are concatenated and encoded in one call and each atom's count is read
off the token byte lengths (atoms seen before come from a bounded cache). A chunk's count is the sum of its atoms',
except that its last atom is counted without its separator: only the trailing punctuation piece can merge with the
following newlines, so a couple of tiny encodes settle it. For other encodings or a custom length function, each
assembled chunk is re-counted and trimmed if needed.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Any

from .tokens import TokenCounter

__all__ = ["KINDS", "Atom", "Chunk", "Group", "count_at", "pack", "split_oversized"]

#: The chunk kinds (the dominant kind of the atoms in a chunk, by tokens).
KINDS = ("text", "table", "code", "formula")

# Atom kinds -> chunk kinds.
_KIND_OF = {"text": "text", "heading": "text", "list": "text", "table": "table", "code": "code", "formula": "formula"}


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
    # are counted without encoding again (see ``_count_tiles``).
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


def count_atoms(atoms: Sequence[Atom], counter: TokenCounter, line_chars: int = 0) -> None:
    """Fill ``n`` (tokens of ``text + sep``) of every atom that lacks it, in one batch.

    Multi-line atoms longer than ``line_chars`` characters (when > 0 and counts are additive) are counted line by
    line and their line atoms kept, so a block that turns out too big is split without being encoded twice.
    """
    todo = [a for a in atoms if a.n < 0]
    if not todo:
        return
    units: list[Atom] = []
    split: list[Atom] = []
    by_line = line_chars > 0 and counter.additive
    for a in todo:
        if by_line and len(a.text) > line_chars and a.parts is None and a.kind != "heading" and "\n" in a.text:
            a.pieces = _line_atoms(a, a.text, a.sep, a.kind)
            units.extend(a.pieces)
            split.append(a)
        else:
            units.append(a)
    texts = [u.text + u.sep for u in units]
    counts: list[int] | None = None
    if counter.additive and len(units) > 1:
        counts = _count_runs(units, texts, counter)
    if counts is None:
        counts = counter.count_many(texts)
    for u, n in zip(units, counts, strict=True):
        u.n = n
    last = units[-1]
    if not last.sep:
        last.nf = last.n
    for u in units:
        if not u.sep:
            u.nf = u.n
    for a in split:
        a.n = sum(x.n for x in a.pieces or ())
        if not a.sep:
            a.nf = a.n


def count_at(
    atoms: Sequence[Atom], cuts: Sequence[int], text: str, counter: TokenCounter, line_tokens: int = 0
) -> bool:
    """Fill ``n`` of atoms that are consecutive slices of ``text`` with one encode of the whole span.

    ``text[cuts[k]:cuts[k + 1]]`` must be atom ``k``'s ``text + sep``, every cut an additive join (the parser cuts at
    line starts). Multi-line atoms of more than ``line_tokens`` tokens (when > 0) get their line atoms counted from
    the same encode, so splitting them later encodes nothing again. No per-atom string is built.

    Returns:
        False (counts left unset) when the fast path is unavailable; :func:`count_atoms` then does the work.
    """
    if not counter.additive or not atoms or len(cuts) != len(atoms) + 1:
        return False
    lo = cuts[0]
    encoded = counter.token_ends(text, lo, cuts[-1])
    if encoded is None:
        return False
    counts = counter.counts_between(encoded, [c - lo for c in cuts] if lo else cuts)
    if counts is None:
        return False
    for a, n in zip(atoms, counts, strict=True):
        a.n = n
    last = atoms[-1]
    if not last.sep:
        last.nf = last.n
    if line_tokens > 0:
        # The line atoms of every block that may need splitting, counted with one more lookup for all of them.
        blocks: list[list[Atom]] = []
        line_cuts: list[int] = []
        for i in [i for i, n in enumerate(counts) if n > line_tokens]:
            a = atoms[i]
            a.span = (encoded, cuts[i] - lo)
            if a.parts is not None or a.kind == "heading" or "\n" not in a.text:
                continue
            if a.kind == "table" and a.text.startswith("<"):
                continue  # an HTML table is split at its rows, counted from ``span`` if it comes to that
            pieces = _line_atoms(a, a.text, a.sep, a.kind)
            pos = cuts[i] - lo
            for piece in pieces:
                line_cuts.append(pos)
                pos += len(piece.text) + len(piece.sep)
            line_cuts.append(pos)
            blocks.append(pieces)
        if blocks:
            got = counter.counts_between(encoded, line_cuts)
            if got is None:  # pragma: no cover - the parser cuts lines where counts add up
                for a in atoms:
                    a.pieces = None
                return True
            k = 0
            for pieces in blocks:
                for piece in pieces:
                    piece.n = got[k]
                    k += 1
                k += 1  # the span from this block's end to the next block's first line
                if not pieces[-1].sep:
                    pieces[-1].nf = pieces[-1].n
    return True


def _count_tiles(a: Atom, subs: list[Atom], counter: TokenCounter) -> None:
    """Fill ``n`` of the sub-blocks ``subs`` of ``a`` from the encode ``a`` was counted with, where it is exact.

    The ``text + sep`` of ``subs`` must concatenate to ``a.text + a.sep``, and both ends of ``a`` are additive joins
    (which is what ``a.span`` being set means). A sub-block's count is read off that encode when both its ends are
    additive joins too (an end of ``a``, or a separator ending with a newline followed by a line holding a
    non-space, see :mod:`.tokens`); such sub-blocks inherit the encode, so splitting one of them further encodes
    nothing either. The others are left to :func:`count_atoms`.
    """
    span = a.span
    if span is None or not subs:
        return
    encoded, pos = span
    cuts = [pos]
    additive = [True]  # additive[k]: the join before subs[k] adds up (the start and the end of ``a`` do)
    for k, sub in enumerate(subs):
        pos += len(sub.text) + len(sub.sep)
        cuts.append(pos)
        if k:
            line = sub.text.partition("\n")[0]
            additive.append(subs[k - 1].sep[-1:] == "\n" and line != "" and not line.isspace())
    additive.append(True)
    if pos - cuts[0] != len(a.text) + len(a.sep):  # pragma: no cover - the callers pass tilings of ``a``
        return
    counts = counter.counts_between(encoded, cuts)
    if counts is None:  # pragma: no cover - additive joins are token boundaries
        return
    for k, sub in enumerate(subs):
        if additive[k] and additive[k + 1]:
            sub.n = counts[k]
            sub.span = (encoded, cuts[k])


_CACHED_CHARS = 512  # longer texts rarely repeat, and hashing them costs more than it saves


def _count_runs(todo: Sequence[Atom], texts: list[str], counter: TokenCounter) -> list[int] | None:
    """Count atoms with one encode per run of additive joins (see ``TokenCounter.count_joined``).

    Short texts seen before (repeated blocks: YAML front matter, closing fences, boilerplate) come from the counter's
    cache; the rest are still concatenated and encoded at once, as joins between safe atoms stay additive whatever
    sits between them in the source.
    """
    cache = counter.block_cache
    get = cache.get
    counts: list[int] = [0] * len(todo)
    misses: list[int] = []
    first: dict[str, int] = {}  # short texts repeated within this call: encode the first, copy to the others
    copies: list[tuple[int, int]] = []
    for i, t in enumerate(texts):
        if len(t) <= _CACHED_CHARS:
            hit = get(t)
            if hit is not None:
                counts[i] = hit
                continue
            k = first.get(t)
            if k is not None:
                copies.append((i, k))
                continue
            first[t] = i
        misses.append(i)
    if not misses:
        return counts
    # Runs end after an atom whose join is not additive (no trailing newline, or cut inside a line).
    start = 0
    last = len(misses) - 1
    for pos, i in enumerate(misses):
        a = todo[i]
        if pos != last and a.safe and a.sep[-1:] == "\n":
            continue
        run = misses[start : pos + 1]
        part = counter.count_joined([texts[k] for k in run])
        if part is None:
            return None
        for k, c in zip(run, part, strict=True):
            counts[k] = c
            t = texts[k]
            if len(t) <= _CACHED_CHARS:
                cache[t] = c
        start = pos + 1
    for i, k in copies:
        counts[i] = counts[k]
    if len(cache) > 200_000:
        cache.clear()
    return counts


def final_tokens(a: Atom, counter: TokenCounter) -> int:
    """Tokens of ``a.text`` alone, derived from ``n`` (tokens of ``text + sep``) with a few tiny encodes.

    With cl100k_base, appending whitespace to a text that ends with a non-space character only changes the
    pre-tokenizer's last piece when that piece is punctuation and the whitespace starts with a newline (the
    punctuation piece swallows the newlines); otherwise the whitespace forms pieces of its own. So
    ``count(text) = n - count(sep)`` or ``n - count(P + newlines) - count(rest) + count(P)`` with ``P`` the
    trailing punctuation piece. Anything unusual falls back to re-encoding the last line.
    """
    if a.nf >= 0:
        return a.nf
    sep = a.sep
    if not sep:
        a.nf = a.n
        return a.nf
    text = a.text
    if counter.additive and text:
        last = text[-1]
        if last.isalnum() or sep[0] not in "\r\n":
            if last > "\x7f" or last.isalnum() or last in _ASCII_PUNCT:
                a.nf = a.n - counter.count_cached(sep)
                return a.nf
        elif last in _ASCII_PUNCT or (last > "\x7f" and not last.isspace()):
            k = len(text) - 1
            while k > 0:
                ch = text[k - 1]
                if ch.isalnum() or ch.isspace() or (ch < "\x20"):
                    break
                k -= 1
            if k > 0 and text[k - 1] == " ":
                k -= 1
            piece = text[k:]
            # The loop kept only punctuation (ASCII or not) and a leading space; DEL is neither to the regex.
            if "\x7f" not in piece:
                a.nf = a.n - _tail_delta(piece, sep, counter)
                return a.nf
    cut = text.rfind("\n") + 1
    if cut == 0 or not counter.additive:
        a.nf = counter.count(text)
    else:
        line = text[cut:]
        a.nf = a.n - counter.count(line + sep) + counter.count(line)
    return a.nf


def _tail_delta(piece: str, sep: str, counter: TokenCounter) -> int:
    """``count(P + newlines) + count(rest) - count(P)`` for the trailing punctuation piece ``P`` of a text and its
    separator ``sep`` (newlines, then the rest), memoised per counter: chunk ends repeat a handful of these."""
    key = piece + sep  # unambiguous: the piece holds no whitespace but a leading space, sep starts with a newline
    cache = counter.tail_cache
    delta = cache.get(key)
    if delta is None:
        nl = len(sep) - len(sep.lstrip("\r\n"))
        delta = (
            counter.count(piece + sep[:nl]) + (counter.count(sep[nl:]) if nl < len(sep) else 0) - counter.count(piece)
        )
        if len(cache) < 4096:
            cache[key] = delta
    return delta


_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


# ---------------------------------------------------------------------------------------------------------------
# Splitting atoms that do not fit alone.

_SENTENCE_END = re.compile(r"[。！？!?]+[”’」』）)\]\"']*|\.+[”’」』）)\]\"']*(?=\s|$)|[;；](?=\s)")
_WORD = re.compile(r"\S+")


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """Spans of sentences in ``text`` (each span stripped of surrounding whitespace)."""
    spans: list[tuple[int, int]] = []
    start = 0
    n = len(text)
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        s = start
        while s < end and text[s].isspace():
            s += 1
        if s < end:
            spans.append((s, end))
        start = end
    s = start
    while s < n and text[s].isspace():
        s += 1
    if s < n:
        spans.append((s, len(text.rstrip())))
    return spans


def _word_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [(m.start() + start, m.end() + start) for m in _WORD.finditer(text, start, end)] if start < end else []


def _pack_spans(
    text: str, spans: list[tuple[int, int]], budget: int, counter: TokenCounter, fallback: Callable[..., list[str]]
) -> list[str]:
    """Greedily join consecutive spans of ``text`` into pieces of at most ``budget`` tokens (exact)."""
    counts = counter.count_many([text[s:e] for s, e in spans])
    pieces: list[str] = []
    i = 0
    while i < len(spans):
        if counts[i] > budget:
            pieces.extend(fallback(text[spans[i][0] : spans[i][1]], budget, counter))
            i += 1
            continue
        j = i + 1
        est = counts[i]
        while j < len(spans) and est + counts[j] <= budget:
            est += counts[j]
            j += 1
        while True:
            piece = text[spans[i][0] : spans[j - 1][1]]
            if j - i == 1 or counter.count(piece) <= budget:
                break
            j -= 1
        pieces.append(piece)
        i = j
    return pieces


def _split_tokens(text: str, budget: int, counter: TokenCounter) -> list[str]:
    """Last resort: cut at token boundaries (at least one token per piece, whatever the budget)."""
    budget = max(budget, 1)
    toks = counter.decode_pieces(text)
    pieces: list[str] = []
    i = 0
    while i < len(toks):
        j = min(len(toks), i + budget)
        while j > i + 1:
            piece = "".join(toks[i:j]).strip()
            if counter.count(piece) <= budget:
                break
            j -= 1
        piece = "".join(toks[i:j]).strip()
        if piece:
            pieces.append(piece)
        i = j
    return pieces


def _split_words(text: str, budget: int, counter: TokenCounter) -> list[str]:
    spans = _word_spans(text, 0, len(text))
    if len(spans) <= 1:
        return _split_tokens(text, budget, counter)
    return _pack_spans(text, spans, budget, counter, _split_tokens)


def split_prose(text: str, budget: int, counter: TokenCounter) -> list[str]:
    """Split one line of prose into pieces of at most ``budget`` tokens: between sentences, then words, then tokens.

    The pieces, in order, are slices of ``text`` (whitespace between them dropped).
    """
    spans = _sentence_spans(text)
    if len(spans) <= 1:
        return _split_words(text.strip(), budget, counter)
    return _pack_spans(text, spans, budget, counter, _split_words)


def _line_atoms(a: Atom, text: str, sep: str, kind: str) -> list[Atom]:
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


def _fix_seps(atoms: list[Atom]) -> None:
    # A separator that carries trailing spaces of its line must still end with a newline when more follows.
    for a in atoms:
        if a.sep and not a.sep.endswith("\n"):
            a.safe = False


def split_oversized(a: Atom, budget: int, counter: TokenCounter) -> list[Atom]:
    """Split an atom that does not fit ``budget`` into atoms that do (see the module docstring for the rules).

    Args:
        a: the atom (``n`` counted).
        budget: the token budget.
        counter: the token counter.

    Returns:
        Atoms in source order; rows or lines of one block share a :class:`Group`.
    """
    kind = a.kind
    text = a.text
    if a.head_len and kind != "heading":
        # A heading merged with the block it introduces: split them apart again, the heading keeping its level.
        body_start = len(text) - len(text[a.head_len :].lstrip())
        head = Atom(text[: a.head_len], text[a.head_len : body_start], "heading", a.path, a.page, a.level)
        head.titled = a.titled
        body = Atom(text[body_start:], a.sep, kind, a.path, a.page)
        _count_tiles(a, [head, body], counter)
        count_atoms([head, body], counter)
        heads = [head]
        if head.n > budget and final_tokens(head, counter) > budget:
            # The heading alone is too big (a long paragraph underlined as a setext heading): cut it as prose, its
            # first piece keeping the heading's level so it still opens a chunk.
            head.kind = "text"
            heads = split_oversized(head, budget, counter)
            heads[0].level, heads[0].titled = a.level, a.titled
        if body.n <= budget or final_tokens(body, counter) <= budget:
            return [*heads, body]
        return [*heads, *split_oversized(body, budget, counter)]
    if kind == "table" and a.group is None:
        if a.parts is not None:
            rows = [Atom(p, "\n", "table", a.path, a.page) for p in a.parts]
            rows[-1].sep = a.sep
            return _group_rows(a, rows[: a.head_parts], rows[a.head_parts :], budget, counter)
        if text.startswith("<"):
            from .html import html_table_parts, html_table_segments

            segments = html_table_segments(text)
            if len(segments) > 1:
                # Several tables in one HTML block: each table (with what follows it) on its own.
                subs = [Atom(t, sp, "table", a.path, a.page) for t, sp in segments]
                subs[-1].sep = a.sep
                _count_tiles(a, subs, counter)
                count_atoms(subs, counter)
                _fix_seps(subs)
                out_subs: list[Atom] = []
                for sub in subs:
                    if sub.n <= budget or final_tokens(sub, counter) <= budget:
                        out_subs.append(sub)
                    else:
                        out_subs.extend(split_oversized(sub, budget, counter))
                return out_subs
            parts, seps, head_parts, tail = html_table_parts(text)
            if parts:
                rows = [Atom(p, s, "table", a.path, a.page) for p, s in zip(parts, seps, strict=False)]
                rows[-1].sep = a.sep
                _count_tiles(a, rows, counter)
                return _group_rows(a, rows[:head_parts], rows[head_parts:], budget, counter, tail)
        else:
            return _split_table_lines(a, budget, counter)
    if kind in ("code", "formula"):
        return _split_fence(a, budget, counter)
    # Prose, list items, headings, HTML blocks: lines first, then sentences/words/tokens within lines.
    lines = _line_atoms(a, text, a.sep, kind)
    if lines and lines[0].n < 0:
        _count_tiles(a, lines, counter)
    count_atoms(lines, counter)
    if kind != "heading":
        # A code fence nested in a list item or a blockquote stays one atom: cut only if it alone does not fit.
        lines = _merge_fences(lines, counter)
    out: list[Atom] = []
    for line in lines:
        if line.n <= budget or final_tokens(line, counter) <= budget:
            out.append(line)
            continue
        if line.kind == "code" and line is not a and "\n" in line.text:
            out.extend(_split_fence(line, budget, counter))
            continue
        # The joins between pieces are inside a line: not additive, the packer re-counts such chunks.
        out.extend(_prose_atoms(line, budget, counter))
    count_atoms(out, counter)
    _fix_seps(out)
    return out


#: A fence opener inside a container: indentation, blockquote markers and an optional list marker, then the fence.
_NESTED_FENCE = re.compile(r"^(?:[ \t]*>)*[ \t]*(?:(?:[-*+]|\d{1,9}[.)])[ \t]+)?(`{3,}|~{3,})")
_FENCE_CLOSE = re.compile(r"^(?:[ \t]*>)*[ \t]*(`{3,}|~{3,})[ \t]*$")


def _merge_fences(lines: list[Atom], counter: TokenCounter) -> list[Atom]:
    """Join the line atoms of each fenced code block (opener through closer, or to the end when unclosed, as
    CommonMark reads it) into one ``code`` atom; other lines are returned as they are."""
    if not any("``" in line.text or "~~" in line.text for line in lines):
        return lines
    out: list[Atom] = []
    merged: list[Atom] = []
    i = 0
    while i < len(lines):
        m = _NESTED_FENCE.match(lines[i].text)
        if m is None or (m.group(1)[0] == "`" and "`" in lines[i].text[m.end() :]):
            out.append(lines[i])
            i += 1
            continue
        fence = m.group(1)
        j = i + 1
        while j < len(lines):
            c = _FENCE_CLOSE.match(lines[j].text)
            if c is not None and c.group(1)[0] == fence[0] and len(c.group(1)) >= len(fence):
                break
            j += 1
        run = lines[i : min(j, len(lines) - 1) + 1]
        if len(run) == 1:
            out.append(lines[i])
            i += 1
            continue
        first, last = run[0], run[-1]
        block = Atom("".join(x.text + x.sep for x in run[:-1]) + last.text, last.sep, "code", first.path, first.page)
        block.safe = last.safe
        out.append(block)
        merged.append(block)
        i += len(run)
    count_atoms(merged, counter)
    return out


_DELIM_ROW = re.compile(r"^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")


def _split_table_lines(a: Atom, budget: int, counter: TokenCounter) -> list[Atom]:
    """A markdown pipe table (header line, delimiter line, rows) -> header group + row atoms."""
    rows = _line_atoms(a, a.text, a.sep, "table")
    tail = None
    m = _LATEX_BEGIN.match(a.text)
    if m is not None:
        # LaTeX: the opener and everything up to the end of the first row (``\\``) is the header.
        k = 0
        while k < len(rows) - 1 and not rows[k].text.rstrip().endswith("\\\\"):
            k += 1
        head = rows[: k + 1] if k < len(rows) - 1 else rows[:1]
        tail = "\\end{" + m.group(1) + "}"
    elif len(rows) >= 2 and _DELIM_ROW.match(rows[1].text):
        head = rows[:2]
    else:
        head = rows[:1]
    return _group_rows(a, head, rows[len(head) :], budget, counter, tail)


_LATEX_BEGIN = re.compile(r"\s*\\begin\{([A-Za-z]+\*?)\}")


def _group_rows(
    a: Atom, head: list[Atom], body: list[Atom], budget: int, counter: TokenCounter, tail: str | None = None
) -> list[Atom]:
    """Wire header and row atoms into one group; rows that alone exceed the budget are cut as prose."""
    group = Group(head, tail, counter.count(tail) if tail else 0)
    all_atoms = head + body
    count_atoms(all_atoms, counter)
    head_tokens = sum(h.n for h in head)
    if (head_tokens + group.tail_tokens) * 2 > budget:
        # A header that eats half the budget is not worth repeating.
        group.head = []
        head_tokens = 0
    # Room for one row in a continuation chunk: the header, and the closing text plus a newline.
    room = budget - head_tokens - (group.tail_tokens + 1 if tail else 0)
    out: list[Atom] = list(group.head)
    for atom in group.head:
        atom.group = group
    for atom in body if group.head else head + body:
        atom.group = group
        if atom.n <= room or final_tokens(atom, counter) <= room:
            out.append(atom)
            continue
        # A single row larger than the budget: it has to be cut (3 tokens of slack for the joins).
        for sub in _prose_atoms(atom, max(room - 3, budget // 2), counter):
            sub.group = group
            out.append(sub)
    count_atoms(out, counter)
    out[-1].last_in_group = True
    _fix_seps(out)
    return out


def _prose_atoms(line: Atom, budget: int, counter: TokenCounter) -> list[Atom]:
    """Cut one line atom into pieces of at most ``budget`` tokens; the whitespace between pieces is kept as their
    separators (joins inside a line are not additive: such atoms are marked unsafe and counted alone)."""
    text = line.text
    pieces = split_prose(text, budget, counter)
    out: list[Atom] = []
    pos = 0
    starts: list[int] = []
    for piece in pieces:
        k = text.find(piece, pos)
        if k < 0:  # pragma: no cover - pieces are slices of text, in order
            k = pos
        starts.append(k)
        pos = k + len(piece)
    for idx, piece in enumerate(pieces):
        last = idx == len(pieces) - 1
        sep = line.sep if last else text[starts[idx] + len(piece) : starts[idx + 1]]
        sub = Atom(piece, sep, line.kind, line.path, line.page)
        if not last:
            sub.safe = False
            sub.n = counter.count(piece + sep)
            sub.nf = counter.count(piece)
        out.append(sub)
    return out


_FENCE_OPEN = re.compile(r"^[ \t]*(`{3,}|~{3,}|\$\$)")


def _split_fence(a: Atom, budget: int, counter: TokenCounter) -> list[Atom]:
    """A code fence or display formula -> opener + line atoms + closer; continuation chunks reopen the fence."""
    lines = _line_atoms(a, a.text, a.sep, a.kind)
    m = _FENCE_OPEN.match(lines[0].text) if lines else None
    if m is None or len(lines) < 3:
        for line in lines:
            line.kind = a.kind
        count_atoms(lines, counter)
        out: list[Atom] = []
        for line in lines:
            if line.n <= budget or final_tokens(line, counter) <= budget:
                out.append(line)
            else:
                for piece in _split_tokens(line.text, budget, counter):
                    sub = Atom(piece, "", a.kind, a.path, a.page)
                    sub.safe = False
                    out.append(sub)
                out[-1].sep = line.sep
                out[-1].safe = True
        count_atoms(out, counter)
        _fix_seps(out)
        return out
    marker = m.group(1)
    closer = lines[-1].text.strip()
    has_closer = closer.startswith(marker[0] * min(3, len(marker))) and len(lines) > 1
    tail = closer if has_closer else marker
    head = [lines[0]]
    group = Group(head, tail, counter.count(tail))
    body = lines[1:]
    count_atoms(lines, counter)
    out = [lines[0]]
    reserve = lines[0].n + group.tail_tokens + 3
    for line in body:
        line.group = group
        if line.n + reserve > budget and final_tokens(line, counter) + reserve > budget:
            for piece in _split_tokens(line.text, max(budget - reserve, budget // 2), counter):
                sub = Atom(piece, "", a.kind, a.path, a.page)
                sub.group = group
                sub.safe = False
                sub.n = sub.nf = counter.count(piece)
                out.append(sub)
            out[-1].sep = line.sep
            out[-1].safe = "\n" in line.sep
            out[-1].n = -1
            out[-1].nf = -1
        else:
            out.append(line)
    lines[0].group = group
    count_atoms(out, counter)
    out[-1].last_in_group = True
    _fix_seps(out)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Packing.


class _Builder:
    """Accumulates the atoms of one chunk and knows its exact token count."""

    __slots__ = ("atoms", "joined", "safe")

    def __init__(self) -> None:
        self.atoms: list[Atom] = []
        self.joined = 0  # sum of n over atoms (head repeat included)
        self.safe = True


_TEXT_SEP = attrgetter("text", "sep")
_KIND = attrgetter("kind")
_N = attrgetter("n")
_TEXTISH = frozenset(k for k, v in _KIND_OF.items() if v == "text")
_PATH = attrgetter("path")


def _assemble(atoms: list[Atom], head: list[Atom]) -> str:
    end = atoms[-1]
    parts = list(chain.from_iterable(map(_TEXT_SEP, chain(head, atoms[:-1]) if head else atoms[:-1])))
    parts.append(end.text)
    if end.group is not None and not end.last_in_group and end.group.tail is not None:
        parts.append(end.sep if "\n" in end.sep else "\n")
        parts.append(end.group.tail)
    return "".join(parts)


def _dominant_path(atoms: list[Atom]) -> tuple[str, ...]:
    """The heading path holding most tokens of ``atoms`` (each atom weighs at least 1; ties go to the path seen
    first)."""
    weights: dict[tuple[str, ...], int] = {}
    for key, n in zip(map(_PATH, atoms), map(_N, atoms), strict=True):
        weights[key] = weights.get(key, 0) + (n if n > 1 else 1)
    return max(weights, key=weights.__getitem__)  # max keeps the first of equal weights


def _dominant_kind(atoms: list[Atom]) -> str:
    """The chunk kind holding most tokens of ``atoms`` (each atom weighs at least 1; ties go to the kind seen
    first)."""
    weights: dict[str, int] = {}
    kind_of = _KIND_OF.get
    for kind, n in zip(map(_KIND, atoms), map(_N, atoms), strict=True):
        key = kind_of(kind, "text")
        weights[key] = weights.get(key, 0) + (n if n > 1 else 1)
    return max(weights, key=weights.__getitem__)  # max keeps the first of equal weights


def pack(
    atoms: Sequence[Atom],
    counter: TokenCounter,
    max_tokens: int,
    *,
    overlap_tokens: int = 0,
    min_tokens: int = 32,
    include_headings: bool = False,
    source: str | None = None,
    cuts: Sequence[int] | None = None,
) -> list[Chunk]:
    """Pack atoms into chunks of at most ``max_tokens`` tokens.

    A heading starts a new chunk once the current one holds at least ``min_tokens`` tokens; otherwise atoms are
    added greedily while they fit. Atoms that do not fit alone are split first (:func:`split_oversized`).

    Args:
        atoms: the parser's atoms, in order (token counts filled in by this function when missing).
        counter: the token counter.
        max_tokens: the budget.
        overlap_tokens: repeat up to this many tokens of whole trailing atoms of a chunk at the start of the next one
            when the split was forced by the budget (not at a heading).
        min_tokens: see above.
        include_headings: prefix each chunk's text with its breadcrumb and a blank line.
        source: the text the atoms were cut from, when they are consecutive slices of it (see ``cuts``): a chunk of
            unsplit atoms is then sliced out of it instead of being joined piece by piece.
        cuts: with ``source``: ``source[cuts[k]:cuts[k + 1]]`` is atom ``k``'s text and separator (as
            :func:`count_at` takes them).

    Returns:
        The chunks, with ``index`` and ``count`` set.
    """
    if min(map(_N, atoms), default=0) < 0:
        count_atoms(atoms, counter, 2 * max_tokens)
    crumb_cost: dict[tuple[str, ...], int] = {(): 0}
    # A breadcrumb costing more than half the budget (a paragraph turned setext heading, say) is not
    # prefixed: the chunk keeps it in ``headings`` only, and the budget stays the chunk's.
    crumb_limit = max_tokens // 2

    def crumb_tokens(path: tuple[str, ...]) -> int:
        """Tokens of the prefix for ``path``; 0 when there is none (no path, or one too long to prefix)."""
        cost = crumb_cost.get(path)
        if cost is None:
            cost = counter.count(" > ".join(path) + "\n\n")
            if cost > crumb_limit:
                cost = 0
            crumb_cost[path] = cost
        return cost

    # Split what cannot fit on its own (reserving room for the deepest breadcrumb prefix when prefixing). Few atoms
    # need it, so the others are copied over in slices; ``spliced`` records where split atoms' pieces sit in ``flat``.
    if include_headings:
        big = [i for i, a in enumerate(atoms) if a.n > max_tokens - crumb_tokens(a.path)]
    else:
        big = [i for i, n in enumerate(map(_N, atoms)) if n > max_tokens]
    flat: list[Atom] = []
    spliced: list[tuple[int, int]] = []  # (start, end) in flat of the pieces of each split atom
    done = 0
    for i in big:
        a = atoms[i]
        budget = max_tokens - (crumb_tokens(a.path) if include_headings else 0)
        if final_tokens(a, counter) > budget:
            flat.extend(atoms[done:i])
            start = len(flat)
            flat.extend(split_oversized(a, max(budget, 1), counter))
            spliced.append((start, len(flat)))
            done = i + 1
    flat.extend(atoms[done:])

    # (head repeat, atoms, tokens of all of them with their separators, some join inside is not additive, where the
    # atoms start in flat). The atoms of a chunk are always consecutive in flat.
    chunks: list[tuple[list[Atom], list[Atom], int, bool, int]] = []
    cur: list[Atom] = []
    head: list[Atom] = []
    joined = 0  # tokens of all atoms of cur (and head) with their separators
    head_tokens = 0
    crumb = 0  # reserved breadcrumb tokens
    unsafe = False

    def start_with(a: Atom, seed: list[Atom]) -> None:
        nonlocal cur, head, joined, crumb, head_tokens, unsafe
        if not seed and a.group is None and not include_headings:
            cur, head, joined, head_tokens, unsafe, crumb = [], [], 0, 0, False, 0
            return
        cur = list(seed)
        joined = sum(s.n for s in seed)
        first = cur[0] if cur else a
        g = first.group
        head = list(g.head) if g is not None and first not in g.head else []
        head_tokens = sum(h.n for h in head)
        joined += head_tokens
        unsafe = any(not x.safe for x in head) or any(not x.safe for x in seed)
        crumb = max((crumb_tokens(x.path) for x in [*cur, a]), default=0) if include_headings else 0

    def fits(a: Atom) -> bool:
        extra = 0
        mid_group = a.group is not None and not a.last_in_group and a.group.tail is not None
        if mid_group:
            # Ending here appends the separator and the closing fence: the joined count is the exact one.
            assert a.group is not None
            extra = a.group.tail_tokens + (0 if "\n" in a.sep else 1)
        if cur and not cur[-1].safe:
            extra += 1
        reserve = max(crumb, crumb_tokens(a.path)) if include_headings else 0
        room = max_tokens - reserve - joined - extra
        if a.n <= room:
            return True
        if mid_group or a.n - 8 > room:
            return False
        return final_tokens(a, counter) <= room

    simple = not include_headings
    limit = max_tokens
    for idx, a in enumerate(flat):
        n = a.n
        if cur:
            last = cur[-1]
            if a.level and last.kind != "heading" and joined - head_tokens >= min_tokens:
                chunks.append((head, cur, joined, unsafe, idx - len(cur)))
                start_with(a, [])
            elif simple and last.safe and joined + n + (0 if a.group is None else a.group.tail_tokens + 1) <= limit:
                # Fits for sure (a row or line of a split block also leaves room for its closing fence).
                cur.append(a)
                joined += n
                continue
            elif not fits(a):
                prev = cur
                # Headings must not dangle at the end of a chunk: carry them over with what they introduce.
                k = len(cur)
                while k > 1 and cur[k - 1].kind == "heading":
                    k -= 1
                if k < len(cur) and cur[k - 1].kind != "heading":
                    carry = cur[k:]
                    prev_head, prev_joined, prev_unsafe = head, joined, unsafe
                    start_with(a, carry)
                    if fits(a):
                        chunks.append(
                            (prev_head, prev[:k], prev_joined - sum(c.n for c in carry), prev_unsafe, idx - len(prev))
                        )
                        if cur and not cur[-1].safe:
                            unsafe = True
                        cur.append(a)
                        joined += n
                        if include_headings:
                            crumb = max(crumb, crumb_tokens(a.path))
                        continue
                    head, joined, unsafe, cur = prev_head, prev_joined, prev_unsafe, prev
                chunks.append((head, cur, joined, unsafe, idx - len(cur)))
                seed: list[Atom] = []
                if overlap_tokens > 0:
                    total = 0
                    for p in reversed(prev):
                        if p.kind == "heading" or total + p.n > overlap_tokens:
                            break
                        seed.insert(0, p)
                        total += p.n
                start_with(a, seed)
                while cur and not fits(a):  # the seed leaves no room: drop it
                    start_with(a, cur[1:])
            if cur and not cur[-1].safe:
                unsafe = True
        else:
            start_with(a, [])
        cur.append(a)
        joined += n
        if include_headings:
            crumb = max(crumb, crumb_tokens(a.path))
    if cur:
        chunks.append((head, cur, joined, unsafe, len(flat) - len(cur)))

    slicer = None
    if source is not None and cuts is not None and len(cuts) == len(atoms) + 1:
        slicer = _Slicer(source, cuts, spliced)
    rows: list[tuple[str, int, tuple[str, ...], int | None, int | None, str]] = []
    pending = deque(chunks)
    while pending:
        head, group_atoms, joined, unsafe, at = pending.popleft()
        end = group_atoms[-1]
        text = slicer.text(at, group_atoms) if slicer is not None and at >= 0 and not head else None
        if text is None:
            text = _assemble(group_atoms, head)
        if counter.additive and not unsafe and joined >= 0:
            if end.group is not None and not end.last_in_group and end.group.tail is not None:
                tokens = joined + end.group.tail_tokens
                if not end.sep.endswith("\n"):
                    tokens = counter.count(text)
            else:
                tokens = joined - end.n + final_tokens(end, counter)
        else:
            tokens = counter.count(text)
        path = _chunk_path(group_atoms)
        if include_headings and crumb_tokens(path) > 0:  # a path too long to prefix costs 0
            shown = _shown_crumb(path, group_atoms[0] if not head else None)
            if shown:
                text = " > ".join(shown) + "\n\n" + text
                tokens = tokens + crumb_tokens(shown) if counter.additive else counter.count(text)
        if tokens > max_tokens and len(group_atoms) > 1:
            # Only reachable when counts do not add up (a length function): give the last atom to the next chunk.
            moved = group_atoms.pop()
            nxt_head = list(moved.group.head) if moved.group is not None and moved not in moved.group.head else []
            pending.appendleft((nxt_head, [moved], -1, True, -1))
            pending.appendleft((head, group_atoms, -1, True, -1))
            continue
        if len(group_atoms) == 1 and not head:
            kind = _KIND_OF.get(end.kind, "text")
        else:
            kinds = set(map(_KIND, group_atoms))
            if len(kinds) == 1 or kinds <= _TEXTISH:
                kind = _KIND_OF.get(end.kind, "text")
            else:
                kind = _dominant_kind([*head, *group_atoms])
        if end.page is None and group_atoms[0].page is None:
            first_page = last_page = None
        else:
            pages = [x.page for x in group_atoms if x.page is not None]
            first_page, last_page = min(pages), max(pages)
        rows.append((text, tokens, path, first_page, last_page, kind))
    return _chunks(rows)


def _chunks(rows: list[tuple[str, int, tuple[str, ...], int | None, int | None, str]]) -> list[Chunk]:
    """Build the :class:`Chunk` objects of a document, with ``index`` and ``count``.

    Thousands of chunks per document: their fields are set in one go instead of through the frozen dataclass's
    ``__init__`` (eight ``object.__setattr__`` calls each). The result equals ``Chunk(*fields)`` (the class has no
    ``__post_init__``, no slots and no defaults).
    """
    total = len(rows)
    make = object.__new__
    out: list[Chunk] = []
    for i, (text, tokens, headings, page_start, page_end, kind) in enumerate(rows):
        chunk = make(Chunk)
        chunk.__dict__.update(
            text=text,
            tokens=tokens,
            headings=headings,
            page_start=page_start,
            page_end=page_end,
            kind=kind,
            index=i,
            count=total,
        )
        out.append(chunk)
    return out


class _Slicer:
    """Cuts the text of a chunk of unsplit atoms straight out of the source.

    Atoms in ``flat`` (the packer's atoms after splitting) are the original atoms in order, except where a split
    atom's pieces were put in its place (``spliced``: their (start, end) positions in flat, ascending). A run of
    flat atoms that holds no such piece is a run of consecutive original atoms, and since ``source[cuts[k]:
    cuts[k + 1]]`` is atom ``k``'s text and separator, the run's text is one slice of the source.
    """

    __slots__ = ("cuts", "ends", "shifts", "source", "starts")

    def __init__(self, source: str, cuts: Sequence[int], spliced: list[tuple[int, int]]) -> None:
        self.source = source
        self.cuts = cuts
        self.starts = [start for start, _ in spliced]
        self.ends = [end for _, end in spliced]
        # shifts[j]: how many more atoms flat holds than the originals before the j-th split atom's pieces.
        self.shifts = [0]
        for start, end in spliced:
            self.shifts.append(self.shifts[-1] + end - start - 1)

    def text(self, at: int, atoms: list[Atom]) -> str | None:
        """The text of the chunk made of ``atoms`` (flat positions ``at`` on), or None if it holds pieces."""
        stop = at + len(atoms)
        j = bisect_right(self.starts, at)  # split atoms whose pieces start at or before ``at``
        if (j and self.ends[j - 1] > at) or (j < len(self.starts) and self.starts[j] < stop):
            return None
        first = at - self.shifts[j]
        return self.source[self.cuts[first] : self.cuts[first + len(atoms) - 1] + len(atoms[-1].text)]


def _shown_crumb(path: tuple[str, ...], first: Atom | None) -> tuple[str, ...]:
    """The breadcrumb prefix of a chunk: ``path``, less what the chunk text already starts with.

    A chunk that opens with the heading line of a section on its path (its own, or an ancestor's) gets only that
    heading's ancestors as prefix -- none for a top-level heading -- instead of the title twice in a row.
    """
    if first is None or not first.titled:
        return path
    own = first.path
    if len(own) <= len(path) and path[: len(own)] == own:
        return own[:-1]
    return path


def _chunk_path(atoms: list[Atom]) -> tuple[str, ...]:
    """The breadcrumb of a chunk: the heading path holding most of its tokens (leading headings excluded)."""
    body = atoms
    k = 0
    while k < len(atoms) - 1 and atoms[k].kind == "heading":
        k += 1
    if k:
        body = atoms[k:]
    path = body[0].path
    for a in body:
        if a.path is not path and a.path != path:
            return _dominant_path(body)
    return path
