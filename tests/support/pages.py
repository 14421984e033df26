"""Scanned pages drawn with Pillow (the OCR tests and bench): the text on them is known."""

from __future__ import annotations

import base64
import io

from PIL import Image, ImageDraw, ImageFont

TITLE = "Quarterly Report"
LINES = ["Total amount due: 1,250.00 EUR", "Payment within 30 days to Cloud Temple.", "Contact: billing@example.com"]


def page(title: str = TITLE, lines: list[str] = LINES, size: tuple[int, int] = (1000, 560)) -> bytes:
    """A PNG: a large title, then one line of body text every 110 px."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((40, 30), title, fill="black", font=ImageFont.load_default(size=64))
    for i, text in enumerate(lines):
        draw.text((40, 170 + 110 * i), text, fill="black", font=ImageFont.load_default(size=36))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
