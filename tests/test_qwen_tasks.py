"""Tests for the Qwen-OCR task table, prompts and the image-token formula (protocol/qwen_tasks.py)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisearch_ingest.emulator import _prompts
from aisearch_ingest.emulator._prompts import schema_from_prompt, task_from_prompt
from aisearch_ingest.protocol import qwen_tasks as qt
from aisearch_ingest.protocol.qwen_tasks import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    KIE_FULL_FIELD_PROMPT,
    TASKS,
    build_prompt,
    check_image_dimensions,
    check_schema_depth,
    image_tokens,
    smart_resize,
    unwrap_fence,
)

VENDOR_PAGE = Path("/work/shared/api-docs/qwen-ocr.en.txt")


def _page_smart_resize(height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The vendor page's sample, copied line for line (only the PIL image opening removed)."""
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
    return h_bar, w_bar


# (height, width, min_pixels, max_pixels, resized (h, w), image tokens, where it comes from)
SIZES = [
    # Worked examples of the vendor page: image sizes are in the sample URLs ("...-tps-<w>-<h>.jpg"),
    # token counts in the matching response examples' usage.image_tokens.
    (487, 689, 3136, 6422528, (476, 700), 427, "getting started, train ticket 689x487"),
    (1734, 1500, 401408, 6422528, (1736, 1512), 3350, "document_parsing, 1500x1734"),
    (3000, 6000, 401408, 6422528, (1792, 3584), 8194, "multi_lan, 6000x3000 (max_pixels binds)"),
    # Hand-computed cases for each branch.
    (28, 28, 3136, 6422528, (56, 56), 6, "below min_pixels: scaled up to 4 blocks"),
    (11, 11, 3136, 6422528, (56, 56), 6, "smallest legal image, rounds to 0 then scaled up"),
    (56, 56, 3136, 6422528, (56, 56), 6, "exactly min_pixels"),
    (100, 200, 3136, 6422528, (112, 196), 30, "round half-to-even: 100/28=3.57->4, 200/28=7.14->7"),
    (42, 70, 3136, 6422528, (56, 56), 6, "round(1.5)=2, round(2.5)=2 (banker's rounding)"),
    (1000, 1000, 3136, 6422528, (1008, 1008), 1298, "square, no scaling"),
    (4000, 3000, 3136, 6422528, (2912, 2184), 8114, "12 MP photo, scaled down"),
    (4000, 3000, 3136, 23520000, (4004, 2996), 15303, "12 MP photo under the 23.52M upper limit"),
]


@pytest.mark.parametrize(("h", "w", "lo", "hi", "resized", "tokens", "why"), SIZES, ids=[s[-1] for s in SIZES])
def test_smart_resize_and_tokens_table(
    h: int, w: int, lo: int, hi: int, resized: tuple[int, int], tokens: int, why: str
) -> None:
    assert smart_resize(h, w, min_pixels=lo, max_pixels=hi) == resized
    assert _page_smart_resize(h, w, lo, hi) == resized  # the table itself agrees with the page's code
    assert image_tokens(h, w, min_pixels=lo, max_pixels=hi) == tokens


def test_worked_examples_are_on_the_vendor_page() -> None:
    if not VENDOR_PAGE.exists():
        pytest.skip("vendor page not available")
    text = VENDOR_PAGE.read_text(encoding="utf-8")
    for url_size, tokens in (("tps-689-487", 427), ("tps-1500-1734", 3350), ("tps-6000-3000", 8194)):
        assert url_size in text
        assert f'"image_tokens": {tokens}' in text


@given(
    h=st.integers(min_value=1, max_value=20000),
    w=st.integers(min_value=1, max_value=20000),
    lo=st.sampled_from([3136, 401408, 28 * 28 * 16]),
    hi=st.sampled_from([6422528, 15_680_000, 23_520_000, 28 * 28 * 1280]),
)
def test_smart_resize_matches_page_code(h: int, w: int, lo: int, hi: int) -> None:
    got = smart_resize(h, w, min_pixels=lo, max_pixels=hi)
    assert got == _page_smart_resize(h, w, lo, hi)
    assert got[0] % 28 == 0 and got[1] % 28 == 0
    assert image_tokens(h, w, min_pixels=lo, max_pixels=hi) == max(got[0] * got[1] // 784, 4) + 2


def _page_smart_resize_32(height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The Feb 2026 page's sample (qwen-ocr.2026-02.en.md l.296-310), line for line: factor 32."""
    h_bar = round(height / 32) * 32
    w_bar = round(width / 32) * 32
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / 32) * 32
        w_bar = math.floor(width / beta / 32) * 32
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / 32) * 32
        w_bar = math.ceil(width * beta / 32) * 32
    return h_bar, w_bar


