"""LangChain adapter for :class:`~aisearch_ingest.chunking.StructuredChunker`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.documents import BaseDocumentTransformer, Document

from ..chunking import StructuredChunker
from ..documents import Record, chunk_metadata, split_record

__all__ = ["StructuredTextSplitter", "chunk_metadata"]


class StructuredTextSplitter(BaseDocumentTransformer):
    """Split LangChain documents with :class:`~aisearch_ingest.chunking.StructuredChunker`.

    The chunks are built by :func:`aisearch_ingest.documents.split_record`, as the loaders' ``mode="chunk"`` builds
    them: each keeps its parent's metadata plus ``chunk_index``, ``chunk_count``, ``chunk_tokens``, ``headings``
    (``"A > B > C"``), ``chunk_kind`` and, when the parent has a ``page`` (page mode) or a ``page_num`` of 1,
    ``page``/``page_start``/``page_end``. The content type comes from the parent's ``metadata["content_type"]`` (as
    set by this package's loaders), else from ``content_type``. A parent with an ``id`` gives its chunks
    deterministic ids (:func:`aisearch_ingest.documents.chunk_id`: the parent id, the chunker settings, the content
    type and the chunk index). So a loader's ``mode="document"`` followed by this splitter gives the texts and ids of
    the loader's ``mode="chunk"`` with the same settings (``max_tokens=chunk_max_tokens``, ``include_headings``, the
    other arguments at their defaults); only a multi-page file's chunks lack the page span, which the document no
    longer knows. Page-mode documents are chunked per page: other chunks, other ids.

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
            # A parent without an id gets chunks without one (the "" parent id only fills the Record).
            records = split_record(
                Record(doc.id or "", doc.page_content, dict(doc.metadata)), self.chunker, content_type=self.content_type
            )
            out.extend(Document(page_content=r.text, metadata=r.metadata, id=r.id if doc.id else None) for r in records)
        return out

    def transform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        """Same as :meth:`split_documents` (the ``BaseDocumentTransformer`` entry point)."""
        return self.split_documents(documents)
