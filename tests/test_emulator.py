"""The emulator's wire behaviour, over real sockets, with httpx as a raw client (not our engine).

Text documents (HTML, Markdown, text) need no optional package; image and PDF parsing needs the ``local``
extra and those tests skip without it.
"""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aisearch_ingest.emulator import Emulator, Faults, Latency
from aisearch_ingest.protocol import qwen_models, qwen_tasks

KEY = "test-key-emulator"
WS = "default"
DOC = f"/v3/openapi/workspaces/{WS}/document-analyze/ops-document-analyze-001"
IMG = f"/v3/openapi/workspaces/{WS}/image-analyze/ops-image-analyze-ocr-001"
VLM = f"/v3/openapi/workspaces/{WS}/image-analyze/ops-image-analyze-vlm-001"
GEN = "/api/v1/services/aigc/multimodal-generation/generation"
CHAT = "/compatible-mode/v1/chat/completions"
UPPER_UUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
LOWER_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
AISEARCH_ERROR_KEYS = {"request_id", "latency", "http_code", "code", "message"}
HTML = b"<html><body><h1>Quarterly notes</h1><p>Revenue grew by nine percent.</p></body></html>"


def _png(text: str = "Hello OCR 2026", size: tuple[int, int] = (360, 80), fmt: str = "PNG") -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    if text:
        ImageDraw.Draw(image).text((12, 20), text, fill="black", font=ImageFont.load_default(size=28))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{_b64(data)}"


def _needs_backends() -> None:
    pytest.importorskip("rapidocr", reason="image/PDF parsing needs the `local` extra")


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api_key=KEY, seed=1) as emulator:
        yield emulator


def _client(emu: Emulator) -> httpx.Client:
    return httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False, timeout=30)


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with _client(emu) as c:
        yield c


@pytest.fixture(scope="module")
def png() -> bytes:
    return _png()


def _poll(client: httpx.Client, base: str, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"{base}/async/task-status", params={"task_id": task_id})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["result"]["status"] != "PENDING" or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def _assert_aisearch_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == AISEARCH_ERROR_KEYS
    assert body["http_code"] == status and body["code"] == code
    assert UPPER_UUID.match(body["request_id"])
    assert r.headers["x-acs-request-id"] == body["request_id"]
    return body


def _qwen_body(image: str, *, text: str | None = None, **parameters: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"image": image}]
    if text is not None:
        content.append({"text": text})
    return {
        "model": "qwen-vl-ocr-latest",
        "parameters": parameters,
        "input": {"messages": [{"role": "user", "content": content}]},
    }


def _native_events(raw: str) -> list[dict[str, Any]]:
    """Parse a native DashScope SSE body strictly: every event is id/event/(:comment)/(status)/data lines."""
    events = []
    for block in raw.split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        fields: dict[str, Any] = {"comments": [], "status": None}
        for line in lines:
            if line.startswith(":"):
                fields["comments"].append(line)
            else:
                name, sep, value = line.partition(":")
                assert sep and not value.startswith(" "), f"bad SSE line {line!r}"
                fields[name] = json.loads(value) if name == "data" else value
        events.append(fields)
    return events


# --- AI Search: routes and bodies


def test_document_async_create_and_poll(client: httpx.Client, emu: Emulator) -> None:
    r = client.post(f"{DOC}/async", json={"document": {"content": _b64(HTML), "file_name": "notes.html"}})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"request_id", "latency", "http_code", "result"}
    assert body["http_code"] == 200 and isinstance(body["latency"], int)
    assert UPPER_UUID.match(body["request_id"]) and r.headers["x-acs-request-id"] == body["request_id"]
    task_id = body["result"]["task_id"]
    assert LOWER_UUID.match(task_id) and set(body["result"]) == {"task_id"}

    status = _poll(client, DOC, task_id)
    assert set(status) == {"request_id", "latency", "http_code", "result", "usage"}
    result = status["result"]
    assert result["task_id"] == task_id and result["status"] == "SUCCESS" and result["error"] == ""
    data = result["data"]
    assert set(data) == {"content", "content_type", "page_num", "pages"}
    assert data["content_type"] == "html" and "Revenue grew" in data["content"]
    assert data["page_num"] == len(data["pages"]) >= 1
    assert set(status["usage"]) == {"token_count", "table_count", "image_count"}
    assert status["usage"]["token_count"] > 0
    assert emu.stats.tasks_created == 1


def test_document_sync_and_semantic_usage(client: httpx.Client) -> None:
    body = {"document": {"content": _b64(b"# Title\n\nSome *markdown* text."), "file_name": "a.md"}}
    r = client.post(f"{DOC}/sync", json={**body, "strategy": {"enable_semantic": True}})
    assert r.status_code == 200
    out = r.json()
    assert set(out["result"]) == {"status", "error", "data"}  # no task_id on the sync route
    assert out["result"]["status"] == "SUCCESS"
    assert out["usage"]["semantic_token_count"] > 0
    plain = client.post(f"{DOC}/sync", json=body).json()
    assert "semantic_token_count" not in plain["usage"]


