"""LlamaIndex integration (``pip install aisearch-ingest[llama-index]``).

Readers (:class:`~llama_index.core.readers.base.BasePydanticReader`), one per service, usable on their own or as
``SimpleDirectoryReader(file_extractor={".pdf": DocumentAnalyzeReader(...)})``; :class:`AISearchReader` for a
mixed folder (each file to the service its type calls for) and :func:`file_extractor`, its ready mapping; plus
:class:`StructuredNodeParser`::

    from aisearch_ingest.llama_index import DocumentAnalyzeReader

    docs = DocumentAnalyzeReader(mode="page").load_data("report.pdf")

Importing this module does not import LangChain.
"""

from .mixed import AISearchReader, file_extractor
from .node_parser import StructuredNodeParser
from .readers import DocumentAnalyzeReader, ImageAnalyzeReader, QwenOCRReader

__all__ = [
    "AISearchReader",
    "DocumentAnalyzeReader",
    "ImageAnalyzeReader",
    "QwenOCRReader",
    "StructuredNodeParser",
    "file_extractor",
]
