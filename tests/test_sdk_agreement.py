"""Our engine and the official SDKs, pointed at the same emulator with the same input, must read the same fields.

`test_sdk_fidelity.py` shows the emulator speaks what the SDKs speak; this file shows our client reads every field
the SDKs read, the same way (content, type, pages, page count, usage, task status, boxes, key-values).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aisearch_ingest import DocumentAnalyzer, ImageAnalyzer, PollPolicy, QwenOCR
from aisearch_ingest.emulator import Emulator

pytest.importorskip("rapidocr", reason="image/PDF parsing needs the `local` extra")
pytest.importorskip("alibabacloud_searchplat20240529")

from alibabacloud_searchplat20240529 import models
from alibabacloud_searchplat20240529.client import Client
from alibabacloud_tea_openapi.models import Config

KEY = "test-key-agree"
DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with Emulator(api_key=KEY) as emulator:
        yield emulator


def _sdk(emu: Emulator) -> Client:
    return Client(Config(bearer_token=KEY, endpoint=emu.endpoint, protocol="http"))


def _poll(get: Any, request: Any, service_id: str) -> Any:
    deadline = time.monotonic() + 60
    while True:
        body = get("default", service_id, request).body
        if body.result.status != "PENDING" or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_document_analyze_fields_agree(emu: Emulator) -> None:
    data = (DATA / "annual_report.pdf").read_bytes()
    sid = "ops-document-analyze-001"
    client = _sdk(emu)
    created = client.create_document_analyze_task(
        "default",
        sid,
        models.CreateDocumentAnalyzeTaskRequest(
            document=models.CreateDocumentAnalyzeTaskRequestDocument(
                content=base64.b64encode(data).decode(), file_name="annual_report.pdf", file_type="pdf"
            )
        ),
    )
    sdk = _poll(
        client.get_document_analyze_task_status,
        models.GetDocumentAnalyzeTaskStatusRequest(task_id=created.body.result.task_id),
        sid,
    )
    with DocumentAnalyzer(
        api_key=KEY, endpoint=emu.url, route="async", poll=PollPolicy(min_interval=0.05, max_interval=0.2)
    ) as analyzer:
        ours = analyzer.parse(data, file_name="annual_report.pdf")

    assert sdk.result.status == "SUCCESS"
    assert ours.content == sdk.result.data.content
    assert ours.content_type == sdk.result.data.content_type == "markdown"
    assert ours.page_num == sdk.result.data.page_num == 3
    assert [p.content for p in ours.pages] == sdk.result.data.pages
    assert ours.usage == {k: v for k, v in sdk.usage.to_map().items() if v is not None}
    assert ours.task_id and ours.request_id


@pytest.mark.parametrize("service_id", ["ops-image-analyze-vlm-001", "ops-image-analyze-ocr-001"])
def test_image_analyze_fields_agree(emu: Emulator, service_id: str) -> None:
    data = (DATA / "invoice.png").read_bytes()
    client = _sdk(emu)
    created = client.create_image_analyze_task(
        "default",
        service_id,
        models.CreateImageAnalyzeTaskRequest(
            document=models.CreateImageAnalyzeTaskRequestDocument(
                content=base64.b64encode(data).decode(), file_name="invoice.png", file_type="png"
            )
        ),
    )
    sdk = _poll(
        client.get_image_analyze_task_status,
        models.GetImageAnalyzeTaskStatusRequest(task_id=created.body.result.task_id),
        service_id,
    )
    with ImageAnalyzer(
        api_key=KEY,
        endpoint=emu.url,
        service_id=service_id,
        route="async",
        poll=PollPolicy(min_interval=0.05, max_interval=0.2),
    ) as analyzer:
        ours = analyzer.parse(data, file_name="invoice.png")
    assert sdk.result.status == "SUCCESS"
    assert ours.content == sdk.result.data.content and "INV-2024-0815" in ours.content
    assert ours.content_type == sdk.result.data.content_type
    assert ours.page_num == (sdk.result.data.page_num or 1)
    assert ours.usage == {k: v for k, v in sdk.usage.to_map().items() if v is not None}


def test_qwen_native_fields_agree_with_dashscope(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    dashscope = pytest.importorskip("dashscope")
    monkeypatch.setattr(dashscope, "base_http_api_url", f"{emu.url}/api/v1")
    data = (DATA / "invoice.png").read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    sdk = dashscope.MultiModalConversation.call(
        api_key=KEY,
        model="qwen-vl-ocr-latest",
        messages=[{"role": "user", "content": [{"image": uri}]}],
        ocr_options={"task": "advanced_recognition"},
    )
    assert sdk.status_code == 200, sdk.message
    item = sdk.output.choices[0].message.content[0]
    with QwenOCR(api_key=KEY, base_url=emu.url, task="advanced_recognition") as ocr:
        ours = ocr.parse(data, file_name="invoice.png")
    assert ours.extra["words_info"] == item["ocr_result"]["words_info"]
    assert ours.usage["image_tokens"] == sdk.usage["image_tokens"]
    assert ours.usage["input_tokens"] == sdk.usage["input_tokens"]
    assert ours.usage["output_tokens"] == sdk.usage["output_tokens"]
    assert ours.request_id


def test_qwen_compatible_fields_agree_with_openai(emu: Emulator) -> None:
    openai = pytest.importorskip("openai")
    from aisearch_ingest.protocol.qwen_tasks import TASKS

    data = (DATA / "scan_page.png").read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    client = openai.OpenAI(api_key=KEY, base_url=f"{emu.url}/compatible-mode/v1", max_retries=0)
    sdk = client.chat.completions.create(
        model="qwen-vl-ocr-latest",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": uri}},
                    {"type": "text", "text": TASKS["text_recognition"].prompt},
                ],
            }
        ],
    )
    with QwenOCR(api_key=KEY, base_url=emu.url, api="openai", task="text_recognition") as ocr:
        ours = ocr.parse(data, file_name="scan_page.png")
    assert ours.content == sdk.choices[0].message.content
    assert ours.usage["input_tokens"] == sdk.usage.prompt_tokens
    assert ours.usage["output_tokens"] == sdk.usage.completion_tokens
    assert sdk.usage.prompt_tokens_details is not None
