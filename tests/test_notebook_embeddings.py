"""``notebooks/minilm``, the notebooks' embedding model: all-MiniLM-L6-v2 on onnxruntime, offline, without PyTorch.

Its vectors are checked against ``fixtures/minilm_reference.json``: the fp32 model's vectors for the same texts, as
sentence-transformers computed them (``normalize_embeddings=True``) before this project dropped it. The int8 weights
move a vector by a cosine of about 0.001; a wrong tokenizer (case, accents, truncation), pooling or input would move
it by far more.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "minilm_reference.json").read_text(encoding="utf-8"))

sys.path.insert(0, str(NOTEBOOK_DIR))
import minilm  # noqa: E402


@pytest.fixture(scope="module")
def model() -> minilm.MiniLM:
    return minilm.MiniLM()


def test_vectors_match_the_fp32_model(model: minilm.MiniLM) -> None:
    vectors = model.embed(REFERENCE["texts"])
    reference = np.array(REFERENCE["vectors"], dtype=np.float32)
    assert vectors.shape == reference.shape == (len(REFERENCE["texts"]), minilm.DIMENSION)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.99, cosines
    # and each text is nearest to its own reference vector, not merely close to all of them
    assert list((vectors @ reference.T).argmax(axis=1)) == list(range(len(reference)))


def test_a_vector_does_not_depend_on_its_batch(model: minilm.MiniLM) -> None:
    short, long = "Q3 revenue", "Revenue for the full year 2024 reached EUR 195.9 million. " * 10
    alone = model.embed([short])[0]
    assert np.array_equal(model.embed([long, short, long])[1], alone)
    assert model.embed([]).shape == (0, minilm.DIMENSION)


def test_texts_past_the_token_limit_are_cut(model: minilm.MiniLM) -> None:
    head = "The quarterly table lists revenue, gross margin and sensors shipped. " * 30  # > 256 word pieces
    assert np.array_equal(model.embed([head])[0], model.embed([head + "Trondheim is the R&D centre."])[0])


def test_langchain_store_finds_the_right_text(model: minilm.MiniLM) -> None:
    embeddings = minilm.MiniLMEmbeddings(model)
    assert embeddings.embed_query(REFERENCE["texts"][0]) == pytest.approx(model.embed(REFERENCE["texts"][:1])[0])
    store = InMemoryVectorStore(embedding=embeddings)
    store.add_documents([Document(page_content=t, metadata={"i": i}) for i, t in enumerate(REFERENCE["texts"][1:4])])
    assert store.similarity_search("How do I reset my password?", k=1)[0].metadata["i"] == 1
    assert store.similarity_search("What was the revenue in the third quarter?", k=1)[0].metadata["i"] == 0


def test_llama_index_retriever_finds_the_right_text(model: minilm.MiniLM) -> None:
    embed_model = minilm.MiniLMEmbedding(model)
    assert embed_model.model_name == minilm.MODEL_NAME
    nodes = [TextNode(text=t, id_=str(i)) for i, t in enumerate(REFERENCE["texts"][1:4])]
    index = VectorStoreIndex(nodes, embed_model=embed_model)
    hits = index.as_retriever(similarity_top_k=1).retrieve("How do I reset my password?")
    assert [hit.node.node_id for hit in hits] == ["1"]


def test_runs_without_torch_or_the_network() -> None:
    """In a fresh interpreter with every socket refused: loading and embedding import no PyTorch and connect nowhere."""
    script = f"""
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network access from the embedding model")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
sys.path.insert(0, {str(NOTEBOOK_DIR)!r})
import minilm

vector = minilm.MiniLMEmbeddings().embed_query("What was Q3 revenue?")
assert len(vector) == 384
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "transformers", "sentence_transformers"}})
assert not heavy, heavy
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
