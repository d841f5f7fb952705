"""Qwen-OCR over DashScope, native and OpenAI-compatible: pure functions, no I/O.

Follows ``PROTOCOL.md`` sections C (native ``multimodal-generation``) and C′ (``compatible-mode`` chat completions)
and the vendor page ``qwen-ocr.en.txt``. Decisions where the sources leave a choice:

* **Built-in tasks, native flavour.** The task goes in ``parameters.ocr_options`` and no text part is sent: the page
  says the DashScope caller "does not need to design or pass in a Prompt", the service applies the task's specified
  prompt, and with a task set "custom prompts are not supported" (table-parsing sample). ``result_schema`` goes in
  ``ocr_options.task_config``. From ``qwen3.5-ocr`` on a task and a custom prompt go together ("定制任务与用户自定义
  Prompt 结合使用（不再强制覆盖），定制任务结果通过 ``ocr_result`` 字段返回", ``qwen-ocr.2026.zh.md`` l.528): the prompt
  is then sent as the text part beside ``ocr_options`` (native only: the compatible flavour has no ``ocr_options``).
* **processed_text.** The native answer's ``processed_text`` (the output with repeated fragments removed; API
  reference ``qwen-ocr-api-reference.2026.zh.md`` l.639, l.2658) is kept beside the text, never instead of it.
* **Built-in tasks, OpenAI-compatible flavour.** The page says tasks and image rotation "are not directly supported
  through parameters" there, so the task's documented prompt is sent as text
  (:func:`~aisearch_ingest.protocol.qwen_tasks.build_prompt`, with the schema for key-information extraction) and
  neither ``ocr_options`` nor ``enable_rotate`` is sent (PROTOCOL.md C′: whether the server honours them is not
  knowable; an unknown key could just as well be refused).
* **Streaming.** Native: headers ``Accept: text/event-stream``, ``X-DashScope-SSE: enable``, ``X-Accel-Buffering: no``
  and ``parameters.incremental_output`` always sent explicitly (the service default is cumulative output), never a
  ``stream`` key in the body. Compatible: ``"stream": true`` and ``"stream_options": {"include_usage": true}``.
  A native stream is complete when an event carries a final ``finish_reason`` (anything but ``"null"``), a
  compatible stream when ``data: [DONE]`` arrives; a stream that ends before that is a :class:`StreamError`.
* **Error events.** An SSE error (native ``event:error`` with an optional ``status:`` line, default 400 as in the
  SDK; compatible ``data: {"error": ...}``) is mapped exactly like an HTTP error response with that status
  (:func:`~aisearch_ingest.errors.error_from_response`), wherever it comes in the stream: a data-inspection failure is
  a ``ContentInspectionError``, an ``InternalError`` a ``ServerError``, so callers catch the same class whether the
  call was streamed or not. :class:`StreamError` is kept for streams that break off or end without their final
  event; it carries the partial text.
* **Usage.** Both flavours are normalised to the native names before flattening: ``prompt_tokens`` →
  ``input_tokens``, ``completion_tokens`` → ``output_tokens``, ``prompt_tokens_details`` →
  ``input_tokens_details``, ``completion_tokens_details`` → ``output_tokens_details``, and the top-level
  ``image_tokens`` is filled from ``input_tokens_details.image_tokens`` when the service left it out.
"""

from __future__ import annotations

import ast
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import APIError, APIStatusError, StreamError, error_from_response
from ..results import flatten_usage
from .qwen_models import spec_for
from .qwen_tasks import TASKS, build_prompt, check_schema_depth, unwrap_fence
from .sse import SSEDecoder, SSEEvent

__all__ = [
    "CONTENT_TYPES",
    "NATIVE_PATH",
    "OPENAI_PATH",
    "Api",
    "OcrAnswer",
    "OcrRequest",
    "PageContent",
    "SSEDecoder",
    "SSEEvent",
    "StreamAssembler",
    "build_body",
    "join_pages",
    "merge_kv_results",
    "normalize_usage",
    "page_content",
    "parse_response",
    "request_headers",
    "request_path",
    "sum_usage",
    "words_from_text",
]

logger = logging.getLogger("aisearch_ingest.qwen")

