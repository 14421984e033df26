"""Image parts of chat messages, decoded and checked before anything costly happens (guard, metering, a model): data
URIs only (fetching a remote URL from inside the platform would let a client reach what the platform can reach), at
most MAX_IMAGES per request, MAX_IMAGE_BYTES each (413 past it, as the reference answers), a format the models read
and at most MAX_IMAGE_PIXELS (the header is read, never the pixels: decoding is the model's work).

An image part with `detail: low` is read from a copy at most LOW_DETAIL_SIDE pixels on its longer side (OpenAI's low
detail), made here (PNG, or JPEG for a JPEG), so the model reads and bills the smallest resolution mode.

Each image counts the vision tokens of the reference's resolution modes (64 up to 512 px on its longer side, 100 to
640, 256 to 1024, 400 to 1280, 800 beyond): what the OCR model bills (llmaas.router.ocr); a vision chat model's
backend reports its own count.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field

from llmaas.common.errors import invalid_request, payload_too_large
from llmaas.router.params import ChatParams

MAX_IMAGES = 8
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
# (longer side up to, vision tokens): the reference's resolution modes (Tiny, Small, Base, Large; Gundam beyond).
VISION_TOKENS = ((512, 64), (640, 100), (1024, 256), (1280, 400))
VISION_TOKENS_BEYOND = 800
LOW_DETAIL_SIDE = 512


@dataclass(frozen=True)
class Page:
    """One image of a request: its file's bytes and its dimensions."""
    data: bytes = field(repr=False)
    width: int
    height: int

    @property
    def tokens(self) -> int:
        side = max(self.width, self.height)
        return next((tokens for bound, tokens in VISION_TOKENS if side <= bound), VISION_TOKENS_BEYOND)


def read_pages(params: ChatParams) -> list[Page]:
    """Every image of the messages, decoded and checked (CPU work: run it in a thread)."""
    parts = [(i, part) for i, m in enumerate(params.messages) for part in m.images]
    if len(parts) > MAX_IMAGES:
        raise invalid_request(f"Too many images: at most {MAX_IMAGES} per request.", param="messages",
                              code="too_many_images")
    pages = []
    for i, part in parts:
        page = _page(part.url, f"messages[{i}].content")
        pages.append(_low_detail(page) if part.low else page)
    return pages


def _low_detail(page: Page) -> Page:
    """The page at most LOW_DETAIL_SIDE pixels on its longer side (aspect kept); a smaller one as it is."""
    if max(page.width, page.height) <= LOW_DETAIL_SIDE:
        return page
    from PIL import Image

    with Image.open(io.BytesIO(page.data), formats=FORMATS) as image:
        fmt = "JPEG" if image.format == "JPEG" else "PNG"
        image.draft("RGB", (LOW_DETAIL_SIDE, LOW_DETAIL_SIDE))  # JPEG: decode at a fraction of the size already
        image.thumbnail((LOW_DETAIL_SIDE, LOW_DETAIL_SIDE), Image.Resampling.LANCZOS)
        if fmt == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        return Page(out.getvalue(), *image.size)


def _page(url: str, param: str) -> Page:
    if not url.startswith("data:"):
        if url.startswith(("http://", "https://")):
            raise invalid_request("Image URLs are not fetched: send the image inline as a data URI "
                                  "(data:image/png;base64,...).", param=param, code="unsupported_image_url")
        raise invalid_request("Invalid image URL: a data URI (data:image/png;base64,...) is expected.", param=param,
                              code="invalid_image_url")
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise invalid_request("Invalid image data URI: base64 data is expected (data:image/png;base64,...).",
                              param=param, code="invalid_image_url")
    if len(payload) > (MAX_IMAGE_BYTES + 2) // 3 * 4 + 4:
        raise payload_too_large(f"The image is too large: at most {MAX_IMAGE_BYTES} bytes "
                                f"({MAX_IMAGE_BYTES // 1048576} MiB) per image.", param=param, code="image_too_large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_request("Invalid image data URI: the data is not valid base64.", param=param,
                              code="invalid_image") from None
    width, height = _dimensions(data, param)
    return Page(data, width, height)


def _dimensions(data: bytes, param: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        # Only the accepted formats' parsers see the bytes. The header gives the size; verify() checks the file's
        # structure (PNG: every chunk's CRC, to the end) without decoding the pixels, so a truncated or corrupt file is
        # the client's 400 here, not the model's failure.
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            fmt, (width, height) = image.format, image.size
            if width * height <= MAX_IMAGE_PIXELS:
                image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        raise invalid_request("The image could not be read: PNG, JPEG, WebP, BMP or TIFF is expected.", param=param,
                              code="invalid_image") from None
    if fmt not in FORMATS:
        raise invalid_request(f"Unsupported image format {fmt}: PNG, JPEG, WebP, BMP or TIFF is expected.",
                              param=param, code="invalid_image")
    if width * height > MAX_IMAGE_PIXELS:
        raise payload_too_large(f"The image is too large: {width}x{height} pixels, at most "
                                f"{MAX_IMAGE_PIXELS // 1_000_000} million.", param=param, code="image_too_large")
    return width, height