def test_file_type_is_inferred_from_url_and_url_is_fetched_from_loopback(client: httpx.Client, emu: Emulator) -> None:
    url = emu.serve_file(HTML, "page.html", "text/html")
    r = client.post(f"{DOC}/sync", json={"document": {"url": url}})
    assert r.json()["result"]["status"] == "SUCCESS"
    assert "Quarterly notes" in r.json()["result"]["data"]["content"]


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://example.com/report.html", "offline"),
        ("http://127.0.0.1:9/missing.html", "download document failed"),
    ],
)
def test_unreachable_url_fails_the_task(client: httpx.Client, url: str, needle: str) -> None:
    task_id = client.post(f"{DOC}/async", json={"document": {"url": url}}).json()["result"]["task_id"]
    result = _poll(client, DOC, task_id)["result"]
    assert result["status"] == "FAIL" and needle in result["error"]
    assert "data" not in result


def test_url_whose_bytes_are_not_the_declared_type_fails(client: httpx.Client, emu: Emulator, png: bytes) -> None:
    url = emu.serve_file(png, "fake.pdf")
    result = client.post(f"{DOC}/sync", json={"document": {"url": url}}).json()["result"]
    assert result["status"] == "FAIL" and "not a valid pdf" in result["error"]


def test_image_analyze_usage_per_service(client: httpx.Client, png: bytes) -> None:
    _needs_backends()
    ocr = client.post(f"{IMG}/sync", json={"document": {"content": _b64(png), "file_name": "a.png"}}).json()
    assert ocr["result"]["status"] == "SUCCESS"
    assert "Hello" in ocr["result"]["data"]["content"]
    assert ocr["result"]["data"]["page_num"] == 1
    assert ocr["usage"] == {"pv_count": 1}
    task = client.post(f"{VLM}/async", json={"document": {"content": _b64(png), "file_type": "png"}}).json()
    status = _poll(client, VLM, task["result"]["task_id"])
    assert status["result"]["status"] == "SUCCESS"
    assert set(status["usage"]) == {"token_count"} and status["usage"]["token_count"] > 0


def test_pdf_gives_markdown_pages(client: httpx.Client) -> None:
    _needs_backends()
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in ("First page.", "Second page."):
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    body = {"document": {"content": _b64(bytes(pdf.output())), "file_name": "two.pdf"}}
    data = client.post(f"{DOC}/sync", json=body).json()["result"]["data"]
    assert data["content_type"] == "markdown" and data["page_num"] == 2
    assert "Second page." in data["pages"][1]


def test_image_storage_url_serves_embedded_images(client: httpx.Client, png: bytes) -> None:
    md = f"# Figure\n\n![chart]({_data_url(png)})\n".encode()
    doc = {"content": _b64(md), "file_name": "fig.md"}
    inline = client.post(f"{DOC}/sync", json={"document": doc, "output": {"image_storage": "base64"}}).json()
    if "data:image/png;base64," not in inline["result"]["data"]["content"]:
        pytest.skip("the markdown backend does not keep inline images")
    linked = client.post(f"{DOC}/sync", json={"document": doc, "output": {"image_storage": "url"}}).json()
    content = linked["result"]["data"]["content"]
    assert "data:image" not in content
    url = re.search(r"http://127\.0\.0\.1:\d+/_emulator/files/[0-9a-f]+\.png", content)
    assert url is not None
    assert httpx.get(url.group(0), trust_env=False).content == png


def test_repeated_identical_files_are_parsed_once(client: httpx.Client) -> None:
    from aisearch_ingest.emulator._runtime import memo

    body = {"document": {"content": _b64(HTML + uuid.uuid4().hex.encode()), "file_name": "x.html"}}
    hits, misses = memo.hits, memo.misses
    for _ in range(3):
        assert client.post(f"{DOC}/sync", json=body).json()["result"]["status"] == "SUCCESS"
    assert (memo.hits - hits, memo.misses - misses) == (2, 1)


# --- AI Search: errors


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"document": {"content": _b64(HTML), "url": "http://127.0.0.1/a.html", "file_name": "a.html"}}, "both"),
        ({"document": {"file_name": "a.html"}}, "document.content or document.url required"),
        ({"document": {"content": _b64(HTML)}}, "document.file_name required"),
        ({"document": {"content": _b64(HTML), "file_name": "tool.exe"}}, "not supported"),
        ({"document": {"content": _b64(HTML), "file_name": "report.pdf"}}, "not a valid pdf"),
        ({"document": {"content": "%%% not base64", "file_name": "a.html"}}, "base64"),
        ({"document": {"url": "ftp://127.0.0.1/a.pdf"}}, "http or https"),
        ({"document": {"url": "http://127.0.0.1/download"}}, "document.file_type required"),
        (
            {"document": {"content": _b64(HTML), "file_name": "a.html"}, "output": {"image_storage": "xxx"}},
            'Cannot deserialize value of type `ImageStorage` from String "xxx"',
        ),
        ({"document": "not an object"}, "JSON parse error"),
    ],
)
def test_invalid_parameter(client: httpx.Client, body: dict[str, Any], message: str) -> None:
    error = _assert_aisearch_error(client.post(f"{DOC}/async", json=body), 400, "InvalidParameter")
    assert message in error["message"]


def test_malformed_json_and_sha256_mismatch(client: httpx.Client) -> None:
    r = client.post(f"{DOC}/async", content=b'{"document": ', headers={"Content-Type": "application/json"})
    assert "JSON parse error" in _assert_aisearch_error(r, 400, "InvalidParameter")["message"]
    payload = json.dumps({"document": {"content": _b64(HTML), "file_name": "a.html"}}).encode()
    r = client.post(f"{DOC}/sync", content=payload, headers={"x-acs-content-sha256": "0" * 64})
    assert "x-acs-content-sha256" in _assert_aisearch_error(r, 400, "InvalidParameter")["message"]


