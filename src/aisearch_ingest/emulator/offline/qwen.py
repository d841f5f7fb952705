"""Qwen-OCR answers: every built-in task answered from real OCR, in the format the vendor page shows for it."""

from __future__ import annotations

import difflib
import html
import json
import math
import re
import statistics
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...protocol.qwen_tasks import TASKS
from .._prompts import schema_from_prompt, task_from_prompt
from . import layout
from .ocr import OCRLine, ocr_cached

__all__ = ["QwenAnswer", "qwen_ocr"]


@dataclass
class QwenAnswer:
    """What the emulated Qwen-OCR model answers.

    Attributes:
        text: the message text, formatted (and fenced) as the vendor page shows for the task.
        ocr_result: the structured ``ocr_result`` of the DashScope response (``words_info`` for
            advanced_recognition, ``kv_result`` for key_information_extraction), else None.
    """

    text: str
    ocr_result: dict[str, Any] | None = None


def _fenced(lang: str, body: str) -> str:
    return f"```{lang}\n{body}\n```"


def _words_info(lines: Sequence[OCRLine]) -> list[dict[str, Any]]:
    """``words_info`` entries as in the page's advanced_recognition example.

    ``location`` is the four corners (top-left, top-right, bottom-right, bottom-left) as integers.
    ``rotate_rect`` follows the example's convention (OpenCV ``minAreaRect`` style): ``[cx, cy, w, h, angle]``
    where ``w`` is the text height, ``h`` the line length and ``angle`` the top edge's angle minus 90 degrees
    (a horizontal line gives -90).
    """
    out = []
    for ln in lines:
        (ax, ay), (bx, by), (cx, cy), (dx, dy) = ln.box
        length = (math.hypot(bx - ax, by - ay) + math.hypot(cx - dx, cy - dy)) / 2
        thickness = ln.height
        angle = math.degrees(math.atan2(by - ay, bx - ax)) - 90.0
        if angle < -90.0:
            angle += 180.0
        centre_x = (ax + bx + cx + dx) / 4
        centre_y = (ay + by + cy + dy) / 4
        out.append(
            {
                "rotate_rect": [int(centre_x), int(centre_y), round(thickness), round(length), round(angle)],
                "location": [round(v) for pt in ln.box for v in pt],
                "text": ln.text,
            }
        )
    return out


def _key_values(rows: Sequence[layout.Row]) -> list[tuple[str, str]]:
    """``key: value`` / ``key：value`` pairs from OCR rows, in reading order."""
    pairs: list[tuple[str, str]] = []
    for index, row in enumerate(rows):
        for text in [row.text] if not layout.is_tabular(row) else [item.text for item in row.items]:
            match = layout.KV_RE.match(text)
            if match is None:
                continue
            key, value = match.group("key").strip(), match.group("value").strip()
            if not any(ch.isalpha() for ch in key):
                continue
            # "10:30" is a time, not a key; "https://x" is a URL.
            if (key[-1:].isdigit() and value[:1].isdigit()) or value.startswith("//"):
                continue
            if not value and index + 1 < len(rows) and layout.KV_RE.match(rows[index + 1].text) is None:
                value = rows[index + 1].text.strip()  # "Seller:" with the value on the line below
            pairs.append((key, value))
    return pairs


def _norm_key(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if ch.isalnum())


#: Words that may be added to a key without changing what it names ("Buyer" ~ "Buyer name", "Total" ~ "Total
#: amount"); "Due date" is not "Date".
_GENERIC_KEY_WORDS = frozenset({"name", "no", "nr", "number", "num", "id", "code", "value", "amount", "the", "of"})


def _key_words(text: str) -> set[str]:
    return set(re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold()))


def _qualified_match(field_name: str, key: str) -> bool:
    a, b = _key_words(field_name), _key_words(key)
    if not a or not b or a == b:
        return a == b and bool(a)
    small, big = (a, b) if len(a) < len(b) else (b, a)
    return small < big and (big - small) <= _GENERIC_KEY_WORDS


def _match_key(field_name: str, pairs: Sequence[tuple[str, str]]) -> str | None:
    """Fuzzy, case-insensitive look-up of a schema field among the OCR key-value pairs."""
    want = _norm_key(field_name)
    if not want:
        return None
    best: tuple[float, str] | None = None
    for key, value in pairs:
        have = _norm_key(key)
        if not have:
            continue
        if have == want:
            score = 2.0
        elif _qualified_match(field_name, key):
            score = 1.5
        else:
            score = difflib.SequenceMatcher(None, want, have).ratio()
            if score < 0.8:
                continue
        if best is None or score > best[0]:
            best = (score, value)
    if best is None or best[1] == "":
        return None
    return best[1]