Api = Literal["native", "openai"]

#: ``POST`` path of the native call, appended to the scheme-and-host base URL.
NATIVE_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
#: ``POST`` path of the OpenAI-compatible call.
OPENAI_PATH = "/compatible-mode/v1/chat/completions"

#: Values of ``ParseResult.content_type`` a Qwen-OCR answer can have.
CONTENT_TYPES = ("plain", "json", "html", "latex", "markdown")

# Fence languages a custom prompt's answer is unwrapped for, and the content type each one means.
_CUSTOM_FENCES = {
    "json": "json",
    "html": "html",
    "latex": "latex",
    "tex": "latex",
    "markdown": "markdown",
    "md": "markdown",
}


# --- requests -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OcrRequest:
    """What to ask Qwen-OCR for one image, independent of the API flavour.

    Attributes:
        model: ``qwen-vl-ocr``, ``qwen3.5-ocr``, ``qwen-vl-ocr-latest`` or a dated snapshot.
        task: a built-in task (a key of :data:`~aisearch_ingest.protocol.qwen_tasks.TASKS`), or None for a custom
            prompt.
        result_schema: the fields for ``key_information_extraction`` (None or empty: full-field extraction).
        prompt: the custom prompt when ``task`` is None (None: the service's default prompt applies); with a task,
            only for models that take both (``qwen3.5-ocr`` on, native flavour).
        min_pixels: the image part's ``min_pixels``.
        max_pixels: the image part's ``max_pixels``.
        enable_rotate: the image part's ``enable_rotate`` (native flavour only).
        max_tokens: ``max_tokens``.
        temperature: ``temperature``.
    """

    model: str
    task: str | None = "text_recognition"
    result_schema: Mapping[str, Any] | None = None
    prompt: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    enable_rotate: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        if self.task is not None:
            if self.task not in TASKS:
                raise ValueError(f"unknown Qwen-OCR task {self.task!r}; expected one of {', '.join(TASKS)} or None")
            if self.prompt is not None and not spec_for(self.model).task_with_prompt:
                raise ValueError(
                    f"a built-in task uses its fixed documented prompt on {self.model}; pass task=None to send a "
                    "custom prompt (a task and a prompt together need qwen3.5-ocr or later)"
                )
        if self.result_schema:
            if self.task != "key_information_extraction":
                raise ValueError("result_schema is only used by task='key_information_extraction'")
            if not isinstance(self.result_schema, Mapping):
                raise ValueError("result_schema must be a mapping (a JSON object)")
            check_schema_depth(self.result_schema)

    @property
    def ocr_task(self) -> str:
        """The task name for results: the built-in task, or ``custom``."""
        return self.task or "custom"

    @property
    def combined(self) -> bool:
        """A built-in task with a custom prompt (``qwen3.5-ocr`` on)."""
        return self.task is not None and self.prompt is not None

    @property
    def content_type(self) -> str:
        """The content type the task answers in (``plain`` for a custom prompt)."""
        return TASKS[self.task].content_type if self.task else "plain"

    def text_for(self, api: Api) -> str | None:
        """The text part to send: None for a built-in task in the native flavour (``ocr_options`` carries it), the
        custom prompt beside the task for a combined request."""
        if self.task is None:
            return self.prompt
        if api == "native":
            return self.prompt
        if self.prompt is not None:
            raise ValueError("a built-in task with a custom prompt needs api='native' (ocr_options)")
        return build_prompt(self.task, self.result_schema)


def request_path(api: Api) -> str:
    """The path of the call for an API flavour."""
    return NATIVE_PATH if api == "native" else OPENAI_PATH


def request_headers(api: Api, *, stream: bool) -> dict[str, str]:
    """Headers besides auth and content type: the SSE switches for a streamed call (PROTOCOL.md C, C′)."""
    if not stream:
        return {"accept": "application/json"}
    headers = {"accept": "text/event-stream"}
    if api == "native":
        headers["x-dashscope-sse"] = "enable"
        headers["x-accel-buffering"] = "no"
    return headers


