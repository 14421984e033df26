"""Speech to text through the real edge: the openai SDK's audio.transcriptions / audio.translations against Envoy, the
router, the catalog, metering and Whisper tiny.en served by Triton (deploy/triton/model_repository/whisper-tiny-en).
Test audio is spoken by espeak-ng and re-encoded by PyAV (tests/support/audio.py)."""

from __future__ import annotations

import secrets
import time

import httpx
import openai
import pytest

from tests.support.audio import FORMATS, SENTENCE, encode, speak, word_error_rate
from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

WHISPER = "whisper:tiny.en"
MINUTE_NANO = 10_000_000  # prices.yaml: audio_minute "0.01" EUR


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="module")
def spoken(audio_dir):
    return speak(SENTENCE, audio_dir / "sentence.wav")


def admin(stack, method: str, path: str, **kw) -> dict:
    r = httpx.request(method, stack["admin_url"] + path, headers={"Authorization": f"Bearer {stack['admin_token']}"},
                      timeout=30, **kw)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def tenant(stack) -> tuple[str, str]:
    """A tenant of its own (its usage is this module's alone) and a key for it."""
    tenant_id = admin(stack, "POST", "/tenants", json={"name": f"audio-{secrets.token_hex(4)}"})["tenant"]["tenant_id"]
    key = admin(stack, "POST", f"/tenants/{tenant_id}/keys", json={"name": "audio"})["api_key"]
    return tenant_id, key


@pytest.fixture(scope="module")
def client(stack, tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base_url"], api_key=tenant[1], max_retries=0, timeout=120)


def post(stack, key: str, path: str, files=None, data=None, headers=None, **kw) -> httpx.Response:
    return httpx.post(stack["base_url"] + path, headers={"Authorization": f"Bearer {key}", **(headers or {})},
                      files=files, data=data, timeout=120, **kw)


def error(resp: httpx.Response, status: int, param: str | None, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    assert body["param"] == param
    if code:
        assert body["code"] == code, body
    return body


def usage_total(stack, tenant_id: str) -> dict:
    return admin(stack, "GET", f"/tenants/{tenant_id}/usage")["total"]


def settled(stack, tenant_id: str, requests: int) -> dict:
    deadline = time.monotonic() + 20
    while True:
        total = usage_total(stack, tenant_id)
        if int(total.get("requests", 0)) >= requests or time.monotonic() > deadline:
            return total
        time.sleep(0.2)


def test_the_model_is_listed_as_audio(stack, client):
    entry = next(m for m in httpx.get(stack["base_url"] + "/models", timeout=30, headers={
        "Authorization": f"Bearer {client.api_key}"}).json()["data"] if m["id"] == WHISPER)
    assert entry["type"] == "audio" and "transcription" in entry["capabilities"]
    assert "translation" not in entry["capabilities"]


def test_sdk_transcription_has_a_low_word_error_rate(client, spoken):
    with spoken.open("rb") as f:
        result = client.audio.transcriptions.create(model=WHISPER, file=f)
    assert word_error_rate(SENTENCE, result.text) <= 0.15, result.text


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "wav"])
def test_every_upload_format(client, spoken, audio_dir, fmt):
    path = encode(spoken, audio_dir / f"sentence.{FORMATS[fmt][0]}", fmt)
    with path.open("rb") as f:
        result = client.audio.transcriptions.create(model=WHISPER, file=f, language="en")
    assert word_error_rate(SENTENCE, result.text) <= 0.2, (fmt, result.text)


