"""Function calling: tools/tool_choice validation, the guided decoding a required or named call gets, the prompt
(Hermes format for a template without tools, structured for one with), and the model's output read back as OpenAI tool
calls, whole and streamed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from llmaas.common.errors import ApiError
from llmaas.router import template
from llmaas.router.chat_output import ChatOutput
from llmaas.router.kserve import Delta
from llmaas.router.params import parse_chat_request
from llmaas.router.pipeline import _sampling
from llmaas.router.tool_output import ToolStream, parse_output
from llmaas.router.tool_prompt import tool_guard_parts
from llmaas.router.v1 import router_pb2

SMOLLM2 = (Path(__file__).resolve().parents[2] / "deploy/catalog/chat_templates/smollm2.jinja").read_text()
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
           "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time"}}]
USER = [{"role": "user", "content": "Weather in Paris?"}]


def parse(**body):
    body.setdefault("model", "m")
    body.setdefault("messages", USER)
    return parse_chat_request(json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest()))


def refused(**body) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse(**body)
    return e.value


def test_tool_choice_defaults_and_values():
    assert parse(tools=TOOLS).tools.choice == "auto"
    assert parse(tools=TOOLS, tool_choice="required").tools.choice == "required"
    named = parse(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}).tools
    assert (named.choice, named.function) == ("function", "get_time")
    assert parse(tools=TOOLS, parallel_tool_calls=False).tools.parallel is False
    assert parse().tools is None


@pytest.mark.parametrize("body,param", [
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "thing"}}}]},
     "tools[0].function.parameters.type"),
    ({"tools": [{"type": "function", "function": {"name": "f", "colour": "red"}}]}, "tools[0].function.colour"),
    ({"tools": TOOLS + TOOLS[:1]}, "tools"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
])
def test_bad_tools_are_a_400_naming_the_param(body, param):
    assert refused(**body).param == param


def test_history_with_calls_and_results():
    messages = USER + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"}]
    p = parse(tools=TOOLS, messages=messages)
    assert p.messages[1].tool_calls[0].name == "get_weather" and p.messages[2].tool_call_id == "call_1"
    assert refused(messages=USER + [{"role": "tool", "content": "x"}]).param == "messages[1].tool_call_id"
    assert refused(messages=USER + [{"role": "tool", "tool_call_id": "zz", "content": "x"}]).param == \
        "messages[1].tool_call_id"
    bad_call = [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]}]
    assert refused(messages=USER + bad_call).param == "messages[1].tool_calls[0].function.arguments"
    # Guard sees the tool definitions and the calls made.
    texts = [part.text for part in tool_guard_parts(p)]
    assert "Weather in a city" in texts[0] and texts[1] == 'get_weather {"city":"Paris"}'


def test_guided_decoding_for_required_and_named_calls():
    required = _sampling(parse(tools=TOOLS, tool_choice="required", parallel_tool_calls=False), 64)
    schema = required["guided_decoding"]["json"]
    assert schema["type"] == "array" and schema["minItems"] == 1 and schema["maxItems"] == 1
    names = [alt["properties"]["name"]["const"] for alt in schema["items"]["anyOf"]]
    assert names == ["get_weather", "get_time"]
    assert schema["items"]["anyOf"][0]["properties"]["arguments"] == WEATHER
    named = _sampling(parse(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}), 64)
    assert named["guided_decoding"] == {"json": WEATHER}
    assert "guided_decoding" not in _sampling(parse(tools=TOOLS), 64)
    # A function without parameters takes none.
    no_args = _sampling(parse(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}), 64)
    assert no_args["guided_decoding"]["json"]["properties"] == {}


def test_hermes_prompt_for_a_template_without_tools():
    messages = USER + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"}]
    p = parse(tools=TOOLS, messages=messages)
    prompt = template.render_prompt(SMOLLM2, p.messages, tools=p.tools)
    assert prompt.startswith("<|im_start|>system\n# Tools\n")
    assert '{"type": "function", "function": {"name": "get_weather"' in prompt
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n' \
           '</tool_call><|im_end|>' in prompt
    assert "<|im_start|>tool\n<tool_response>\n18C\n</tool_response><|im_end|>" in prompt
    # tool_choice none: the tools are not offered.
    none = parse(tools=TOOLS, tool_choice="none")
    assert "<tools>" not in template.render_prompt(SMOLLM2, none.messages, tools=none.tools)
    # Without tools the prompt is what it always was.
    plain = parse()
    assert template.render_prompt(SMOLLM2, plain.messages) == template.render_prompt(SMOLLM2, plain.messages, tools=None)


def test_a_template_that_knows_tools_gets_them_structured():
    source = ("{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% for m in messages %}{{ m.role }}:"
              "{% if m.tool_calls %}{{ m.tool_calls[0].function.arguments.city }}{% endif %}"
              "{{ m.tool_call_id }}{{ m.content }};{% endfor %}")
    messages = USER + [
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"}]
    p = parse(tools=TOOLS, messages=messages)
    assert template.render_prompt(source, p.messages, tools=p.tools) == \
        "[get_weather][get_time]user:Weather in Paris?;assistant:Paris;tool:c118C;"


def test_output_parsing():
    spec = parse(tools=TOOLS).tools
    content, calls = parse_output('Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                                  '</tool_call>', spec)
    assert content == "Sure." and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].id.startswith("call_") and len(calls[0].id) == 29
    # Not a declared tool: the text stays text.
    text = '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    assert parse_output(text, spec) == (text, [])
    assert parse_output("Hello", spec) == ("Hello", [])
    required = parse(tools=TOOLS, tool_choice="required").tools
    _, calls = parse_output('[{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": '
                            '{"city": "Oslo"}}]', required)
    assert [c.name for c in calls] == ["get_time", "get_weather"]
    assert parse_output('[{"name": "get_ti', required) == ('[{"name": "get_ti', [])  # cut by max_tokens
    named = parse(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}).tools
    assert parse_output('{"city": "Rome"}', named)[1][0].arguments == '{"city": "Rome"}'


def _assemble(parts: list[dict]) -> tuple[str, list[dict]]:
    """What the OpenAI SDK's stream helper does with the deltas."""
    content, calls = "", {}
    for part in parts:
        content += part.get("content") or ""
        for tc in part.get("tool_calls", []):
            call = calls.setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
            if "id" in tc:
                assert call["id"] is None and tc["type"] == "function"  # id and name come first, once
                call["id"], call["name"] = tc["id"], tc["function"]["name"]
            call["arguments"] += tc["function"].get("arguments", "")
    return content, [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("split", [1, 3, 7, 1000])
def test_streamed_auto_calls_in_any_split(split):
    text = ('Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    stream = ToolStream(parse(tools=TOOLS).tools)
    parts = [d for i in range(0, len(text), split) for d in stream.feed(text[i:i + split])] + stream.end()
    content, calls = _assemble(parts)
    assert content == "Let me check."
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                                        ("get_time", {})]
    # parallel_tool_calls false: one call.
    stream = ToolStream(parse(tools=TOOLS, parallel_tool_calls=False).tools)
    parts = [d for i in range(0, len(text), split) for d in stream.feed(text[i:i + split])] + stream.end()
    assert len(_assemble(parts)[1]) == 1


def test_streamed_text_with_a_lookalike_tag_is_text():
    stream = ToolStream(parse(tools=TOOLS).tools)
    parts = stream.feed("a <tool") + stream.feed("_cal") + stream.feed("l but not") + stream.end()
    assert _assemble(parts) == ("a <tool_call but not", [])


def test_streamed_named_call_streams_argument_fragments():
    stream = ToolStream(parse(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}).tools)
    parts = stream.feed('{"city"') + stream.feed(': "Oslo"}') + stream.end()
    assert parts[0]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ""}
    assert len(parts) == 3
    assert _assemble(parts)[1][0]["arguments"] == '{"city": "Oslo"}'