def _native_body(req: OcrRequest, image: str, *, stream: bool, incremental_output: bool) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    if req.task is not None:
        ocr_options: dict[str, Any] = {"task": req.task}
        if req.result_schema:
            ocr_options["task_config"] = {"result_schema": dict(req.result_schema)}
        parameters["ocr_options"] = ocr_options
    if stream:
        parameters["incremental_output"] = incremental_output
    if req.max_tokens is not None:
        parameters["max_tokens"] = req.max_tokens
    if req.temperature is not None:
        parameters["temperature"] = req.temperature
    image_part: dict[str, Any] = {"image": image}
    if req.min_pixels is not None:
        image_part["min_pixels"] = req.min_pixels
    if req.max_pixels is not None:
        image_part["max_pixels"] = req.max_pixels
    if req.enable_rotate is not None:
        image_part["enable_rotate"] = req.enable_rotate
    content: list[dict[str, Any]] = [image_part]
    text = req.text_for("native")
    if text:
        content.append({"text": text})
    # Key order as the SDK sends it: model, parameters (always present), input.
    return {"model": req.model, "parameters": parameters, "input": {"messages": [{"role": "user", "content": content}]}}


def _openai_body(req: OcrRequest, image: str, *, stream: bool) -> dict[str, Any]:
    image_part: dict[str, Any] = {"type": "image_url", "image_url": {"url": image}}
    if req.min_pixels is not None:
        image_part["min_pixels"] = req.min_pixels
    if req.max_pixels is not None:
        image_part["max_pixels"] = req.max_pixels
    content: list[dict[str, Any]] = [image_part]
    text = req.text_for("openai")
    if text:
        content.append({"type": "text", "text": text})
    body: dict[str, Any] = {"model": req.model, "messages": [{"role": "user", "content": content}]}
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def build_body(
    api: Api, req: OcrRequest, image: str, *, stream: bool = False, incremental_output: bool = True
) -> dict[str, Any]:
    """The JSON body of one Qwen-OCR call.

    Args:
        api: ``native`` or ``openai``.
        req: what to ask.
        image: an ``http(s)`` URL or a ``data:`` URI.
        stream: whether the call is streamed.
        incremental_output: native streaming only: deltas (True) or the whole text so far in every event (False).

    Returns:
        The body, ready for ``json.dumps``.

    Example:
        >>> body = build_body("native", OcrRequest("qwen-vl-ocr-latest", task="table_parsing"), "https://x/a.png")
        >>> body["parameters"]
        {'ocr_options': {'task': 'table_parsing'}}
    """
    if api == "native":
        return _native_body(req, image, stream=stream, incremental_output=incremental_output)
    if api == "openai":
        if req.enable_rotate is not None:
            raise ValueError("enable_rotate is only available with api='native'")
        return _openai_body(req, image, stream=stream)
    raise ValueError(f"api must be 'native' or 'openai', got {api!r}")


# --- responses ----------------------------------------------------------------------------------------------------


@dataclass
class OcrAnswer:
    """One call's answer, whichever the flavour and whether streamed.

    Attributes:
        text: the model's text, as sent (fences included).
        ocr_result: the native ``ocr_result`` object (``words_info`` / ``kv_result``), empty when absent.
        usage: the service's usage, normalised to the native names and flattened.
        finish_reason: ``stop``, ``length``... (None when the service did not say).
        request_id: the service's request id.
        processed_text: the service's ``processed_text`` (repeated fragments removed), None when absent.
    """

    text: str = ""
    ocr_result: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, int | float] = field(default_factory=dict)
    finish_reason: str | None = None
    request_id: str | None = None
    processed_text: str | None = None


_OPENAI_USAGE_NAMES = {
    "prompt_tokens": "input_tokens",
    "completion_tokens": "output_tokens",
    "prompt_tokens_details": "input_tokens_details",
    "completion_tokens_details": "output_tokens_details",
}


def normalize_usage(usage: Mapping[str, Any] | None) -> dict[str, int | float]:
    """Flatten a usage object of either flavour under the native names.

    Example:
        >>> normalize_usage({"prompt_tokens": 606, "completion_tokens": 159, "total_tokens": 765,
        ...                  "prompt_tokens_details": {"image_tokens": 427}})
        ... # doctest: +NORMALIZE_WHITESPACE
        {'input_tokens': 606, 'output_tokens': 159, 'total_tokens': 765, 'input_tokens_details_image_tokens': 427,
         'image_tokens': 427}
    """
    if not usage:
        return {}
    renamed = {_OPENAI_USAGE_NAMES.get(key, key): value for key, value in usage.items()}
    flat = flatten_usage(renamed)
    if "image_tokens" not in flat and "input_tokens_details_image_tokens" in flat:
        flat["image_tokens"] = flat["input_tokens_details_image_tokens"]
    return flat


