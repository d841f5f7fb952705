"""Issue 14, page budget and cost: a 10,000-page PDF is refused under ``max_pages`` before anything is sent (clients,
loaders, readers, ``ingest --max-pages``) while the rest of the batch parses, and ``aisearch-ingest estimate`` warns
about it and prices the Qwen-OCR image tokens from the vendor's table (per file and in total, currency and region)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aisearch_ingest import DocumentAnalyzer, InvalidInputError, QwenOCR
from aisearch_ingest.cli import main
from aisearch_ingest.emulator import Emulator
from aisearch_ingest.estimate import estimate_file, limit_warnings
from aisearch_ingest.limits import check_page_budget, count_pages
from aisearch_ingest.prices import QWEN_PRICES, format_money, load_prices, price_for
from aisearch_ingest.sources import load_source
from aisearch_ingest.testing import EMULATOR_API_KEY as KEY
from samples import png

DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"
HUGE = 10_000
BUDGET = 2000
#: US Letter at 150 dpi: 1276 x 1651 px -> smart_resize 1280 x 1664 = 40 x 52 blocks of 32 px, + 2 = 2082 tokens.
TOKENS_PER_PAGE = 2082


@pytest.fixture(scope="module")
def huge_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10,000-page PDF of empty US Letter pages (pypdfium2, nothing drawn: well under a second, ~1 MB)."""
    import pypdfium2 as pdfium

    path = tmp_path_factory.mktemp("huge") / "huge.pdf"
    started = time.perf_counter()
    pdf = pdfium.PdfDocument.new()
    try:
        for _ in range(HUGE):
            pdf.new_page(612, 792).close()
        pdf.save(str(path))
    finally:
        pdf.close()
    assert time.perf_counter() - started < 10
    assert path.stat().st_size < 6 * 1024 * 1024  # fits AI Search's 8 MB body: only the page budget refuses it
    return path


@pytest.fixture
def batch(tmp_path: Path, huge_pdf: Path) -> Path:
    """A folder: the huge PDF, a good PDF and a good PNG."""
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "huge.pdf").write_bytes(huge_pdf.read_bytes())
    (folder / "good.pdf").write_bytes((DATA / "annual_report.pdf").read_bytes())
    (folder / "good.png").write_bytes(png("Budget ok"))
    return folder


def _refused(exc: BaseException | None, path: Path) -> None:
    assert isinstance(exc, InvalidInputError), exc
    assert (exc.limit, exc.value, exc.maximum) == ("max_pages", HUGE, BUDGET)
    assert str(path) in str(exc) and "10,000 pages" in str(exc) and "max_pages=2,000" in str(exc)


# -- counting and the check ----------------------------------------------------------------------------------------


def test_pages_are_counted_from_the_page_tree_quickly(huge_pdf: Path) -> None:
    source = load_source(huge_pdf)
    started = time.perf_counter()
    assert count_pages(source) == HUGE
    assert time.perf_counter() - started < 2.0
    assert count_pages(load_source(png())) == 1
    assert count_pages(load_source(b"# notes", file_name="a.md")) is None  # not counted: no budget applies
    assert count_pages(load_source(b"%PDF-1.7\n" + b"\0" * 64, file_name="broken.pdf")) is None  # the service says
    assert check_page_budget(source, None) is None
    assert check_page_budget(source, HUGE) == HUGE
    with pytest.raises(InvalidInputError) as info:
        check_page_budget(source, BUDGET)
    _refused(info.value, huge_pdf)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_max_pages_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_pages"):
        QwenOCR(api_key="k", base_url="http://127.0.0.1:9", max_pages=bad)
    with pytest.raises(ValueError, match="max_pages"):
        DocumentAnalyzer(api_key="k", endpoint="http://127.0.0.1:9", max_pages=bad)


# -- clients -------------------------------------------------------------------------------------------------------


