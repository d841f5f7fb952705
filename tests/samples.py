"""Sample inputs the tests build on the fly: a PNG with a line of text, a PDF with a text page per entry."""

from __future__ import annotations

import io


def png(text: str = "Hello OCR 2026", size: tuple[int, int] = (360, 80)) -> bytes:
    """A white PNG with ``text`` drawn in black, large enough for the emulator's OCR to read."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((12, 20), text, fill="black", font=ImageFont.load_default(size=28))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pdf(pages: list[str]) -> bytes:
    """An A4 PDF with one page of text per entry of ``pages``."""
    from fpdf import FPDF

    document = FPDF()
    document.set_font("helvetica", size=12)
    for text in pages:
        document.add_page()
        document.multi_cell(0, 8, text)
    return bytes(document.output())
