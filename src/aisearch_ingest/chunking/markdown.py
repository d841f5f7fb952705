"""Markdown -> atoms, with an exact line scanner for the block structure (CommonMark + GFM tables + ``$$`` math).

markdown-it-py's block parser is exact but costs about six tokenisation passes on large documents, so this module
scans lines the way CommonMark's block phase does -- ATX and setext headings, fenced and indented code, ``$$`` and
``\\[ \\]`` display math, GFM pipe tables, list items (with nested content and lazy continuation), block quotes,
the seven kinds of HTML blocks, thematic breaks and paragraphs -- and cuts the source into slices at line
boundaries. Nothing is re-serialised: every atom's text is a slice of the source, so indentation, inline code and
cell order survive exactly. The tests compare the block boundaries with markdown-it-py's on real documents.

The scanner works on offsets into the text and never splits it into lines: most lines (paragraph continuations,
code fence interiors, list item bodies, blank lines) are passed over by a regex or ``str.find`` without becoming
Python strings. One match of ``_SCAN`` per block skips the blank lines before it and takes the common blocks whole
(plain paragraphs, bullet items, ATX headings, fence openers); the other blocks' first lines go through rules that
read further lines only where they must.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import cast

from .model import Atom, HeadingState

__all__ = ["clean_heading", "markdown_atoms", "markdown_atoms_at"]

# The definition of an ATX heading line (the scanner implements it without backtracking: _SCAN, _atx_title).
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

# First characters (after up to three spaces) that may start a block other than a paragraph.
_SPECIAL = frozenset("#`~$\\-*+_>|<=0123456789")


def clean_heading(title: str) -> str:
    """A heading's text for breadcrumbs: links and images reduced to their text, tags and emphasis markers removed."""
    # Each regex only runs when the text holds what a match needs ("](" for a link, "<...>" for a tag); backticks
    # alone are simply dropped (the same as the regex, which removes every run of them).
    if "](" in title:
        title = _INLINE_LINK.sub(r"\1", title)
    if "<" in title and ">" in title:
        title = _INLINE_TAG.sub("", title)
    if "**" in title or "__" in title:
        title = _INLINE_MARK.sub("", title)
    elif "`" in title:
        title = title.replace("`", "")
    return " ".join(title.split())


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


def _eol(text: str, p: int) -> int:
    """Where the line starting at ``p`` ends: its newline, or the end of the text."""
    e = text.find("\n", p)
    return e if e >= 0 else len(text)


def _is_blank(line: str) -> bool:
    return not line or line.isspace()


def _interrupts(line: str, text: str, eol: int) -> bool:
    """Whether ``line`` ends a paragraph (starts another block) -- CommonMark's interruption rules plus tables.

    ``line`` ends at offset ``eol`` of ``text``; the line below it is read (only for the table check) when there is
    one. ``eol == len(text)`` therefore means "no line below".
    """
    s = line.lstrip(" ")
    if not s or len(line) - len(s) > 3:
        return False
    c = s[0]
    if c not in _SPECIAL:
        return False
    if c == "#":
        rest = s.lstrip("#")
        return len(s) - len(rest) <= 6 and (not rest or rest[0] == " " or rest[0] == "\t")
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
    if "|" in line and eol < len(text):
        nxt = text[eol + 1 : _eol(text, eol + 1)]
        if "-" in nxt and _DELIM.match(nxt):
            return _cells(line) == _cells(nxt)
    return False


def _atx_title(rest: str) -> str:
    """The raw title of an ATX heading, ``rest`` being its line after the #'s (empty, or starting with a blank).

    Same as ``_ATX``'s second group (or ""), without its backtracking: the text between the blanks after the #'s
    and a closing sequence of #'s preceded by a blank (or the trailing blanks).
    """
    x = rest.strip(" \t")
    if not x.strip("#"):
        return ""
    body = x.rstrip("#")
    if len(body) < len(x) and (body[-1] == " " or body[-1] == "\t"):
        return body.rstrip(" \t")
    return x


def _cells(row: str) -> int:
    s = row.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return s.replace("\\|", "").count("|") + 1


# The scanner works on offsets into the text, never on a list of lines. A block is described by the offset of its
# first line and the offset ``q`` where its last line ends (the position of that line's newline, or ``len(text)``);
# ``text[q + 1]`` starts the next line. Lines are only sliced out when a rule has to look at them.

# Characters that may open a block other than a paragraph (the same set as _SPECIAL), for use in a character class.
_SPECIAL_CLASS = r"#`~$\\\-*+_>|<=0-9"


