"""Every input kind normalised to a :class:`Source`, its type sniffed from the bytes, validated before sending.

Inputs: a path (``str`` or ``os.PathLike``), raw ``bytes`` (with ``file_name=``), an ``http(s)://`` URL, a
``data:`` URI, or a :class:`Source`. Directories are expanded by :func:`expand_inputs`.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import io
import os
import stat
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Union
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import InvalidInputError

__all__ = [
    "MIME_TYPES",
    "Source",
    "SourceLike",
    "expand_inputs",
    "human_size",
    "load_source",
    "local_path",
    "probe_type",
    "redact_url",
    "redact_url_in",
    "safe_name",
    "sniff_type",
]

MIME_TYPES = {
    "pdf": "application/pdf",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "tif": "image/tiff",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "html": "text/html",
    "htm": "text/html",
    "md": "text/markdown",
    "markdown": "text/markdown",
    "txt": "text/plain",
    "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xls": "application/vnd.ms-excel",
}
_MIME_TO_EXT = {
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/png": "png",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/heic": "heic",
    "application/pdf": "pdf",
    "text/html": "html",
    "text/markdown": "md",
    "text/plain": "txt",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
}
_EXT_ALIASES = {"jpeg": "jpg", "tif": "tiff", "htm": "html", "markdown": "md"}


def redact_url(text: str) -> str:
    """An ``http(s)`` URL as it may be stored or shown: ``scheme://host[:port]/path``; anything else unchanged.

    The whole query string and the fragment are dropped, and any ``user:password@``: a presigned URL (OSS, S3...)
    carries its signature and credential there, and no query parameter is kept as "harmless" -- which ones are
    depends on the store. Only the request sent to the service carries the full URL (``document.url`` / the image
    URL); results, metadata, the cache, the CLI's output, error messages and log lines carry this form. The cache
    key and :attr:`Source.sha256` still hash the full URL, so two URLs that differ only in their query stay apart.

    Example:
        >>> redact_url("https://bucket.oss.example.com/a/b.pdf?Expires=1&Signature=abc%2B#p2")
        'https://bucket.oss.example.com/a/b.pdf'
        >>> redact_url("https://user:pw@host:8443/x.png"), redact_url("docs/a?b.pdf")
        ('https://host:8443/x.png', 'docs/a?b.pdf')
    """
    try:
        parts = urlsplit(text)
    except ValueError:  # an unparsable "URL" (a bad IPv6 literal...): keep nothing after the path
        return text.split("?", 1)[0].split("#", 1)[0]
    if parts.scheme.lower() not in ("http", "https"):
        return text
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_url_in(text: str, url: str | None) -> str:
    """``text`` with every occurrence of the full ``url`` (and of its query string) replaced by its redacted form,
    for messages a service may have echoed the URL into."""
    if not url or not text:
        return text
    shown = redact_url(url)
    if shown == url:
        return text
    text = text.replace(url, shown)
    query = urlsplit(url).query
    if len(query) >= 8:
        text = text.replace(query, "…")
    return text


def human_size(n: int | float) -> str:
    """``8388608`` → ``"8.0 MiB"``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def safe_name(text: str) -> str:
    """A path or file name as valid Unicode, safe to encode as UTF-8 and to put in JSON.

    On POSIX a file name is bytes; Python keeps the bytes that are not UTF-8 (``caf\\xe9.pdf`` from an old
    Latin-1 share) as lone surrogates (``os.fsdecode``'s ``surrogateescape``), which no UTF-8 writer accepts. Here
    each such byte becomes the four characters ``\\xNN`` (Python's ``backslashreplace``), everything else is kept:
    the form of the name this package sends (``file_name``), writes (metadata, JSONL, the failures file) and shows.
    The path as given (``Outcome.source``, ``failures``) keeps the original, which still opens the file.

    Example:
        >>> safe_name(os.fsdecode(b"caf\\xe9.pdf")), safe_name("café.pdf")
        ('caf\\\\xe9.pdf', 'café.pdf')
    """
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (a Windows name, a bad str)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Source:
    """One input, ready to send.

    Attributes:
        origin: the path or URL as the caller gave it (or the file name, for bytes); a URL without its query
            string and fragment (see :func:`redact_url`).
        file_name: the file name sent to the service.
        file_type: lowercase type without dot (``pdf``, ``png``, ``jpg``, ``docx``...), sniffed from the bytes.
        data: the bytes, or ``None`` when ``url`` is set.
        url: an ``http(s)`` URL the service fetches itself, in full (sent, never stored or shown).
        page: for a page image cut out of a multi-page file, its 1-based page number.
    """

    origin: str
    file_name: str
    file_type: str
    data: bytes | None = None
    url: str | None = None
    page: int | None = None
    _sha256: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        # An http(s) origin is stored and shown without its query (a presigned URL's signature): see redact_url.
        # ``url`` keeps the full URL: it is what the service is sent.
        shown = redact_url(self.origin)
        if shown != self.origin:
            object.__setattr__(self, "origin", shown)

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes (or of the URL)."""
        if self._sha256:
            return self._sha256
        digest = hashlib.sha256(self.data if self.data is not None else (self.url or "").encode()).hexdigest()
        object.__setattr__(self, "_sha256", digest)
        return digest

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else 0

    @property
    def mime_type(self) -> str:
        return MIME_TYPES.get(self.file_type, "application/octet-stream")

    def data_uri(self) -> str:
        """``data:<mime>;base64,...`` of the bytes (for Qwen-OCR)."""
        if self.data is None:
            raise ValueError("a URL source has no bytes")
        return f"data:{self.mime_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def __repr__(self) -> str:
        where = f"url={redact_url(self.url)!r}" if self.url else f"{human_size(self.size)}"
        page = f", page={self.page}" if self.page else ""
        return f"Source({self.origin!r}, type={self.file_type}, {where}{page})"


SourceLike = Union[str, "os.PathLike[str]", bytes, Source]


def _ext(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower().lstrip(".")
    return _EXT_ALIASES.get(suffix, suffix)


def sniff_type(data: bytes, file_name: str = "") -> str | None:
    """The file type from magic bytes (falls back on the extension for text and legacy Office files).

    Returns ``None`` when the bytes match no known type and the name has no known extension.
    """
    ext = _ext(file_name)
    head = data[:64]
    if head.startswith(b"%PDF-") or b"%PDF-" in data[:1024]:
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM") and len(data) > 26:
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"heim", b"heis"):
        return "heic"
    if head.startswith(b"PK\x03\x04"):
        return _zip_type(io.BytesIO(data), ext)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):  # OLE2: .doc / .ppt / .xls
        return ext if ext in ("doc", "ppt", "xls") else "doc"
    # Text: markdown, html, plain.
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = data[:4093].decode("utf-8")  # a multi-byte character cut at the boundary
        except UnicodeDecodeError:
            return None
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if ext in ("html", "md", "txt"):
        return ext
    if lowered.startswith(("<!doctype html", "<html", "<?xml")) or "<body" in lowered[:2048]:
        return "html"
    if ext:
        return ext
    return "txt"


def _zip_type(file: str | os.PathLike[str] | IO[bytes], ext: str) -> str | None:
    """docx / pptx / xlsx from a zip's member names (only the zip's directory is read)."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return ext or None
    if any(n.startswith("word/") for n in names):
        return "docx"
    if any(n.startswith("ppt/") for n in names):
        return "pptx"
    if any(n.startswith("xl/") for n in names):
        return "xlsx"
    return ext or "zip"


