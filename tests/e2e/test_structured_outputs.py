"""Structured outputs through the whole stack with the unmodified OpenAI SDK: response_format json_schema and
json_object on the real default model (SmolLM2-135M on llama.cpp, constrained by a grammar), and the 400s."""

from __future__ import annotations

import json

import openai
import pytest

from tests.support.stack import REAL_MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CITY = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"], "additionalProperties": False}
CITY_FORMAT = {"type": "json_schema", "json_schema": {"name": "city_info", "schema": CITY, "strict": True}}
MESSAGES = [{"role": "user", "content": "What is the capital of France and its population? Answer in JSON."}]
MAX_TOKENS = 64


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0, timeout=120)


def _matches_city(content: str) -> None:
    data = json.loads(content)
    assert set(data) == {"city", "population"}
    assert isinstance(data["city"], str) and isinstance(data["population"], int)
    assert not isinstance(data["population"], bool)


def test_json_schema_output_follows_the_schema(client):
    r = client.chat.completions.create(model=REAL_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0,
                                       response_format=CITY_FORMAT)
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    _matches_city(choice.message.content)


def test_json_schema_streamed(client):
    chunks = list(client.chat.completions.create(model=REAL_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS,
                                                 temperature=0, response_format=CITY_FORMAT, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    _matches_city(content)


def test_json_object_output_is_a_json_object(client):
    r = client.chat.completions.create(model=REAL_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0,
                                       response_format={"type": "json_object"})
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # any object is allowed, so the model may still be writing it at max_tokens (OpenAI answers the same)
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.lstrip().startswith("{")


def test_max_tokens_mid_object_is_length(client):
    r = client.chat.completions.create(model=REAL_MODEL, messages=MESSAGES, max_tokens=3, temperature=0,
                                       response_format=CITY_FORMAT)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content.lstrip().startswith("{")


@pytest.mark.parametrize("fmt, param", [
    ({"type": "json_schema", "json_schema": {"name": "city_info", "schema": {"type": "objekt"}}},
     "response_format.json_schema.schema.type"),
    ({"type": "json_schema", "json_schema": {"name": "city info", "schema": CITY}}, "response_format.json_schema.name"),
    ({"type": "yaml"}, "response_format.type"),
    # Strict, without additionalProperties: false (OpenAI's Structured Outputs rule).
    ({"type": "json_schema", "json_schema": {"name": "city_info", "strict": True, "schema": {
        k: v for k, v in CITY.items() if k != "additionalProperties"}}}, "response_format"),
    # Structurally valid, but llama.cpp's schema converter takes only anchored patterns: the backend refuses it.
    ({"type": "json_schema", "json_schema": {"name": "code", "schema": {
        "type": "object", "properties": {"code": {"type": "string", "pattern": "[A-Z]+"}}}}}, "response_format"),
])
def test_invalid_response_format_is_a_400_naming_it(client, fmt, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=REAL_MODEL, messages=MESSAGES, max_tokens=8, response_format=fmt)
    error = e.value.body
    assert error["param"] == param and error["type"] == "invalid_request_error"