def test_chat_output_finish_reason_and_message():
    p = parse(tools=TOOLS, tool_choice="required")
    out = ChatOutput.for_params(p)
    message, logprobs = out.message([Delta('[{"name": "get_time", "arguments": {}}]', "stop", 5, 9, True)])
    assert message["content"] is None and message["tool_calls"][0]["function"]["name"] == "get_time"
    assert out.finish_reason("stop") == "tool_calls" and out.finish_reason("length") == "length"
    assert logprobs is None
    assert ChatOutput.for_params(parse()) is None  # plain requests keep the plain path
    assert ChatOutput.for_params(parse(tools=TOOLS, tool_choice="none")) is None


LOGPROBS = json.dumps([{"17": {"logprob": -0.5, "rank": 2, "decoded_token": " Hi"},
                        "4": {"logprob": -0.25, "rank": 1, "decoded_token": " Hello"},
                        "9": {"logprob": -3.0, "rank": 3, "decoded_token": "é"}}]).encode()


def test_logprobs_in_openai_shape():
    out = ChatOutput.for_params(parse(logprobs=True, top_logprobs=2))
    message, logprobs = out.message([Delta(" Hi", None, 3, 1, False, LOGPROBS),
                                     Delta("", "stop", None, 1, True, json.dumps(
                                         [{"2": {"logprob": 0.0, "rank": 1, "decoded_token": ""}}]).encode())])
    assert message == {"role": "assistant", "content": " Hi", "refusal": None}
    (entry,) = logprobs["content"]  # the end-of-sequence token is not shown
    assert entry["token"] == " Hi" and entry["logprob"] == -0.5 and entry["bytes"] == [32, 72, 105]
    assert [t["token"] for t in entry["top_logprobs"]] == [" Hello", " Hi"]
    assert logprobs["refusal"] is None
    # top_logprobs 0: the sampled token only.
    _, logprobs = ChatOutput.for_params(parse(logprobs=True)).message([Delta(" Hi", None, 3, 1, False, LOGPROBS)])
    assert logprobs["content"][0]["top_logprobs"] == []
    # Streamed: each chunk carries its tokens' logprobs.
    out = ChatOutput.for_params(parse(logprobs=True, top_logprobs=1))
    (delta, chunk_logprobs), = out.deltas(Delta(" Hi", None, 3, 1, False, LOGPROBS))
    assert delta == {"content": " Hi"} and chunk_logprobs["content"][0]["top_logprobs"][0]["token"] == " Hello"
    assert _sampling(parse(logprobs=True, top_logprobs=3), 8)["logprobs"] == 3
    assert "logprobs" not in _sampling(parse(), 8)
    assert refused(top_logprobs=2).param == "top_logprobs"  # without logprobs: OpenAI's 400


