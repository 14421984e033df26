"""llmaas.guard.v1.GuardService: one verdict per request over every part of the conversation, and the admin
operations on a tenant's policy."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from opentelemetry import trace

from llmaas.common.call_stream import serve_stream
from llmaas.common.errors import invalid_request
from llmaas.common.identity import require_admin
from llmaas.guard import metrics, normalize
from llmaas.guard.behaviour import BOUNDED_CHARS, Behaviour
from llmaas.guard.budget import DEADLINE_MARGIN_SECONDS, Limiter
from llmaas.guard.context import Context
from llmaas.guard.policy import PolicyStore
from llmaas.guard.refusals import MAX_LIMIT, Refusal, RefusalLog
from llmaas.guard.v1 import guard_pb2, guard_pb2_grpc
from llmaas.guard.verdict import DOCUMENT, PROMPT, Detector

log = logging.getLogger("llmaas.guard")

_KIND = {guard_pb2.PART_SOURCE_USER: PROMPT, guard_pb2.PART_SOURCE_UNSPECIFIED: PROMPT,
         guard_pb2.PART_SOURCE_TOOL_RESULT: DOCUMENT, guard_pb2.PART_SOURCE_DOCUMENT: DOCUMENT}
_MODE = {"enforce": guard_pb2.GUARD_MODE_ENFORCE, "shadow": guard_pb2.GUARD_MODE_SHADOW, "off": guard_pb2.GUARD_MODE_OFF}
_MODE_NAME = {v: k for k, v in _MODE.items()}


class GuardServicer(guard_pb2_grpc.GuardServiceServicer, guard_pb2_grpc.GuardInternalServiceServicer):
    def __init__(self, detector: Detector, behaviour: Behaviour, policies: PolicyStore, admin_token: str,
                 internal_secret: str, refusals: RefusalLog | None = None) -> None:
        self._detector = detector
        # Where flagged verdicts are recorded for the tenant's admin (None: nowhere, as in unit tests).
        self._refusals = refusals
        self._behaviour = behaviour
        self._policies = policies
        self._admin_token = admin_token
        self._secret = internal_secret
        self._limiter = Limiter(detector.budget)
        self._context = Context()
        # The SQL store's reads go to a thread when its cache is stale; any other store (a test's stand-in) is read
        # with get().
        self._fetch_policies = isinstance(policies, PolicyStore)

    async def CheckPrompt(self, request, context):
        tenant_id = request.tenant_id
        # The tenant's policy from the cache; read from the database in a thread when stale, never on the loop.
        policy = ((self._policies.cached(tenant_id) or await self._policies.fetch(tenant_id)) if self._fetch_policies
                  else self._policies.get(tenant_id))
        mode = _MODE[policy.mode]
        if mode == guard_pb2.GUARD_MODE_OFF:
            return guard_pb2.CheckPromptResponse(decision=guard_pb2.DECISION_ALLOW, mode=mode,
                                                 threshold=policy.threshold)
        # Each part's text read once: every read of a protobuf string field decodes its UTF-8 again.
        parts, newest, systems = [], None, []  # newest: the last user prompt with text, by index in parts
        for p in request.parts:
            kind = _KIND.get(p.source)
            if kind is not None:
                text = p.text
                if p.source == guard_pb2.PART_SOURCE_USER and text and not text.isspace():
                    newest = len(parts)
                parts.append((kind, text))
            elif p.source == guard_pb2.PART_SOURCE_SYSTEM:
                systems.append(p.text)  # context for the verdict only (context.py), never analysed or kept
        prompt = parts[newest][1] if newest is not None else None
        # Its comparison form, computed once for the behavioural window and the rules (a long prompt's window keeps
        # its head and tail only, and its analysis goes by chunks: each normalises its own).
        prepared = normalize.prepare(prompt) if prompt is not None and len(prompt) <= 2 * BOUNDED_CHARS else None
        # Answered before the caller gives up, with what was analysed by then (the rest is a finding).
        remaining = _time_remaining(context)
        deadline = time.monotonic() + remaining - DEADLINE_MARGIN_SECONDS if remaining is not None else None
        run = self._detector.start(parts, {newest: prepared} if prepared is not None else None)
        if run.heavy:  # more than one chunk: one of the tenant's few slots for long analyses
            budget = self._detector.budget.queue_seconds
            await self._limiter.acquire(tenant_id, budget if deadline is None
                                        else min(budget, deadline - time.monotonic()))
        try:
            behaviour = (await self._behaviour.observe(tenant_id, request.end_user_id, prompt,
                                                       prepared.form if prepared is not None else None)
                         if prompt is not None else [])
            if systems and prompt is not None:
                behaviour += self._context.findings(systems, prepared.form if prepared is not None
                                                    else normalize.comparison_form(prompt[:BOUNDED_CHARS]))
            verdict = await self._detector.check(run, behaviour, deadline)
        finally:
            if run.heavy:
                self._limiter.release(tenant_id)
        flagged = verdict.score >= policy.threshold
        block = flagged and mode == guard_pb2.GUARD_MODE_ENFORCE
        _record(request, policy.mode, verdict, flagged, block)
        if flagged and self._refusals is not None:
            self._refusals.add(tenant_id, Refusal(datetime.now(UTC), request.request_id, "block" if block else "flag",
                                                  policy.mode, round(verdict.score, 4), policy.threshold,
                                                  tuple(verdict.reasons)))
        return guard_pb2.CheckPromptResponse(
            decision=guard_pb2.DECISION_BLOCK if block else guard_pb2.DECISION_ALLOW, score=verdict.score, mode=mode,
            flagged=flagged, threshold=policy.threshold,
            findings=[guard_pb2.Finding(layer=f.layer, reason=f.reason, score=f.score) for f in verdict.findings])

    async def StreamCalls(self, request_iterator, context):
        """CheckPrompt calls on one stream (llmaas.common.call_stream): each checked as the unary call is."""
        methods = {"CheckPrompt": (self.CheckPrompt, guard_pb2.CheckPromptRequest)}
        async for replies in serve_stream(request_iterator, context, guard_pb2.StreamCallsResponse, methods,
                                          "llmaas.guard.v1.GuardInternalService", self._secret):
            yield replies

    def _policy_message(self, tenant_id: str) -> guard_pb2.TenantPolicy:
        policy = self._policies.get(tenant_id)
        return guard_pb2.TenantPolicy(tenant_id=tenant_id, mode=_MODE[policy.mode], threshold=policy.threshold)

    async def GetTenantPolicy(self, request, context):
        require_admin(context, self._admin_token, self._secret, request.tenant_id)
        if not request.tenant_id:
            raise invalid_request("tenant_id is required", param="tenant_id")
        return guard_pb2.GetTenantPolicyResponse(policy=self._policy_message(request.tenant_id))

    async def SetTenantPolicy(self, request, context):
        require_admin(context, self._admin_token, self._secret, request.tenant_id)
        if not request.tenant_id or len(request.tenant_id) > 64:  # the column's width (PostgreSQL enforces it)
            raise invalid_request("tenant_id must be 1 to 64 characters", param="tenant_id")
        mode = _MODE_NAME.get(request.policy.mode)
        if mode is None:
            raise invalid_request("mode must be GUARD_MODE_ENFORCE, GUARD_MODE_SHADOW or GUARD_MODE_OFF",
                                  param="mode", code="invalid_value")
        try:
            self._policies.set(request.tenant_id, mode, request.policy.threshold)
        except ValueError as e:
            raise invalid_request(str(e), param="threshold", code="invalid_value") from None
        return guard_pb2.SetTenantPolicyResponse(policy=self._policy_message(request.tenant_id))


    async def ListGuardRefusals(self, request, context):
        require_admin(context, self._admin_token, self._secret, request.tenant_id)
        if not request.tenant_id:
            raise invalid_request("tenant_id is required", param="tenant_id")
        if not 0 <= request.limit <= MAX_LIMIT:
            raise invalid_request(f"limit must be between 1 and {MAX_LIMIT}", param="limit", code="invalid_value")
        if self._refusals is None:
            return guard_pb2.ListGuardRefusalsResponse()
        found = await asyncio.to_thread(self._refusals.recent, request.tenant_id, request.limit or 50)
        out = guard_pb2.ListGuardRefusalsResponse()
        for r in found:
            item = out.refusals.add(request_id=r.request_id, decision=r.decision, mode=_MODE[r.mode], score=r.score,
                                    threshold=r.threshold, reasons=list(r.reasons))
            item.created_at.FromDatetime(r.created_at)
        return out


def _time_remaining(context) -> float | None:
    """Seconds until the caller's deadline (None: it set none)."""
    try:
        return context.time_remaining()
    except AttributeError:  # a test's stand-in context
        return None


def _record(request, mode: str, verdict, flagged: bool, block: bool) -> None:
    """The verdict's record: on the span always, in the log when flagged. Metadata only, never the prompt."""
    decision = "block" if block else "flag" if flagged else "allow"
    metrics.verdict(decision, mode, verdict.reasons)
    span = trace.get_current_span()
    if span.is_recording():  # one call, one lock: set_attribute four times cost twice as much
        span.set_attributes({"llmaas.guard.decision": decision, "llmaas.guard.score": round(verdict.score, 4),
                             "llmaas.guard.mode": mode, "llmaas.guard.reasons": ",".join(verdict.reasons)})
    if flagged:
        log.info("guard verdict", extra={"fields": {
            "tenant_id": request.tenant_id, "request_id": request.request_id, "decision": decision, "mode": mode,
            "score": round(verdict.score, 4), "reasons": verdict.reasons, "layers": verdict.layers}})
