"""document-analyze: markdown for PDF, HTML for the office and text formats, markdown for images (``-002``).

PDF pages are read from their text layer with pypdfium2 (headings from larger fonts, paragraphs, lists, pipe tables);
a page without one is rendered at 150 dpi and OCR'd. DOCX goes through mammoth, PPTX through python-pptx, Markdown
through markdown-it-py. pdfium is not thread-safe: every pdfium call holds the process-wide
:data:`aisearch_ingest._pdfium.PDFIUM_LOCK`, which a client in the same process holds too.
"""

from __future__ import annotations

import html
import io
import re
import statistics
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from ..._pdfium import PDFIUM_LOCK
from .._sniff import IMAGE_TYPES
from . import layout
from .common import LRU, CorruptDocument, UnsupportedDocument, missing_package, nonblank_chars, sha256_hex
from .ocr import OCRLine, ocr_cached, ocr_pil

__all__ = ["DocumentAnalysis", "analyze_document", "clear_cache"]


DOCUMENT_CACHE_SIZE = 32
#: Pages rendered for OCR when a PDF page has no text layer (points -> pixels at 150 dpi).
SCAN_RENDER_SCALE = 150 / 72
#: A PDF page with fewer non-blank characters than this in its text layer is treated as scanned.
SCANNED_PAGE_MIN_CHARS = 8


@dataclass
class DocumentAnalysis:
    """What document-analyze returns for one document.

    Attributes:
        content: the whole document: markdown for PDF, HTML otherwise; for PDF the pages joined with
            a blank line.
        content_type: ``markdown`` or ``html``.
        pages: per-page content (one entry for formats without pages; one per slide for PPTX).
        page_num: number of pages.
        usage: ``token_count`` (number of non-blank characters of the document's text, the page's
            "文档中字符个数"), ``table_count`` and ``image_count``.
    """

    content: str
    content_type: str
    pages: list[str]
    page_num: int
    usage: dict[str, int] = field(default_factory=dict)

    def _copy(self) -> DocumentAnalysis:
        return DocumentAnalysis(self.content, self.content_type, list(self.pages), self.page_num, dict(self.usage))


_DOC_CACHE: LRU[tuple[str, str], DocumentAnalysis] = LRU(DOCUMENT_CACHE_SIZE)

_TYPE_ALIASES = {
    "htm": "html",
    "xhtml": "html",
    "markdown": "md",
    "text": "txt",
    "plain": "txt",
}
_LEGACY = {"doc": "docx", "ppt": "pptx", "xls": "xlsx"}


def _normalise_type(file_type: str) -> str:
    ft = file_type.strip().lower().lstrip(".")
    if "/" in ft:  # a MIME type
        ft = {
            "application/pdf": "pdf",
            "text/html": "html",
            "text/markdown": "md",
            "text/plain": "txt",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
        }.get(ft, ft)
    return _TYPE_ALIASES.get(ft, ft)


def analyze_document(data: bytes, file_type: str, *, images: bool = False) -> DocumentAnalysis:
    """What ``ops-document-analyze-001`` returns for a document (and ``-002``, which takes images too).

    * ``pdf`` -> markdown, one entry in ``pages`` per page: headings from larger-font lines, paragraphs from
      wrapped lines, numbered / bulleted lists, pipe tables from runs of column-aligned lines; pages without a
      text layer are rendered at 150 dpi and OCR'd.
    * ``docx`` -> HTML (mammoth), ``pptx`` -> HTML with one ``<section>`` per slide (python-pptx),
      ``md`` -> HTML (markdown-it-py, with tables), ``txt`` -> ``<p>`` paragraphs, ``html`` -> as is.
    * with ``images=True`` (``ops-document-analyze-002``, "PDFs and images"): an image -> markdown from its OCR
      boxes, like a scanned PDF page (paragraphs and at most one pipe table), one page.

    Results are memoised per (sha256, type). Every call returns a fresh object.

    Args:
        data: the document's bytes.
        file_type: ``pdf``, ``docx``, ``pptx``, ``html``/``htm``, ``md``/``markdown``, ``txt`` (or a MIME type);
            with ``images``, also an image type.
        images: accept images (the ``-002`` service).

    Returns:
        The analysis.

    Raises:
        UnsupportedDocument: for other types (legacy ``doc``/``ppt``/``xls``, spreadsheets, images...).
        CorruptDocument: when the bytes cannot be read as that type.
        ImportError: when a needed package of the ``local`` extra is missing.
    """
    ft = _normalise_type(file_type)
    parser = _PARSERS.get(ft)
    if parser is None and images and ft in IMAGE_TYPES:
        parser = _parse_image
    if parser is None:
        if ft in _LEGACY:
            raise UnsupportedDocument(
                f"legacy binary .{ft} files cannot be parsed offline; save the file as .{_LEGACY[ft]}"
            )
        if ft in IMAGE_TYPES:
            raise UnsupportedDocument(
                f"{ft!r} is an image; use ops-document-analyze-002, image-analyze or Qwen-OCR for images"
            )
        raise UnsupportedDocument(f"unsupported document type {file_type!r}; supported: {', '.join(sorted(_PARSERS))}")
    if not data:
        raise CorruptDocument("empty document")
    key = (sha256_hex(data), ft)
    hit = _DOC_CACHE.get_item(key)
    if hit is None:
        hit = parser(data)
        _DOC_CACHE.put(key, hit)
    return hit._copy()


