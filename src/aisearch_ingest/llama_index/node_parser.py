"""LlamaIndex adapter for :class:`~aisearch_ingest.chunking.StructuredChunker`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.node_parser.interface import NodeParser
from llama_index.core.node_parser.node_utils import build_nodes_from_splits, default_id_func
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.utils import get_tqdm_iterable

from ..chunking import StructuredChunker, chunk_id

__all__ = ["StructuredNodeParser"]

# Position and size keys: useful to filter on, noise for the embedding and the LLM.
_QUIET_KEYS = ("chunk_index", "chunk_count", "chunk_tokens", "chunk_kind", "page_start", "page_end")


class StructuredNodeParser(NodeParser):
    """Split LlamaIndex documents/nodes with :class:`~aisearch_ingest.chunking.StructuredChunker`.

    Every field is a plain value, so ``IngestionPipeline``'s cache key (built from ``to_dict()``) is stable. Output
    ``TextNode``s keep the parent's metadata and relationships (``SOURCE`` = parent, ``PREVIOUS``/``NEXT``) and add
    ``chunk_index``, ``chunk_count``, ``chunk_tokens``, ``headings`` (``"A > B > C"``), ``chunk_kind`` and, when the
    parent has a ``page``, ``page_start``/``page_end``. The content type is the parent's ``metadata["content_type"]``
    (set by this package's readers), else ``content_type``. The token budget applies to the node text; LlamaIndex may
    prepend metadata when embedding (``chunk_*`` and page keys are excluded from that).

    Node ids are deterministic: ``uuid5`` of the parent's id, the parser settings and the chunk index (the scheme of
    :class:`~aisearch_ingest.langchain.StructuredTextSplitter`), so re-running over the same documents (this package's
    readers give them stable ids) upserts the same nodes. A custom ``id_func`` is used instead when given.

    Example:
        >>> from llama_index.core import Document
        >>> parser = StructuredNodeParser(max_tokens=64)
        >>> nodes = parser.get_nodes_from_documents([Document(text="# A\\n\\nSome text.")])
        >>> nodes[0].metadata["headings"]
        'A'
    """

    max_tokens: int = Field(default=512, gt=0, description="Token budget per chunk (exact, tiktoken).")
    overlap_tokens: int = Field(default=0, ge=0, description="Tokens of whole blocks repeated between chunks.")
    encoding_name: str = Field(default="cl100k_base", description="tiktoken encoding (cl100k_base works offline).")
    include_headings: bool = Field(default=False, description="Prefix each chunk's text with its breadcrumb.")
    min_tokens: int = Field(default=32, ge=0, description="A heading starts a new chunk past this many tokens.")
    content_type: str = Field(default="markdown", description="Default content type: markdown, html, latex, plain.")

    _chunker: StructuredChunker = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        self._chunker = StructuredChunker(
            self.max_tokens,
            overlap_tokens=self.overlap_tokens,
            encoding_name=self.encoding_name,
            include_headings=self.include_headings,
            min_tokens=self.min_tokens,
        )

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this parser under."""
        return "StructuredNodeParser"

    def _parse_nodes(self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any) -> list[BaseNode]:
        out: list[BaseNode] = []
        for node in get_tqdm_iterable(nodes, show_progress, "Chunking"):
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            content_type = str(node.metadata.get("content_type") or self.content_type)
            page = node.metadata.get("page")
            if isinstance(page, int) and not isinstance(page, bool):
                chunks = self._chunker.chunk_pages([(page, text)], content_type)
            else:
                chunks = self._chunker.chunk_text(text, content_type)
            id_func = self.id_func
            if id_func is default_id_func or id_func is None:
                settings = f"{self._chunker.settings_key()}, content_type={content_type}"
                parent_id = node.node_id

                def id_func(i: int, _doc: BaseNode, parent_id: str = parent_id, settings: str = settings) -> str:
                    return chunk_id(parent_id, settings, i)

            children = build_nodes_from_splits([c.text for c in chunks], node, id_func=id_func)
            for child, chunk in zip(children, chunks, strict=False):
                child.metadata.update(
                    {
                        "chunk_index": chunk.index,
                        "chunk_count": chunk.count,
                        "chunk_tokens": chunk.tokens,
                        "headings": chunk.breadcrumb,
                        "chunk_kind": chunk.kind,
                    }
                )
                if chunk.page_start is not None:
                    child.metadata["page_start"] = chunk.page_start
                    child.metadata["page_end"] = chunk.page_end
                # New lists: the parent's lists may be shared with it and its other children.
                child.excluded_embed_metadata_keys = _with_quiet(child.excluded_embed_metadata_keys)
                child.excluded_llm_metadata_keys = _with_quiet(child.excluded_llm_metadata_keys)
            out.extend(children)
        return out


def _with_quiet(keys: list[str]) -> list[str]:
    return [*keys, *(k for k in _QUIET_KEYS if k not in keys)]
