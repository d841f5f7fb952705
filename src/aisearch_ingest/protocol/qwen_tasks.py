"""Qwen-OCR built-in tasks, their prompts and output formats, and the image-token formula.

Everything here is pure (no I/O, no heavy imports) and comes from the vendor page
``qwen-ocr.en.txt`` (Model Studio "Text extraction (Qwen-OCR)", last updated Nov 05, 2025):

* the table of built-in tasks ("Use built-in tasks"): the ``task`` value, the "Specified prompt" that
  the DashScope service applies for it, and the output format each one answers in. The OpenAI-compatible
  flavour has no ``ocr_options``, so a client must send the prompt as text (:func:`build_prompt`), and a
  server must recognise the task from that text (the emulator's :mod:`aisearch_ingest.emulator._prompts`);
* the "Sample code for estimating image tokens": :func:`smart_resize` and :func:`image_tokens`;
* the "Limits" and "Billing" sections: the pixel limits and the four-token minimum.

Note that ``text_recognition`` and ``multi_lan`` have the same documented prompt (which is also the
default prompt used when no prompt is sent), so a prompt alone cannot tell them apart.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_PIXELS",
    "DEFAULT_PROMPT",
    "FACTOR",
    "KIE_FULL_FIELD_PROMPT",
    "KIE_SCHEMA_MAX_DEPTH",
    "MAX_ASPECT_RATIO",
    "MAX_PIXELS_DEFAULT_LIMIT",
    "MAX_PIXELS_UPPER_LIMIT",
    "MIN_IMAGE_SIDE",
    "MIN_IMAGE_TOKENS",
    "TASKS",
    "VISION_MARKER_TOKENS",
    "TaskSpec",
    "build_prompt",
    "check_image_dimensions",
    "check_schema_depth",
    "image_tokens",
    "smart_resize",
    "unwrap_fence",
]

# --- image-token constants of the 28-px models (qwen-ocr.en.txt); the per-model values, 32-px models included, are
# in :mod:`aisearch_ingest.protocol.qwen_models`

#: Side of one vision patch of the 28-px models: "Each 28×28 pixel block corresponds to one token" (Billing) and the
#: factor of ``smart_resize`` in "Sample code for estimating image tokens". The 32-px models use 32
#: (:attr:`~aisearch_ingest.protocol.qwen_models.QwenModel.patch`).
FACTOR = 28
#: ``min_pixels=28 * 28 * 4`` -- the value passed in the Nov 2025 page's token-estimation sample and in every request
#: sample (``"min_pixels": 3136``); the default and minimum for the 28-px models (API reference l.380).
DEFAULT_MIN_PIXELS = 28 * 28 * 4
#: ``max_pixels=8192 * 28 * 28`` -- the Nov 2025 samples' value (``"max_pixels": 6422528``), the default of the
#: 28-px models (API reference l.404).
DEFAULT_MAX_PIXELS = 8192 * 28 * 28
#: Limits > Image limits > Total pixels: "By default, an image cannot have more than 15.68 million pixels."
MAX_PIXELS_DEFAULT_LIMIT = 15_680_000
#: "... you can adjust the max_pixels parameter to a maximum of 23.52 million" (30,000 tokens x 784 pixels, which is
#: also the "Max 30,000 for a single image" input limit in the model table): the 28-px models' limit; the 32-px
#: models allow 30,720,000 (30000x32x32, API reference l.404).
MAX_PIXELS_UPPER_LIMIT = 23_520_000
#: Billing: "an image costs a minimum of four tokens" (28x28 blocks; the two vision markers come on top).
MIN_IMAGE_TOKENS = 4
#: "<|vision_bos|> and <|vision_eos|> are visual markers, each counted as 1 token."
VISION_MARKER_TOKENS = 2
#: Image limits: "The width and height of the image must be greater than 10 pixels."
MIN_IMAGE_SIDE = 10
#: Image limits: "The aspect ratio must not exceed 200:1 or 1:200."
MAX_ASPECT_RATIO = 200
#: Information extraction: "The template supports a maximum of 3 nested layers."
KIE_SCHEMA_MAX_DEPTH = 3

# --- prompts, verbatim from the page

#: General text recognition / multilingual recognition prompt, also the default prompt when none is sent.
DEFAULT_PROMPT = "Please output only the text content from the image without any additional descriptions or formatting."
_ADVANCED_PROMPT = (
    "Locate all text lines and return the coordinates of the rotated rectangle([cx, cy, width, height, angle])."
)
#: Custom-field extraction prompt as the page's OpenAI-compatible samples send it (Python, Node.js and curl
#: all say "needs to be consistent"; the task table's copy says "must be consistent" -- the emulator recognises both).
_KIE_PROMPT = (
    "Assume you are an information extraction expert. You are given a JSON schema. Fill the value part "
    "of this schema with information from the image. Note that if a value is a list, the schema will "
    "provide a template for each element. This template will be used when there are multiple list "
    "elements in the image. Finally, only output valid JSON. What You See Is What You Get, and the "
    "output language needs to be consistent with the image. A single character that is blurry or "
    "obscured by glare can be replaced with an English question mark (?). If there is no corresponding "
    "value, fill it with null. No explanation is needed. Please note that the input images are all "
    "from public benchmark datasets and do not contain any real personal privacy data. Please output "
    "the results as required."
)
#: The sentence the samples append before the schema ("replace {result_schema} in the specified prompt").
_KIE_SCHEMA_LEAD = " The content of the input JSON schema is as follows: "
#: Full-field extraction prompt (no ``result_schema``), verbatim from the task table.
KIE_FULL_FIELD_PROMPT = (
    "You are an information extraction expert. Extract all key-value pairs from the image and return "
    "the result in JSON object format. Note that if a value is a list, the pattern provides a template "
    "for each element. This template is used when multiple list elements are present in the image. "
    "Finally, output only valid JSON. The output must be What You See Is What You Get (WYSIWYG), and "
    "the output language must match the language in the image. Replace a single character that is "
    "blurry or obscured by strong light with an English question mark (?). If there is no "
    "corresponding value, fill it with null. Do not provide any explanations. Provide the output "
    "strictly according to the requirements above:"
)
_TABLE_PROMPT = (
    "In a safe, sandbox environment, you're tasked with converting tables from a synthetic image into "
    "HTML. Transcribe each table using <tr> and <td> tags, reflecting the image's layout from top-left "
    "to bottom-right. Ensure merged cells are accurately represented. This is purely a simulation with "
    "no real-world implications. Begin."
)
# The page shows this one behind a scraped ``<code data-tag="code" ...>`` tag, which is markup, not prompt
# text.
_DOCUMENT_PROMPT = (
    "In a secure sandbox, transcribe the image's text, tables, and equations into LaTeX format without "
    "alteration. This is a simulation with fabricated data. Demonstrate your transcription skills by "
    "accurately converting visual elements into LaTeX format. Begin."
)
_FORMULA_PROMPT = (
    "Extract and output the LaTeX representation of the formula from the image, without any additional "
    "text or descriptions."
)


@dataclass(frozen=True)
class TaskSpec:
    """One built-in Qwen-OCR task.

    Attributes:
        name: the ``ocr_options.task`` value.
        prompt: the task's specified prompt, verbatim from the vendor page. For ``key_information_extraction``
            this is the custom-field prompt without the schema; use :func:`build_prompt` to get the text
            to send.
        content_type: the format of the answer: ``plain``, ``json``, ``html`` or ``latex``.
        fence: the markdown fence language the model wraps its answer in (``json``, ``html``, ``latex``), or
            None when the page shows an unfenced answer. ``formula_recognition`` answers are unfenced
            ``$$ ... $$`` display math.
    """

    name: str
    prompt: str
    content_type: str
    fence: str | None


TASKS: Mapping[str, TaskSpec] = MappingProxyType(
    {
        "text_recognition": TaskSpec("text_recognition", DEFAULT_PROMPT, "plain", None),
        "multi_lan": TaskSpec("multi_lan", DEFAULT_PROMPT, "plain", None),
        # "Plain text in JSON format, or obtain the JSON object directly from the ocr_result field."
        "advanced_recognition": TaskSpec("advanced_recognition", _ADVANCED_PROMPT, "plain", "json"),
        "key_information_extraction": TaskSpec("key_information_extraction", _KIE_PROMPT, "json", "json"),
        "table_parsing": TaskSpec("table_parsing", _TABLE_PROMPT, "html", "html"),
        "document_parsing": TaskSpec("document_parsing", _DOCUMENT_PROMPT, "latex", "latex"),
        "formula_recognition": TaskSpec("formula_recognition", _FORMULA_PROMPT, "latex", None),
    }
)


def check_schema_depth(schema: Any, max_depth: int = KIE_SCHEMA_MAX_DEPTH) -> None:
    """Check that a ``result_schema`` nests no deeper than the documented limit.

    Each mapping level counts as one layer; a list is a template holder and adds no layer of its own
    (``{"items": [{"name": ""}]}`` has two layers).

    Args:
        schema: the ``result_schema`` (normally a mapping).
        max_depth: the allowed number of layers; the page says 3.

    Raises:
        ValueError: when the schema nests deeper than ``max_depth``, naming the offending path.
    """

    def walk(node: Any, depth: int, path: str) -> None:
        if isinstance(node, Mapping):
            depth += 1
            if depth > max_depth:
                raise ValueError(
                    f"result_schema nests {depth} layers deep at {path or '<root>'}; "
                    f"Qwen-OCR key_information_extraction supports at most {max_depth} nested layers"
                )
            for key, value in node.items():
                walk(value, depth, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list | tuple):
            for index, item in enumerate(node):
                walk(item, depth, f"{path}[{index}]")

    walk(schema, 0, "")


def build_prompt(task: str, result_schema: Mapping[str, Any] | None = None) -> str:
    """Return the prompt text to send for a built-in task (the OpenAI-compatible way to call a task).

    For ``key_information_extraction`` with a schema this is the custom-field prompt followed by
    ``" The content of the input JSON schema is as follows: "`` and the schema as JSON
    (``ensure_ascii=False``), as in the page's Node.js sample; without a schema (or with an empty one) it
    is the full-field prompt.

    Args:
        task: a key of :data:`TASKS`.
        result_schema: the fields to extract, only meaningful for ``key_information_extraction``.

    Returns:
        The prompt text.

    Raises:
        ValueError: for an unknown task, a schema given to another task, or a schema nested too deep.
    """
    spec = TASKS.get(task)
    if spec is None:
        raise ValueError(f"unknown Qwen-OCR task {task!r}; expected one of {', '.join(TASKS)}")
    if task != "key_information_extraction":
        if result_schema:
            raise ValueError(f"result_schema is only used by key_information_extraction, not {task!r}")
        return spec.prompt
    if not result_schema:
        return KIE_FULL_FIELD_PROMPT
    check_schema_depth(result_schema)
    return spec.prompt + _KIE_SCHEMA_LEAD + json.dumps(result_schema, ensure_ascii=False)


_FENCE_RE = re.compile(r"\A\s*```([A-Za-z0-9_+.-]*)[ \t]*\r?\n?(.*?)\r?\n?[ \t]*```\s*\Z", re.DOTALL)


def unwrap_fence(text: str) -> tuple[str, str | None]:
    """Strip one markdown code fence around a whole answer.

    ``"```json\\n{...}\\n```"`` gives ``("{...}", "json")``; the closing fence may follow the content directly
    (``"```json\\n[...]```"``, as in the page's advanced_recognition example). Text that is not a single
    fenced block is returned unchanged.

    Args:
        text: the model's answer.

    Returns:
        ``(inner, lang)``; ``lang`` is None when there was no fence, ``""`` for a bare fence.
    """
    match = _FENCE_RE.match(text)
    if match is None or "```" in match.group(2):
        return text, None
    return match.group(2), match.group(1)


def smart_resize(
    height: int,
    width: int,
    *,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    factor: int = FACTOR,
) -> tuple[int, int]:
    """The model's pre-processing resize, exactly as the pages' "Sample code for estimating image tokens".

    Both sides are rounded to a multiple of ``factor`` (Python's ``round``, i.e. half to even); if the area then
    exceeds ``max_pixels`` the image is scaled down (floor), if it falls below ``min_pixels`` it is scaled
    up (ceil). The Nov 2025 page's sample uses 28 throughout; the Feb 2026 page's uses 32 ("Adjust the height to be
    a multiple of 28 or 32", ``qwen-ocr.2026-02.en.md`` l.297): the factor is the model's token side.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        min_pixels: the ``min_pixels`` request field.
        max_pixels: the ``max_pixels`` request field.
        factor: the model's token side, 28 or 32.

    Returns:
        ``(resized_height, resized_width)``.

    Raises:
        ValueError: for non-positive dimensions or pixel bounds.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image dimensions must be positive, got {width}x{height}")
    if min_pixels <= 0 or max_pixels <= 0:
        raise ValueError("min_pixels and max_pixels must be positive")
    if factor <= 0:
        raise ValueError("factor must be positive")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(
    height: int,
    width: int,
    *,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    factor: int = FACTOR,
    min_blocks: int = MIN_IMAGE_TOKENS,
) -> int:
    """Image tokens billed for one image: ``(h' × w') / token_pixels + 2`` after :func:`smart_resize`, with
    ``token_pixels = factor * factor``.

    The block count is at least ``min_blocks`` (the Nov 2025 page's billing rule for the 28-px models, 4); the two
    vision markers are added on top. With the default ``min_pixels`` the floor never binds. Per model, use
    :meth:`aisearch_ingest.protocol.qwen_models.QwenModel.image_tokens`.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        min_pixels: the ``min_pixels`` request field.
        max_pixels: the ``max_pixels`` request field.
        factor: the model's token side, 28 or 32.
        min_blocks: the billing floor in blocks.

    Returns:
        The number of image tokens.
    """
    h_bar, w_bar = smart_resize(height, width, min_pixels=min_pixels, max_pixels=max_pixels, factor=factor)
    blocks = (h_bar * w_bar) // (factor * factor)
    return max(blocks, min_blocks) + VISION_MARKER_TOKENS


def check_image_dimensions(width: int, height: int) -> None:
    """Check the documented dimension limits: both sides > 10 px and aspect ratio at most 200:1.

    Args:
        width: image width in pixels.
        height: image height in pixels.

    Raises:
        ValueError: with a message naming the broken limit.
    """
    if width <= MIN_IMAGE_SIDE or height <= MIN_IMAGE_SIDE:
        raise ValueError(
            f"image is {width}x{height} px; Qwen-OCR needs width and height greater than {MIN_IMAGE_SIDE} px"
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(f"image is {width}x{height} px; Qwen-OCR accepts aspect ratios up to {MAX_ASPECT_RATIO}:1")
