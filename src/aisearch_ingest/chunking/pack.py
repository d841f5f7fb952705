"""Packing atoms into chunks of at most ``max_tokens`` tokens.

The packer fills chunks greedily with the parser's atoms, in order. A heading starts a new chunk once the current
one holds ``min_tokens`` tokens, and never dangles at the end of one: it moves on with what it introduces. Atoms that
do not fit alone are first cut by :func:`.split.split_oversized`; a chunk that continues a split table or code fence
starts with the group's head (header rows, fence opener) and, when it ends inside the group, gets the closing text.
With overlap, a chunk whose end was forced by the budget hands its last whole atoms (up to ``overlap_tokens``) to
the next one. Token counts are the sums of the atoms' counts where those add up (see :mod:`.count`); otherwise each
assembled chunk is re-counted, and one over the budget gives its last atom to the next chunk.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from itertools import chain
from operator import attrgetter

from .count import count_atoms, final_tokens
from .model import KIND_OF, Atom, Chunk
from .split import split_oversized
from .tokens import TokenCounter

__all__ = ["pack"]

_TEXT_SEP = attrgetter("text", "sep")
_KIND = attrgetter("kind")
_N = attrgetter("n")
_TEXTISH = frozenset(k for k, v in KIND_OF.items() if v == "text")
_PATH = attrgetter("path")

# One filled chunk: (head repeat, atoms, tokens of all of them with their separators -- -1 when to be re-counted --,
# some join inside is not additive, where the atoms start in the packer's flat list -- -1 when unknown).
_Filled = tuple[list[Atom], list[Atom], int, bool, int]
# One finished chunk's fields but index and count: (text, tokens, headings, page_start, page_end, kind).
_Row = tuple[str, int, tuple[str, ...], int | None, int | None, str]


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
    added greedily while they fit. Atoms that do not fit alone are split first (:func:`.split.split_oversized`).

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
            :func:`.count.count_at` takes them).

    Returns:
        The chunks, with ``index`` and ``count`` set.
    """
    if min(map(_N, atoms), default=0) < 0:
        count_atoms(atoms, counter, 2 * max_tokens)
    packer = _Packer(counter, max_tokens, overlap_tokens, min_tokens, include_headings)
    flat, spliced = packer.split(atoms)
    filled = packer.fill(flat)
    slicer = None
    if source is not None and cuts is not None and len(cuts) == len(atoms) + 1:
        slicer = _Slicer(source, cuts, spliced)
    return _chunks(packer.finish(filled, slicer))


