"""aisearch-ingest: vector-ready documents from Alibaba Cloud AI Search document-analyze, image-analyze and Qwen-OCR.

The core imports no framework; LangChain classes live in :mod:`aisearch_ingest.langchain`, LlamaIndex classes in
:mod:`aisearch_ingest.llama_index`, the local emulator in :mod:`aisearch_ingest.emulator`.
"""

from ._version import __version__
from .aisearch import DocumentAnalyzer, ImageAnalyzer, PollPolicy
from .cache import ResultCache
from .chunking import Chunk, StructuredChunker, get_encoding
from .errors import (
    AISearchIngestError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContentInspectionError,
    InvalidInputError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StreamError,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    UnexpectedError,
)
from .estimate import FileEstimate, estimate_file, estimate_image_tokens
from .qwen import QwenOCR
from .ratelimit import RateLimiter
from .results import Outcome, Page, ParseResult
from .sources import Source, load_source
from .transport import RetryPolicy

__all__ = [
    "AISearchIngestError",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "Chunk",
    "ConfigurationError",
    "ContentInspectionError",
    "DocumentAnalyzer",
    "FileEstimate",
    "ImageAnalyzer",
    "InvalidInputError",
    "NotFoundError",
    "Outcome",
    "Page",
    "ParseResult",
    "PollPolicy",
    "QwenOCR",
    "RateLimitError",
    "RateLimiter",
    "ResultCache",
    "RetryPolicy",
    "ServerError",
    "Source",
    "StreamError",
    "StructuredChunker",
    "TaskError",
    "TaskFailedError",
    "TaskTimeoutError",
    "UnexpectedError",
    "__version__",
    "estimate_file",
    "estimate_image_tokens",
    "get_encoding",
    "load_source",
]