def sum_usage(usages: Iterable[Mapping[str, int | float]]) -> dict[str, int | float]:
    """Add flattened usage dicts field by field (a file sent page by page)."""
    total: dict[str, int | float] = {}
    for usage in usages:
        for key, value in usage.items():
            total[key] = total.get(key, 0) + value
    return total


def _first_choice(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    choices = body.get("choices")
    if isinstance(choices, Sequence) and choices and isinstance(choices[0], Mapping):
        return choices[0]
    return None


def _native_parts(output: Mapping[str, Any]) -> tuple[str, dict[str, Any], str | None, str | None]:
    """``(text, ocr_result, finish_reason, processed_text)`` of a native ``output``."""
    choice = _first_choice(output)
    if choice is None:
        # Older models answer ``output.text`` without choices.
        text = output.get("text")
        return (text if isinstance(text, str) else ""), {}, _finish(output.get("finish_reason")), None
    message = choice.get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    texts: list[str] = []
    processed: list[str] = []
    ocr_result: dict[str, Any] = {}
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, Sequence):
        for item in content:
            if not isinstance(item, Mapping):
                continue
            if isinstance(item.get("text"), str):
                texts.append(item["text"])
            if isinstance(item.get("processed_text"), str):
                processed.append(item["processed_text"])
            if isinstance(item.get("ocr_result"), Mapping):
                ocr_result.update(item["ocr_result"])
    processed_text = "".join(processed) if processed else None
    return "".join(texts), ocr_result, _finish(choice.get("finish_reason")), processed_text


def _finish(value: Any) -> str | None:
    """The native stream says ``"null"`` (a string) until the last event."""
    if value is None or value in ("", "null"):
        return None
    return str(value)


def _openai_text(message: Any) -> str:
    if not isinstance(message, Mapping):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            str(part.get("text") or "")
            for part in content
            if isinstance(part, Mapping) and part.get("type", "text") == "text"
        )
    return ""


def _malformed(what: str, body: Any, request_id: str | None = None) -> APIError:
    kind = type(body).__name__
    return APIError(f"malformed Qwen-OCR response: {what} (got a {kind})", request_id=request_id)


def parse_response(api: Api, body: Any, *, request_id: str | None = None) -> OcrAnswer:
    """Interpret a non-streamed 200 body.

    Raises:
        APIStatusError: the body is an error body (``code`` / ``error`` and no answer) despite the 200.
        APIError: the body has no answer at all.
    """
    if not isinstance(body, Mapping):
        raise _malformed("expected a JSON object", body, request_id)
    rid = body.get("request_id") or body.get("id") or request_id
    rid = str(rid) if rid else None
    if api == "native":
        output = body.get("output")
        if not isinstance(output, Mapping):
            if body.get("code"):
                raise error_from_response(int(body.get("status_code") or 400), body, request_id=rid)
            raise _malformed("no 'output' object", body, rid)
        text, ocr_result, finish, processed = _native_parts(output)
        return OcrAnswer(text, ocr_result, normalize_usage(body.get("usage")), finish, rid, processed)
    choice = _first_choice(body)
    if choice is None:
        if isinstance(body.get("error"), Mapping):
            raise error_from_response(400, body, request_id=request_id)
        raise _malformed("no 'choices'", body, rid)
    message = choice.get("message")
    text = _openai_text(message)
    # The API reference lists processed_text on the compatible message too, "only through the DashScope SDK and
    # curl": read it when a raw HTTP answer carries it.
    processed = message.get("processed_text") if isinstance(message, Mapping) else None
    return OcrAnswer(
        text,
        {},
        normalize_usage(body.get("usage")),
        _finish(choice.get("finish_reason")),
        rid,
        processed if isinstance(processed, str) else None,
    )