@pytest.mark.parametrize(
    "path",
    [
        f"/v3/openapi/workspaces/{WS}/document-analyze/ops-document-analyze-999/async",
        f"/v3/openapi/workspaces/{WS}/document-analyze/ops-image-analyze-ocr-001/async",
        f"/v3/openapi/workspaces/{WS}/image-analyze/ops-document-analyze-001/sync",
    ],
)
def test_unknown_service_id_is_invalid_parameter(client: httpx.Client, path: str) -> None:
    body = {"document": {"content": _b64(HTML), "file_name": "a.html"}}
    assert "service_id" in _assert_aisearch_error(client.post(path, json=body), 400, "InvalidParameter")["message"]


def test_body_limit_is_8_mib(client: httpx.Client) -> None:
    limit = 8 * 1024 * 1024
    head = json.dumps({"document": {"content": _b64(b"x" * 3_000_000), "file_name": "big.txt"}}).encode()
    at_limit = head + b" " * (limit - len(head))
    assert len(at_limit) == limit
    assert client.post(f"{DOC}/async", content=at_limit).status_code == 200
    over = _assert_aisearch_error(client.post(f"{DOC}/async", content=at_limit + b" "), 400, "InvalidParameter")
    assert "8MB" in over["message"]
    # the connection is still usable afterwards (the body was read, keep-alive preserved)
    assert client.get(f"{DOC}/async/task-status", params={"task_id": "x"}).status_code == 404