# --- PDF -------------------------------------------------------------------------------------------------------


@dataclass
class _PdfLine:
    text: str
    size: float
    bold: bool
    x0: float
    x1: float
    top: float  # distance from the page top, in points
    bottom: float
    segments: list[tuple[float, float, str]]


def _pdf_lines(textpage: Any, page_height: float) -> list[_PdfLine]:
    """Characters of a text page -> lines with font size, boldness, box and gap-separated segments."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    raw = textpage.raw
    n = textpage.count_chars()
    buf = ctypes.create_string_buffer(128)
    flags = ctypes.c_int()
    lines: list[_PdfLine] = []
    chars: list[tuple[str, float, bool, float, float, float, float]] = []

    def flush() -> None:
        visible = [c for c in chars if not c[0].isspace()]
        if visible:
            sizes = sorted(c[1] for c in visible)
            size = sizes[len(sizes) // 2]
            bold = sum(c[2] for c in visible) * 2 > len(visible)
            segments: list[tuple[float, float, str]] = []
            seg_text: list[str] = []
            seg_x0 = seg_x1 = 0.0
            prev_right: float | None = None
            for ch, csize, _b, left, right, _bottom, _top in chars:
                if ch.isspace():
                    if seg_text and seg_text[-1] != " ":
                        seg_text.append(" ")
                    continue
                if prev_right is not None and left - prev_right > 0.9 * max(csize, 1.0):
                    segments.append((seg_x0, seg_x1, "".join(seg_text).strip()))
                    seg_text = []
                if not seg_text or seg_text == [" "]:
                    seg_text = []
                    seg_x0 = left
                seg_text.append(ch)
                seg_x1 = right
                prev_right = right
            if seg_text:
                segments.append((seg_x0, seg_x1, "".join(seg_text).strip()))
            text = "".join(c[0] for c in chars)
            text = re.sub(r"\s+", " ", text).strip()
            lines.append(
                _PdfLine(
                    text=text,
                    size=size,
                    bold=bold,
                    x0=min(c[3] for c in visible),
                    x1=max(c[4] for c in visible),
                    top=page_height - max(c[6] for c in visible),
                    bottom=page_height - min(c[5] for c in visible),
                    segments=segments,
                )
            )
        chars.clear()

    for i in range(n):
        code = pdfium_c.FPDFText_GetUnicode(raw, i)
        ch = chr(code) if 0 < code < 0x110000 else ""
        if ch in ("\r", "\n"):
            flush()
            continue
        if not ch or ch == "\x00" or ch == "\ufffe":
            continue
        if ch == "\x02":  # pdfium's soft hyphen marker
            ch = "-"
        left, bottom, right, top = textpage.get_charbox(i)
        size = float(pdfium_c.FPDFText_GetFontSize(raw, i))
        name_len = pdfium_c.FPDFText_GetFontInfo(raw, i, buf, len(buf), ctypes.byref(flags))
        font_name = buf.value[: max(name_len - 1, 0)].decode("latin-1", "replace").lower()
        weight = int(pdfium_c.FPDFText_GetFontWeight(raw, i))
        bold = weight >= 600 or "bold" in font_name or "black" in font_name or "heavy" in font_name
        chars.append((ch, size, bold, float(left), float(right), float(bottom), float(top)))
    flush()
    return lines  # pdfium's order: the content stream's, which is the reading order for most producers


def _md_escape_cell(text: str) -> str:
    return text.replace("|", r"\|").strip()


def _md_table(grid: Sequence[Sequence[layout.Cell]]) -> str:
    width = max(sum(c.colspan for c in row) for row in grid)
    rendered = []
    for row in grid:
        cells: list[str] = []
        for cell in row:
            cells.append(_md_escape_cell(cell.text))
            cells.extend([""] * (cell.colspan - 1))
        cells.extend([""] * (width - len(cells)))
        rendered.append("| " + " | ".join(cells) + " |")
    rendered.insert(1, "|" + "|".join([" --- "] * width) + "|")
    return "\n".join(rendered)


_LIST_RE = re.compile(r"^(?P<marker>\d{1,3}[.)]|[•◦▪\-–*·])\s+(?P<rest>.*)$")


def _pdf_page_markdown(lines: Sequence[_PdfLine], heading_levels: Mapping[float, int]) -> tuple[str, int]:
    """One page's lines -> (markdown, number of tables)."""
    blocks: list[str] = []
    tables = 0
    body_pitch = _typical_pitch(lines)
    i = 0
    para: list[str] = []
    para_kind = "p"

    def flush() -> None:
        nonlocal para, para_kind
        if para:
            text = " ".join(para)
            text = re.sub(r"(\w)- (\w)", r"\1-\2", text) if para_kind == "p" else text
            blocks.append(text)
        para = []
        para_kind = "p"

    while i < len(lines):
        line = lines[i]
        # a run of >= 2 lines with the same number (>= 2) of gap-separated segments: a table
        j = i
        while (
            j < len(lines)
            and len(lines[j].segments) >= 2
            and len(lines[j].segments) == len(lines[i].segments)
            and round(lines[j].size, 1) not in heading_levels
        ):
            j += 1
        if j - i >= 2:
            flush()
            grid = layout.cell_grid(
                [ln.segments for ln in lines[i:j]], unit=statistics.median(ln.size for ln in lines[i:j])
            )
            blocks.append(_md_table(grid))
            tables += 1
            i = j
            continue
        level = heading_levels.get(round(line.size, 1))
        if level is not None and len(line.text) <= 120:
            flush()
            # a heading wrapped over two lines of the same size continues here
            text = line.text
            while (
                i + 1 < len(lines)
                and heading_levels.get(round(lines[i + 1].size, 1)) == level
                and lines[i + 1].top - line.bottom < 0.6 * line.size
            ):
                i += 1
                text += " " + lines[i].text
            blocks.append("#" * level + " " + text)
            i += 1
            continue
        match = _LIST_RE.match(line.text)
        gap = line.top - lines[i - 1].top if i > 0 else 0.0
        # a wider gap than usual, or a jump back up the page (next column), starts a new block
        new_block = i == 0 or not para or gap > 1.35 * body_pitch or gap < -0.5 * line.size or match is not None
        if new_block:
            flush()
            if match is not None:
                marker = match.group("marker")
                prefix = marker if marker[0].isdigit() else "-"
                para_kind = "li"
                para = [f"{prefix} {match.group('rest')}"]
            else:
                para = [line.text]
        else:
            para.append(line.text)
        i += 1
    flush()
    # consecutive list items belong to one list: separate them by a single newline
    out: list[str] = []
    for block in blocks:
        if out and _LIST_RE.match(block) and _LIST_RE.match(out[-1].split("\n")[-1]):
            out[-1] += "\n" + block
        else:
            out.append(block)
    return "\n\n".join(out), tables


