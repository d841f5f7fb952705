"""Qwen-OCR per model, as the 2026 pages say: token pixels billed vs. estimated, max_tokens limits, regions,
qwen3.5-ocr's task + prompt and ``processed_text``. Everything goes through the real client and the emulator over
sockets; the wire is only observed (an httpx event hook), never replaced."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import httpx
import pytest
from PIL import Image

from aisearch_ingest.errors import ConfigurationError
from aisearch_ingest.estimate import estimate_file, estimate_image_tokens
from aisearch_ingest.protocol import qwen_models
from aisearch_ingest.qwen import QwenOCR
from aisearch_ingest.testing import EMULATOR_API_KEY
from samples import pdf as sample_pdf
from samples import png as text_png

pytest.importorskip("rapidocr", reason="the emulator's OCR needs the `local` extra")
from aisearch_ingest.emulator import Emulator

NEW_MODELS = ["qwen-vl-ocr", "qwen3.5-ocr"]  # 32x32 token pixels
OLD_MODELS = ["qwen-vl-ocr-2025-04-13", "qwen-vl-ocr-2024-10-28"]  # 28x28 token pixels


class Wire:
    """Records the JSON bodies our client sends (an httpx event hook, no patching)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def _hook(self, request: httpx.Request) -> None:
        self.bodies.append(json.loads(request.content))

    def factory(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(event_hooks={"request": [self._hook]}, timeout=30.0)


def make(emu: Emulator, **kwargs: Any) -> QwenOCR:
    kwargs.setdefault("qps", 0)
    return QwenOCR(api_key=EMULATOR_API_KEY, base_url=emu.url, **kwargs)


def blank(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format="PNG")
    return buffer.getvalue()


# --- billed image tokens == estimate, both token sizes ------------------------------------------------------------

SIZES = [(689, 487), (11, 11), (80, 360), (1000, 1000), (1241, 1754), (3000, 1500), (4000, 3000)]


@pytest.mark.parametrize("model", NEW_MODELS + OLD_MODELS)
def test_emulator_bills_the_estimated_image_tokens(emu: Emulator, model: str) -> None:
    spec = qwen_models.spec_for(model)
    billed: dict[tuple[int, int], int] = {}
    with make(emu, model=model, region="cn") as ocr:
        for size in SIZES:
            result = ocr.parse(blank(size), file_name=f"{size[0]}x{size[1]}.png")
            billed[size] = int(result.usage["image_tokens"])
            assert billed[size] == estimate_image_tokens(size, model=model), (model, size)
            assert result.usage["image_tokens"] == result.usage["input_tokens_details_image_tokens"]
    # the two token sizes really differ: the train ticket is 332 at 32 px (API reference l.763), 427 at 28 px
    assert billed[(689, 487)] == (332 if spec.patch == 32 else 427)
    assert billed[(1000, 1000)] == (963 if spec.patch == 32 else 1298)


@pytest.mark.parametrize(("model", "api"), [("qwen-vl-ocr", "openai"), ("qwen-vl-ocr-2025-08-28", "openai")])
def test_billing_agrees_with_explicit_pixel_bounds_and_the_compatible_api(emu: Emulator, model: str, api: str) -> None:
    spec = qwen_models.spec_for(model)
    bounds = {"min_pixels": 401408, "max_pixels": 1_003_520}
    with make(emu, model=model, api=api, **bounds) as ocr:
        for size in [(689, 487), (4000, 3000), (200, 300)]:
            result = ocr.parse(blank(size), file_name="x.png")
            assert result.usage["image_tokens"] == estimate_image_tokens(size, model=model, **bounds)
            assert result.usage["image_tokens"] == spec.image_tokens(size[1], size[0], **bounds)


def test_pdf_pages_bill_the_estimate_at_32_px(emu: Emulator) -> None:
    data = sample_pdf(["page one", "page two"])
    with make(emu, model="qwen-vl-ocr") as ocr:
        result = ocr.parse(data, file_name="two.pdf")
    est = estimate_file(data, model="qwen-vl-ocr")
    assert est.pages == 2 and result.usage["image_tokens"] == est.image_tokens
    assert all(w * h <= 8192 * 32 * 32 for w, h in est.page_sizes)


# --- max_tokens per model -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "limit"),
    [
        ("qwen3.5-ocr", 32768),  # API reference l.455: default = max = 32768
        ("qwen-vl-ocr", 8192),  # EN model table: max output 8,192 (= 2025-11-20)
        ("qwen-vl-ocr-2025-11-20", 8192),
        ("qwen-vl-ocr-latest", 8192),
        ("qwen-vl-ocr-2025-08-28", 4096),  # EN model table: 34,096 / 4,096
        ("qwen-vl-ocr-2025-04-13", 4096),
        ("qwen-vl-ocr-2024-10-28", 4096),
    ],
)
def test_max_tokens_above_the_model_limit_is_refused(emu: Emulator, model: str, limit: int) -> None:
    with pytest.raises(ValueError, match=rf"max_tokens={limit + 1:,} is above the limit of {model}: at most {limit:,}"):
        make(emu, model=model, max_tokens=limit + 1)
    wire = Wire()
    with make(emu, model=model, max_tokens=limit, http_client_factory=wire.factory) as ocr:
        result = ocr.parse(text_png(), file_name="a.png")  # the emulator takes the limit itself
    assert result.content and wire.bodies[0]["parameters"]["max_tokens"] == limit