class _Packer:
    """The state of one :func:`pack` call: the settings, and the chunk being filled.

    :meth:`split` cuts what cannot fit alone, :meth:`fill` groups the atoms into chunks, :meth:`finish` assembles
    their texts and exact counts. While filling, ``cur`` holds the atoms of the open chunk and ``head`` the group
    head repeated at its top; ``joined`` is the tokens of both with all their separators, ``head_tokens`` the head's
    share of it, ``crumb`` the breadcrumb tokens reserved (with ``include_headings``), and ``unsafe`` tells whether
    some join inside is not additive (the chunk is then re-counted).
    """

    __slots__ = (
        "counter",
        "crumb",
        "crumb_cost",
        "crumb_limit",
        "cur",
        "filled",
        "head",
        "head_tokens",
        "include_headings",
        "joined",
        "max_tokens",
        "min_tokens",
        "overlap_tokens",
        "unsafe",
    )

    def __init__(
        self, counter: TokenCounter, max_tokens: int, overlap_tokens: int, min_tokens: int, include_headings: bool
    ) -> None:
        self.counter = counter
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.min_tokens = min_tokens
        self.include_headings = include_headings
        self.crumb_cost: dict[tuple[str, ...], int] = {(): 0}
        # A breadcrumb costing more than half the budget (a paragraph turned setext heading, say) is not
        # prefixed: the chunk keeps it in ``headings`` only, and the budget stays the chunk's.
        self.crumb_limit = max_tokens // 2
        self.filled: list[_Filled] = []
        self.cur: list[Atom] = []
        self.head: list[Atom] = []
        self.joined = 0
        self.head_tokens = 0
        self.crumb = 0
        self.unsafe = False

    def crumb_tokens(self, path: tuple[str, ...]) -> int:
        """Tokens of the prefix for ``path``; 0 when there is none (no path, or one too long to prefix)."""
        cost = self.crumb_cost.get(path)
        if cost is None:
            cost = self.counter.count(" > ".join(path) + "\n\n")
            if cost > self.crumb_limit:
                cost = 0
            self.crumb_cost[path] = cost
        return cost

    def split(self, atoms: Sequence[Atom]) -> tuple[list[Atom], list[tuple[int, int]]]:
        """The atoms with those that cannot fit on their own replaced by their pieces (reserving room for the
        deepest breadcrumb prefix when prefixing), and where those pieces sit: (start, end) in the result, ascending.

        Few atoms need it, so the others are copied over in slices.
        """
        max_tokens = self.max_tokens
        include_headings = self.include_headings
        counter = self.counter
        if include_headings:
            big = [i for i, a in enumerate(atoms) if a.n > max_tokens - self.crumb_tokens(a.path)]
        else:
            big = [i for i, n in enumerate(map(_N, atoms)) if n > max_tokens]
        flat: list[Atom] = []
        spliced: list[tuple[int, int]] = []
        done = 0
        for i in big:
            a = atoms[i]
            budget = max_tokens - (self.crumb_tokens(a.path) if include_headings else 0)
            if final_tokens(a, counter) > budget:
                flat.extend(atoms[done:i])
                start = len(flat)
                flat.extend(split_oversized(a, max(budget, 1), counter))
                spliced.append((start, len(flat)))
                done = i + 1
        flat.extend(atoms[done:])
        return flat, spliced

    def fill(self, flat: list[Atom]) -> list[_Filled]:
        """Group ``flat`` into chunks, in order; the atoms of a chunk are consecutive in ``flat``."""
        min_tokens = self.min_tokens
        include_headings = self.include_headings
        simple = not include_headings
        limit = self.max_tokens
        filled = self.filled
        # The loop runs once per block of the document, so the open chunk's list and count live in locals: ``joined``
        # is written back before ``fits`` or ``cut`` reads ``self.joined``, and both are read again after ``start``
        # or ``cut`` opened another chunk.
        cur = self.cur
        joined = self.joined
        for idx, a in enumerate(flat):
            n = a.n
            if cur:
                last = cur[-1]
                if a.level and last.kind != "heading" and joined - self.head_tokens >= min_tokens:
                    filled.append((self.head, cur, joined, self.unsafe, idx - len(cur)))
                    self.start(a, [])
                    cur, joined = self.cur, self.joined
                elif simple and last.safe and joined + n + (0 if a.group is None else a.group.tail_tokens + 1) <= limit:
                    # Fits for sure (a row or line of a split block also leaves room for its closing fence).
                    cur.append(a)
                    joined += n
                    continue
                else:
                    self.joined = joined
                    if not self.fits(a):
                        self.cut(a, idx)
                        cur, joined = self.cur, self.joined
                if cur and not cur[-1].safe:
                    self.unsafe = True
            else:
                self.start(a, [])
                cur, joined = self.cur, self.joined
            cur.append(a)
            joined += n
            if include_headings:
                self.crumb = max(self.crumb, self.crumb_tokens(a.path))
        if cur:
            filled.append((self.head, cur, joined, self.unsafe, len(flat) - len(cur)))
        return filled

    def start(self, a: Atom, seed: list[Atom]) -> None:
        """Open a new chunk that will take ``a``, holding ``seed`` (overlap, or headings carried over) first."""
        if not seed and a.group is None and not self.include_headings:
            self.cur, self.head, self.joined, self.head_tokens, self.unsafe, self.crumb = [], [], 0, 0, False, 0
            return
        cur = self.cur = list(seed)
        joined = sum(s.n for s in seed)
        first = cur[0] if cur else a
        g = first.group
        head = self.head = list(g.head) if g is not None and first not in g.head else []
        self.head_tokens = sum(h.n for h in head)
        self.joined = joined + self.head_tokens
        self.unsafe = any(not x.safe for x in head) or any(not x.safe for x in seed)
        self.crumb = max((self.crumb_tokens(x.path) for x in [*cur, a]), default=0) if self.include_headings else 0

    def fits(self, a: Atom) -> bool:
        """Whether ``a`` fits in the open chunk, exactly (the chunk's last atom is counted without its separator)."""
        extra = 0
        mid_group = a.group is not None and not a.last_in_group and a.group.tail is not None
        if mid_group:
            # Ending here appends the separator and the closing fence: the joined count is the exact one.
            assert a.group is not None
            extra = a.group.tail_tokens + (0 if "\n" in a.sep else 1)
        cur = self.cur
        if cur and not cur[-1].safe:
            extra += 1
        reserve = max(self.crumb, self.crumb_tokens(a.path)) if self.include_headings else 0
        room = self.max_tokens - reserve - self.joined - extra
        if a.n <= room:
            return True
        if mid_group or a.n - 8 > room:
            return False
        return final_tokens(a, self.counter) <= room

    def cut(self, a: Atom, idx: int) -> None:
        """``a`` (at ``idx`` in the flat list) does not fit: close the open chunk and open the one ``a`` goes to.

        Headings must not dangle at the end of a chunk: trailing ones move on with what they introduce when that
        fits. Otherwise the next chunk starts with the overlap, less what leaves no room for ``a``.
        """
        prev = self.cur
        k = len(prev)
        while k > 1 and prev[k - 1].kind == "heading":
            k -= 1
        if k < len(prev) and prev[k - 1].kind != "heading":
            carry = prev[k:]
            prev_head, prev_joined, prev_unsafe = self.head, self.joined, self.unsafe
            self.start(a, carry)
            if self.fits(a):
                at = idx - len(prev)
                self.filled.append((prev_head, prev[:k], prev_joined - sum(c.n for c in carry), prev_unsafe, at))
                return
            self.head, self.joined, self.unsafe, self.cur = prev_head, prev_joined, prev_unsafe, prev
        self.filled.append((self.head, prev, self.joined, self.unsafe, idx - len(prev)))
        seed: list[Atom] = []
        overlap = self.overlap_tokens
        if overlap > 0:
            total = 0
            for p in reversed(prev):
                if p.kind == "heading" or total + p.n > overlap:
                    break
                seed.insert(0, p)
                total += p.n
        self.start(a, seed)
        while self.cur and not self.fits(a):  # the seed leaves no room: drop it
            self.start(a, self.cur[1:])

    def finish(self, filled: list[_Filled], slicer: _Slicer | None) -> list[_Row]:
        """The text, exact token count, breadcrumb, page span and kind of every filled chunk.

        A chunk over the budget (only when counts do not add up: a length function) gives its last atom to the next.
        """
        counter = self.counter
        max_tokens = self.max_tokens
        include_headings = self.include_headings
        crumb_tokens = self.crumb_tokens
        rows: list[_Row] = []
        pending = deque(filled)
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
                moved = group_atoms.pop()
                nxt_head = list(moved.group.head) if moved.group is not None and moved not in moved.group.head else []
                pending.appendleft((nxt_head, [moved], -1, True, -1))
                pending.appendleft((head, group_atoms, -1, True, -1))
                continue
            if len(group_atoms) == 1 and not head:
                kind = KIND_OF.get(end.kind, "text")
            else:
                kinds = set(map(_KIND, group_atoms))
                if len(kinds) == 1 or kinds <= _TEXTISH:
                    kind = KIND_OF.get(end.kind, "text")
                else:
                    kind = _dominant_kind([*head, *group_atoms])
            if end.page is None and group_atoms[0].page is None:
                first_page = last_page = None
            else:
                pages = [x.page for x in group_atoms if x.page is not None]
                first_page, last_page = min(pages), max(pages)
            rows.append((text, tokens, path, first_page, last_page, kind))
        return rows


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
    kind_of = KIND_OF.get
    for kind, n in zip(map(_KIND, atoms), map(_N, atoms), strict=True):
        key = kind_of(kind, "text")
        weights[key] = weights.get(key, 0) + (n if n > 1 else 1)
    return max(weights, key=weights.__getitem__)  # max keeps the first of equal weights


def _chunks(rows: list[_Row]) -> list[Chunk]:
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
