"""The error tree, and the one place where HTTP statuses and service codes become exceptions.

::

    AISearchIngestError
    ├── ConfigurationError                 missing key / bad endpoint, raised at construction with the fix
    ├── InvalidInputError                  rejected before sending: size, type, dimensions, unreadable file
    ├── APIError(message, request_id)
    │   ├── APIConnectionError             connection refused / reset / dropped, DNS, TLS
    │   │   └── APITimeoutError            a single HTTP exchange timed out
    │   ├── StreamError                    an SSE stream broke off or ended without its final event
    │   └── APIStatusError(status_code, code, body)
    │       ├── BadRequestError 400        (ContentInspectionError: data-inspection failures)
    │       ├── AuthenticationError 401/403
    │       ├── NotFoundError 404          BadRequest.TaskNotExist
    │       ├── RateLimitError 429         .retry_after
    │       └── ServerError >= 500
    ├── TaskError(task_id, status)
    │   ├── TaskFailedError(error)         the service said the task failed
    │   └── TaskTimeoutError(waited)       our deadline passed; the task id is kept so it can be resumed
    └── UnexpectedError                    a bug of this package met while parsing one input of a batch (reported
                                           as that input's failure, the others go on; ``__cause__`` holds it)

Every error that concerns one input carries ``source`` (the path or URL as given), so a batch report can say
which file failed. No message ever contains an API key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AISearchIngestError",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ContentInspectionError",
    "InvalidInputError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    "TaskError",
    "TaskFailedError",
    "TaskTimeoutError",
    "UnexpectedError",
    "error_from_response",
]


class AISearchIngestError(Exception):
    """Base class of every error this package raises.

    Attributes:
        source: the input it concerns, when there is one.
        possibly_billed_twice: for a source that failed after billed calls whose answers were lost (see
            :attr:`~aisearch_ingest.results.ParseResult.possibly_billed_twice`).
    """

    source: str | None = None
    possibly_billed_twice: int = 0

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source

    def __str__(self) -> str:
        if self.source and self.source not in self.message:
            return f"{self.source}: {self.message}"
        return self.message


class ConfigurationError(AISearchIngestError):
    """A setting is missing or malformed. The message says how to fix it."""


class InvalidInputError(AISearchIngestError):
    """An input was rejected before anything was sent.

    Attributes:
        limit: the name of the limit it broke (``"max_body_bytes"``, ``"empty"``, ``"file_type"``, ...).
        value: the offending value (a size in bytes, a pixel count, an extension...), when there is one.
        maximum: the limit's value, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        limit: str | None = None,
        value: Any = None,
        maximum: Any = None,
    ) -> None:
        super().__init__(message, source=source)
        self.limit = limit
        self.value = value
        self.maximum = maximum


class APIError(AISearchIngestError):
    """The service (or the way to it) failed."""

    def __init__(self, message: str, *, request_id: str | None = None, source: str | None = None) -> None:
        super().__init__(message, source=source)
        self.request_id = request_id


class APIConnectionError(APIError):
    """No usable HTTP response: connection refused, reset or dropped mid-response."""


class APITimeoutError(APIConnectionError):
    """One HTTP exchange took longer than the configured timeout."""


class StreamError(APIError):
    """A streamed answer broke off, or ended without its final event; ``partial_text`` holds what had arrived.

    An error *event* inside a stream is mapped like the equivalent HTTP error (``ServerError``,
    ``ContentInspectionError``...).
    """

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        source: str | None = None,
        partial_text: str = "",
        code: str | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, source=source)
        self.partial_text = partial_text
        self.code = code


