"""Markdown -> atoms, with an exact line scanner for the block structure (CommonMark + GFM tables + ``$$`` math).

markdown-it-py's block parser is exact but costs about six tokenisation passes on large documents, so this module
scans lines the way CommonMark's block phase does -- ATX and setext headings, fenced and indented code, ``$$`` and
``\\[ \\]`` display math, GFM pipe tables, list items (with nested content and lazy continuation), block quotes,
the seven kinds of HTML blocks, thematic breaks and paragraphs -- and cuts the source into slices at line
boundaries. Nothing is re-serialised: every atom's text is a slice of the source, so indentation, inline code and
cell order survive exactly. The tests compare the block boundaries with markdown-it-py's on real documents.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate

from .core import Atom

__all__ = ["HeadingState", "clean_heading", "markdown_atoms", "markdown_atoms_at"]

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))??(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"( *)(`{3,}|~{3,})(.*)$")
_HR = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LIST = re.compile(r"( {0,3})([-*+]|\d{1,9}[.)])([ \t]+|$)")
_SETEXT = re.compile(r" {0,3}(?:=+|-+)[ \t]*$")
_DELIM = re.compile(r" {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_BLOCK_TAGS = (
    "address|article|aside|base|basefont|blockquote|body|caption|center|col|colgroup|dd|details|dialog|dir|div|dl|"
    "dt|fieldset|figcaption|figure|footer|form|frame|frameset|h1|h2|h3|h4|h5|h6|head|header|hr|html|iframe|legend|"
    "li|link|main|menu|menuitem|nav|noframes|ol|optgroup|option|p|param|search|section|summary|table|tbody|td|"
    "tfoot|th|thead|title|tr|track|ul"
)
_HTML = re.compile(
    r" {0,3}<(?:(?P<t1>script|pre|style|textarea)(?:[\s>]|$)|(?P<t2>!--)|(?P<t3>\?)|(?P<t4>![A-Za-z])|"
    r"(?P<t5>!\[CDATA\[)|(?P<t6>/?(?:" + _BLOCK_TAGS + r"))(?:[\s/>]|$)|"
    r"(?P<t7>(?:[A-Za-z][A-Za-z0-9-]*(?:\s+[A-Za-z_:][\w.:-]*(?:\s*=\s*(?:[^\s\"'=<>`]+|'[^']*'|\"[^\"]*\"))?)*"
    r"\s*/?|/[A-Za-z][A-Za-z0-9-]*\s*)>[ \t]*$))",
    re.I,
)
_HTML_END = {"t2": "-->", "t3": "?>", "t4": ">", "t5": "]]>"}
_INLINE_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_INLINE_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_INLINE_MARK = re.compile(r"(\*\*|__|`+)")

_PLUS_ONE = (1).__add__

# First characters (after up to three spaces) that may start a block other than a paragraph.
_SPECIAL = frozenset("#`~$\\-*+_>|<=0123456789")


def clean_heading(title: str) -> str:
    """A heading's text for breadcrumbs: links and images reduced to their text, tags and emphasis markers removed."""
    if "[" in title:
        title = _INLINE_LINK.sub(r"\1", title)
    if "<" in title:
        title = _INLINE_TAG.sub("", title)
    if "`" in title or "**" in title or "__" in title:
        title = _INLINE_MARK.sub("", title)
    return " ".join(title.split())


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


def _indent(line: str) -> int:
    n = 0
    for ch in line:
        if ch == " ":
            n += 1
        elif ch == "\t":
            n += 4 - n % 4
        else:
            break
    return n


def _is_blank(line: str) -> bool:
    return not line or line.isspace()


