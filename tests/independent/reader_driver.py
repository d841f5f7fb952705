"""Run Alibaba's own LlamaIndex reader (``llama-index-readers-alibabacloud-aisearch``) and print what it read.

Runs in its OWN virtualenv (``tests/independent/reader_env.py`` builds it): the reader pins
``alibabacloud-searchplat20240529<2``, which conflicts with the 2.x SDK of the test environment. It never imports
``aisearch_ingest``: it is an independent client of the emulator.

Usage: ``python reader_driver.py '<spec json>'``. The endpoint and key come from the reader's own documented
environment variables, ``AISEARCH_ENDPOINT`` (``host:port``; the reader hard-codes ``protocol="http"``) and
``AISEARCH_API_KEY``. The spec::

    {"reader": "document" | "image", "files": ["/path/a.pdf", ...], "reader_kwargs": {"service_id": ..., ...}}

Prints one JSON object: ``{"versions": {...}, "documents": [{"text"}, ...]}`` or, when the reader
raises, ``{"versions": {...}, "error": {"type", "message", "code"}}`` (exit status 0 either way: the test decides).
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import version


def main() -> None:
    spec = json.loads(sys.argv[1])
    from llama_index.readers.alibabacloud_aisearch import (
        AlibabaCloudAISearchDocumentReader,
        AlibabaCloudAISearchImageReader,
    )

    cls = AlibabaCloudAISearchImageReader if spec["reader"] == "image" else AlibabaCloudAISearchDocumentReader
    reader = cls(**spec.get("reader_kwargs", {}))
    out: dict[str, object] = {
        "versions": {
            name: version(name)
            for name in ("llama-index-readers-alibabacloud-aisearch", "alibabacloud-searchplat20240529")
        },
        "service_id": reader.service_id,
    }
    try:
        # the reader's own async entry point (``load_data`` is a thin ``get_event_loop().run_until_complete``)
        documents = asyncio.run(reader.aload_data(spec["files"]))
    except Exception as exc:
        out["error"] = {"type": type(exc).__name__, "message": str(exc), "code": getattr(exc, "code", None)}
    else:
        # the reader passes ``mimetype=f"text/{content_type}"`` to ``Document``, which llama-index-core 0.13+
        # no longer keeps (``text_resource.mimetype`` stays None): only the text is the reader's output
        out["documents"] = [{"text": d.text} for d in documents]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