def test_qwen_ocr_refuses_a_pdf_over_the_budget_before_any_call(emu: Emulator, huge_pdf: Path, batch: Path) -> None:
    emu.reset_stats()
    with QwenOCR(api_key=KEY, base_url=emu.url, max_pages=BUDGET) as ocr:
        with pytest.raises(InvalidInputError) as info:
            ocr.parse(huge_pdf)
        _refused(info.value, huge_pdf)
        assert emu.stats.total_calls == 0
        outcomes = {Path(o.source).name: o for o in ocr.parse_many([batch / "huge.pdf", batch / "good.png"])}
    _refused(outcomes["huge.pdf"].error, batch / "huge.pdf")
    assert outcomes["good.png"].error is None and "Budget" in outcomes["good.png"].result.content  # type: ignore[union-attr]
    assert emu.stats.total_calls == 1  # the PNG's one call; none for the huge PDF


def test_document_analyzer_refuses_a_pdf_over_the_budget_before_any_call(
    emu: Emulator, huge_pdf: Path, batch: Path
) -> None:
    emu.reset_stats()
    with DocumentAnalyzer(api_key=KEY, endpoint=emu.url, max_pages=BUDGET) as analyzer:
        with pytest.raises(InvalidInputError) as info:
            analyzer.parse(huge_pdf)
        _refused(info.value, huge_pdf)
        assert emu.stats.total_calls == 0
        outcomes = {Path(o.source).name: o for o in analyzer.parse_many([batch / "huge.pdf", batch / "good.pdf"])}
    _refused(outcomes["huge.pdf"].error, batch / "huge.pdf")
    assert outcomes["good.pdf"].error is None and outcomes["good.pdf"].result.page_num == 3  # type: ignore[union-attr]
    assert emu.stats.tasks_created == 1  # the good PDF's task only
    # within the budget (or without one) the huge PDF is sent as before
    emu.reset_stats()
    with DocumentAnalyzer(api_key=KEY, endpoint=emu.url, max_pages=HUGE) as analyzer:
        assert analyzer._prepare(huge_pdf).file_type == "pdf"
    assert emu.stats.total_calls == 0


# -- loaders and readers -------------------------------------------------------------------------------------------


def test_loaders_pass_max_pages_to_the_client(emu: Emulator, batch: Path) -> None:
    from aisearch_ingest.langchain import DocumentAnalyzeLoader, QwenOCRLoader

    emu.reset_stats()
    loader = DocumentAnalyzeLoader(
        [batch / "huge.pdf", batch / "good.pdf"], endpoint=emu.url, api_key=KEY, max_pages=BUDGET, on_error="skip"
    )
    try:
        docs = loader.load()
    finally:
        loader.close()
    assert {Path(d.metadata["source"]).name for d in docs} == {"good.pdf"}
    ((source, error),) = loader.failures
    assert Path(source).name == "huge.pdf"
    _refused(error, batch / "huge.pdf")
    assert emu.stats.tasks_created == 1

    emu.reset_stats()
    qwen = QwenOCRLoader([batch / "huge.pdf"], base_url=emu.url, api_key=KEY, max_pages=BUDGET, on_error="skip")
    try:
        assert qwen.load() == []
    finally:
        qwen.close()
    _refused(qwen.failures[0][1], batch / "huge.pdf")
    assert emu.stats.total_calls == 0


def test_readers_mirror_max_pages(emu: Emulator, batch: Path) -> None:
    from aisearch_ingest.llama_index import DocumentAnalyzeReader, QwenOCRReader

    emu.reset_stats()
    reader = DocumentAnalyzeReader(endpoint=emu.url, api_key=KEY, max_pages=BUDGET, on_error="skip")
    try:
        assert reader.client.max_pages == BUDGET  # type: ignore[attr-defined]
        docs = reader.load_data([batch / "huge.pdf", batch / "good.pdf"])
    finally:
        reader.close()
    assert {Path(d.metadata["source"]).name for d in docs} == {"good.pdf"}
    _refused(reader.failures[0][1], batch / "huge.pdf")
    assert emu.stats.tasks_created == 1
    assert reader.to_dict()["max_pages"] == BUDGET
    qwen = QwenOCRReader(base_url=emu.url, api_key=KEY, max_pages=BUDGET)
    try:
        assert qwen.client.max_pages == BUDGET  # type: ignore[attr-defined]
    finally:
        qwen.close()


# -- the CLI -------------------------------------------------------------------------------------------------------


