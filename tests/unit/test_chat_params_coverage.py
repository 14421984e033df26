"""Every parameter of OpenAI's CreateChatCompletionRequest is either served or a 400 naming it (issue 14's "accepted
is honoured"): the served ones parse, the refused ones say which field."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from llmaas.common.errors import ApiError
from llmaas.router.params import parse_chat_request
from llmaas.router.pipeline import _sampling
from llmaas.router.v1 import router_pb2

USER = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f"}}]


def parse(**body):
    body.setdefault("model", "m")
    body.setdefault("messages", USER)
    return parse_chat_request(json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest()))


SERVED = {
    "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.5, "top_p": 0.9, "max_tokens": 5,
    "max_completion_tokens": 5, "n": 3, "stop": ["\n"], "presence_penalty": 1, "frequency_penalty": -1, "seed": 7,
    "user": "u-1", "tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": False,
    "response_format": {"type": "text"}, "logprobs": True, "top_logprobs": 3, "metadata": {"k": "v"},
    "service_tier": "auto", "store": False, "modalities": ["text"], "top_k": 5, "prompt_cache_key": "k",
    "safety_identifier": "s", "logit_bias": {"50256": -100, "13": 5},
    # Served to a model whose catalogue entry takes that effort, a 400 naming it otherwise (tests/unit/test_reasoning.py).
    "reasoning_effort": "low",
}
REFUSED = {
    "n": 129, "logit_bias": {"50256": -101}, "prediction": {"type": "content", "content": "x"},
    "audio": {"voice": "alloy", "format": "mp3"}, "web_search_options": {}, "functions": [{"name": "f"}],
    "function_call": "auto", "verbosity": "low", "modalities": ["text", "audio"], "service_tier": "priority",
    "store": True, "reasoning_effort": "extreme", "top_logprobs": 2,
}


def test_the_served_parameters_together():
    p = parse(**SERVED)
    sampling = _sampling(p, 5)
    assert (p.stream, p.include_usage, p.stop, p.user, p.logprobs, p.top_logprobs) == (True, True, ("\n",), "u-1",
                                                                                       True, 3)
    assert {k: sampling[k] for k in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed",
                                     "top_k", "logprobs", "stop")} == {
        "temperature": 0.5, "top_p": 0.9, "presence_penalty": 1, "frequency_penalty": -1, "seed": 7, "top_k": 5,
        "logprobs": 3, "stop": ["\n"]}
    assert p.tools.parallel is False and p.n == 3
    assert sampling["logit_bias"] == {"50256": -100.0, "13": 5.0}  # vLLM's JSON form: string keys


@pytest.mark.parametrize("field", sorted(REFUSED))
def test_each_unserved_value_is_a_400_naming_it(field):
    with pytest.raises(ApiError) as e:
        parse(**{field: REFUSED[field]})  # (top_logprobs: without logprobs)
    assert e.value.param == field and e.value.status.name == "INVALID_ARGUMENT"


def test_every_field_of_the_spec_is_covered():
    """The request message's fields are OpenAI's: each is in one of the two lists (or is model/messages)."""
    fields = {f.name for f in router_pb2.CreateChatCompletionRequest.DESCRIPTOR.fields}
    assert fields - {"model", "messages"} <= set(SERVED) | set(REFUSED)
