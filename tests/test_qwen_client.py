"""QwenOCR against the emulator over real sockets: every task in both API flavours, streaming, PDFs and multi-page
TIFFs, the image limits, faults and errors.

Nothing of ours is patched. Where a test needs to see the bytes on the wire it installs an httpx event hook through
the public ``http_client_factory`` argument; every fault comes from the emulator.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw, ImageFont

from aisearch_ingest.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentInspectionError,
    InvalidInputError,
    RateLimitError,
    ServerError,
    StreamError,
)
from aisearch_ingest.estimate import estimate_file
from aisearch_ingest.protocol.qwen_tasks import TASKS, build_prompt
from aisearch_ingest.qwen import QwenOCR

pytest.importorskip("rapidocr", reason="the emulator's OCR needs the `local` extra")
from aisearch_ingest.emulator import Emulator, Latency

KEY = "test-key-q3n"
NATIVE_ROUTE = "dashscope/generation"
OPENAI_ROUTE = "compatible/chat-completions"
ROUTE = {"native": NATIVE_ROUTE, "openai": OPENAI_ROUTE}
SCHEMA = {"Invoice No": "", "Total": ""}


def text_image(lines: list[str], size: tuple[int, int] = (520, 200), fmt: str = "PNG") -> bytes:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=26)
    for n, line in enumerate(lines):
        draw.text((16, 14 + 44 * n), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def pdf_bytes(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=(300, 200))
    pdf.set_font("helvetica", size=22)
    for text in pages:
        pdf.add_page()
        pdf.text(20, 60, text)
    return bytes(pdf.output())


INVOICE = text_image(["INVOICE", "Invoice No: A-17", "Total: 9.00"])


@pytest.fixture(scope="module")
def emu_server() -> Iterator[Emulator]:
    with Emulator(api_key=KEY, seed=3) as emulator:
        yield emulator


@pytest.fixture
def emu(emu_server: Emulator) -> Iterator[Emulator]:
    emu_server.reset()
    yield emu_server
    emu_server.reset()


class Wire:
    """Records the JSON bodies and headers our client puts on the wire (an httpx event hook, no patching)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []

    async def _hook(self, request: httpx.Request) -> None:
        self.bodies.append(json.loads(request.content))
        self.headers.append(request.headers)

    def factory(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(event_hooks={"request": [self._hook]}, timeout=30.0)


def make(emu: Emulator, **kwargs: Any) -> QwenOCR:
    kwargs.setdefault("qps", 0)  # no client-side spacing unless a test asks for it
    kwargs.setdefault("api_key", KEY)
    return QwenOCR(base_url=emu.url, **kwargs)


# --- every task, both flavours ------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["native", "openai"])
@pytest.mark.parametrize("task", [*TASKS, None])
def test_every_task_in_both_flavours(emu: Emulator, api: str, task: str | None) -> None:
    wire = Wire()
    kwargs: dict[str, Any] = {"task": task, "api": api, "http_client_factory": wire.factory}
    if task == "key_information_extraction":
        kwargs["result_schema"] = SCHEMA
    if task is None:
        kwargs["prompt"] = "Read the invoice number."
    with make(emu, **kwargs) as ocr:
        result = ocr.parse(INVOICE, file_name="invoice.png")

    assert emu.stats.calls_by_route.get(ROUTE[api]) == 1
    (body,) = wire.bodies
    if api == "native":
        content = body["input"]["messages"][0]["content"]
        if task is None:
            assert "ocr_options" not in body["parameters"]
            assert content[1] == {"text": "Read the invoice number."}
        else:
            assert body["parameters"]["ocr_options"]["task"] == task
            assert len(content) == 1  # the task's own prompt applies; no text part
    else:
        assert "ocr_options" not in body
        sent = body["messages"][0]["content"][1]["text"]
        expected_prompt = (
            "Read the invoice number." if task is None else build_prompt(task, kwargs.get("result_schema"))
        )
        assert sent == expected_prompt

    assert result.service == "qwen-ocr" and result.service_id == "qwen-vl-ocr"
    assert result.ocr_task == (task or "custom")
    assert result.content_type == (TASKS[task].content_type if task else "plain")
    assert result.page_num == 1 and [p.number for p in result.pages] == [1]
    assert result.calls == 1
    assert result.request_id
    assert result.source == "invoice.png" and result.file_type == "png"
    assert result.content.strip() and not result.content.lstrip().startswith("```")
    for key in ("input_tokens", "output_tokens", "total_tokens", "image_tokens"):
        assert result.usage[key] > 0, key
    assert result.usage["image_tokens"] == estimate_file(INVOICE).image_tokens

    if task in ("text_recognition", "multi_lan", None):
        assert "A-17" in result.content
    elif task == "advanced_recognition":
        words = result.extra["words_info"]
        assert words and all("rotate_rect" in w and len(w["rotate_rect"]) == 5 for w in words)
        if api == "native":
            assert all(len(w["location"]) == 8 for w in words)
        assert "Invoice No: A-17" in result.content.splitlines()
        assert result.pages[0].extra["words_info"] == words
    elif task == "key_information_extraction":
        assert result.extra["kv_result"] == {"Invoice No": "A-17", "Total": "9.00"}
        assert json.loads(result.content) == result.extra["kv_result"]
    elif task == "table_parsing":
        assert result.content.startswith("<table")
    elif task == "document_parsing":
        assert "\\begin{document}" in result.content
    elif task == "formula_recognition":
        assert result.content.startswith("$$")


@pytest.mark.parametrize("api", ["native", "openai"])
def test_key_information_full_field_mode(emu: Emulator, api: str) -> None:
    with make(emu, api=api, task="key_information_extraction") as ocr:
        result = ocr.parse(INVOICE)
    kv = result.extra["kv_result"]
    assert isinstance(kv, dict) and kv.get("Invoice No") == "A-17"
    assert result.content_type == "json"


def test_image_options_reach_the_wire(emu: Emulator) -> None:
    wire = Wire()
    with make(
        emu,
        min_pixels=401408,
        max_pixels=1_003_520,
        enable_rotate=True,
        max_tokens=300,
        http_client_factory=wire.factory,
    ) as ocr:
        result = ocr.parse(INVOICE)
    body = wire.bodies[0]
    part = body["input"]["messages"][0]["content"][0]
    assert (part["min_pixels"], part["max_pixels"], part["enable_rotate"]) == (401408, 1_003_520, True)
    assert part["image"].startswith("data:image/png;base64,")
    assert body["parameters"]["max_tokens"] == 300
    # the service bills by the options it was given; the estimate follows the same rule
    assert result.usage["image_tokens"] == estimate_file(INVOICE, min_pixels=401408).image_tokens


def test_max_tokens_cut_is_reported(emu: Emulator) -> None:
    with make(emu, max_tokens=3) as ocr:
        result = ocr.parse(INVOICE)
    assert result.pages[0].extra["finish_reason"] == "length"
    assert result.usage["output_tokens"] <= 3


# --- inputs -------------------------------------------------------------------------------------------------------


def test_inputs_file_url_and_data_uri_with_real_mime(emu: Emulator, tmp_path: Any) -> None:
    jpeg = text_image(["Invoice No: A-17"], fmt="JPEG")
    path = tmp_path / "scan.jpg"
    path.write_bytes(jpeg)
    url = emu.serve_file(jpeg, "scan.jpg", "image/jpeg")
    # a data: URI that claims PNG but holds JPEG bytes is re-labelled after the real format
    lying_uri = "data:image/png;base64," + base64.b64encode(jpeg).decode()
    wire = Wire()
    with make(emu, http_client_factory=wire.factory) as ocr:
        results = [ocr.parse(item) for item in (path, str(path), url, lying_uri, jpeg)]
    sent = [b["input"]["messages"][0]["content"][0]["image"] for b in wire.bodies]
    assert sent[2] == url
    for ref in (sent[0], sent[1], sent[3], sent[4]):
        assert ref.startswith("data:image/jpeg;base64,")
    assert all("A-17" in r.content for r in results)
    assert results[2].source == url


@pytest.mark.parametrize(("fmt", "mime"), [("BMP", "image/bmp"), ("WEBP", "image/webp"), ("TIFF", "image/tiff")])
def test_other_accepted_formats_are_sent_with_their_mime_type(emu: Emulator, fmt: str, mime: str) -> None:
    wire = Wire()
    with make(emu, http_client_factory=wire.factory) as ocr:
        result = ocr.parse(text_image(["Invoice No: A-17"], fmt=fmt))
    assert wire.bodies[0]["input"]["messages"][0]["content"][0]["image"].startswith(f"data:{mime};base64,")
    assert "A-17" in result.content


def test_multipage_tiff_is_split_into_pages(emu: Emulator) -> None:
    frames = [Image.open(io.BytesIO(text_image([f"Frame {n} total 9.00"]))) for n in (1, 2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    with make(emu) as ocr:
        result = ocr.parse(buffer.getvalue(), file_name="fax.tiff")
    assert result.page_num == 2 and [p.number for p in result.pages] == [1, 2]
    assert "Frame 1" in result.pages[0].content and "Frame 2" in result.pages[1].content
    assert result.file_type == "tiff" and result.calls == 2


# --- PDFs ---------------------------------------------------------------------------------------------------------

PDF3 = pdf_bytes(["First page alpha", "Second page beta", "Third page gamma"])


def test_three_page_pdf_in_order_with_page_numbers(emu: Emulator) -> None:
    emu.set_latency(Latency(fixed=0.05))
    with make(emu, max_concurrency=3) as ocr:
        result = ocr.parse(PDF3, file_name="report.pdf")
    assert result.page_num == 3
    assert [p.number for p in result.pages] == [1, 2, 3]
    for page, word in zip(result.pages, ("First", "Second", "Third"), strict=True):
        assert word in page.content
        assert page.extra["request_id"]
    assert result.content == "\n\n".join(p.content for p in result.pages)
    assert result.calls == 3 and emu.stats.calls_by_route[NATIVE_ROUTE] == 3
    assert result.usage["image_tokens"] == sum(p.extra["usage"]["image_tokens"] for p in result.pages)
    assert result.usage["image_tokens"] == estimate_file(PDF3).image_tokens
    assert result.file_type == "pdf" and result.source == "report.pdf"


def test_pdf_structured_outputs_are_page_tagged_and_merged(emu: Emulator) -> None:
    pdf = pdf_bytes(["Invoice No: A-17", "Total: 9.00"])
    with make(emu, task="advanced_recognition") as ocr:
        boxes = ocr.parse(pdf)
    assert {w["page"] for w in boxes.extra["words_info"]} == {1, 2}
    assert all("page" not in w for w in boxes.pages[0].extra["words_info"])
    with make(emu, task="key_information_extraction", result_schema=SCHEMA, api="openai") as ocr:
        kv = ocr.parse(pdf)
    assert kv.pages[0].extra["kv_result"]["Invoice No"] == "A-17"
    assert kv.pages[1].extra["kv_result"]["Total"] == "9.00"
    assert kv.extra["kv_result"] == {"Invoice No": "A-17", "Total": "9.00"}
    assert json.loads(kv.content) == kv.extra["kv_result"] and kv.content_type == "json"


def test_pdf_pages_are_sent_concurrently(emu: Emulator) -> None:
    pdf = pdf_bytes([f"Page {n}" for n in range(1, 5)])
    with make(emu) as ocr:
        ocr.parse(pdf)  # warm the emulator's OCR cache so only the emulated latency counts
        emu.set_latency(Latency(fixed=0.4))
        result = ocr.parse(pdf)
    assert [p.number for p in result.pages] == [1, 2, 3, 4]
    assert result.latency < 0.4 * 3  # one after the other would take 1.6 s


def test_pdf_pages_stay_under_the_rate_limit(emu: Emulator) -> None:
    # The emulator refuses a 4th call within any 1 s window; 4 pages sent at once would be throttled.
    pdf = pdf_bytes([f"Page {n}" for n in range(1, 5)])
    emu.set_qps(3)
    with make(emu, qps=2.5) as ocr:
        result = ocr.parse(pdf)
    assert emu.stats.throttled == 0
    assert emu.stats.max_calls_in_any_window(1.0) <= 3
    assert result.calls == 4


def test_pdf_url_is_rejected_with_advice(emu: Emulator) -> None:
    url = emu.serve_file(PDF3, "report.pdf", "application/pdf")
    with make(emu) as ocr, pytest.raises(InvalidInputError, match="Download the file"):
        ocr.parse(url)
    assert emu.stats.total_calls == 0


# --- limits, checked before sending -------------------------------------------------------------------------------


def noise_png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def blank(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format=fmt)
    return buffer.getvalue()


def heic(png: bytes) -> bytes:
    """The image re-encoded as HEIC (an iPhone photo's format), with pillow-heif from the `local` extra."""
    pytest.importorskip("pillow_heif", reason="HEIC needs pillow-heif (the `local` extra)")
    from pillow_heif import register_heif_opener

    register_heif_opener()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buffer, format="HEIF", quality=95)
    return buffer.getvalue()


LIMIT_CASES: list[tuple[str, Callable[[], bytes], str, dict[str, Any]]] = [
    ("short.heic", lambda: heic(blank((400, 9))), "min_side", {}),
    ("big.png", lambda: noise_png((1900, 1900)), "max_image_bytes", {}),  # ~10.8 MB, ~14.4 MB in base64
    ("thin.png", lambda: blank((10, 400)), "min_side", {}),
    ("short.png", lambda: blank((400, 9)), "min_side", {}),
    ("strip.png", lambda: blank((4040, 20)), "aspect_ratio", {}),
    ("huge.png", lambda: blank((4000, 4000)), "max_pixels", {}),
    ("huger.png", lambda: blank((5000, 5000)), "max_pixels", {"max_pixels": 23_520_000}),
    ("anim.gif", lambda: blank((100, 100), "GIF"), "file_type", {}),
    ("notes.docx", lambda: b"PK\x03\x04" + b"\x00" * 40, "file_type", {}),
    ("empty.png", lambda: b"", "empty", {}),
    ("tall.pdf", lambda: pdf_bytes_sized((3, 500)), "min_side", {}),
]


def pdf_bytes_sized(size: tuple[float, float]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=size)
    pdf.add_page()
    return bytes(pdf.output())


@pytest.mark.parametrize(("name", "build", "limit", "options"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
@pytest.mark.parametrize("api", ["native", "openai"])
def test_each_limit_is_rejected_before_sending(
    emu: Emulator, api: str, name: str, build: Callable[[], bytes], limit: str, options: dict[str, Any]
) -> None:
    with make(emu, api=api, **options) as ocr, pytest.raises(InvalidInputError) as info:
        ocr.parse(build(), file_name=name)
    assert info.value.limit == limit
    assert name in str(info.value)
    assert emu.stats.total_calls == 0


@pytest.mark.parametrize("api", ["native", "openai"])
def test_heic_photos_are_read(emu: Emulator, api: str) -> None:
    png = text_image(["HEIC photo 2026", "Total: 9.00"])
    photo = heic(png)
    assert photo[4:12] == b"ftypheic"
    wire = Wire()
    with make(emu, api=api, task="text_recognition", http_client_factory=wire.factory) as ocr:
        result = ocr.parse(photo, file_name="IMG_0001.HEIC")
        same_as_png = ocr.parse(png, file_name="IMG_0001.png")
    assert "HEIC photo 2026" in result.content and "9.00" in result.content
    assert "data:image/heic;base64," in json.dumps(wire.bodies[0])
    assert result.usage["image_tokens"] == same_as_png.usage["image_tokens"]  # decoded at its real 520 x 200 size


def test_invalid_options_fail_at_construction(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="nests 4 layers"):
        make(emu, task="key_information_extraction", result_schema={"a": {"b": {"c": {"d": ""}}}})
    with pytest.raises(ValueError, match="enable_rotate"):
        make(emu, api="openai", enable_rotate=True)
    with pytest.raises(ValueError, match="max_pixels can be at most 30,720,000 for qwen-vl-ocr"):
        make(emu, max_pixels=30_720_001)
    assert make(emu, max_pixels=30_720_000).request.max_pixels == 30_720_000  # 30000x32x32
    with pytest.raises(ValueError, match="max_pixels can be at most 23,520,000 for qwen-vl-ocr-2025-04-13"):
        make(emu, model="qwen-vl-ocr-2025-04-13", max_pixels=30_000_000)
    with pytest.raises(ValueError, match="min_pixels must be at least 3,072 for qwen-vl-ocr"):
        make(emu, min_pixels=3071)
    with pytest.raises(ValueError, match="min_pixels must be at least 3,136 for qwen-vl-ocr-2025-08-28"):
        make(emu, model="qwen-vl-ocr-2025-08-28", min_pixels=3072)
    with pytest.raises(ValueError, match="unknown Qwen-OCR task"):
        make(emu, task="handwriting")
    with pytest.raises(ValueError, match="custom prompt"):
        make(emu, task="table_parsing", prompt="hi")
    with pytest.raises(ValueError, match="api must be"):
        make(emu, api="grpc")
    assert make(emu, prompt="Just the title").ocr_task == "custom"  # a prompt with the default task is custom


# --- streaming ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "incremental"),
    [("native", True), ("native", False), ("openai", True)],
    ids=["native-incr", "native-full", "openai"],
)
def test_streaming_assembles_the_same_result(emu: Emulator, api: str, incremental: bool) -> None:
    wire = Wire()
    deltas: list[str] = []
    with make(emu, api=api, task="table_parsing") as plain_ocr:
        plain = plain_ocr.parse(INVOICE)
    with make(
        emu,
        api=api,
        task="table_parsing",
        stream=True,
        incremental_output=incremental,
        on_delta=deltas.append,
        http_client_factory=wire.factory,
    ) as ocr:
        streamed = ocr.parse(INVOICE)
    assert len(deltas) > 3
    assert "".join(deltas) == streamed.pages[0].extra["raw_text"]  # deltas are the raw fenced answer
    assert streamed.content == plain.content and streamed.content.startswith("<table")
    assert streamed.content_type == "html"
    assert streamed.usage == plain.usage
    assert streamed.request_id
    headers, body = wire.headers[0], wire.bodies[0]
    assert headers["accept"] == "text/event-stream"
    if api == "native":
        assert headers["x-dashscope-sse"] == "enable"
        assert body["parameters"]["incremental_output"] is incremental
        assert "stream" not in body
    else:
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_streamed_advanced_recognition_keeps_boxes(emu: Emulator) -> None:
    with make(emu, task="advanced_recognition", stream=True) as ocr:
        result = ocr.parse(INVOICE)
    assert result.extra["words_info"] and all(len(w["location"]) == 8 for w in result.extra["words_info"])


def test_streamed_pdf_deltas_arrive_in_page_order(emu: Emulator) -> None:
    # later pages answer first (shorter texts, per-token latency): the relay must still deliver page order
    pdf = pdf_bytes(["First page alpha beta gamma delta epsilon", "Second page", "Third"])
    emu.set_latency(Latency(per_token=0.01))
    deltas: list[str] = []
    with make(emu, stream=True, on_delta=deltas.append) as ocr:
        result = ocr.parse(pdf)
    assert "".join(deltas) == result.content
    assert result.content.index("First") < result.content.index("Second") < result.content.index("Third")


@pytest.mark.parametrize("api", ["native", "openai"])
async def test_astream_yields_partial_text(emu: Emulator, api: str) -> None:
    async with make(emu, api=api) as ocr:
        parts = [delta async for delta in ocr.astream(INVOICE)]
        whole = await ocr.aparse(INVOICE)
    assert len(parts) > 1
    assert "".join(parts) == whole.content


async def test_astream_over_a_pdf_streams_pages_in_order(emu: Emulator) -> None:
    async with make(emu) as ocr:
        text = "".join([delta async for delta in ocr.astream(PDF3)])
    assert text.index("First") < text.index("Second") < text.index("Third")
    assert emu.stats.calls_by_route[NATIVE_ROUTE] == 3


@pytest.mark.parametrize("api", ["native", "openai"])
def test_stream_cut_midway_is_a_stream_error(emu: Emulator, api: str) -> None:
    emu.inject("stream_cut")
    deltas: list[str] = []
    with make(emu, api=api, stream=True, on_delta=deltas.append) as ocr, pytest.raises(StreamError) as info:
        ocr.parse(INVOICE, file_name="cut.png")
    assert emu.stats.stream_cuts == 1
    assert info.value.partial_text and info.value.partial_text == "".join(deltas)
    assert info.value.source == "cut.png"
    assert emu.stats.calls_by_route[ROUTE[api]] == 1  # a broken stream is not silently re-sent


@pytest.mark.parametrize("api", ["native", "openai"])
def test_error_event_midstream_maps_onto_the_error_tree(emu: Emulator, api: str) -> None:
    emu.inject("stream_error")
    with make(emu, api=api, stream=True) as ocr, pytest.raises(ServerError):
        ocr.parse(INVOICE)
    emu.inject("data_inspection")
    with make(emu, api=api, stream=True) as ocr, pytest.raises(ContentInspectionError):
        ocr.parse(INVOICE)


# --- errors and retries -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["native", "openai"])
@pytest.mark.parametrize("stream", [False, True])
def test_429_with_retry_after_is_retried(emu: Emulator, api: str, stream: bool) -> None:
    waits: list[float] = []

    async def record(delay: float) -> None:
        waits.append(delay)

    emu.inject(429, retry_after=0.25, route=ROUTE[api])
    with make(emu, api=api, stream=stream, sleep=record) as ocr:
        result = ocr.parse(INVOICE)
    assert result.calls == 2
    assert 0.25 in waits
    assert emu.stats.responses_by_status[429] == 1


def test_429_beyond_the_retries_is_a_rate_limit_error(emu: Emulator) -> None:
    async def no_wait(delay: float) -> None:
        return None

    emu.inject(429, count=3, retry_after=0.1)
    with make(emu, max_retries=2, sleep=no_wait) as ocr, pytest.raises(RateLimitError) as info:
        ocr.parse(INVOICE)
    assert info.value.retry_after == pytest.approx(0.1)


@pytest.mark.parametrize("kind", [500, 503, "drop"])
def test_server_faults_and_drops_are_retried(emu: Emulator, kind: int | str) -> None:
    async def no_wait(delay: float) -> None:
        return None

    emu.inject(kind)  # type: ignore[arg-type]
    with make(emu, sleep=no_wait) as ocr:
        assert ocr.parse(INVOICE).calls == 2


@pytest.mark.parametrize("api", ["native", "openai"])
@pytest.mark.parametrize("stream", [False, True])
def test_invalid_api_key_is_an_authentication_error(emu: Emulator, api: str, stream: bool) -> None:
    wrong = "sk-wrong-key-6d1e0f"
    with make(emu, api=api, stream=stream, api_key=wrong) as ocr, pytest.raises(AuthenticationError) as info:
        ocr.parse(INVOICE)
    assert info.value.status_code == 401
    assert wrong not in str(info.value) and wrong not in repr(info.value.body)
    assert emu.stats.calls_by_route[ROUTE[api]] == 1  # never retried


@pytest.mark.parametrize("api", ["native", "openai"])
def test_data_inspection_is_a_content_inspection_error(emu: Emulator, api: str) -> None:
    emu.inject("data_inspection")
    with make(emu, api=api) as ocr, pytest.raises(ContentInspectionError) as info:
        ocr.parse(INVOICE)
    assert info.value.status_code == 400
    assert info.value.code in ("DataInspectionFailed", "data_inspection_failed")


def test_invalid_parameter_is_a_bad_request(emu: Emulator) -> None:
    from aisearch_ingest.errors import BadRequestError

    with make(emu, model="qwen-max") as ocr, pytest.raises(BadRequestError):
        ocr.parse(INVOICE)


def test_a_failing_page_fails_the_file_and_parse_many_goes_on(emu: Emulator) -> None:
    emu.inject("data_inspection")
    with make(emu, max_concurrency=1) as ocr:
        with pytest.raises(ContentInspectionError):
            ocr.parse(PDF3)
        outcomes = list(ocr.parse_many([INVOICE, PDF3]))
    assert all(o.ok for o in outcomes)
    assert sorted(o.result.page_num for o in outcomes if o.result) == [1, 3]


# --- configuration, blocking use, secrecy -------------------------------------------------------------------------


def test_configuration_from_arguments_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("DASHSCOPE_BASE_URL", raising=False)
    with pytest.raises(ConfigurationError):
        QwenOCR()
    assert QwenOCR(api_key="k").settings.base_url == "https://dashscope-intl.aliyuncs.com"
    assert QwenOCR(api_key="k", region="cn").settings.base_url == "https://dashscope.aliyuncs.com"
    monkeypatch.setenv("DASHSCOPE_API_KEY", "env-key-123")
    monkeypatch.setenv("DASHSCOPE_BASE_URL", "https://example.test/api/v1")
    ocr = QwenOCR()
    assert ocr.settings.api_key.get_secret_value() == "env-key-123"
    assert ocr.settings.base_url == "https://example.test"
    assert "env-key-123" not in repr(ocr)
    assert ocr.model == "qwen-vl-ocr" and ocr.api == "native" and ocr.ocr_task == "text_recognition"


async def test_blocking_parse_inside_a_running_event_loop(emu: Emulator) -> None:
    asyncio.get_running_loop()
    with make(emu) as ocr:
        result = ocr.parse(INVOICE)  # blocking call from inside the loop: runs on the client's own loop thread
        many = list(ocr.parse_many([INVOICE, PDF3]))
    assert "A-17" in result.content
    assert len(many) == 2 and all(o.ok for o in many)


def test_logs_hold_neither_the_key_nor_the_image(emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    async def no_wait(delay: float) -> None:
        return None

    emu.inject(500)
    caplog.set_level(logging.DEBUG, logger="aisearch_ingest")
    with make(emu, stream=True, sleep=no_wait) as ocr:
        ocr.parse(INVOICE)
    text = caplog.text
    assert caplog.records  # something was logged (attempts, the retry)
    assert KEY not in text
    assert base64.b64encode(INVOICE)[:40].decode() not in text
