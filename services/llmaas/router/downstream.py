"""Every call from the router to another llmaas service: channels, deadlines, tracing, error translation, and the
credentials each call carries: the router's service token (llmaas.common.service_auth) and, where the call acts for
a tenant, the end user's signed identity (x-llmaas-identity)."""

from __future__ import annotations

import json
import logging

import grpc
from opentelemetry import trace

from llmaas.auth.v1 import auth_pb2, auth_pb2_grpc
from llmaas.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from llmaas.common.call_stream import CallStreamClient, streamable
from llmaas.common.config import env_str
from llmaas.common.errors import ApiError, from_rpc_error
from llmaas.common.grpc_tracing import SamplingChannel
from llmaas.common.identity import IDENTITY_HEADER, Identity, Quota
from llmaas.common.service_auth import ServiceCredentials
from llmaas.guard.v1 import guard_pb2, guard_pb2_grpc
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc
from llmaas.router.model_cache import ModelCache

log = logging.getLogger("llmaas.router")

# Per-call deadlines (seconds). The services answer in a few milliseconds; these bound a stuck dependency.
DEADLINE = 5.0
def _retry_config(service: str, *methods: str, balanced: bool = False) -> str:
    """Settlement must land even if metering restarts: retried by gRPC itself on UNAVAILABLE (it is idempotent by
    request id, so a retry never counts twice). `balanced`: round robin over every address of the target (auth runs
    as several replicas), so a retry goes to a replica that is up."""
    config = {"methodConfig": [{"name": [{"service": service, "method": m} for m in methods], "retryPolicy": {
        "maxAttempts": 5, "initialBackoff": "0.2s", "maxBackoff": "2s", "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]}}]}
    if balanced:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return json.dumps(config)


_SETTLE_RETRY = _retry_config("llmaas.metering.v1.MeteringInternalService", "Settle", "SettleBatch")
# The audit records of how requests ended (one, or a batch): idempotent by request id as well.
_RECORD_RETRY = _retry_config("llmaas.auth.v1.AuthInternalService", "RecordRequest", "RecordRequests",
                              balanced=True)


def _channel(address: str, **options) -> SamplingChannel:
    # OpenTelemetry's client span for a call that may be sampled, only the traceparent for one that is not.
    opts = [("grpc.enable_retries", 1), *((k, v) for k, v in options.items())]
    return SamplingChannel(address, options=opts)


async def _call(service: str, method, request, timeout: float = DEADLINE, metadata=None):
    """One RPC; a failure comes back as the ApiError the downstream service raised (or a generic one)."""
    try:
        return await method(request, timeout=timeout, metadata=metadata)
    except grpc.aio.AioRpcError as e:
        raise from_rpc_error(e, service=service) from None


class Downstream:
    def __init__(self, auth: str, guard: str, catalog: str, metering: str, *,
                 credentials: ServiceCredentials | None = None, model_cache: ModelCache | None = None) -> None:
        """`credentials`: the router's service tokens (None: calls carry none, for tests of the router alone)."""
        self._credentials = credentials
        self._channels = [
            _channel(auth, **{"grpc.service_config": _RECORD_RETRY}), _channel(guard), _channel(catalog),
            _channel(metering, **{"grpc.service_config": _SETTLE_RETRY})]
        self._auth = auth_pb2_grpc.AuthInternalServiceStub(self._channels[0])
        self._guard = guard_pb2_grpc.GuardInternalServiceStub(self._channels[1])
        self._catalog = catalog_pb2_grpc.CatalogInternalServiceStub(self._channels[2])
        self._metering = metering_pb2_grpc.MeteringInternalServiceStub(self._channels[3])
        # The catalog's revision stream lives as long as the router: on its own channel, untraced (one span that
        # never ends would say nothing).
        self._watch_channel = grpc.aio.insecure_channel(catalog)
        self._catalog_watch = catalog_pb2_grpc.CatalogInternalServiceStub(self._watch_channel)
        # The per-request calls to the guard, metering and auth (the verdict, the grant, and the batched settlements
        # and audit records), on one long-lived stream each (llmaas.common.call_stream): a fraction of a unary call's
        # CPU. Sampled requests still make unary calls to the guard and metering (their traces keep every span).
        # LLMAAS_CALL_STREAMS=0: unary calls only (to compare).
        self._streams = env_str("LLMAAS_CALL_STREAMS", "1") != "0"
        self._stream_channels = [grpc.aio.insecure_channel(guard), grpc.aio.insecure_channel(metering),
                                 grpc.aio.insecure_channel(auth, options=[
                                     ("grpc.service_config", json.dumps({"loadBalancingConfig": [
                                         {"round_robin": {}}]}))])]
        self._guard_calls = CallStreamClient(
            "guard", guard_pb2_grpc.GuardInternalServiceStub(self._stream_channels[0]).StreamCalls,
            lambda: self._metadata("guard"), guard_pb2.StreamCallsRequest)
        self._metering_calls = CallStreamClient(
            "metering", metering_pb2_grpc.MeteringInternalServiceStub(self._stream_channels[1]).StreamCalls,
            lambda: self._metadata("metering"), metering_pb2.StreamCallsRequest)
        self._auth_calls = CallStreamClient(
            "auth", auth_pb2_grpc.AuthInternalServiceStub(self._stream_channels[2]).StreamCalls,
            lambda: self._metadata("auth"), auth_pb2.StreamCallsRequest)
        # Without a subscribed watcher (llmaas.router.model_cache.CatalogWatcher) the cache stays inactive.
        self.model_cache = model_cache if model_cache is not None else ModelCache()

    def _metadata(self, audience: str, identity: str = "") -> tuple[tuple[str, str], ...]:
        """The router's token for `audience` (minted once, refreshed at half its life), plus the end user's signed
        identity for a call that acts for a tenant."""
        service = self._credentials.metadata(audience) if self._credentials is not None else ()
        return (*service, (IDENTITY_HEADER, identity)) if identity else service

    async def authenticate(self, request: auth_pb2.AuthenticateRequest) -> Identity:
        return _identity((await _call("auth", self._auth.Authenticate, request,
                                      metadata=self._metadata("auth"))).identity)

    async def current_identity(self, tenant_id: str, key_id: str, identity: str) -> Identity | None:
        """The key's identity now, or None once it is revoked or expired (`identity`: the key's signed identity)."""
        response = await _call("auth", self._auth.CurrentIdentity, auth_pb2.CurrentIdentityRequest(
            tenant_id=tenant_id, key_id=key_id), metadata=self._metadata("auth", identity))
        return _identity(response.identity) if response.status == "active" else None

    async def record_requests(self, batch: list[tuple[auth_pb2.RecordRequestRequest, str, str]]) -> None:
        """Many audit records in one call and one transaction (llmaas.router.handoff.BatchedHandOff gathers them):
        (record, the caller's freshly signed identity, client address) each. Retried whole (idempotent per request
        id); a record auth refuses (its identity did not verify) is final, and logged with its request id."""
        request = auth_pb2.RecordRequestsRequest(records=[
            auth_pb2.RequestRecord(record=record, identity=identity, client_address=address)
            for record, identity, address in batch])
        if self._streams:
            response = await self._auth_calls.call("RecordRequests", request, auth_pb2.RecordRequestsResponse,
                                                   timeout=4 * DEADLINE)
        else:
            response = await _call("auth", self._auth.RecordRequests, request, timeout=4 * DEADLINE,
                                   metadata=self._metadata("auth"))
        refused = [record.request_id for (record, _, _), outcome in zip(batch, response.outcomes, strict=False)
                   if outcome == auth_pb2.RECORD_OUTCOME_REFUSED]
        if refused:
            log.error("audit records refused", extra={"fields": {"request_ids": refused[:20], "items": len(refused)}})

    async def resolve_model(self, model: str, serve_successor: bool = False,
                            identity: str = "") -> catalog_pb2.ResolveModelResponse:
        """Through the resolution cache; `serve_successor`: the caller's tenant opted in to having a retired model
        served by its successor (as its signed `identity`, sent on a cache miss, says)."""
        cache, key = self.model_cache, (model, serve_successor)
        span = trace.get_current_span()
        try:
            resolved = cache.get(key)
        except ApiError:  # a cached not-found answer
            span.set_attribute("llmaas.model_cache", "hit")
            raise
        if resolved is not None:
            span.set_attribute("llmaas.model_cache", "hit")
            return resolved
        span.set_attribute("llmaas.model_cache", "miss" if cache.active else "off")
        token = cache.token()
        try:
            resolved = await _call("catalog", self._catalog.ResolveModel,
                                   catalog_pb2.ResolveModelRequest(model=model, serve_successor=serve_successor),
                                   metadata=self._metadata("catalog", identity))
        except ApiError as err:
            cache.put(key, err, token)
            raise
        cache.put(key, resolved, token)
        return resolved

    async def report_replica_failure(self, replica: str, triton_model: str) -> None:
        """Tells the catalog that a model's instance died on a replica (it reloads it there)."""
        await _call("catalog", self._catalog.ReportReplicaFailure,
                    catalog_pb2.ReportReplicaFailureRequest(replica=replica, triton_model=triton_model),
                    metadata=self._metadata("catalog"))

    async def serving_status(self) -> catalog_pb2.GetServingStatusResponse:
        """The catalog's serving state of every deployed model (the public status: llmaas.router.status)."""
        return await _call("catalog", self._catalog.GetServingStatus, catalog_pb2.GetServingStatusRequest(),
                           metadata=self._metadata("catalog"))

    def watch_catalog(self):
        """A WatchCatalog stream (grpc.aio unary-stream call) for llmaas.router.model_cache.CatalogWatcher."""
        return self._catalog_watch.WatchCatalog(catalog_pb2.WatchCatalogRequest(), metadata=self._metadata("catalog"))

    async def check_prompt(self, request: guard_pb2.CheckPromptRequest,
                           identity: str = "") -> guard_pb2.CheckPromptResponse:
        traceparent = streamable() if self._streams else None
        if traceparent is not None:
            return await self._guard_calls.call("CheckPrompt", request, guard_pb2.CheckPromptResponse,
                                                identity=identity, traceparent=traceparent, timeout=DEADLINE)
        return await _call("guard", self._guard.CheckPrompt, request, metadata=self._metadata("guard", identity))

    async def reserve(self, request: metering_pb2.ReserveRequest, identity: str = "") -> metering_pb2.ReserveResponse:
        traceparent = streamable() if self._streams else None
        if traceparent is not None:
            return await self._metering_calls.call("Reserve", request, metering_pb2.ReserveResponse,
                                                   identity=identity, traceparent=traceparent, timeout=DEADLINE)
        return await _call("metering", self._metering.Reserve, request, metadata=self._metadata("metering", identity))

    async def settle_batch(self, batch: list[metering_pb2.SettleRequest]) -> None:
        """Many settlements in one call (llmaas.router.handoff.BatchedHandOff gathers them), retried by the service
        config above; each item carries its request's signed identity. The call fails (and is retried whole: idempotent per item) only if metering could not record it
        at all; an item metering refuses (no reservation for its id, malformed) is final, and logged with its
        request id."""
        request = metering_pb2.SettleBatchRequest(items=batch)
        if self._streams:
            response = await self._metering_calls.call("SettleBatch", request, metering_pb2.SettleBatchResponse,
                                                       timeout=4 * DEADLINE)
        else:
            response = await _call("metering", self._metering.SettleBatch, request, timeout=4 * DEADLINE,
                                   metadata=self._metadata("metering"))
        for result in response.results:
            if result.error_code:
                log.error("settlement failed", extra={"fields": {
                    "request_id": result.request_id, "error": result.error_message, "code": result.error_code}})

    async def close(self) -> None:
        for calls in (self._guard_calls, self._metering_calls, self._auth_calls):
            await calls.close()
        for ch in [*self._channels, self._watch_channel, *self._stream_channels]:
            await ch.close()


def _identity(i: auth_pb2.Identity) -> Identity:
    return Identity(i.tenant_id, i.key_id, i.role, tuple(i.allowed_models),
                    tuple(Quota(q.window_seconds, q.max_requests, q.max_tokens) for q in i.quotas),
                    serve_successor=i.serve_successor)
