"""POST /v1/audio/transcriptions and /v1/audio/translations: one upload, from the caller's key to settled minutes.

Order, so that bad input costs nothing: the caller (auth), the form (llmaas.router.audio_upload), the model (catalog:
an `audio` model, allowed for the key, with the `translation` capability for a translation and `multilingual` for a
language other than English), the audio decoded to 16 kHz PCM (in a thread: CPU-bound), only then metering's
reservation (kind `audio`, the exact duration as its bound), the Triton model (the contract in
deploy/triton/model_repository/whisper-tiny-en/config.pbtxt), the response rendered, and the settlement: the audio's
milliseconds, billed per started minute by metering (llmaas.metering.pricing). A request that fails after the
reservation is settled with nothing used: released, not billed.

The guard does not apply: the audio is not instructions to a language model, and `prompt` only primes the speech
decoder's vocabulary and spelling (Whisper keeps its last 224 tokens); the transcript goes back to the caller alone.
"""

from __future__ import annotations

import asyncio
import functools
import json
import struct
import time
import uuid

import grpc
import numpy as np
from google.api import httpbody_pb2
from opentelemetry import trace
from tritonclient.grpc import service_pb2

from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.identity import metadata_dict
from llmaas.metering.v1 import metering_pb2
from llmaas.router import audio_formats
from llmaas.router.audio_upload import SAMPLE_RATE, AudioForm, decode_audio, parse_form
from llmaas.router.pipeline import CLIENT_CLOSED, ChatPipeline, Usage, check_model_permission, lifecycle_headers
from llmaas.router.unary import call_triton

REST_TRANSCRIPTIONS = "POST /v1/audio/transcriptions"
REST_TRANSLATIONS = "POST /v1/audio/translations"
# Uploads smaller than this are parsed inline (well under a millisecond), larger ones in a thread.
INLINE_PARSE_BYTES = 256 * 1024
# A transcription's bound: the model works at a real-time factor well under 1 on CPU.
INFER_TIMEOUT = 600.0

tracer = trace.get_tracer("llmaas.router.audio")


def options_tensor(form: AudioForm, task: str, language: str | None) -> bytes:
    """The OPTIONS tensor's JSON (the contract's names)."""
    return json.dumps({"task": task, "language": language, "prompt": form.prompt or None,
                       "temperature": form.temperature, "word_timestamps": "word" in form.granularities}).encode()