def local_path(obj: SourceLike) -> str | None:
    """The path of an input that names a local file (a ``file://`` URL decoded), or None for bytes, a
    :class:`Source`, an ``http(s)`` URL or a ``data:`` URI.

    Example:
        >>> local_path("file:///tmp/a%20b.pdf"), local_path("https://example.com/a.pdf")
        ('/tmp/a b.pdf', None)
    """
    if not isinstance(obj, (str, os.PathLike)):
        return None
    text = os.fspath(obj)
    if isinstance(text, bytes):  # os.PathLike[bytes]: any bytes, as Python decodes file names
        text = os.fsdecode(text)
    scheme = urlsplit(text).scheme.lower()
    if text.startswith("data:") or scheme in ("http", "https"):
        return None
    return unquote(urlsplit(text).path) if scheme == "file" else text


def probe_type(obj: str | os.PathLike[str]) -> tuple[str, str]:
    """The type of a local file from its first 4 KB (and a zip's directory), without reading the whole file.

    What :func:`load_source` would find, for routing a large batch before any file is loaded.

    Args:
        obj: a local path (``file://`` URLs too).

    Returns:
        ``(origin, file_type)``.

    Raises:
        InvalidInputError: missing, unreadable or empty file, a directory, or an unknown type -- the same errors
            :func:`load_source` raises.
    """
    text = local_path(obj)
    if text is None:
        raise InvalidInputError(f"{obj!r} is not a local file", source=str(obj), limit="not_a_file")
    path = _local_file(text)
    with _reading(text), _open_regular(path, text) as file:
        head = file.read(4096)
    if not head:
        raise InvalidInputError(f"{text} is empty (0 bytes); nothing to parse", source=text, limit="empty", value=0)
    kind = _zip_type(path, _ext(path.name)) if head.startswith(b"PK\x03\x04") else sniff_type(head, path.name)
    if kind is None:
        raise InvalidInputError(
            f"{text}: cannot tell the file type from its content or name", source=text, limit="file_type"
        )
    return text, kind