class _Recorded(Emulator):
    """The CLI's embedded emulator, kept so the test can read its counters."""

    last: Emulator | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        type(self).last = self


@pytest.mark.parametrize("service", ["auto", "qwen-ocr"])
def test_ingest_max_pages_refuses_the_huge_pdf_and_writes_the_rest(
    service: str, batch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import aisearch_ingest.emulator

    pytest.importorskip("rapidocr", reason="offline OCR needs the `local` extra")
    monkeypatch.setattr(aisearch_ingest.emulator, "Emulator", _Recorded)
    if service == "qwen-ocr":
        (batch / "good.pdf").unlink()  # one page image to OCR is enough
    out = tmp_path / "out.jsonl"
    argv = ["ingest", str(batch), "--offline", "--out", str(out), "--no-progress", "--max-pages", str(BUDGET)]
    code = main([*argv, "--service", service])
    printed = capsys.readouterr().out
    assert code == 1
    written = {Path(json.loads(line)["metadata"]["source"]).name for line in out.read_text().splitlines()}
    assert written == ({"good.pdf", "good.png"} if service == "auto" else {"good.png"})
    (failure,) = [json.loads(line) for line in (tmp_path / "out.failures.jsonl").read_text().splitlines()]
    assert Path(failure["source"]).name == "huge.pdf" and "max_pages=2,000" in failure["error"]
    assert "huge.pdf" in printed and "10,000 pages" in printed
    emu = _Recorded.last
    assert emu is not None
    routes = emu.stats.calls_by_route
    if service == "auto":
        assert emu.stats.tasks_created == 1  # good.pdf; good.png went to image-analyze /sync
    else:
        assert routes.get("dashscope/generation", 0) == 1 and emu.stats.total_calls == 1


def test_ingest_rejects_a_non_positive_max_pages(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ingest", str(DATA), "--out", str(tmp_path / "x.jsonl"), "--max-pages", "0"])
    assert info.value.code == 2


# -- prices --------------------------------------------------------------------------------------------------------


def test_the_price_table_is_the_vendor_pages() -> None:
    # qwen-ocr.2026-02.en.md l.117/119, l.169/171, l.223/225, l.251/253
    expected = {
        ("qwen-vl-ocr", "intl"): ("0.07", "0.16"),
        ("qwen-vl-ocr-2025-11-20", "intl"): ("0.07", "0.16"),
        ("qwen-vl-ocr", "us"): ("0.043", "0.072"),
        ("qwen-vl-ocr-2025-11-20", "us"): ("0.043", "0.072"),
        ("qwen-vl-ocr", "cn"): ("0.043", "0.072"),
        ("qwen-vl-ocr-latest", "cn"): ("0.043", "0.072"),
        ("qwen-vl-ocr-2025-11-20", "cn"): ("0.043", "0.072"),
        ("qwen-vl-ocr-2025-08-28", "cn"): ("0.717", "0.717"),
        ("qwen-vl-ocr-2025-04-13", "cn"): ("0.717", "0.717"),
        ("qwen-vl-ocr-2024-10-28", "cn"): ("0.717", "0.717"),
    }
    assert {k: (str(p.input), str(p.output)) for k, p in QWEN_PRICES.items()} == expected
    assert all(p.currency == "USD" and p.source.startswith("qwen-ocr.2026-02.en.md l.") for p in QWEN_PRICES.values())
    assert price_for("qwen-vl-ocr-0413", "cn") == QWEN_PRICES[("qwen-vl-ocr-2025-04-13", "cn")]  # aliases
    assert price_for("qwen3.5-ocr", "cn") is None  # no stored page gives its price
    assert price_for("qwen-vl-ocr-latest", "intl") is None  # not offered there
    assert price_for("qwen-vl-ocr", "intl").cost(1_000_000, 1_000_000) == Decimal("0.23")  # type: ignore[union-attr]
    assert format_money(Decimal("1.4574"), "USD") == "1.4574 USD"
    assert format_money(Decimal("0.00045087"), "USD") == "0.000451 USD"
    assert format_money(Decimal(2), "CNY") == "2.00 CNY"


def test_prices_can_be_overridden_from_json(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"qwen3.5-ocr": {"cn": {"input": 0.3, "output": 0.5, "currency": "CNY"}}}))
    table = load_prices(path)
    assert price_for("qwen3.5-ocr", "cn", table).cost(2_000_000) == Decimal("0.6")  # type: ignore[union-attr]
    assert price_for("qwen-vl-ocr", "intl", table) == QWEN_PRICES[("qwen-vl-ocr", "intl")]  # the rest stays
    for bad in ({"m": {"cn": {"input": -1}}}, {"m": {"cn": {"output": 1}}}, {"m": 3}, {"m": {"cn": {"input": "x"}}}):
        with pytest.raises(ValueError):
            load_prices(bad)
    path.write_text("[]")  # JSON, but not a table
    with pytest.raises(ValueError, match="expected"):
        load_prices(path)


