"""The OFFICIAL SDKs against the emulator, with the localhost recipes of PROTOCOL.md.

If the emulator drifted from what ``alibabacloud-searchplat20240529``, ``dashscope`` or ``openai`` send and
accept, these tests fail: they are the emulator's contract with the real clients.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import samples
from aisearch_ingest.emulator import Emulator
from aisearch_ingest.protocol import qwen_tasks

pytest.importorskip("alibabacloud_searchplat20240529")
pytest.importorskip("dashscope")
pytest.importorskip("openai")

from alibabacloud_searchplat20240529 import models
from alibabacloud_searchplat20240529.client import Client
from alibabacloud_tea_openapi.models import Config
from alibabacloud_tea_openapi.utils import Utils
from Tea.exceptions import TeaException

KEY = "test-key-sdk"
WS = "default"
DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"
SCHEMA = {"Invoice No": "", "Total": ""}


def _needs_backends() -> None:
    pytest.importorskip("rapidocr", reason="image/PDF parsing needs the `local` extra")


def _sample(name: str) -> bytes:
    path = DATA / name
    if path.exists():
        return path.read_bytes()
    if name.endswith(".png"):  # fallback when notebooks/data is absent: a small invoice-like image
        from PIL import Image, ImageDraw, ImageFont

        image = Image.new("RGB", (520, 160), "white")
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=24)
        draw.text((16, 20), "Invoice No: INV-2024-0815", fill="black", font=font)
        draw.text((16, 90), "Total: EUR 3,310.00", fill="black", font=font)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if name.endswith(".pdf"):
        from fpdf import FPDF

        pdf = FPDF()
        pdf.set_font("helvetica", size=12)
        for text in ("Annual report, page one.", "Page two: outlook."):
            pdf.add_page()
            pdf.multi_cell(0, 8, text)
        return bytes(pdf.output())
    pytest.skip(f"{name} is not in notebooks/data")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # darabonba and requests honour proxy variables; the emulator is on loopback
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api_key=KEY) as emulator:
        yield emulator


@pytest.fixture
def searchplat(emu: Emulator) -> Client:
    return Client(Config(bearer_token=KEY, endpoint=emu.endpoint, protocol="http"))


# --- A/B: alibabacloud-searchplat20240529


def _poll_document(client: Client, service_id: str, task_id: str) -> Any:
    request = models.GetDocumentAnalyzeTaskStatusRequest(task_id=task_id)
    deadline = time.monotonic() + 60
    while True:
        response = client.get_document_analyze_task_status(WS, service_id, request)
        if response.body.result.status != "PENDING" or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def _document(data: bytes, file_name: str) -> models.CreateDocumentAnalyzeTaskRequestDocument:
    return models.CreateDocumentAnalyzeTaskRequestDocument(content=base64.b64encode(data).decode(), file_name=file_name)


def test_document_analyze_pdf_through_the_sdk(searchplat: Client, emu: Emulator) -> None:
    _needs_backends()
    request = models.CreateDocumentAnalyzeTaskRequest(document=_document(_sample("annual_report.pdf"), "report.pdf"))
    created = searchplat.create_document_analyze_task(WS, "ops-document-analyze-001", request)
    assert created.status_code == 200
    assert created.headers["x-acs-request-id"] == created.body.request_id
    status = _poll_document(searchplat, "ops-document-analyze-001", created.body.result.task_id)
    result = status.body.result
    assert result.status == "SUCCESS" and result.task_id == created.body.result.task_id
    assert result.data.content_type == "markdown"
    assert result.data.page_num == len(result.data.pages) >= 1
    assert result.data.content.strip()
    assert status.body.usage.token_count > 0 and status.body.usage.table_count is not None
    assert status.body.usage.semantic_token_count is None
    assert dict(emu.stats.calls_by_action)["CreateDocumentAnalyzeTask"] == 1


def test_document_analyze_docx_with_output_and_strategy(searchplat: Client) -> None:
    _needs_backends()
    request = models.CreateDocumentAnalyzeTaskRequest(
        document=_document(_sample("product_faq.docx"), "faq.docx"),
        output=models.CreateDocumentAnalyzeTaskRequestOutput(image_storage="url"),
        strategy=models.CreateDocumentAnalyzeTaskRequestStrategy(enable_semantic=True),
    )
    created = searchplat.create_document_analyze_task(WS, "ops-document-analyze-002", request)
    status = _poll_document(searchplat, "ops-document-analyze-002", created.body.result.task_id)
    assert status.body.result.status == "SUCCESS"
    assert status.body.result.data.content_type == "html"
    assert "data:image" not in status.body.result.data.content
    assert status.body.usage.semantic_token_count > 0


@pytest.mark.parametrize("enable_semantic", [None, False, True])
def test_document_analyze_pages_and_usage_through_the_sdk(searchplat: Client, enable_semantic: bool | None) -> None:
    """``data.pages`` (one entry per page, in order) and ``usage`` as the 2.x SDK models them; the SDK's
    ``semantic_token_count`` is there exactly when ``strategy.enable_semantic`` asked for it."""
    _needs_backends()
    markers = ["ALPHA-PAGE-ONE", "BRAVO-PAGE-TWO", "CHARLIE-PAGE-THREE"]
    pdf = samples.pdf([f"Section {i + 1}. The marker of this page is {m}." for i, m in enumerate(markers)])
    strategy = None
    if enable_semantic is not None:
        strategy = models.CreateDocumentAnalyzeTaskRequestStrategy(enable_semantic=enable_semantic)
    request = models.CreateDocumentAnalyzeTaskRequest(document=_document(pdf, "markers.pdf"), strategy=strategy)
    created = searchplat.create_document_analyze_task(WS, "ops-document-analyze-001", request)
    status = _poll_document(searchplat, "ops-document-analyze-001", created.body.result.task_id)
    assert status.body.result.status == "SUCCESS", status.body.result.error
    data = status.body.result.data
    assert isinstance(data.pages, list) and data.page_num == len(data.pages) == 3
    for page, marker in zip(data.pages, markers, strict=True):
        assert marker in page and [m for m in markers if m in page] == [marker]
        assert page in data.content
    assert [data.content.find(m) for m in markers] == sorted(data.content.find(m) for m in markers)
    usage = status.body.usage
    assert usage.token_count > 0 and usage.table_count == 0 and usage.image_count == 0
    if enable_semantic:
        assert isinstance(usage.semantic_token_count, int) and usage.semantic_token_count > 0
        assert usage.to_map()["semantic_token_count"] == usage.semantic_token_count
    else:
        assert usage.semantic_token_count is None and "semantic_token_count" not in usage.to_map()


@pytest.mark.parametrize(
    ("service_id", "usage_field"),
    [("ops-image-analyze-ocr-001", "pv_count"), ("ops-image-analyze-vlm-001", "token_count")],
)
def test_image_analyze_through_the_sdk(searchplat: Client, service_id: str, usage_field: str) -> None:
    _needs_backends()
    document = models.CreateImageAnalyzeTaskRequestDocument(
        content=base64.b64encode(_sample("invoice.png")).decode(), file_name="invoice.png"
    )
    created = searchplat.create_image_analyze_task(
        WS, service_id, models.CreateImageAnalyzeTaskRequest(document=document)
    )
    request = models.GetImageAnalyzeTaskStatusRequest(task_id=created.body.result.task_id)
    deadline = time.monotonic() + 60
    while True:
        status = searchplat.get_image_analyze_task_status(WS, service_id, request)
        if status.body.result.status != "PENDING" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status.body.result.status == "SUCCESS"
    assert "INV-2024-0815" in status.body.result.data.content
    assert status.body.result.data.page_num == 1
    assert getattr(status.body.usage, usage_field) >= 1


def test_aiohttp_variant_of_the_sdk(searchplat: Client) -> None:
    async def run() -> Any:
        request = models.CreateDocumentAnalyzeTaskRequest(document=_document(b"<p>async sdk</p>", "a.html"))
        created = await searchplat.create_document_analyze_task_async(WS, "ops-document-analyze-001", request)
        status_request = models.GetDocumentAnalyzeTaskStatusRequest(task_id=created.body.result.task_id)
        for _ in range(200):
            status = await searchplat.get_document_analyze_task_status_async(
                WS, "ops-document-analyze-001", status_request
            )
            if status.body.result.status != "PENDING":
                return status
            await asyncio.sleep(0.02)
        return status

    status = asyncio.run(run())
    assert status.body.result.status == "SUCCESS" and "async sdk" in status.body.result.data.content


def test_sdk_errors_carry_code_status_and_request_id(searchplat: Client, emu: Emulator) -> None:
    bad = models.CreateDocumentAnalyzeTaskRequest(
        document=models.CreateDocumentAnalyzeTaskRequestDocument(file_name="a.pdf")
    )
    with pytest.raises(TeaException) as info:
        searchplat.create_document_analyze_task(WS, "ops-document-analyze-001", bad)
    error = info.value
    assert error.code == "InvalidParameter" and error.statusCode == 400
    assert f"request id: {error.data['request_id']}" in error.message
    assert error.data["http_code"] == 400

    missing = models.GetDocumentAnalyzeTaskStatusRequest(task_id="0f94bd89-989c-4000-963c-6e4f3ff99445")
    with pytest.raises(TeaException) as info:
        searchplat.get_document_analyze_task_status(WS, "ops-document-analyze-001", missing)
    assert info.value.code == "BadRequest.TaskNotExist" and info.value.statusCode == 404
    assert "task[0f94bd89-989c-4000-963c-6e4f3ff99445] not exist" in info.value.message

    emu.inject(429, retry_after=1, retry_after_header="x-acs-retry-after")
    with pytest.raises(TeaException) as info:
        searchplat.get_document_analyze_task_status(WS, "ops-document-analyze-001", missing)
    assert info.value.statusCode == 429 and info.value.code == "Throttling.RateQuota"

    wrong = Client(Config(bearer_token="not-the-key", endpoint=emu.endpoint, protocol="http"))
    with pytest.raises(TeaException) as info:
        wrong.get_document_analyze_task_status(WS, "ops-document-analyze-001", missing)
    assert info.value.statusCode == 401 and "not-the-key" not in info.value.message


def test_throttling_hint_is_what_the_sdk_core_reads(emu: Emulator) -> None:
    """The emulator's own QPS refusal, read by the SDK core's parser (``Utils.get_throttling_time_left``: integer
    milliseconds, > 0) -- the unit our emulator used to get wrong."""
    emu.set_qps(1)
    try:
        with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            path = f"/v3/openapi/workspaces/{WS}/document-analyze/ops-document-analyze-001/async/task-status"
            answers = [http.get(path, params={"task_id": "x"}) for _ in range(3)]
    finally:
        emu.set_qps(None)
    throttled = [r for r in answers if r.status_code == 429]
    assert throttled, [r.status_code for r in answers]
    for response in throttled:
        millis = Utils.get_throttling_time_left(dict(response.headers))
        assert millis is not None and 1 <= millis <= 1000
        assert response.json()["code"] == "Throttling.RateQuota"
        assert int(response.headers["Retry-After"]) == 1


# --- C: dashscope MultiModalConversation


@pytest.fixture
def dashscope_at(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    import dashscope

    monkeypatch.setattr(dashscope, "base_http_api_url", f"{emu.url}/api/v1")  # the global: uploads read it
    return dashscope


def _messages(image: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"image": image, "min_pixels": 3136, "max_pixels": 6422528}]}]


def _invoice_url() -> str:
    return "data:image/png;base64," + base64.b64encode(_sample("invoice.png")).decode()


def _check_words_info(ocr_result: Any) -> None:
    words = ocr_result["words_info"]
    assert words
    for word in words:
        assert isinstance(word["text"], str)
        assert len(word["location"]) == 8 and all(isinstance(v, int) for v in word["location"])
        assert len(word["rotate_rect"]) == 5 and -90 <= word["rotate_rect"][4] <= 90


def test_dashscope_advanced_recognition(dashscope_at: Any) -> None:
    _needs_backends()
    response = dashscope_at.MultiModalConversation.call(
        api_key=KEY,
        model="qwen-vl-ocr-latest",
        messages=_messages(_invoice_url()),
        ocr_options={"task": "advanced_recognition"},
    )
    assert response.status_code == 200, response.message
    item = response.output.choices[0].message.content[0]
    _check_words_info(item["ocr_result"])
    assert any("INV-2024-0815" in w["text"] for w in item["ocr_result"]["words_info"])
    assert qwen_tasks.unwrap_fence(item["text"])[1] == "json"
    usage = response.usage
    assert usage["image_tokens"] == usage["input_tokens_details"]["image_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_dashscope_key_information_extraction_stream_and_not(dashscope_at: Any) -> None:
    _needs_backends()
    kwargs: dict[str, Any] = {
        "api_key": KEY,
        "model": "qwen-vl-ocr-latest",
        "messages": _messages(_invoice_url()),
        "ocr_options": {"task": "key_information_extraction", "task_config": {"result_schema": SCHEMA}},
    }
    response = dashscope_at.MultiModalConversation.call(**kwargs)
    item = response.output.choices[0].message.content[0]
    kv = item["ocr_result"]["kv_result"]
    assert set(kv) == set(SCHEMA) and kv["Invoice No"] == "INV-2024-0815"
    assert json.loads(qwen_tasks.unwrap_fence(item["text"])[0]) == kv

    events = list(dashscope_at.MultiModalConversation.call(stream=True, incremental_output=True, **kwargs))
    assert all(e.status_code == 200 for e in events) and len(events) >= 2
    assert "".join(e.output.choices[0].message.content[0]["text"] for e in events) == item["text"]
    assert events[-1].output.choices[0].finish_reason == "stop"
    assert events[-1].output.choices[0].message.content[0]["ocr_result"]["kv_result"] == kv

    # the SDK asks for deltas and merges them itself when the caller wants full output
    merged = list(dashscope_at.MultiModalConversation.call(stream=True, incremental_output=False, **kwargs))
    assert merged[-1].output.choices[0].message.content[0]["text"] == item["text"]


def _image_url(name: str) -> str:
    return "data:image/png;base64," + base64.b64encode((DATA / name).read_bytes()).decode()


def _fenced(text: str, lang: str) -> str:
    """The body of a ```lang fenced answer (checked here with plain string tests, not our parser)."""
    assert text.startswith(f"```{lang}\n") and text.rstrip().endswith("```"), text[:80]
    return text.rstrip()[len(lang) + 4 : -3]


def _check_text_recognition(text: str, ocr_result: Any) -> None:
    assert not text.startswith("```") and ocr_result is None
    assert "The history of the lighthouse keepers of the northern coast is a history of patience." in text
    assert "automated in 1987" in text


