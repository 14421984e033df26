"""llmaas.metering.v1.MeteringService: protobuf in and out; the logic lives in ledger, pricing, tiers and headers."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import grpc

from llmaas.common.call_stream import serve_stream
from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.identity import Quota, require_admin
from llmaas.common.service_auth import item_identity
from llmaas.metering import metrics
from llmaas.metering.group_commit import GroupCommit
from llmaas.metering.headers import rate_limit_headers, refusal_message, retry_after
from llmaas.metering.ledger import (
    GROUPS,
    Ledger,
    Reservation,
    SettleItem,
    Settlement,
    UnknownReservation,
    UnknownTier,
    UsageRow,
)
from llmaas.metering.pricing import KINDS, PricingError, Usage, eur_to_nano, format_eur, format_kwh, parse_eur
from llmaas.metering.tiers import Tier
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc

log = logging.getLogger("llmaas.metering")

OUTCOMES = {"completed", "failed", "cancelled", "rejected"}
RATE_LIMITED = "rate_limit_exceeded"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _day(value: str, param: str) -> str:
    if value:
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise invalid_request(f"{param} must be a day, YYYY-MM-DD", param=param, code="invalid_value") from None
    return value


def tier_message(tier: Tier) -> metering_pb2.Tier:
    msg = metering_pb2.Tier(id=tier.id, name=tier.name, description=tier.description)
    if tier.purchase_credit_nano is not None:
        msg.purchase_credit_eur = format_eur(tier.purchase_credit_nano)
    if tier.monthly_budget_nano is not None:
        msg.monthly_budget_eur = format_eur(tier.monthly_budget_nano)
    for name in ("output_tokens_per_hour", "output_tokens_per_day", "requests_per_minute"):
        if getattr(tier, name) is not None:
            setattr(msg, name, getattr(tier, name))
    return msg


def usage_row(row: UsageRow) -> metering_pb2.UsageRow:
    g = row.group
    return metering_pb2.UsageRow(
        key_id=g.get("key", ""), model=g.get("model", ""), day=g.get("day", ""), month=g.get("month", ""),
        kind=g.get("kind", ""), requests=row.requests, prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens, reasoning_tokens=row.reasoning_tokens,
        total_tokens=row.prompt_tokens + row.completion_tokens, audio_ms=row.audio_ms,
        cost_eur=format_eur(row.cost_nano), energy_kwh=format_kwh(row.energy_uwh),
        failed_requests=row.failed_requests, cancelled_requests=row.cancelled_requests,
        expired_requests=row.expired_requests)


def _item_problem(item, secret: str) -> tuple[str, str] | None:
    """Why a SettleBatch item is refused alone (error code, message), or None."""
    if item.outcome not in OUTCOMES or not item.request_id:
        return "invalid_request", f"request_id is required and outcome must be one of {sorted(OUTCOMES)}"
    if item_identity(item.identity, secret, item.request_id) is None:
        return "invalid_identity", "The item's signed identity is missing, invalid, expired or bound to another request."
    return None


class MeteringServicer(metering_pb2_grpc.MeteringServiceServicer, metering_pb2_grpc.MeteringInternalServiceServicer):
    def __init__(self, ledger: Ledger, admin_token: str = "", internal_secret: str = "",
                 clock: Callable[[], dt.datetime] = _now) -> None:
        self._ledger = ledger
        self._admin_token = admin_token
        self._secret = internal_secret
        self._clock = clock
        # Reserve and Settle: gathered into one transaction per round, on the ledger's own thread (group_commit).
        self._commits = GroupCommit(ledger, clock)
        # The admin API's queries and writes: off the event loop too, apart from the request path's thread.
        self._admin = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-admin")

    async def _off_loop(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._admin, functools.partial(fn, *args, **kwargs))

    async def StreamCalls(self, request_iterator, context):
        """Reserve and SettleBatch calls on one stream (llmaas.common.call_stream): each answered as the unary call
        is."""
        methods = {"Reserve": (self.Reserve, metering_pb2.ReserveRequest),
                   "SettleBatch": (self.SettleBatch, metering_pb2.SettleBatchRequest)}
        async for replies in serve_stream(request_iterator, context, metering_pb2.StreamCallsResponse, methods,
                                          "llmaas.metering.v1.MeteringInternalService", self._secret):
            yield replies

    async def Reserve(self, request, context):
        if not request.request_id or not request.tenant_id:
            raise invalid_request("request_id and tenant_id are required", param="request_id")
        kind = request.kind or "chat"
        if kind not in KINDS:
            raise invalid_request(f"kind must be one of {list(KINDS)}", param="kind")
        kwh = (Decimal(repr(request.kwh_per_million_tokens)) if request.HasField("kwh_per_million_tokens") else None)
        reservation = Reservation(
            request_id=request.request_id, tenant_id=request.tenant_id, key_id=request.key_id, model=request.model,
            max_input_tokens=request.max_input_tokens, max_output_tokens=request.max_output_tokens, kind=kind,
            max_audio_ms=request.max_audio_ms, kwh_per_million=kwh,
            quotas=tuple(Quota(q.window_seconds, q.max_requests, q.max_tokens) for q in request.quotas))
        now = self._clock()
        t0 = time.perf_counter()
        decision = await self._commits.reserve(reservation, now)
        metrics.RESERVE_SECONDS.observe(time.perf_counter() - t0)
        headers = rate_limit_headers(decision, now)
        if not decision.granted:
            metrics.refused(request.tenant_id, request.model, decision.exhausted)
            raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal_message(decision, now), code=RATE_LIMITED,
                           headers=(("retry-after", str(retry_after(decision, now))), *headers))
        return metering_pb2.ReserveResponse(
            granted=True, headers=[metering_pb2.ResponseHeader(name=k, value=v) for k, v in headers],
            replay=decision.replay)

    async def Settle(self, request, context):
        if request.outcome not in OUTCOMES:
            raise invalid_request(f"outcome must be one of {sorted(OUTCOMES)}", param="outcome")
        [result] = await self._settle([request])
        if isinstance(result, UnknownReservation):
            raise ApiError(grpc.StatusCode.NOT_FOUND, "No reservation for this request id",
                           param="request_id", code="reservation_not_found")
        if isinstance(result, Exception):
            raise result
        return result

    async def SettleBatch(self, request, context):
        """Each item as Settle would answer it, in one transaction (per round: see group_commit). An item's own signed
        identity, bound to its request id, vouches for it (Reserve checked that request's tenant and key)."""
        problems = [_item_problem(item, self._secret) for item in request.items]
        settled = iter(await self._settle([item for item, problem in zip(request.items, problems, strict=True)
                                           if problem is None]))
        results = []
        for item, problem in zip(request.items, problems, strict=True):
            if problem is not None:
                code, message = problem
                results.append(metering_pb2.SettleResult(request_id=item.request_id, error_code=code,
                                                         error_message=message))
                continue
            result = next(settled)
            if isinstance(result, metering_pb2.SettleResponse):
                results.append(metering_pb2.SettleResult(request_id=item.request_id, settlement=result))
            elif isinstance(result, UnknownReservation):
                results.append(metering_pb2.SettleResult(request_id=item.request_id, error_code="reservation_not_found",
                                                         error_message="No reservation for this request id"))
            else:
                log.error("settlement failed", exc_info=result, extra={"fields": {"request_id": item.request_id}})
                results.append(metering_pb2.SettleResult(request_id=item.request_id, error_code="internal_error",
                                                         error_message="The settlement could not be recorded."))
        return metering_pb2.SettleBatchResponse(results=results)

    async def _settle(self, requests: list) -> list[metering_pb2.SettleResponse | Exception]:
        """Settles the (valid) requests; one result per request: its response, or what failed it. The ledger
        itself unavailable (locked past its timeout, unreachable) fails the whole call with UNAVAILABLE, which the
        router retries (settlement is idempotent, so items that did land count once)."""
        t0 = time.perf_counter()
        items = [SettleItem(r.request_id, Usage(r.prompt_tokens, r.completion_tokens, r.reasoning_tokens, r.audio_ms),
                            r.outcome) for r in requests]
        results = await self._commits.settle(items) if items else []
        metrics.SETTLE_SECONDS.observe(time.perf_counter() - t0)
        if any(isinstance(r, self._ledger.unavailable) for r in results):
            raise ApiError(grpc.StatusCode.UNAVAILABLE, "The ledger is unavailable; retry.", code="ledger_unavailable")
        metrics.settled_many([(s, item.outcome) for s, item in zip(results, items, strict=True)
                              if isinstance(s, Settlement) and s.recorded])
        out: list[metering_pb2.SettleResponse | Exception] = []
        for request, s in zip(requests, results, strict=True):
            if isinstance(s, Exception):
                out.append(s)
            elif not s.recorded:
                out.append(metering_pb2.SettleResponse(recorded=False))
            else:
                if s.capped:
                    self._log_capped(request, s)
                out.append(metering_pb2.SettleResponse(
                    recorded=True, cost_eur=format_eur(s.cost_nano), capped=s.capped,
                    refused_prompt_tokens=s.excess.prompt_tokens,
                    refused_completion_tokens=s.excess.completion_tokens,
                    refused_reasoning_tokens=s.excess.reasoning_tokens, refused_audio_ms=s.excess.audio_ms))
        return out

    @staticmethod
    def _log_capped(request, s: Settlement) -> None:
        # Ids and counts only (metering never sees prompt text).
        log.warning("settlement above its reservation: capped", extra={"fields": {
            "request_id": request.request_id, "tenant_id": s.tenant_id, "key_id": s.key_id, "model": s.model,
            "claimed_prompt_tokens": request.prompt_tokens, "claimed_completion_tokens": request.completion_tokens,
            "refused_prompt_tokens": s.excess.prompt_tokens, "refused_completion_tokens": s.excess.completion_tokens,
            "refused_reasoning_tokens": s.excess.reasoning_tokens, "refused_audio_ms": s.excess.audio_ms}})
        metrics.CAPPED.labels(metrics.tenant_label(s.tenant_id), s.model).inc()

    async def GetUsage(self, request, context):
        require_admin(context, self._admin_token, self._secret, request.tenant_id)
        if not request.tenant_id:
            raise invalid_request("tenant_id is required", param="tenant_id")
        group_by = tuple(dict.fromkeys(request.group_by))
        if unknown := [g for g in group_by if g not in GROUPS or g == "tenant"]:
            raise invalid_request(f"group_by {unknown} is not among key, model, day, month, kind", param="group_by",
                                  code="invalid_value")
        filters = {"tenant_id": request.tenant_id, "key_id": request.key_id, "model": request.model,
                   "start_day": _day(request.start_day, "start_day"), "end_day": _day(request.end_day, "end_day")}
        total = (await self._off_loop(self._ledger.usage, **filters))[0]
        rows = await self._off_loop(self._ledger.usage, **filters, group_by=group_by) if group_by else []
        return metering_pb2.GetUsageResponse(
            requests=total.requests, prompt_tokens=total.prompt_tokens, completion_tokens=total.completion_tokens,
            tenant_id=request.tenant_id, currency=self._ledger.prices.currency, total=usage_row(total),
            rows=[usage_row(r) for r in rows])

    async def ListTiers(self, request, context):
        require_admin(context, self._admin_token, self._secret)
        tiers = self._ledger.tiers
        return metering_pb2.ListTiersResponse(default_tier=tiers.default,
                                              tiers=[tier_message(t) for t in tiers.by_id.values()])

    async def GetTenantTier(self, request, context):
        require_admin(context, self._admin_token, self._secret, request.tenant_id)
        if not request.tenant_id:
            raise invalid_request("tenant_id is required", param="tenant_id")
        tier, assigned = await self._off_loop(self._ledger.tenant_tier, request.tenant_id)
        month = self._clock().strftime("%Y-%m")
        spent = (await self._off_loop(self._ledger.usage, tenant_id=request.tenant_id, start_day=f"{month}-01",
                                      end_day=f"{month}-31"))[0]
        charged = await self._off_loop(self._ledger.month_charged, request.tenant_id, self._clock())
        return metering_pb2.GetTenantTierResponse(
            tenant_id=request.tenant_id, tier=tier_message(tier), assigned=assigned,
            month_spent_eur=format_eur(spent.cost_nano), month_charged_eur=format_eur(charged))

    async def SetTenantTier(self, request, context):
        require_admin(context, self._admin_token, self._secret)  # the platform admin only: no self-upgrades
        if not request.tenant_id:
            raise invalid_request("tenant_id is required", param="tenant_id")
        budget = None
        if request.HasField("monthly_budget_eur"):
            try:
                budget = eur_to_nano(parse_eur(request.monthly_budget_eur, "monthly_budget_eur"))
            except PricingError as e:
                raise invalid_request(str(e), param="monthly_budget_eur", code="invalid_value") from None
        try:
            tier = await self._off_loop(self._ledger.set_tenant_tier, request.tenant_id, request.tier, budget,
                                        self._clock())
        except UnknownTier:
            raise invalid_request(f"Unknown tier {request.tier!r}; tiers: {sorted(self._ledger.tiers.by_id)}",
                                  param="tier", code="invalid_value") from None
        return metering_pb2.SetTenantTierResponse(tenant_id=request.tenant_id, tier=tier_message(tier))

    async def ListPrices(self, request, context):
        require_admin(context, self._admin_token, self._secret)
        out = []
        for p in self._ledger.prices.entries:
            eur = {k: str(v) for k, v in p.as_eur().items()}
            out.append(metering_pb2.Prices(effective_from=p.effective_from.date().isoformat(), **eur))
        return metering_pb2.ListPricesResponse(currency=self._ledger.prices.currency, prices=out)
