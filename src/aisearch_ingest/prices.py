"""Qwen-OCR prices per 1M tokens, per model and region, as the vendor's model tables list them -- the one place they
live -- and the money an estimate comes to.

Source: ``api-docs/qwen-ocr.2026-02.en.md`` (the English guide of Feb 04, 2026, § Supported models; digested in
``CHANGES-2026.md`` §A "Prices per 1M tokens"). The stored copy flattens the tables' merged cells: a row without
price cells (a snapshot, ``-latest``) shares the price of the row above it.

* International (Singapore), l.117 ``$0.07`` (input) and l.119 ``$0.16`` (output): ``qwen-vl-ocr`` and
  ``qwen-vl-ocr-2025-11-20``.
* Global (Virginia), l.169 ``$0.043`` and l.171 ``$0.072``: ``qwen-vl-ocr`` and ``qwen-vl-ocr-2025-11-20``.
* Chinese Mainland (Beijing), l.223 ``$0.043`` and l.225 ``$0.072``: ``qwen-vl-ocr``, ``qwen-vl-ocr-latest`` and
  ``qwen-vl-ocr-2025-11-20``; l.251 ``$0.717`` and l.253 ``$0.717``: ``qwen-vl-ocr-2025-08-28``, ``-2025-04-13``,
  ``-2024-10-28``.

Left out, because no stored page gives them: ``qwen3.5-ocr`` (the ZH guide ``qwen-ocr.2026.zh.md`` has no price
table); the CNY prices of the Chinese site (only mentioned in ``CHANGES-2026.md`` §A, no page copy); free quotas and
the half-price Batch API; and every AI Search price (``opensearch-multimodal-overview.md`` § Price Reference gives
figures such as "0.002 /tokens" with neither a currency nor a token unit, and nothing for document-analyze).

Override them with a JSON file (``aisearch-ingest estimate --prices FILE.json``) or ``prices=`` of
:func:`price_for`, shaped ``{"<model>": {"<region>": {"input": 0.07, "output": 0.16, "currency": "USD"}}}``
(per 1M tokens; ``currency`` defaults to USD). Its entries replace the table's for those models and regions and add
new ones; the rest of the table stays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from .protocol.qwen_models import REGION_NAMES, lookup

__all__ = ["QWEN_PRICES", "Price", "PriceTable", "format_money", "load_prices", "price_for"]

_PAGE = "qwen-ocr.2026-02.en.md"
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Price:
    """The price of one Qwen-OCR model in one region.

    Attributes:
        model: the model name.
        region: the region code (``intl``, ``us``, ``cn``).
        input: price per 1M input tokens (image tokens are input tokens).
        output: price per 1M output tokens.
        currency: ``USD`` for the vendor's table.
        source: where the figure comes from (page and line, or the override file).
    """

    model: str
    region: str
    input: Decimal
    output: Decimal
    currency: str = "USD"
    source: str = ""

    def cost(self, input_tokens: int, output_tokens: int = 0) -> Decimal:
        """``input_tokens × input / 1M + output_tokens × output / 1M``, exact.

        Example:
            >>> price_for("qwen-vl-ocr", "intl").cost(20_820_000)
            Decimal('1.4574')
        """
        return (Decimal(input_tokens) * self.input + Decimal(output_tokens) * self.output) / _MILLION

    def describe(self) -> str:
        """``"qwen-vl-ocr, intl (Singapore): USD 0.07 in / 0.16 out per 1M tokens"``."""
        where = f"{self.region} ({REGION_NAMES[self.region]})" if self.region in REGION_NAMES else self.region
        return f"{self.model}, {where}: {self.currency} {self.input} in / {self.output} out per 1M tokens"


PriceTable = Mapping[tuple[str, str], Price]


def _table(*rows: tuple[tuple[str, ...], str, str, str, int, int]) -> PriceTable:
    table: dict[tuple[str, str], Price] = {}
    for models, region, price_in, price_out, line_in, line_out in rows:
        source = f"{_PAGE} l.{line_in}, l.{line_out}"
        for model in models:
            table[(model, region)] = Price(model, region, Decimal(price_in), Decimal(price_out), "USD", source)
    return MappingProxyType(table)


_CURRENT = ("qwen-vl-ocr", "qwen-vl-ocr-2025-11-20")
_OLD = ("qwen-vl-ocr-2025-08-28", "qwen-vl-ocr-2025-04-13", "qwen-vl-ocr-2024-10-28")

#: (model, region) → :class:`Price`, from the Feb 2026 English model tables (lines quoted in the module docstring).
QWEN_PRICES: PriceTable = _table(
    (_CURRENT, "intl", "0.07", "0.16", 117, 119),  # "$0.07" / "$0.16" (International, Singapore)
    (_CURRENT, "us", "0.043", "0.072", 169, 171),  # "$0.043" / "$0.072" (Global, Virginia)
    ((*_CURRENT, "qwen-vl-ocr-latest"), "cn", "0.043", "0.072", 223, 225),  # "$0.043" / "$0.072" (Beijing)
    (_OLD, "cn", "0.717", "0.717", 251, 253),  # "$0.717" / "$0.717" (Beijing, 2025-08-28 and older)
)


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where}: a price is a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{where}: a price is a number, got {value!r}") from exc
    if not number.is_finite() or number < 0:
        raise ValueError(f"{where}: a price is a finite number >= 0, got {value!r}")
    return number


def load_prices(
    data: str | os.PathLike[str] | Mapping[str, Any], *, base: PriceTable | None = QWEN_PRICES
) -> PriceTable:
    """The price table with a user's prices laid over it.

    Args:
        data: a JSON file's path, or its content as a mapping: ``{"<model>": {"<region>": {"input": <per 1M>,
            "output": <per 1M>, "currency": "USD"}}}``.
        base: the table to start from (the vendor's by default; None: only the user's prices).

    Raises:
        ValueError: the file is not such JSON, or a price is not a number >= 0.
        OSError: the file cannot be read.

    Example:
        >>> table = load_prices({"qwen3.5-ocr": {"cn": {"input": 0.3, "output": 0.5, "currency": "CNY"}}})
        >>> price_for("qwen3.5-ocr", "cn", table).cost(1_000_000), price_for("qwen-vl-ocr", "intl", table).input
        (Decimal('0.3'), Decimal('0.07'))
    """
    where = "prices"
    if not isinstance(data, Mapping):
        where = os.fspath(data)
        with open(data, encoding="utf-8") as file:
            try:
                data = json.load(file)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(data, Mapping):
        raise ValueError(f'{where}: expected {{"<model>": {{"<region>": {{"input": .., "output": ..}}}}}}')
    table = dict(base or {})
    for model, regions in data.items():
        if not isinstance(regions, Mapping):
            raise ValueError(f"{where}: {model!r} should map region codes to prices")
        for region, entry in regions.items():
            at = f"{where}: {model}/{region}"
            if not isinstance(entry, Mapping) or "input" not in entry:
                raise ValueError(f'{at}: expected {{"input": <per 1M tokens>, "output": .., "currency": ..}}')
            currency = entry.get("currency", "USD")
            if not isinstance(currency, str) or not currency.strip():
                raise ValueError(f"{at}: currency must be a text such as 'USD'")
            spec = lookup(str(model))
            name = spec.name if spec is not None else str(model)
            table[(name, str(region))] = Price(
                name,
                str(region),
                _decimal(entry["input"], at),
                _decimal(entry.get("output", 0), at),
                currency.strip(),
                where,
            )
    return MappingProxyType(table)


def price_for(model: str, region: str, prices: PriceTable | None = None) -> Price | None:
    """The price of ``model`` (a name or alias) in ``region``, or None when the table has none (a model not offered
    there, or one whose price no stored page gives: ``qwen3.5-ocr``).

    Example:
        >>> price_for("qwen-vl-ocr-1120", "us").input, price_for("qwen3.5-ocr", "cn")
        (Decimal('0.043'), None)
    """
    table = QWEN_PRICES if prices is None else prices
    spec = lookup(model)
    name = spec.name if spec is not None else model
    return table.get((name, region))


def format_money(amount: Decimal, currency: str) -> str:
    """An amount rounded to a millionth, trailing zeros dropped down to cents: ``"1.4574 USD"``, ``"0.000451 USD"``."""
    rounded = amount.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    text = f"{rounded:f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.ljust(2, '0')} {currency}"