def _check_multi_lan(text: str, ocr_result: Any) -> None:
    assert not text.startswith("```") and ocr_result is None
    assert text.splitlines()[:2] == ["INVOICE", "Invoice No: INV-2024-0815"]


def _check_advanced_recognition(text: str, ocr_result: Any) -> None:
    lines = json.loads(_fenced(text, "json"))
    assert [line["text"] for line in lines] == [w["text"] for w in ocr_result["words_info"]]
    assert all(len(line["rotate_rect"]) == 5 for line in lines)
    _check_words_info(ocr_result)
    assert "Invoice No: INV-2024-0815" in [w["text"] for w in ocr_result["words_info"]]


def _check_key_information_extraction(text: str, ocr_result: Any) -> None:
    expected = {"Invoice No": "INV-2024-0815", "Total": "EUR 3,310.00"}
    assert json.loads(_fenced(text, "json")) == ocr_result["kv_result"] == expected


def _check_table_parsing(text: str, ocr_result: Any) -> None:
    html = _fenced(text, "html")
    assert ocr_result is None and html.strip().startswith("<table>") and html.strip().endswith("</table>")
    assert "<td>AquaSense Pro 3 sensor</td>" in html and "<td>2,480.00</td>" in html
    assert html.count("<tr>") == html.count("</tr>") >= 4


