"""The router's SettleBatch call (llmaas.router.downstream.Downstream.settle_batch): retried exactly like Settle, a
whole-call failure raised (the batcher retries it), an item metering refused logged with its request id."""

from __future__ import annotations

import json
import logging

import grpc
import pytest
from llmaas.common.errors import ApiError
from llmaas.metering.v1 import metering_pb2
from llmaas.router import downstream as downstream_mod
from llmaas.router.downstream import Downstream


class FakeMetering:
    """A fake metering stub (unit tests only): answers SettleBatch with `results`, or fails with `error`."""

    def __init__(self, results=(), error: grpc.aio.AioRpcError | None = None) -> None:
        self.results, self.error, self.calls = list(results), error, []

    async def SettleBatch(self, request, timeout=None, metadata=None):
        self.calls.append(request)
        if self.error is not None:
            raise self.error
        return metering_pb2.SettleBatchResponse(results=self.results)


def _downstream(metering: FakeMetering) -> Downstream:
    d = Downstream.__new__(Downstream)  # no channels: only the metering stub is used
    d._metering = metering
    d._credentials = None
    d._streams = False  # the unary call (the streamed one: tests/unit/test_call_stream.py)
    return d


def test_settle_batch_is_retried_like_settle():
    config = json.loads(downstream_mod._SETTLE_RETRY)
    [method] = config["methodConfig"]
    assert {n["method"] for n in method["name"]} == {"Settle", "SettleBatch"}
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


async def test_an_item_metering_refused_is_logged_with_its_request_id(caplog):
    metering = FakeMetering([
        metering_pb2.SettleResult(request_id="a", settlement=metering_pb2.SettleResponse(recorded=True)),
        metering_pb2.SettleResult(request_id="b", error_code="reservation_not_found", error_message="No reservation"),
        metering_pb2.SettleResult(request_id="c", settlement=metering_pb2.SettleResponse(recorded=False))])
    batch = [metering_pb2.SettleRequest(request_id=i, outcome="completed") for i in "abc"]
    with caplog.at_level(logging.ERROR, logger="llmaas.router"):
        await _downstream(metering).settle_batch(batch)
    assert [r.fields["request_id"] for r in caplog.records] == ["b"]
    assert list(metering.calls[0].items) == batch


async def test_a_failed_call_is_raised_for_the_batcher_to_retry():
    metering = FakeMetering(error=grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                                       grpc.aio.Metadata(), "metering restarting"))
    with pytest.raises(ApiError) as failed:
        await _downstream(metering).settle_batch([metering_pb2.SettleRequest(request_id="a", outcome="failed")])
    assert failed.value.status == grpc.StatusCode.UNAVAILABLE