# --- streamed answers ---------------------------------------------------------------------------------------------


class StreamAssembler:
    """Accumulates a streamed answer of either flavour into an :class:`OcrAnswer`.

    Feed it every :class:`SSEEvent`; :meth:`feed` returns the new text (the delta), :attr:`finished` says whether the
    final event was seen, and :meth:`result` returns the assembled answer or raises :class:`StreamError` when the
    stream ended too early.

    Args:
        api: ``native`` or ``openai``.
        incremental: native flavour: whether events carry deltas (``incremental_output=true``) or the whole text so
            far. The compatible flavour always sends deltas.
    """

    def __init__(self, api: Api, *, incremental: bool = True) -> None:
        self.api = api
        self.incremental = incremental if api == "native" else True
        self.text = ""
        self.ocr_result: dict[str, Any] = {}
        self.usage: dict[str, int | float] = {}
        self.finish_reason: str | None = None
        self.request_id: str | None = None
        self.processed_text: str | None = None
        self.finished = False
        self.events = 0

    def _error(self, status: int | None, body: Any) -> APIStatusError:
        if self.text:
            logger.debug("stream error event after %d characters of text", len(self.text))
        return error_from_response(status or 400, body, request_id=self.request_id)

    def feed(self, event: SSEEvent) -> str:
        """Take one event; return the text it adds (possibly empty).

        Raises:
            APIStatusError: an error event, mapped like an HTTP error response with that status.
            StreamError: a data line that is not JSON.
        """
        self.events += 1
        data = event.data.strip()
        if self.api == "openai" and data == "[DONE]":
            self.finished = True
            return ""
        if not data:
            return ""
        try:
            body = json.loads(data)
        except ValueError:
            if event.is_error:
                raise self._error(event.status, data) from None
            raise StreamError(
                "the stream carried a data line that is not JSON",
                request_id=self.request_id,
                partial_text=self.text,
            ) from None
        if not isinstance(body, Mapping):
            raise StreamError("the stream carried a non-object event", partial_text=self.text)
        rid = body.get("request_id") or body.get("id")
        if rid:
            self.request_id = str(rid)
        if event.is_error or (isinstance(body.get("error"), Mapping) and not body.get("choices")):
            raise self._error(event.status or _status_of(body), body)
        if self.api == "native":
            return self._feed_native(body)
        return self._feed_openai(body)

    def _feed_native(self, body: Mapping[str, Any]) -> str:
        output = body.get("output")
        if not isinstance(output, Mapping):
            if body.get("code"):
                raise self._error(_status_of(body), body)
            return ""
        text, ocr_result, finish, processed = _native_parts(output)
        if ocr_result:
            self.ocr_result.update(ocr_result)
        if processed is not None:  # whole on the event that carries it (the emulator: the final one); keep the last
            self.processed_text = processed
        if body.get("usage"):
            self.usage = normalize_usage(body["usage"])  # cumulative: the last event's usage is the total
        if self.incremental:
            delta = text
            self.text += text
        elif text.startswith(self.text):
            delta = text[len(self.text) :]
            self.text = text
        else:  # the service rewrote earlier text; keep its latest full version
            logger.debug("full-output stream rewrote earlier text; keeping the latest version")
            delta = ""
            self.text = text
        if finish is not None:
            self.finish_reason = finish
            self.finished = True
        return delta

    def _feed_openai(self, body: Mapping[str, Any]) -> str:
        if body.get("usage"):
            self.usage = normalize_usage(body["usage"])
        choice = _first_choice(body)
        if choice is None:
            return ""
        delta_obj = choice.get("delta")
        delta = _openai_text(delta_obj) if delta_obj is not None else _openai_text(choice.get("message"))
        self.text += delta
        finish = _finish(choice.get("finish_reason"))
        if finish is not None:
            self.finish_reason = finish
        return delta

    def result(self) -> OcrAnswer:
        """The assembled answer.

        Raises:
            StreamError: the stream ended before its final event (``finish_reason`` / ``[DONE]``).
        """
        if not self.finished:
            final = "a final finish_reason" if self.api == "native" else "data: [DONE]"
            raise StreamError(
                f"the stream ended after {self.events} events and {len(self.text)} characters without {final}",
                request_id=self.request_id,
                partial_text=self.text,
            )
        return OcrAnswer(
            self.text,
            dict(self.ocr_result),
            dict(self.usage),
            self.finish_reason,
            self.request_id,
            self.processed_text,
        )