def _check_document_parsing(text: str, ocr_result: Any) -> None:
    latex = _fenced(text, "latex")
    assert ocr_result is None and "\\begin{document}" in latex and "\\end{document}" in latex
    assert "lighthouse keepers of the northern coast" in latex


def _check_formula_recognition(text: str, ocr_result: Any) -> None:
    assert ocr_result is None and not text.startswith("```")
    assert text.lstrip().startswith("$$") and text.rstrip().endswith("$$")
    assert "E = mc^{2}" in text and "a^{2} + b^{2} = c^{2}" in text


_TASK_CASES: dict[str, tuple[str, Any]] = {
    "text_recognition": ("scan_page.png", _check_text_recognition),
    "multi_lan": ("invoice.png", _check_multi_lan),
    "advanced_recognition": ("invoice.png", _check_advanced_recognition),
    "key_information_extraction": ("invoice.png", _check_key_information_extraction),
    "table_parsing": ("invoice.png", _check_table_parsing),
    "document_parsing": ("scan_page.png", _check_document_parsing),
    "formula_recognition": ("formula.png", _check_formula_recognition),
}


def test_every_builtin_task_has_a_case() -> None:
    assert set(_TASK_CASES) == set(qwen_tasks.TASKS) and len(_TASK_CASES) == 7


