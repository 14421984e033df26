import json

import grpc
from llmaas.common.errors import ERROR_METADATA_KEY, ApiError, from_rpc_error


class FakeRpcError(grpc.RpcError):
    """Test double for a failed downstream call."""

    def __init__(self, code, trailing=()):
        self._code, self._trailing = code, trailing

    def code(self):
        return self._code

    def trailing_metadata(self):
        return self._trailing


def test_body_has_openai_shape_with_nulls():
    body = ApiError(grpc.StatusCode.NOT_FOUND, "nope").body()
    assert body == {"error": {"message": "nope", "type": "invalid_request_error", "param": None, "code": None}}


def test_metadata_is_ascii_and_roundtrips():
    err = ApiError(grpc.StatusCode.INVALID_ARGUMENT, "modèle «x» 模型", param="model", code="c")
    (key, value), = err.trailing_metadata()
    assert key == ERROR_METADATA_KEY and value.isascii()
    back = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, err.trailing_metadata()), service="x")
    assert back.body() == err.body() and back.status == grpc.StatusCode.INVALID_ARGUMENT
    assert json.loads(value)["error"]["message"] == "modèle «x» 模型"


def test_unshaped_errors_become_generic():
    assert from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE), service="guard").status == \
        grpc.StatusCode.UNAVAILABLE
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.UNKNOWN), service="guard")
    assert err.status == grpc.StatusCode.INTERNAL and err.message == "Internal server error"