def infer_request(model: str, request_id: str, pcm: np.ndarray, options: bytes) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="AUDIO", datatype="FP32", shape=[pcm.size])
    request.raw_input_contents.append(pcm.astype("<f4", copy=False).tobytes())
    request.inputs.add(name="OPTIONS", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", len(options)) + options)
    request.outputs.add(name="TRANSCRIPTION")
    return request


def read_transcription(response: service_pb2.ModelInferResponse) -> dict:
    for index, tensor in enumerate(response.outputs):
        if tensor.name == "TRANSCRIPTION" and index < len(response.raw_output_contents):
            raw = response.raw_output_contents[index]
            (length,) = struct.unpack_from("<I", raw)
            return json.loads(raw[4:4 + length])
    raise ApiError(grpc.StatusCode.INTERNAL, "The speech model returned no transcription.", code="backend_error")


def check_audio_model(model, form: AudioForm, task: str) -> str | None:
    """The language to send (None: the model detects it). Refuses a model of another kind, a translation on a model
    that cannot translate, a language an English-only model does not speak."""
    endpoint = "translations" if task == "translate" else "transcriptions"
    if model.type != "audio":
        raise invalid_request(f"The model '{model.id}' is a {model.type} model and does not support audio "
                              f"{endpoint}.", param="model", code="model_not_supported")
    multilingual = "multilingual" in model.capabilities
    if task == "translate" and "translation" not in model.capabilities:
        raise invalid_request(f"The model '{model.id}' cannot translate: it is English-only (it transcribes English "
                              f"speech; use /v1/audio/transcriptions).", param="model", code="model_not_supported")
    if "word" in form.granularities and "word_timestamps" not in model.capabilities:
        raise invalid_request(f"The model '{model.id}' does not give word timestamps.",
                              param="timestamp_granularities", code="unsupported_value")
    if form.language and form.language != "en" and not multilingual:
        raise invalid_request(f"The model '{model.id}' only transcribes English: language '{form.language}' is not "
                              f"supported.", param="language", code="unsupported_language")
    return form.language or (None if multilingual else "en")


class AudioPipeline:
    def __init__(self, chat: ChatPipeline) -> None:
        # The chat pipeline's caller check, settlement and audit hand-offs: one of each per router.
        self._chat = chat
        self._downstream = chat._downstream
        self._replicas = chat._replicas

    async def handle(self, request: httpbody_pb2.HttpBody, context, *, task: str) -> httpbody_pb2.HttpBody:
        endpoint = REST_TRANSLATIONS if task == "translate" else REST_TRANSCRIPTIONS
        md = metadata_dict(context)
        caller = await self._chat._caller(md, context, endpoint)
        model_id, audio_ms, error, reserved, gone, status = "", 0, None, False, False, 200
        request_id = caller.request_id
        try:
            # Parsing costs about 1.4 ms per MB (23 ms for 16 MB): a large upload is parsed off the event loop.
            parse = functools.partial(parse_form, request.content_type, request.data, translation=task == "translate")
            form = parse() if len(request.data) < INLINE_PARSE_BYTES else await asyncio.to_thread(parse)
            task = form.task  # the reference's `task=translate` on /transcriptions translates
            span = trace.get_current_span()
            span.set_attribute("llmaas.tenant_id", caller.identity.tenant_id)
            span.set_attribute("llmaas.key_id", caller.identity.key_id)
            model = await self._downstream.resolve_model(form.model, caller.identity.serve_successor, caller.signed)
            model_id = model.id
            span.set_attribute("llmaas.model", model.id)
            check_model_permission(caller.identity, form.model, model)
            language = check_audio_model(model, form, task)
            with tracer.start_as_current_span("decode audio"):
                pcm = await asyncio.to_thread(decode_audio, form.file)
            duration_ms = -(-pcm.size * 1000 // SAMPLE_RATE)
            span.set_attribute("llmaas.audio_ms", duration_ms)
            reserve = self._downstream.reserve(metering_pb2.ReserveRequest(
                request_id=request_id, tenant_id=caller.identity.tenant_id, key_id=caller.identity.key_id,
                model=model.id, kind="audio", max_audio_ms=duration_ms,
                quotas=[metering_pb2.Quota(window_seconds=q.window_seconds, max_requests=q.max_requests,
                                           max_tokens=q.max_tokens) for q in caller.identity.quotas]),
                caller.signed)
            try:
                granted = await reserve
            except asyncio.CancelledError:
                reserved = True  # whatever metering did meanwhile is released below (an unknown id is only logged)
                raise
            if granted.replay:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "This request was already made: it is not served "
                               "again.", code="request_replayed")
            reserved = True
            started = time.monotonic()
            result = await self._infer(model, request_id, pcm, options_tensor(form, task, language))
            span.set_attribute("llmaas.audio_infer_ms", round((time.monotonic() - started) * 1000, 1))
            content_type, body = audio_formats.render(result, form.response_format, form.granularities,
                                                      "translate" if task == "translate" else "transcribe")
            audio_ms = duration_ms
            headers = lifecycle_headers(model) + tuple((h.name, h.value) for h in granted.headers)
            await context.send_initial_metadata(headers)
            return httpbody_pb2.HttpBody(content_type=content_type, data=body)
        except ApiError as err:
            error = err
            raise
        except asyncio.CancelledError:
            gone = True  # the client left: nothing was delivered, nothing is billed
            raise
        except Exception:
            status = 500
            raise
        finally:
            if reserved:
                outcome = "completed" if audio_ms else ("cancelled" if gone else "failed")
                self._chat._settlements.submit((caller, metering_pb2.SettleRequest(
                    request_id=request_id, outcome=outcome, audio_ms=audio_ms)))
            self._chat._record(caller, model_id, Usage(), error, CLIENT_CLOSED if gone else status)

    async def _infer(self, model, request_id: str, pcm: np.ndarray, options: bytes) -> dict:
        """The transcription, from a replica in rotation (llmaas.router.unary: another one only when a replica could not
        take the request at all; an error while transcribing is the audio's, not the replica's)."""
        request = infer_request(model.triton_model, request_id or str(uuid.uuid4()), pcm, options)
        response = await call_triton(self._replicas, model, request, timeout=INFER_TIMEOUT,
                                     failed="The speech model failed on this audio.")
        return read_transcription(response)