def test_a_model_not_in_the_table_is_sent_as_given(emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aisearch_ingest")
    wire = Wire()
    with make(emu, model="qwen-vl-ocr-2026-09-01", max_tokens=20000, http_client_factory=wire.factory) as ocr:
        result = ocr.parse(text_png(), file_name="a.png")
    assert "not in the Qwen-OCR model table" in caplog.text
    assert wire.bodies[0]["model"] == "qwen-vl-ocr-2026-09-01"
    assert result.usage["image_tokens"] == estimate_image_tokens((360, 80), model="qwen-vl-ocr-2026-09-01")
    # and the region check lets it through too
    assert QwenOCR(api_key="k", region="us", model="qwen-vl-ocr-2026-09-01").settings.region == "us"


# --- regions ------------------------------------------------------------------------------------------------------


def test_regions_hosts_and_the_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_BASE_URL", raising=False)
    hosts = {
        "intl": "https://dashscope-intl.aliyuncs.com",
        "us": "https://dashscope-us.aliyuncs.com",
        "cn": "https://dashscope.aliyuncs.com",
    }
    for region, host in hosts.items():
        ocr = QwenOCR(api_key="k", region=region)  # type: ignore[arg-type]
        assert ocr.settings.base_url == host and ocr.settings.region == region
        assert ocr.model == "qwen-vl-ocr"  # listed in every region
    assert QwenOCR(api_key="k").settings.region == "intl"


@pytest.mark.parametrize(
    ("model", "region", "listed"),
    [
        ("qwen-vl-ocr-latest", "intl", "cn (Beijing)"),
        ("qwen-vl-ocr-latest", "us", "cn (Beijing)"),
        ("qwen-vl-ocr-2025-08-28", "intl", "cn (Beijing)"),
        ("qwen-vl-ocr-2025-04-13", "us", "cn (Beijing)"),
        ("qwen-vl-ocr-2024-10-28", "intl", "cn (Beijing)"),
        ("qwen3.5-ocr", "intl", "cn (Beijing)"),
    ],
)
def test_a_model_not_listed_in_the_region_is_refused(
    monkeypatch: pytest.MonkeyPatch, model: str, region: str, listed: str
) -> None:
    monkeypatch.delenv("DASHSCOPE_BASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match=rf"model '{model}' is not offered in region '{region}'") as info:
        QwenOCR(api_key="k", region=region, model=model)  # type: ignore[arg-type]
    assert f"listed for {listed}" in str(info.value)
    assert QwenOCR(api_key="k", region="cn", model=model).model == model
    # a base URL that is a region's host is that region
    with pytest.raises(ConfigurationError, match="not offered"):
        QwenOCR(api_key="k", base_url=f"https://dashscope-{region}.aliyuncs.com", model=model)


def test_snapshot_2025_11_20_is_listed_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_BASE_URL", raising=False)
    for region in ("intl", "us", "cn"):
        for name in ("qwen-vl-ocr-2025-11-20", "qwen-vl-ocr-1120"):
            assert QwenOCR(api_key="k", region=region, model=name).spec.patch == 32  # type: ignore[arg-type]


def test_an_explicit_base_url_skips_the_region_check(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # the emulator (or a proxy) decides the host: the user asked for that host, the model table does not block it
    with make(emu, model="qwen-vl-ocr-latest", region="intl") as ocr:
        assert ocr.settings.region is None
        assert ocr.parse(text_png(), file_name="a.png").service_id == "qwen-vl-ocr-latest"
    monkeypatch.setenv("DASHSCOPE_BASE_URL", emu.url)
    assert QwenOCR(api_key="k", region="us", model="qwen-vl-ocr-2024-10-28").settings.region is None


# --- qwen3.5-ocr: task + prompt, processed_text -------------------------------------------------------------------


def test_qwen35_takes_a_task_and_a_prompt_together(emu: Emulator) -> None:
    wire = Wire()
    prompt = "Extract the fields; write dates as YYYY-MM-DD."
    with make(
        emu,
        model="qwen3.5-ocr",
        task="key_information_extraction",
        result_schema={"Invoice No": "", "Total": ""},
        prompt=prompt,
        http_client_factory=wire.factory,
    ) as ocr:
        result = ocr.parse(text_png("Invoice No: A-17", size=(520, 80)), file_name="inv.png")
    body = wire.bodies[0]
    assert body["parameters"]["ocr_options"]["task"] == "key_information_extraction"
    assert body["input"]["messages"][0]["content"][1] == {"text": prompt}  # the prompt beside ocr_options
    assert result.ocr_task == "key_information_extraction"
    assert result.extra["kv_result"]["Invoice No"] == "A-17"  # from ocr_result
    assert result.content_type == "json" and json.loads(result.content) == result.extra["kv_result"]


def test_older_models_keep_the_fixed_task_prompt(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="fixed documented prompt on qwen-vl-ocr"):
        make(emu, model="qwen-vl-ocr", task="table_parsing", prompt="hi")
    with pytest.raises(ValueError, match="needs api='native'"):
        make(emu, model="qwen3.5-ocr", api="openai", task="table_parsing", prompt="hi")


@pytest.mark.parametrize("stream", [False, True])
def test_processed_text_is_surfaced_for_qwen35_native(emu: Emulator, stream: bool) -> None:
    image = text_png("Hello OCR 2026")
    with make(emu, model="qwen3.5-ocr", region="cn", stream=stream) as ocr:
        result = ocr.parse(image, file_name="a.png")
    assert result.extra["processed_text"] == result.pages[0].extra["processed_text"]
    assert "Hello" in result.extra["processed_text"]
    for model, api in (("qwen-vl-ocr", "native"), ("qwen3.5-ocr", "openai")):
        with make(emu, model=model, api=api, stream=stream) as ocr:
            other = ocr.parse(image, file_name="a.png")
        assert "processed_text" not in other.extra and "processed_text" not in other.pages[0].extra


def test_emulator_answers_processed_text_on_the_wire(emu: Emulator) -> None:
    import base64

    data_url = "data:image/png;base64," + base64.b64encode(text_png()).decode()

    def body(model: str) -> dict[str, Any]:
        content = [{"image": data_url}]
        return {"model": model, "parameters": {}, "input": {"messages": [{"role": "user", "content": content}]}}

    path = "/api/v1/services/aigc/multimodal-generation/generation"
    headers = {"Authorization": f"Bearer {EMULATOR_API_KEY}"}
    with httpx.Client(base_url=emu.url, headers=headers, timeout=30) as client:
        item = client.post(path, json=body("qwen3.5-ocr")).json()["output"]["choices"][0]["message"]["content"][0]
        older = client.post(path, json=body("qwen-vl-ocr")).json()["output"]["choices"][0]["message"]["content"][0]
    assert item["processed_text"] == item["text"]  # nothing repeated in this answer
    assert "processed_text" not in older


def test_the_readme_model_table_follows_the_code() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if re.match(r"\| `qwen[^|]*\| `(intl|cn)", line)]
    seen: set[str] = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = [n for n in re.findall(r"`([^`]+)`", cells[0]) if not n.startswith("-1")]
        names = [n if n.startswith("qwen") else "qwen-vl-ocr" + n for n in names]
        regions = set(re.findall(r"`(\w+)`", cells[1]))
        patch = int(cells[2].split("×")[0])
        numbers = [int(x.replace(",", "")) for x in re.findall(r"[\d,]{4,}", " ".join(cells[3:]))]
        for name in names:
            spec = qwen_models.MODELS[name]
            seen.add(spec.name)
            assert regions == set(spec.regions), name
            assert patch == spec.patch, name
            assert numbers == [
                spec.min_pixels,
                spec.default_max_pixels,
                spec.max_pixels_limit,
                spec.default_max_tokens,
                spec.max_output,
            ], name
    assert seen == {spec.name for spec in qwen_models.MODELS.values()}
