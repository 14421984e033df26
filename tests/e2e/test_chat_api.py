"""The rest of the chat API through the stack (Envoy, the services, Triton) with the unmodified OpenAI SDK: tools
(required and named calls enforced by llama.cpp's grammar on the real default model, streamed deltas assembled by the
SDK, a full round trip, LangChain's tool binding), logprobs, /v1/completions, and the 400s for what is not served."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.support.stack import REAL_MODEL, TEST_MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                           "parameters": WEATHER}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
GET_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0, timeout=300)


def _valid_weather_args(arguments: str) -> dict:
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"} and isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit")
    return args


def bad_request(call) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as e:
        call()
    return e.value


# --- tools ------------------------------------------------------------------------------------------------------------
def test_required_tool_call_has_arguments_that_match_the_schema(client):
    r = client.chat.completions.create(model=REAL_MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=48, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    assert choice.message.content is None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    _valid_weather_args(call.function.arguments)


def test_named_tool_call_streamed_is_assembled_by_the_sdk(client):
    with client.chat.completions.stream(model=REAL_MODEL, messages=ASK, tools=TOOLS, tool_choice=GET_WEATHER,
                                        max_tokens=48, temperature=0) as stream:
        fragments = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    assert len(fragments) > 1  # the arguments arrive as the model writes them
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    _valid_weather_args(choice.message.tool_calls[0].function.arguments)


def test_streamed_tool_call_deltas_in_openais_shape(client):
    # One call (CI once saw the model start a second one, parallel calls allowed, and run into max_tokens).
    chunks = list(client.chat.completions.create(model=REAL_MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                                 parallel_tool_calls=False, max_tokens=48, temperature=0,
                                                 stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    # Each call its own index, in order: its first delta names it, the next ones carry its arguments.
    by_call: dict[int, list] = {}
    for d in deltas:
        by_call.setdefault(d.index, []).append(d)
    assert list(by_call) == list(range(len(by_call)))
    for calls in by_call.values():
        first = calls[0]
        assert first.id.startswith("call_") and first.type == "function"
        assert first.function.name == "get_weather" and first.function.arguments == ""
        assert all(d.id is None and d.function.name is None for d in calls[1:])
    _valid_weather_args("".join(d.function.arguments for d in by_call[0]))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_async_client_streams_a_required_call(stack):
    async def run():
        async with openai.AsyncOpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0,
                                      timeout=300) as client:
            async with client.chat.completions.stream(model=REAL_MODEL, messages=ASK, tools=TOOLS,
                                                      tool_choice="required", parallel_tool_calls=False,
                                                      max_tokens=48, temperature=0) as stream:
                fragments = [e async for e in stream if e.type == "tool_calls.function.arguments.delta"]
                return fragments, await stream.get_final_completion()

    fragments, final = asyncio.run(run())
    assert len(fragments) > 1 and final.choices[0].finish_reason == "tool_calls"
    _valid_weather_args(final.choices[0].message.tool_calls[0].function.arguments)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(client, stream):
    r = client.chat.completions.create(model=REAL_MODEL, messages=ASK, tools=TOOLS, tool_choice=GET_WEATHER,
                                       max_tokens=48, temperature=0)
    call = r.choices[0].message.tool_calls[0]
    history = ASK + [r.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'}]
    answer = client.chat.completions.create(model=REAL_MODEL, messages=history, tools=TOOLS, max_tokens=24,
                                            temperature=0, stream=stream)
    if stream:
        chunks = list(answer)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert reasons and reasons[-1] in ("stop", "length", "tool_calls")
        assert text or any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    else:
        choice = answer.choices[0]
        assert choice.finish_reason in ("stop", "length", "tool_calls")
        assert choice.message.content or choice.message.tool_calls


def test_langchain_binds_tools_and_gets_a_call(stack):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=REAL_MODEL, base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0,
                     temperature=0, max_tokens=48)
    message = llm.bind_tools(TOOLS, tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert message.tool_calls[0]["name"] == "get_weather"
    assert set(message.tool_calls[0]["args"]) == {"city", "unit"}


def test_tools_refusals_name_the_param(client):
    assert bad_request(lambda: client.chat.completions.create(
        model=TEST_MODEL, messages=ASK, tools=TOOLS)).param == "tools"  # the model declares no tools
    assert bad_request(lambda: client.chat.completions.create(
        model=REAL_MODEL, messages=ASK, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "nope"}})).param == "tool_choice.function.name"
    assert bad_request(lambda: client.chat.completions.create(
        model=REAL_MODEL, messages=ASK, tool_choice="required")).param == "tool_choice"
    assert bad_request(lambda: client.chat.completions.create(
        model=REAL_MODEL, messages=ASK + [{"role": "tool", "tool_call_id": "call_x", "content": "1"}],
        tools=TOOLS)).param == "messages[1].tool_call_id"


# --- logprobs ---------------------------------------------------------------------------------------------------------
def test_logprobs_non_streamed_and_streamed(client):
    r = client.chat.completions.create(model=REAL_MODEL, messages=ASK, max_tokens=6, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and t.bytes == list(t.token.encode()) and len(t.top_logprobs) == 3
        assert [x.logprob for x in t.top_logprobs] == sorted((x.logprob for x in t.top_logprobs), reverse=True)
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob, abs=1e-4)  # greedy: the best token
    chunks = list(client.chat.completions.create(model=REAL_MODEL, messages=ASK, max_tokens=6, temperature=0,
                                                 logprobs=True, top_logprobs=3, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]
    # The deterministic engine: every token certain.
    r = client.chat.completions.create(model=TEST_MODEL, messages=ASK, max_tokens=4, logprobs=True)
    assert [t.logprob for t in r.choices[0].logprobs.content] == [0.0] * 4
    assert client.chat.completions.create(model=TEST_MODEL, messages=ASK, max_tokens=2).choices[0].logprobs is None


# --- /v1/completions ---------------------------------------------------------------------------------------------------
def test_completions(client):
    r = client.completions.create(model=TEST_MODEL, prompt="The quick brown fox", max_tokens=4)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == TEST_MODEL
    assert r.choices[0].text == "Echo: The quick" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4 and r.usage.prompt_tokens > 0
    echoed = client.completions.create(model=TEST_MODEL, prompt=["Hi there"], max_tokens=2, echo=True)
    assert echoed.choices[0].text.startswith("Hi thereEcho:")
    chunks = list(client.completions.create(model=TEST_MODEL, prompt="The quick brown fox", max_tokens=4,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert chunks[-1].usage.completion_tokens == 4
    real = client.completions.create(model=REAL_MODEL, prompt="The capital of France is", max_tokens=4,
                                     temperature=0, logprobs=2)
    lp = real.choices[0].logprobs
    assert "".join(lp.tokens) == real.choices[0].text and len(lp.top_logprobs[0]) <= 2
    assert lp.text_offset[0] == 0 and all(x <= 0 for x in lp.token_logprobs)


@pytest.mark.parametrize("extra,param", [({"suffix": "end"}, "suffix"), ({"prompt": [[1], [2]]}, "prompt"),
                                         ({"prompt": [1, 2, 3]}, "prompt"), ({"n": 129}, "n"),
                                         ({"echo": True, "logprobs": 1}, "echo"), ({"logprobs": 6}, "logprobs")])
def test_completions_refusals_name_the_param(client, extra, param):
    body = {"model": TEST_MODEL, "prompt": "hi", "max_tokens": 2, **extra}
    assert bad_request(lambda: client.completions.create(**body)).param == param


# --- every other parameter ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra,param", [
    ({"store": True}, "store"), ({"service_tier": "priority"}, "service_tier"),
    ({"modalities": ["text", "audio"]}, "modalities"), ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"reasoning_effort": "low"}, "reasoning_effort"), ({"n": 129}, "n"),
    ({"extra_body": {"prediction": {"type": "content", "content": "x"}}}, "prediction"),
    ({"extra_body": {"audio": {"voice": "alloy", "format": "mp3"}}}, "audio"),
    ({"extra_body": {"functions": [{"name": "f"}]}}, "functions"),
])
def test_unserved_chat_parameters_are_a_400_naming_them(client, extra, param):
    err = bad_request(lambda: client.chat.completions.create(model=TEST_MODEL, messages=ASK, max_tokens=2, **extra))
    assert err.param == param


def test_served_chat_parameters_together(client):
    r = client.chat.completions.create(model=TEST_MODEL, messages=ASK, max_tokens=3, seed=1, stop=["zz"], user="u1",
                                       metadata={"k": "v"}, store=False, service_tier="auto", modalities=["text"],
                                       presence_penalty=0.5, frequency_penalty=0.5, n=1)
    assert r.choices[0].finish_reason == "length"

