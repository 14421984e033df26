"""Every chat parameter the router accepts, against OpenAI's ranges and what the backend takes; the request limits; and
the mapping of the backend's in-band errors. Rule: a value OpenAI's spec allows is served or refused with a 400 naming
the field, and whatever the router sends is something vLLM's SamplingParams (and our CPU backend) accepts: no 5xx from
client input."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from google.protobuf import json_format
from llmaas.common.errors import ApiError
from llmaas.common.identity import Identity
from llmaas.router import params as P
from llmaas.router.params import check_context, check_prompt_tokens, parse_chat_request
from llmaas.router.pipeline import Caller, ChatPipeline, ChatRun, _sampling
from llmaas.router.replicas import ReplicaPool
from llmaas.router.triton import Delta, _backend_error
from llmaas.router.v1 import router_pb2

from tests.unit.test_router_settlement import FakeDownstream

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "triton" / "backends" / "vllm"))

from llmaas_cpu.sampling import parse_sampling_parameters  # noqa: E402


def req(**body) -> router_pb2.CreateChatCompletionRequest:
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest())


def vllm_accepts(sampling: dict) -> None:
    """vLLM's SamplingParams._verify_args, for the keys the router sends (the strictest of vLLM 0.6 .. 0.11: top_k 0
    was refused before 0.8)."""
    assert sampling["max_tokens"] >= 1
    assert sampling.get("temperature", 1.0) >= 0 and math.isfinite(sampling.get("temperature", 1.0))
    assert 0 < sampling.get("top_p", 1.0) <= 1
    assert sampling.get("top_k", -1) == -1 or sampling["top_k"] >= 1
    for key in ("presence_penalty", "frequency_penalty"):
        assert -2 <= sampling.get(key, 0.0) <= 2
    seed = sampling.get("seed")
    assert seed is None or -(2**63) <= seed < 2**64  # torch.Generator.manual_seed
    assert all(isinstance(s, str) and s for s in sampling.get("stop", []))
    parse_sampling_parameters(__import__("json").dumps(sampling))  # and the CPU backend, exactly as it parses


# (field, value, expected): "ok" = served (and the sampling sent passes vLLM's rules), else the `param` of the 400.
CASES = [
    ("temperature", 0, "ok"), ("temperature", 2, "ok"), ("temperature", 0.005, "ok"),
    ("temperature", -0.01, "temperature"), ("temperature", 2.01, "temperature"),
    ("temperature", "NaN", "temperature"), ("temperature", "Infinity", "temperature"),
    ("top_p", 0, "ok"), ("top_p", 1e-300, "ok"), ("top_p", 1, "ok"), ("top_p", -0.0, "ok"),
    ("top_p", -1e-9, "top_p"), ("top_p", 1.0000001, "top_p"), ("top_p", "NaN", "top_p"),
    ("top_k", 0, "ok"), ("top_k", -1, "ok"), ("top_k", 1, "ok"), ("top_k", 2**31 - 1, "ok"), ("top_k", -2, "top_k"),
    ("presence_penalty", -2, "ok"), ("presence_penalty", 2, "ok"), ("presence_penalty", 2.5, "presence_penalty"),
    ("frequency_penalty", -2, "ok"), ("frequency_penalty", -2.01, "frequency_penalty"),
    ("frequency_penalty", "-Infinity", "frequency_penalty"),
    ("seed", -(2**63), "ok"), ("seed", 2**63 - 1, "ok"), ("seed", 0, "ok"),
    ("max_tokens", 1, "ok"), ("max_tokens", 0, "max_tokens"), ("max_tokens", -5, "max_tokens"),
    ("max_completion_tokens", 1, "ok"), ("max_completion_tokens", 0, "max_completion_tokens"),
    ("n", 1, "ok"), ("n", 0, "n"), ("n", 2, "ok"), ("n", 128, "ok"), ("n", 129, "n"),
    ("logprobs", False, "ok"), ("logprobs", True, "ok"),
    ("top_logprobs", 0, "ok"), ("top_logprobs", 20, "top_logprobs"), ("top_logprobs", 21, "top_logprobs"),
    ("top_logprobs", -1, "top_logprobs"),
    ("logit_bias", {"50256": -100}, "ok"), ("logit_bias", {"50256": 100, "1": 0.5}, "ok"),
    ("logit_bias", {"50256": 101}, "logit_bias"), ("logit_bias", {"x": 1}, "logit_bias"),
    ("logit_bias", {"1": "a"}, "logit_bias"), ("logit_bias", {"-1": 1}, "logit_bias"),
    ("logit_bias", {"١": 1}, "logit_bias"), ("logit_bias", {str(i): 1 for i in range(301)}, "logit_bias"),
    ("metadata", {"k": "v"}, "ok"), ("metadata", {"k": 1}, "metadata"), ("metadata", {"k": {"a": {}}}, "metadata"),
    ("metadata", {f"k{i}": "v" for i in range(17)}, "metadata"), ("metadata", {"k" * 65: "v"}, "metadata"),
    ("metadata", {"k": "v" * 513}, "metadata"),
    ("stop", "", "ok"), ("stop", "\n", "ok"), ("stop", ["a", "", "b"], "ok"), ("stop", ["a"] * 5, "stop"),
    ("stop", [1], "stop"), ("stop", {"a": 1}, "stop"),
    ("stream", True, "ok"),
]


@pytest.mark.parametrize("field,value,expected", CASES, ids=[f"{f}={str(v)[:20]}" for f, v, _ in CASES])
def test_every_parameter_is_served_within_the_backends_rules_or_refused_naming_it(field, value, expected):
    if expected == "ok":
        p = parse_chat_request(req(**{field: value}))
        vllm_accepts(_sampling(p, check_context(p, 4096, 64)))
        return
    with pytest.raises(ApiError) as e:
        parse_chat_request(req(**{field: value}))
    assert e.value.status == grpc.StatusCode.INVALID_ARGUMENT and e.value.param == expected
    assert e.value.body()["error"]["type"] == "invalid_request_error"


def test_top_p_zero_is_greedy_and_top_k_zero_no_top_k():
    p = parse_chat_request(req(top_p=0, temperature=1.3, top_k=0))
    sampling = _sampling(p, 8)
    assert sampling["temperature"] == 0.0 and "top_p" not in sampling and "top_k" not in sampling


# --- request limits -------------------------------------------------------------------------------------------------

def refused(**body) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse_chat_request(req(**body))
    return e.value


def test_message_count_limit():
    ok = [{"role": "user", "content": "x"}] * P.MAX_MESSAGES
    assert len(parse_chat_request(req(messages=ok)).messages) == P.MAX_MESSAGES
    err = refused(messages=ok + ok[:1])
    assert (err.param, err.code) == ("messages", "context_length_exceeded")
    assert str(P.MAX_MESSAGES) in err.message and str(P.MAX_MESSAGES + 1) in err.message


def test_message_size_limit_counts_utf8_bytes():
    at_limit = "é" * (P.MAX_MESSAGE_BYTES // 2)  # 2 bytes each
    assert parse_chat_request(req(messages=[{"role": "user", "content": at_limit}])).prompt_bytes == P.MAX_MESSAGE_BYTES
    err = refused(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": at_limit + "a"}])
    assert (err.param, err.code) == ("messages[1].content", "context_length_exceeded")
    assert str(P.MAX_MESSAGE_BYTES) in err.message
    parts = [{"type": "text", "text": "a" * (P.MAX_MESSAGE_BYTES // 2)}] * 3  # a message's parts add up
    assert refused(messages=[{"role": "user", "content": parts}]).param == "messages[0].content"


def test_total_prompt_size_limit():
    big = {"role": "user", "content": "a" * P.MAX_MESSAGE_BYTES}
    assert parse_chat_request(req(messages=[big] * 2)).prompt_bytes == P.MAX_PROMPT_BYTES
    err = refused(messages=[big, big, {"role": "user", "content": "a"}])
    assert (err.param, err.code) == ("messages", "context_length_exceeded") and str(P.MAX_PROMPT_BYTES) in err.message


def params_of(content: str, **body):
    return parse_chat_request(req(messages=[{"role": "user", "content": content}], **body))


def test_context_check_refuses_only_what_is_certainly_over():
    ctx = 4096
    limit = ctx * P.MAX_BYTES_PER_TOKEN
    assert check_context(params_of("a" * 100), ctx, 64) == 64
    err = pytest.raises(ApiError, check_context, params_of("a" * (limit + 1)), ctx, 64).value
    assert err.code == "context_length_exceeded" and str(ctx) in err.message and str(limit) in err.message
    # Without max_tokens: the default, capped to the room the messages certainly leave.
    assert check_context(params_of("a" * (limit - 16 * 10)), ctx, 64) == 10
    assert check_context(params_of("a" * limit), ctx, 64) == 1  # lower bound == ctx: the backend decides
    # With max_tokens: at least ceil(bytes / 16) prompt tokens plus max_tokens must fit.
    assert check_context(params_of("a" * 160, max_tokens=ctx - 10), ctx, 64) == ctx - 10
    err = pytest.raises(ApiError, check_context, params_of("a" * 161, max_tokens=ctx - 10), ctx, 64).value
    assert (err.code, err.param) == ("context_length_exceeded", "messages")
    err = pytest.raises(ApiError, check_context, params_of("a", max_completion_tokens=ctx + 1), ctx, 64).value
    assert (err.code, err.param) == ("invalid_value", "max_completion_tokens")
    assert check_context(params_of("a" * (limit + 1)), 0, 64) == 64  # context unknown: nothing refused here


def test_exact_prompt_count_from_the_backend():
    check_prompt_tokens(params_of("x", max_tokens=96), 4000, 4096)
    err = pytest.raises(ApiError, check_prompt_tokens, params_of("x", max_tokens=97), 4000, 4096).value
    assert err.code == "context_length_exceeded"
    assert "4096 tokens" in err.message and "4097 tokens (4000 in the messages, 97 in the completion)" in err.message
    check_prompt_tokens(params_of("x"), 4095, 4096)  # no max_tokens: served up to the context (finish `length`)
    with pytest.raises(ApiError):
        check_prompt_tokens(params_of("x"), 4096, 4096)


class OneShotReplica:
    """A fake replica (unit tests only): reports `prompt_tokens`, then two tokens."""

    def __init__(self, address: str, prompt_tokens: int) -> None:
        self.address, self.prompt_tokens, self.closed = address, prompt_tokens, False

    async def generate(self, model, prompt, sampling, request_id, whole=False):
        try:
            yield Delta("a", None, self.prompt_tokens, 1, False)
            yield Delta("b", "stop", self.prompt_tokens, 1, True)
        finally:
            self.closed = True


@pytest.mark.parametrize("stream", [True, False])
async def test_an_over_context_prompt_is_refused_at_the_first_response_and_costs_nothing(stream):
    replica = OneShotReplica("r1", prompt_tokens=4000)
    downstream = FakeDownstream()
    pipeline = ChatPipeline(downstream, ReplicaPool(lambda _: replica), "secret")
    caller = Caller(Identity("t", "k"), "req-1", "POST /v1/chat/completions", "127.0.0.1")
    params = SimpleNamespace(stream=stream, max_tokens=200)
    run = ChatRun(id="c", request_id="req-1", created=0, model="m", params=params, caller=caller, triton_model="m",
                  endpoints=("r1",), prompt="p", sampling={}, max_model_len=4096)
    with pytest.raises(ApiError) as e:
        async for _ in pipeline.run(run):
            pass
    pipeline.finish(run)
    await pipeline.drain()
    assert e.value.code == "context_length_exceeded" and replica.closed
    settled = downstream.settled[0]
    assert (settled.outcome, settled.prompt_tokens, settled.completion_tokens) == ("failed", 0, 0)
    assert downstream.recorded[0].status == 400


# --- the backend's in-band errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [
    "Error generating stream: Input prompt (5001 tokens) is too long and exceeds limit of 4095",  # our CPU backend
    "Error generating stream: The decoder prompt (length 5001) is longer than the maximum model length of 4096. "
    "Make sure that `max_model_len` is no smaller than the number of text tokens.",  # vLLM's engine
    "This model's maximum context length is 4096 tokens. However, you requested 5001 tokens (4990 in the messages, "
    "11 in the completion). Please reduce the length of the messages or completion.",  # vLLM's OpenAI server
    "the request exceeds the available context size, try increasing it",  # llama.cpp's server
])
def test_context_errors_of_every_backend_are_a_400(message):
    err = _backend_error(message)
    assert (err.status, err.code, err.param) == (grpc.StatusCode.INVALID_ARGUMENT, "context_length_exceeded",
                                                 "messages")
    assert "max_model_len" not in err.message and "Error generating stream" not in err.message


@pytest.mark.parametrize("message,param", [
    ("Error generating stream: top_p must be in (0, 1], got 0.0.", "top_p"),
    ("Error generating stream: top_k must be -1 (disable), or at least 1, got 0.", "top_k"),
    ("Error generating stream: sampling parameter 'seed' must be an integer", "seed"),
    ("Error generating stream: stop cannot contain an empty string", "stop"),
])
def test_sampling_errors_of_the_backend_are_a_400_naming_the_key(message, param):
    err = _backend_error(message)
    assert (err.status, err.param) == (grpc.StatusCode.INVALID_ARGUMENT, param)


def test_other_backend_errors_stay_500_without_detail():
    err = _backend_error("Error generating stream: CUDA out of memory")
    assert err.status == grpc.StatusCode.INTERNAL and err.code == "backend_error" and "CUDA" not in err.message


def test_limits_are_cheap():
    """One O(size) pass: 2 MiB of messages in 2,048 parts validate in well under the guard's cost. The best of five
    runs in CPU time, so a busy machine (CI runs other suites alongside) does not fail it."""
    messages = [{"role": "user", "content": "word " * 200}] * P.MAX_MESSAGES
    request = req(messages=messages)
    runs = []
    for _ in range(5):
        t0 = time.process_time()
        parse_chat_request(request)
        runs.append(time.process_time() - t0)
    assert min(runs) < 0.05, runs