def _typical_pitch(lines: Sequence[_PdfLine]) -> float:
    pitches = [b.top - a.top for a, b in pairwise(lines) if 0 < b.top - a.top < 3 * b.size]
    if not pitches:
        return max((ln.size for ln in lines), default=12.0) * 1.3
    return statistics.median(pitches)


def _heading_levels(all_lines: Sequence[_PdfLine]) -> dict[float, int]:
    """Font sizes at least 15% above the body size (the most common, by characters) -> heading levels 1-6."""
    weight: dict[float, int] = {}
    for ln in all_lines:
        weight[round(ln.size, 1)] = weight.get(round(ln.size, 1), 0) + len(ln.text)
    if not weight:
        return {}
    body = max(weight, key=lambda s: weight[s])
    bigger = sorted((s for s in weight if s >= body * 1.15), reverse=True)
    return {size: min(level, 6) for level, size in enumerate(bigger, start=1)}


def _ocr_markdown(lines: Sequence[OCRLine]) -> tuple[str, int]:
    """A scanned page's OCR boxes -> (markdown paragraphs with at most one pipe table, number of tables)."""
    rows = layout.visual_rows(lines)
    if not rows:
        return "", 0
    run = layout.table_run(rows)
    blocks: list[str] = []
    before = rows[: run[0]] if run else rows
    after = rows[run[1] :] if run else []
    if before:
        blocks.append(layout.paragraph_text(before).replace("\n", "\n\n"))
    if run:
        blocks.append(_md_table(layout.rows_to_grid(rows[run[0] : run[1]])))
    if after:
        blocks.append(layout.paragraph_text(after).replace("\n", "\n\n"))
    return "\n\n".join(b for b in blocks if b), 1 if run else 0


