"""The public Qwen-OCR cost estimate (estimate.py) against the vendor page's formula and worked examples."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aisearch_ingest.errors import InvalidInputError
from aisearch_ingest.estimate import FileEstimate, estimate_file, estimate_image_tokens
from aisearch_ingest.pages import open_pages
from aisearch_ingest.sources import load_source


def page_formula(width: int, height: int, min_pixels: int = 28 * 28 * 4, max_pixels: int = 8192 * 28 * 28) -> int:
    """The vendor page's "Sample code for estimating image tokens", line for line, plus the billing minimum of four
    28x28 blocks ("an image costs a minimum of four tokens")."""
    h_bar = round(height / 28) * 28
    w_bar = round(width / 28) * 28
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / 28) * 28
        w_bar = math.floor(width / beta / 28) * 28
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / 28) * 28
        w_bar = math.ceil(width * beta / 28) * 28
    token = int((h_bar * w_bar) / (28 * 28))
    return max(token, 4) + 2


# (width, height, min_pixels, max_pixels, expected tokens, where from)
TABLE = [
    # vendor page worked examples: size from the sample URL ("-tps-<w>-<h>"), tokens from the response's usage
    (689, 487, 3136, 6422528, 427, "getting started: train ticket 689x487 -> image_tokens 427"),
    (1500, 1734, 401408, 6422528, 3350, "document_parsing sample 1500x1734 (min_pixels 401408) -> 3350"),
    (6000, 3000, 401408, 6422528, 8194, "multi_lan sample 6000x3000 (max_pixels binds) -> 8194"),
    # hand-checked sizes
    (28, 28, 3136, 6422528, 6, "one block, scaled up to min_pixels: 4 blocks + 2"),
    (11, 11, 3136, 6422528, 6, "smallest legal image"),
    (100, 100, 1, 6422528, 18, "min_pixels=1: 112x112 = 16 blocks + 2"),
    (20, 20, 1, 6422528, 6, "one 28x28 block billed as the 4-block minimum"),
    (1000, 1000, 3136, 6422528, 1298, "1008x1008 = 1296 blocks + 2"),
    (1240, 1754, 3136, 6422528, 2774, "A4 page at 150 dpi: 1764x1232 = 63x44 blocks + 2"),
    (2480, 3508, 3136, 6422528, 8134, "A4 at 300 dpi, scaled down: 107x76 blocks + 2"),
    (4000, 3000, 3136, 23_520_000, 15303, "12 MP photo with max_pixels raised to 23.52 M"),
]


@pytest.mark.parametrize(("w", "h", "lo", "hi", "tokens", "why"), TABLE, ids=[row[-1] for row in TABLE])
def test_estimate_matches_the_documented_formula(w: int, h: int, lo: int, hi: int, tokens: int, why: str) -> None:
    assert page_formula(w, h, lo, hi) == tokens  # the table agrees with the page's own code
    assert estimate_image_tokens((w, h), min_pixels=lo, max_pixels=hi) == tokens


@settings(max_examples=300, deadline=None)
@given(
    w=st.integers(min_value=11, max_value=12000),
    h=st.integers(min_value=11, max_value=12000),
    lo=st.sampled_from([None, 3136, 401408]),
    hi=st.sampled_from([None, 1_003_520, 6422528, 23_520_000]),
)
def test_estimate_equals_page_code_everywhere(w: int, h: int, lo: int | None, hi: int | None) -> None:
    expected = page_formula(w, h, lo or 3136, hi or 6422528)
    assert estimate_image_tokens((w, h), min_pixels=lo, max_pixels=hi) == expected


def png(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format=fmt)
    return buffer.getvalue()


def test_estimate_from_files_bytes_and_data_uris(tmp_path: Path) -> None:
    data = png((689, 487), "JPEG")
    path = tmp_path / "ticket.jpg"
    path.write_bytes(data)
    uri = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    for item in (str(path), path, data, uri, load_source(data, file_name="t.jpg")):
        assert estimate_image_tokens(item) == 427
    est = estimate_file(path)
    assert est == FileEstimate(
        source=str(path),
        file_type="jpg",
        pages=1,
        calls=1,
        page_sizes=((689, 487),),
        page_image_tokens=(427,),
        image_tokens=427,
    )


def pdf(pages: int) -> bytes:
    from fpdf import FPDF

    doc = FPDF(unit="pt", format="A4")
    doc.set_font("helvetica", size=12)
    for n in range(pages):
        doc.add_page()
        doc.text(20, 40, f"page {n + 1}")
    return bytes(doc.output())


def test_estimate_pdf_per_page_on_the_images_that_are_sent() -> None:
    data = pdf(3)
    est = estimate_file(data, dpi=150)
    assert (est.pages, est.calls, est.file_type) == (3, 3, "pdf")
    assert est.page_sizes == ((1241, 1754),) * 3
    assert est.page_image_tokens == (page_formula(1241, 1754),) * 3
    assert est.image_tokens == 3 * page_formula(1241, 1754)
    # the sizes are those of the rendered page images
    with open_pages(load_source(data), dpi=150) as doc:
        page = doc.render(2)
    assert page.data is not None
    with Image.open(io.BytesIO(page.data)) as img:
        assert img.size == est.page_sizes[1]
    # a high dpi is capped at max_pixels, so the estimate never exceeds the max_pixels token count
    high = estimate_file(data, dpi=600)
    assert all(t <= 8192 + 2 for t in high.page_image_tokens)
    low_cap = estimate_file(data, dpi=300, max_pixels=1_003_520)
    assert all(w * h <= 1_003_520 for w, h in low_cap.page_sizes)


def test_estimate_multipage_tiff() -> None:
    frames = [Image.new("RGB", (600, 400), "white"), Image.new("RGB", (400, 600), "white")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    est = estimate_file(buffer.getvalue())
    assert est.pages == 2
    assert est.page_image_tokens == (page_formula(600, 400), page_formula(400, 600))
    with pytest.raises(InvalidInputError, match="estimate_file"):
        estimate_image_tokens(buffer.getvalue())


def test_estimate_rejects_what_it_cannot_size() -> None:
    with pytest.raises(InvalidInputError):
        estimate_file("https://example.com/a.png")
    with pytest.raises(InvalidInputError):
        estimate_image_tokens("https://example.com/a.png")
    with pytest.raises(ValueError, match="width, height"):
        estimate_image_tokens((1, 2, 3))
