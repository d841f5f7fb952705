"""Exact token counts of atoms, with as few encodes as possible.

Each atom is counted once together with its separator (``Atom.n``); because the separators end with a newline and
every atom's first line holds text, counts add up across joins for ``cl100k_base`` (see :mod:`.tokens`), so the atoms
of a document are concatenated and encoded in one call and each atom's count is read off the token byte lengths
(atoms seen before come from a bounded cache). A chunk's count is the sum of its atoms', except that its last atom
is counted without its separator (:func:`final_tokens`): only the trailing punctuation piece can merge with the
following newlines, so a couple of tiny encodes settle it. For other encodings or a custom length function, the
packer re-counts each assembled chunk and trims it if needed.
"""

from __future__ import annotations

from collections.abc import Sequence

from .model import Atom, line_atoms
from .tokens import TokenCounter

__all__ = ["count_at", "count_atoms", "count_tiles", "final_tokens"]


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
            a.pieces = line_atoms(a, a.text, a.sep, a.kind)
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
            pieces = line_atoms(a, a.text, a.sep, a.kind)
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


def count_tiles(a: Atom, subs: list[Atom], counter: TokenCounter) -> None:
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
