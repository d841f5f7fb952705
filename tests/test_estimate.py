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


def page_formula(
    width: int, height: int, min_pixels: int = 32 * 32 * 3, max_pixels: int = 8192 * 32 * 32, factor: int = 32
) -> int:
    """The vendor pages' "Sample code for estimating image tokens", line for line, with the model's factor.

    qwen-ocr.2026-02.en.md l.297: "# Adjust the height to be a multiple of 28 or 32." -- the Feb 2026 sample
    hard-codes 32 (``h_bar = round(height / 32) * 32``, ``min_pixels=32 * 32 * 3, max_pixels=8192 * 32 * 32``),
    the Nov 2025 sample (qwen-ocr.en.txt l.200) 28 (``min_pixels=28 * 28 * 4, max_pixels=8192 * 28 * 28``).
    The 28-px models add the Nov 2025 billing minimum of four blocks ("an image costs a minimum of four tokens")."""
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    token = int((h_bar * w_bar) / (factor * factor))
    return (max(token, 4) if factor == 28 else token) + 2


NEW = "qwen-vl-ocr"  # 32x32 token pixels (the default model)
OLD = "qwen-vl-ocr-2025-04-13"  # 28x28 token pixels

# (model, width, height, min_pixels, max_pixels, expected tokens, where from); None = the model's default
TABLE = [
    # --- 32x32 models: the page's worked numbers
    # qwen-ocr-api-reference.2026.zh.md l.763, the qwen3.5-ocr stream's last chunk for the train ticket
    # (request l.67: "...-tps-689-487.jpg"): "prompt_tokens_details":{...,"image_tokens":332,"text_tokens":181}
    ("qwen3.5-ocr", 689, 487, None, None, 332, "qwen3.5-ocr train ticket 689x487 -> image_tokens 332"),
    # the Feb 2026 sample's own bounds: "min_pixels=32 * 32 * 3, max_pixels=8192 * 32 * 32" (en l.315)
    (NEW, 689, 487, 32 * 32 * 3, 8192 * 32 * 32, 332, "qwen-vl-ocr train ticket with the sample's bounds"),
    # qwen-ocr.2026-02.en.md l.2188 ("...-tps-6000-3000.png", "min_pixels": 3072, "max_pixels": 8388608) and
    # l.2337 '"image_tokens": 8194' -- max_pixels binds: 2048x4096 / 1024 + 2
    (NEW, 6000, 3000, 3072, 8388608, 8194, "multi_lan sample 6000x3000 (32-px, max_pixels binds) -> 8194"),
    # NB the Feb 2026 EN page's other response samples (l.665 "image_tokens": 427, l.1768 3350) sit beside 32-px
    # request bounds but are the Nov 2025 (28-px) figures, unchanged: 32-px smart_resize gives 332 and 2540.
    (NEW, 1500, 1734, None, None, 2540, "document_parsing image 1500x1734 at 32 px: 1728x1504 / 1024 + 2"),
    (NEW, 11, 11, None, None, 6, "smallest legal image, scaled up past min_pixels 3072: 64x64 = 4 blocks + 2"),
    (NEW, 1000, 1000, None, None, 963, "992x992 = 961 blocks + 2"),
    (NEW, 1241, 1754, None, None, 2147, "A4 page at 150 dpi: 1760x1248 = 55x39 blocks + 2"),
    (NEW, 4000, 3000, None, None, 8114, "12 MP photo, scaled down to 2496x3328"),
    (NEW, 4000, 3000, None, 30_720_000, 11752, "12 MP photo under the 30.72 M upper limit: 94x125 blocks + 2"),
    # --- 28x28 models: the Nov 2025 page's worked examples (size from the sample URL "-tps-<w>-<h>", tokens from
    # the response's usage), e.g. qwen-ocr.en.txt l.545 '"image_tokens": 427'
    (OLD, 689, 487, 3136, 6422528, 427, "getting started: train ticket 689x487 -> image_tokens 427"),
    (OLD, 1500, 1734, 401408, 6422528, 3350, "document_parsing sample 1500x1734 (min_pixels 401408) -> 3350"),
    (OLD, 6000, 3000, 401408, 6422528, 8194, "multi_lan sample 6000x3000 (max_pixels binds) -> 8194"),
    (OLD, 689, 487, None, None, 427, "28-px defaults are the Nov 2025 sample's 3136 / 6422528"),
    # hand-checked sizes
    (OLD, 28, 28, 3136, 6422528, 6, "one block, scaled up to min_pixels: 4 blocks + 2"),
    (OLD, 11, 11, 3136, 6422528, 6, "smallest legal image"),
    (OLD, 100, 100, 1, 6422528, 18, "min_pixels=1: 112x112 = 16 blocks + 2"),
    (OLD, 20, 20, 1, 6422528, 6, "one 28x28 block billed as the 4-block minimum"),
    (OLD, 1000, 1000, 3136, 6422528, 1298, "1008x1008 = 1296 blocks + 2"),
    (OLD, 1240, 1754, 3136, 6422528, 2774, "A4 page at 150 dpi: 1764x1232 = 63x44 blocks + 2"),
    (OLD, 2480, 3508, 3136, 6422528, 8134, "A4 at 300 dpi, scaled down: 107x76 blocks + 2"),
    (OLD, 4000, 3000, 3136, 23_520_000, 15303, "12 MP photo with max_pixels raised to 23.52 M"),
]

