"""Qwen-OCR: DashScope native generation (PROTOCOL.md C), OpenAI-compatible chat completions (C′), uploads.

Choices where the pages are silent:

* the first image of the last user message is read; more images are ignored;
* with ``ocr_options.task`` the task's own prompt is what the model sees (a text item is ignored), as the page
  says ("when no built-in task is set ... you can pass a prompt"); from ``qwen3.5-ocr`` on the text item goes with
  the task (it is what the model reads; the emulator still answers the task, its structured result in
  ``ocr_result``);
* a streamed answer carries ``ocr_result`` (and ``processed_text``) on its final event only;
* per model (``protocol/qwen_models.py``): image tokens with its token pixels (32x32 or 28x28) and its
  ``min_pixels`` / ``max_pixels`` defaults and limits (a ``min_pixels`` below the model's minimum is raised to it);
  ``max_tokens`` defaults to the model's default and may not exceed its limit (32768 / 8192 / 4096); it truncates
  the answer, ``finish_reason`` is then ``length`` and ``ocr_result`` is dropped;
* ``qwen3.5-ocr`` native answers carry ``processed_text`` (the text with consecutive repeated lines removed), as
  the API reference's DashScope response shows (l.2518);
* ``oss://`` images resolve only with ``X-DashScope-OssResourceResolve: enable``, as the SDK sends it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email import policy as email_policy
from email.parser import BytesParser
from typing import Any

from ..protocol import qwen_models, qwen_tasks
from ._http import CUT, JsonReply, Reply, Request, StreamItem, StreamReply
from ._prompts import schema_from_prompt, task_from_prompt
from ._runtime import (
    Runtime,
    count_tokens,
    dashscope_request_id,
    error_reply,
    is_loopback_url,
    load_offline,
    memo,
    missing_extra_message,
    sha256_hex,
)
from ._sniff import QWEN_IMAGE_FORMATS, sniff

__all__ = ["MAX_IMAGE_BYTES", "QwenService"]

logger = logging.getLogger("aisearch_ingest.emulator")

#: "The size of a single image file, or the encoded string if you use Base64 encoding, cannot exceed 10 MB."
MAX_IMAGE_BYTES = 10 * 1024 * 1024
_PIECE_CHARS = 24
#: Models whose native answer carries ``processed_text`` (the API reference documents it with qwen3.5-ocr samples).
_PROCESSED_TEXT_MODELS = frozenset({"qwen3.5-ocr"})
_MODEL_RE = re.compile(r"^(qwen-vl-ocr|qwen-ocr|qwen\d+(\.\d+)?-ocr)", re.IGNORECASE)
_UPLOAD_MAX_BYTES = 100 * 1024 * 1024
_OSS_ACCESS_KEY_ID = "emulator-oss-access-key"


class _Invalid(Exception):
    """A 400 InvalidParameter with this message."""


@dataclass(frozen=True)
class _Job:
    flavour: str  # "native" | "compatible"
    model: str
    image: bytes
    width: int
    height: int
    min_pixels: int
    max_pixels: int
    enable_rotate: bool
    task: str | None
    prompt: str
    result_schema: Mapping[str, Any] | None
    max_tokens: int
    stream: bool
    incremental: bool
    include_usage: bool
    spec: qwen_models.QwenModel


@dataclass(frozen=True)
class _Answer:
    text: str
    ocr_result: Mapping[str, Any] | None
    finish_reason: str
    input_text_tokens: int
    image_tokens: int
    output_tokens: int
    processed_text: str | None = None

    def native_usage(self, output_tokens: int | None = None) -> dict[str, Any]:
        out = self.output_tokens if output_tokens is None else output_tokens
        inp = self.input_text_tokens + self.image_tokens
        return {
            "input_tokens": inp,
            "output_tokens": out,
            "total_tokens": inp + out,
            "image_tokens": self.image_tokens,
            "input_tokens_details": {"text_tokens": self.input_text_tokens, "image_tokens": self.image_tokens},
            "output_tokens_details": {"text_tokens": out},
        }

    def compatible_usage(self) -> dict[str, Any]:
        inp = self.input_text_tokens + self.image_tokens
        return {
            "prompt_tokens": inp,
            "completion_tokens": self.output_tokens,
            "total_tokens": inp + self.output_tokens,
            "prompt_tokens_details": {"image_tokens": self.image_tokens, "text_tokens": self.input_text_tokens},
            "completion_tokens_details": {"text_tokens": self.output_tokens},
        }


def _int_param(value: Any, name: str) -> int:
    # the Java SDK sends min_pixels/max_pixels as strings ("6422528")
    if isinstance(value, bool):
        raise _Invalid(f"{name} must be an integer")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Invalid(f"{name} must be an integer, got {value!r}")


def _image_size(data: bytes) -> tuple[int, int]:
    try:
        size = load_offline().image_size(data)
        return int(size[0]), int(size[1])
    except ImportError:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]), int(im.size[1])


def _cut_point(events: int) -> int:
    """Content events sent before an injected stream fault: about half, never the final one."""
    return max(0, min(events // 2, events - 1))


def _dedupe_lines(text: str) -> str:
    """``processed_text``: the answer with consecutive repeated lines removed ("自动删除重复片段")."""
    kept: list[str] = []
    for line in text.split("\n"):
        if kept and line.strip() and line == kept[-1]:
            continue
        kept.append(line)
    return "\n".join(kept)


def _pieces(text: str) -> list[str]:
    return [text[i : i + _PIECE_CHARS] for i in range(0, len(text), _PIECE_CHARS)] or [""]


class QwenService:
    """Qwen-OCR in both flavours, plus the SDK's upload-policy route and the fake OSS upload target."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._upload_dirs: dict[str, float] = {}

    # --- generation, both flavours

    def generation(self, request: Request, route: str, flavour: str) -> Reply:
        """``POST /api/v1/services/aigc/multimodal-generation/generation`` (``flavour="native"``) or
        ``POST /compatible-mode/v1/chat/completions`` (``flavour="compatible"``)."""
        family = "dashscope" if flavour == "native" else "compatible"
        if request.body_too_large:
            return error_reply(family, 400, "the request body is too large", close=True)
        try:
            body = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return error_reply(family, 400, f"The request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return error_reply(family, 400, "The request body must be a JSON object")
        try:
            job = self._parse(request, body, flavour)
        except _Invalid as exc:
            return error_reply(family, 400, str(exc))
        inspection = self.rt.injections.take(route, ("data_inspection",)) is not None
        if inspection and not job.stream:
            return self._inspection_error(family)
        try:
            answer = self._answer(job)
        except _Invalid as exc:
            return error_reply(family, 400, str(exc))
        except ImportError as exc:
            return error_reply(family, 500, missing_extra_message("images for Qwen-OCR", exc))
        except Exception as exc:
            # Whatever the OCR backend raises for an image is answered as the bad input it is: a 400
            # InvalidParameter with the reason (DashScope's documented error body), not a 500 a client retries.
            logger.debug("emulator: Qwen-OCR backend failed", exc_info=True)
            return error_reply(family, 400, f"The image could not be recognised: {type(exc).__name__}: {exc}")
        rid = dashscope_request_id()
        latency = self.rt.latency
        if not job.stream:
            due = request.received + latency.total(1, answer.output_tokens)
            if self.rt.sleep(due - time.monotonic()):
                return error_reply(family, 503, "the emulator is stopping")
            if flavour == "native":
                return JsonReply(
                    200, self._native_body(answer, answer.text, answer.finish_reason, rid, True), {"x-request-id": rid}
                )
            return JsonReply(200, self._compatible_body(job, answer, rid), {"x-request-id": rid})
        # streaming
        fault: str | None = "data_inspection" if inspection else None
        if fault is None:
            injected = self.rt.injections.take(route, ("stream_cut", "stream_error"))
            fault = str(injected.kind) if injected is not None else None
        if fault is None and self.rt.rng.chance(self.rt.faults.rate_stream_cut):
            fault = "stream_cut"
        first_delay = max(0.0, request.received + latency.fixed + latency.per_page - time.monotonic())
        if flavour == "native":
            events = self._native_stream(job, answer, rid, fault, first_delay)
            return StreamReply(events, {"x-request-id": rid})
        events = self._compatible_stream(job, answer, rid, fault, first_delay)
        return StreamReply(events, {"x-request-id": rid}, content_type="text/event-stream; charset=utf-8")

    def _inspection_error(self, family: str) -> JsonReply:
        if family == "compatible":
            return error_reply(
                family,
                400,
                "Input data may contain inappropriate content.",
                code="data_inspection_failed",
            )
        return error_reply(family, 400, "Input data may contain inappropriate content.", code="DataInspectionFailed")

    # --- request parsing

    def _parse(self, request: Request, body: Mapping[str, Any], flavour: str) -> _Job:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Invalid("Model not exist.")
        if not _MODEL_RE.match(model):
            raise _Invalid(
                f"Model not exist. (the emulator serves only Qwen-OCR models qwen-vl-ocr*, qwen3.5-ocr, not {model!r})"
            )
        spec = qwen_models.spec_for(model)
        if flavour == "native":
            inp = body.get("input")
            messages = inp.get("messages") if isinstance(inp, Mapping) else None
            raw_params = body.get("parameters")
            params: Mapping[str, Any] = raw_params if isinstance(raw_params, Mapping) else {}
            ocr_options = params.get("ocr_options")
            raw_max_tokens = params.get("max_tokens")
            stream = request.header("X-DashScope-SSE").lower() == "enable" or "text/event-stream" in request.header(
                "Accept"
            )
            incremental = params.get("incremental_output") is True
            include_usage = False
        else:
            messages = body.get("messages")
            ocr_options = body.get("ocr_options")
            raw_max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
            stream = body.get("stream") is True
            incremental = True
            options = body.get("stream_options")
            include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        if not isinstance(messages, list) or not messages:
            raise _Invalid("input.messages is required" if flavour == "native" else "messages is required")
        user = next((m for m in reversed(messages) if isinstance(m, Mapping) and m.get("role") == "user"), None)
        if user is None:
            raise _Invalid("the messages contain no user message")
        image_ref, image_item, texts = self._content(user.get("content"), flavour)
        if image_ref is None:
            raise _Invalid("The user message has no image; Qwen-OCR needs exactly one image")
        min_pixels = _int_param(image_item.get("min_pixels", spec.min_pixels), "min_pixels")
        max_pixels = _int_param(image_item.get("max_pixels", spec.default_max_pixels), "max_pixels")
        if min_pixels <= 0 or max_pixels <= 0 or min_pixels > max_pixels:
            raise _Invalid(f"min_pixels ({min_pixels}) and max_pixels ({max_pixels}) must be positive, min <= max")
        if max_pixels > spec.max_pixels_limit:
            raise _Invalid(f"max_pixels must not exceed {spec.max_pixels_limit} for {model}, got {max_pixels}")
        min_pixels = max(min_pixels, spec.min_pixels)  # "默认值和最小值均为" the model's minimum
        enable_rotate = image_item.get("enable_rotate", False)
        if not isinstance(enable_rotate, bool):
            raise _Invalid("enable_rotate must be a boolean")
        max_tokens = spec.default_max_tokens if raw_max_tokens is None else _int_param(raw_max_tokens, "max_tokens")
        if not 1 <= max_tokens <= spec.max_output:
            raise _Invalid(f"Range of max_tokens should be [1, {spec.max_output}]")
        task, prompt, schema = self._task(ocr_options, "\n".join(texts), spec.task_with_prompt)
        resolve = request.header("X-DashScope-OssResourceResolve").lower() == "enable"
        image = self._load_image(image_ref, resolve)
        width, height = self._check_image(image)
        return _Job(
            flavour=flavour,
            model=model,
            image=image,
            width=width,
            height=height,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            enable_rotate=enable_rotate,
            task=task,
            prompt=prompt,
            result_schema=schema,
            max_tokens=max_tokens,
            stream=stream,
            incremental=incremental,
            include_usage=include_usage,
            spec=spec,
        )

    @staticmethod
    def _content(content: Any, flavour: str) -> tuple[str | None, Mapping[str, Any], list[str]]:
        if isinstance(content, str):
            return None, {}, [content]
        if not isinstance(content, list):
            raise _Invalid("message content must be a string or a list")
        image_ref: str | None = None
        image_item: Mapping[str, Any] = {}
        texts: list[str] = []
        for item in content:
            if not isinstance(item, Mapping):
                raise _Invalid("each content item must be an object")
            if isinstance(item.get("text"), str):
                texts.append(item["text"])
            ref: Any = None
            if flavour == "native":
                ref = item.get("image")
            elif item.get("type") == "image_url" or "image_url" in item:
                ref = item.get("image_url")
                if isinstance(ref, Mapping):
                    # pixel bounds may sit beside "url" or beside "image_url"
                    merged = {**item, **ref}
                    ref = ref.get("url")
                    item = merged
            if ref is not None:
                if not isinstance(ref, str) or not ref:
                    raise _Invalid("the image must be a URL string")
                if image_ref is None:
                    image_ref, image_item = ref, item
        return image_ref, image_item, texts

    @staticmethod
    def _task(
        ocr_options: Any, text: str, task_with_prompt: bool = False
    ) -> tuple[str | None, str, Mapping[str, Any] | None]:
        if ocr_options is not None:
            if not isinstance(ocr_options, Mapping):
                raise _Invalid("ocr_options must be an object")
            task = ocr_options.get("task")
            if not isinstance(task, str) or task not in qwen_tasks.TASKS:
                raise _Invalid(
                    f"ocr_options.task {task!r} is not supported; expected one of {', '.join(qwen_tasks.TASKS)}"
                )
            config = ocr_options.get("task_config") or {}
            if not isinstance(config, Mapping):
                raise _Invalid("ocr_options.task_config must be an object")
            schema = config.get("result_schema")
            if schema is not None and not isinstance(schema, Mapping):
                raise _Invalid("ocr_options.task_config.result_schema must be a JSON object")
            try:
                prompt = qwen_tasks.build_prompt(task, schema or None)
            except ValueError as exc:
                raise _Invalid(str(exc)) from exc
            if task_with_prompt and text.strip():
                prompt = text  # qwen3.5-ocr on: the user's prompt is not overridden by the task's
            return task, prompt, schema or None
        if not text.strip():
            return "text_recognition", qwen_tasks.DEFAULT_PROMPT, None
        found = task_from_prompt(text)
        schema = schema_from_prompt(text) if found == "key_information_extraction" else None
        return found, text, schema

    def _load_image(self, ref: str, oss_resolve: bool) -> bytes:
        if ref.startswith("data:"):
            if len(ref) > MAX_IMAGE_BYTES:
                raise _Invalid(f"The image is {len(ref)} bytes as base64; the limit is {MAX_IMAGE_BYTES} bytes (10MB)")
            header, sep, payload = ref.partition(",")
            if not sep or not header.endswith(";base64"):
                raise _Invalid("The data URL must look like data:image/<format>;base64,<data>")
            if not header[5:].lower().startswith("image/"):
                raise _Invalid(f"The data URL's media type {header[5:-7]!r} is not an image type")
            try:
                return base64.b64decode("".join(payload.split()), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _Invalid("The data URL does not hold valid base64") from exc
        if ref.startswith("oss://"):
            if not oss_resolve:
                raise _Invalid("oss:// URLs need the header X-DashScope-OssResourceResolve: enable")
            found = self.rt.uploads.get(ref[len("oss://") :])
            if found is None:
                raise _Invalid(f"The uploaded file {ref} does not exist or has expired")
            return found[0]
        if ref.startswith(("http://", "https://")):
            if not is_loopback_url(ref):
                raise _Invalid(
                    f"Download the media resource timed out: {ref} (the emulator is offline and fetches only "
                    "127.0.0.1/localhost URLs; send a data: URL instead)"
                )
            try:
                # its own files, or URLs under an allowed prefix, with no redirects (see _runtime.UrlPolicy)
                return self.rt.fetch(ref, max_bytes=MAX_IMAGE_BYTES)
            except OSError as exc:
                raise _Invalid(f"Failed to download the image {ref}: {exc}") from exc
        raise _Invalid(
            "The provided URL does not appear to be valid: use http(s)://, data: or oss:// "
            "(file:// paths only work through the DashScope SDK, which uploads them)"
        )

    @staticmethod
    def _check_image(image: bytes) -> tuple[int, int]:
        if len(image) > MAX_IMAGE_BYTES:
            raise _Invalid(f"The image is {len(image)} bytes; the limit is {MAX_IMAGE_BYTES} bytes (10MB)")
        fmt = sniff(image)
        if fmt not in QWEN_IMAGE_FORMATS:
            raise _Invalid(
                f"The image format is not supported ({fmt or 'unknown'}); use BMP, JPEG, PNG, TIFF, WEBP or HEIC"
            )
        try:
            width, height = _image_size(image)
        except Exception as exc:
            raise _Invalid(f"The image cannot be decoded: {exc}") from exc
        try:
            qwen_tasks.check_image_dimensions(width, height)
        except ValueError as exc:
            raise _Invalid(str(exc)) from exc
        return width, height

    # --- the answer

    def _answer(self, job: _Job) -> _Answer:
        custom_prompt = job.prompt if job.task is None else None
        schema_key = json.dumps(job.result_schema, sort_keys=True, ensure_ascii=False) if job.result_schema else ""
        key = ("qwen-ocr", sha256_hex(job.image), job.task, custom_prompt, schema_key, job.enable_rotate)

        def compute() -> Any:
            return load_offline().qwen_ocr(
                job.image,
                task=job.task,
                prompt=custom_prompt,
                result_schema=job.result_schema,
                enable_rotate=job.enable_rotate,
            )

        try:
            raw = memo.get(key, compute, lambda a: len(a.text) + len(json.dumps(a.ocr_result or {})))
        except ValueError as exc:
            raise _Invalid(str(exc) or type(exc).__name__) from exc
        text = str(raw.text)
        ocr_result: Mapping[str, Any] | None = raw.ocr_result
        output_tokens = count_tokens(text)
        finish = "stop"
        if output_tokens > job.max_tokens:
            lo, hi = 0, len(text)
            while lo < hi:  # longest prefix within max_tokens
                mid = (lo + hi + 1) // 2
                if count_tokens(text[:mid]) <= job.max_tokens:
                    lo = mid
                else:
                    hi = mid - 1
            text, finish, ocr_result = text[:lo], "length", None
            output_tokens = count_tokens(text)
        image_tokens = job.spec.image_tokens(
            job.height, job.width, min_pixels=job.min_pixels, max_pixels=job.max_pixels
        )
        processed = _dedupe_lines(text) if job.flavour == "native" and job.spec.name in _PROCESSED_TEXT_MODELS else None
        return _Answer(text, ocr_result, finish, count_tokens(job.prompt), image_tokens, output_tokens, processed)

    # --- native bodies and stream

    @staticmethod
    def _native_body(
        answer: _Answer, text: str, finish: str, rid: str, final: bool, tokens: int | None = None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {"text": text}
        if final and answer.ocr_result is not None:
            item["ocr_result"] = answer.ocr_result
        if final and answer.processed_text is not None:
            item["processed_text"] = answer.processed_text
        return {
            "output": {"choices": [{"finish_reason": finish, "message": {"role": "assistant", "content": [item]}}]},
            "usage": answer.native_usage(tokens),
            "request_id": rid,
        }

    def _stream_plan(self, answer: _Answer) -> list[tuple[str, int]]:
        """(piece, cumulative output tokens) per content event; the last one carries the exact total."""
        pieces = _pieces(answer.text)
        plan: list[tuple[str, int]] = []
        cumulative = 0
        for piece in pieces:
            cumulative = min(cumulative + count_tokens(piece), answer.output_tokens)
            plan.append((piece, cumulative))
        plan[-1] = (plan[-1][0], answer.output_tokens)
        return plan

    def _native_stream(
        self, job: _Job, answer: _Answer, rid: str, fault: str | None, first_delay: float
    ) -> Iterator[StreamItem]:
        plan = self._stream_plan(answer)
        cut_after = _cut_point(len(plan)) if fault else None
        per_token = self.rt.latency.per_token
        yield float(first_delay)
        text_so_far = ""
        previous = 0
        for n, (piece, tokens) in enumerate(plan, start=1):
            if cut_after is not None and n > cut_after:
                yield from self._native_fault(fault, n, rid)
                return
            if n > 1 and per_token:
                yield float(per_token * (tokens - previous))
            previous = tokens
            text_so_far += piece
            last = n == len(plan)
            body = self._native_body(
                answer,
                piece if job.incremental else text_so_far,
                answer.finish_reason if last else "null",
                rid,
                last,
                tokens,
            )
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
            yield f"id:{n}\nevent:result\n:HTTP_STATUS/200\ndata:{data}\n\n".encode()

    def _native_fault(self, fault: str | None, n: int, rid: str) -> Iterator[StreamItem]:
        if fault == "stream_cut":
            self.rt.recorder.stream_cut()
            yield CUT
            return
        if fault == "data_inspection":
            status, code, message = 400, "DataInspectionFailed", "Output data may contain inappropriate content."
        else:
            status, code, message = 500, "InternalError", "An internal error has occured during streaming (emulated)."
        data = json.dumps({"code": code, "message": message, "request_id": rid}, separators=(",", ":"))
        yield f"id:{n}\nevent:error\n:HTTP_STATUS/{status}\nstatus:{status}\ndata:{data}\n\n".encode()

    # --- compatible bodies and stream

    @staticmethod
    def _compatible_body(job: _Job, answer: _Answer, rid: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": job.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": answer.finish_reason,
                    "message": {"role": "assistant", "content": answer.text},
                    "logprobs": None,
                }
            ],
            "usage": answer.compatible_usage(),
            "system_fingerprint": None,
        }

    def _compatible_stream(
        self, job: _Job, answer: _Answer, rid: str, fault: str | None, first_delay: float
    ) -> Iterator[StreamItem]:
        created = int(time.time())
        plan = self._stream_plan(answer)
        cut_after = _cut_point(len(plan)) if fault else None
        per_token = self.rt.latency.per_token

        def chunk(delta: dict[str, Any], finish: str | None, usage: dict[str, Any] | None = None) -> bytes:
            choices = (
                [] if usage is not None else [{"delta": delta, "finish_reason": finish, "index": 0, "logprobs": None}]
            )
            body = {
                "choices": choices,
                "object": "chat.completion.chunk",
                "usage": usage,
                "created": created,
                "system_fingerprint": None,
                "model": job.model,
                "id": f"chatcmpl-{rid}",
            }
            return f"data: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()

        yield float(first_delay)
        yield chunk({"content": "", "role": "assistant"}, None)
        previous = 0
        for n, (piece, tokens) in enumerate(plan, start=1):
            if cut_after is not None and n > cut_after:
                yield from self._compatible_fault(fault)
                return
            if n > 1 and per_token:
                yield float(per_token * (tokens - previous))
            previous = tokens
            last = n == len(plan)
            yield chunk({"content": piece}, answer.finish_reason if last else None)
        if job.include_usage:
            yield chunk({}, None, answer.compatible_usage())
        yield b"data: [DONE]\n\n"

    def _compatible_fault(self, fault: str | None) -> Iterator[StreamItem]:
        if fault == "stream_cut":
            self.rt.recorder.stream_cut()
            yield CUT
            return
        if fault == "data_inspection":
            error = {
                "message": "Output data may contain inappropriate content.",
                "type": "data_inspection_failed",
                "param": None,
                "code": "data_inspection_failed",
            }
        else:
            error = {
                "message": "An internal error has occured during streaming (emulated).",
                "type": "internal_error",
                "param": None,
                "code": "internal_error",
            }
        yield f"data: {json.dumps({'error': error}, separators=(',', ':'))}\n\n".encode()

    # --- uploads (dashscope SDK file:// path)

    def upload_policy(self, request: Request) -> Reply:
        """``GET /api/v1/uploads?action=getPolicy&model=...``: a policy for the fake OSS target."""
        if request.query_value("action") != "getPolicy":
            return error_reply("dashscope", 400, "action must be getPolicy")
        model = request.query_value("model")
        if not model:
            return error_reply("dashscope", 400, "model is required")
        upload_dir = f"dashscope-instant/{secrets.token_hex(16)}/{time.strftime('%Y-%m-%d')}/{uuid.uuid4()}"
        expires = time.time() + 300
        policy_doc = {
            "expiration": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(expires)),
            "conditions": [["content-length-range", 0, _UPLOAD_MAX_BYTES], ["starts-with", "$key", upload_dir]],
        }
        policy = base64.b64encode(json.dumps(policy_doc, separators=(",", ":")).encode()).decode()
        with self._lock:
            now = time.time()
            for stale in [d for d, exp in self._upload_dirs.items() if exp < now]:
                del self._upload_dirs[stale]
            self._upload_dirs[upload_dir] = expires
        rid = dashscope_request_id()
        data = {
            "policy": policy,
            "signature": self._sign(policy),
            "upload_dir": upload_dir,
            "upload_host": f"{self.rt.base_url}/_emulator/oss",
            "expire_in_seconds": 300,
            "max_file_size_mb": _UPLOAD_MAX_BYTES // (1024 * 1024),
            "capacity_limit_mb": 999999999,
            "oss_access_key_id": _OSS_ACCESS_KEY_ID,
            "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        }
        return JsonReply(200, {"request_id": rid, "data": data}, {"x-request-id": rid})

    def _sign(self, policy: str) -> str:
        return base64.b64encode(hmac.new(self._secret, policy.encode(), hashlib.sha1).digest()).decode()

    def oss_upload(self, request: Request) -> Reply:
        """``POST /_emulator/oss``: the OSS PostObject form the SDK sends (policy and signature checked)."""
        content_type = request.header("Content-Type")
        if request.body_too_large or "multipart/form-data" not in content_type:
            return _oss_error(400, "InvalidArgument", "expected a multipart/form-data PostObject request")
        message = BytesParser(policy=email_policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + request.body
        )
        fields: dict[str, bytes] = {}
        if message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if isinstance(name, str) and isinstance(payload, bytes):
                    fields[name] = payload
        policy = fields.get("policy", b"").decode("latin-1")
        signature = fields.get("Signature", b"").decode("latin-1")
        key = fields.get("key", b"").decode("utf-8", errors="replace")
        if fields.get("OSSAccessKeyId", b"").decode("latin-1") != _OSS_ACCESS_KEY_ID:
            return _oss_error(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist.")
        if not policy or not hmac.compare_digest(signature, self._sign(policy)):
            return _oss_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
        upload_dir = key.rsplit("/", 1)[0] if "/" in key else ""
        with self._lock:
            expires = self._upload_dirs.get(upload_dir)
        if expires is None or expires < time.time():
            return _oss_error(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed.")
        data = fields.get("file")
        if data is None:
            return _oss_error(400, "InvalidArgument", "the form has no file field")
        if len(data) > _UPLOAD_MAX_BYTES:
            return _oss_error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
        mime = fields.get("x-oss-content-type", b"application/octet-stream").decode("latin-1")
        self.rt.uploads.put(key, data, mime)
        return JsonReply(200, raw=b"", content_type="text/plain", headers={"x-oss-request-id": uuid.uuid4().hex})


def _oss_error(status: int, code: str, message: str) -> JsonReply:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4().hex.upper()}</RequestId></Error>"
    )
    return JsonReply(status, raw=xml.encode(), content_type="application/xml")