def test_task_not_exist(client: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    r = client.get(f"{DOC}/async/task-status", params={"task_id": missing})
    assert _assert_aisearch_error(r, 404, "BadRequest.TaskNotExist")["message"] == f"task[{missing}] not exist"
    # a task is only known under the service id it was created with
    task_id = client.post(f"{DOC}/async", json={"document": {"content": _b64(HTML), "file_name": "a.html"}}).json()[
        "result"
    ]["task_id"]
    other = f"/v3/openapi/workspaces/{WS}/document-analyze/ops-document-analyze-002"
    r = client.get(f"{other}/async/task-status", params={"task_id": task_id})
    _assert_aisearch_error(r, 404, "BadRequest.TaskNotExist")
    _assert_aisearch_error(client.get(f"{DOC}/async/task-status"), 400, "InvalidParameter")


def test_unknown_path_and_wrong_method(client: httpx.Client) -> None:
    _assert_aisearch_error(client.get("/v3/openapi/workspaces/default/document-split/x"), 404, "NotFound")
    r = client.get(f"{DOC}/async")
    _assert_aisearch_error(r, 405, "MethodNotAllowed")
    assert r.headers["allow"] == "POST"


# --- auth


def test_auth_missing_and_wrong_key(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.url, trust_env=False) as raw:
        r = raw.get(f"{DOC}/async/task-status", params={"task_id": "x"})
        _assert_aisearch_error(r, 401, "Unauthorized")
        r = raw.get(f"{DOC}/async/task-status", params={"task_id": "x"}, headers={"Authorization": "Bearer nope"})
        body = _assert_aisearch_error(r, 401, "Unauthorized")
        assert "nope" not in r.text and KEY not in r.text
        r = raw.post(GEN, json={}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"
        assert set(r.json()) == {"code", "message", "request_id"}
        r = raw.post(CHAT, json={})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["x-should-retry"] == "false"
        ok = raw.get(f"{DOC}/async/task-status", params={"task_id": "x"}, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 404
    assert KEY not in repr(emu)
    assert body["message"]


def test_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISEARCH_API_KEY", "env-search-key")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "env-dashscope-key")
    with Emulator() as emu, httpx.Client(base_url=emu.url, trust_env=False) as raw:
        status = f"{DOC}/async/task-status?task_id=x"

        def code(path: str, key: str, method: str = "GET") -> int:
            return raw.request(method, path, headers={"Authorization": f"Bearer {key}"}, json={}).status_code

        assert code(status, "env-search-key") == 404
        assert code(status, "env-dashscope-key") == 401
        assert code(GEN, "env-dashscope-key", "POST") == 400
        assert code(GEN, "env-search-key", "POST") == 401
    monkeypatch.delenv("AISEARCH_API_KEY")
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    with Emulator() as emu, httpx.Client(base_url=emu.url, trust_env=False) as raw:
        assert raw.get(status, headers={"Authorization": "Bearer anything"}).status_code == 404
        assert raw.get(status).status_code == 401


# --- QPS limit and injected faults


def test_qps_window_counts_every_call(emu: Emulator, client: httpx.Client) -> None:
    emu.set_qps(5)
    paths = [f"{DOC}/async/task-status?task_id=x", GEN, f"{IMG}/async/task-status?task_id=y"]
    started = time.monotonic()
    responses = [
        client.get(path) if "task-status" in path else client.post(path, json={})
        for path in (paths[i % 3] for i in range(12))
    ]
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, "the burst must fit in one window for this test to mean anything"
    statuses = [r.status_code for r in responses]
    assert statuses.count(429) == 7 and 429 not in statuses[:5]
    throttled = responses[-1]
    millis = throttled.headers["x-acs-retry-after"]
    assert millis.isdigit(), "integer milliseconds, as alibabacloud_tea_openapi reads it"
    retry = int(millis) / 1000
    assert 0 < retry <= 1.0
    assert throttled.headers["Retry-After"] == "1"  # integer seconds, at least 1
    assert throttled.json()["code"] == "Throttling.RateQuota"
    assert responses[-2].json()["code"] == "Throttling.RateQuota"  # the DashScope route's own format
    assert "x-acs-retry-after" not in responses[-2].headers  # an AI Search gateway header only
    stats = emu.stats
    assert stats.total_calls == 12 and stats.throttled == 7
    assert stats.max_calls_in_any_window(1.0) == 12
    # refused calls stay in the window: room again once the 5th newest call (the 8th) is a second old
    times = stats.call_times
    assert retry == pytest.approx(times[7] + 1.0 - times[11], abs=0.003)
    time.sleep(retry + 0.01)
    assert client.get(paths[0]).status_code == 404


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [("Retry-After", 2.0, "2"), ("x-acs-retry-after", 0.25, "250"), ("retry-after-ms", 0.25, "250")],
)
def test_inject_429_with_each_retry_after_variant(
    emu: Emulator, client: httpx.Client, header: str, value: float, expected: str
) -> None:
    emu.inject(429, retry_after=value, retry_after_header=header)
    r = client.get(f"{DOC}/async/task-status", params={"task_id": "x"})
    _assert_aisearch_error(r, 429, "Throttling.RateQuota")
    assert r.headers[header] == expected
    others = {"retry-after", "x-acs-retry-after", "retry-after-ms"} - {header.lower()}
    assert not others & {k.lower() for k in r.headers}
    assert client.get(f"{DOC}/async/task-status", params={"task_id": "x"}).status_code == 404
    assert emu.pending_injections == 0


def test_inject_5xx_drop_and_route_filter(emu: Emulator, client: httpx.Client) -> None:
    status = f"{DOC}/async/task-status"
    emu.inject(503, route="task-status", count=2)
    emu.inject(500, route="dashscope")
    created = client.post(f"{DOC}/async", json={"document": {"content": _b64(HTML), "file_name": "a.html"}})
    assert created.status_code == 200  # the task-status injection does not hit create
    _assert_aisearch_error(client.get(status, params={"task_id": "x"}), 503, "ServiceUnavailable")
    _assert_aisearch_error(client.get(status, params={"task_id": "x"}), 503, "ServiceUnavailable")
    r = client.post(GEN, json={})
    assert r.status_code == 500 and r.json()["code"] == "InternalError"
    emu.inject("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(status, params={"task_id": "x"})
    assert client.get(status, params={"task_id": "x"}).status_code == 404
    stats = emu.stats
    assert stats.dropped == 1 and stats.responses_by_status[503] == 2
    with pytest.raises(ValueError):
        emu.inject(503, route="document-analize")
    with pytest.raises(ValueError):
        emu.inject(404)  # type: ignore[arg-type]


def test_random_faults_are_seeded(client: httpx.Client) -> None:
    def run(seed: int) -> list[int]:
        faults = Faults(rate_429=0.3, rate_5xx=0.3)
        with Emulator(api_key=KEY, seed=seed, faults=faults) as emu, _client(emu) as c:
            return [c.get(f"{DOC}/async/task-status?task_id=x").status_code for _ in range(30)]

    first = run(42)
    assert first == run(42)
    assert {404, 429} <= set(first) and ({500, 503} & set(first))
    with (
        Emulator(api_key=KEY, faults=Faults(rate_drop=1.0)) as emu,
        _client(emu) as c,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        c.get(f"{DOC}/async/task-status?task_id=x")


def test_fail_and_hang_names(emu: Emulator, client: httpx.Client) -> None:
    emu.set_faults(Faults(fail_names=["-broken"], hang_names=["-stuck"]))
    emu.set_latency(Latency(fixed=0.05))

    def create(name: str) -> str:
        doc = {"content": _b64(HTML), "file_name": name}
        task_id: str = client.post(f"{DOC}/async", json={"document": doc}).json()["result"]["task_id"]
        return task_id

    failed, stuck = create("report-broken.html"), create("report-stuck.html")
    time.sleep(0.3)
    result = _poll(client, DOC, failed)["result"]
    assert result["status"] == "FAIL" and "-broken" in result["error"]
    assert _poll(client, DOC, stuck, timeout=0.3)["result"]["status"] == "PENDING"
    emu.inject("task_fail")
    result = _poll(client, DOC, create("fine.html"))["result"]
    assert result["status"] == "FAIL" and "injected" in result["error"]
    assert _poll(client, DOC, create("fine.html"))["result"]["status"] == "SUCCESS"


def test_failed_status_name_is_configurable() -> None:
    faults = Faults(fail_names=["bad"])
    with Emulator(api_key=KEY, task_status_on_fail="FAILED", faults=faults) as emu, _client(emu) as c:
        r = c.post(f"{DOC}/sync", json={"document": {"content": _b64(HTML), "file_name": "bad.html"}})
    assert r.status_code == 200 and r.json()["result"]["status"] == "FAILED"


def test_latency_keeps_tasks_pending_then_succeeds(emu: Emulator, client: httpx.Client) -> None:
    emu.set_latency(Latency(fixed=0.4))
    doc = {"document": {"content": _b64(HTML), "file_name": "a.html"}}
    started = time.monotonic()
    task_id = client.post(f"{DOC}/async", json=doc).json()["result"]["task_id"]
    first = client.get(f"{DOC}/async/task-status", params={"task_id": task_id}).json()
    assert first["result"]["status"] == "PENDING" and "data" not in first["result"] and "usage" not in first
    done = _poll(client, DOC, task_id)
    assert done["result"]["status"] == "SUCCESS" and time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert client.post(f"{DOC}/sync", json=doc).json()["result"]["status"] == "SUCCESS"
    assert time.monotonic() - started >= 0.4


# --- DashScope native


def test_native_generation_body_and_usage(emu: Emulator, client: httpx.Client, png: bytes) -> None:
    _needs_backends()
    r = client.post(GEN, json=_qwen_body(_data_url(png), ocr_options={"task": "advanced_recognition"}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"output", "usage", "request_id"} and r.headers["x-request-id"] == body["request_id"]
    choice = body["output"]["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    item = choice["message"]["content"][0]
    words = item["ocr_result"]["words_info"]
    assert any("Hello" in w["text"] for w in words)
    assert all(len(w["location"]) == 8 and len(w["rotate_rect"]) == 5 for w in words)
    usage = body["usage"]
    # qwen-vl-ocr-latest: 32x32 token pixels, min_pixels 3072 (qwen-ocr.2026-02.en.md l.274; API reference l.380)
    image_tokens = qwen_models.spec_for("qwen-vl-ocr-latest").image_tokens(80, 360)
    assert image_tokens == (64 * 352) // 1024 + 2 == 24  # round(80 / 32) = round(2.5) = 2 (half to even)
    assert usage["image_tokens"] == usage["input_tokens_details"]["image_tokens"] == image_tokens
    assert usage["input_tokens"] == image_tokens + usage["input_tokens_details"]["text_tokens"]
    assert usage["output_tokens"] == usage["output_tokens_details"]["text_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    bounded = client.post(GEN, json=_qwen_body(_data_url(png), text="Read it."))
    assert bounded.json()["output"]["choices"][0]["message"]["content"][0]["text"]


def test_native_stream_incremental_and_full(client: httpx.Client, png: bytes) -> None:
    _needs_backends()
    image = _data_url(_png("Streaming is line by line and very long text " * 2, size=(900, 80)))
    whole = client.post(GEN, json=_qwen_body(image)).json()["output"]["choices"][0]["message"]["content"][0]["text"]
    assert len(whole) > 30
    texts: dict[bool, list[str]] = {}
    for incremental in (True, False):
        r = client.post(
            GEN, json=_qwen_body(image, incremental_output=incremental), headers={"X-DashScope-SSE": "enable"}
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _native_events(r.text)
        assert len(events) >= 2
        for n, event in enumerate(events, start=1):
            assert event["id"] == str(n) and event["event"] == "result"
            assert event["comments"] == [":HTTP_STATUS/200"]
        finish = [e["data"]["output"]["choices"][0]["finish_reason"] for e in events]
        assert finish == ["null"] * (len(events) - 1) + ["stop"]
        texts[incremental] = [e["data"]["output"]["choices"][0]["message"]["content"][0]["text"] for e in events]
        outputs = [e["data"]["usage"]["output_tokens"] for e in events]
        assert outputs == sorted(outputs)
    assert "".join(texts[True]) == whole
    assert texts[False][-1] == whole
    assert all(b.startswith(a) for a, b in zip(texts[False], texts[False][1:], strict=False))  # cumulative


def test_qwen_latency_and_max_tokens(emu: Emulator, client: httpx.Client, png: bytes) -> None:
    _needs_backends()
    full = client.post(GEN, json=_qwen_body(_data_url(png))).json()  # parsed (memoised) before timing
    emu.set_latency(Latency(fixed=0.3))
    started = time.monotonic()
    assert client.post(GEN, json=_qwen_body(_data_url(png))).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    with client.stream("POST", GEN, json=_qwen_body(_data_url(png)), headers={"Accept": "text/event-stream"}) as r:
        next(r.iter_lines())
        assert time.monotonic() - started >= 0.3
    emu.set_latency(None)
    cut = client.post(GEN, json=_qwen_body(_data_url(png), max_tokens=1)).json()
    choice = cut["output"]["choices"][0]
    assert choice["finish_reason"] == "length" and cut["usage"]["output_tokens"] == 1
    whole = full["output"]["choices"][0]["message"]["content"][0]["text"]
    assert whole.startswith(choice["message"]["content"][0]["text"]) and len(whole) > 1


def test_native_stream_selected_by_accept_header(client: httpx.Client, png: bytes) -> None:
    _needs_backends()
    r = client.post(GEN, json=_qwen_body(_data_url(png)), headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert _native_events(r.text)[-1]["data"]["output"]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("stream_error", "500", "InternalError"), ("data_inspection", "400", "DataInspectionFailed")],
)
def test_native_stream_error_event(
    emu: Emulator, client: httpx.Client, png: bytes, kind: str, status: str, code: str
) -> None:
    _needs_backends()
    emu.inject(kind)  # type: ignore[arg-type]
    r = client.post(GEN, json=_qwen_body(_data_url(png)), headers={"X-DashScope-SSE": "enable"})
    assert r.status_code == 200
    last = _native_events(r.text)[-1]
    assert last["event"] == "error" and last["status"] == status
    assert last["data"]["code"] == code and last["data"]["request_id"]
    assert "\nevent:error\n" in r.text and f"\nstatus:{status}\n" in r.text


def test_data_inspection_without_stream_is_a_400(emu: Emulator, client: httpx.Client, png: bytes) -> None:
    _needs_backends()
    emu.inject("data_inspection")
    r = client.post(GEN, json=_qwen_body(_data_url(png)))
    assert r.status_code == 400 and r.json()["code"] == "DataInspectionFailed"


def test_stream_cut_native_and_compatible(emu: Emulator, client: httpx.Client, png: bytes) -> None:
    _needs_backends()
    image = _data_url(_png("A line long enough to need several events", size=(700, 80)))
    emu.inject("stream_cut")
    received = []
    headers = {"X-DashScope-SSE": "enable"}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", GEN, json=_qwen_body(image), headers=headers) as r,
    ):
        for line in r.iter_lines():
            received.append(line)
    assert any(line.startswith("data:") for line in received)
    assert not any('"finish_reason":"stop"' in line for line in received)
    emu.set_faults(Faults(rate_stream_cut=1.0))
    body = {
        "model": "qwen-vl-ocr",
        "stream": True,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}],
    }
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(CHAT, json=body)
    assert emu.stats.stream_cuts == 2


@pytest.mark.parametrize(
    ("image", "needle"),
    [
        (_data_url(_png("", size=(10, 300))), "greater than 10"),
        (_data_url(_png("", size=(4020, 20))), "aspect"),
        (_data_url(_png("", size=(100, 100), fmt="GIF"), "image/gif"), "format"),
        ("data:image/png;base64," + "A" * (10 * 1024 * 1024 + 4), "10MB"),
        ("https://img.example.com/a.png", "offline"),
        ("file:///tmp/a.png", "SDK"),
        ("oss://dashscope-instant/x/a.png", "OssResourceResolve"),
    ],
)
def test_native_image_limits(client: httpx.Client, image: str, needle: str) -> None:
    r = client.post(GEN, json=_qwen_body(image))
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"code", "message", "request_id"} and r.json()["code"] == "InvalidParameter"
    assert needle in r.json()["message"]


def test_native_parameter_errors(client: httpx.Client, png: bytes) -> None:
    image = _data_url(png)
    cases: list[dict[str, Any]] = [
        _qwen_body(image, ocr_options={"task": "poetry"}),
        _qwen_body(image, max_tokens=0),
        {**_qwen_body(image), "model": "qwen-max"},
        {"model": "qwen-vl-ocr", "input": {"messages": []}, "parameters": {}},
        {"model": "qwen-vl-ocr", "input": {"messages": [{"role": "user", "content": [{"text": "no image"}]}]}},
    ]
    for body in cases:
        r = client.post(GEN, json=body)
        assert r.status_code == 400 and r.json()["code"] == "InvalidParameter", (body, r.text)
    # max_pixels ceilings per model: 30000x32x32 for the 32-px models, 30000x28x28 for the 28-px ones
    big = _qwen_body(image)
    big["input"]["messages"][0]["content"][0]["max_pixels"] = 30_720_000 + 1
    assert client.post(GEN, json=big).status_code == 400
    big["input"]["messages"][0]["content"][0]["max_pixels"] = 30_720_000
    assert client.post(GEN, json=big).status_code == 200
    old = {**big, "model": "qwen-vl-ocr-2025-04-13"}
    assert client.post(GEN, json=old).status_code == 400
    old["input"]["messages"][0]["content"][0]["max_pixels"] = qwen_tasks.MAX_PIXELS_UPPER_LIMIT
    assert client.post(GEN, json=old).status_code == 200
    # max_tokens limits per model (API reference l.453-465)
    for model, limit in (("qwen3.5-ocr", 32768), ("qwen-vl-ocr", 8192), ("qwen-vl-ocr-2025-08-28", 4096)):
        over = {**_qwen_body(image, max_tokens=limit + 1), "model": model}
        r = client.post(GEN, json=over)
        assert r.status_code == 400 and f"[1, {limit}]" in r.json()["message"], (model, r.text)
        assert client.post(GEN, json={**over, "parameters": {"max_tokens": limit}}).status_code == 200


def test_upload_policy_and_oss_resolution(emu: Emulator, client: httpx.Client, png: bytes) -> None:
    policy = client.get("/api/v1/uploads", params={"action": "getPolicy", "model": "qwen-vl-ocr"})
    assert policy.status_code == 200
    data = policy.json()["data"]
    assert data["upload_host"] == f"{emu.url}/_emulator/oss"
    key = f"{data['upload_dir']}/scan.png"
    form = {
        "OSSAccessKeyId": data["oss_access_key_id"],
        "Signature": data["signature"],
        "policy": data["policy"],
        "key": key,
        "x-oss-object-acl": data["x_oss_object_acl"],
        "x-oss-forbid-overwrite": data["x_oss_forbid_overwrite"],
        "success_action_status": "200",
        "x-oss-content-type": "image/png",
    }
    with httpx.Client(trust_env=False) as oss:
        forged = oss.post(data["upload_host"], data={**form, "Signature": "forged"}, files={"file": ("scan.png", png)})
        assert forged.status_code == 403 and "SignatureDoesNotMatch" in forged.text
        assert oss.post(data["upload_host"], data=form, files={"file": ("scan.png", png)}).status_code == 200
    assert client.post(GEN, json=_qwen_body(f"oss://{key}")).status_code == 400  # resolve header missing
    if _has_backends():
        r = client.post(GEN, json=_qwen_body(f"oss://{key}"), headers={"X-DashScope-OssResourceResolve": "enable"})
        assert r.status_code == 200 and "Hello" in r.json()["output"]["choices"][0]["message"]["content"][0]["text"]
    assert client.get("/api/v1/uploads", params={"action": "getPolicy"}).status_code == 400
    assert emu.stats.calls_by_route["emulator/oss-upload"] == 2


def _has_backends() -> bool:
    try:
        import rapidocr  # noqa: F401
    except ImportError:
        return False
    return True


# --- OpenAI-compatible


def _chat(image: str, text: str | None = None, **extra: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image}}]
    if text is not None:
        content.append({"type": "text", "text": text})
    return {"model": "qwen-vl-ocr-latest", "messages": [{"role": "user", "content": content}], **extra}


def test_compatible_non_stream_task_from_prompt(client: httpx.Client) -> None:
    _needs_backends()
    image = _data_url(_png("Invoice No: 42", size=(360, 80)))
    prompt = qwen_tasks.build_prompt("key_information_extraction", {"Invoice No": ""})
    r = client.post(CHAT, json=_chat(image, prompt))
    assert r.status_code == 200 and r.headers["x-request-id"]
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    inner, lang = qwen_tasks.unwrap_fence(choice["message"]["content"])
    assert lang == "json" and set(json.loads(inner)) == {"Invoice No"}
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["image_tokens"] == qwen_models.spec_for("qwen-vl-ocr-latest").image_tokens(
        80, 360
    )
    via_options = client.post(CHAT, json=_chat(image, ocr_options={"task": "advanced_recognition"})).json()
    assert qwen_tasks.unwrap_fence(via_options["choices"][0]["message"]["content"])[1] == "json"


@pytest.mark.parametrize("include_usage", [True, False])
def test_compatible_stream(client: httpx.Client, png: bytes, include_usage: bool) -> None:
    _needs_backends()
    body = _chat(_data_url(png), stream=True, stream_options={"include_usage": include_usage})
    r = client.post(CHAT, json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in r.text.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks) and blocks[-1] == "data: [DONE]"
    chunks = [json.loads(b[len("data: ") :]) for b in blocks[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"content": "", "role": "assistant"}
    content_chunks = [c for c in chunks if c["choices"]]
    assert content_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in content_chunks[:-1])
    assert "Hello" in "".join(c["choices"][0]["delta"]["content"] for c in content_chunks)
    usage_chunks = [c for c in chunks if not c["choices"]]
    if include_usage:
        assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0]
        assert usage_chunks[0]["usage"]["completion_tokens"] > 0
    else:
        assert usage_chunks == [] and all(c["usage"] is None for c in chunks)


