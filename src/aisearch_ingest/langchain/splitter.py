"""LangChain adapter for :class:`~aisearch_ingest.chunking.StructuredChunker`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.documents import BaseDocumentTransformer, Document

from ..chunking import Chunk, StructuredChunker, chunk_id

__all__ = ["StructuredTextSplitter", "chunk_metadata"]


def chunk_metadata(chunk: Chunk) -> dict[str, str | int | None]:
    """The flat metadata of one chunk (``chunk_index``, ``chunk_count``, ``chunk_tokens``, ``headings``,
    ``chunk_kind``, and ``page_start``/``page_end`` when known).

    Example:
        >>> from aisearch_ingest.chunking import Chunk
        >>> chunk_metadata(Chunk("x", 1, ("A", "B"), None, None, "text", 0, 1))["headings"]
        'A > B'
    """
    meta: dict[str, str | int | None] = {
        "chunk_index": chunk.index,
        "chunk_count": chunk.count,
        "chunk_tokens": chunk.tokens,
        "headings": chunk.breadcrumb,
        "chunk_kind": chunk.kind,
    }
    if chunk.page_start is not None:
        meta["page_start"] = chunk.page_start
        meta["page_end"] = chunk.page_end
    return meta


class StructuredTextSplitter(BaseDocumentTransformer):
    """Split LangChain documents with :class:`~aisearch_ingest.chunking.StructuredChunker`.

    Each output document keeps its parent's metadata plus ``chunk_index``, ``chunk_count``, ``chunk_tokens``,
    ``headings`` (``"A > B > C"``), ``chunk_kind`` and, when known, ``page_start``/``page_end`` (from the parent's
    ``page`` metadata). The content type comes from the parent's ``metadata["content_type"]`` (as set by this
    package's loaders), else from ``content_type``. A parent with an ``id`` gives its chunks deterministic ids:
    ``uuid5`` of the parent id, the splitter settings and the chunk index (the same scheme as
    :class:`~aisearch_ingest.llama_index.node_parser.StructuredNodeParser`).

    Args:
        max_tokens: token budget per chunk (exact, tiktoken).
        overlap_tokens: tokens of whole blocks repeated between consecutive chunks of one section.
        encoding_name: tiktoken encoding (``cl100k_base`` works offline).
        length_function: count tokens with this instead.
        include_headings: prefix each chunk's text with its breadcrumb.
        min_tokens: see :class:`~aisearch_ingest.chunking.StructuredChunker`.
        content_type: the default content type (``markdown``, ``html``, ``latex``, ``plain``, ``json``).

    Example:
        >>> from langchain_core.documents import Document
        >>> splitter = StructuredTextSplitter(max_tokens=64)
        >>> docs = splitter.split_documents([Document(page_content="# A\\n\\nSome text.")])
        >>> docs[0].metadata["headings"]
        'A'
    """

    def __init__(
        self,
        max_tokens: int = 512,
        *,
        overlap_tokens: int = 0,
        encoding_name: str = "cl100k_base",
        length_function: Callable[[str], int] | None = None,
        include_headings: bool = False,
        min_tokens: int = 32,
        content_type: str = "markdown",
    ) -> None:
        self.content_type = content_type
        self.chunker = StructuredChunker(
            max_tokens,
            overlap_tokens=overlap_tokens,
            encoding_name=encoding_name,
            length_function=length_function,
            include_headings=include_headings,
            min_tokens=min_tokens,
        )

    def __repr__(self) -> str:
        return f"StructuredTextSplitter(chunker={self.chunker!r}, content_type={self.content_type!r})"

    def _settings(self, content_type: str) -> str:
        """What decides the chunks besides the text: part of every chunk id."""
        return f"{self.chunker.settings_key()}, content_type={content_type}"

    def split_text(self, text: str) -> list[str]:
        """Split one text (of the default content type) into chunk texts."""
        return [c.text for c in self.chunker.chunk_text(text, self.content_type)]

    def create_documents(
        self, texts: Iterable[str], metadatas: Iterable[dict[str, Any]] | None = None
    ) -> list[Document]:
        """Documents from raw texts (and optional per-text metadata), split."""
        metas = list(metadatas) if metadatas is not None else None
        docs = [Document(page_content=t, metadata=dict(metas[i]) if metas else {}) for i, t in enumerate(texts)]
        return self.split_documents(docs)

    def split_documents(self, documents: Iterable[Document]) -> list[Document]:
        """Split documents; see the class docstring for the metadata."""
        out: list[Document] = []
        for doc in documents:
            meta = dict(doc.metadata)
            content_type = str(meta.get("content_type") or self.content_type)
            page = meta.get("page")
            if isinstance(page, int) and not isinstance(page, bool):
                chunks = self.chunker.chunk_pages([(page, doc.page_content)], content_type)
            else:
                chunks = self.chunker.chunk_text(doc.page_content, content_type)
            settings = self._settings(content_type) if doc.id else ""
            for chunk in chunks:
                child = dict(meta)
                child.update(chunk_metadata(chunk))
                doc_id = chunk_id(doc.id, settings, chunk.index) if doc.id else None
                out.append(Document(page_content=chunk.text, metadata=child, id=doc_id))
        return out

    def transform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        """Same as :meth:`split_documents` (the ``BaseDocumentTransformer`` entry point)."""
        return self.split_documents(documents)