def _name_from_url(url: str) -> str:
    path = unquote(urlsplit(url).path)
    return PurePosixPath(path).name or "download"


def _from_data_uri(uri: str, file_name: str | None) -> Source:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise InvalidInputError("malformed data: URI (no comma)", source=uri[:40] + "…", limit="data_uri")
    meta = header[5:].split(";")
    mime = meta[0].lower() or "text/plain"
    try:
        data = base64.b64decode(payload, validate=True) if "base64" in meta[1:] else unquote(payload).encode()
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(
            "malformed data: URI (invalid base64)", source=uri[:40] + "…", limit="data_uri"
        ) from exc
    ext = _MIME_TO_EXT.get(mime, "")
    name = file_name or f"data.{ext or 'bin'}"
    origin = f"data:{mime};base64,…({human_size(len(data))})"
    return _from_bytes(data, name, origin)


def _from_bytes(data: bytes, file_name: str, origin: str) -> Source:
    if not data:
        raise InvalidInputError(f"{origin} is empty (0 bytes); nothing to parse", source=origin, limit="empty", value=0)
    kind = sniff_type(data, file_name)
    if kind is None:
        raise InvalidInputError(
            f"{origin}: cannot tell the file type from its content or name", source=origin, limit="file_type"
        )
    name = safe_name(file_name)  # sent in a JSON body: any undecodable byte of the name as \xNN, the suffix kept
    if _ext(name) != kind:
        # Keep the user's name but make the suffix match what the bytes are, so the service infers right.
        stem = PurePosixPath(name).stem if _ext(name) else name
        name = f"{stem}.{kind}"
    return Source(origin=origin, file_name=name, file_type=kind, data=data)


def load_source(obj: SourceLike, *, file_name: str | None = None) -> Source:
    """Normalise one input.

    Args:
        obj: a path, bytes, an ``http(s)`` URL, a ``data:`` URI, or a :class:`Source` (returned as is).
        file_name: the name to send for bytes (required for bytes unless the content is sniffable), or to override.

    Raises:
        InvalidInputError: missing/unreadable/empty file, a directory, an undecodable data URI, unknown type.
    """
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        name = file_name or "upload"
        if not _ext(name):
            kind = sniff_type(data, "") if data else None
            name = f"{name}.{kind}" if kind else name
        return _from_bytes(data, name, file_name or name)
    text = os.fspath(obj)
    if isinstance(text, bytes):  # os.PathLike[bytes]: any bytes, as Python decodes file names
        text = os.fsdecode(text)
    if text.startswith("data:"):
        return _from_data_uri(text, file_name)
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        name = file_name or _name_from_url(text)
        kind = _ext(name)
        return Source(origin=text, file_name=name, file_type=kind or "", url=text)
    if scheme == "file":
        text = unquote(urlsplit(text).path)
    path = _local_file(text)
    with _reading(text), _open_regular(path, text) as file:
        data = file.read()
    return _from_bytes(data, file_name or path.name, text)


