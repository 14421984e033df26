"""Optical character recognition as chat completions, as the reference serves its OCR models: a user message with a
scanned page (an image part) gets the page's text back as Markdown in `message.content`, streamed or not.

The images are decoded and checked by llmaas.router.images before anything costly happens. The OCR model is a Triton
model (deploy/triton/model_repository/ppocr-v4: IMAGE bytes in, RESULT JSON out), called unary through the replica
pool (llmaas.router.unary). Its answer comes whole: one delta with the Markdown of every image in order, pages separated by
a rule.

Usage: each image counts the vision tokens of the reference's resolution modes (64 up to 512 px on its longer side,
100 to 640, 256 to 1024, 400 to 1280, 800 beyond), plus the prompt's text tokens; the output is counted in cl100k_base
tokens (the tokenizer the platform ships) and cut at `max_tokens` (finish_reason "length").
"""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2

from llmaas.common.errors import ApiError, invalid_request
from llmaas.router.embedding_input import cl100k
from llmaas.router.images import Page
from llmaas.router.params import ChatParams
from llmaas.router.triton import Delta
from llmaas.router.unary import call_triton

PAGE_BREAK = "\n\n---\n\n"
INFER_TIMEOUT = 120.0


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
                                     failed="The OCR model failed on this image.", slow_is_request=True)
        texts.append(read_result(response).get("markdown", ""))
    text, output_tokens, finish = await asyncio.to_thread(cut, PAGE_BREAK.join(texts), max_tokens)
    delta = Delta(text=text, final=True, finish_reason=finish, output_tokens=output_tokens,
                  input_tokens=await asyncio.to_thread(prompt_tokens, pages, prompt))
    on_produced(delta)
    yield delta