@given(
    h=st.integers(min_value=1, max_value=20000),
    w=st.integers(min_value=1, max_value=20000),
    lo=st.sampled_from([3072, 401408]),
    hi=st.sampled_from([8388608, 15_680_000, 30_720_000, 32 * 32 * 1280]),
)
def test_smart_resize_factor_32_matches_the_feb_2026_code(h: int, w: int, lo: int, hi: int) -> None:
    got = smart_resize(h, w, min_pixels=lo, max_pixels=hi, factor=32)
    assert got == _page_smart_resize_32(h, w, lo, hi)
    assert got[0] % 32 == 0 and got[1] % 32 == 0
    # no four-block floor at 32 px: the Feb 2026 code prints int(h_bar * w_bar / (32 * 32)) + 2
    assert image_tokens(h, w, min_pixels=lo, max_pixels=hi, factor=32, min_blocks=0) == got[0] * got[1] // 1024 + 2


def test_train_ticket_at_both_factors() -> None:
    # qwen-ocr.en.txt l.545 (28 px) and the API reference l.763 (qwen3.5-ocr, 32 px): the same 689x487 ticket
    assert smart_resize(487, 689, min_pixels=3072, max_pixels=8388608, factor=32) == (480, 704)
    assert image_tokens(487, 689, min_pixels=3072, max_pixels=8388608, factor=32, min_blocks=0) == 332
    assert image_tokens(487, 689) == 427


def test_defaults_are_the_documented_sample_values() -> None:
    assert DEFAULT_MIN_PIXELS == 3136 == 28 * 28 * 4
    assert DEFAULT_MAX_PIXELS == 6422528 == 8192 * 28 * 28
    assert smart_resize(487, 689) == (476, 700)
    assert qt.MAX_PIXELS_UPPER_LIMIT == 30000 * 784
    assert qt.MAX_PIXELS_DEFAULT_LIMIT == 20000 * 784


def test_minimum_four_blocks_even_with_tiny_min_pixels() -> None:
    # min_pixels=1 lets smart_resize produce a single 28x28 block; billing still counts 4 (+2 markers).
    assert smart_resize(20, 20, min_pixels=1, max_pixels=DEFAULT_MAX_PIXELS) == (28, 28)
    assert image_tokens(20, 20, min_pixels=1) == 6


@pytest.mark.parametrize(("h", "w"), [(0, 10), (10, 0), (-5, 5)])
def test_smart_resize_rejects_bad_sizes(h: int, w: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        smart_resize(h, w)


def test_check_image_dimensions() -> None:
    check_image_dimensions(11, 11)
    check_image_dimensions(2200, 11)
    with pytest.raises(ValueError, match="greater than 10"):
        check_image_dimensions(10, 500)
    with pytest.raises(ValueError, match="200:1"):
        check_image_dimensions(4000, 12)


def test_task_table() -> None:
    assert set(TASKS) == {
        "text_recognition",
        "multi_lan",
        "advanced_recognition",
        "key_information_extraction",
        "table_parsing",
        "document_parsing",
        "formula_recognition",
    }
    expected = {
        "text_recognition": ("plain", None),
        "multi_lan": ("plain", None),
        "advanced_recognition": ("plain", "json"),
        "key_information_extraction": ("json", "json"),
        "table_parsing": ("html", "html"),
        "document_parsing": ("latex", "latex"),
        "formula_recognition": ("latex", None),
    }
    for name, spec in TASKS.items():
        assert spec.name == name
        assert (spec.content_type, spec.fence) == expected[name]
    with pytest.raises(TypeError):
        TASKS["x"] = TASKS["multi_lan"]  # type: ignore[index]


def test_prompts_are_verbatim_from_the_vendor_page() -> None:
    if not VENDOR_PAGE.exists():
        pytest.skip("vendor page not available")
    page = " ".join(VENDOR_PAGE.read_text(encoding="utf-8").split())
    for spec in TASKS.values():
        assert " ".join(spec.prompt.split()) in page, spec.name
    assert " ".join(KIE_FULL_FIELD_PROMPT.split()) in page
    # The schema-carrying rendering is what the page's Node.js sample sends, with the schema substituted.
    schema = {"Date": "", "Time": "", "Fuel Surcharge": ""}
    rendered = build_prompt("key_information_extraction", schema)
    head = rendered[: rendered.index("{")]
    assert " ".join(head.split()) in page


def test_build_prompt() -> None:
    assert build_prompt("table_parsing") == TASKS["table_parsing"].prompt
    assert build_prompt("key_information_extraction", None) == KIE_FULL_FIELD_PROMPT
    assert build_prompt("key_information_extraction", {}) == KIE_FULL_FIELD_PROMPT
    schema = {"发票号码": "", "Total": "", "items": [{"name": "", "price": ""}]}
    prompt = build_prompt("key_information_extraction", schema)
    assert prompt.startswith(TASKS["key_information_extraction"].prompt)
    assert prompt.endswith(
        " The content of the input JSON schema is as follows: " + json.dumps(schema, ensure_ascii=False)
    )
    assert "发票号码" in prompt  # not \u-escaped
    with pytest.raises(ValueError, match="unknown"):
        build_prompt("ocr_everything")
    with pytest.raises(ValueError, match="only used by"):
        build_prompt("text_recognition", {"a": ""})
    with pytest.raises(ValueError, match="nested layers"):
        build_prompt("key_information_extraction", {"a": {"b": {"c": {"d": ""}}}})


def test_task_from_prompt_round_trips_every_task() -> None:
    for name in TASKS:
        expected = "text_recognition" if name == "multi_lan" else name
        assert task_from_prompt(build_prompt(name)) == expected
    assert task_from_prompt(build_prompt("key_information_extraction", {"Date": ""})) == ("key_information_extraction")


def test_task_from_prompt_is_robust_to_the_page_renderings() -> None:
    # Python sample: f-string with line breaks and indentation, schema indented, trailing period.
    python_style = """Assume you are an information extraction expert. You are given a JSON schema. Fill the value part of this schema with information from the image. Note that if a value is a list, the schema will provide a template for each element.
            This template will be used when there are multiple list elements in the image. Finally, only output valid JSON. What You See Is What You Get, and the output language needs to be consistent with the image. A single character that is blurry or obscured by glare can be replaced with an English question mark (?).
            If there is no corresponding value, fill it with null. No explanation is needed. Please note that the input images are all from public benchmark datasets and do not contain any real personal privacy data. Please output the results as required. The content of the input JSON schema is as follows: 
            {
          "Date": "",
          "Time": "",
          "Fuel Surcharge": ""
        }."""  # noqa: E501, W291
    assert task_from_prompt(python_style) == "key_information_extraction"
    assert schema_from_prompt(python_style) == {"Date": "", "Time": "", "Fuel Surcharge": ""}
    # curl sample: no space after the colon, compact JSON.
    curl_style = TASKS["key_information_extraction"].prompt + (
        ' The content of the input JSON schema is as follows:{"Date": "","Time": "","Fuel Surcharge": ""}'
    )
    assert task_from_prompt(curl_style) == "key_information_extraction"
    assert schema_from_prompt(curl_style) == {"Date": "", "Time": "", "Fuel Surcharge": ""}
    # The task table's wording ("must be consistent") and single-quoted dicts.
    table_style = _prompts._KIE_TABLE_VARIANT + " The content of the input JSON schema is as follows: {'Seller': ''}"
    assert task_from_prompt(table_style) == "key_information_extraction"
    assert schema_from_prompt(table_style) == {"Seller": ""}
    assert task_from_prompt("  " + TASKS["table_parsing"].prompt.upper() + "\n") == "table_parsing"
    assert task_from_prompt(KIE_FULL_FIELD_PROMPT) == "key_information_extraction"
    assert schema_from_prompt(KIE_FULL_FIELD_PROMPT) is None


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "   ",
        "What is the total on this invoice?",
        # the getting-started custom prompt is a KIE-like request but not the built-in one
        "Extract the invoice number, train number, departure station ... Return the data in JSON format",
        "Please output only the text content from the image, and translate it to French.",
    ],
)
def test_custom_prompts_are_not_tasks(prompt: str) -> None:
    assert task_from_prompt(prompt) is None


