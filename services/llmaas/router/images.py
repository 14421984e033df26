"""Image parts of chat messages, decoded and checked before anything costly happens (guard, metering, a model): data
URIs only (fetching a remote URL from inside the platform would let a client reach what the platform can reach), at
most MAX_IMAGES per request, MAX_IMAGE_BYTES each (413 past it, as the reference answers), a format the models read
and at most MAX_IMAGE_PIXELS (the header is read and the structure verified, never the pixels: decoding is the
model's work).

An image part with `detail: low` is read from a copy at most LOW_DETAIL_SIDE pixels on its longer side (OpenAI's low
detail), billed as the smallest resolution mode. That copy is the one place the router decodes pixels, so it is made
only once the request is granted (`downscaled`, after metering's reservation), one image at a time per router (its
own thread), from at most LOW_DETAIL_MAX_PIXELS for formats that decode whole (a JPEG decodes at a fraction of its
size): the memory and CPU one request can take are bounded, and quotas apply first.

Each image counts the vision tokens of the reference's resolution modes (64 up to 512 px on its longer side, 100 to
640, 256 to 1024, 400 to 1280, 800 beyond): what the OCR model bills (llmaas.router.ocr); a vision chat model's
backend reports its own count.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

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
# A PNG, WebP, BMP or TIFF decodes whole before it can be shrunk: 16 MP is ~64 MiB of RGBA, a phone photo's size.
LOW_DETAIL_MAX_PIXELS = 16_000_000


@dataclass(frozen=True)
class Page:
    """One image of a request: its file's bytes and its dimensions."""
    data: bytes = field(repr=False)
    width: int
    height: int
    format: str = "PNG"
    # detail: low, the copy not made yet (`downscaled` makes it): billed at the copy's size already.
    low: bool = False

    @property
    def tokens(self) -> int:
        side = max(self.width, self.height)
        if self.low:
            side = min(side, LOW_DETAIL_SIDE)
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
        if part.low and max(page.width, page.height) > LOW_DETAIL_SIDE:
            if page.format != "JPEG" and page.width * page.height > LOW_DETAIL_MAX_PIXELS:
                raise payload_too_large(
                    f"The image is too large for detail 'low': {page.width}x{page.height} pixels, at most "
                    f"{LOW_DETAIL_MAX_PIXELS // 1_000_000} million unless it is a JPEG (or send it with detail "
                    f"'high').", param=f"messages[{i}].content", code="image_too_large")
            page = replace(page, low=True)
        pages.append(page)
    return pages


_low_detail_thread: ThreadPoolExecutor | None = None


async def downscaled(pages: tuple[Page, ...]) -> tuple[Page, ...]:
    """The pages with each low-detail copy made, one image at a time per router (its own thread, off the event
    loop). Called once the request is granted."""
    global _low_detail_thread
    if not any(page.low for page in pages):
        return pages
    if _low_detail_thread is None:
        _low_detail_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="low-detail")
    loop = asyncio.get_running_loop()
    return tuple([await loop.run_in_executor(_low_detail_thread, _low_detail, page) if page.low else page
                  for page in pages])


def _low_detail(page: Page) -> Page:
    """The page at most LOW_DETAIL_SIDE pixels on its longer side (aspect and orientation kept), PNG or JPEG as sent.
    A file that cannot be decoded after all (its structure was verified, not its pixels) is the client's 400."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(page.data), formats=FORMATS) as image:
            fmt = "JPEG" if image.format in ("JPEG", "MPO") else "PNG"
            icc = image.info.get("icc_profile")
            image.draft("RGB", (LOW_DETAIL_SIDE, LOW_DETAIL_SIDE))  # JPEG: decode at a fraction of the size already
            # Orientation as the model would apply it to the original (EXIF), which the copy does not carry.
            image = ImageOps.exif_transpose(image)
            # Palette and 1-bit images would shrink by nearest neighbour, and PNG or JPEG cannot store every mode.
            wanted = ("RGB", "L") if fmt == "JPEG" else ("RGB", "RGBA", "L", "LA")
            if image.mode not in wanted:
                has_alpha = fmt == "PNG" and (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info)
                image = image.convert("RGBA" if has_alpha else "RGB")
            image.thumbnail((LOW_DETAIL_SIDE, LOW_DETAIL_SIDE), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}),
                       **({"icc_profile": icc} if icc else {}))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise invalid_request("The image could not be read: PNG, JPEG, WebP, BMP or TIFF is expected.",
                              param="messages", code="invalid_image") from None
    return Page(out.getvalue(), *image.size, format=fmt)


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
    width, height, fmt = _dimensions(data, param)
    return Page(data, width, height, fmt)


def _dimensions(data: bytes, param: str) -> tuple[int, int, str]:
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
    if fmt == "MPO":
        # A camera's JPEG with a second picture (MPO, as phones save them): the models read its first, a JPEG.
        fmt = "JPEG"
    if fmt not in FORMATS:
        raise invalid_request(f"Unsupported image format {fmt}: PNG, JPEG, WebP, BMP or TIFF is expected.",
                              param=param, code="invalid_image")
    if width * height > MAX_IMAGE_PIXELS:
        raise payload_too_large(f"The image is too large: {width}x{height} pixels, at most "
                                f"{MAX_IMAGE_PIXELS // 1_000_000} million.", param=param, code="image_too_large")
    return width, height, fmt
