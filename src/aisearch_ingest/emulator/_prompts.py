"""Reading a Qwen-OCR prompt the way the service does: which built-in task it asks for, and which schema it carries.

The OpenAI-compatible flavour has no ``ocr_options``, so a client calls a built-in task by sending its prompt as text
(:func:`aisearch_ingest.protocol.qwen_tasks.build_prompt`), and the server must recognise the task from that text.
Only the server side does that, so it lives here, beside the emulator, on the prompts of
:data:`~aisearch_ingest.protocol.qwen_tasks.TASKS` (the vendor page ``qwen-ocr.en.txt``, verbatim).

``text_recognition`` and ``multi_lan`` have the same documented prompt (which is also the default prompt used when
no prompt is sent), so a prompt alone cannot tell them apart: :func:`task_from_prompt` answers ``text_recognition``.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from ..protocol.qwen_tasks import DEFAULT_PROMPT, KIE_FULL_FIELD_PROMPT, TASKS

__all__ = ["schema_from_prompt", "task_from_prompt"]


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


#: The custom-field extraction prompt as the page's task table words it ("must be consistent"; the samples, which
#: :data:`TASKS` follows, say "needs to be consistent"). The prefix match below recognises both.
_KIE_TABLE_VARIANT = TASKS["key_information_extraction"].prompt.replace("needs to be consistent", "must be consistent")
# (normalised prefix, task): the first sentence (or two) of each prompt is distinctive enough; matching on the
# beginning keeps recognition robust to the schema tail and to line breaks/indentation inside the prompt.
_PROMPT_PREFIXES: tuple[tuple[str, str], ...] = (
    (_norm(TASKS["advanced_recognition"].prompt)[:60], "advanced_recognition"),
    (_norm(TASKS["key_information_extraction"].prompt)[:120], "key_information_extraction"),
    (_norm(KIE_FULL_FIELD_PROMPT)[:100], "key_information_extraction"),
    (_norm(TASKS["table_parsing"].prompt)[:100], "table_parsing"),
    (_norm(TASKS["document_parsing"].prompt)[:100], "document_parsing"),
    (_norm(TASKS["formula_recognition"].prompt)[:80], "formula_recognition"),
)


def task_from_prompt(text: str) -> str | None:
    """Recognise a built-in task from the prompt text of an OpenAI-compatible request.

    Matching is on the beginning of the documented prompt after collapsing whitespace and case, so the
    embedded ``result_schema`` of key_information_extraction (in any of the page's renderings), line breaks
    and indentation do not matter. The shared text_recognition / multi_lan prompt answers ``text_recognition``.

    Args:
        text: the prompt text.

    Returns:
        The task name, or None for a custom prompt.
    """
    norm = _norm(text)
    if not norm:
        return None
    if norm.rstrip(".") == _norm(DEFAULT_PROMPT).rstrip("."):
        return "text_recognition"
    for prefix, task in _PROMPT_PREFIXES:
        if norm.startswith(prefix):
            return task
    return None


_SCHEMA_LEAD_RE = re.compile(r"json schema is as follows:\s*", re.IGNORECASE)


def schema_from_prompt(text: str) -> dict[str, Any] | None:
    """Extract the ``result_schema`` embedded in a key_information_extraction prompt.

    Accepts the JSON renderings of the page's samples (compact or indented, with or without a trailing period)
    and Python-literal dicts with single quotes.

    Args:
        text: the prompt text.

    Returns:
        The schema as a dict, or None when the prompt carries no (parsable) schema.
    """
    match = _SCHEMA_LEAD_RE.search(text)
    if match is None:
        return None
    tail = text[match.end() :]
    start = tail.find("{")
    end = tail.rfind("}")
    if start < 0 or end <= start:
        return None
    blob = tail[start : end + 1]
    try:
        value: Any = json.loads(blob)
    except ValueError:
        try:
            value = ast.literal_eval(blob)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None
