"""Unary internal calls on a long-lived stream (llmaas.common.call_stream) keep what the unary call has: the service
credential, the per-call identity check, errors with their trailing metadata, deadlines, the trace context; a stream
that breaks fails its calls as UNAVAILABLE and the next call opens a new one. On a real grpc.aio server with the
interceptors the shared bootstrap installs, and a fake servicer (unit tests only)."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from llmaas.common import call_stream
from llmaas.common.call_stream import CallStreamClient, serve_stream
from llmaas.common.errors import ApiError
from llmaas.common.grpc_tracing import SamplingServerInterceptor
from llmaas.common.identity import Identity, Quota, encode_identity
from llmaas.common.server import ErrorInterceptor
from llmaas.common.service_auth import ROUTER, SERVICE_HEADER, ServiceAuthInterceptor, mint_service_token
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc
from opentelemetry import trace

SECRET = "s" * 32
QUOTAS = (Quota(60, 10, 1000),)
ME = Identity("t", "k", quotas=QUOTAS)
SERVICE = "llmaas.metering.v1.MeteringInternalService"


class FakeMetering(metering_pb2_grpc.MeteringInternalServiceServicer):
    """Fake servicer (unit tests only): grants, refuses request ids starting with "full", and records what each call
    saw of its context."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float | None, str]] = []
        self.gate: asyncio.Event | None = None

    async def Reserve(self, request, context):
        trace_id = trace.get_current_span().get_span_context().trace_id
        self.seen.append((request.request_id, context.time_remaining(), format(trace_id, "032x")))
        if self.gate is not None:
            await self.gate.wait()
        if request.request_id.startswith("full"):
            raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded", code="rate_limit_exceeded",
                           headers=(("retry-after", "7"), ("x-ratelimit-remaining-requests", "0")))
        return metering_pb2.ReserveResponse(granted=True)

    async def StreamCalls(self, request_iterator, context):
        methods = {"Reserve": (self.Reserve, metering_pb2.ReserveRequest)}
        async for replies in serve_stream(request_iterator, context, metering_pb2.StreamCallsResponse, methods,
                                          SERVICE, SECRET):
            yield replies


@contextlib.asynccontextmanager
async def serving(servicer: FakeMetering):
    server = grpc.aio.server(interceptors=[SamplingServerInterceptor(), ErrorInterceptor(),
                                           ServiceAuthInterceptor("metering", SECRET)])
    metering_pb2_grpc.add_MeteringInternalServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def _client(channel, token: list[str]) -> CallStreamClient:
    return CallStreamClient("metering", metering_pb2_grpc.MeteringInternalServiceStub(channel).StreamCalls,
                            lambda: ((SERVICE_HEADER, token[0]),), metering_pb2.StreamCallsRequest)


def _reserve(rid: str, tenant: str = "t") -> metering_pb2.ReserveRequest:
    return metering_pb2.ReserveRequest(request_id=rid, tenant_id=tenant, key_id="k", quotas=[
        metering_pb2.Quota(window_seconds=q.window_seconds, max_requests=q.max_requests, max_tokens=q.max_tokens)
        for q in QUOTAS])


async def _reserve_call(client: CallStreamClient, rid: str, *, identity_rid: str | None = None, tenant: str = "t",
                        traceparent: str = "", timeout: float = 5.0, secret: str = SECRET):
    identity = encode_identity(ME, secret, request_id=identity_rid or rid)
    return await client.call("Reserve", _reserve(rid, tenant), metering_pb2.ReserveResponse, identity=identity,
                             traceparent=traceparent, timeout=timeout)


def _token(caller: str = ROUTER, audience: str = "metering") -> list[str]:
    return [mint_service_token(caller, audience, SECRET)]


async def test_concurrent_calls_share_one_stream_and_each_gets_its_own_answer():
    servicer = FakeMetering()
    async with serving(servicer) as (_, address), grpc.aio.insecure_channel(address) as channel:
        client = _client(channel, _token())
        results = await asyncio.gather(*(_reserve_call(client, f"r{i}") for i in range(50)),
                                       _reserve_call(client, "full-1"), return_exceptions=True)
        assert all(r.granted for r in results[:50])
        refused = results[50]
        # The ApiError the unary call would have raised: status, OpenAI fields and client headers.
        assert isinstance(refused, ApiError) and refused.status == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.code == "rate_limit_exceeded" and refused.message == "Quota exceeded"
        assert dict(refused.headers) == {"retry-after": "7", "x-ratelimit-remaining-requests": "0"}
        assert sorted(r for r, _, _ in servicer.seen) == sorted([f"r{i}" for i in range(50)] + ["full-1"])
        # Each call saw the time left before its deadline.
        assert all(0 < left <= 5.0 for _, left, _ in servicer.seen)
        await client.close()


