"""logit_bias (issue 14 point 4): parsed and bounded by the router, sent to models whose catalogue entry lists the
`logit_bias` capability in vLLM's JSON form, refused by name everywhere else; the CPU backend's parsing and its
deterministic engine's refusal. The real model applying it is tests/e2e/test_default_model.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from llmaas.catalog.v1 import catalog_pb2
from llmaas.common.errors import ApiError
from llmaas.router.completions import parse_completion_request
from llmaas.router.params import parse_chat_request
from llmaas.router.pipeline import ChatPipeline, _sampling
from llmaas.router.triton import _backend_error
from llmaas.router.v1 import router_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "triton" / "backends" / "vllm"))
from llmaas_cpu.deterministic import DeterministicEngine  # noqa: E402
from llmaas_cpu.sampling import SamplingError, parse_sampling_parameters  # noqa: E402


def chat(**body):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    return parse_chat_request(json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest()))


def completion(**body):
    body = {"model": "m", "prompt": "hi", **body}
    return parse_completion_request(json_format.ParseDict(body, router_pb2.CreateCompletionRequest()))


def model(*capabilities: str) -> catalog_pb2.ResolveModelResponse:
    return catalog_pb2.ResolveModelResponse(id="m", type="chat", capabilities=list(capabilities))


@pytest.mark.parametrize("parse", [chat, completion])
def test_parsed_and_sent_in_vllms_json_form(parse):
    assert parse(logit_bias={"0": 1}).logit_bias == {0: 1.0}
    params = parse(logit_bias={"50256": -100, "13": 2.5})
    assert params.logit_bias == {50256: -100.0, 13: 2.5}
    ChatPipeline._check_capabilities(params, model("logit_bias"))
    assert _sampling(params, 8)["logit_bias"] == {"50256": -100.0, "13": 2.5}
    # The backend's own parser reads the router's form back.
    sent = parse_sampling_parameters(json.dumps(_sampling(params, 8)))
    assert sent.logit_bias == ((13, 2.5), (50256, -100.0))


@pytest.mark.parametrize("parse", [chat, completion])
def test_absent_or_empty_sends_nothing(parse):
    assert parse().logit_bias is None and parse(logit_bias={}).logit_bias is None
    assert "logit_bias" not in _sampling(parse(logit_bias={}), 8)


@pytest.mark.parametrize("parse", [chat, completion])
def test_a_model_without_the_capability_refuses_it_by_name(parse):
    with pytest.raises(ApiError) as e:
        ChatPipeline._check_capabilities(parse(logit_bias={"1": 1}), model("tools"))
    assert (e.value.param, e.value.code, e.value.status.name) == ("logit_bias", "unsupported_parameter",
                                                                  "INVALID_ARGUMENT")
    assert "does not support 'logit_bias'" in e.value.message


@pytest.mark.parametrize("bias", [{"1": 100.5}, {"1": -101}, {"x": 1}, {"1.5": 1}, {"-1": 1}, {"1": "1"},
                                  {"1": None}, {"1": [1]}, {"1" * 10: 1}, {"07": 1}, {"00": 1},
                                  {str(i): 1 for i in range(301)}])
@pytest.mark.parametrize("parse", [chat, completion])
def test_bad_maps_are_a_400_naming_it(parse, bias):
    with pytest.raises(ApiError) as e:
        parse(logit_bias=bias)
    assert e.value.param == "logit_bias" and e.value.status.name == "INVALID_ARGUMENT"


def test_the_backends_vocabulary_error_is_the_clients_400():
    error = _backend_error("Error generating stream: sampling parameter 'logit_bias' must name token ids below "
                           "49152 (the model's vocabulary), got 99999999")
    assert (error.param, error.status.name) == ("logit_bias", "INVALID_ARGUMENT") and "49152" in error.message


def test_the_deterministic_engine_refuses_it_rather_than_ignoring_it():
    engine = DeterministicEngine()
    params = parse_sampling_parameters('{"logit_bias": {"5": 10}}')
    with pytest.raises(SamplingError, match="logit_bias"):
        next(engine.generate("hi", engine.tokenize("hi"), params, False))
    error = _backend_error("sampling parameter 'logit_bias' cannot be applied by the deterministic test engine")
    assert error.param == "logit_bias" and error.status.name == "INVALID_ARGUMENT"


def test_traced_as_a_count_never_the_tokens():
    from llmaas.router.chat_output import trace_chat_api

    class FakeSpan:  # a unit-test double collecting attributes
        def __init__(self):
            self.attributes = {}

        def set_attribute(self, key, value):
            self.attributes[key] = value

    span = FakeSpan()
    trace_chat_api(span, chat(logit_bias={"50256": -100, "13": 1}))
    assert span.attributes == {"llmaas.logit_bias": 2}
    span = FakeSpan()
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detail": "low"}}
    trace_chat_api(span, chat(messages=[{"role": "user", "content": [image, image]}]))
    assert span.attributes == {"llmaas.images_low_detail": 2}