class APIStatusError(APIError):
    """The service answered with an HTTP error status.

    Attributes:
        status_code: the HTTP status.
        code: the service's error code (``InvalidParameter``, ``BadRequest.TaskNotExist``, ``Throttling.RateQuota``...).
        body: the decoded error body (a dict), or the raw text when it was not JSON.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        body: Any = None,
        request_id: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, source=source)
        self.status_code = status_code
        self.code = code
        self.body = body


class BadRequestError(APIStatusError):
    """HTTP 400: the service refused the request (``InvalidParameter``...)."""


class ContentInspectionError(BadRequestError):
    """HTTP 400 from DashScope's data inspection (``DataInspectionFailed``...): the content itself was refused."""


class AuthenticationError(APIStatusError):
    """HTTP 401/403: the key is missing, wrong, or lacks access."""


class NotFoundError(APIStatusError):
    """HTTP 404, e.g. ``BadRequest.TaskNotExist`` for an unknown or expired task id."""


class RateLimitError(APIStatusError):
    """HTTP 429 (or ``Throttling*``) after the retries ran out. ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """HTTP 5xx after the retries ran out."""


class TaskError(AISearchIngestError):
    """An asynchronous task did not end in ``SUCCESS``."""

    def __init__(self, message: str, *, task_id: str | None, status: str | None, source: str | None = None) -> None:
        super().__init__(message, source=source)
        self.task_id = task_id
        self.status = status


class TaskFailedError(TaskError):
    """The service reported the task as failed (``FAIL``, ``FAILED``, or any status but PENDING/SUCCESS)."""

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None,
        status: str | None,
        error: str | None = None,
        request_id: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id, status=status, source=source)
        self.error = error
        self.request_id = request_id


class TaskTimeoutError(TaskError):
    """Our overall deadline passed while the task was still pending. ``task_id`` lets you poll it again later."""

    def __init__(self, message: str, *, task_id: str | None, waited: float, source: str | None = None) -> None:
        super().__init__(message, task_id=task_id, status="PENDING", source=source)
        self.waited = waited


class UnexpectedError(AISearchIngestError):
    """An exception this package did not expect (a bug) while parsing one input of a batch.

    ``parse_many`` reports it as that input's outcome instead of taking the batch down; it is neither a service nor a
    connection error, so nobody retries it as one. The original exception is ``__cause__``.
    """


_INSPECTION_CODES = ("DataInspectionFailed", "data_inspection_failed", "DataInspection")


def error_from_response(
    status_code: int,
    body: Any,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
    source: str | None = None,
) -> APIStatusError:
    """Map an HTTP error response of any of the three services onto the error tree.

    ``body`` may be an AI Search body (``{"code", "message", "request_id"}``), a DashScope native body
    (``{"code", "message", "request_id"}``), an OpenAI-compatible body (``{"error": {"code", "message"}}``),
    or text.
    """
    code: str | None = None
    message: str | None = None
    if isinstance(body, Mapping):
        inner = body.get("error") if isinstance(body.get("error"), Mapping) else None
        if inner is not None:
            raw_code = inner.get("code") or inner.get("type")
            message = inner.get("message")
        else:
            raw_code = body.get("code") or body.get("Code")
            message = body.get("message") or body.get("Message") or body.get("msg")
        code = str(raw_code) if raw_code not in (None, "") else None
        request_id = request_id or body.get("request_id") or body.get("RequestId") or body.get("requestId")
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    text = f"HTTP {status_code}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    if request_id:
        text += f" (request id {request_id})"
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "code": code,
        "body": body,
        "request_id": request_id,
        "source": source,
    }
    if status_code == 429 or (code or "").startswith("Throttling"):
        return RateLimitError(text, retry_after=retry_after, **kwargs)
    if status_code in (401, 403) or code in ("InvalidApiKey", "invalid_api_key"):
        return AuthenticationError(text, **kwargs)
    if status_code == 404:
        return NotFoundError(text, **kwargs)
    if status_code >= 500:
        return ServerError(text, **kwargs)
    if code and any(code.startswith(c) for c in _INSPECTION_CODES):
        return ContentInspectionError(text, **kwargs)
    if status_code == 400:
        return BadRequestError(text, **kwargs)
    return APIStatusError(text, **kwargs)
