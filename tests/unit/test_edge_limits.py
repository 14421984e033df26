"""The edge's limits agree across Envoy's config, its Lua filter and the services' gRPC limits (issue 20)."""

from __future__ import annotations

import re

import grpc
import pytest
import yaml
from llmaas.common import server
from llmaas.router.v1 import router_pb2
from llmaas.stack import envoy
from llmaas.stack.paths import GATEWAY_DIR
from llmaas.stack.ports import StackPorts

LUA = (GATEWAY_DIR / "openai_errors.lua").read_text()


def lua_constant(name: str) -> int:
    return int(re.search(rf"^local {name} = (\d+)$", LUA, re.M).group(1))


def test_lua_states_the_same_limits():
    assert lua_constant("MAX_BODY_BYTES") == envoy.MAX_BODY_BYTES
    assert lua_constant("MAX_JSON_DEPTH") == envoy.MAX_JSON_DEPTH


def rendered() -> dict:
    return yaml.safe_load(envoy.render_config(StackPorts(20000), internal_secret="s" * 32))


def test_envoy_config_sizes_the_limits_together():
    hcm = rendered()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["max_request_headers_kb"] == envoy.MAX_REQUEST_HEADERS_KB
    filters = {f["name"]: f["typed_config"] for f in hcm["http_filters"]}
    names = [f["name"] for f in hcm["http_filters"]]
    # The body is bounded and checked before auth is asked anything.
    assert names.index("envoy.filters.http.buffer") < names.index("envoy.filters.http.lua") \
        < names.index("envoy.filters.http.ext_authz") < names.index("envoy.filters.http.grpc_json_transcoder")
    assert filters["envoy.filters.http.buffer"]["max_request_bytes"] == envoy.MAX_BODY_BYTES
    # Only a file upload (POST /v1/files) may be larger: its route raises the buffer's limit, and the transcoder's is
    # the upload's.
    assert filters["envoy.filters.http.grpc_json_transcoder"]["max_request_body_size"] == envoy.MAX_UPLOAD_BYTES
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    raised = [r for r in routes if "envoy.filters.http.buffer" in r.get("typed_per_filter_config", {})]
    assert [(r["match"]["path"], r["match"]["headers"][0]["string_match"]["exact"]) for r in raised] == \
        [("/v1/files", "POST")]
    # Not buffered before auth: the buffer filter is off there, the transcoder (after ext_authz) bounds it.
    assert raised[0]["typed_per_filter_config"]["envoy.filters.http.buffer"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute", "disabled": True}
    # The protobuf a body becomes can be bigger than its JSON; the services take 4 times the body, and the headers.
    assert server.MAX_MESSAGE_BYTES >= 4 * envoy.MAX_BODY_BYTES
    assert server.MAX_METADATA_BYTES >= 2 * envoy.MAX_REQUEST_HEADERS_KB * 1024
    statuses = {m.get("status_code") for m in hcm["local_reply_config"]["mappers"]}
    assert 405 in statuses


def test_the_json_depth_limit_fits_protobufs_recursion_limit():
    # The worst case: every level an object inside a google.protobuf.Struct (3 protobuf levels each).
    def nested(levels: int) -> dict:
        value: object = "x"
        for _ in range(levels):
            value = {"k": value}
        return value

    request = router_pb2.CreateChatCompletionRequest(model="m")
    request.metadata.update(nested(envoy.MAX_JSON_DEPTH - 2))  # root + metadata + the rest: MAX_JSON_DEPTH levels
    data = request.SerializeToString()
    assert router_pb2.CreateChatCompletionRequest.FromString(data).model == "m"
    deeper = router_pb2.CreateChatCompletionRequest(model="m")
    deeper.metadata.update(nested(40))
    with pytest.raises(Exception):  # noqa: B017 (DecodeError): why the edge refuses it first
        router_pb2.CreateChatCompletionRequest.FromString(deeper.SerializeToString())


def test_an_undecodable_request_becomes_an_openai_shaped_400():
    deserialize = server._tolerant(router_pb2.CreateChatCompletionRequest.FromString)
    deeper = router_pb2.CreateChatCompletionRequest(model="m")
    value: object = "x"
    for _ in range(60):
        value = {"k": value}
    deeper.metadata.update(value)
    assert deserialize(deeper.SerializeToString()) is server._UNDECODABLE
    assert deserialize(router_pb2.CreateChatCompletionRequest(model="m").SerializeToString()).model == "m"
    err = server.undecodable_request()
    assert err.status == grpc.StatusCode.INVALID_ARGUMENT and err.body()["error"]["code"] == "invalid_request"
