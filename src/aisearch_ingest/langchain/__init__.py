"""LangChain integration (``pip install aisearch-ingest[langchain]``).

Loaders (:class:`~langchain_core.document_loaders.BaseLoader`) and blob parsers for ``GenericLoader``, one pair per
service and one pair for a mixed folder (:class:`AISearchLoader`, :class:`AISearchParser`: each file to the service
its type calls for), plus :class:`StructuredTextSplitter` and :func:`index_key` for ``langchain_core.indexing.index``::

    from aisearch_ingest.langchain import DocumentAnalyzeLoader

    docs = DocumentAnalyzeLoader("reports/", glob="**/*.pdf", mode="page").load()

Importing this module does not import LlamaIndex.
"""

from .loaders import (
    DocumentAnalyzeLoader,
    DocumentAnalyzeParser,
    ImageAnalyzeLoader,
    ImageAnalyzeParser,
    QwenOCRLoader,
    QwenOCRParser,
    index_key,
)
from .mixed import AISearchLoader, AISearchParser
from .splitter import StructuredTextSplitter

__all__ = [
    "AISearchLoader",
    "AISearchParser",
    "DocumentAnalyzeLoader",
    "DocumentAnalyzeParser",
    "ImageAnalyzeLoader",
    "ImageAnalyzeParser",
    "QwenOCRLoader",
    "QwenOCRParser",
    "StructuredTextSplitter",
    "index_key",
]
