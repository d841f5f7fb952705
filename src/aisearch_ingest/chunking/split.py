"""Splitting atoms that do not fit the budget alone into atoms that do.

Tables are split between rows, the header rows repeated at the top of every continuation chunk (markdown pipe
tables, HTML tables, LaTeX tabulars); code fences and display formulas between lines, the fence reopened and closed
around every piece; prose between lines, then sentences (``。！？`` and ``.!?``), then words, then tokens. A heading
merged with the block it introduces is split off again first. Rows and lines of one block share a :class:`Group`,
which tells the packer what to repeat and what to append.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .count import count_atoms, count_tiles, final_tokens
from .model import Atom, Group, line_atoms
from .tokens import TokenCounter

__all__ = ["split_oversized", "split_prose"]

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
        count_tiles(a, [head, body], counter)
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
            # Imported on first use, as the chunker imports the HTML parser: markdown-only callers never load it.
            from .html import html_table_parts, html_table_segments

            segments = html_table_segments(text)
            if len(segments) > 1:
                # Several tables in one HTML block: each table (with what follows it) on its own.
                subs = [Atom(t, sp, "table", a.path, a.page) for t, sp in segments]
                subs[-1].sep = a.sep
                count_tiles(a, subs, counter)
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
                count_tiles(a, rows, counter)
                return _group_rows(a, rows[:head_parts], rows[head_parts:], budget, counter, tail)
        else:
            return _split_table_lines(a, budget, counter)
    if kind in ("code", "formula"):
        return _split_fence(a, budget, counter)
    # Prose, list items, headings, HTML blocks: lines first, then sentences/words/tokens within lines.
    lines = line_atoms(a, text, a.sep, kind)
    if lines and lines[0].n < 0:
        count_tiles(a, lines, counter)
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
    rows = line_atoms(a, a.text, a.sep, "table")
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
    lines = line_atoms(a, a.text, a.sep, a.kind)
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
