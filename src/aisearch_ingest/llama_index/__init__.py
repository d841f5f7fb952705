"""LlamaIndex integration (``pip install aisearch-ingest[llama-index]``).

Readers (:class:`~llama_index.core.readers.base.BasePydanticReader`), one per service, usable on their own or as
``SimpleDirectoryReader(file_extractor={".pdf": DocumentAnalyzeReader(...)})``, plus :class:`StructuredNodeParser`::

    from aisearch_ingest.llama_index import DocumentAnalyzeReader

    docs = DocumentAnalyzeReader(mode="page").load_data("report.pdf")

Importing this module does not import LangChain.
"""

from .node_parser import StructuredNodeParser
from .readers import DocumentAnalyzeReader, ImageAnalyzeReader, QwenOCRReader

__all__ = ["DocumentAnalyzeReader", "ImageAnalyzeReader", "QwenOCRReader", "StructuredNodeParser"]
