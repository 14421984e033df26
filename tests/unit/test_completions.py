"""/v1/completions: the request parsed onto the chat pipeline's parameters, and OpenAI's text_completion shapes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from google.protobuf import json_format
from llmaas.common.errors import ApiError
from llmaas.router import completions
from llmaas.router.kserve import Delta
from llmaas.router.pipeline import Usage, _sampling
from llmaas.router.v1 import router_pb2


def parse(**body):
    body.setdefault("model", "m")
    body.setdefault("prompt", "Once upon a time")
    return completions.parse_completion_request(json_format.ParseDict(body, router_pb2.CreateCompletionRequest()))


def refused(**body) -> str:
    with pytest.raises(ApiError) as e:
        parse(**body)
    return e.value.param


def test_a_prompt_becomes_the_raw_prompt():
    p = parse(prompt=["Hello"], temperature=0.2, stop="\n", logprobs=2, seed=3)
    assert p.raw_prompt and p.messages[0].content == "Hello" and p.max_tokens == completions.DEFAULT_MAX_TOKENS
    sampling = _sampling(p, p.max_tokens)
    assert sampling == {"max_tokens": 16, "temperature": 0.2, "seed": 3, "stop": ["\n"], "logprobs": 2}


@pytest.mark.parametrize("body,param", [
    ({"prompt": [1, 2]}, "prompt"), ({"prompt": [[1, 2], [3]]}, "prompt"), ({"prompt": None}, "prompt"),
    ({"prompt": []}, "prompt"), ({"prompt": ["a", 1]}, "prompt"), ({"prompt": ["a"] * 65, "n": 2}, "prompt"),
    ({"suffix": "x"}, "suffix"), ({"n": 129}, "n"), ({"n": 0}, "n"), ({"best_of": 2}, "best_of"),
    ({"n": 2, "best_of": 3}, "best_of"), ({"logprobs": 6}, "logprobs"),
    ({"echo": True, "logprobs": 0}, "echo"), ({"logit_bias": {"1": 101}}, "logit_bias"), ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": 3}, "temperature"), ({"model": ""}, "model"),
])
def test_refusals_name_the_param(body, param):
    assert refused(**body) == param


LP = json.dumps([{"5": {"logprob": -0.1, "rank": 1, "decoded_token": " upon"},
                  "6": {"logprob": -2.5, "rank": 2, "decoded_token": " on"}}]).encode()


def _run(**body):
    return SimpleNamespace(id="chatcmpl-abc", created=1, model="m", params=parse(**body), finish_reason="length",
                           usage=Usage(4, 2), choices=())


def test_several_prompts_and_n():
    p = parse(prompt=["a", "bb"], n=2, best_of=2)
    assert [m.content for m in p.messages] == ["a", "bb"] and p.n == 2 and p.prompt_bytes == 2


def test_text_completion_shape_with_echo_and_logprobs():
    run = _run(echo=True)
    body = completions.completion(run, [[Delta(" a", None, 4, 1, False), Delta(" time", "length", 4, 1, True)]], "fp")
    assert body["object"] == "text_completion" and body["id"] == "cmpl-abc"
    assert body["choices"] == [{"text": "Once upon a time a time", "index": 0, "logprobs": None,
                                "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    run = _run(logprobs=1)
    logprobs = completions.completion(run, [[Delta(" upon", None, 4, 1, False, LP)]], "fp")["choices"][0]["logprobs"]
    assert logprobs == {"tokens": [" upon"], "token_logprobs": [-0.1], "top_logprobs": [{" upon": -0.1}],
                        "text_offset": [0]}


def test_stream_events():
    run = _run(echo=True, stream=True, stream_options={"include_usage": True})
    events = completions.CompletionStream(run, "fp")
    data = events.start() + events.delta(0, Delta(" x", None, 4, 1, True)) + events.end()
    parsed = [json.loads(line[len(b"data: "):]) for line in data.split(b"\n\n") if line]
    assert [e["choices"][0]["text"] for e in parsed[:2]] == ["Once upon a time", " x"]
    assert parsed[2]["choices"][0]["finish_reason"] == "length" and parsed[2]["usage"] is None
    assert parsed[3]["choices"] == [] and parsed[3]["usage"]["total_tokens"] == 6
