"""Tests for the emulator's offline parsing backends, on the bundled sample files in notebooks/data."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from aisearch_ingest.emulator._sniff import sniff_image_format
from aisearch_ingest.emulator.offline import (
    CorruptDocument,
    UnsupportedDocument,
    analyze_document,
    analyze_image,
    count_tokens,
    image_size,
    ocr_image,
    qwen_ocr,
)
from aisearch_ingest.protocol.qwen_tasks import build_prompt, unwrap_fence

DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"


@pytest.fixture(scope="module")
def local_extra() -> None:
    """Skip when the ``local`` extra (rapidocr, onnxruntime, mammoth) is not installed."""
    pytest.importorskip("rapidocr")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("mammoth")


def _read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _png(text_lines: list[str], size: tuple[int, int] = (700, 160)) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(text_lines):
        draw.text((20, 20 + 50 * i), line, font=ImageFont.load_default(size=28), fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------------------
# module hygiene
# --------------------------------------------------------------------------------------------------------------


def _run_python(code: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def test_import_is_cheap() -> None:
    proc = _run_python(
        """
        import sys
        import aisearch_ingest.protocol.qwen_tasks
        before = set(sys.modules)
        import aisearch_ingest.emulator.offline
        heavy = ["rapidocr", "onnxruntime", "numpy", "pypdfium2", "mammoth", "pptx", "PIL", "cv2", "tiktoken"]
        print(",".join(m for m in heavy if m in sys.modules and m not in before))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_missing_local_extra_says_how_to_install() -> None:
    proc = _run_python(
        f"""
        import sys
        sys.modules["rapidocr"] = None  # makes "import rapidocr" raise ImportError
        from aisearch_ingest.emulator import offline
        try:
            offline.ocr_image(open({str(DATA / "formula.png")!r}, "rb").read())
        except ImportError as exc:
            print("ImportError:", exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "ImportError:" in proc.stdout
    assert 'pip install "aisearch-ingest[local]"' in proc.stdout
    assert "rapidocr" in proc.stdout


@pytest.mark.slow
def test_ocr_never_downloads_prints_or_writes(local_extra: None, tmp_path: Path) -> None:
    import rapidocr

    models = Path(rapidocr.__file__).resolve().parent / "models"
    before = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in models.iterdir())
    proc = _run_python(
        f"""
        import rapidocr.utils.download_file as dl
        def refuse(*args, **kwargs):
            raise SystemExit("rapidocr tried to download " + repr(args))
        dl.DownloadFile.run = refuse
        from aisearch_ingest.emulator import offline
        lines = offline.ocr_image(open({str(DATA / "invoice.png")!r}, "rb").read())
        assert any("INV-2024-0815" in line.text for line in lines), [line.text for line in lines]
        """,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout == ""  # nothing printed
    assert proc.stderr == ""  # rapidocr's logging silenced
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory
    after = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in models.iterdir())
    assert after == before  # the wheel's model folder untouched


# --------------------------------------------------------------------------------------------------------------
# images: format, size, OCR
# --------------------------------------------------------------------------------------------------------------


def test_sniff_image_format_and_size() -> None:
    from PIL import Image

    png = _read("invoice.png")
    assert sniff_image_format(png) == "png"
    assert image_size(png) == (1000, 900)
    for fmt, name in (("JPEG", "jpg"), ("BMP", "bmp"), ("TIFF", "tiff"), ("WEBP", "webp"), ("GIF", "gif")):
        buf = io.BytesIO()
        Image.new("RGB", (31, 17), "white").save(buf, format=fmt)
        assert sniff_image_format(buf.getvalue()) == name
        assert image_size(buf.getvalue()) == (31, 17)
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    assert sniff_image_format(heic) == "heic"
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # without the HEIF codec (the `local` extra) HEIC is refused, saying what to install
        with pytest.raises(UnsupportedDocument, match="pillow-heif"):
            image_size(heic)
    else:
        with pytest.raises(CorruptDocument):
            image_size(heic)  # a header alone is not an image
        register_heif_opener()
        buf = io.BytesIO()
        Image.new("RGB", (31, 17), "white").save(buf, format="HEIF")
        assert sniff_image_format(buf.getvalue()) == "heic"
        assert image_size(buf.getvalue()) == (31, 17)
    assert sniff_image_format(b"%PDF-1.7") is None
    assert sniff_image_format(b"") is None
    with pytest.raises(CorruptDocument):
        image_size(b"definitely not an image")


def test_ocr_finds_known_words_in_reading_order(local_extra: None) -> None:
    data = _read("invoice.png")
    lines = ocr_image(data)
    texts = [line.text for line in lines]
    joined = "\n".join(texts)
    for expected in ("INVOICE", "INV-2024-0815", "Blue Harbor Trading Co.", "Kestrel Labs GmbH", "3,310.00"):
        assert expected in joined
    assert texts[0] == "INVOICE"
    assert texts[-1].startswith("Payment due within 30 days")
    assert texts.index("Item") < texts.index("Qty") < texts.index("Unit Price") < texts.index("Amount")
    width, height = image_size(data)
    for line in lines:
        assert len(line.box) == 4
        assert 0.0 <= line.score <= 1.0
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = line.box
        assert x0 < x1 and y1 < y2 and x3 < x2 and y0 < y3  # clockwise from top-left
        assert all(-2 <= x <= width + 2 and -2 <= y <= height + 2 for x, y in line.box)


def test_ocr_is_memoised_but_returns_fresh_objects(local_extra: None) -> None:
    data = _read("formula.png")
    first = ocr_image(data)
    first[0].text = "mutated"
    first.clear()
    second = ocr_image(data)
    assert second and second[0].text != "mutated"
    assert [line.text for line in second] == [line.text for line in ocr_image(data)]


def test_ocr_is_thread_safe(local_extra: None) -> None:
    images = {f"Thread test number {i}": _png([f"Thread test number {i}"]) for i in (101, 202)}
    jobs = [text for text in images for _ in range(4)]
    barrier = threading.Barrier(len(jobs))

    def work(text: str) -> tuple[str, list[str]]:
        barrier.wait()
        return text, [line.text for line in ocr_image(images[text])]

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(work, jobs))
    for text, got in results:
        assert got == [text]


def test_corrupt_or_empty_images(local_extra: None) -> None:
    with pytest.raises(CorruptDocument):
        ocr_image(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(CorruptDocument):
        ocr_image(b"")
    with pytest.raises(CorruptDocument):
        qwen_ocr(b"GIF89a...", task="text_recognition", prompt=None, result_schema=None)


def test_blank_image_has_no_text(local_extra: None) -> None:
    blank = _png([], size=(300, 120))
    assert ocr_image(blank) == []
    assert qwen_ocr(blank, task="text_recognition", prompt=None, result_schema=None).text == ""
    table = qwen_ocr(blank, task="table_parsing", prompt=None, result_schema=None)
    assert unwrap_fence(table.text) == ("<table>\n</table>", "html")


# --------------------------------------------------------------------------------------------------------------
# Qwen-OCR tasks
# --------------------------------------------------------------------------------------------------------------

INVOICE_SCHEMA = {"Invoice No": "", "seller": "", "Total": "", "Purchase Order": "", "buyer name": ""}


def test_kie_fills_known_keys_and_null_for_missing(local_extra: None) -> None:
    answer = qwen_ocr(
        _read("invoice.png"), task="key_information_extraction", prompt=None, result_schema=INVOICE_SCHEMA
    )
    assert answer.ocr_result is not None
    kv = answer.ocr_result["kv_result"]
    assert kv == {
        "Invoice No": "INV-2024-0815",
        "seller": "Blue Harbor Trading Co.",
        "Total": "EUR 3,310.00",
        "Purchase Order": None,
        "buyer name": "Kestrel Labs GmbH",
    }
    inner, lang = unwrap_fence(answer.text)
    assert lang == "json"
    assert json.loads(inner) == kv
    assert inner.startswith('{\n    "Invoice No"')  # 4-space indent, as the page shows


def test_kie_nested_and_list_templates(local_extra: None) -> None:
    schema: dict[str, Any] = {"parties": {"Seller": "", "Buyer": ""}, "dates": [{"Date": ""}], "notes": [""]}
    kv = qwen_ocr(_read("invoice.png"), task="key_information_extraction", prompt=None, result_schema=schema)
    assert kv.ocr_result == {
        "kv_result": {
            "parties": {"Seller": "Blue Harbor Trading Co.", "Buyer": "Kestrel Labs GmbH"},
            "dates": [{"Date": "2024-11-14"}],
            "notes": [],
        }
    }


def test_kie_full_field_mode(local_extra: None) -> None:
    answer = qwen_ocr(_read("invoice.png"), task="key_information_extraction", prompt=None, result_schema=None)
    assert answer.ocr_result is not None
    kv = answer.ocr_result["kv_result"]
    assert kv["Seller"] == "Blue Harbor Trading Co."
    assert kv["Date"] == "2024-11-14"
    assert kv["VAT (0%)"] == "0.00"
    assert "INVOICE" not in kv


def test_kie_value_on_next_line_and_times_are_not_keys(local_extra: None) -> None:
    data = _png(["Seller:", "Acme Corp", "Time: 10:30", "Open 09:00 daily"], size=(500, 230))
    answer = qwen_ocr(data, task="key_information_extraction", prompt=None, result_schema=None)
    assert answer.ocr_result == {"kv_result": {"Seller": "Acme Corp", "Time": "10:30"}}


def test_kie_from_openai_style_prompt(local_extra: None) -> None:
    prompt = build_prompt("key_information_extraction", {"Invoice No": "", "Due date": ""})
    answer = qwen_ocr(_read("invoice.png"), task=None, prompt=prompt, result_schema=None)
    assert answer.ocr_result == {"kv_result": {"Invoice No": "INV-2024-0815", "Due date": None}}


def test_table_parsing_rebuilds_the_table(local_extra: None) -> None:
    answer = qwen_ocr(_read("invoice.png"), task="table_parsing", prompt=None, result_schema=None)
    body, lang = unwrap_fence(answer.text)
    assert lang == "html"
    assert body.startswith("<table>") and body.endswith("</table>")
    rows = re.findall(r"<tr>(.*?)</tr>", body, flags=re.DOTALL)
    assert len(rows) == 4  # header + three items; the Key: value lines are not part of the table
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    assert cells[0] == ["Item", "Qty", "Unit Price", "Amount"]
    assert cells[2] == ["Calibration kit", "2", "145.00", "290.00"]
    assert all(len(row) == 4 for row in cells)


def test_advanced_recognition_boxes_lie_inside_the_image(local_extra: None) -> None:
    data = _read("invoice.png")
    width, height = image_size(data)
    answer = qwen_ocr(data, task="advanced_recognition", prompt=None, result_schema=None)
    assert answer.ocr_result is not None
    words = answer.ocr_result["words_info"]
    assert len(words) == len(ocr_image(data))
    for word in words:
        assert set(word) == {"rotate_rect", "location", "text"}
        loc = word["location"]
        assert len(loc) == 8 and all(isinstance(v, int) for v in loc)
        xs, ys = loc[0::2], loc[1::2]
        assert all(-2 <= x <= width + 2 for x in xs) and all(-2 <= y <= height + 2 for y in ys)
        cx, cy, w, h, angle = word["rotate_rect"]
        assert min(xs) <= cx <= max(xs) and min(ys) <= cy <= max(ys)
        assert -90 <= angle <= 90
        assert w <= h or len(word["text"]) <= 2  # the page's convention: w = text height, h = line length
    inv = next(word for word in words if "INV-2024-0815" in word["text"])
    assert inv["location"][0] < 80 and 120 < inv["location"][1] < 150
    inner, lang = unwrap_fence(answer.text)
    assert lang == "json"
    assert [item["text"] for item in json.loads(inner)] == [word["text"] for word in words]


def test_text_recognition_and_custom_prompt(local_extra: None) -> None:
    data = _read("invoice.png")
    text = qwen_ocr(data, task="text_recognition", prompt=None, result_schema=None).text
    assert text.splitlines()[:3] == ["INVOICE", "Invoice No: INV-2024-0815", "Date: 2024-11-14"]
    assert "Total: EUR 3,310.00" in text.splitlines()
    assert qwen_ocr(data, task="multi_lan", prompt=None, result_schema=None).text == text
    custom = qwen_ocr(data, task=None, prompt="Who is the seller?", result_schema=None)
    assert custom.text == text and custom.ocr_result is None
    with pytest.raises(ValueError, match="unknown Qwen-OCR task"):
        qwen_ocr(data, task="summarise", prompt=None, result_schema=None)


def test_document_parsing_gives_latex(local_extra: None) -> None:
    answer = qwen_ocr(_read("invoice.png"), task="document_parsing", prompt=None, result_schema=None)
    body, lang = unwrap_fence(answer.text)
    assert lang == "latex"
    assert body.startswith("\\documentclass{article}") and body.rstrip().endswith("\\end{document}")
    assert "\\section*{INVOICE}" in body
    assert "\\begin{tabular}{|l|l|l|l|}" in body
    assert "Calibration kit & 2 & 145.00 & 290.00 \\\\" in body
    assert "VAT (0\\%)" in body


def test_formula_recognition(local_extra: None) -> None:
    answer = qwen_ocr(_read("formula.png"), task="formula_recognition", prompt=None, result_schema=None)
    assert answer.text.splitlines() == ["$$E = mc^{2}$$", "$$a^{2} + b^{2} = c^{2}$$"]


def test_scan_character_error_rate(local_extra: None) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
    try:
        from bench_ocr_cer import cer
    finally:
        sys.path.pop(0)
    answer = qwen_ocr(_read("scan_page.png"), task="text_recognition", prompt=None, result_schema=None)
    assert cer(answer.text, (DATA / "scan_page.txt").read_text(encoding="utf-8")) < 0.05
    assert len(answer.text.splitlines()) == 3  # three paragraphs, wrapped lines merged


@pytest.mark.slow
def test_enable_rotate_recovers_a_sideways_image(local_extra: None) -> None:
    from PIL import Image

    sideways = io.BytesIO()
    Image.open(DATA / "invoice.png").transpose(Image.Transpose.ROTATE_90).save(sideways, format="PNG")
    data = sideways.getvalue()
    fixed = qwen_ocr(data, task="text_recognition", prompt=None, result_schema=None, enable_rotate=True)
    assert "Invoice No: INV-2024-0815" in fixed.text.splitlines()
    plain = qwen_ocr(data, task="text_recognition", prompt=None, result_schema=None)
    assert "Invoice No: INV-2024-0815" not in plain.text.splitlines()


# --------------------------------------------------------------------------------------------------------------
# image-analyze
# --------------------------------------------------------------------------------------------------------------


def test_analyze_image_ocr_and_vlm(local_extra: None) -> None:
    data = _read("invoice.png")
    ocr = analyze_image(data, "ops-image-analyze-ocr-001")
    assert ocr.content_type == "plain"
    assert ocr.usage == {"pv_count": 1}
    assert "Seller: Blue Harbor Trading Co." in ocr.content.splitlines()
    vlm = analyze_image(data, "ops-image-analyze-vlm-001")
    assert vlm.content_type == "plain"
    assert vlm.content.startswith("The image is a 1000x900 pixel landscape image that looks like a table or form.")
    assert "white" in vlm.content.split("\n")[0]
    assert vlm.content.endswith(ocr.content)
    assert vlm.usage == {"token_count": count_tokens(vlm.content)}
    assert 50 < vlm.usage["token_count"] < len(vlm.content)
    with pytest.raises(UnsupportedDocument, match="service id"):
        analyze_image(data, "ops-image-analyze-xyz")


def test_count_tokens_matches_cl100k() -> None:
    assert count_tokens("hello world") == 2
    assert count_tokens("") == 0


# --------------------------------------------------------------------------------------------------------------
# document-analyze
# --------------------------------------------------------------------------------------------------------------


def test_pdf_pages_markdown_and_usage() -> None:
    result = analyze_document(_read("annual_report.pdf"), "pdf")
    assert result.content_type == "markdown"
    assert result.page_num == 3 == len(result.pages)
    assert result.content == "\n\n".join(result.pages)
    p1, p2, p3 = result.pages
    assert p1.startswith("# Brightwater Instruments Annual Report 2024\n\n")
    assert "\n### Letter from the Chief Executive\n" in p1
    assert "Marta Ellingsen, Chief Executive Officer" in p1
    assert "\n1. Grow recurring service revenue to 30 percent of total revenue.\n2. Open a sales" in p1
    assert p2.startswith("## Financial Performance\n\n")
    assert "| Quarter | Revenue (EUR million) | Gross margin | Sensors shipped |\n| --- | --- | --- | --- |" in p2
    assert "| Q3 2024 | 52.6 | 41.7% | 16,900 |" in p2
    assert "Third-quarter revenue of EUR 52.6 million was a record" in p2  # wrapped lines joined
    assert "EUR 225 to 235 million" in p3
    assert result.usage["table_count"] == 1
    assert result.usage["image_count"] == 0
    body = re.sub(r"[#|\-\s]", "", result.content)
    assert abs(result.usage["token_count"] - len(body)) < 0.05 * len(body)


def test_pdf_scanned_page_is_ocred(local_extra: None, tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.image(str(DATA / "scan_page.png"), x=0, y=0, w=210)
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.cell(0, 10, "A page with a text layer.")
    data = bytes(pdf.output())
    result = analyze_document(data, "pdf")
    assert result.page_num == 2
    assert "lighthouse keepers of the northern coast" in result.pages[0]
    assert result.pages[1] == "A page with a text layer."
    assert result.usage["image_count"] == 1
    assert result.usage["token_count"] > 900


def test_docx_to_html_with_table() -> None:
    pytest.importorskip("mammoth")
    result = analyze_document(_read("product_faq.docx"), "docx")
    assert result.content_type == "html"
    assert result.page_num == 1 and result.pages == [result.content]
    html = result.content
    assert "<h1>AquaSense Pro 3 - Frequently Asked Questions</h1>" in html
    assert "<h2>How do I reset my password?</h2>" in html
    assert "Settings &gt; Account &gt; Reset password" in html
    assert "<table>" in html and "<td><p>Professional</p></td>" in html
    assert "<ul><li>the serial number printed on the sensor housing" in html
    assert result.usage["table_count"] == 1


def test_pptx_to_html_one_page_per_slide(tmp_path: Path) -> None:
    pytest.importorskip("pptx")
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = "Roadmap 2025"
    slide.placeholders[1].text_frame.text = "Firmware 2.0 in March"
    slide.placeholders[1].text_frame.add_paragraph().text = "Singapore office in June"
    slide2 = prs.slides.add_slide(prs.slide_layouts[5])
    slide2.shapes.title.text = "Revenue"
    table = slide2.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for (r, c), value in {(0, 0): "Quarter", (0, 1): "EUR m", (1, 0): "Q3", (1, 1): "52.6"}.items():
        table.cell(r, c).text = value
    buf = io.BytesIO()
    prs.save(buf)
    result = analyze_document(buf.getvalue(), "pptx")
    assert result.content_type == "html"
    assert result.page_num == 2 == len(result.pages)
    assert "<h2>Roadmap 2025</h2>" in result.pages[0]
    assert "<li>Singapore office in June</li>" in result.pages[0]
    assert "<td>Q3</td><td>52.6</td>" in result.pages[1]
    assert result.usage["table_count"] == 1


def test_markdown_text_and_html_become_html() -> None:
    md = analyze_document(_read("meeting_notes.md"), "markdown")
    assert md.content_type == "html"
    assert "<h1>Product launch sync - 2025-01-09</h1>" in md.content
    assert "<th>Owner</th>" in md.content
    assert '<pre><code class="language-yaml">' in md.content
    assert md.usage["table_count"] == 1

    txt = analyze_document(b"First para\nline two\n\nSecond <para> & more\n", "txt")
    assert txt.content == "<p>First para<br>\nline two</p>\n<p>Second &lt;para&gt; &amp; more</p>"
    assert txt.usage["token_count"] == len("Firstparalinetwo") + len("Second<para>&more")

    page = _read("overview.html")
    html = analyze_document(page, "htm")
    assert html.content == page.decode("utf-8")
    assert html.usage == {
        "token_count": html.usage["token_count"],
        "table_count": 1,
        "image_count": 0,
    }
    assert html.usage["token_count"] > 500


def test_unsupported_types() -> None:
    with pytest.raises(UnsupportedDocument, match=r"legacy binary \.doc"):
        analyze_document(b"\xd0\xcf\x11\xe0", "doc")
    with pytest.raises(UnsupportedDocument, match="image"):
        analyze_document(_read("invoice.png"), "png")
    with pytest.raises(UnsupportedDocument, match="unsupported document type"):
        analyze_document(b"a,b\n1,2\n", "csv")


@pytest.mark.parametrize(
    ("data", "file_type"),
    [
        (b"", "pdf"),
        (b"this is not a pdf", "pdf"),
        (b"%PDF-1.7\n%garbage that is no PDF at all\n", "pdf"),
        (b"not a zip", "docx"),
        (b"PK\x03\x04 truncated zip", "docx"),
        (b"PK\x03\x04 truncated zip", "pptx"),
    ],
)
def test_corrupt_documents(data: bytes, file_type: str) -> None:
    pytest.importorskip("mammoth")
    with pytest.raises(CorruptDocument):
        analyze_document(data, file_type)


def test_zip_that_is_not_a_docx() -> None:
    pytest.importorskip("mammoth")
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(CorruptDocument, match=r"word/document\.xml"):
        analyze_document(buf.getvalue(), "docx")


def test_document_results_are_fresh_copies() -> None:
    first = analyze_document(_read("annual_report.pdf"), "pdf")
    first.pages.clear()
    first.usage["table_count"] = 99
    second = analyze_document(_read("annual_report.pdf"), "pdf")
    assert len(second.pages) == 3 and second.usage["table_count"] == 1
