"""Server-sent events, line by line, as the DashScope SDK reads its streams (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent"]


@dataclass(frozen=True)
class SSEEvent:
    """One ``data:`` line with the fields that preceded it in the same block.

    Attributes:
        data: the text after ``data:`` (leading spaces stripped).
        event: the block's ``event:`` value (``result``, ``error``...), or None.
        status: the block's ``status:`` value, or None.
        id: the block's ``id:`` value, or None.
    """

    data: str
    event: str | None = None
    status: int | None = None
    id: str | None = None

    @property
    def is_error(self) -> bool:
        """True for an ``event:error`` block (with or without a space after the colon)."""
        return (self.event or "").strip().lower() == "error"


class SSEDecoder:
    """Line-by-line SSE parser as the DashScope SDK reads streams (PROTOCOL.md C).

    Each ``data:`` line is one event (multi-line data is not joined, as in the SDK); ``event:``, ``status:`` and
    ``id:`` apply to the data lines that follow them until a blank line; lines starting with ``:`` are comments.

    Example:
        >>> decoder = SSEDecoder()
        >>> [decoder.feed(line) for line in ["id:1", "event:result", ":HTTP_STATUS/200", 'data:{"a":1}', ""]]
        [None, None, None, SSEEvent(data='{"a":1}', event='result', status=None, id='1'), None]
    """

    def __init__(self) -> None:
        self._event: str | None = None
        self._status: int | None = None
        self._id: str | None = None

    def feed(self, line: str) -> SSEEvent | None:
        """Consume one line (without its line break); return the event it completes, if any."""
        line = line.rstrip("\r\n")
        if not line:
            self._event = self._status = self._id = None
            return None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.lstrip(" ")
        if name == "data":
            return SSEEvent(value, self._event, self._status, self._id)
        if name == "event":
            self._event = value
        elif name == "status":
            try:
                self._status = int(value.strip())
            except ValueError:
                self._status = None
        elif name == "id":
            self._id = value
        return None