def test_compatible_errors(emu: Emulator, client: httpx.Client, png: bytes) -> None:
    r = client.post(CHAT, json=_chat("https://example.com/a.png"))
    assert r.status_code == 400 and r.headers["x-should-retry"] == "false"
    assert set(r.json()) == {"error", "request_id"}
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    emu.inject(429, retry_after=0.5, retry_after_header="retry-after-ms")
    r = client.post(CHAT, json=_chat(_data_url(png)))
    assert r.status_code == 429 and r.headers["retry-after-ms"] == "500" and "x-should-retry" not in r.headers
    assert r.json()["error"]["code"] == "limit_requests"


# --- lifecycle, CLI


def test_stop_closes_keep_alive_connections_and_frees_the_port() -> None:
    emu = Emulator(api_key=KEY).start()
    port = emu.port
    c = httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False)
    assert c.get(f"{DOC}/async/task-status?task_id=x").status_code == 404  # leaves an idle keep-alive connection
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 2.0
    assert not emu.running
    with pytest.raises(httpx.TransportError):
        c.get(f"{DOC}/async/task-status?task_id=x")
    c.close()
    with Emulator(api_key=KEY, port=port) as again:
        assert again.port == port
    with pytest.raises(RuntimeError):
        _ = emu.url


def test_non_loopback_host_needs_explicit_permission() -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        Emulator(host="0.0.0.0")
    Emulator(host="localhost")  # constructing binds nothing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_prints_url_and_env_lines_but_never_the_key() -> None:
    port = _free_port()
    # A shell that starts a job in the background (`.ci/run &`, nohup) makes it ignore SIGINT, and children inherit
    # that: give the emulator the Ctrl-C handling an interactive terminal would.
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from aisearch_ingest.emulator import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", str(port), "--api-key", "cli-secret-key", "--qps", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        exports = [proc.stdout.readline(), proc.stdout.readline()]
        url = f"http://127.0.0.1:{port}"
        assert url in first
        assert exports == [f"  export AISEARCH_ENDPOINT={url}\n", f"  export DASHSCOPE_BASE_URL={url}\n"]
        r = httpx.get(
            f"{url}{DOC}/async/task-status?task_id=x",
            headers={"Authorization": "Bearer cli-secret-key"},
            trust_env=False,
        )
        assert r.status_code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "cli-secret-key" not in first + "".join(exports) + out + err


