"""response_format: the router's validation and the guided decoding it sends; the CPU backend's parsing of it and
its grammar selection (llama.cpp)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from llmaas.common.errors import ApiError
from llmaas.router.params import parse_chat_request
from llmaas.router.pipeline import _sampling
from llmaas.router.v1 import router_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "triton" / "backends" / "vllm"))
from llmaas_cpu.deterministic import DeterministicEngine  # noqa: E402
from llmaas_cpu.sampling import SamplingError, parse_sampling_parameters  # noqa: E402

CITY = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"], "additionalProperties": False}


def parse(response_format):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": response_format}
    return parse_chat_request(json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest()))


def refused(response_format) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse(response_format)
    assert e.value.type == "invalid_request_error" and e.value.param.startswith("response_format")
    return e.value


def schema_format(schema, name="city_info", **extra):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, **extra}}


def test_text_and_absent_are_free_text():
    assert parse({"type": "text"}).guided_decoding is None
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert parse_chat_request(json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest())) \
        .guided_decoding is None


def test_json_object_and_json_schema_become_vllm_guided_decoding():
    assert parse({"type": "json_object"}).guided_decoding == {"json_object": True}
    params = parse(schema_format(CITY, strict=True))
    assert params.guided_decoding == {"json": CITY}
    assert _sampling(params, 32) == {"max_tokens": 32, "guided_decoding": {"json": CITY}}
    assert "guided_decoding" not in _sampling(parse({"type": "text"}), 32)


def test_schema_counts_arrive_as_integers():
    # Struct numbers are doubles; a grammar converter formats minItems into a repetition count.
    schema = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}
    sent = parse(schema_format(schema)).guided_decoding["json"]
    assert sent == schema and isinstance(sent["maxItems"], int)


@pytest.mark.parametrize("fmt, param", [
    ({"type": "xml"}, "response_format.type"),
    ({}, "response_format.type"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"schema": CITY}}, "response_format.json_schema.name"),
    (schema_format(CITY, name="has space"), "response_format.json_schema.name"),
    (schema_format(CITY, name="x" * 65), "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "n"}}, "response_format.json_schema.schema"),
    (schema_format("not a schema"), "response_format.json_schema.schema"),
    (schema_format({"type": "objekt"}), "response_format.json_schema.schema.type"),
    (schema_format({"type": "object", "properties": {"a": {"type": 3}}}),
     "response_format.json_schema.schema.properties.a.type"),
    (schema_format({"type": "object", "properties": []}), "response_format.json_schema.schema.properties"),
    (schema_format({"type": "object", "required": "a"}), "response_format.json_schema.schema.required"),
    (schema_format({"type": "array", "items": 5}), "response_format.json_schema.schema.items"),
    (schema_format({"anyOf": []}), "response_format.json_schema.schema.anyOf"),
    (schema_format({"type": "string", "pattern": "("}), "response_format.json_schema.schema.pattern"),
    (schema_format({"type": "array", "maxItems": 1.5}), "response_format.json_schema.schema.maxItems"),
    (schema_format(CITY, strict="yes"), "response_format.json_schema.strict"),
])
def test_bad_response_format_is_a_400_naming_it(fmt, param):
    assert refused(fmt).param == param


def test_deep_or_huge_schemas_are_refused():
    deep: dict = {"type": "string"}
    for _ in range(40):
        deep = {"type": "array", "items": deep}
    refused(schema_format(deep))
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100}
                                             for i in range(800)}}
    refused(schema_format(huge))


# --- the CPU backend ---

def test_backend_parses_guided_decoding():
    p = parse_sampling_parameters(json.dumps({"max_tokens": 8, "guided_decoding": {"json": CITY}}))
    assert p.guided and json.loads(p.guided_json) == CITY and not p.guided_json_object
    p = parse_sampling_parameters(json.dumps({"guided_decoding": {"json_object": True}}))
    assert p.guided and p.guided_json is None and p.guided_json_object
    # Triton's vLLM backend also takes the dict as JSON text, and the schema as JSON text.
    p = parse_sampling_parameters(json.dumps({"guided_decoding": json.dumps({"json": json.dumps(CITY)})}))
    assert json.loads(p.guided_json) == CITY
    assert not parse_sampling_parameters(json.dumps({"max_tokens": 8})).guided


@pytest.mark.parametrize("guided", [
    {"regex": "[a-z]+"}, {"choice": ["a", "b"]}, {"grammar": "root ::= \"a\""}, {"json": CITY, "backend": "x"},
    {}, {"json": CITY, "json_object": True}, {"json": 3}, {"json_object": "yes"}, [1], "not json",
])
def test_backend_refuses_what_it_cannot_enforce(guided):
    with pytest.raises(SamplingError):
        parse_sampling_parameters(json.dumps({"guided_decoding": guided}))


def test_backend_refuses_structured_outputs_key():
    with pytest.raises(SamplingError):
        parse_sampling_parameters(json.dumps({"structured_outputs": {"json": CITY}}))


def test_deterministic_engine_refuses_guided_decoding():
    engine = DeterministicEngine.from_config({"model": "llmaas/deterministic"})
    params = parse_sampling_parameters(json.dumps({"guided_decoding": {"json_object": True}}))
    with pytest.raises(SamplingError):
        next(iter(engine.generate("p", [1], params, False)))


def test_llama_grammar_selection():
    pytest.importorskip("llama_cpp")
    from llmaas_cpu.llama_engine import grammar_for  # noqa: PLC0415

    assert grammar_for(parse_sampling_parameters("{}")) is None
    obj = grammar_for(parse_sampling_parameters(json.dumps({"guided_decoding": {"json_object": True}})))
    assert obj._grammar.lstrip().startswith("root   ::= object")
    city = grammar_for(parse_sampling_parameters(json.dumps({"guided_decoding": {"json": CITY}})))
    assert '\\"city\\"' in city._grammar and '\\"population\\"' in city._grammar
    bad = parse_sampling_parameters(json.dumps({"guided_decoding": {"json": {"$ref": "https://example.com/s"}}}))
    with pytest.raises(SamplingError):
        grammar_for(bad)


def test_backend_schema_errors_are_a_400_naming_response_format():
    from llmaas.router.triton import _backend_error  # noqa: PLC0415

    error = _backend_error("guided_decoding 'json' schema is not supported by the CPU engine: Pattern must start")
    assert error.param == "response_format" and error.type == "invalid_request_error"
    assert _backend_error("The provided JSON schema contains features not supported by xgrammar.").param \
        == "response_format"
    assert _backend_error("sampling parameter 'top_p' must be in (0, 1]").param == "top_p"


@pytest.mark.parametrize("schema,context,rule", [
    ({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "()",
     "'additionalProperties' is required to be supplied and to be false."),
    ({**CITY, "required": ["city"]}, "()", "Missing 'population'."),
    ({**CITY, "properties": {**CITY["properties"], "home": {"type": "object", "properties": {"x": {"type": "number"}},
                                                           "required": ["x"]}}, "required": ["city", "population", "home"]},
     "('properties', 'home')", "'additionalProperties' is required"),
    ({"type": "array", "items": CITY}, "()", "schema must be a JSON Schema of 'type: \"object\"'"),
    ({**CITY, "$defs": {"p": {"type": "object", "properties": {"y": {"type": "string"}}, "additionalProperties": False}}},
     "('$defs', 'p')", "Missing 'y'."),
])
def test_a_strict_schema_follows_openais_rules(schema, context, rule):
    error = refused(schema_format(schema, strict=True))
    assert error.param == "response_format" and error.message.startswith(
        f"Invalid schema for response_format 'city_info': In context={context}, ")
    assert rule in error.message
    assert parse(schema_format(schema)).guided_decoding == {"json": schema}  # not strict: served as given


def test_a_strict_tool_follows_the_same_rules():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f", "strict": True, "parameters": {
            "type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}}}]}
    with pytest.raises(ApiError) as e:
        parse_chat_request(json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest()))
    assert e.value.param == "tools[0].function.parameters" and "function 'f'" in e.value.message
    body["tools"][0]["function"]["parameters"]["required"] = ["a"]
    assert parse_chat_request(json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest())).tools.tools[0].strict