def _interrupts(line: str, nxt: str | None) -> bool:
    """Whether ``line`` ends a paragraph (starts another block) -- CommonMark's interruption rules plus tables."""
    s = line.lstrip(" ")
    if not s or len(line) - len(s) > 3:
        return False
    c = s[0]
    if c not in _SPECIAL:
        return False
    if c == "#":
        return _ATX.match(line) is not None
    if c in "`~":
        m = _FENCE.match(line)
        return m is not None and not (m.group(2)[0] == "`" and "`" in m.group(3))
    if c == "$":
        return _math_opener(s)
    if c == "\\":
        return s.startswith("\\[")
    if c == ">":
        return True
    if c == "<":
        m = _HTML.match(line)
        return m is not None and m.lastgroup != "t7"
    if c in "-*_" and _HR.match(line):
        return True
    if c in "-*+" or c.isdigit():
        m = _LIST.match(line)
        if m is not None and line[m.end() :].strip():
            marker = m.group(2)
            return not marker[0].isdigit() or marker[:-1] == "1"
    if "|" in line and nxt is not None and "-" in nxt and _DELIM.match(nxt):
        return _cells(line) == _cells(nxt)
    return False


def _cells(row: str) -> int:
    s = row.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return s.replace("\\|", "").count("|") + 1


# A line that is blank or starts (after up to three spaces) with a character that may open a block.
_PARA_STOP = re.compile(r"^(?:[^\S\n]*$| {0,3}[#`~$\\\-*+_>|<=0-9])", re.M)
_CLOSERS: dict[tuple[int, str, int], re.Pattern[str]] = {}


def _fence_end_fast(text: str, starts: list[int], i: int, n: int, indent: int, ch: str, size: int) -> int:
    """Index one past the closing fence line of the fence opened at line ``i`` (``n`` if unclosed)."""
    key = (min(indent, 64), ch, size)
    pattern = _CLOSERS.get(key)
    if pattern is None:
        pattern = re.compile(rf"^ {{0,{key[0] + 3}}}{re.escape(ch)}{{{size},}}[^\S\n]*$", re.M)
        if len(_CLOSERS) < 256:
            _CLOSERS[key] = pattern
    if i + 1 >= n:
        return n
    found = pattern.search(text, starts[i + 1])
    if found is None:
        return n
    return bisect_right(starts, found.start())


def _math_opener(s: str) -> bool:
    """A line (left-stripped) that opens display math: ``$$`` alone, ``$$ x $$``, or ``$$x`` continued below."""
    if not s.startswith("$$"):
        return False
    rest = s[2:].strip()
    return not rest or rest[0] != "<"


def _math_end(lines: list[str], i: int, n: int, close: str) -> int:
    """One past the closing line of the display formula opened at ``i``.

    The closer is the next line ending with ``close``; if a blank line comes first and no closer follows within
    40 lines, the formula ends at that blank line (an unclosed ``$$`` must not swallow the document).
    """
    first = lines[i].strip()
    opener = "$$" if close == "$$" else "\\["
    if len(first) > len(opener) and first.endswith(close):
        return i + 1
    j = i + 1
    blank = -1
    while j < n:
        if lines[j].rstrip().endswith(close):
            return j + 1
        if blank < 0 and _is_blank(lines[j]):
            blank = j
        if blank >= 0 and j - i > 40:
            return blank
        j += 1
    return blank if blank >= 0 else n


def _list_item(lines: list[str], text: str, starts: list[int], i: int, n: int, m: re.Match[str]) -> int:
    """Scan one list item starting at line ``i`` (nested content included); return the line after it."""
    line = lines[i]
    pad = m.group(3)
    width = m.end(2) - m.start(1)
    pad_width = len(pad) if "\t" not in pad else len(pad.expandtabs(4))
    in_par = not _is_blank(line[m.end() :])
    content = width + 1 if not in_par or pad_width > 4 else width + pad_width
    j = i + 1
    last = i
    blank = False
    while j < n:
        lj = lines[j]
        if not lj or lj.isspace():
            blank = True
            j += 1
            continue
        stripped = lj.lstrip(" ")
        ind = _indent(lj) if lj.find("\t", 0, 8) >= 0 else len(lj) - len(stripped)
        if ind >= content:
            first = stripped[:1]
            fm = _FENCE.match(lj) if first == "`" or first == "~" else None
            if fm is not None and not (fm.group(2)[0] == "`" and "`" in fm.group(3)):
                end = _fence_end_fast(text, starts, j, n, len(fm.group(1)), fm.group(2)[0], len(fm.group(2)))
                while end - 1 > j and _is_blank(lines[end - 1]):
                    end -= 1
                last = end - 1
                j = end
                in_par = False
            else:
                last = j
                j += 1
                in_par = True
            blank = False
            continue
        if blank or not in_par:
            break
        if _interrupts(lj, lines[j + 1] if j + 1 < n else None) or _SETEXT.match(lj):
            break
        last = j
        j += 1
    return last + 1


