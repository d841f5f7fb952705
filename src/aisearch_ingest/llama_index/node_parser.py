"""LlamaIndex adapter for :class:`~aisearch_ingest.chunking.StructuredChunker`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.node_parser.interface import NodeParser
from llama_index.core.node_parser.node_utils import build_nodes_from_splits, default_id_func
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.utils import get_tqdm_iterable

from ..chunking import StructuredChunker
from ..documents import Record, embed_hidden_keys, llm_hidden_keys, split_record

__all__ = ["StructuredNodeParser"]


class StructuredNodeParser(NodeParser):
    """Split LlamaIndex documents/nodes with :class:`~aisearch_ingest.chunking.StructuredChunker`.

    Every field is a plain value, so ``IngestionPipeline``'s cache key (built from ``to_dict()``) is stable. The
    chunks are built by :func:`aisearch_ingest.documents.split_record`, as the readers' ``mode="chunk"`` and
    :class:`~aisearch_ingest.langchain.StructuredTextSplitter` build them. Output ``TextNode``s keep the parent's
    metadata and relationships (``SOURCE`` = parent, ``PREVIOUS``/``NEXT``) and add ``chunk_index``, ``chunk_count``,
    ``chunk_tokens``, ``headings`` (``"A > B > C"``), ``chunk_kind`` and, when the parent has a ``page`` or a
    ``page_num`` of 1, ``page``/``page_start``/``page_end``. The content type is the parent's
    ``metadata["content_type"]`` (set by this package's readers), else ``content_type``. The token budget applies to
    the node text; LlamaIndex may prepend metadata when embedding, less the parent's excluded keys and
    :func:`~aisearch_ingest.documents.embed_hidden_keys` (the readers' own list: paths, counters, page span, ids,
    ``usage_*``).

    Node ids are deterministic (:func:`aisearch_ingest.documents.chunk_id`: the parent's id, the parser settings,
    the content type and the chunk index), so re-running over the same documents (this package's readers give them
    stable ids) upserts the same nodes, and a reader's ``mode="document"`` followed by this parser gives the ids of
    its ``mode="chunk"`` for the same settings (see the splitter for the one difference: a multi-page file's page
    span). A custom ``id_func`` is used instead when given.

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
            parent = Record(node.node_id, text, dict(node.metadata))
            records = split_record(parent, self._chunker, content_type=self.content_type)
            id_func = self.id_func
            if id_func is default_id_func or id_func is None:

                def id_func(i: int, _doc: BaseNode, records: list[Record] = records) -> str:
                    return records[i].id

            children = build_nodes_from_splits([r.text for r in records], node, id_func=id_func)
            for child, record in zip(children, records, strict=True):
                own = record.metadata
                if not self.include_metadata:  # only what the chunk adds (LlamaIndex copies the rest, if asked)
                    own = {k: v for k, v in own.items() if k not in parent.metadata}
                child.metadata.update(own)
                # New lists: the parent's lists may be shared with it and its other children.
                child.excluded_embed_metadata_keys = _with(
                    child.excluded_embed_metadata_keys, embed_hidden_keys(record.metadata)
                )
                child.excluded_llm_metadata_keys = _with(
                    child.excluded_llm_metadata_keys, llm_hidden_keys(record.metadata)
                )
            out.extend(children)
        return out


def _with(keys: list[str], more: list[str]) -> list[str]:
    return [*keys, *(k for k in more if k not in keys)]