@pytest.mark.parametrize("task", list(_TASK_CASES))
def test_dashscope_builtin_task_non_stream_and_stream(dashscope_at: Any, task: str) -> None:
    """Each of the seven built-in ``ocr_options.task`` values through ``MultiModalConversation.call``: the answer
    in the task's documented format, then the same answer streamed (``incremental_output=True``: deltas that
    join to it, ``finish_reason`` "stop" on the last event, ``ocr_result`` on the final event)."""
    _needs_backends()
    image, check = _TASK_CASES[task]
    ocr_options: dict[str, Any] = {"task": task}
    if task == "key_information_extraction":
        ocr_options["task_config"] = {"result_schema": SCHEMA}
    kwargs: dict[str, Any] = {
        "api_key": KEY,
        "model": "qwen-vl-ocr-latest",
        "messages": _messages(_image_url(image)),
        "ocr_options": ocr_options,
    }
    response = dashscope_at.MultiModalConversation.call(**kwargs)
    assert response.status_code == 200, response.message
    choice = response.output.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    item = choice.message.content[0]
    check(item["text"], item.get("ocr_result"))
    assert response.usage["output_tokens"] > 0 and response.usage["image_tokens"] > 0

    events = list(dashscope_at.MultiModalConversation.call(stream=True, incremental_output=True, **kwargs))
    assert len(events) >= 2 and all(e.status_code == 200 for e in events)
    assert "".join(e.output.choices[0].message.content[0]["text"] for e in events) == item["text"]
    assert [e.output.choices[0].finish_reason for e in events][-1] == "stop"
    assert all(e.output.choices[0].finish_reason in (None, "null") for e in events[:-1])
    final = events[-1].output.choices[0].message.content[0]
    assert final.get("ocr_result") == item.get("ocr_result")
    assert events[-1].usage["output_tokens"] == response.usage["output_tokens"]
    assert len({e.request_id for e in events}) == 1