FACTORS = {"qwen3.5-ocr": 32, NEW: 32, OLD: 28}
DEFAULTS = {32: (3072, 8388608), 28: (3136, 6422528)}


@pytest.mark.parametrize(
    ("model", "w", "h", "lo", "hi", "tokens", "why"), TABLE, ids=[f"{row[0]}: {row[-1]}" for row in TABLE]
)
def test_estimate_matches_the_documented_formula(
    model: str, w: int, h: int, lo: int | None, hi: int | None, tokens: int, why: str
) -> None:
    factor = FACTORS[model]
    d_lo, d_hi = DEFAULTS[factor]
    assert page_formula(w, h, lo or d_lo, hi or d_hi, factor) == tokens  # the table agrees with the page's code
    assert estimate_image_tokens((w, h), model=model, min_pixels=lo, max_pixels=hi) == tokens


@pytest.mark.parametrize(
    ("model", "factor"),
    [
        ("qwen3.5-ocr", 32),
        ("qwen-vl-ocr", 32),
        ("qwen-vl-ocr-latest", 32),
        ("qwen-vl-ocr-2025-11-20", 32),
        ("qwen-vl-ocr-1120", 32),
        ("qwen-vl-ocr-2025-08-28", 28),
        ("qwen-vl-ocr-2025-04-13", 28),
        ("qwen-vl-ocr-2024-10-28", 28),
        ("qwen9-ocr-future", 32),  # not in the table: the current generation's rules
    ],
)
def test_token_pixels_per_model(model: str, factor: int) -> None:
    d_lo, d_hi = DEFAULTS[factor]
    assert estimate_image_tokens((689, 487), model=model) == page_formula(689, 487, d_lo, d_hi, factor)
    assert estimate_image_tokens((689, 487), model=model) == (332 if factor == 32 else 427)


def test_default_model_is_qwen_vl_ocr_at_32_px() -> None:
    assert estimate_image_tokens((689, 487)) == 332


@settings(max_examples=300, deadline=None)
@given(
    w=st.integers(min_value=11, max_value=12000),
    h=st.integers(min_value=11, max_value=12000),
    old=st.booleans(),
    lo=st.sampled_from([None, 3136, 401408]),
    hi=st.sampled_from([None, 1_003_520, 6422528, 23_520_000]),
)
def test_estimate_equals_page_code_everywhere(w: int, h: int, old: bool, lo: int | None, hi: int | None) -> None:
    factor = 28 if old else 32
    d_lo, d_hi = DEFAULTS[factor]
    expected = page_formula(w, h, lo or d_lo, hi or d_hi, factor)
    assert estimate_image_tokens((w, h), model=OLD if old else NEW, min_pixels=lo, max_pixels=hi) == expected


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
        assert estimate_image_tokens(item) == 332
        assert estimate_image_tokens(item, model=OLD) == 427
    assert estimate_file(path).image_tokens == 332
    est = estimate_file(path, model=OLD)
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
    old = estimate_file(data, dpi=150, model=OLD)
    assert old.page_image_tokens == (page_formula(1241, 1754, 3136, 6422528, 28),) * 3 == (2774,) * 3
    # the sizes are those of the rendered page images
    with open_pages(load_source(data), dpi=150) as doc:
        page = doc.render(2)
    assert page.data is not None
    with Image.open(io.BytesIO(page.data)) as img:
        assert img.size == est.page_sizes[1]
    # a high dpi is capped at max_pixels, so the estimate never exceeds the max_pixels token count
    high = estimate_file(data, dpi=600)
    assert all(w * h <= 8192 * 32 * 32 for w, h in high.page_sizes)
    assert all(t <= 8192 + 2 for t in high.page_image_tokens)
    high_old = estimate_file(data, dpi=600, model=OLD)
    assert all(w * h <= 8192 * 28 * 28 for w, h in high_old.page_sizes)
    assert all(t <= 8192 + 2 for t in high_old.page_image_tokens)
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