def _status_of(body: Mapping[str, Any]) -> int:
    """The HTTP status an error event stands for when it has no ``status:`` line.

    Native events default to 400 as in the SDK; OpenAI-compatible error chunks never carry a status, so it is read
    from the code (``internal_error`` → 500, ``Throttling*`` / ``rate_limit*`` → 429, ``invalid_api_key`` → 401).
    """
    for key in ("status_code", "status"):
        value = body.get(key)
        if isinstance(value, int) and value >= 400:
            return value
    inner = body.get("error")
    source = inner if isinstance(inner, Mapping) else body
    code = str(source.get("code") or source.get("type") or "").lower()
    if code in ("invalidapikey", "invalid_api_key"):
        return 401
    if code.startswith(("throttling", "rate_limit")):
        return 429
    if "internal" in code or code in ("server_error", "serviceunavailable", "service_unavailable"):
        return 500
    return 400


# --- answer → page content ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageContent:
    """One page's interpreted answer.

    Attributes:
        content: the text in ``content_type`` (fences unwrapped; for ``advanced_recognition`` the recognised lines).
        content_type: ``plain``, ``json``, ``html``, ``latex`` or ``markdown``.
        extra: structured outputs: ``words_info`` (list), ``kv_result`` (dict), other ``ocr_result`` keys, and
            ``raw_text`` when ``content`` differs from what the model sent.
    """

    content: str
    content_type: str
    extra: dict[str, Any]