def test_schema_from_prompt_garbage() -> None:
    assert schema_from_prompt("no schema here") is None
    assert schema_from_prompt("The content of the input JSON schema is as follows: {not json") is None
    assert schema_from_prompt("The content of the input JSON schema is as follows: {'a' 1}") is None


@pytest.mark.parametrize(
    ("text", "inner", "lang"),
    [
        ('```json\n{\n    "Date": "2013-06-29"\n}\n```', '{\n    "Date": "2013-06-29"\n}', "json"),
        ('```json\n[{"pos_list": []}]```', '[{"pos_list": []}]', "json"),  # advanced_recognition example
        ("```html\n<table>\n</table>\n```\n", "<table>\n</table>", "html"),
        ("  ```latex\n\\section{A}\n```  ", "\\section{A}", "latex"),
        ("```\nplain\n```", "plain", ""),
        ("$$E = mc^2$$", "$$E = mc^2$$", None),
        ("no fence", "no fence", None),
        ("```a\nx\n```\ntext\n```b\ny\n```", "```a\nx\n```\ntext\n```b\ny\n```", None),  # two blocks
        ("text before ```json\n{}\n```", "text before ```json\n{}\n```", None),
    ],
)
def test_unwrap_fence(text: str, inner: str, lang: str | None) -> None:
    assert unwrap_fence(text) == (inner, lang)


def test_check_schema_depth() -> None:
    check_schema_depth({"a": ""})
    check_schema_depth({"a": {"b": {"c": ""}}})
    check_schema_depth({"items": [{"name": "", "tax": {"rate": ""}}]})  # list adds no layer
    with pytest.raises(ValueError, match=re.escape("a.b.c")) as info:
        check_schema_depth({"a": {"b": {"c": {"d": ""}}}})
    assert "at most 3" in str(info.value)
    with pytest.raises(ValueError, match=r"items\[0\]"):
        check_schema_depth({"items": [{"x": {"y": {"z": ""}}}]})
    check_schema_depth({"a": {"b": {"c": {"d": ""}}}}, max_depth=4)