def test_response_formats(client, spoken):
    with spoken.open("rb") as f:
        text = client.audio.transcriptions.create(model=WHISPER, file=f, response_format="text")
    assert isinstance(text, str) and word_error_rate(SENTENCE, text) <= 0.15
    with spoken.open("rb") as f:
        srt = client.audio.transcriptions.create(model=WHISPER, file=f, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and "quarterly" in srt.lower()
    with spoken.open("rb") as f:
        vtt = client.audio.transcriptions.create(model=WHISPER, file=f, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ") and "quarterly" in vtt.lower()
    with spoken.open("rb") as f:
        verbose = client.audio.transcriptions.create(model=WHISPER, file=f, response_format="verbose_json",
                                                     timestamp_granularities=["word", "segment"])
    assert verbose.language == "english" and 5 < verbose.duration < 7
    assert verbose.segments and verbose.segments[0].start == 0 and verbose.segments[-1].end <= verbose.duration + 0.5
    assert [w.word.strip(" .").lower() for w in verbose.words][:3] == ["please", "send", "the"]
    assert all(a.start <= b.start for a, b in zip(verbose.words, verbose.words[1:], strict=False))


def test_wire_format_and_usage(stack, tenant, spoken):
    resp = post(stack, tenant[1], "/audio/transcriptions", files={"file": ("s.wav", spoken.read_bytes())},
                data={"model": WHISPER, "prompt": "Quarterly report, finance team.", "temperature": "0"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"text", "usage"} and body["usage"] == {"type": "duration", "seconds": 6}
    assert "x-ratelimit-remaining-requests" in resp.headers


def test_translation_is_refused_by_an_english_only_model(client, spoken):
    with spoken.open("rb") as f, pytest.raises(openai.BadRequestError) as e:
        client.audio.translations.create(model=WHISPER, file=f)
    assert e.value.body["param"] == "model" and e.value.body["code"] == "model_not_supported"
    assert "English-only" in e.value.body["message"]


def test_the_references_fields_are_honoured(stack, tenant, spoken):
    """The reference's `initial_prompt` steers like `prompt`; its `task=translate` on /transcriptions is a translation
    (refused by this English-only model like /translations), never silently a transcription."""
    wav = {"file": ("s.wav", spoken.read_bytes())}
    resp = post(stack, tenant[1], "/audio/transcriptions", files=wav,
                data={"model": WHISPER, "initial_prompt": "Quarterly report, finance team."})
    assert resp.status_code == 200 and resp.json()["text"]
    refused = post(stack, tenant[1], "/audio/transcriptions", files=wav, data={"model": WHISPER, "task": "translate"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_supported"


def test_bad_input_is_a_clear_4xx_and_is_not_billed(stack, audio_dir, spoken):
    tenant_id = admin(stack, "POST", "/tenants", json={"name": f"audio-bad-{secrets.token_hex(4)}"})["tenant"]["tenant_id"]
    key = admin(stack, "POST", f"/tenants/{tenant_id}/keys", json={"name": "audio"})["api_key"]
    wav = ("s.wav", spoken.read_bytes())
    path = "/audio/transcriptions"
    error(post(stack, key, path, files={"file": ("a.txt", b"this is not audio at all " * 40)},
               data={"model": WHISPER}), 400, "file", "invalid_file_format")
    # Corrupt files: a FLAC cut in the middle of a frame, an M4A whose middle third is zeroed. (A WAV header followed
    # by random bytes is valid PCM: noise, transcribed as such; FFmpeg also resynchronises on many damaged streams.)
    flac = encode(spoken, audio_dir / "cut.flac", "flac").read_bytes()
    m4a = encode(spoken, audio_dir / "cut.m4a", "m4a").read_bytes()
    third = len(m4a) // 3
    for name, data in (("c.flac", flac[:len(flac) // 2]), ("c.m4a", m4a[:third] + bytes(third) + m4a[2 * third:])):
        error(post(stack, key, path, files={"file": (name, data)}, data={"model": WHISPER}), 400, "file", "invalid_file")
    error(post(stack, key, path, files={"file": wav}, data={"model": WHISPER, "response_format": "docx"}),
          400, "response_format", "invalid_value")
    error(post(stack, key, path, files={"file": wav}, data={"model": TEST_MODEL}), 400, "model", "model_not_supported")
    error(post(stack, key, path, files={"file": wav}, data={"model": "no-such-model"}), 404, "model")
    error(post(stack, key, path, files={"file": wav}, data={"model": WHISPER, "language": "fr"}),
          400, "language", "unsupported_language")
    error(post(stack, key, path, files={"file": wav}, data={"model": WHISPER, "temperature": "3"}),
          400, "temperature", "invalid_value")
    error(post(stack, key, path, files={"file": wav}, data={"model": WHISPER, "timestamp_granularities[]": "word"}),
          400, "timestamp_granularities", "invalid_value")
    error(post(stack, key, path, files={"model": (None, WHISPER)}), 400, "file", "missing_required_parameter")
    error(post(stack, key, path, files={"file": wav}), 400, "model", "missing_required_parameter")
    error(post(stack, key, path, json={"model": WHISPER}), 400, "file", "invalid_content_type")
    time.sleep(1)  # a settlement would follow its response within milliseconds
    total = usage_total(stack, tenant_id)
    assert int(total.get("requests", 0)) == 0 and int(total.get("audio_ms", 0)) == 0, total


def test_unauthenticated_and_forbidden(stack, spoken):
    wav = {"file": ("s.wav", spoken.read_bytes())}
    resp = httpx.post(stack["base_url"] + "/audio/transcriptions", files=wav, data={"model": WHISPER}, timeout=30)
    assert resp.status_code == 401
    tenant_id = admin(stack, "POST", "/tenants", json={"name": f"audio-perm-{secrets.token_hex(4)}"})["tenant"]["tenant_id"]
    key = admin(stack, "POST", f"/tenants/{tenant_id}/keys", json={"name": "chat only",
                                                                   "allowed_models": [TEST_MODEL]})["api_key"]
    error(post(stack, key, "/audio/transcriptions", files=wav, data={"model": WHISPER}), 403, "model")


def test_upload_over_the_edge_limit_is_a_413(stack, tenant):
    from llmaas.stack.envoy import MAX_BODY_BYTES

    big = b"RIFF" + b"\0" * (MAX_BODY_BYTES + 1024)
    resp = post(stack, tenant[1], "/audio/transcriptions", files={"file": ("big.wav", big)}, data={"model": WHISPER})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"


def test_billed_per_started_minute(stack, audio_dir):
    """A 61.6 s clip is two started minutes, a 5.6 s clip one: 0.01 EUR each (prices.yaml), in the usage API."""
    tenant_id = admin(stack, "POST", "/tenants", json={"name": f"audio-bill-{secrets.token_hex(4)}"})["tenant"]["tenant_id"]
    key = admin(stack, "POST", f"/tenants/{tenant_id}/keys", json={"name": "audio"})["api_key"]
    short = speak(SENTENCE, audio_dir / "short.wav")
    long = speak(SENTENCE, audio_dir / "long.wav", pad_seconds=56.0)
    client = openai.OpenAI(base_url=stack["base_url"], api_key=key, max_retries=0, timeout=120)
    for path in (short, long):
        with path.open("rb") as f:
            client.audio.transcriptions.create(model=WHISPER, file=f)
    total = settled(stack, tenant_id, 2)
    assert int(total["requests"]) == 2
    assert 66_000 < int(total["audio_ms"]) < 68_000  # 5.6 s + 61.6 s: one started minute plus two
    assert total["cost_eur"] == "0.030000000", total


def test_traced_across_the_hops_without_the_transcript(stack, tenant, spoken):
    from llmaas.stack.trace_query import JaegerQuery, edges

    if not stack.get("jaeger_query"):
        pytest.skip("Jaeger is not installed (deploy/install-jaeger.sh)")
    trace_id = secrets.token_hex(16)
    resp = post(stack, tenant[1], "/audio/transcriptions", files={"file": ("s.wav", spoken.read_bytes())},
                data={"model": WHISPER}, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
                                                  "x-client-trace-id": trace_id})
    assert resp.status_code == 200
    jaeger = JaegerQuery(stack["jaeger_query"])
    wanted = {("envoy", "router"), ("router", "metering")}
    deadline = time.monotonic() + 20
    while True:
        spans = jaeger.spans(trace_id)
        operations = {(s.service, s.operation) for s in spans}
        if (wanted <= edges(spans) and ("router", "decode audio") in operations
                and ("router", "triton ModelInfer") in operations) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert wanted <= edges(spans) and {("router", "decode audio"), ("router", "triton ModelInfer")} <= operations
    assert "quarterly" not in repr(jaeger.trace(trace_id)).lower()