_NO_PAGES = "the PDF has no pages (0 pages): there is nothing to parse"


def _pdf_without_pages(data: bytes) -> bool:
    """Whether pdfium's refusal to open ``data`` is because the PDF has no pages, not a password or damage.

    pdfium loads a document whose page tree is empty as a failure (``CPDF_Document::HandleLoadResult``) and leaves
    no useful error code: pypdfium2 reports "Success", or a stale code of the thread's last call ("Incorrect password
    error" was seen). So the bytes decide: no ``/Encrypt`` entry (the trailer is never compressed), no page object,
    and a page tree with ``/Count 0``.
    """
    return (
        b"/Encrypt" not in data
        and re.search(rb"/Type\s*/Page(?![A-Za-z0-9])", data) is None
        and re.search(rb"/Count\s*0(?![0-9.])", data) is not None
    )


def _parse_pdf(data: bytes) -> DocumentAnalysis:
    try:
        import pypdfium2 as pdfium
        import pypdfium2.raw as pdfium_c
    except ImportError as exc:  # pragma: no cover - core dependency
        raise missing_package("pypdfium2", exc) from exc
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise CorruptDocument("not a PDF file (no %PDF header)")
    page_lines: list[list[_PdfLine]] = []
    scanned: dict[int, Any] = {}
    image_count = 0
    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if _pdf_without_pages(data):
                raise CorruptDocument(_NO_PAGES) from exc
            raise CorruptDocument(f"cannot open PDF: {exc}") from exc
        try:
            if len(pdf) == 0:
                raise CorruptDocument(_NO_PAGES)
            for index in range(len(pdf)):
                page = pdf[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        lines = _pdf_lines(textpage, page.get_height())
                    finally:
                        textpage.close()
                    images = sum(1 for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3))
                    image_count += images
                    if sum(nonblank_chars(ln.text) for ln in lines) < SCANNED_PAGE_MIN_CHARS and images:
                        scanned[index] = page.render(scale=SCAN_RENDER_SCALE).to_pil()
                        lines = []
                    page_lines.append(lines)
                finally:
                    page.close()
        except pdfium.PdfiumError as exc:
            raise CorruptDocument(f"cannot read PDF: {exc}") from exc
        finally:
            pdf.close()
    levels = _heading_levels([ln for lines in page_lines for ln in lines])
    pages: list[str] = []
    tables = 0
    chars = 0
    for index, lines in enumerate(page_lines):
        if index in scanned:
            ocr_lines = ocr_pil(scanned[index])
            md, n_tables = _ocr_markdown(ocr_lines)
            chars += sum(nonblank_chars(ln.text) for ln in ocr_lines)
        else:
            md, n_tables = _pdf_page_markdown(lines, levels)
            chars += sum(nonblank_chars(ln.text) for ln in lines)
        pages.append(md)
        tables += n_tables
    return DocumentAnalysis(
        content="\n\n".join(p for p in pages if p),
        content_type="markdown",
        pages=pages,
        page_num=len(pages),
        usage={"token_count": chars, "table_count": tables, "image_count": image_count},
    )


def _parse_image(data: bytes) -> DocumentAnalysis:
    """An image for ``ops-document-analyze-002``: its OCR as markdown, one page (the image itself counts as one)."""
    try:
        lines = ocr_cached(data, rotate=False)
    except ImportError:
        raise
    except Exception as exc:
        raise CorruptDocument(f"cannot read the image: {exc}") from exc
    md, tables = _ocr_markdown(lines)
    chars = sum(nonblank_chars(ln.text) for ln in lines)
    return DocumentAnalysis(
        content=md,
        content_type="markdown",
        pages=[md],
        page_num=1,
        usage={"token_count": chars, "table_count": tables, "image_count": 1},
    )


# --- HTML-producing formats ------------------------------------------------------------------------------------


def _html_usage(content: str) -> dict[str, int]:
    text = re.sub(r"<(script|style)\b.*?</\1\s*>", " ", content, flags=re.IGNORECASE | re.DOTALL)
    text = re.sub(r"<img\b[^>]*>", " ", text, flags=re.IGNORECASE)  # data: URIs are not document text
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return {
        "token_count": nonblank_chars(text),
        "table_count": len(re.findall(r"<table\b", content, flags=re.IGNORECASE)),
        "image_count": len(re.findall(r"<img\b", content, flags=re.IGNORECASE)),
    }