def test_dashscope_local_file_goes_through_the_upload_path(dashscope_at: Any, emu: Emulator, tmp_path: Path) -> None:
    _needs_backends()
    path = tmp_path / "scan.png"
    path.write_bytes(_sample("invoice.png"))
    response = dashscope_at.MultiModalConversation.call(
        api_key=KEY, model="qwen-vl-ocr-latest", messages=_messages(f"file://{path}")
    )
    assert response.status_code == 200, response.message
    assert "INV-2024-0815" in response.output.choices[0].message.content[0]["text"]
    routes = dict(emu.stats.calls_by_route)
    assert routes["dashscope/uploads"] == 1 and routes["emulator/oss-upload"] == 1

    # streamed, with a built-in task, from a file:// URI and from a plain path (the SDK uploads both)
    for image in (f"file://{path}", str(path)):
        events = list(
            dashscope_at.MultiModalConversation.call(
                api_key=KEY,
                model="qwen-vl-ocr-latest",
                messages=_messages(image),
                ocr_options={"task": "key_information_extraction", "task_config": {"result_schema": SCHEMA}},
                stream=True,
                incremental_output=True,
            )
        )
        assert all(e.status_code == 200 for e in events) and events[-1].output.choices[0].finish_reason == "stop"
        final = events[-1].output.choices[0].message.content[0]
        assert final["ocr_result"]["kv_result"] == {"Invoice No": "INV-2024-0815", "Total": "EUR 3,310.00"}
    routes = dict(emu.stats.calls_by_route)
    assert routes["dashscope/uploads"] == routes["emulator/oss-upload"] == 3
    assert routes["dashscope/generation"] == 3