def _fill_schema(schema: Any, pairs: Sequence[tuple[str, str]], name: str = "") -> Any:
    if isinstance(schema, Mapping):
        return {str(k): _fill_schema(v, pairs, str(k)) for k, v in schema.items()}
    if isinstance(schema, list | tuple):
        template = schema[0] if schema else ""
        filled = _fill_schema(template, pairs, name)
        empty = filled is None or (isinstance(filled, dict) and all(v in (None, []) for v in filled.values()))
        return [] if empty else [filled]
    return _match_key(name, pairs)


def _all_fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        name, n = key, 2
        while name in out:
            name, n = f"{key}_{n}", n + 1
        out[name] = value or None
    return out


def _html_table(grid: Sequence[Sequence[layout.Cell]]) -> str:
    lines = ["<table>"]
    for row in grid:
        lines.append("  <tr>")
        for cell in row:
            span = f' colspan="{cell.colspan}"' if cell.colspan > 1 else ""
            lines.append(f"    <td{span}>{html.escape(cell.text, quote=False)}</td>")
        lines.append("  </tr>")
    lines.append("</table>")
    return "\n".join(lines)


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _latex_tabular(grid: Sequence[Sequence[layout.Cell]]) -> str:
    ncols = max((sum(c.colspan for c in row) for row in grid), default=1)
    lines = [r"\begin{tabular}{|" + "l|" * ncols + "}", r"\hline"]
    for row in grid:
        cells = []
        for cell in row:
            text = _latex_escape(cell.text)
            cells.append(text if cell.colspan == 1 else rf"\multicolumn{{{cell.colspan}}}{{|l|}}{{{text}}}")
        lines.append(" & ".join(cells) + r" \\")
        lines.append(r"\hline")
    lines.append(r"\end{tabular}")
    return "\n".join(lines)


def _latex_document(rows: Sequence[layout.Row]) -> str:
    body: list[str] = []
    run = layout.table_run(rows)
    heights = [row.height for row in rows]
    body_h = statistics.median(heights) if heights else 0.0
    i = 0
    plain: list[layout.Row] = []

    def flush() -> None:
        for para in layout.paragraphs(plain):
            text = " ".join(row.text for row in para)
            if len(para) == 1 and para[0].height >= 1.35 * body_h and len(text) <= 80:
                body.append(rf"\section*{{{_latex_escape(text)}}}")
            else:
                body.append(_latex_escape(text))
        plain.clear()

    while i < len(rows):
        if run is not None and i == run[0]:
            flush()
            body.append(_latex_tabular(layout.rows_to_grid(rows[run[0] : run[1]])))
            i = run[1]
            continue
        plain.append(rows[i])
        i += 1
    flush()
    parts = [r"\documentclass{article}", "", r"\begin{document}", "", *[b + "\n" for b in body], r"\end{document}"]
    return "\n".join(parts)


_GREEK = {
    "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon", "θ": "theta", "λ": "lambda",
    "μ": "mu", "π": "pi", "ρ": "rho", "σ": "sigma", "τ": "tau", "φ": "phi", "ω": "omega", "Δ": "Delta",
    "Σ": "Sigma", "Ω": "Omega", "Π": "Pi", "Φ": "Phi", "Γ": "Gamma", "Λ": "Lambda", "Θ": "Theta",
}  # fmt: skip
_MATH_SYMBOLS = {
    "×": r"\times", "·": r"\cdot", "÷": r"\div", "≤": r"\leq", "≥": r"\geq", "≠": r"\neq", "±": r"\pm",
    "→": r"\rightarrow", "←": r"\leftarrow", "∞": r"\infty", "≈": r"\approx", "∑": r"\sum", "∫": r"\int",
    "√": r"\sqrt", "∂": r"\partial", "∈": r"\in", "−": "-",
}  # fmt: skip


_SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱ", "0123456789+-=()ni", strict=True))
_SUBSCRIPTS = dict(zip("₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎", "0123456789+-=()", strict=True))


def _scripts_to_latex(text: str) -> str:
    """OCR reads a raised exponent as a Unicode superscript (``mc²``): runs become ``^{...}`` (``_{...}`` below)."""
    for table, mark in ((_SUPERSCRIPTS, "^"), (_SUBSCRIPTS, "_")):
        runs = re.findall(f"[{''.join(table)}]+", text)
        for run in sorted(set(runs), key=len, reverse=True):
            text = text.replace(run, mark + "{" + "".join(table[c] for c in run) + "}")
    return text


