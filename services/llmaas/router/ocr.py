"""Optical character recognition as chat completions, as the reference serves its OCR models: a user message with a
scanned page (an image part) gets the page's text back as Markdown in `message.content`, streamed or not.

The images are checked here before anything costly happens (guard, metering, the model): data URIs only (fetching a
remote URL from inside the platform would let a client reach what the platform can reach), at most MAX_IMAGES per
request, MAX_IMAGE_BYTES each (413 past it, as the reference answers), a format the model reads and at most
MAX_IMAGE_PIXELS (the header is read, never the pixels). The OCR model is a Triton model (deploy/triton/
model_repository/ppocr-v4: IMAGE bytes in, RESULT JSON out), called unary through the replica pool
(llmaas.router.unary). Its answer comes whole: one delta with the Markdown of every image in order, pages separated by
a rule.

Usage: each image counts the vision tokens of the reference's resolution modes (64 up to 512 px on its longer side,
100 to 640, 256 to 1024, 400 to 1280, 800 beyond), plus the prompt's text tokens; the output is counted in cl100k_base
tokens (the tokenizer the platform ships) and cut at `max_tokens` (finish_reason "length").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2

from llmaas.common.errors import ApiError, invalid_request, payload_too_large
from llmaas.router.embedding_input import cl100k
from llmaas.router.params import ChatParams
from llmaas.router.triton import Delta
from llmaas.router.unary import call_triton

MAX_IMAGES = 8
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
# (longer side up to, vision tokens): the reference's resolution modes (Tiny, Small, Base, Large; Gundam beyond).
VISION_TOKENS = ((512, 64), (640, 100), (1024, 256), (1280, 400))
VISION_TOKENS_BEYOND = 800
PAGE_BREAK = "\n\n---\n\n"
INFER_TIMEOUT = 120.0
REFUSED_PARAMETERS = ("tools", "response_format", "logprobs", "stop")


@dataclass(frozen=True)
class Page:
    data: bytes
    width: int
    height: int

    @property
    def tokens(self) -> int:
        side = max(self.width, self.height)
        return next((tokens for bound, tokens in VISION_TOKENS if side <= bound), VISION_TOKENS_BEYOND)


def check_request(params: ChatParams, model_id: str) -> None:
    """What an OCR model cannot honour is a 400 naming it; a request without an image has nothing to read."""
    if not any(m.images for m in params.messages):
        raise invalid_request(f"The model '{model_id}' reads images: send at least one image part in a user "
                              "message.", param="messages", code="missing_image")
    refused = [name for name, used in (("tools", params.wants_tools),
                                       ("response_format", params.guided_decoding is not None),
                                       ("logprobs", params.logprobs), ("stop", bool(params.stop))) if used]
    if refused:
        raise invalid_request(f"The model '{model_id}' is an OCR model: it does not support '{refused[0]}'.",
                              param=refused[0], code="unsupported_parameter")


def read_pages(params: ChatParams) -> list[Page]:
    """Every image of the messages, decoded and checked (CPU work: run it in a thread)."""
    urls = [(i, j, url) for i, m in enumerate(params.messages) for j, url in enumerate(m.images)]
    if len(urls) > MAX_IMAGES:
        raise invalid_request(f"Too many images: at most {MAX_IMAGES} per request.", param="messages",
                              code="too_many_images")
    return [_page(url, f"messages[{i}].content") for i, _, url in urls]


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
        with Image.open(io.BytesIO(data)) as image:  # the header only: the pixels are the model's to decode
            fmt, (width, height) = image.format, image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        raise invalid_request("The image could not be read: PNG, JPEG, WebP, BMP or TIFF is expected.", param=param,
                              code="invalid_image") from None
    if fmt not in FORMATS:
        raise invalid_request(f"Unsupported image format {fmt}: PNG, JPEG, WebP, BMP or TIFF is expected.",
                              param=param, code="invalid_image")
    if width * height > MAX_IMAGE_PIXELS:
        raise payload_too_large(f"The image is too large: {width}x{height} pixels, at most "
                                f"{MAX_IMAGE_PIXELS // 1_000_000} million.", param=param, code="image_too_large")
    return width, height


def infer_request(triton_model: str, request_id: str, page: Page) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=triton_model, id=request_id)
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", len(page.data)) + page.data)
    request.outputs.add(name="RESULT")
    return request


def read_result(response: service_pb2.ModelInferResponse) -> dict:
    for index, tensor in enumerate(response.outputs):
        if tensor.name == "RESULT" and index < len(response.raw_output_contents):
            raw = response.raw_output_contents[index]
            (length,) = struct.unpack_from("<I", raw)
            return json.loads(raw[4:4 + length])
    raise ApiError(grpc.StatusCode.INTERNAL, "The OCR model returned no result.", code="backend_error")


def prompt_tokens(pages: tuple[Page, ...], prompt: str) -> int:
    return sum(p.tokens for p in pages) + len(cl100k().encode(prompt, disallowed_special=()))


def cut(text: str, max_tokens: int) -> tuple[str, int, str]:
    """(text, its tokens, finish reason): the output cut at max_tokens cl100k_base tokens."""
    encoding = cl100k()
    tokens = encoding.encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text, len(tokens), "stop"
    return encoding.decode(tokens[:max_tokens]), max_tokens, "length"


@dataclass(frozen=True)
class _Target:
    """What llmaas.router.unary.call_triton needs of a model."""
    id: str
    triton_model: str
    endpoints: tuple[str, ...]


async def read(pool, model_id: str, triton_model: str, endpoints: tuple[str, ...], request_id: str,
               pages: tuple[Page, ...], prompt: str, max_tokens: int,
               on_produced: Callable[[Delta], None]) -> AsyncIterator[Delta]:
    """The pages' Markdown as one final delta with the exact usage, seen by `on_produced` first (as the replica pool
    shows a chat model's deltas)."""
    target = _Target(model_id, triton_model, endpoints)
    texts = []
    for number, page in enumerate(pages):
        request = infer_request(triton_model, f"{request_id or uuid.uuid4()}-{number}", page)
        response = await call_triton(pool, target, request, timeout=INFER_TIMEOUT,
                                     failed="The OCR model failed on this image.")
        texts.append(read_result(response).get("markdown", ""))
    text, output_tokens, finish = await asyncio.to_thread(cut, PAGE_BREAK.join(texts), max_tokens)
    delta = Delta(text=text, final=True, finish_reason=finish, output_tokens=output_tokens,
                  input_tokens=await asyncio.to_thread(prompt_tokens, pages, prompt))
    on_produced(delta)
    yield delta