def test_dashscope_errors_are_responses_not_exceptions(dashscope_at: Any, emu: Emulator) -> None:
    _needs_backends()
    wrong = dashscope_at.MultiModalConversation.call(
        api_key="nope", model="qwen-vl-ocr", messages=_messages(_invoice_url())
    )
    assert wrong.status_code == 401 and wrong.code == "InvalidApiKey" and wrong.request_id
    tiny = "data:image/png;base64," + base64.b64encode(_tiny_png()).decode()
    bad = dashscope_at.MultiModalConversation.call(api_key=KEY, model="qwen-vl-ocr", messages=_messages(tiny))
    assert bad.status_code == 400 and bad.code == "InvalidParameter"
    emu.inject("stream_error")
    events = list(
        dashscope_at.MultiModalConversation.call(
            api_key=KEY, model="qwen-vl-ocr", messages=_messages(_invoice_url()), stream=True, incremental_output=True
        )
    )
    assert events[-1].status_code == 500 and events[-1].code == "InternalError"
    assert all(e.status_code == 200 for e in events[:-1])
    emu.inject("data_inspection")
    flagged = dashscope_at.MultiModalConversation.call(
        api_key=KEY, model="qwen-vl-ocr", messages=_messages(_invoice_url())
    )
    assert flagged.status_code == 400 and flagged.code == "DataInspectionFailed"


def _tiny_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="PNG")
    return buffer.getvalue()


# --- C′: openai SDK, compatible mode


@pytest.fixture
def openai_client(emu: Emulator) -> Any:
    from openai import OpenAI

    return OpenAI(api_key=KEY, base_url=f"{emu.url}/compatible-mode/v1", max_retries=0)


def _chat(task: str, schema: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _invoice_url()}, "min_pixels": 3136, "max_pixels": 6422528},
                {"type": "text", "text": qwen_tasks.build_prompt(task, schema)},
            ],
        }
    ]