def _item_body_source(content: int) -> str:
    """Regex source: the lines after a list item's first line that surely belong to it.

    Blank lines followed by a line indented by at least ``content`` spaces whose first other character is neither
    blank nor a backtick or tilde (those may open a fence), as often as they come.
    """
    return rf"(?:(?:\n[^\S\n]*)*\n {{{content}}} *[^\s`~].*)*"


def _item_end_source(content: int) -> str:
    """Regex source: what surely ends a list item with content column ``content`` after its body.

    A sibling bullet with content (indented less than ``content``, so it cannot be a line of the body), or blank
    lines followed by the end or a line indented less than ``content``, or the end.
    """
    return rf"\n {{0,{min(3, content - 1)}}}[-*+][ \t][^\S\n]*\S|(?:\n[^\S\n]*)+(?:\Z|\n {{0,{content - 1}}}\S)|\Z"


def _bullet_items() -> str:
    """Regex source: a bullet item without indentation after its marker, for a padding of one to four spaces.

    Group ``item`` holds the item up to the end of its body (the content column is the padding plus one); what
    follows must surely end it (see :func:`_item_end_source`; an outdented line is only taken when it is not
    indented at all), else the empty group ``open`` matches and the rules decide. Nothing can fail once the first
    line matched, so nothing backtracks into the body. A first character that is a bullet (the line may be a
    thematic break) is left to the rules.
    """
    bodies = "|".join(rf" {{{pad}}}[^\s\-*+].*{_item_body_source(pad + 1)}" for pad in range(1, 5))
    return rf"(?P<item>{bodies})(?:\n {{0,3}}[-*+][ \t][^\S\n]*\S|(?:\n[^\S\n]*)+(?:\Z|\n\S)|\Z|(?P<open>))"


# One call per block: skip blank lines (the whitespace up to the last newline before the next non-blank character),
# then take the block whole for the common kinds, or its first line. This is written for the speed of ``re``: no
# lookarounds and few groups; parts that look past a block are consumed instead (each block ends at the end of its
# group); the common alternatives start with a literal or a character set outside their group, which ``re`` checks
# before trying the alternative (so a group starts one character into its block).
#   para     a plain paragraph: a first line that starts with a character that opens no other block, plus every
#            following line that starts like that after up to three spaces. It ends at a blank line or the end
#            (then ``stop`` matches) or at a line that a rule has to judge. (If it holds a ``|``, its first line may
#            head a table: the rules decide.)
#   item     a bullet list item without indentation, see :func:`_bullet_items`.
#   atx      an ATX heading without indentation.
#   ticks    the opening line of a code fence of backticks without indentation (no more backticks on the line).
#   tildes   the same for tildes.
#   comment  the start of an HTML comment without indentation.
#   eof      only blank space is left.
#   line     any other block's first line, for the rules in Python.
_SCAN = re.compile(
    r"(?:\s*\n)?(?:"
    r"[^\s" + _SPECIAL_CLASS + r"](?P<para>.*(?:\n {0,3}[^\s" + _SPECIAL_CLASS + r"].*)*)"
    r"(?P<stop>\n[^\S\n]*(?:\n|\Z)|\Z)?"
    r"|[-*+]" + _bullet_items() + r""
    r"|#(?P<atx>#{0,5}(?:[ \t].*)?$)"
    r"|`(?P<ticks>`{2,}[^`\n]*$)"
    r"|~(?P<tildes>~{2,}.*)"
    r"|<(?P<comment>!--)"
    r"|(?P<eof>[^\S\n]*\Z)"
    r"|(?P<line>.*))",
    re.M,
)
_PARA = _SCAN.groupindex["para"]
_STOP = _SCAN.groupindex["stop"]
_ITEM = _SCAN.groupindex["item"]
_OPEN = _SCAN.groupindex["open"]
_ATX_BLOCK = _SCAN.groupindex["atx"]
_TICKS = _SCAN.groupindex["ticks"]
_TILDES = _SCAN.groupindex["tildes"]
_COMMENT = _SCAN.groupindex["comment"]
_EOF = _SCAN.groupindex["eof"]
_PARAGRAPH = (_STOP, _PARA)  # a paragraph, ending at a blank line or the end (stop), or not
_BULLET_ITEM = (_ITEM, _OPEN)  # a bullet item, its end settled, or not (open)
_FENCE_OPENER = (_TICKS, _TILDES)
_LINE = _SCAN.groupindex["line"]

