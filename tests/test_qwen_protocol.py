"""Pure tests of the Qwen-OCR wire protocol (protocol/dashscope.py): bodies, headers, SSE parsing, stream assembly,
usage normalisation and answer interpretation. No network."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aisearch_ingest.errors import (
    AuthenticationError,
    ContentInspectionError,
    RateLimitError,
    ServerError,
    StreamError,
)
from aisearch_ingest.protocol import dashscope as ds
from aisearch_ingest.protocol.qwen_tasks import KIE_FULL_FIELD_PROMPT, TASKS, build_prompt

MODEL = "qwen-vl-ocr-latest"
IMG = "data:image/png;base64,iVBORw0KGgo="
SCHEMA = {"Date": "", "Time": "", "Fuel Surcharge": ""}


def req(**kwargs: Any) -> ds.OcrRequest:
    return ds.OcrRequest(MODEL, **kwargs)


# --- request bodies -----------------------------------------------------------------------------------------------


def test_native_body_kie_matches_protocol_shape() -> None:
    body = ds.build_body(
        "native",
        req(
            task="key_information_extraction",
            result_schema=SCHEMA,
            min_pixels=3136,
            max_pixels=6422528,
            enable_rotate=True,
            max_tokens=512,
            temperature=0.01,
        ),
        IMG,
    )
    assert list(body) == ["model", "parameters", "input"]  # the SDK's key order
    assert body == {
        "model": MODEL,
        "parameters": {
            "ocr_options": {"task": "key_information_extraction", "task_config": {"result_schema": SCHEMA}},
            "max_tokens": 512,
            "temperature": 0.01,
        },
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": [{"image": IMG, "min_pixels": 3136, "max_pixels": 6422528, "enable_rotate": True}],
                }
            ]
        },
    }
    assert "stream" not in json.dumps(body)


@pytest.mark.parametrize("task", list(TASKS))
def test_native_builtin_task_sends_ocr_options_and_no_prompt(task: str) -> None:
    body = ds.build_body("native", req(task=task), IMG)
    assert body["parameters"] == {"ocr_options": {"task": task}}
    content = body["input"]["messages"][0]["content"]
    assert content == [{"image": IMG}]  # the service applies the task's own prompt


@pytest.mark.parametrize("task", list(TASKS))
def test_openai_builtin_task_sends_documented_prompt_and_no_ocr_options(task: str) -> None:
    body = ds.build_body("openai", req(task=task, min_pixels=3136, max_pixels=6422528), IMG)
    assert "ocr_options" not in body
    assert body["model"] == MODEL
    image_part, text_part = body["messages"][0]["content"]
    assert image_part == {"type": "image_url", "image_url": {"url": IMG}, "min_pixels": 3136, "max_pixels": 6422528}
    assert text_part == {"type": "text", "text": build_prompt(task)}
    assert "stream" not in body


def test_openai_kie_prompt_embeds_schema_and_full_field_mode() -> None:
    with_schema = ds.build_body("openai", req(task="key_information_extraction", result_schema=SCHEMA), IMG)
    text = with_schema["messages"][0]["content"][1]["text"]
    assert text.startswith("Assume you are an information extraction expert.")
    assert text.endswith(json.dumps(SCHEMA, ensure_ascii=False))
    full = ds.build_body("openai", req(task="key_information_extraction"), IMG)
    assert full["messages"][0]["content"][1]["text"] == KIE_FULL_FIELD_PROMPT
    native_full = ds.build_body("native", req(task="key_information_extraction"), IMG)
    assert native_full["parameters"]["ocr_options"] == {"task": "key_information_extraction"}


def test_custom_prompt_both_flavours() -> None:
    r = req(task=None, prompt="Extract the title")
    assert r.ocr_task == "custom" and r.content_type == "plain"
    native = ds.build_body("native", r, IMG)
    assert native["parameters"] == {}  # always present, even empty
    assert native["input"]["messages"][0]["content"] == [{"image": IMG}, {"text": "Extract the title"}]
    openai = ds.build_body("openai", r, IMG)
    assert openai["messages"][0]["content"][1] == {"type": "text", "text": "Extract the title"}


def test_streaming_flags_and_headers() -> None:
    native = ds.build_body("native", req(), IMG, stream=True, incremental_output=False)
    assert native["parameters"]["incremental_output"] is False
    assert "stream" not in native
    assert ds.build_body("native", req(), IMG, stream=True)["parameters"]["incremental_output"] is True
    assert ds.request_headers("native", stream=True) == {
        "accept": "text/event-stream",
        "x-dashscope-sse": "enable",
        "x-accel-buffering": "no",
    }
    openai = ds.build_body("openai", req(max_tokens=100), IMG, stream=True)
    assert openai["stream"] is True and openai["stream_options"] == {"include_usage": True}
    assert openai["max_tokens"] == 100
    assert ds.request_headers("openai", stream=True) == {"accept": "text/event-stream"}
    assert ds.request_headers("native", stream=False) == {"accept": "application/json"}
    assert ds.request_path("native") == "/api/v1/services/aigc/multimodal-generation/generation"
    assert ds.request_path("openai") == "/compatible-mode/v1/chat/completions"


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="unknown Qwen-OCR task"):
        req(task="ocr_everything")
    with pytest.raises(ValueError, match="only used by"):
        req(task="table_parsing", result_schema={"a": ""})
    with pytest.raises(ValueError, match="nests 4 layers"):
        req(task="key_information_extraction", result_schema={"a": {"b": {"c": {"d": ""}}}})
    req(task="key_information_extraction", result_schema={"a": {"b": {"c": ""}}})  # 3 levels are fine
    with pytest.raises(ValueError, match="custom prompt"):
        req(task="table_parsing", prompt="hello")
    with pytest.raises(ValueError, match="enable_rotate"):
        ds.build_body("openai", req(enable_rotate=True), IMG)


# --- non-streamed responses ---------------------------------------------------------------------------------------

NATIVE_ADVANCED = {
    "output": {
        "choices": [
            {
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": [
                        {
                            "text": '```json\n[{"pos_list": [{"rotate_rect": [740, 374, 599, 1459, 90]}]}```',
                            "ocr_result": {
                                "words_info": [
                                    {
                                        "rotate_rect": [150, 80, 49, 197, -89],
                                        "location": [52, 54, 250, 57, 249, 106, 52, 103],
                                        "text": "Target Audience",
                                    },
                                    {
                                        "rotate_rect": [724, 171, 34, 1346, -89],
                                        "location": [51, 146, 1397, 159, 1397, 194, 51, 181],
                                        "text": "If you are a system administrator",
                                    },
                                ]
                            },
                        }
                    ],
                },
            }
        ]
    },
    "usage": {
        "input_tokens_details": {"text_tokens": 33, "image_tokens": 1377},
        "total_tokens": 1448,
        "output_tokens": 38,
        "input_tokens": 1410,
        "output_tokens_details": {"text_tokens": 38},
        "image_tokens": 1377,
    },
    "request_id": "f5cc14f2-b855-4ff0-9571-8581061c80a3",
}


def test_native_response_advanced_recognition_from_vendor_page() -> None:
    answer = ds.parse_response("native", NATIVE_ADVANCED)
    assert answer.request_id == "f5cc14f2-b855-4ff0-9571-8581061c80a3"
    assert answer.finish_reason == "stop"
    assert answer.usage == {
        "input_tokens_details_text_tokens": 33,
        "input_tokens_details_image_tokens": 1377,
        "total_tokens": 1448,
        "output_tokens": 38,
        "input_tokens": 1410,
        "output_tokens_details_text_tokens": 38,
        "image_tokens": 1377,
    }
    page = ds.page_content(req(task="advanced_recognition"), answer)
    assert page.content == "Target Audience\nIf you are a system administrator"
    assert page.content_type == "plain"
    assert [w["text"] for w in page.extra["words_info"]] == ["Target Audience", "If you are a system administrator"]
    assert page.extra["words_info"][0]["location"] == [52, 54, 250, 57, 249, 106, 52, 103]
    assert page.extra["raw_text"].startswith("```json")


def test_openai_response_and_usage_normalisation() -> None:
    body = {
        "choices": [
            {
                "message": {"content": '```json\n{\n    "Date": "2013-06-29",\n    "Time": "null"\n}\n```'},
                "finish_reason": "stop",
                "index": 0,
            }
        ],
        "object": "chat.completion",
        "usage": {
            "prompt_tokens": 577,
            "completion_tokens": 42,
            "total_tokens": 619,
            "prompt_tokens_details": {"image_tokens": 500, "text_tokens": 77},
        },
        "id": "chatcmpl-7174548e",
    }
    answer = ds.parse_response("openai", body)
    assert answer.usage == {
        "input_tokens": 577,
        "output_tokens": 42,
        "total_tokens": 619,
        "input_tokens_details_image_tokens": 500,
        "input_tokens_details_text_tokens": 77,
        "image_tokens": 500,
    }
    assert answer.request_id == "chatcmpl-7174548e"
    page = ds.page_content(req(task="key_information_extraction", result_schema={"Date": "", "Time": ""}), answer)
    assert page.content_type == "json"
    assert page.extra["kv_result"] == {"Date": "2013-06-29", "Time": "null"}
    assert json.loads(page.content) == page.extra["kv_result"]


def test_usage_without_details_is_flat() -> None:
    assert ds.normalize_usage({"prompt_tokens": 606, "completion_tokens": 159, "total_tokens": 765}) == {
        "input_tokens": 606,
        "output_tokens": 159,
        "total_tokens": 765,
    }
    assert ds.normalize_usage(None) == {}
    assert ds.sum_usage([{"a": 1, "b": 2}, {"a": 3}]) == {"a": 4, "b": 2}


def test_malformed_and_error_bodies_with_status_200() -> None:
    with pytest.raises(ds.APIError, match="no 'output'"):
        ds.parse_response("native", {"request_id": "x"})
    with pytest.raises(AuthenticationError):
        ds.parse_response("native", {"code": "InvalidApiKey", "message": "Invalid API-key provided."})
    with pytest.raises(ds.APIError, match="no 'choices'"):
        ds.parse_response("openai", {"id": "x"})
    with pytest.raises(ds.APIError, match="JSON object"):
        ds.parse_response("openai", ["not", "an", "object"])


@pytest.mark.parametrize(
    ("task", "text", "content", "content_type"),
    [
        (
            "table_parsing",
            "```html\n<table><tr><td>a</td></tr></table>\n```",
            "<table><tr><td>a</td></tr></table>",
            "html",
        ),
        ("document_parsing", "```latex\n\\section{A}\n```", "\\section{A}", "latex"),
        ("formula_recognition", "$$x^2$$", "$$x^2$$", "latex"),
        ("text_recognition", "Hello\nworld", "Hello\nworld", "plain"),
        ("multi_lan", "Привет!", "Привет!", "plain"),
        (None, '```json\n{"a": 1}\n```', '{"a": 1}', "json"),
        (None, "```latex\nx\n```", "x", "latex"),
        (None, "```python\nprint(1)\n```", "```python\nprint(1)\n```", "plain"),
        (None, "just text", "just text", "plain"),
    ],
)
def test_page_content_unwraps_fences(task: str | None, text: str, content: str, content_type: str) -> None:
    r = req(task=task, prompt=None if task else "custom")
    page = ds.page_content(r, ds.OcrAnswer(text=text))
    assert (page.content, page.content_type) == (content, content_type)
    assert ("raw_text" in page.extra) == (content != text)


def test_kie_native_kv_result_wins_and_empty_text() -> None:
    answer = ds.OcrAnswer(text="", ocr_result={"kv_result": {"No": "A1"}})
    page = ds.page_content(req(task="key_information_extraction"), answer)
    assert page.extra["kv_result"] == {"No": "A1"}
    assert json.loads(page.content) == {"No": "A1"}


def test_kie_unparsable_answer_leaves_empty_kv() -> None:
    page = ds.page_content(req(task="key_information_extraction"), ds.OcrAnswer(text="no json here"))
    assert page.extra["kv_result"] == {}
    assert page.content == "no json here"


def test_finish_reason_length_is_recorded() -> None:
    page = ds.page_content(req(), ds.OcrAnswer(text="cut", finish_reason="length"))
    assert page.extra["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '```json\n[{"rotate_rect": [1, 2, 3, 4, 0], "text": "a"}]\n```',
            [{"text": "a", "rotate_rect": [1, 2, 3, 4, 0]}],
        ),
        ('[{"pos_list": [{"rotate_rect": [740, 374, 599, 1459, 90]}]}]', [{"rotate_rect": [740, 374, 599, 1459, 90]}]),
        (
            "{'words_info': [{'location': [0, 0, 1, 0, 1, 1, 0, 1], 'text': 'x'}]}",
            [{"text": "x", "location": [0, 0, 1, 0, 1, 1, 0, 1]}],
        ),
        ("plain words", []),
        ('[{"text": "no box"}]', []),
    ],
)
def test_words_from_text(text: str, expected: list[dict[str, Any]]) -> None:
    assert ds.words_from_text(text) == expected


def test_merge_kv_results() -> None:
    merged = ds.merge_kv_results(
        [
            {"No": "A1", "Total": None, "Items": [{"n": 1}], "Seller": {"Name": "X", "Tax": ""}},
            {"No": "null", "Total": "9.00", "Items": [{"n": 2}], "Seller": {"Name": None, "Tax": "T-1"}, "New": 1},
        ]
    )
    assert merged == {
        "No": "A1",
        "Total": "9.00",
        "Items": [{"n": 1}, {"n": 2}],
        "Seller": {"Name": "X", "Tax": "T-1"},
        "New": 1,
    }


# --- SSE ----------------------------------------------------------------------------------------------------------

# The vendor page's native incremental stream (Streaming output > DashScope > curl > Response example), events 1, 2,
# 33 and 34, verbatim.
NATIVE_SSE = """id:1
event:result
:HTTP_STATUS/200
data:{"output":{"choices":[{"message":{"content":[{"text":"```json\\n{\\n    \\"invoice_number\\": \\"24"}],"role":"assistant"},"finish_reason":"null"}]},"usage":{"total_tokens":618,"output_tokens":12,"input_tokens":606,"image_tokens":427},"request_id":"8e553c5c-c0db-9cb5-8900-1fc452cafea7"}

id:2
event:result
:HTTP_STATUS/200
data:{"output":{"choices":[{"message":{"content":[{"text":"3291"}],"role":"assistant"},"finish_reason":"null"}]},"usage":{"total_tokens":622,"output_tokens":16,"input_tokens":606,"image_tokens":427},"request_id":"8e553c5c-c0db-9cb5-8900-1fc452cafea7"}

id:33
event:result
:HTTP_STATUS/200
data:{"output":{"choices":[{"message":{"content":[{"text":"Xiaoguang\\"\\n}"}],"role":"assistant"},"finish_reason":"null"}]},"usage":{"total_tokens":764,"output_tokens":158,"input_tokens":606,"image_tokens":427},"request_id":"8e553c5c-c0db-9cb5-8900-1fc452cafea7"}

id:34
event:result
:HTTP_STATUS/200
data:{"output":{"choices":[{"message":{"content":[{"text":"\\n```"}],"role":"assistant"},"finish_reason":"stop"}]},"usage":{"total_tokens":765,"output_tokens":159,"input_tokens":606,"image_tokens":427},"request_id":"8e553c5c-c0db-9cb5-8900-1fc452cafea7"}
"""  # noqa: E501

# The vendor page's compatible stream (Streaming output > OpenAI compatible > Response example), abridged.
OPENAI_SSE = """data: {"choices":[{"delta":{"content":"","role":"assistant"},"index":0,"logprobs":null,"finish_reason":null}],"object":"chat.completion.chunk","usage":null,"created":1742528579,"system_fingerprint":null,"model":"qwen-vl-ocr-latest","id":"chatcmpl-e2da5fdf"}

data: {"choices":[{"finish_reason":null,"delta":{"content":"```json\\n{\\n    \\"invoice_number"},"index":0,"logprobs":null}],"object":"chat.completion.chunk","usage":null,"created":1742528579,"system_fingerprint":null,"model":"qwen-vl-ocr-latest","id":"chatcmpl-e2da5fdf"}

data: {"choices":[{"finish_reason":"stop","delta":{"content":"\\n}\\n```"},"index":0,"logprobs":null}],"object":"chat.completion.chunk","usage":null,"created":1742528579,"system_fingerprint":null,"model":"qwen-vl-ocr-latest","id":"chatcmpl-e2da5fdf"}

data: {"choices":[],"object":"chat.completion.chunk","usage":{"prompt_tokens":606,"completion_tokens":159,"total_tokens":765},"created":1742528579,"system_fingerprint":null,"model":"qwen-vl-ocr-latest","id":"chatcmpl-e2da5fdf"}
data: [DONE]
"""  # noqa: E501


def run_stream(api: ds.Api, text: str, *, incremental: bool = True) -> tuple[ds.StreamAssembler, list[str]]:
    decoder = ds.SSEDecoder()
    assembler = ds.StreamAssembler(api, incremental=incremental)
    deltas = []
    for line in text.splitlines():
        event = decoder.feed(line)
        if event is not None:
            delta = assembler.feed(event)
            if delta:
                deltas.append(delta)
    return assembler, deltas


def test_sse_decoder_fields_and_comments() -> None:
    decoder = ds.SSEDecoder()
    events = [decoder.feed(line) for line in NATIVE_SSE.splitlines()]
    data_events = [e for e in events if e is not None]
    assert len(data_events) == 4
    assert [e.id for e in data_events] == ["1", "2", "33", "34"]
    assert all(e.event == "result" and not e.is_error for e in data_events)
    # fields reset at a blank line; a data line right after one has none
    assert decoder.feed("") is None
    assert decoder.feed("data:x") == ds.SSEEvent("x")
    assert decoder.feed("event:error") is None
    assert decoder.feed("status:429") is None
    err = decoder.feed('data:{"code":"Throttling.RateQuota"}')
    assert err is not None and err.is_error and err.status == 429
    # "event: error" with a space is an error too (the SDK chokes on it; we tolerate it)
    decoder.feed("")
    decoder.feed("event: error")
    spaced = decoder.feed("data: {}")
    assert spaced is not None and spaced.is_error and spaced.data == "{}"


def test_native_incremental_stream_from_vendor_page() -> None:
    assembler, deltas = run_stream("native", NATIVE_SSE)
    answer = assembler.result()
    assert deltas == ['```json\n{\n    "invoice_number": "24', "3291", 'Xiaoguang"\n}', "\n```"]
    assert answer.text == "".join(deltas)
    assert answer.finish_reason == "stop"
    assert answer.request_id == "8e553c5c-c0db-9cb5-8900-1fc452cafea7"
    assert answer.usage == {"total_tokens": 765, "output_tokens": 159, "input_tokens": 606, "image_tokens": 427}


def test_native_full_output_stream_gives_deltas() -> None:
    lines = []
    full = ""
    for n, piece in enumerate(["Hello ", "wor", "ld"], start=1):
        full += piece
        finish = "stop" if n == 3 else "null"
        body = {
            "output": {"choices": [{"message": {"content": [{"text": full}]}, "finish_reason": finish}]},
            "usage": {"output_tokens": n},
            "request_id": "r",
        }
        lines += [f"id:{n}", "event:result", f"data:{json.dumps(body)}", ""]
    assembler, deltas = run_stream("native", "\n".join(lines), incremental=False)
    assert deltas == ["Hello ", "wor", "ld"]
    assert assembler.result().text == "Hello world"
    assert assembler.result().usage == {"output_tokens": 3}


def test_openai_stream_from_vendor_page() -> None:
    assembler, deltas = run_stream("openai", OPENAI_SSE)
    answer = assembler.result()
    assert deltas == ['```json\n{\n    "invoice_number', "\n}\n```"]
    assert answer.text == '```json\n{\n    "invoice_number\n}\n```'
    assert answer.finish_reason == "stop"
    assert answer.usage == {"input_tokens": 606, "output_tokens": 159, "total_tokens": 765}
    assert answer.request_id == "chatcmpl-e2da5fdf"


def test_stream_without_final_event_is_stream_error() -> None:
    truncated_native = NATIVE_SSE.split("id:34")[0]
    assembler, _ = run_stream("native", truncated_native)
    with pytest.raises(StreamError) as info:
        assembler.result()
    assert info.value.partial_text == '```json\n{\n    "invoice_number": "243291Xiaoguang"\n}'
    assert "finish_reason" in str(info.value)
    truncated_openai = OPENAI_SSE.replace("data: [DONE]\n", "")
    assembler, _ = run_stream("openai", truncated_openai)
    with pytest.raises(StreamError, match=r"\[DONE\]") as info2:
        assembler.result()
    assert info2.value.partial_text.startswith("```json")


@pytest.mark.parametrize(
    ("api", "lines", "error"),
    [
        (
            "native",
            [
                "id:1",
                "event:error",
                "status:400",
                'data:{"code":"DataInspectionFailed","message":"bad","request_id":"r"}',
            ],
            ContentInspectionError,
        ),
        ("native", ["event:error", 'data:{"code":"InvalidApiKey","message":"no"}'], AuthenticationError),
        (
            "native",
            ["event:error", "status:429", 'data:{"code":"Throttling.RateQuota","message":"slow"}'],
            RateLimitError,
        ),
        ("native", ["event:error", "status:500", 'data:{"code":"InternalError","message":"x"}'], ServerError),
        (
            "openai",
            ['data: {"error":{"code":"data_inspection_failed","message":"bad","type":"x"}}'],
            ContentInspectionError,
        ),
    ],
)
def test_error_events_map_onto_the_error_tree(api: ds.Api, lines: list[str], error: type[Exception]) -> None:
    prefix = {
        "native": [
            "event:result",
            'data:{"output":{"choices":[{"message":{"content":[{"text":"partial"}]},"finish_reason":"null"}]}}',
            "",
        ],
        "openai": ['data: {"choices":[{"delta":{"content":"partial"},"finish_reason":null}]}', ""],
    }[api]
    for before in ([], prefix):  # before any text, and mid-stream: the same class
        with pytest.raises(error):
            run_stream(api, "\n".join(before + lines))


def test_non_json_data_line_is_stream_error() -> None:
    with pytest.raises(StreamError):
        run_stream("native", "data:{not json")


def test_join_pages_keeps_json_one_document() -> None:
    assert ds.join_pages(["a"], "plain") == ("a", "plain")
    assert ds.join_pages(["a", "b"], "latex") == ("a\n\nb", "latex")
    content, kind = ds.join_pages(['{"x": 1}', '{"x": null}'], "json", kv_result={"x": 1})
    assert (json.loads(content), kind) == ({"x": 1}, "json")
    assert ds.join_pages(['{"x": 1}', "[2]"], "json") == ('[{"x": 1}, [2]]', "json")
    assert ds.join_pages(['{"x": 1}', "oops"], "json") == ('{"x": 1}\n\noops', "plain")