def markdown_atoms(text: str, state: HeadingState | None = None, page: int | None = None) -> list[Atom]:
    """Cut markdown into atoms (slices of ``text``), tracking the heading path in ``state``.

    Args:
        text: the markdown.
        state: heading stack to continue from (a new one if None); updated in place.
        page: page number stamped on every atom.

    Returns:
        The atoms; the last one has an empty separator.
    """
    return markdown_atoms_at(text, state, page)[0]


def markdown_atoms_at(
    text: str, state: HeadingState | None = None, page: int | None = None
) -> tuple[list[Atom], list[int]]:
    """Like :func:`markdown_atoms`, also returning where the atoms sit in ``text``.

    One pass over the lines finds each block's boundaries (paragraphs and code fences are run through with a regex
    search instead of line by line) and turns it into an atom at once.

    Returns:
        The atoms, and the offset in ``text`` where each starts followed by where the last one ends (empty when
        there are no atoms): ``text[cuts[k]:cuts[k + 1]]`` is atom ``k``'s text and separator.
    """
    if state is None:
        state = HeadingState()
    lines = text.split("\n")
    starts = list(accumulate(map(_PLUS_ONE, map(len, lines)), initial=0))  # offset of each line
    n = len(lines)
    special = _SPECIAL
    para_stop = _PARA_STOP.search
    interrupts = _interrupts
    setext = _SETEXT.match
    atoms: list[Atom] = []
    cuts: list[int] = []
    add_atom = atoms.append
    add_cut = cuts.append
    push = state.push
    path = state.path
    prev_start = prev_end = -1
    prev_kind = ""
    prev: Atom | None = None
    i = 0
    while i < n:
        line = lines[i]
        if not line or line.isspace():
            i += 1
            continue
        # Find the block starting at line i: its kind, its end line j (exclusive), heading level and title.
        level = 0
        title = ""
        c = line[0]
        if c == " " or c == "\t":
            s = line.lstrip(" ")
            ind = len(line) - len(s)
            if c == "\t" or ind >= 4:
                if "\t" in line[:4]:
                    ind = _indent(line)
                if ind >= 4:
                    # Indented code: runs until a non-blank line indented less than four columns.
                    j = i + 1
                    last = i
                    while j < n:
                        lj = lines[j]
                        if not lj or lj.isspace():
                            j += 1
                            continue
                        if _indent(lj) < 4:
                            break
                        last = j
                        j += 1
                    kind = "code"
                    j = last + 1
                    c = ""
                else:
                    s = line.lstrip()
                    c = s[0]
            else:
                c = s[0]
        else:
            s = line
        if not c:
            pass
        elif c not in special:
            kind = ""
        elif c == "#":
            m = _ATX.match(line)
            if m is not None:
                kind = "heading"
                j = i + 1
                level = len(m.group(1))
                title = clean_heading(m.group(2) or "")
            else:
                kind = ""
        elif c == "`" or c == "~":
            m = _FENCE.match(line)
            if m is not None and not (m.group(2)[0] == "`" and "`" in m.group(3)):
                j = _fence_end_fast(text, starts, i, n, len(m.group(1)), m.group(2)[0], len(m.group(2)))
                while j - 1 > i and _is_blank(lines[j - 1]):
                    j -= 1
                kind = "code"
            else:
                kind = ""
        elif c == "$" and _math_opener(s):
            j = _math_end(lines, i, n, "$$")
            while j - 1 > i and _is_blank(lines[j - 1]):
                j -= 1
            kind = "formula"
        elif c == "\\" and s.startswith("\\["):
            j = _math_end(lines, i, n, "\\]")
            while j - 1 > i and _is_blank(lines[j - 1]):
                j -= 1
            kind = "formula"
        elif c == ">":
            j = i + 1
            while j < n:
                lj = lines[j]
                if not lj or lj.isspace():
                    break
                if lj.lstrip(" ")[:1] != ">" and interrupts(lj, lines[j + 1] if j + 1 < n else None):
                    break
                j += 1
            kind = "text"
        elif c == "<" and (m := _HTML.match(line)) is not None:
            group = m.lastgroup or "t7"
            j = i
            if group == "t1":
                close = "</" + (m.group("t1") or "").lower()
                while j < n and close not in lines[j].lower():
                    j += 1
                j = min(j + 1, n)
            elif group in _HTML_END:
                close = _HTML_END[group]
                while j < n and close not in lines[j][(len(line) - len(s) + 2) if j == i else 0 :]:
                    j += 1
                j = min(j + 1, n)
            else:
                while j < n and not _is_blank(lines[j]):
                    j += 1
            while j - 1 > i and _is_blank(lines[j - 1]):
                j -= 1
            block = "\n".join(lines[i:j]) if j - i < 4 else ""
            is_table = "<table" in (block or lines[i]).lower() or any(
                "<tr" in lines[k].lower() for k in range(i, min(j, i + 8))
            )
            kind = "table" if is_table else "text"
        elif c in "-*_" and line.count(c) >= 3 and _HR.match(line):
            j = i + 1
            kind = "text"
        elif (c in "-*+" or c.isdigit()) and (m := _LIST.match(line)) is not None:
            j = _list_item(lines, text, starts, i, n, m)
            kind = "list"
        else:
            kind = ""
        if not kind:
            nxt = lines[i + 1] if "|" in line and i + 1 < n else ""
            if "-" in nxt and _DELIM.match(nxt) and _cells(line) == _cells(nxt):
                j = i + 2
                while j < n:
                    lj = lines[j]
                    if lj[:1] == "|" or lj.lstrip(" ")[:1] == "|":
                        j += 1
                        continue
                    if not lj or lj.isspace() or "|" not in lj or interrupts(lj, None):
                        break
                    j += 1
                kind = "table"
            else:
                # Paragraph (possibly a setext heading): jump to the next line that is blank or starts with a
                # character that may open another block, and check only those.
                j = i + 1
                kind = "text"
                while j < n:
                    found = para_stop(text, starts[j])
                    if found is None:
                        j = n
                        break
                    j = bisect_right(starts, found.start()) - 1
                    lj = lines[j]
                    if not lj or lj.isspace():
                        break
                    f = lj.lstrip(" ")[:1]
                    if (f == "=" or f == "-") and setext(lj):
                        level = 1 if f == "=" else 2
                        kind = "heading"
                        title = clean_heading(" ".join(x.strip() for x in lines[i:j]))
                        j += 1
                        break
                    if interrupts(lj, lines[j + 1] if j + 1 < n else None):
                        break
                    j += 1
        # The block as an atom: a slice of the text without its trailing whitespace.
        start = starts[i]
        end = starts[j - 1] + len(lines[j - 1].rstrip())
        i = j
        if prev is not None:
            if prev_kind == "heading" and (kind == "text" or kind == "list") and end - start <= _MERGE_CHARS:
                # A heading and the short paragraph or list item it introduces travel together: one atom (fewer
                # objects to count and pack; a chunk can never end on a bare heading). It keeps the heading's
                # level, so it still starts a new chunk.
                prev.head_len = prev_end - prev_start
                prev.text = text[prev_start:end]
                prev.kind = prev_kind = kind
                prev_end = end
                continue
            prev.sep = text[prev_end:start]
        if level:
            path = push(level, title)
            prev = Atom(text[start:end], "", kind, path, page, level)
            if title:
                prev.titled = True
        else:
            prev = Atom(text[start:end], "", kind, path, page)
        add_atom(prev)
        add_cut(start)
        prev_kind = kind
        prev_start = start
        prev_end = end
    if prev is None:
        return [], []
    add_cut(prev_end)
    return atoms, cuts


_MERGE_CHARS = 1024