# A line that is blank or starts (after up to three spaces) with a character that may open a block -- except for
# starts that surely do not interrupt a paragraph: #'s not followed by a blank (no ATX heading), one or two
# backticks or tildes (no fence), "$" or "\" not followed by "$" or "[" (no formula).
_PARA_STOP = re.compile(
    r"^(?:[^\S\n]*$| {0,3}(?!#+[^\s#]|`{1,2}[^`]|~{1,2}[^~]|\$[^$]|\\[^\[])[" + _SPECIAL_CLASS + r"])", re.M
)
# The newline in front of a blank line.
_BEFORE_BLANK = re.compile(r"\n[^\S\n]*(?=\n|\Z)")
# Consecutive lines whose first non-space character is a pipe (table rows), each with the newline in front of it.
_PIPE_ROWS = re.compile(r"(?:\n *\|[^\n]*)*")


def _trim_blank_tail(text: str, a: int, q: int) -> int:
    """Drop the blank lines at the end of the block from ``a`` to ``q`` (never its first line); return the new end."""
    while True:
        k = text.rfind("\n", a, q)
        if k < 0:
            return q
        tail = text[k + 1 : q]
        if tail and not tail.isspace():
            return q
        q = k


def _fence_end(text: str, a: int, b: int, indent: int, ch: str, size: int) -> int:
    """End of the code fence whose opener is the line ``text[a:b]`` (indented ``indent``): the end of its closer.

    The closer is the next line of at most ``indent + 3`` spaces, ``size`` or more ``ch`` and blanks. Only lines
    holding a run of ``size`` ``ch`` can close the fence; ``str.find`` jumps from one to the next. An unclosed fence
    runs to the end of the text, less trailing blank lines.
    """
    end = len(text)
    if b >= end:
        return b
    run = ch * size
    k = text.find(run, b + 1)
    while k >= 0:
        e = text.find("\n", k)
        if e < 0:
            e = end
        if text[k - 1] == "\n":  # the run starts its line (the common case)
            rest = text[k:e].lstrip(ch)
            if not rest or rest.isspace():
                return e
        else:
            line = text[text.rfind("\n", b, k) + 1 : e]
            stripped = line.lstrip(" ")
            rest = stripped.lstrip(ch)
            if (
                len(line) - len(stripped) <= min(indent, 64) + 3
                and len(stripped) - len(rest) >= size
                and (not rest or rest.isspace())
            ):
                return e
        if e >= end:
            break
        k = text.find(run, e + 1)
    return _trim_blank_tail(text, a, end)


def _math_opener(s: str) -> bool:
    """A line (left-stripped) that opens display math: ``$$`` alone, ``$$ x $$``, or ``$$x`` continued below."""
    if not s.startswith("$$"):
        return False
    rest = s[2:].strip()
    return not rest or rest[0] != "<"


def _math_end(text: str, b: int, line: str, close: str) -> int:
    """End of the last line of the display formula whose opening line ``line`` ends at ``b``.

    The closer is the next line ending with ``close``; if a blank line comes first and no closer follows within
    40 lines, the formula ends before that blank line (an unclosed ``$$`` must not swallow the document).
    """
    first = line.strip()
    opener = "$$" if close == "$$" else "\\["
    if len(first) > len(opener) and first.endswith(close):
        return b
    size = len(text)
    p = b + 1
    lines = 1  # lines from the opener to the line at p
    blank = -1  # end of the line before the first blank line
    while p <= size:
        e = _eol(text, p)
        lj = text[p:e]
        if lj.rstrip().endswith(close):
            return e
        if blank < 0 and (not lj or lj.isspace()):
            blank = p - 1
        if blank >= 0 and lines > 40:
            return blank
        p = e + 1
        lines += 1
    return blank if blank >= 0 else size


_ITEM_BODIES: dict[int, re.Pattern[str]] = {}


def _item_body(content: int) -> re.Pattern[str]:
    """The lines after a first line of a list item with content column ``content`` that surely belong to it.

    Group 1 holds them; the empty group 2 matches if what follows surely ends the item (see
    :func:`_item_body_source` and :func:`_item_end_source`).
    """
    pattern = _ITEM_BODIES.get(content)
    if pattern is None:
        pattern = re.compile(f"({_item_body_source(content)})(?:(?:{_item_end_source(content)})())?")
        _ITEM_BODIES[content] = pattern
    return pattern