def _local_file(text: str) -> Path:
    """The path of a local input, checked to be a regular file before anything opens it.

    A FIFO, socket or device is refused rather than opened (opening a FIFO blocks until something writes to it),
    and so are directories (the loaders and the CLI expand them), dangling symlinks and symlink loops.

    Raises:
        InvalidInputError: ``limit`` ``"not_found"``, ``"dangling_symlink"`` (``value``: the link's target),
            ``"symlink_loop"``, ``"not_a_file"`` (``value``: ``"directory"``, ``"fifo"``, ``"socket"``,
            ``"character device"``...) or ``"unreadable"``.
    """
    path = Path(text).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        try:
            target = os.readlink(path)
        except OSError:
            raise InvalidInputError(f"{text}: no such file", source=text, limit="not_found") from exc
        raise InvalidInputError(
            f"{text}: a dangling symlink (its target {target} does not exist)",
            source=text,
            limit="dangling_symlink",
            value=target,
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInputError(
                f"{text}: a symlink loop (the symlinks point at each other, never at a file)",
                source=text,
                limit="symlink_loop",
            ) from exc
        raise InvalidInputError(
            f"{text}: cannot read ({exc.strerror or exc})", source=text, limit="unreadable"
        ) from exc
    except ValueError as exc:  # a NUL in the path
        raise InvalidInputError(f"{text!r} is not a valid path ({exc})", source=text, limit="unreadable") from exc
    if stat.S_ISDIR(st.st_mode):
        if path.is_symlink():
            # Met in a folder walk (a directory given by name is expanded before it gets here): the walk does not
            # follow symlinks to directories, so say so instead of leaving the folder out without a word.
            real = Path(os.path.realpath(path))
            here = Path(os.path.realpath(path.parent))
            if here == real or real in here.parents:
                raise InvalidInputError(
                    f"{text}: a symlink to {real}, a folder it is inside (a directory loop); not followed",
                    source=text,
                    limit="symlink_loop",
                    value=str(real),
                )
            raise InvalidInputError(
                f"{text}: a symlink to the directory {real}, not followed; pass that directory to include it",
                source=text,
                limit="not_a_file",
                value="directory",
            )
        raise InvalidInputError(
            f"{text} is a directory; pass its files (loaders and the CLI expand directories)",
            source=text,
            limit="not_a_file",
            value="directory",
        )
    if not stat.S_ISREG(st.st_mode):
        kind = _file_kind(st.st_mode)
        raise InvalidInputError(
            f"{text} is a {kind}, not a regular file; only regular files are read",
            source=text,
            limit="not_a_file",
            value=kind,
        )
    return path


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "directory"),
    ):
        if test(mode):
            return kind
    return "special file"


def _open_regular(path: Path, text: str) -> IO[bytes]:
    """Open a file :func:`_local_file` checked, without blocking should it have been replaced by a FIFO since."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _file_kind(mode)
            raise InvalidInputError(
                f"{text} is a {kind}, not a regular file; only regular files are read",
                source=text,
                limit="not_a_file",
                value=kind,
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def _reading(text: str) -> Iterator[None]:
    """Turn the errors of reading a local input into :class:`InvalidInputError` naming it."""
    try:
        yield
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{text}: no such file", source=text, limit="not_found") from exc
    except OSError as exc:
        raise InvalidInputError(
            f"{text}: cannot read ({exc.strerror or exc})", source=text, limit="unreadable"
        ) from exc


class _FromWalk(str):
    """A path :func:`expand_inputs` found inside a directory: yielded as is by a later :func:`expand_inputs` (the
    engine expands its inputs again), so a symlink to a directory met in a walk is reported, not walked after all."""

    __slots__ = ()


def expand_inputs(
    inputs: SourceLike | Iterable[SourceLike],
    *,
    glob: str = "**/*",
    recursive: bool = True,
    exclude_hidden: bool = True,
) -> Iterator[SourceLike]:
    """Yield inputs with directories expanded to their files (sorted, hidden files skipped), URLs and bytes as is.

    Inside a directory every entry the pattern matches that is not a directory is yielded: regular files, and also
    FIFOs, sockets, devices, dangling symlinks, symlink loops and symlinks to directories (the walk does not
    follow those), so that loading them reports them (:func:`load_source` raises :class:`InvalidInputError`
    naming each) instead of leaving them out without a word.
    """
    if isinstance(inputs, (str, bytes, bytearray, os.PathLike, Source)):
        items: Iterable[SourceLike] = [inputs]  # type: ignore[list-item]
    else:
        items = inputs
    for item in items:
        if isinstance(item, _FromWalk):
            yield item
            continue
        if isinstance(item, (str, os.PathLike)) and not isinstance(item, Source):
            text = os.fspath(item)
            if isinstance(text, str) and "://" not in text and not text.startswith("data:"):
                path = Path(text).expanduser()
                if path.is_dir():
                    pattern = glob if recursive else glob.replace("**/", "")
                    for child in sorted(path.glob(pattern)):
                        rel = child.relative_to(path)
                        if exclude_hidden and any(part.startswith(".") for part in rel.parts):
                            continue
                        if child.is_symlink() or not child.is_dir():
                            yield _FromWalk(child)
                    continue
        yield item
