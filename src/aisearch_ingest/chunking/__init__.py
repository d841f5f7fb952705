"""Structure-aware chunking with an exact token budget (no framework import).

::

    from aisearch_ingest.chunking import StructuredChunker

    chunks = StructuredChunker(max_tokens=512).chunk_text(markdown, "markdown")
    for c in chunks:
        print(c.index, c.tokens, c.breadcrumb, c.kind)

See :class:`StructuredChunker` for the rules, :func:`get_encoding` for the offline tokenizer.
"""

from .chunker import CONTENT_TYPES, StructuredChunker
from .model import KINDS, Chunk
from .tokens import get_encoding

__all__ = ["CONTENT_TYPES", "KINDS", "Chunk", "StructuredChunker", "get_encoding"]
