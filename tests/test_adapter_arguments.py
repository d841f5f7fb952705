"""Adapter arguments that cannot drift from the clients': every constructor argument of ``DocumentAnalyzer``,
``ImageAnalyzer`` and ``QwenOCR`` is accepted by the matching LangChain loader and parser (passed through) and is a
field of the matching LlamaIndex reader with the same default (but the few of ``NOT_FIELDS``); unknown names are
errors naming the nearest valid one. No network: clients are built, never used."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from aisearch_ingest import DocumentAnalyzer, ImageAnalyzer, QwenOCR
from aisearch_ingest._adapters import client_parameters
from aisearch_ingest.engine import ParserEngine
from aisearch_ingest.langchain import (
    DocumentAnalyzeLoader,
    DocumentAnalyzeParser,
    ImageAnalyzeLoader,
    ImageAnalyzeParser,
    QwenOCRLoader,
    QwenOCRParser,
)
from aisearch_ingest.llama_index import DocumentAnalyzeReader, ImageAnalyzeReader, QwenOCRReader
from aisearch_ingest.llama_index.readers import NOT_FIELDS

NOWHERE = "http://127.0.0.1:9"  # nothing is sent: the clients are only built
AISEARCH = {"api_key": "k", "endpoint": NOWHERE}
QWEN = {"api_key": "k", "base_url": NOWHERE}

#: client class, its LangChain loader and parser, its LlamaIndex reader, what it needs to be built offline.
SERVICES = [
    (DocumentAnalyzer, DocumentAnalyzeLoader, DocumentAnalyzeParser, DocumentAnalyzeReader, AISEARCH),
    (ImageAnalyzer, ImageAnalyzeLoader, ImageAnalyzeParser, ImageAnalyzeReader, AISEARCH),
    (QwenOCR, QwenOCRLoader, QwenOCRParser, QwenOCRReader, QWEN),
]
IDS = ["document-analyze", "image-analyze", "qwen-ocr"]


def _misspelt(name: str, valid: set[str]) -> str:
    """``name`` less its last letter (``max_page``), or with one more when that is a name too (``model``: ``mode``)."""
    short = name[:-1]
    return short if len(name) > 4 and short not in valid else name + "x"


def test_client_parameters_follow_kwargs_to_the_base_class() -> None:
    # DocumentAnalyzer takes three arguments of its own and passes the rest to the AI Search base.
    params = client_parameters(DocumentAnalyzer)
    assert {"image_storage", "enable_semantic", "max_pages"} <= params.keys()
    assert {"api_key", "endpoint", "route", "timeout", "request_timeout", "poll", "cache"} <= params.keys()
    assert params["request_timeout"].default == 60.0
    assert "kwargs" not in params
    assert {"temperature", "incremental_output", "request_timeout"} <= client_parameters(QwenOCR).keys()


@pytest.mark.parametrize(("client_class", "loader", "parser", "reader", "where"), SERVICES, ids=IDS)
def test_loaders_and_parsers_accept_every_client_argument(
    client_class: type[ParserEngine], loader: Any, parser: Any, reader: Any, where: dict[str, str]
) -> None:
    params = client_parameters(client_class)
    for adapter in (loader, parser):
        signature = inspect.signature(adapter.__init__).parameters
        assert any(p.kind is p.VAR_KEYWORD for p in signature.values()), adapter  # the pass-through
        for name in params.keys() & signature.keys():  # an explicit argument shadowing a client's: same default
            assert signature[name].default == params[name].default, (adapter, name)
        # Every argument at its default, as a caller may pass it, builds the client.
        defaults = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
        built = adapter("x", **{**defaults, **where}) if adapter is loader else adapter(**{**defaults, **where})
        try:
            assert type(built.client) is client_class
        finally:
            built.close()


@pytest.mark.parametrize(("client_class", "loader", "parser", "reader", "where"), SERVICES, ids=IDS)
def test_unknown_keywords_are_errors_naming_the_nearest(
    client_class: type[ParserEngine], loader: Any, parser: Any, reader: Any, where: dict[str, str]
) -> None:
    names = [*client_parameters(client_class), "chunk_max_tokens", "include_headings", "html_to_markdown", "mode"]
    names.append("on_error")
    valid = {*names, *reader.model_fields}
    for name in names:
        bad = _misspelt(name, valid)
        with pytest.raises(TypeError, match=rf"unknown keyword argument '{bad}'; did you mean '{name}'\?"):
            loader("x", **where, **{bad: None})
        with pytest.raises(TypeError, match=rf"'{bad}'; did you mean '{name}'\?"):
            parser(**where, **{bad: None})
        if name not in NOT_FIELDS:
            with pytest.raises(TypeError, match=rf"unknown field '{bad}'; did you mean '{name}'\?"):
                reader(**where, **{bad: None})
    with pytest.raises(TypeError, match="valid: "):
        reader(**where, zzzzzz=1)
    for name in NOT_FIELDS & client_parameters(client_class).keys():
        with pytest.raises(TypeError, match=rf"no field '{name}'.*client="):
            reader(**where, **{name: None})


@pytest.mark.parametrize(("client_class", "loader", "parser", "reader", "where"), SERVICES, ids=IDS)
def test_readers_have_a_field_per_client_argument_with_its_default(
    client_class: type[ParserEngine], loader: Any, parser: Any, reader: Any, where: dict[str, str]
) -> None:
    params = client_parameters(client_class)
    fields = reader.model_fields
    assert NOT_FIELDS & params.keys(), "NOT_FIELDS names no argument of this client"
    assert not NOT_FIELDS & fields.keys()
    missing = [n for n in params if n not in fields and n not in NOT_FIELDS]
    assert not missing, f"{reader.__name__} lacks fields for {client_class.__name__} arguments {missing}"
    for name in params.keys() - NOT_FIELDS:
        assert fields[name].default == params[name].default, (reader.__name__, name)
    # ...and the client is built from every one of them, in the client's order.
    assert reader.client_fields() == [n for n in params if n not in NOT_FIELDS]


def test_every_service_names_only_real_arguments_in_not_fields() -> None:
    everything = set().union(*(client_parameters(c) for c, *_ in SERVICES))
    assert everything >= NOT_FIELDS


def test_the_drifted_fields_now_reach_the_client() -> None:
    qwen = QwenOCRReader(**QWEN, temperature=0.3, incremental_output=False, stream=True, request_timeout=7.0)
    assert qwen.client.request.temperature == 0.3  # type: ignore[attr-defined]
    assert qwen.client.incremental_output is False and qwen.client.stream is True  # type: ignore[attr-defined]
    rebuilt = QwenOCRReader.from_dict(qwen.to_dict())
    assert (rebuilt.temperature, rebuilt.incremental_output, rebuilt.request_timeout) == (0.3, False, 7.0)
    doc = DocumentAnalyzeReader(**AISEARCH, route="sync", max_pages=4, image_storage="url", request_timeout=5.0)
    assert doc.client.route == "sync" and doc.client.max_pages == 4  # type: ignore[attr-defined]
    assert doc.client.image_storage == "url"  # type: ignore[attr-defined]
    # A custom prompt with no task, as QwenOCR takes it: None is passed on, not replaced by the default task.
    custom = QwenOCRReader(**QWEN, task=None, prompt="Read the stamp.")
    assert custom.client.ocr_task == "custom"  # type: ignore[attr-defined]
    for reader in (qwen, doc, custom):
        reader.close()


@pytest.mark.parametrize(("client_class", "loader", "parser", "reader", "where"), SERVICES, ids=IDS)
def test_client_keywords_next_to_a_client_are_refused(
    client_class: type[ParserEngine], loader: Any, parser: Any, reader: Any, where: dict[str, str]
) -> None:
    with client_class(**where) as client:  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="client= and client keywords"):
            loader("x", client=client, max_retries=1)
        with pytest.raises(TypeError, match="client= and client keywords"):
            parser(client=client, qps=1)
        with pytest.raises(TypeError, match="client= and client fields"):
            reader(client=client, max_retries=1)
        assert reader(client=client, mode="page").client is client  # adapter settings are fine