def _list_item(text: str, b: int, line: str, m: re.Match[str]) -> int:
    """Scan the list item whose first line ``line`` (matched by ``m``) ends at ``b``; return the end of its last line.

    Lines indented to the content column belong to the item (nested blocks; a nested fence is jumped over whole);
    a less indented line continues it lazily only if it directly continues a paragraph and interrupts nothing.
    """
    pad = m.group(3)
    width = m.end(2) - m.start(1)
    pad_width = len(pad) if "\t" not in pad else len(pad.expandtabs(4))
    in_par = not _is_blank(line[m.end() :])
    content = width + 1 if not in_par or pad_width > 4 else width + pad_width
    # The common cases in one match: the lines that plainly belong to the item, then what surely ends it.
    found = _item_body(content).match(text, b)
    assert found is not None  # the pattern matches the empty string
    q = found.end(1)
    if found.lastindex == 2:
        return q
    return _list_rest(text, q, content, in_par or q > b)


def _list_rest(text: str, q: int, content: int, in_par: bool) -> int:
    """Go on scanning a list item with content column ``content`` after its line ending at ``q``; return its end.

    ``in_par``: whether that line continues a paragraph (so that a lazy continuation line may follow).
    """
    size = len(text)
    p = q + 1
    blank = False
    while p <= size:
        e = _eol(text, p)
        lj = text[p:e]
        if not lj or lj.isspace():
            blank = True
            p = e + 1
            continue
        stripped = lj.lstrip(" ")
        ind = _indent(lj) if lj.find("\t", 0, 8) >= 0 else len(lj) - len(stripped)
        if ind >= content:
            first = stripped[:1]
            fm = _FENCE.match(lj) if first == "`" or first == "~" else None
            if fm is not None and not (fm.group(2)[0] == "`" and "`" in fm.group(3)):
                q = _fence_end(text, p, e, len(fm.group(1)), fm.group(2)[0], len(fm.group(2)))
                in_par = False
            else:
                q = e
                in_par = True
            p = q + 1
            blank = False
            continue
        if blank or not in_par:
            break
        if _interrupts(lj, text, e) or _SETEXT.match(lj):
            break
        q = e
        p = e + 1
    return q


def _paragraph(text: str, a: int, p: int) -> tuple[int, int, str]:
    """Finish the paragraph that starts at ``a`` and holds every line before offset ``p`` (a line start).

    Jumps to the next line that is blank or may interrupt the paragraph (see ``_PARA_STOP``) and checks only those.
    Returns the end of the paragraph's last line, and the level and title when a setext underline turned it into a
    heading (level 0 otherwise).
    """
    size = len(text)
    while p <= size:
        found = _PARA_STOP.search(text, p)
        if found is None:
            return size, 0, ""
        p = found.start()
        e = _eol(text, p)
        lj = text[p:e]
        if not lj or lj.isspace():
            return p - 1, 0, ""
        f = lj.lstrip(" ")[:1]
        if (f == "=" or f == "-") and _SETEXT.match(lj):
            title = clean_heading(" ".join(x.strip() for x in text[a : p - 1].split("\n")))
            return e, 1 if f == "=" else 2, title
        if _interrupts(lj, text, e):
            return p - 1, 0, ""
        p = e + 1
    return size, 0, ""


def _html_end(text: str, a: int, b: int, line: str, s: str, m: re.Match[str]) -> int:
    """End of the last line of the HTML block (kind per CommonMark's seven start conditions) opened by ``line``."""
    size = len(text)
    group = m.lastgroup or "t7"
    if group == "t1":
        close = "</" + (m.group("t1") or "").lower()
        p = a
        while p <= size:
            e = _eol(text, p)
            if close in text[p:e].lower():
                return e
            p = e + 1
        return size
    if group in _HTML_END:
        # The end marker cannot hold a newline, so one search over the text finds the line it closes on.
        k = text.find(_HTML_END[group], a + len(line) - len(s) + 2)
        if k < 0:
            return _trim_blank_tail(text, a, size)
        return _eol(text, k)
    found = _BEFORE_BLANK.search(text, b)
    return size if found is None else found.start()