def _html_result(content: str, pages: list[str] | None = None) -> DocumentAnalysis:
    pages = pages if pages is not None else [content]
    return DocumentAnalysis(
        content=content, content_type="html", pages=pages, page_num=len(pages), usage=_html_usage(content)
    )


def _decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _check_zip(data: bytes, kind: str) -> zipfile.ZipFile:
    if not data.startswith(b"PK"):
        raise CorruptDocument(f"not a {kind} file (not a ZIP container)")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptDocument(f"cannot open {kind} file: {exc}") from exc


_MAMMOTH_STYLE_MAP = """
p[style-name='Title'] => h1:fresh
p[style-name='Subtitle'] => h2:fresh
"""


def _parse_docx(data: bytes) -> DocumentAnalysis:
    try:
        import mammoth
    except ImportError as exc:
        raise missing_package("mammoth", exc) from exc
    with _check_zip(data, "DOCX") as zf:
        if "word/document.xml" not in zf.namelist():
            raise CorruptDocument("not a DOCX file (word/document.xml is missing)")
    try:
        result = mammoth.convert_to_html(io.BytesIO(data), style_map=_MAMMOTH_STYLE_MAP)
    except Exception as exc:
        raise CorruptDocument(f"cannot read DOCX: {exc}") from exc
    return _html_result(str(result.value))


def _parse_pptx(data: bytes) -> DocumentAnalysis:
    try:
        from pptx import Presentation
    except ImportError as exc:
        raise missing_package("python-pptx", exc) from exc
    _check_zip(data, "PPTX").close()
    try:
        prs = Presentation(io.BytesIO(data))
    except Exception as exc:
        raise CorruptDocument(f"cannot read PPTX: {exc}") from exc
    slides_html: list[str] = []
    for number, slide in enumerate(prs.slides, start=1):
        parts = [f'<section data-slide="{number}">']
        title_shape = slide.shapes.title
        title_id = title_shape.shape_id if title_shape is not None else None
        for shape in slide.shapes:
            parts.extend(_pptx_shape_html(shape, is_title=shape.shape_id == title_id))
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame.text.strip() if slide.notes_slide.notes_text_frame else ""
            if notes:
                parts.append(f"<aside>{html.escape(notes)}</aside>")
        parts.append("</section>")
        slides_html.append("\n".join(parts))
    return _html_result("\n".join(slides_html), slides_html or [""])


def _pptx_shape_html(shape: Any, *, is_title: bool) -> list[str]:
    out: list[str] = []
    if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
        for child in shape.shapes:
            out.extend(_pptx_shape_html(child, is_title=False))
        return out
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = []
        for row in shape.table.rows:
            cells = "".join(f"<td>{html.escape(cell.text)}</td>" for cell in row.cells)
            rows.append(f"<tr>{cells}</tr>")
        out.append("<table>" + "".join(rows) + "</table>")
        return out
    if getattr(shape, "shape_type", None) == 13:  # MSO_SHAPE_TYPE.PICTURE
        alt = html.escape(getattr(shape, "name", "") or "")
        out.append(f'<img alt="{alt}">')
        return out
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        paragraphs = [p for p in shape.text_frame.paragraphs if "".join(r.text for r in p.runs).strip()]
        if is_title:
            text = " ".join("".join(r.text for r in p.runs).strip() for p in paragraphs)
            if text:
                out.append(f"<h2>{html.escape(text)}</h2>")
            return out
        items = ["".join(r.text for r in p.runs).strip() for p in paragraphs]
        if len(items) > 1:
            out.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in items) + "</ul>")
        elif items:
            out.append(f"<p>{html.escape(items[0])}</p>")
    return out


def _parse_html(data: bytes) -> DocumentAnalysis:
    return _html_result(_decode_text(data))


def _parse_markdown(data: bytes) -> DocumentAnalysis:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    return _html_result(md.render(_decode_text(data)))


def _parse_text(data: bytes) -> DocumentAnalysis:
    text = _decode_text(data).replace("\r\n", "\n").replace("\r", "\n")
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    body = "\n".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paras)
    return _html_result(body)


_PARSERS: dict[str, Callable[[bytes], DocumentAnalysis]] = {
    "pdf": _parse_pdf,
    "docx": _parse_docx,
    "pptx": _parse_pptx,
    "html": _parse_html,
    "md": _parse_markdown,
    "txt": _parse_text,
}


def clear_cache() -> None:
    """Forget memoised document analyses."""
    with _DOC_CACHE.lock:
        _DOC_CACHE.clear()