def test_typed_twins_carry_tool_calls_and_logprobs():
    from types import SimpleNamespace

    from llmaas.router import openai_json as oj
    from llmaas.router.pipeline import Usage

    p = parse(tools=TOOLS, tool_choice="required", logprobs=True, top_logprobs=1)
    run = SimpleNamespace(id="chatcmpl-1", created=1, model="m", triton_model="t", finish_reason="stop",
                          usage=Usage(3, 2), params=p, output=ChatOutput.for_params(p), reasoning=None, choices=())
    typed = oj.typed_shaped_completion(run, [[Delta('[{"name": "get_time", "arguments": {}}]', "stop", 3, 2, True,
                                                    LOGPROBS)]])
    choice = typed.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "get_time"
    assert not choice.message.HasField("content") and choice.logprobs.content[0].token == " Hi"
    run.output = ChatOutput.for_params(p)
    chunks = oj.typed_shaped_chunks(run, run.output.deltas(Delta('[{"name": "get_time", "arguments": {}}]', None, 3,
                                                                  1, False))) + \
        oj.typed_shaped_chunks(run, run.output.end())
    assert chunks[0].choices[0].delta.tool_calls[0].function.name == "get_time"
    assert oj.typed_final_chunk(run).choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("split", [1, 2, 5, 1000])
def test_streamed_required_calls_stream_their_arguments(split):
    text = ('[{"name": "get_weather", "arguments": {"city": "Pa\\"ris {x}", "n": [1, {"a": 2}]}}, '
            '{"name": "get_time", "arguments": {}}]')
    stream = ToolStream(parse(tools=TOOLS, tool_choice="required").tools)
    parts = [d for i in range(0, len(text), split) for d in stream.feed(text[i:i + split])] + stream.end()
    content, calls = _assemble(parts)
    assert content == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": 'Pa"ris {x}', "n": [1, {"a": 2}]}), ("get_time", {})]
    if split == 1:
        assert sum(1 for p in parts if "id" not in p["tool_calls"][0]) > 10  # fragments as they come
    # Arguments before the name (another backend's order): each call whole when its object closes.
    stream = ToolStream(parse(tools=TOOLS, tool_choice="required").tools)
    parts = stream.feed('[{"arguments": {"city": "Oslo"}, "name": "get_weather"}]') + stream.end()
    assert [(c["name"], json.loads(c["arguments"])) for c in _assemble(parts)[1]] == [("get_weather",
                                                                                       {"city": "Oslo"})]
    # Cut before any call: the text.
    stream = ToolStream(parse(tools=TOOLS, tool_choice="required").tools)
    assert _assemble(stream.feed('[{"na') + stream.end()) == ('[{"na', [])
