"""The Qwen-OCR model table: per model its token pixels, pixel defaults and limits, ``max_tokens`` and regions.

This is the one place these facts live; the client (:mod:`aisearch_ingest.qwen`), the estimate
(:mod:`aisearch_ingest.estimate`), page rendering (:mod:`aisearch_ingest.pages`) and the emulator all read it.
Pure: no I/O, no heavy imports.

Sources (``api-docs/``; where an older and a newer page disagree the newer one stands):

* **Token pixels** -- ``qwen-ocr.2026-02.en.md`` l.267-277 ("For ``qwen-vl-ocr``, ``qwen-vl-ocr-2025-11-20``, and
  ``qwen-vl-ocr-latest``, this value is fixed at ``32*32``"; "For other models ... ``28*28``") and the newest ZH
  guide ``qwen-ocr.2026.zh.md`` § 计费与限流 (adds ``qwen3.5-ocr`` to the 32x32 group). CONFLICT: the ZH API
  reference ``qwen-ocr-api-reference.2026.zh.md`` l.371-375 puts ``qwen-vl-ocr`` in the 28x28 group. We follow the
  two guides: since Feb 2026 ``qwen-vl-ocr`` *is* ``qwen-vl-ocr-2025-11-20`` (EN model tables, "Equivalent to
  qwen-vl-ocr-2025-11-20"), a Qwen3-VL model, so the reference's grouping looks like a leftover of the time
  ``qwen-vl-ocr`` pointed at 2025-04-13. The pixel defaults follow the same grouping (``min_pixels`` /
  ``max_pixels`` defaults and limits, API reference l.380 and l.404, with ``qwen-vl-ocr`` moved to the 32 group
  for the same reason): 32-px models min 3072 (3·32·32), default max 8388608 (8192·32·32), max allowed 30720000
  (30000·32·32); 28-px models min 3136 (4·28·28), default max 6422528, max allowed 23520000.
* **max_tokens** -- the API reference l.453-465: ``qwen3.5-ocr`` default = max = 32768; ``-latest``, ``2025-11-20``
  and ``2024-10-28`` default = max = the model's max output (EN model tables: 8,192 for ``qwen-vl-ocr`` /
  ``2025-11-20`` / ``-latest``, 4,096 for 2025-08-28 and older); ``qwen-vl-ocr``, 2025-04-13 and 2025-08-28 default
  4096. For ``qwen-vl-ocr`` the API reference's default (4096) is kept, and its limit is the model table's 8,192
  max output (the reference's "4097~8192 on request" range is the same ceiling). The older snapshots are capped at
  their 4,096 max output (EN model table, Chinese Mainland).
* **Regions** -- ``qwen-ocr.2026-02.en.md`` § Supported models: International/Singapore (l.75-131): ``qwen-vl-ocr``,
  ``qwen-vl-ocr-2025-11-20``; Global/Virginia (l.133-179): the same two; Chinese Mainland/Beijing (l.181-262):
  ``qwen-vl-ocr``, ``-latest``, 2025-11-20, 2025-08-28, 2025-04-13, 2024-10-28. ``qwen3.5-ocr`` is only on the ZH
  guide, whose every sample uses the Beijing endpoint, so it is listed for Beijing only.
* **Aliases** -- "Also known as qwen-vl-ocr-1120" (and 0828, 0413, 1028) in the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from . import qwen_tasks

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "REGIONS",
    "REGION_NAMES",
    "QwenModel",
    "fallback_model",
    "lookup",
    "regions_listing",
    "spec_for",
]

#: Region codes of Model Studio, in the order of the vendor page, with their names.
REGION_NAMES = MappingProxyType({"intl": "Singapore", "us": "Virginia", "cn": "Beijing"})
#: The region codes.
REGIONS = tuple(REGION_NAMES)

#: The default model: ``qwen-vl-ocr`` is listed in every region.
DEFAULT_MODEL = "qwen-vl-ocr"


@dataclass(frozen=True)
class QwenModel:
    """What one Qwen-OCR model takes and bills.

    Attributes:
        name: the model name as sent.
        patch: the side of one image token in pixels (32 or 28): the factor of ``smart_resize`` and
            ``token_pixels = patch * patch``.
        max_output: the most ``max_tokens`` the service accepts for the model.
        default_max_tokens: ``max_tokens`` when the request sends none.
        regions: the region codes whose model table lists the model.
        aliases: other names of the same model.
        task_with_prompt: a built-in task and a custom prompt may go together (``qwen3.5-ocr`` on: "定制任务与用户自定义
            Prompt 结合使用（不再强制覆盖），定制任务结果通过 ``ocr_result`` 字段返回", ``qwen-ocr.2026.zh.md`` l.528);
            older models apply the task's fixed prompt.
    """

    name: str
    patch: int
    max_output: int
    default_max_tokens: int
    regions: frozenset[str]
    aliases: tuple[str, ...] = ()
    task_with_prompt: bool = False

    @property
    def token_pixels(self) -> int:
        """Pixels per image token: ``32*32`` or ``28*28``."""
        return self.patch * self.patch

    @property
    def min_pixels(self) -> int:
        """Default and smallest ``min_pixels``: 3072 (3·32·32) or 3136 (4·28·28)."""
        return (3 if self.patch == 32 else 4) * self.token_pixels

    @property
    def default_max_pixels(self) -> int:
        """Default ``max_pixels``: 8192 tokens' worth (8388608 or 6422528)."""
        return 8192 * self.token_pixels

    @property
    def max_pixels_limit(self) -> int:
        """The largest ``max_pixels`` allowed: 30,000 tokens' worth (30720000 or 23520000)."""
        return 30000 * self.token_pixels

    @property
    def min_blocks(self) -> int:
        """The billing floor in token blocks: "an image costs a minimum of four tokens" is a rule of the Nov 2025 page,
        which describes the 28-px models; the newer pages state no floor (the default ``min_pixels`` gives 3)."""
        return qwen_tasks.MIN_IMAGE_TOKENS if self.patch == 28 else 0

    def smart_resize(
        self, height: int, width: int, *, min_pixels: int | None = None, max_pixels: int | None = None
    ) -> tuple[int, int]:
        """:func:`~aisearch_ingest.protocol.qwen_tasks.smart_resize` with this model's factor and pixel defaults."""
        return qwen_tasks.smart_resize(
            height,
            width,
            min_pixels=min_pixels or self.min_pixels,
            max_pixels=max_pixels or self.default_max_pixels,
            factor=self.patch,
        )

    def image_tokens(
        self, height: int, width: int, *, min_pixels: int | None = None, max_pixels: int | None = None
    ) -> int:
        """Image tokens billed for one image: ``(h_bar * w_bar) / token_pixels + 2`` after the model's
        ``smart_resize`` (``min_pixels`` / ``max_pixels`` None: the model's defaults)."""
        return qwen_tasks.image_tokens(
            height,
            width,
            min_pixels=min_pixels or self.min_pixels,
            max_pixels=max_pixels or self.default_max_pixels,
            factor=self.patch,
            min_blocks=self.min_blocks,
        )


def _model(
    name: str,
    patch: int,
    max_output: int,
    default: int,
    regions: tuple[str, ...],
    *aliases: str,
    task_with_prompt: bool = False,
) -> QwenModel:
    return QwenModel(name, patch, max_output, default, frozenset(regions), aliases, task_with_prompt)


_ALL = ("intl", "us", "cn")
_CN = ("cn",)

_TABLE = (
    _model("qwen3.5-ocr", 32, 32768, 32768, _CN, task_with_prompt=True),
    # default 4096: API reference l.463 ("qwen-vl-ocr ... 默认值和最大值为4096", raisable to 8192 on request);
    # limit 8192: the EN model tables' max output for qwen-vl-ocr (= 2025-11-20).
    _model("qwen-vl-ocr", 32, 8192, 4096, _ALL),
    _model("qwen-vl-ocr-latest", 32, 8192, 8192, _CN),
    _model("qwen-vl-ocr-2025-11-20", 32, 8192, 8192, _ALL, "qwen-vl-ocr-1120"),
    _model("qwen-vl-ocr-2025-08-28", 28, 4096, 4096, _CN, "qwen-vl-ocr-0828"),
    _model("qwen-vl-ocr-2025-04-13", 28, 4096, 4096, _CN, "qwen-vl-ocr-0413"),
    _model("qwen-vl-ocr-2024-10-28", 28, 4096, 4096, _CN, "qwen-vl-ocr-1028"),
)

#: Every listed model and alias (lower case) → its :class:`QwenModel`.
MODELS = MappingProxyType({key: spec for spec in _TABLE for key in (spec.name, *spec.aliases)})


def lookup(model: str) -> QwenModel | None:
    """The table's entry for a model name or alias (case-insensitive), or None for a model the table does not list."""
    return MODELS.get(model.strip().lower())


def fallback_model(model: str) -> QwenModel:
    """The rules assumed for a model the table does not list (a newer one): those of the current generation
    (32-px tokens and pixel defaults, like ``qwen-vl-ocr``; task and prompt together, like ``qwen3.5-ocr``), no region
    restriction and no ``max_tokens`` cap below the largest documented one."""
    return QwenModel(model, 32, 32768, 8192, frozenset(REGIONS), (), True)


def spec_for(model: str) -> QwenModel:
    """The table's entry, else :func:`fallback_model`."""
    return lookup(model) or fallback_model(model)


def regions_listing(spec: QwenModel) -> str:
    """``"cn (Beijing)"`` / ``"intl (Singapore), us (Virginia), cn (Beijing)"`` for messages."""
    return ", ".join(f"{code} ({REGION_NAMES[code]})" for code in REGIONS if code in spec.regions)