def _loads_lenient(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def _box(item: Mapping[str, Any]) -> dict[str, Any] | None:
    box: dict[str, Any] = {}
    for key in ("text", "location", "rotate_rect"):
        if key in item:
            box[key] = item[key]
    return box if ("location" in box or "rotate_rect" in box) else None


def words_from_text(text: str) -> list[dict[str, Any]]:
    """Text-line boxes from an ``advanced_recognition`` answer given as text (the OpenAI-compatible flavour).

    Accepts a JSON (or Python-literal) list of objects with ``text`` / ``location`` / ``rotate_rect``, the page's
    ``[{"pos_list": [{"rotate_rect": [...]}]}]`` shape, or an object with ``words_info``; fences are unwrapped.
    Anything else gives an empty list.
    """
    inner, _ = unwrap_fence(text)
    value = _loads_lenient(inner)
    if isinstance(value, Mapping):
        value = value.get("words_info") or value.get("pos_list") or []
    if not isinstance(value, list):
        return []
    words: list[dict[str, Any]] = []
    for item in value:
        if not isinstance(item, Mapping):
            continue
        if isinstance(item.get("pos_list"), list):
            for pos in item["pos_list"]:
                if isinstance(pos, Mapping):
                    box = _box({**pos, **({"text": item["text"]} if "text" in item else {})})
                    if box is not None:
                        words.append(box)
            continue
        box = _box(item)
        if box is not None:
            words.append(box)
    return words


def page_content(req: OcrRequest, answer: OcrAnswer) -> PageContent:
    """Interpret one answer for the request's task: unwrap fences, pick out boxes and key-values.

    * ``advanced_recognition``: ``words_info`` from ``ocr_result`` (native) or parsed from the text (compatible);
      the content is the recognised lines joined by newlines (falls back on the unwrapped text).
    * ``key_information_extraction``: ``kv_result`` from ``ocr_result`` (native) or parsed from the JSON text; the
      content is the JSON text.
    * other built-in tasks: the unwrapped text in the task's content type.
    * a custom prompt: a single ``json``/``html``/``latex``/``markdown`` fence is unwrapped and sets the content
      type; any other answer is ``plain`` and left as is.
    * a task with a custom prompt (``qwen3.5-ocr`` on): the text answers the prompt, so a known fence sets the
      content type (else the task's); the task's structured result comes from ``ocr_result`` as above, and for
      ``key_information_extraction`` the content is then the ``kv_result`` as JSON.

    The service's ``processed_text``, when present, is kept in ``extra["processed_text"]``.
    """
    raw = answer.text
    extra: dict[str, Any] = {k: v for k, v in answer.ocr_result.items() if k not in ("words_info", "kv_result")}
    if req.task is None:
        inner, lang = unwrap_fence(raw)
        kind = _CUSTOM_FENCES.get((lang or "").lower())
        content, content_type = (inner, kind) if kind else (raw, "plain")
    else:
        content, lang = unwrap_fence(raw)
        content_type = req.content_type
        if req.combined:
            content_type = _CUSTOM_FENCES.get((lang or "").lower(), content_type)
        if req.task == "advanced_recognition":
            words = answer.ocr_result.get("words_info")
            if not isinstance(words, list):
                words = words_from_text(raw)
            extra["words_info"] = words
            lines = [str(w["text"]) for w in words if isinstance(w, Mapping) and w.get("text")]
            if lines:
                content = "\n".join(lines)
        elif req.task == "key_information_extraction":
            kv = answer.ocr_result.get("kv_result")
            if not isinstance(kv, Mapping):
                parsed = _loads_lenient(content) if content.strip() else None
                kv = parsed if isinstance(parsed, Mapping) else None
                if kv is None and content.strip():
                    logger.warning("key_information_extraction answer is not a JSON object; kv_result left empty")
            extra["kv_result"] = dict(kv) if kv is not None else {}
            if kv and (req.combined or not content.strip()):
                content = json.dumps(kv, ensure_ascii=False, indent=2)
                content_type = "json"
    if content != raw:
        extra["raw_text"] = raw
    if answer.processed_text is not None:
        extra["processed_text"] = answer.processed_text
    if answer.finish_reason not in (None, "stop"):
        extra["finish_reason"] = answer.finish_reason
    return PageContent(content, content_type, extra)


def join_pages(
    contents: Sequence[str], content_type: str, *, kv_result: Mapping[str, Any] | None = None
) -> tuple[str, str]:
    """The content and content type of a multi-page result from its pages' contents.

    Pages are joined by a blank line, except JSON, which must stay one valid document: key-information extraction
    gives its merged ``kv_result``; other JSON answers (custom prompts) become a JSON array with one value per page,
    or, when a page is not valid JSON, the joined text as ``plain``.

    Example:
        >>> join_pages(["<table>1</table>", "<table>2</table>"], "html")
        ('<table>1</table>\\n\\n<table>2</table>', 'html')
        >>> join_pages(['{"a": 1}', '{"a": 2}'], "json")
        ('[{"a": 1}, {"a": 2}]', 'json')
    """
    if len(contents) == 1:
        return contents[0], content_type
    if content_type != "json":
        return "\n\n".join(contents), content_type
    if kv_result is not None:
        return json.dumps(kv_result, ensure_ascii=False, indent=2), "json"
    values = []
    for text in contents:
        try:
            values.append(json.loads(text))
        except ValueError:
            return "\n\n".join(contents), "plain"
    return json.dumps(values, ensure_ascii=False), "json"


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip() or value.strip().lower() == "null"
    if isinstance(value, (list, dict)):
        return not value
    return isinstance(value, float) and math.isnan(value)


def merge_kv_results(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge the ``kv_result`` of several pages of one document into one object.

    For each key the first non-empty value in page order wins (``None``, ``""`` and ``"null"`` count as empty);
    nested objects are merged the same way; lists (line items that run over several pages) are concatenated.

    Example:
        >>> merge_kv_results([{"No": "A1", "Total": None, "Items": [1]}, {"No": None, "Total": "9", "Items": [2]}])
        {'No': 'A1', 'Total': '9', 'Items': [1, 2]}
    """
    merged: dict[str, Any] = {}
    for result in results:
        for key, value in result.items():
            if key not in merged:
                merged[key] = _copy(value)
                continue
            current = merged[key]
            if isinstance(current, dict) and isinstance(value, Mapping):
                merged[key] = merge_kv_results([current, value])
            elif isinstance(current, list) and isinstance(value, list):
                current.extend(_copy(value))
            elif _empty(current) and not _empty(value):
                merged[key] = _copy(value)
    return merged


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
