"""Hostile input at the edge (issue 20): every request Envoy itself refuses gets the right 4xx in OpenAI's shape,
before any service works on it, and clean responses carry no gRPC internals. Through the real Envoy and the real SDK."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import openai
import pytest
from llmaas.stack.envoy import MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_REQUEST_HEADERS_KB

from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Say hello to the whole team please"}]
# What no error message may show: proto type names, the transcoder's wording, body fragments.
INTERNALS = ("TYPE_", "type.googleapis.com", "llmaas.", "proto", "Root element", "\n")


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    # The SDK's default retries: a 413 or 431 must not be retried (it retries 429s and connection errors).
    return openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=2, timeout=120)


def post(stack, path: str = "/chat/completions", *, api_key: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_key or stack['api_key']}", **kw.pop("headers", {})}
    return httpx.post(stack["base_url"] + path, headers=headers, timeout=120, **kw)


def openai_error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code
    assert err["type"] == "invalid_request_error"
    assert not any(s in err["message"] for s in INTERNALS), err["message"]
    assert not [h for h in resp.headers if h.startswith("grpc-")]
    return err


def nested(levels: int):
    value: object = "x"
    for _ in range(levels):
        value = {"k": value}
    return value


def chat_body(content: str, **extra) -> bytes:
    return json.dumps({"model": TEST_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2,
                       **extra}).encode()


# Row: a 50 MB body was a 429 with an empty body, which the SDK retried.
def test_50_mb_body_is_413_through_the_sdk_without_retry(client):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=TEST_MODEL, messages=[{"role": "user", "content": "a" * 50_000_000}])
    assert e.value.status_code == 413 and e.value.code == "request_too_large"
    assert e.value.body["type"] == "invalid_request_error" and str(MAX_BODY_BYTES) in e.value.body["message"]
    assert e.value.response.request.headers.get("x-stainless-retry-count") == "0"  # the first try was the answer


def test_a_body_over_the_limit_is_413_before_auth_even_chunked(stack):
    over = chat_body("a" * (MAX_BODY_BYTES + 10))
    # A wrong key: the answer is still 413, so auth (the first service) never saw the request.
    openai_error(post(stack, api_key="sk-llmaas-0000000000000000-wrong", content=over,
                      headers={"content-type": "application/json"}), 413, "request_too_large")

    def chunks():  # no Content-Length: the buffer's limit decides
        for i in range(0, len(over), 1 << 20):
            yield over[i:i + (1 << 20)]

    openai_error(post(stack, content=chunks(), headers={"content-type": "application/json"}), 413, "request_too_large")


def test_a_body_under_the_limit_is_not_refused_at_the_edge(stack):
    # 1.5 MB of JSON: past the edge (whatever the router then says of a 1.5 MB message, it is not a 413).
    resp = post(stack, content=chat_body("word " * 300_000), headers={"content-type": "application/json"})
    assert resp.status_code != 413 and resp.status_code < 500, resp.text


# Row: a 60 KB header was a 429 "received metadata size exceeds hard limit".
def test_60_kb_header_is_431_through_the_sdk(client):
    with pytest.raises(openai.APIStatusError) as e:
        client.models.list(extra_headers={"x-padding": "a" * 60_000})
    assert e.value.status_code == 431 and e.value.code == "request_headers_too_large"
    assert e.value.response.request.headers.get("x-stainless-retry-count") == "0"


def test_headers_up_to_the_limit_are_served(client, stack):
    # 20 KB was over the services' gRPC metadata limit (a 429); the services now take what the edge lets through.
    padding = "a" * (MAX_REQUEST_HEADERS_KB * 1024 - 4096)
    r = client.chat.completions.create(model=TEST_MODEL, messages=HELLO, max_tokens=2,
                                       extra_headers={"x-padding": padding})
    assert r.choices[0].message.content
    openai_error(httpx.get(stack["base_url"] + "/models", timeout=30, headers={
        "Authorization": f"Bearer {stack['api_key']}", "x-padding": "a" * (MAX_REQUEST_HEADERS_KB * 1024)}),
        431, "request_headers_too_large")


# Row: JSON nested 35-99 levels inside a Struct field was a 500 with an empty body (protobuf's DecodeError).
@pytest.mark.parametrize("levels", [35, 60, 99, 150])
def test_deeply_nested_metadata_is_400_json_too_deep(client, levels):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=TEST_MODEL, messages=HELLO, max_tokens=2,
                                       metadata=nested(levels))  # type: ignore[arg-type]
    assert e.value.code == "json_too_deep" and str(MAX_JSON_DEPTH) in e.value.message


def test_nesting_within_the_limit_passes_the_edge_and_decodes(stack):
    # The body's root object, `metadata`'s object and 30 more: MAX_JSON_DEPTH levels in all. Past the edge and
    # decoded by the router (which may then refuse such metadata: OpenAI's are flat strings), never a 500.
    resp = post(stack, json={"model": TEST_MODEL, "messages": HELLO, "max_tokens": 2,
                             "metadata": nested(MAX_JSON_DEPTH - 2)})
    assert resp.status_code < 500 and resp.json().get("error", {}).get("code") != "json_too_deep", resp.text


def test_brackets_inside_strings_do_not_count_as_nesting(client):
    r = client.chat.completions.create(model=TEST_MODEL, max_tokens=2, messages=[
        {"role": "user", "content": "[" * 200 + '{"\\"' * 100 + "]"}])
    assert r.choices[0].message.content


def test_deep_nesting_elsewhere_is_refused_at_the_edge_too(stack):
    tools = [{"type": "function", "function": {"name": "f", "parameters": nested(60)}}]
    openai_error(post(stack, content=chat_body("hi", tools=tools), headers={"content-type": "application/json"}),
                 400, "json_too_deep")
    deep_list = json.dumps({"model": TEST_MODEL, "messages": HELLO, "metadata": {"a": json.loads("[" * 40 + "]" * 40)}})
    openai_error(post(stack, content=deep_list, headers={"content-type": "application/json"}), 400, "json_too_deep")


# Row: every Envoy-level 400 was `invalid_json`, echoing body fragments and proto type names.
def test_malformed_json_is_invalid_json_without_fragments(stack):
    err = openai_error(post(stack, content=b'{"model": "secret-fragment", "messages": [',
                            headers={"content-type": "application/json"}), 400, "invalid_json")
    assert "secret-fragment" not in err["message"]


def test_wrong_type_names_the_field_not_the_proto_type(stack):
    err = openai_error(post(stack, json={"model": TEST_MODEL, "messages": HELLO, "max_tokens": "secret-value"}),
                       400, "invalid_type")
    assert err["param"] == "max_tokens" and "integer" in err["message"] and "secret-value" not in err["message"]
    err = openai_error(post(stack, json={"model": TEST_MODEL, "messages": HELLO, "temperature": "hot"}),
                       400, "invalid_type")
    assert err["param"] == "temperature" and "number" in err["message"]
    err = openai_error(post(stack, json={"model": TEST_MODEL, "messages": "hi"}), 400, "invalid_type")
    assert err["param"] == "messages"


def test_a_body_that_is_not_an_object_says_so(stack):
    err = openai_error(post(stack, json=[1, 2, 3]), 400, "invalid_type")
    assert "JSON object" in err["message"]


def test_wrong_method_is_405_and_unknown_url_404(stack):
    headers = {"Authorization": f"Bearer {stack['api_key']}"}
    resp = httpx.get(stack["base_url"] + "/chat/completions", headers=headers, timeout=30)
    err = openai_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "POST" and "POST" in err["message"]
    resp = httpx.delete(stack["base_url"] + "/models", headers=headers, timeout=30)
    assert openai_error(resp, 405, "method_not_allowed") and resp.headers["allow"] == "GET"
    openai_error(httpx.get(stack["base_url"] + "/no/such/thing", headers=headers, timeout=30), 404, "unknown_url")


# Row: every 200 carried grpc-status/grpc-message headers; system_fingerprint was null.
def test_responses_carry_no_grpc_headers(stack):
    headers = {"Authorization": f"Bearer {stack['api_key']}"}
    responses = [post(stack, json={"model": TEST_MODEL, "messages": HELLO, "max_tokens": 2}),
                 httpx.get(stack["base_url"] + "/models", headers=headers, timeout=30),
                 httpx.get(stack["base_url"] + "/models/" + TEST_MODEL, headers=headers, timeout=30),
                 post(stack, json={"model": "no-such-model", "messages": HELLO})]
    with httpx.stream("POST", stack["base_url"] + "/chat/completions", headers=headers, timeout=60,
                      json={"model": TEST_MODEL, "messages": HELLO, "max_tokens": 2, "stream": True}) as resp:
        resp.read()
        responses.append(resp)
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 200]
    for r in responses:
        assert not [h for h in r.headers if h.startswith("grpc-")], dict(r.headers)


def test_system_fingerprint_is_a_stable_string(client, stack):
    first = client.chat.completions.create(model=TEST_MODEL, messages=HELLO, max_tokens=2)
    second = client.chat.completions.create(model=TEST_MODEL, messages=HELLO, max_tokens=2)
    assert isinstance(first.system_fingerprint, str) and first.system_fingerprint.startswith("fp_")
    assert first.system_fingerprint == second.system_fingerprint
    chunks = list(client.chat.completions.create(model=TEST_MODEL, messages=HELLO, max_tokens=3, stream=True,
                                                 stream_options={"include_usage": True}))
    assert {c.system_fingerprint for c in chunks} == {first.system_fingerprint}
    raw = post(stack, json={"model": TEST_MODEL, "messages": HELLO, "max_tokens": 2}).json()
    assert raw["system_fingerprint"] == first.system_fingerprint


# Files at rest: databases, logs and secrets 0600 in a 0700 data directory.
def test_the_data_directory_is_private(stack):
    data_dir = Path(stack["data_dir"])

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(data_dir) == 0o700 and mode(data_dir / "logs") == 0o700
    files = {"stack.json", "admin.json", "auth.db", "metering.db", "guard.db"}
    assert files <= {p.name for p in data_dir.iterdir()}
    private = [data_dir / name for name in files]
    private += [p for p in data_dir.glob("*.db-*")]  # SQLite's WAL and shared memory, migration locks
    logs = list((data_dir / "logs").glob("*.log"))
    assert len(logs) >= 6
    wrong = {str(p): oct(mode(p)) for p in private + logs if mode(p) != 0o600}
    assert not wrong
    # Everything else the stack wrote there is private too (inherited umask), but the copies of Triton's backend
    # programs (copied with their modes; no data).
    loose = {str(p): oct(mode(p)) for p in data_dir.rglob("*") if mode(p) & 0o077 and "backends" not in p.parts}
    assert not loose


# Issue 14, point 7: a misspelled or unimplemented field is a 400 naming it (OpenAI's wording), not dropped.
def test_a_misspelled_field_is_a_400_naming_it_through_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=TEST_MODEL, messages=HELLO, max_tokens=2, extra_body={"temprature": 0.2})
    assert e.value.code == "unknown_parameter" and e.value.param == "temprature"
    assert e.value.body["message"] == "Unrecognized request argument supplied: temprature"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="all-minilm:22m", input="hi", extra_body={"dimension": 8})
    assert e.value.param == "dimension"


@pytest.mark.parametrize("body", [
    # Values of every kind before the next key, and key-like text inside values and nested objects.
    b'{"model": "%s", "max_tokens": 2, "messages": [{"role": "user", "content": "say \\"hi\\", {\\"x\\": 1}"}]}',
    b'{ "model" : "%s" , "seed":7,"stream":false,"stop":null,"metadata":{"nope":"[1,{\\"a\\":\\"b\\"}]","x":"y"},'
    b'"messages":[{"role":"user","content":"hi"}],"max_tokens":2}',
    b'{"messages": [{"role": "user", "content": "\\\\"}], "logprobs": true, "top_logprobs": 1, "model": "%s", '
    b'"max_tokens": 2, "stop": ["]", "}", "\\"", ","]}',
    b'{"model":"%s","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"temperature":0.5e0,"n":1}',
    # What a client sends back of an earlier answer (nulls are absences), and nested keys a Struct takes freely.
    b'{"model":"%s","max_tokens":2,"stream_options":null,"messages":[{"role":"user","content":"hi"},{"role":'
    b'"assistant","content":"Hello","refusal":null,"tool_calls":null,"audio":null,"function_call":null,'
    b'"reasoning_content":"thought"},{"role":"user","content":"again", "name": "bob"}],"metadata":{"any_key":"v"}}',
])
def test_bodies_with_only_known_fields_pass_whatever_their_shape(stack, body):
    resp = post(stack, content=body.replace(b"%s", TEST_MODEL.encode()), headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(("body", "unknown"), [
    (b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "max_token": 2}', "max_token"),
    (b'{"model": "%s", "stream": true, "messages": [], "frequency_penality": 1}', "frequency_penality"),
    (b'{"metadata": {"a": [1, 2]}, "tools ": [], "model": "%s", "messages": []}', "tools?"),
    (b'{"temperature": 1e-1, "x": {"messages": []}, "model": "%s", "messages": []}', "x"),
])
def test_an_unknown_top_level_field_is_refused_before_any_work(stack, body, unknown):
    err = openai_error(post(stack, content=body.replace(b"%s", TEST_MODEL.encode()),
                            headers={"content-type": "application/json"}), 400, "unknown_parameter")
    assert err["param"] == unknown


@pytest.mark.parametrize(("body", "unknown"), [
    (b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "contnet": "hi"}]}',
     "messages[1].contnet"),
    (b'{"model": "%s", "messages": [{"role": "user", "content": "hi", "nmae": "bob"}]}', "messages[0].nmae"),
    (b'{"model": "%s", "stream": true, "stream_options": {"include_usag": true}, "messages": [{"role": "user", '
     b'"content": "hi"}]}', "stream_options.include_usag"),
])
def test_an_unknown_field_one_level_in_is_refused_naming_its_path(stack, body, unknown):
    err = openai_error(post(stack, content=body.replace(b"%s", TEST_MODEL.encode()),
                            headers={"content-type": "application/json"}), 400, "unknown_parameter")
    assert err["param"] == unknown and err["message"] == f"Unrecognized request argument supplied: {unknown}"


def test_an_assistants_earlier_refusal_is_its_text_in_the_history(client):
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "refusal": "I cannot help"},
               {"role": "user", "content": "why"}]
    r = client.chat.completions.create(model=TEST_MODEL, messages=history, max_tokens=40)
    assert "cannot help" in r.choices[0].message.content  # the deterministic engine echoes the prompt's last words
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=TEST_MODEL, max_tokens=2,
                                       messages=[{"role": "user", "content": "hi", "refusal": "no"}])
    assert e.value.param == "messages[0].refusal"


def test_what_an_earlier_answers_message_carries_back_is_accepted_and_audio_refused(stack):
    # The SDK's own message objects sent back (parsed, annotations) pass; audio in the history is not served.
    earlier = {"role": "assistant", "content": "{\"a\": 1}", "parsed": {"a": 1}, "annotations": [], "refusal": None}
    body = {"model": TEST_MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}, earlier,
                                                               {"role": "user", "content": "more"}]}
    assert post(stack, json=body).status_code == 200
    body["messages"][1] = dict(earlier, audio={"id": "a1"})
    err = openai_error(post(stack, json=body), 400, "unsupported_parameter")
    assert err["param"] == "messages[1].audio"