def test_python_dash_m_runs_the_same_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aisearch_ingest.emulator", "--port", "0", "--task-status-on-fail", "SUCCESS"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # the emulator's own refusal of a bad option, through main's exit code 2: the options reached the emulator
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.startswith("aisearch-ingest emulator: task_status_on_fail must be"), proc.stdout + proc.stderr


PLUGIN_TESTS = """
import httpx
import pytest

from aisearch_ingest.testing import EMULATOR_API_KEY, emulator

STATUS = "/v3/openapi/workspaces/default/document-analyze/ops-document-analyze-001/async/task-status?task_id=x"


def call(emu):
    headers = {"Authorization": f"Bearer {EMULATOR_API_KEY}"}
    return httpx.get(emu.url + STATUS, headers=headers, trust_env=False).status_code


def test_fresh_stats_first(aisearch_emulator, aisearch_emulator_session):
    assert aisearch_emulator is aisearch_emulator_session
    aisearch_emulator.set_qps(1)
    aisearch_emulator.inject(503, count=5)
    assert call(aisearch_emulator) == 503
    assert aisearch_emulator.stats.total_calls == 1


def test_fresh_stats_second(aisearch_emulator):
    assert aisearch_emulator.stats.total_calls == 0
    assert call(aisearch_emulator) == 404 and call(aisearch_emulator) == 404  # knobs were reset


@pytest.mark.aisearch_emulator(api_key="marked-key", qps=1)
def test_marker_builds_its_own(aisearch_emulator, aisearch_emulator_session):
    assert aisearch_emulator is not aisearch_emulator_session
    assert aisearch_emulator.api_key == "marked-key"


def test_env(aisearch_emulator_env):
    import os

    assert os.environ["AISEARCH_ENDPOINT"] == aisearch_emulator_env.url
    assert os.environ["DASHSCOPE_BASE_URL"] == aisearch_emulator_env.url
    assert os.environ["AISEARCH_API_KEY"] == os.environ["DASHSCOPE_API_KEY"] == EMULATOR_API_KEY
    assert "127.0.0.1" in os.environ["NO_PROXY"]


def test_context_manager():
    with emulator() as emu:
        assert call(emu) == 404
    assert not emu.running
"""


