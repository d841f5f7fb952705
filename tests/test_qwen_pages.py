"""Page images for Qwen-OCR (pages.py): PDF rendering with the DPI cap, multi-page TIFF frames, and the documented
image limits. No network."""

from __future__ import annotations

import io
import math
import os

import pytest
from PIL import Image

from aisearch_ingest.errors import InvalidInputError
from aisearch_ingest.limits import MAX_IMAGE_BYTES, check_image, encoded_size, pixel_limit
from aisearch_ingest.pages import is_multipage, open_pages, render_scale
from aisearch_ingest.protocol.qwen_models import spec_for
from aisearch_ingest.sources import load_source

DEFAULT_MAX_PIXELS = 8192 * 32 * 32  # the default model qwen-vl-ocr's default max_pixels (API reference l.404)


def pdf_bytes(pages: list[str], *, size: tuple[float, float] | None = None) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=size or "A4")
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.text(20, 40, text)
    return bytes(pdf.output())


def image_bytes(size: tuple[int, int], fmt: str = "PNG", *, noise: bool = False) -> bytes:
    if noise:
        image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    else:
        image = Image.new("RGB", size, "white")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def tiff_bytes(sizes: list[tuple[int, int]]) -> bytes:
    frames = [Image.new("RGB", size, (255, 255 - 40 * i, 255)) for i, size in enumerate(sizes)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def test_pdf_pages_render_at_dpi_in_order() -> None:
    source = load_source(pdf_bytes(["one", "two", "three"]), file_name="report.pdf")
    assert is_multipage(source)
    with open_pages(source, dpi=150) as doc:
        assert doc.page_count == 3
        doc.check()
        # A4 is 595.28 x 841.89 pt; pypdfium2 rounds the bitmap up
        assert {(lay.width, lay.height) for lay in doc.layouts} == {(1241, 1754)}
        pages = list(doc.iter_pages())
    assert [p.page for p in pages] == [1, 2, 3]
    assert [p.file_name for p in pages] == ["report-p1.png", "report-p2.png", "report-p3.png"]
    for page in pages:
        assert page.file_type == "png" and page.origin == "report.pdf"
        assert page.data is not None
        with Image.open(io.BytesIO(page.data)) as img:
            assert img.size == (1241, 1754)


def test_dpi_is_capped_so_a_page_stays_within_max_pixels() -> None:
    source = load_source(pdf_bytes(["big"]), file_name="a.pdf")
    assert spec_for("qwen-vl-ocr").default_max_pixels == DEFAULT_MAX_PIXELS
    with open_pages(source, dpi=600) as doc:  # 4961 x 7016 = 34.8 M pixels uncapped
        (layout,) = doc.layouts
        assert layout.width * layout.height <= DEFAULT_MAX_PIXELS
        assert layout.width * layout.height > 0.99 * DEFAULT_MAX_PIXELS
        page = doc.render(1)
    assert page.data is not None
    with Image.open(io.BytesIO(page.data)) as img:
        assert img.size == (layout.width, layout.height)
    with open_pages(source, dpi=600, max_pixels=500_000) as doc:
        assert doc.layouts[0].width * doc.layouts[0].height <= 500_000


@pytest.mark.parametrize(
    ("w", "h", "dpi", "cap"), [(595.28, 841.89, 150, 6422528), (612, 792, 300, 1_000_000), (10, 3000, 72, 784 * 4)]
)
def test_render_scale_respects_ceil_rounding(w: float, h: float, dpi: int, cap: int) -> None:
    scale = render_scale(w, h, dpi=dpi, max_pixels=cap)
    assert scale <= dpi / 72
    assert math.ceil(w * scale) * math.ceil(h * scale) <= cap


def test_pdf_page_too_narrow_is_rejected_with_its_page_number() -> None:
    # 3 pt wide: 7 px at 150 dpi, under the 10 px minimum
    source = load_source(pdf_bytes(["x"], size=(3, 400)), file_name="strip.pdf")
    with open_pages(source, dpi=150) as doc, pytest.raises(InvalidInputError) as info:
        doc.check()
    assert info.value.limit == "min_side"
    assert "strip.pdf page 1" in str(info.value)


def test_damaged_pdf_is_invalid_input() -> None:
    source = load_source(b"%PDF-1.7\n garbage", file_name="bad.pdf")
    with pytest.raises(InvalidInputError) as info:
        open_pages(source)
    assert info.value.limit == "unreadable"


def test_multipage_tiff_frames_become_png_pages() -> None:
    source = load_source(tiff_bytes([(300, 200), (200, 300)]), file_name="scan.tiff")
    assert is_multipage(source)
    with open_pages(source) as doc:
        doc.check()
        assert [(lay.width, lay.height) for lay in doc.layouts] == [(300, 200), (200, 300)]
        pages = list(doc.iter_pages())
    assert [p.page for p in pages] == [1, 2]
    sizes = []
    for page in pages:
        assert page.data is not None and page.file_type == "png"
        with Image.open(io.BytesIO(page.data)) as img:
            sizes.append(img.size)
    assert sizes == [(300, 200), (200, 300)]
    single = load_source(tiff_bytes([(300, 200)]), file_name="one.tiff")
    assert not is_multipage(single)


def test_large_tiff_frame_is_scaled_to_max_pixels() -> None:
    source = load_source(tiff_bytes([(2000, 1000), (100, 100)]), file_name="big.tiff")
    with open_pages(source, max_pixels=500_000) as doc:
        first = doc.layouts[0]
        assert first.width * first.height <= 500_000
        assert abs(first.width / first.height - 2.0) < 0.01
        assert doc.render(1).page == 1


def test_page_over_10mb_as_png_is_sent_as_jpeg() -> None:
    # 2000x2000 random noise does not compress: ~12 MB as PNG, well under as JPEG
    noisy = Image.frombytes("RGB", (2000, 2000), os.urandom(2000 * 2000 * 3))
    plain = Image.new("RGB", (50, 50), "white")
    buffer = io.BytesIO()
    noisy.save(buffer, format="TIFF", save_all=True, append_images=[plain])
    source = load_source(buffer.getvalue(), file_name="noise.tiff")
    with open_pages(source) as doc:
        page = doc.render(1)
        assert doc.render(2).file_type == "png"
    assert page.file_type == "jpg"
    assert page.data is not None
    assert encoded_size(len(page.data), "image/jpeg") <= MAX_IMAGE_BYTES


def test_check_image_limits() -> None:
    ok = load_source(image_bytes((100, 50)), file_name="ok.png")
    assert check_image(ok) == (100, 50)
    cases = [
        (image_bytes((10, 50)), "min_side"),
        (image_bytes((2300, 11)), "aspect_ratio"),
        (image_bytes((4000, 4000)), "max_pixels"),
        (image_bytes((40, 40), "GIF"), "file_type"),
    ]
    for data, limit in cases:
        with pytest.raises(InvalidInputError) as info:
            check_image(load_source(data, file_name="x.img"))
        assert info.value.limit == limit
    # a larger max_pixels raises the pixel limit, up to 23.52 M
    assert check_image(load_source(image_bytes((4000, 4000)), file_name="p.png"), max_pixels=20_000_000)
    assert pixel_limit(None) == 15_680_000
    assert pixel_limit(30_000_000) == 23_520_000
    # the 32-px models' ceiling is 30000x32x32 (API reference l.404)
    assert pixel_limit(30_000_000, pixel_upper=30_720_000) == 30_000_000
    assert pixel_limit(40_000_000, pixel_upper=30_720_000) == 30_720_000
    big = load_source(image_bytes((5000, 5000)), file_name="p.png")  # 25 M pixels
    with pytest.raises(InvalidInputError):
        check_image(big, max_pixels=23_520_000)
    assert check_image(big, max_pixels=25_000_000, pixel_upper=30_720_000)


def test_check_image_url_by_extension() -> None:
    assert check_image(load_source("https://example.com/a.jpg")) is None
    assert check_image(load_source("https://example.com/signed?sig=1")) is None
    for url, value in (("https://example.com/doc.pdf", "pdf"), ("https://example.com/a.docx", "docx")):
        with pytest.raises(InvalidInputError) as info:
            check_image(load_source(url))
        assert info.value.limit == "file_type" and info.value.value == value