def _to_latex_math(text: str) -> str:
    r"""Best-effort LaTeX for a recognised formula line (``E = mc^2`` or ``E = mc²`` -> ``E = mc^{2}``).

    Example:
        >>> print(_to_latex_math("a²+ b² = c²"), "|", _to_latex_math("x_1 <= y"))
        a^{2} + b^{2} = c^{2} | x_{1} \leq y
    """
    out = _scripts_to_latex(text)
    for src, dst in (("<=", r"\leq "), (">=", r"\geq "), ("!=", r"\neq "), ("->", r"\rightarrow ")):
        out = out.replace(src, dst)
    out = "".join(
        rf"\{_GREEK[ch]} " if ch in _GREEK else (_MATH_SYMBOLS[ch] + " " if ch in _MATH_SYMBOLS else ch) for ch in out
    )
    out = re.sub(r"(?<=\S)\s*\*\s*(?=\S)", r" \\cdot ", out)
    out = re.sub(r"([\^_])\s*\(([^()]*)\)", r"\1{\2}", out)
    out = re.sub(r"([\^_])\s*([A-Za-z0-9]+|\\[A-Za-z]+)", r"\1{\2}", out)
    out = out.replace("%", r"\%").replace("#", r"\#").replace("&", r"\&")
    out = re.sub(r"(?<=[^\s{^_])\s*([=+])\s*(?=[^\s}])", r" \1 ", out)  # OCR drops spaces around = and +
    return re.sub(r"[ \t]+", " ", out).strip()


def _answer_for_task(task: str, lines: Sequence[OCRLine], result_schema: Mapping[str, Any] | None) -> QwenAnswer:
    rows = layout.visual_rows(lines)
    spec = TASKS[task]
    if task in ("text_recognition", "multi_lan"):
        return QwenAnswer(layout.paragraph_text(rows))
    if task == "advanced_recognition":
        info = _words_info(lines)
        brief = [{"rotate_rect": item["rotate_rect"], "text": item["text"]} for item in info]
        return QwenAnswer(_fenced("json", json.dumps(brief, ensure_ascii=False)), {"words_info": info})
    if task == "key_information_extraction":
        pairs = _key_values(rows)
        kv = _fill_schema(result_schema, pairs) if result_schema else _all_fields(pairs)
        text = _fenced("json", json.dumps(kv, ensure_ascii=False, indent=4))
        return QwenAnswer(text, {"kv_result": kv})
    if task == "table_parsing":
        run = layout.table_run(rows)
        table_rows = list(rows[run[0] : run[1]]) if run else list(rows)
        body = _html_table(layout.rows_to_grid(table_rows)) if table_rows else "<table>\n</table>"
        return QwenAnswer(_fenced(spec.fence or "html", body))
    if task == "document_parsing":
        return QwenAnswer(_fenced(spec.fence or "latex", _latex_document(rows)))
    if task == "formula_recognition":
        formulas = [_to_latex_math(row.text) for row in rows if row.text.strip()]
        return QwenAnswer("\n".join(f"$${f}$$" for f in formulas))
    raise ValueError(f"unknown Qwen-OCR task {task!r}")  # pragma: no cover - TASKS is closed


def qwen_ocr(
    data: bytes,
    *,
    task: str | None,
    prompt: str | None,
    result_schema: Mapping[str, Any] | None,
    enable_rotate: bool = False,
) -> QwenAnswer:
    """Answer a Qwen-OCR request from real OCR of the image, in the format the vendor page shows per task.

    * ``text_recognition`` / ``multi_lan``: plain text, wrapped lines merged into paragraphs, one per line.
    * ``advanced_recognition``: a fenced JSON list of ``{"rotate_rect", "text"}`` and
      ``ocr_result={"words_info": [{"rotate_rect", "location", "text"}]}`` from the real boxes.
    * ``key_information_extraction``: the ``result_schema`` filled from ``key: value`` lines (fuzzy,
      case-insensitive key match, ``null`` when absent), or every pair when there is no schema (full-field
      mode); fenced JSON with 4-space indent and ``ocr_result={"kv_result": ...}``.
    * ``table_parsing``: a fenced HTML ``<table>`` rebuilt from the boxes (rows by vertical centre, columns by
      shared x-ranges, ``colspan`` for boxes spanning columns).
    * ``document_parsing``: a fenced LaTeX document (``\\section*`` for large lines, paragraphs, a ``tabular``
      for the table region).
    * ``formula_recognition``: ``$$...$$`` per recognised line.
    * custom prompt (``task=None``): recognised as a built-in task when it is one of the documented prompts
      (the OpenAI-compatible route; a KIE schema embedded in the prompt is used), else the plain text.

    Args:
        data: the image bytes.
        task: the ``ocr_options.task``, or None.
        prompt: the text prompt sent with the image, or None.
        result_schema: ``ocr_options.task_config.result_schema`` for key_information_extraction.
        enable_rotate: correct sideways / upside-down images before recognition (coordinates then refer to
            the corrected image).

    Returns:
        The answer text and the optional ``ocr_result``.

    Raises:
        ValueError: for an unknown task.
        CorruptDocument: when the image cannot be decoded.
        UnsupportedDocument: for HEIC images.
        ImportError: when the ``local`` extra is not installed.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown Qwen-OCR task {task!r}; expected one of {', '.join(TASKS)}")
    if task is None and prompt:
        task = task_from_prompt(prompt)
        if task == "key_information_extraction" and result_schema is None:
            result_schema = schema_from_prompt(prompt)
    lines = ocr_cached(data, rotate=enable_rotate)
    return _answer_for_task(task or "text_recognition", lines, result_schema)