@pytest.mark.slow  # a nested pytest run: interpreter and plugin start-up
def test_pytest_plugin_fixtures(tmp_path: Any) -> None:
    (tmp_path / "test_plugin_usage.py").write_text(PLUGIN_TESTS)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "aisearch_ingest.testing",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed" in proc.stdout


WITHOUT_LOCAL_EXTRA = """
import base64, io, sys, time
import httpx

class Block:  # an environment without the `local` extra: these imports fail
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"rapidocr", "onnxruntime", "mammoth", "pptx"}:
            raise ImportError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Block())
from PIL import Image
from aisearch_ingest.emulator import Emulator

buf = io.BytesIO()
Image.new("RGB", (64, 64), "white").save(buf, format="PNG")
png = base64.b64encode(buf.getvalue()).decode()
html = base64.b64encode(b"<p>still works</p>").decode()
root = "/v3/openapi/workspaces/default"
with Emulator(api_key="k") as emu, httpx.Client(base_url=emu.url, headers={"Authorization": "Bearer k"}) as c:
    doc = c.post(root + "/document-analyze/ops-document-analyze-001/sync",
                 json={"document": {"content": html, "file_name": "a.html"}}).json()
    assert doc["result"]["status"] == "SUCCESS" and "still works" in doc["result"]["data"]["content"], doc
    sync = c.post(root + "/image-analyze/ops-image-analyze-ocr-001/sync",
                  json={"document": {"content": png, "file_name": "a.png"}})
    # a failed parse, not a 500 a client would retry: 200 with result.status FAIL and the reason
    assert sync.status_code == 200 and sync.json()["result"]["status"] == "FAIL", sync.text
    assert "aisearch-ingest[local]" in sync.json()["result"]["error"], sync.text
    task = c.post(root + "/image-analyze/ops-image-analyze-ocr-001/async",
                  json={"document": {"content": png, "file_name": "a.png"}}).json()["result"]["task_id"]
    for _ in range(100):
        status = c.get(root + "/image-analyze/ops-image-analyze-ocr-001/async/task-status",
                       params={"task_id": task}).json()["result"]
        if status["status"] != "PENDING":
            break
        time.sleep(0.02)
    assert status["status"] == "FAIL" and "aisearch-ingest[local]" in status["error"], status
    qwen = c.post("/api/v1/services/aigc/multimodal-generation/generation", json={
        "model": "qwen-vl-ocr", "parameters": {},
        "input": {"messages": [{"role": "user", "content": [{"image": "data:image/png;base64," + png}]}]}})
    assert qwen.status_code == 500 and qwen.json()["code"] == "InternalError", qwen.text
    assert "aisearch-ingest[local]" in qwen.json()["message"], qwen.text
print("ok")
"""


def test_without_the_local_extra_text_documents_still_work() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_LOCAL_EXTRA], capture_output=True, text=True, timeout=120, env=_no_proxy_env()
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def _no_proxy_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def test_finished_tasks_expire_so_memory_does_not_grow(emu: Emulator, client: httpx.Client) -> None:
    body = {
        "document": {"content": base64.b64encode(b"# Old\n\ntext").decode(), "file_name": "a.md", "file_type": "md"}
    }
    old = client.post(f"{DOC}/async", json=body).json()["result"]["task_id"]
    deadline = time.monotonic() + 10
    while client.get(f"{DOC}/async/task-status", params={"task_id": old}).json()["result"]["status"] == "PENDING":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    service = emu._aisearch
    service.task_ttl = 0.0
    try:
        client.post(f"{DOC}/async", json=body)  # a new task sweeps the finished old one away
    finally:
        service.task_ttl = 3600.0
    gone = client.get(f"{DOC}/async/task-status", params={"task_id": old})
    _assert_aisearch_error(gone, 404, "BadRequest.TaskNotExist")