async def test_each_call_is_checked_against_its_own_signed_identity():
    servicer = FakeMetering()
    async with serving(servicer) as (_, address), grpc.aio.insecure_channel(address) as channel:
        client = _client(channel, _token())
        with pytest.raises(ApiError) as e:  # bound to another request
            await _reserve_call(client, "r1", identity_rid="r2")
        assert e.value.status == grpc.StatusCode.PERMISSION_DENIED and e.value.code == "identity_mismatch"
        with pytest.raises(ApiError) as e:  # another tenant than the identity's
            await _reserve_call(client, "r1", tenant="other")
        assert e.value.code == "identity_mismatch"
        with pytest.raises(ApiError) as e:  # forged
            await _reserve_call(client, "r1", secret="w" * 32)
        assert e.value.status == grpc.StatusCode.UNAUTHENTICATED and e.value.code == "invalid_identity"
        with pytest.raises(ApiError) as e:  # none
            await client.call("Reserve", _reserve("r1"), metering_pb2.ReserveResponse)
        assert e.value.code == "missing_identity"
        with pytest.raises(ApiError) as e:  # a method that is not offered on the stream
            await client.call("Settle", metering_pb2.SettleRequest(request_id="r1"), metering_pb2.SettleResponse)
        assert e.value.status == grpc.StatusCode.UNIMPLEMENTED
        assert servicer.seen == []  # the handler never ran
        assert (await _reserve_call(client, "r1")).granted  # and the stream still serves
        await client.close()


async def test_a_stream_needs_the_service_credential_of_an_allowed_caller():
    async with serving(FakeMetering()) as (_, address), grpc.aio.insecure_channel(address) as channel:
        for token in (_token(audience="guard"), ["forged"], _token(caller="edge")):
            with pytest.raises(ApiError) as e:
                await _reserve_call(_client(channel, token), "r1")
            assert e.value.status == grpc.StatusCode.UNAUTHENTICATED


async def test_a_stream_serves_no_call_after_its_credential_expired():
    servicer = FakeMetering()
    async with serving(servicer) as (_, address), grpc.aio.insecure_channel(address) as channel:
        token = [mint_service_token(ROUTER, "metering", SECRET, ttl=1)]
        client = _client(channel, token)
        assert (await _reserve_call(client, "r1")).granted
        stream = client._stream
        await asyncio.sleep(2.1)  # the token (whole seconds) has expired; the client still holds the same stream
        with pytest.raises(ApiError) as e:
            await _reserve_call(client, "r2")
        assert e.value.status == grpc.StatusCode.UNAUTHENTICATED
        assert [r for r, _, _ in servicer.seen] == ["r1"]
        for _ in range(100):  # and the server ended the stream
            if stream.closed:
                break
            await asyncio.sleep(0.01)
        assert stream.closed
        await client.close()


async def test_a_renewed_credential_opens_a_new_stream_and_the_old_one_finishes_its_calls():
    servicer = FakeMetering()
    async with serving(servicer) as (_, address), grpc.aio.insecure_channel(address) as channel:
        token = _token()
        client = _client(channel, token)
        servicer.gate = asyncio.Event()
        slow = asyncio.ensure_future(_reserve_call(client, "r1"))
        while not servicer.seen:
            await asyncio.sleep(0.01)
        first = client._stream
        token[0] = mint_service_token(ROUTER, "metering", SECRET, ttl=1000)
        servicer.gate.set()
        assert (await _reserve_call(client, "r2")).granted
        assert client._stream is not first
        assert (await slow).granted and first.closed
        await client.close()


async def test_a_deadline_and_a_broken_stream_fail_like_unary_calls():
    servicer = FakeMetering()
    async with serving(servicer) as (server, address), grpc.aio.insecure_channel(address) as channel:
        client = _client(channel, _token())
        servicer.gate = asyncio.Event()
        with pytest.raises(ApiError) as e:
            await _reserve_call(client, "r1", timeout=0.2)
        assert e.value.status == grpc.StatusCode.UNAVAILABLE  # as from_rpc_error maps DEADLINE_EXCEEDED
        pending = asyncio.ensure_future(_reserve_call(client, "r2"))
        await asyncio.sleep(0.1)
        await server.stop(None)  # the stream breaks with a call in flight
        with pytest.raises(ApiError) as e:
            await pending
        assert e.value.status == grpc.StatusCode.UNAVAILABLE and e.value.code == "service_unavailable"
        with pytest.raises(ApiError) as e:  # the server is gone: a new stream fails at once, as a unary call would
            await _reserve_call(client, "r3")
        assert e.value.status == grpc.StatusCode.UNAVAILABLE
        await client.close()


async def test_a_draining_server_answers_the_calls_it_read_then_ends_the_stream():
    servicer = FakeMetering()
    async with serving(servicer) as (_, address), grpc.aio.insecure_channel(address) as channel:
        client = _client(channel, _token())
        servicer.gate = asyncio.Event()
        pending = asyncio.ensure_future(_reserve_call(client, "r1"))
        while not servicer.seen:
            await asyncio.sleep(0.01)
        stream = client._stream
        call_stream.drain_streams()
        servicer.gate.set()
        assert (await pending).granted  # answered before the stream ended
        for _ in range(100):
            if stream.closed:
                break
            await asyncio.sleep(0.01)
        assert stream.closed
        assert (await _reserve_call(client, "r2")).granted  # on a new stream
        assert client._stream is not stream
        await client.close()


async def test_the_handler_runs_in_the_callers_unsampled_trace_context():
    servicer = FakeMetering()
    async with serving(servicer) as (_, address), grpc.aio.insecure_channel(address) as channel:
        client = _client(channel, _token())
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        await _reserve_call(client, "r1", traceparent=f"00-{trace_id}-b7ad6b7169203331-00")
        assert servicer.seen[0][2] == trace_id
        await client.close()
