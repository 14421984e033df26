"""The audio upload's parsing and checks, the audio decoding, the response formats and the Triton contract's
encoding (llmaas.router.audio_upload, audio_formats, audio)."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import grpc
import httpx
import numpy as np
import pytest
from llmaas.common.errors import ApiError
from llmaas.router import audio_formats
from llmaas.router.audio import check_audio_model, infer_request, options_tensor, read_transcription
from llmaas.router.audio_upload import SAMPLE_RATE, decode_audio, parse_form
from tritonclient.grpc import service_pb2

from tests.support.audio import FORMATS, SENTENCE, encode, speak


def multipart(files=None, data=None) -> tuple[str, bytes]:
    """The bytes and content type an HTTP client (httpx, as the openai SDK) sends."""
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.headers["content-type"], request.read()


def refused(call, param, code=None) -> ApiError:
    with pytest.raises(ApiError) as e:
        call()
    assert e.value.status == grpc.StatusCode.INVALID_ARGUMENT and e.value.param == param
    if code:
        assert e.value.code == code
    return e.value


def test_parse_form_reads_every_field_and_keeps_the_file_intact():
    payload = bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"
    ctype, body = multipart(files={"file": ("a.wav", payload)}, data={
        "model": "whisper:tiny.en", "language": "EN", "prompt": "Quarterly, finance", "response_format": "verbose_json",
        "temperature": "0.2", "timestamp_granularities[]": ["word", "segment"]})
    form = parse_form(ctype, body, translation=False)
    assert form.file == payload and form.filename == "a.wav" and form.model == "whisper:tiny.en"
    assert (form.language, form.prompt, form.response_format) == ("en", "Quarterly, finance", "verbose_json")
    assert form.temperature == 0.2 and form.granularities == ["word", "segment"]


def test_parse_form_defaults():
    form = parse_form(*multipart(files={"file": ("a", b"x")}, data={"model": "m"}), translation=False)
    assert form.response_format == "json" and form.temperature is None and form.granularities == []


@pytest.mark.parametrize(("data", "param", "code"), [
    ({"model": "m", "response_format": "docx"}, "response_format", "invalid_value"),
    ({"model": "m", "temperature": "hot"}, "temperature", "invalid_value"),
    ({"model": "m", "temperature": "1.5"}, "temperature", "invalid_value"),
    ({"model": "m", "language": "english!"}, "language", "invalid_value"),
    ({"model": "m", "timestamp_granularities[]": "word"}, "timestamp_granularities", "invalid_value"),
    ({"model": "m", "response_format": "verbose_json", "timestamp_granularities[]": "char"},
     "timestamp_granularities", "invalid_value"),
    ({}, "model", "missing_required_parameter"),
    ({"model": "m", "task": "summarise"}, "task", "invalid_value"),
    ({"model": "m", "prompt": "a", "initial_prompt": "b"}, "initial_prompt", "invalid_value"),
])
def test_parse_form_refusals_name_the_param(data, param, code):
    refused(lambda: parse_form(*multipart(files={"file": ("a", b"x")}, data=data), translation=False), param, code)


def test_parse_form_needs_a_multipart_body_with_a_file():
    refused(lambda: parse_form("application/json", b"{}", translation=False), "file", "invalid_content_type")
    refused(lambda: parse_form(*multipart(files={"other": ("a", b"x")}, data={"model": "m"}), translation=False),
            "file", "missing_required_parameter")
    ctype, body = multipart(files={"file": ("a", b"x")}, data={"model": "m"})
    refused(lambda: parse_form(ctype, body[:len(body) // 2] + b"\r\n--garbage", translation=False), "file")


def test_translations_take_no_language():
    ctype, body = multipart(files={"file": ("a", b"x")}, data={"model": "m", "language": "fr"})
    refused(lambda: parse_form(ctype, body, translation=True), "language", "unsupported_parameter")


def test_the_references_field_names_are_honoured():
    """The reference's `initial_prompt` is OpenAI's `prompt`, and its `task=translate` on /transcriptions translates
    (with `language` the spoken one); /translations only translates."""
    form = parse_form(*multipart(files={"file": ("a", b"x")}, data={
        "model": "m", "initial_prompt": "Cloud Temple", "task": "translate", "language": "fr"}), translation=False)
    assert (form.prompt, form.task, form.language) == ("Cloud Temple", "translate", "fr")
    assert parse_form(*multipart(files={"file": ("a", b"x")}, data={"model": "m"}), translation=False).task == \
        "transcribe"
    assert parse_form(*multipart(files={"file": ("a", b"x")}, data={"model": "m"}), translation=True).task == \
        "translate"
    refused(lambda: parse_form(*multipart(files={"file": ("a", b"x")}, data={"model": "m", "task": "transcribe"}),
                               translation=True), "task", "invalid_value")


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    return speak(SENTENCE, tmp_path_factory.mktemp("audio") / "s.wav")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_decode_every_format_to_16k_mono(spoken, tmp_path, fmt):
    path = spoken if fmt == "wav" else encode(spoken, tmp_path / f"s.{FORMATS[fmt][0]}", fmt)
    pcm = decode_audio(path.read_bytes())
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert 5.0 < pcm.size / SAMPLE_RATE < 6.5 and 0.05 < np.abs(pcm).max() <= 1.0


def test_decode_refuses_what_is_not_supported_audio(spoken):
    refused(lambda: decode_audio(b"hello, not audio" * 100), "file", "invalid_file_format")
    refused(lambda: decode_audio(spoken.read_bytes()[:44]), "file")  # a header, no samples
    refused(lambda: decode_audio(b"GIF89a" + bytes(2000)), "file", "invalid_file_format")


def test_decode_is_bounded(monkeypatch, spoken):
    monkeypatch.setattr("llmaas.router.audio_upload.MAX_AUDIO_SECONDS", 2)
    refused(lambda: decode_audio(spoken.read_bytes()), "file", "audio_too_long")


RESULT = {"text": "Hello there. General Kenobi.", "language": "en", "duration": 3661.5, "segments": [
    {"id": 0, "seek": 0, "start": 0.0, "end": 1.5, "text": " Hello there.", "tokens": [1], "temperature": 0.0,
     "avg_logprob": -0.2, "compression_ratio": 1.0, "no_speech_prob": 0.01,
     "words": [{"word": " Hello", "start": 0.0, "end": 0.7}, {"word": " there.", "start": 0.7, "end": 1.5}]},
    {"id": 1, "seek": 0, "start": 3600.25, "end": 3661.5, "text": " General Kenobi.", "tokens": [2],
     "temperature": 0.0, "avg_logprob": -0.3, "compression_ratio": 1.0, "no_speech_prob": 0.02, "words": []}]}


def test_render_every_response_format():
    ctype, body = audio_formats.render(RESULT, "json", [], "transcribe")
    assert ctype == "application/json"
    assert json.loads(body) == {"text": RESULT["text"], "usage": {"type": "duration", "seconds": 3662}}
    assert audio_formats.render(RESULT, "text", [], "transcribe") == ("text/plain; charset=utf-8",
                                                                     b"Hello there. General Kenobi.\n")
    _, srt = audio_formats.render(RESULT, "srt", [], "transcribe")
    assert srt.decode() == ("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
                            "2\n01:00:00,250 --> 01:01:01,500\nGeneral Kenobi.\n\n")
    ctype, vtt = audio_formats.render(RESULT, "vtt", [], "transcribe")
    assert ctype.startswith("text/vtt") and vtt.decode().startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n")
    verbose = json.loads(audio_formats.render(RESULT, "verbose_json", [], "transcribe")[1])
    assert verbose["task"] == "transcribe" and verbose["language"] == "english" and verbose["duration"] == 3661.5
    assert "words" not in verbose and len(verbose["segments"]) == 2 and "words" not in verbose["segments"][0]
    words_only = json.loads(audio_formats.render(RESULT, "verbose_json", ["word"], "transcribe")[1])
    assert "segments" not in words_only and [w["word"] for w in words_only["words"]] == [" Hello", " there."]


def model(**kw):
    return SimpleNamespace(**{"id": "whisper:tiny.en", "type": "audio", "capabilities": ["transcription"], **kw})


def test_check_audio_model():
    form = parse_form(*multipart(files={"file": ("a", b"x")}, data={"model": "m"}), translation=False)
    assert check_audio_model(model(), form, "transcribe") == "en"
    refused(lambda: check_audio_model(model(type="chat"), form, "transcribe"), "model", "model_not_supported")
    refused(lambda: check_audio_model(model(), form, "translate"), "model", "model_not_supported")
    assert check_audio_model(model(capabilities=["translation", "multilingual"]), form, "translate") is None
    form.granularities = ["word"]
    refused(lambda: check_audio_model(model(), form, "transcribe"), "timestamp_granularities", "unsupported_value")
    assert check_audio_model(model(capabilities=["word_timestamps"]), form, "transcribe") == "en"
    form.granularities = []
    form.language = "fr"
    refused(lambda: check_audio_model(model(), form, "transcribe"), "language", "unsupported_language")
    assert check_audio_model(model(capabilities=["multilingual"]), form, "transcribe") == "fr"


def test_triton_contract_encoding():
    form = parse_form(*multipart(files={"file": ("a", b"x")}, data={
        "model": "m", "prompt": "p", "response_format": "verbose_json", "timestamp_granularities[]": "word"}),
        translation=False)
    pcm = np.linspace(-1, 1, 1000, dtype=np.float32)
    request = infer_request("whisper-tiny-en", "rid", pcm, options_tensor(form, "transcribe", "en"))
    assert [(i.name, i.datatype, list(i.shape)) for i in request.inputs] == [
        ("AUDIO", "FP32", [1000]), ("OPTIONS", "BYTES", [1])]
    assert np.array_equal(np.frombuffer(request.raw_input_contents[0], "<f4"), pcm)
    options = json.loads(request.raw_input_contents[1][4:])
    assert options == {"task": "transcribe", "language": "en", "prompt": "p", "temperature": None,
                       "word_timestamps": True}
    answer = json.dumps(RESULT).encode()
    response = service_pb2.ModelInferResponse(outputs=[service_pb2.ModelInferResponse.InferOutputTensor(
        name="TRANSCRIPTION", datatype="BYTES", shape=[1])], raw_output_contents=[struct.pack("<I", len(answer))
                                                                                   + answer])
    assert read_transcription(response) == RESULT


class FakeTriton:
    """A replica (the router's TritonReplica, unit tests only): fails with `error` (a gRPC status and message) or
    answers RESULT."""

    def __init__(self, error: tuple[grpc.StatusCode, str] | None = None) -> None:
        self.error, self.calls = error, 0

    async def infer(self, request, timeout=None, metadata=()):
        self.calls += 1
        if self.error:
            raise grpc.aio.AioRpcError(self.error[0], grpc.aio.Metadata(), grpc.aio.Metadata(), details=self.error[1])
        answer = json.dumps(RESULT).encode()
        return service_pb2.ModelInferResponse(
            outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name="TRANSCRIPTION", datatype="BYTES",
                                                                      shape=[1])],
            raw_output_contents=[struct.pack("<I", len(answer)) + answer])

    async def canary(self, model):
        return None  # inconclusive: the breaker stays open for the test's duration

    async def server_ready(self):
        return False

    async def close(self):
        pass


def fake_pool(replicas: dict[str, FakeTriton]):
    from llmaas.router.replicas import ReplicaPool

    return ReplicaPool(replicas.__getitem__)


def audio_pipeline(replicas: dict[str, FakeTriton]):
    from llmaas.router.audio import AudioPipeline

    return AudioPipeline(SimpleNamespace(_downstream=None, _replicas=fake_pool(replicas)))


async def test_a_replica_that_is_down_is_skipped_a_failed_transcription_is_not_retried(monkeypatch):
    import random

    monkeypatch.setattr(random, "choice", lambda seq: seq[0])  # equally loaded replicas: the first one first
    pcm = np.zeros(1600, np.float32)
    served = model(endpoints=["a:1", "b:1"], triton_model="whisper-tiny-en")
    replicas = {"a:1": FakeTriton((grpc.StatusCode.UNAVAILABLE, "connection refused")), "b:1": FakeTriton()}
    pipeline = audio_pipeline(replicas)
    assert await pipeline._infer(served, "r", pcm, b"{}") == RESULT
    assert replicas["a:1"].calls == replicas["b:1"].calls == 1
    # The replica that was down is out of rotation: the next request goes straight to the other one.
    assert await pipeline._infer(served, "r2", pcm, b"{}") == RESULT
    assert replicas["a:1"].calls == 1 and replicas["b:1"].calls == 2
    await pipeline._replicas.close()

    replicas = {"a:1": FakeTriton((grpc.StatusCode.INTERNAL, "transcription: bad input")), "b:1": FakeTriton()}
    with pytest.raises(ApiError) as e:
        await audio_pipeline(replicas)._infer(served, "r", pcm, b"{}")
    assert e.value.status == grpc.StatusCode.INTERNAL and replicas["b:1"].calls == 0

    replicas = {"a:1": FakeTriton((grpc.StatusCode.NOT_FOUND, "Request for unknown model")),
                "b:1": FakeTriton((grpc.StatusCode.UNAVAILABLE, "down"))}
    pipeline = audio_pipeline(replicas)
    with pytest.raises(ApiError) as e:
        await pipeline._infer(served, "r", pcm, b"{}")
    assert e.value.status == grpc.StatusCode.UNAVAILABLE and e.value.code == "model_unavailable"
    await pipeline._replicas.close()


class FakeChat:
    """Fakes of what AudioPipeline borrows from the chat pipeline and the downstream services (unit tests only)."""

    def __init__(self, served) -> None:
        from llmaas.common.identity import Identity
        from llmaas.router.pipeline import Caller

        self.caller = Caller(Identity("t", "k"), "req-1", "POST /v1/audio/transcriptions", "127.0.0.1")
        self.served, self.reserved, self.settled, self.records = served, [], [], []
        self._downstream = self
        self._replicas = None
        self._settlements = SimpleNamespace(submit=self.settled.append)

    async def _caller(self, md, context, endpoint):
        return self.caller

    def _record(self, caller, model, usage, error, status=200):
        self.records.append((model, error.code if error else None, status))

    async def resolve_model(self, name, serve_successor=False, identity=""):
        return self.served

    async def reserve(self, request, identity=""):
        from llmaas.metering.v1 import metering_pb2

        self.reserved.append(request)
        return metering_pb2.ReserveResponse()


class FakeContext:
    def __init__(self) -> None:
        self.headers = None

    def invocation_metadata(self):
        return ()

    async def send_initial_metadata(self, headers):
        self.headers = headers


def served_model(**kw):
    return SimpleNamespace(**{"id": "whisper:tiny.en", "type": "audio", "capabilities": ["transcription"],
                              "aliases": [], "substituted_for": "", "phase": "", "deprecation": "", "successor": "",
                              "endpoints": ["a:1"], "triton_model": "whisper-tiny-en", **kw})


async def test_handle_bills_the_decoded_duration_and_nothing_for_bad_input(spoken):
    from google.api import httpbody_pb2
    from llmaas.router.audio import AudioPipeline

    chat = FakeChat(served_model())
    pipeline = AudioPipeline(chat)
    pipeline._replicas = fake_pool({"a:1": FakeTriton()})
    ctype, body = multipart(files={"file": ("s.wav", spoken.read_bytes())},
                            data={"model": "whisper:tiny.en", "response_format": "srt"})
    answer = await pipeline.handle(httpbody_pb2.HttpBody(content_type=ctype, data=body), FakeContext(),
                                   task="transcribe")
    assert answer.content_type.startswith("text/plain") and answer.data.startswith(b"1\n00:00:00,000 --> ")
    (reservation,) = chat.reserved
    assert reservation.kind == "audio" and 5500 < reservation.max_audio_ms < 6500
    ((_, settlement),) = chat.settled
    assert settlement.outcome == "completed" and settlement.audio_ms == reservation.max_audio_ms
    assert chat.records == [("whisper:tiny.en", None, 200)]

    chat = FakeChat(served_model())
    pipeline = AudioPipeline(chat)
    ctype, body = multipart(files={"file": ("s.wav", b"RIFF-not-really" * 50)}, data={"model": "whisper:tiny.en"})
    with pytest.raises(ApiError):
        await pipeline.handle(httpbody_pb2.HttpBody(content_type=ctype, data=body), FakeContext(), task="transcribe")
    assert chat.reserved == [] and chat.settled == [] and chat.records == [("whisper:tiny.en", "invalid_file_format",
                                                                             200)]


async def test_handle_releases_the_reservation_when_the_model_fails(spoken):
    from google.api import httpbody_pb2
    from llmaas.router.audio import AudioPipeline

    chat = FakeChat(served_model())
    pipeline = AudioPipeline(chat)
    pipeline._replicas = fake_pool({"a:1": FakeTriton((grpc.StatusCode.INTERNAL, "transcription: boom"))})
    ctype, body = multipart(files={"file": ("s.wav", spoken.read_bytes())}, data={"model": "whisper:tiny.en"})
    with pytest.raises(ApiError):
        await pipeline.handle(httpbody_pb2.HttpBody(content_type=ctype, data=body), FakeContext(), task="transcribe")
    ((_, settlement),) = chat.settled
    assert settlement.outcome == "failed" and settlement.audio_ms == 0