# -- estimate ------------------------------------------------------------------------------------------------------


def test_estimate_warns_about_the_huge_pdf_and_prices_it(batch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["estimate", str(batch)])
    out = capsys.readouterr().out
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith(str(batch / "huge.pdf")))
    tokens = HUGE * TOKENS_PER_PAGE  # 20,820,000 image tokens x USD 0.07 / 1M (Singapore) = USD 1.4574
    assert f" {HUGE} " in row and f" {tokens} " in row and row.endswith("1.4574 USD")
    assert "Qwen-OCR cost (intl)" in out
    assert "huge.pdf has 10,000 pages (over 1,000): 10,000 Qwen-OCR calls" in out
    assert "--max-pages" in out and "warnings: 1 file(s)" in out
    good = estimate_file(batch / "good.pdf").image_tokens + estimate_file(batch / "good.png").image_tokens
    total = (Decimal(tokens + good) * Decimal("0.07") / 1_000_000).quantize(Decimal("0.000001"))
    assert f"Qwen-OCR cost: {format_money(total, 'USD')} for {tokens + good} image tokens" in out
    assert "qwen-vl-ocr, intl (Singapore): USD 0.07 in / 0.16 out per 1M tokens" in out
    assert "[qwen-ocr.2026-02.en.md l.117, l.119]" in out
    assert "AI Search cost: not included" in out and "nothing was sent" in out


def test_estimate_with_a_budget_region_and_own_prices(
    huge_pdf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["estimate", str(huge_pdf), "--max-pages", str(BUDGET), "--region", "cn", "--output-tokens-per-page", "100"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "huge.pdf has 10,000 pages, over --max-pages 2,000: ingest refuses it" in out
    # Beijing: 20,820,000 x 0.043 / 1M + 1,000,000 output x 0.072 / 1M = 0.89526 + 0.072
    assert "0.96726 USD" in out and "cn (Beijing)" in out and "1000000 output tokens (100 per call)" in out
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"qwen-vl-ocr": {"cn": {"input": 1, "output": 2, "currency": "CNY"}}}))
    assert main(["estimate", str(huge_pdf), "--region", "cn", "--prices", str(prices)]) == 0
    out = capsys.readouterr().out
    assert "20.82 CNY" in out and str(prices) in out
    assert main(["estimate", str(huge_pdf), "--model", "qwen3.5-ocr", "--region", "cn"]) == 0
    out = capsys.readouterr().out
    assert "no price for qwen3.5-ocr in cn (Beijing)" in out and "--prices" in out
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["estimate", str(huge_pdf), "--prices", str(tmp_path / "bad.json")]) == 2


def test_estimate_warns_about_files_over_the_service_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "limits"
    folder.mkdir()
    big = folder / "big.md"
    big.write_bytes(b"# big\n\n" + b"a" * (7 * 1024 * 1024))  # 7 MiB: over 8 MB once base64-encoded
    (folder / "strip.png").write_bytes(png("x", size=(4200, 20)))  # aspect ratio 210:1
    assert main(["estimate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "warning: AI Search: " in out and "big.md is 7.0 MiB" in out and "8.0 MiB limit" in out
    assert "warning: Qwen-OCR: " in out and "strip.png is 4200x20 px, an aspect ratio of 210:1" in out
    assert "warnings: 2 file(s)" in out
    source = load_source(folder / "strip.png")
    assert limit_warnings(source, None, qwen=False) == []