@pytest.mark.parametrize(("task", "schema"), [("advanced_recognition", None), ("key_information_extraction", SCHEMA)])
def test_openai_non_stream_and_stream(openai_client: Any, task: str, schema: dict[str, Any] | None) -> None:
    _needs_backends()
    completion = openai_client.chat.completions.create(model="qwen-vl-ocr-latest", messages=_chat(task, schema))
    text = completion.choices[0].message.content
    inner, lang = qwen_tasks.unwrap_fence(text)
    assert lang == "json"
    parsed = json.loads(inner)
    if schema is not None:
        assert parsed == {"Invoice No": "INV-2024-0815", "Total": "EUR 3,310.00"}
    else:
        assert all(len(entry["rotate_rect"]) == 5 for entry in parsed)
    assert completion.usage.prompt_tokens_details.image_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens

    stream = openai_client.chat.completions.create(
        model="qwen-vl-ocr-latest", messages=_chat(task, schema), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_openai_errors_map_to_sdk_exceptions(openai_client: Any, emu: Emulator) -> None:
    import openai
    from openai import OpenAI

    wrong = OpenAI(api_key="nope", base_url=f"{emu.url}/compatible-mode/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        wrong.chat.completions.create(model="qwen-vl-ocr", messages=_chat("advanced_recognition"))
    assert auth.value.status_code == 401 and auth.value.code == "invalid_api_key" and auth.value.request_id
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(
            model="qwen-vl-ocr", messages=[{"role": "user", "content": [{"type": "text", "text": "no image"}]}]
        )
    emu.inject(429)
    with pytest.raises(openai.RateLimitError):
        openai_client.chat.completions.create(model="qwen-vl-ocr", messages=_chat("advanced_recognition"))


def test_openai_stream_usage_only_when_asked(openai_client: Any) -> None:
    """OpenAI's ``stream_options.include_usage``: one extra last chunk with ``choices: []`` and the usage, every
    other chunk ``usage: null``; without it, no usage chunk at all."""
    _needs_backends()
    messages = _chat("text_recognition")
    asked = list(
        openai_client.chat.completions.create(
            model="qwen-vl-ocr-latest", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    *content_chunks, last = asked
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens > 0
    assert content_chunks and all(c.choices and c.usage is None for c in content_chunks)
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in asked}) == 1 and all(c.object == "chat.completion.chunk" for c in asked)
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert "Invoice No: INV-2024-0815" in text

    plain = list(openai_client.chat.completions.create(model="qwen-vl-ocr-latest", messages=messages, stream=True))
    assert all(c.choices and c.usage is None for c in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain) == text


def test_openai_retries_a_qps_429_after_retry_after_ms(emu: Emulator) -> None:
    """The emulator's own QPS refusal on the compatible route, retried by the openai SDK itself (``max_retries``
    default 2): it waits what ``retry-after-ms`` says (``_base_client._calculate_retry_timeout`` takes a hint
    of 0 < s <= 60 as is, no jitter), and the retry is admitted."""
    _needs_backends()
    from openai import OpenAI

    seen: list[tuple[float, str, int, str | None]] = []  # (time, "request"/"response", status, retry-after-ms)

    def on_request(request: httpx.Request) -> None:
        seen.append((time.monotonic(), "request", 0, None))

    def on_response(response: httpx.Response) -> None:
        seen.append((time.monotonic(), "response", response.status_code, response.headers.get("retry-after-ms")))

    http = httpx.Client(event_hooks={"request": [on_request], "response": [on_response]})
    client = OpenAI(api_key=KEY, base_url=f"{emu.url}/compatible-mode/v1", http_client=http)
    messages = _chat("text_recognition")
    first = client.chat.completions.create(model="qwen-vl-ocr-latest", messages=messages)  # warm, unthrottled
    seen.clear()
    emu.reset_stats()
    emu.set_qps(1)
    try:
        client.chat.completions.create(model="qwen-vl-ocr-latest", messages=messages)  # takes the window's slot
        raw = client.chat.completions.with_raw_response.create(model="qwen-vl-ocr-latest", messages=messages)
    finally:
        emu.set_qps(None)
        http.close()
    completion = raw.parse()
    assert raw.retries_taken == 1 and raw.http_response.status_code == 200
    assert completion.choices[0].message.content == first.choices[0].message.content
    stats = emu.stats
    assert stats.throttled == 1 and stats.responses_by_status == {200: 2, 429: 1}
    assert [(kind, status) for _, kind, status, _ in seen] == [
        ("request", 0),
        ("response", 200),
        ("request", 0),
        ("response", 429),
        ("request", 0),
        ("response", 200),
    ]
    hint_ms = seen[3][3]
    assert hint_ms is not None and 1 <= int(hint_ms) <= 1000
    waited = seen[4][0] - seen[3][0]
    assert waited >= int(hint_ms) / 1000 - 0.01, (waited, hint_ms)