def _html_kind(text: str, a: int, q: int) -> str:
    """``table`` for the HTML block from ``a`` to ``q`` if it holds a table, else ``text``.

    A table: ``<table`` in its first line (in the whole block if it has at most three lines), or ``<tr`` in its
    first eight lines, case-insensitively. Only ``t`` and ``T`` lower-case to a ``t``, so without ``<t`` or ``<T``
    there is neither.
    """
    if text.find("<t", a, q) < 0 and text.find("<T", a, q) < 0:
        return "text"
    newlines = text.count("\n", a, q)
    if newlines < 3:
        block = text[a:q].lower()
        return "table" if "<table" in block or "<tr" in block else "text"
    if "<table" in text[a : text.find("\n", a)].lower():
        return "table"
    if newlines >= 8:
        e = a - 1
        for _ in range(8):
            e = text.find("\n", e + 1)
        head = text[a:e]
    else:
        head = text[a:q]
    return "table" if "<tr" in head.lower() else "text"


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

    One pass over the text finds each block's boundaries (as offsets). Each step is one match of ``_SCAN``, which
    skips the blank lines and takes a plain paragraph, a bullet item, an ATX heading or a fence opener at once; any
    other block's first line goes through the rules below, which jump over code fences, HTML blocks and paragraphs
    with searches and read the other lines only where a rule needs them. The atoms are built at the end, from the
    blocks' offsets.

    Returns:
        The atoms, and the offset in ``text`` where each starts followed by where the last one ends (empty when
        there are no atoms): ``text[cuts[k]:cuts[k + 1]]`` is atom ``k``'s text and separator.
    """
    if state is None:
        state = HeadingState()
    size = len(text)
    scan = cast("Callable[[str, int], re.Match[str]]", _SCAN.match)  # it always matches (the last alternative)
    special = _SPECIAL
    push = state.push
    path = state.path
    # Each block's start, end (of its text), kind and heading path; headings: (index, level, titled); merged
    # heading + block: (index, length of the heading). The atoms are built from these lists at the end.
    starts: list[int] = []
    ends: list[int] = []
    kinds: list[str] = []
    paths: list[tuple[str, ...]] = []
    add_start = starts.append
    add_end = ends.append
    add_kind = kinds.append
    add_path = paths.append
    headings: list[tuple[int, int, bool]] = []
    merged: list[tuple[int, int]] = []
    prev_kind = ""
    pipe = -1  # the first "|" at or after the last paragraph start looked at (len(text): none)
    pos = 0
    while True:
        found = scan(text, pos)
        g = found.lastindex
        level = 0
        title = ""
        if g in _PARAGRAPH:
            start, q = found.span(_PARA)
            start -= 1
            if pipe < start:
                pipe = text.find("|", start)
                if pipe < 0:
                    pipe = size
            if pipe < q:
                g = _LINE  # its first line may head a table
                b = text.find("\n", start, q)
                if b < 0:
                    b = q
            elif g == _PARA:  # up to a line a rule has to judge
                q, level, title = _paragraph(text, start, q + 1)
                kind = "heading" if level else "text"
            else:
                kind = "text"
        elif g in _BULLET_ITEM:
            kind = "list"
            start, q = found.span(_ITEM)
            start -= 1
            if g == _OPEN:  # the rules decide where it ends
                pad = text[start + 1 : start + 6]
                q = _list_rest(text, q, len(pad) - len(pad.lstrip(" ")) + 1, True)
        elif g == _ATX_BLOCK:
            kind = "heading"
            start, q = found.span(_ATX_BLOCK)
            start -= 1
            line = found.group(_ATX_BLOCK)
            rest = line.lstrip("#")
            level = len(line) - len(rest) + 1
            title = rest.strip(" \t")
            title = clean_heading(title if "#" not in title else _atx_title(rest))
        elif g in _FENCE_OPENER:
            kind = "code"
            start, b = found.span(g)
            start -= 1
            line = found.group(g)
            q = _fence_end(text, start, b, 0, line[0], len(line) - len(line.lstrip(line[0])) + 1)
        elif g == _COMMENT:  # an HTML block that ends at the line holding the next "-->"
            start, b = found.span(_COMMENT)
            start -= 1
            q = text.find("-->", start + 2)
            q = _trim_blank_tail(text, start, size) if q < 0 else _eol(text, q)
            kind = _html_kind(text, start, q)
        elif g == _EOF:
            break
        else:
            start, b = found.span(_LINE)
        if g == _LINE:
            # Find the block starting with this line: its kind, the end q of its last line, heading level and title.
            line = text[start:b]
            q = b
            c = line[0]
            if c == " " or c == "\t":
                s = line.lstrip(" ")
                if c == "\t" or len(line) - len(s) >= 4:
                    # Indented code: runs until a non-blank line indented less than four columns.
                    p = b + 1
                    while p <= size:
                        e = _eol(text, p)
                        lj = text[p:e]
                        if lj and not lj.isspace():
                            if _indent(lj) < 4:
                                break
                            q = e
                        p = e + 1
                    kind = "code"
                    c = ""
                else:
                    c = s[0]
            else:
                s = line
            if not c:
                pass
            elif c not in special:
                kind = ""
            elif c == "#":
                # An ATX heading: at most six #'s, then the end of the line, a space or a tab (as _ATX).
                rest = s.lstrip("#")
                level = len(s) - len(rest)
                if level <= 6 and (not rest or rest[0] == " " or rest[0] == "\t"):
                    kind = "heading"
                    title = clean_heading(_atx_title(rest))
                else:
                    level = 0
                    kind = ""
            elif c == "`" or c == "~":
                m = _FENCE.match(line)
                if m is not None and not (m.group(2)[0] == "`" and "`" in m.group(3)):
                    q = _fence_end(text, start, b, len(m.group(1)), m.group(2)[0], len(m.group(2)))
                    kind = "code"
                else:
                    kind = ""
            elif c == "$" and _math_opener(s):
                q = _trim_blank_tail(text, start, _math_end(text, b, line, "$$"))
                kind = "formula"
            elif c == "\\" and s.startswith("\\["):
                q = _trim_blank_tail(text, start, _math_end(text, b, line, "\\]"))
                kind = "formula"
            elif c == ">":
                p = b + 1
                while p <= size:
                    e = _eol(text, p)
                    lj = text[p:e]
                    if not lj or lj.isspace():
                        break
                    if lj.lstrip(" ")[:1] != ">" and _interrupts(lj, text, e):
                        break
                    q = e
                    p = e + 1
                kind = "text"
            elif c == "<" and (m := _HTML.match(line)) is not None:
                q = _trim_blank_tail(text, start, _html_end(text, start, b, line, s, m))
                kind = _html_kind(text, start, q)
            elif c in "-*_" and line.count(c) >= 3 and _HR.match(line):
                kind = "text"
            elif (c in "-*+" or c.isdigit()) and (m := _LIST.match(line)) is not None:
                q = _list_item(text, b, line, m)
                kind = "list"
            else:
                kind = ""
            if not kind:
                nxt = ""
                if "|" in line and b < size:
                    e = _eol(text, b + 1)
                    nxt = text[b + 1 : e]
                if "-" in nxt and _DELIM.match(nxt) and _cells(line) == _cells(nxt):
                    # A table: the header, the delimiter row, then every row up to a line that is blank, has
                    # no pipe or starts another block.
                    q = e
                    while q < size:
                        rows = _PIPE_ROWS.match(text, q)
                        assert rows is not None  # the pattern matches the empty string
                        q = rows.end()
                        if q >= size:
                            break
                        e = _eol(text, q + 1)
                        lj = text[q + 1 : e]
                        if not lj or lj.isspace() or "|" not in lj or _interrupts(lj, text, size):
                            break
                        q = e
                    kind = "table"
                else:
                    # Paragraph (possibly a setext heading).
                    q, level, title = _paragraph(text, start, b + 1)
                    kind = "heading" if level else "text"
        # The block as an atom: a slice of the text without its trailing whitespace (its last line is never blank,
        # so this stops inside that line). The next scan skips the rest of that line.
        pos = end = q
        while text[end - 1].isspace():
            end -= 1
        if prev_kind == "heading" and (kind == "text" or kind == "list") and end - start <= _MERGE_CHARS:
            # A heading and the short paragraph or list item it introduces travel together: one atom (fewer
            # objects to count and pack; a chunk can never end on a bare heading). It keeps the heading's level, so
            # it still starts a new chunk.
            merged.append((len(ends) - 1, ends[-1] - starts[-1]))
            ends[-1] = end
            kinds[-1] = prev_kind = kind
            continue
        if level:
            path = push(level, title)
            headings.append((len(ends), level, title != ""))
        add_start(start)
        add_end(end)
        add_kind(kind)
        add_path(path)
        prev_kind = kind
    if not starts:
        return [], []
    nexts = starts[1:]
    nexts.append(ends[-1])  # the last atom has no separator
    atoms = [
        Atom(text[a:b], text[b:c], kind, p, page)
        for a, b, c, kind, p in zip(starts, ends, nexts, kinds, paths, strict=True)
    ]
    for k, level, titled in headings:
        atom = atoms[k]
        atom.level = level
        if titled:
            atom.titled = True
    for k, head_len in merged:
        atoms[k].head_len = head_len
    starts.append(ends[-1])
    return atoms, starts


_MERGE_CHARS = 1024
