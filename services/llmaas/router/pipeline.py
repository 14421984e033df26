"""One chat completion, from validated parameters to settled usage.

prepare(): identity, validation and the request limits (llmaas.router.params), the model (the catalog, through the
router's cache) and the limits of its context (only a request within them costs the guard's analysis), prompt
rendering, then the guard's verdict and metering's reservation, asked at once: everything that can refuse the request
happens before any byte is sent, so refusals keep their HTTP status. run(): the model's deltas, from one of the
replicas the catalog named (llmaas.router.replicas). finish(): called by the servicer in a `finally` as soon as
prepare() returned, so whatever happens next (success, backend error, a client gone before the first delta or in the
middle) the reservation is settled, and the audit record written, exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field

import grpc
from opentelemetry import trace

from llmaas.auth.v1 import auth_pb2
from llmaas.catalog.v1 import catalog_pb2
from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.identity import (
    IDENTITY_HEADER,
    IDENTITY_TTL_SECONDS,
    ROLE_KEY,
    Identity,
    bearer_token,
    client_address,
    encode_identity,
    identity_from_metadata,
    metadata_dict,
    permission_denied,
)
from llmaas.guard.v1 import guard_pb2
from llmaas.metering.v1 import metering_pb2
from llmaas.router import choices, images, metrics, ocr, output_guard, template
from llmaas.router.chat_output import ChatOutput, trace_chat_api
from llmaas.router.downstream import Downstream
from llmaas.router.handoff import BatchedHandOff
from llmaas.router.output_guard import OutputGuard, first_offending
from llmaas.router.params import PROMPT_TOKEN_SLACK, ChatParams, check_context, check_prompt_tokens, parse_chat_request
from llmaas.router.reasoning import ReasoningTokens
from llmaas.router.replicas import ReplicaPool
from llmaas.router.tool_prompt import tool_guard_parts
from llmaas.router.triton import Delta
from llmaas.router.v1 import router_pb2

log = logging.getLogger("llmaas.router")

REST_CHAT = "POST /v1/chat/completions"
# The audit trail's status for a client that went away before the end (nginx's convention).
CLIENT_CLOSED = 499
# How long a settlement (or audit record) waits for others to share its batch call (llmaas.router.handoff).
HANDOFF_DELAY = 0.015

_SOURCE = {"system": guard_pb2.PART_SOURCE_SYSTEM, "developer": guard_pb2.PART_SOURCE_SYSTEM,
           "user": guard_pb2.PART_SOURCE_USER, "assistant": guard_pb2.PART_SOURCE_ASSISTANT,
           "tool": guard_pb2.PART_SOURCE_TOOL_RESULT}


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Part of completion_tokens: a reasoning model's reasoning (llmaas.router.reasoning), billed at its own price.
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Caller:
    """Who sent the request and how, for the permission check and the audit record of how it ended. `signed`: its
    identity as the services behind the router check it (the header ext_authz signed, or the router's own signature
    for a direct gRPC caller), forwarded with the calls made for it."""
    identity: Identity
    request_id: str
    endpoint: str
    client_address: str
    signed: str = ""
    # A fresh signature for the hand-offs after the answer ([value, re-sign after]), shared by the settlement and
    # the audit record: one signature per request, however long the answer.
    fresh: list = field(default_factory=list, compare=False, repr=False)
    # When the router received the request (perf_counter): its latency in the metrics (llmaas.router.metrics).
    started: float = field(default_factory=time.perf_counter, compare=False, repr=False)


@dataclass
class ChatRun:
    id: str
    request_id: str
    created: int
    model: str  # canonical public id
    params: ChatParams
    caller: Caller
    triton_model: str
    # The Triton replicas that serve it now (gRPC addresses, from the catalog).
    endpoints: tuple[str, ...]
    prompt: str
    sampling: dict
    # The model's context (prompt + completion tokens; 0: unknown), checked against the backend's prompt count.
    max_model_len: int = 0
    # Response metadata, sent with the first output (never earlier: an error before it keeps its HTTP status).
    headers: tuple[tuple[str, str], ...] = ()
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    error: ApiError | None = None
    # "completed" or "failed" once the model's output ended; still None if the client went away first.
    outcome: str | None = None
    finished: bool = False
    prompt_checked: bool = False
    # Tool calls and logprobs shaping (llmaas.router.chat_output); None for a plain text answer.
    output: ChatOutput | None = None
    # When the served attempt's first output token came (perf_counter; 0: none yet), for its time to first token.
    first_token: float = 0.0
    # A reasoning model's format (the catalog's ReasoningFormat) and whether guided decoding writes the output; None
    # for any other model, which then does no reasoning work at all.
    reasoning: catalog_pb2.ReasoningFormat | None = None
    constrained: bool = False
    # The request's images, decoded and checked (llmaas.router.images), for a vision or an OCR model.
    pages: tuple = ()
    ocr: bool = False  # an OCR model (llmaas.router.ocr), not a generating one
    images: tuple[bytes, ...] = ()  # a vision model's images, base64-encoded for the backend
    # Several choices (n > 1, several /v1/completions prompts): one child run per choice (llmaas.router.choices),
    # generated by run_choices(); this run then holds the request's reservation, settlement and audit record.
    choices: tuple = ()
    prompt_index: int = 0  # a child's prompt, among a /v1/completions request's
    # The answer's check for exfiltration and system-prompt leaks (llmaas.router.output_guard), in the tenant's guard
    # mode; None when that mode is off, and for /v1/completions and OCR (not scanned).
    output_guard: OutputGuard | None = None

    def reasoning_counter(self) -> ReasoningTokens:
        return ReasoningTokens(self.reasoning.start, self.reasoning.end, constrained=self.constrained)

    @property
    def identity(self) -> Identity:
        return self.caller.identity


class ChatPipeline:
    def __init__(self, downstream: Downstream, replicas: ReplicaPool, internal_secret: str) -> None:
        self._downstream = downstream
        self._replicas = replicas
        self._secret = internal_secret
        # When the last interactive chat request arrived (monotonic): the batch worker yields while they come.
        self.last_interactive = 0.0
        # Settlements go to metering in batches (one SettleBatch RPC and one ledger transaction per batch), each
        # within HANDOFF_DELAY of the request's end; retried while metering is unavailable (see llmaas.router.handoff).
        # Each carries its request's identity, signed when its batch is sent (like the audit records below).
        self._settlements: BatchedHandOff[tuple[Caller, metering_pb2.SettleRequest]] = BatchedHandOff(
            "settlement", lambda batch: downstream.settle_batch(
                [_signed(request, self._fresh_signature(caller)) for caller, request in batch]),
            lambda item: item[1].request_id, max_delay=HANDOFF_DELAY)
        # Audit records of how requests ended go to auth the same way (one RecordRequests RPC and one transaction per
        # batch). Each is signed when its batch is sent, so a batch retried across an auth restart still carries
        # unexpired identities.
        self._records: BatchedHandOff[tuple[Caller, auth_pb2.RecordRequestRequest]] = BatchedHandOff(
            "audit record", lambda batch: downstream.record_requests(
                [(request, self._fresh_signature(caller), caller.client_address) for caller, request in batch]),
            lambda item: item[0].request_id, max_delay=HANDOFF_DELAY)

    async def _caller(self, md: dict[str, str], context, endpoint: str) -> Caller:
        """Who calls, and the request's id. The id is the platform's: the one Envoy minted, bound in the identity
        ext_authz signed, or a fresh one for a direct gRPC caller, whose own x-request-id is never used (metering is
        idempotent by request id: a chosen id would make a replay free)."""
        # Set by ext_authz behind Envoy (a forged or expired one is refused here).
        identity = identity_from_metadata(md, self._secret)
        if identity is not None:
            if not identity.request_id or identity.role != ROLE_KEY:
                # ext_authz binds every header it mints to its request; an admin's header never calls a model.
                raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "Invalid identity header for this call.",
                               code="invalid_identity")
            request_id = identity.request_id
            client = client_address(md, context, identity)
            signed = md[IDENTITY_HEADER]
        else:
            # Direct gRPC callers do not pass through Envoy's ext_authz: auth verifies their key (and audits it).
            request_id, client = str(uuid.uuid4()), (context.peer() or "")[:64]
            token = bearer_token(md.get("authorization", ""))
            if not token:
                raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "You didn't provide an API key.",
                               code="missing_api_key")
            identity = await self._downstream.authenticate(auth_pb2.AuthenticateRequest(
                api_key=token, endpoint=endpoint, client_address=client, request_id=request_id))
            # Signed here, as ext_authz would have: what guard, metering and the catalog accept.
            signed = encode_identity(identity, self._secret, request_id=request_id, client_address=client)
            return Caller(identity, request_id, endpoint, client, signed,
                          [signed, time.monotonic() + IDENTITY_TTL_SECONDS / 2])
        return Caller(identity, request_id, endpoint, client, signed)

    async def prepare(self, request: router_pb2.CreateChatCompletionRequest, context, *,
                      stream: bool | None = None, endpoint: str = REST_CHAT, parse=parse_chat_request) -> ChatRun:
        """`parse`: the request's parser into ChatParams (llmaas.router.completions' for /v1/completions)."""
        self.last_interactive = time.monotonic()
        md = metadata_dict(context)
        caller = await self._caller(md, context, endpoint)
        try:
            return await self._prepare(request, md, caller, stream, parse)
        except ApiError as err:
            # Refused before dispatch: the audit trail still says how the request ended.
            self._record(caller, model="", usage=Usage(), error=err)
            raise

    # The batch worker's entry points (llmaas.router.batch.worker): a line goes through the same checks, reservation,
    # generation, settlement and audit as an interactive request, for a caller the worker vouches for.
    async def caller(self, context, endpoint: str) -> Caller:
        """Who calls (the signed identity behind Envoy, a verified key for a direct gRPC caller), for an operation
        of the router's other than a completion (the Files and Batch API)."""
        return await self._caller(metadata_dict(context), context, endpoint)

    def caller_for(self, identity: Identity, request_id: str, endpoint: str, client: str) -> Caller:
        """A caller whose identity the router signs itself (as for a direct gRPC caller), bound to `request_id`."""
        signed = encode_identity(identity, self._secret, request_id=request_id, client_address=client)
        return Caller(identity, request_id, endpoint, client, signed,
                      [signed, time.monotonic() + IDENTITY_TTL_SECONDS / 2])

    async def current_identity(self, caller: Caller) -> Identity | None:
        """The caller's key as auth has it now (permissions, quotas), None once revoked or expired: for work run
        later for a key (a batch's lines)."""
        return await self._downstream.current_identity(caller.identity.tenant_id, caller.identity.key_id,
                                                       caller.signed)

    async def prepare_for(self, caller: Caller, request, *, kind: str = "chat", parse=parse_chat_request) -> ChatRun:
        """prepare() for an established caller, not streamed, reserved (and so billed) as `kind`."""
        try:
            return await self._prepare(request, {}, caller, False, parse, kind)
        except ApiError as err:
            self._record(caller, model="", usage=Usage(), error=err)
            raise

    def settle(self, caller: Caller, request_id: str, usage: Usage, outcome: str) -> None:
        """Queues a settlement (idempotent by request id: settling again what was settled changes nothing)."""
        self._settlements.submit((caller, metering_pb2.SettleRequest(
            request_id=request_id, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            reasoning_tokens=usage.reasoning_tokens, outcome=outcome)))

    def record(self, caller: Caller, model: str, usage: Usage, error: ApiError | None, status: int = 200) -> None:
        """Queues the audit record of how a request ended."""
        self._record(caller, model, usage, error, status)

    @property
    def backend_outstanding(self) -> int:
        """Requests this router has at the model replicas now (the batch worker yields to interactive ones)."""
        return self._replicas.outstanding

    async def _prepare(self, request, md: dict[str, str], caller: Caller, stream: bool | None,
                       parse=parse_chat_request, kind: str = "chat") -> ChatRun:
        identity = caller.identity
        params = parse(request, stream=stream)
        span = trace.get_current_span()
        span.set_attribute("llmaas.tenant_id", identity.tenant_id)
        span.set_attribute("llmaas.key_id", identity.key_id)
        span.set_attribute("llmaas.stream", params.stream)

        # The model first (usually the router's cache, no RPC): a request over its context, or for a model it may not
        # use, never costs the guard's analysis.
        model = await self._downstream.resolve_model(params.model, identity.serve_successor, caller.signed)
        span.set_attribute("llmaas.model", model.id)
        check_model_permission(identity, params.model, model)
        self._check_capabilities(params, model)
        max_tokens = check_context(params, model.max_model_len, model.default_max_tokens)
        # /v1/completions sends the prompt as is, and its text is the model's whole output, as vLLM's.
        reasoning = model.reasoning if model.HasField("reasoning") and not params.raw_prompt else None

        guard_request = guard_pb2.CheckPromptRequest(
            tenant_id=identity.tenant_id, end_user_id=params.user, request_id=caller.request_id,
            parts=[guard_pb2.PromptPart(source=_SOURCE[m.role], text=m.content) for m in params.messages])
        if params.tools is not None or params.has_tool_calls:
            guard_request.parts.extend(tool_guard_parts(params))
        if span.is_recording():  # (an unsampled request's span records nothing: not even asked)
            trace_chat_api(span, params)
        # Images (a vision or OCR model: _check_capabilities refused them for any other) are decoded and checked
        # before the guard and metering are asked anything; the guard checks the text parts.
        pages: tuple[images.Page, ...] = ()
        if any(m.images for m in params.messages):
            pages = tuple(await asyncio.to_thread(images.read_pages, params))
        if model.type == "ocr":
            # The OCR model reads the images; the text parts are the instruction. Its input count is known here:
            # over the context is refused before any page is read.
            prompt = "\n".join(m.content for m in params.messages if m.content)
            check_prompt_tokens(params, await asyncio.to_thread(ocr.prompt_tokens, pages, prompt), model.max_model_len)
        else:
            prompt = params.messages[0].content if params.raw_prompt else template.render_prompt(
                model.chat_template, params.messages, model.bos_token, model.eos_token, params.tools,
                params.reasoning_effort)
        # /v1/completions may send several prompts (its messages), each answered n times.
        prompts = [m.content for m in params.messages] if params.raw_prompt else [prompt]
        request_id = caller.request_id
        sampling = _sampling(params, max_tokens)
        constrained = "guided_decoding" in sampling
        run = ChatRun(
            id="chatcmpl-" + uuid.uuid4().hex, request_id=request_id, created=int(time.time()), model=model.id,
            params=params, caller=caller, triton_model=model.triton_model, max_model_len=model.max_model_len,
            endpoints=tuple(model.endpoints),
            prompt=prompt,
            sampling=sampling, headers=lifecycle_headers(model),
            output=ChatOutput.for_params(params, reasoning, constrained), reasoning=reasoning,
            constrained=constrained, pages=pages, ocr=model.type == "ocr")
        # Worst case: a token covers at least one byte of the prompt (plus the few a tokenizer adds), so its byte
        # length bounds the input tokens; and the backend refuses a prompt longer than the context. Metering caps the
        # settlement at this reservation.
        max_input = 0
        for text in prompts:
            tokens = len(text.encode()) + PROMPT_TOKEN_SLACK
            max_input += min(tokens, model.max_model_len) if model.max_model_len else tokens
        if model.type == "ocr":
            max_input += sum(page.tokens for page in pages)  # the vision tokens it bills (llmaas.router.images)
        elif pages:
            # A vision model's backend counts its own image tokens, within its context.
            max_input = model.max_model_len or max_input + sum(page.tokens for page in pages)
        # Refused (a quota, the tier or the budget): RESOURCE_EXHAUSTED, whose error carries Retry-After and the
        # x-ratelimit-* headers to the client; granted: the same headers go out with the response.
        reservation = metering_pb2.ReserveRequest(
            request_id=request_id, tenant_id=identity.tenant_id, key_id=identity.key_id, model=model.id,
            max_input_tokens=max_input, max_output_tokens=max_tokens * params.n * len(prompts), kind=kind,
            quotas=[metering_pb2.Quota(window_seconds=q.window_seconds, max_requests=q.max_requests,
                                       max_tokens=q.max_tokens) for q in identity.quotas],
            kwh_per_million_tokens=(model.kwh_per_million_tokens if model.HasField("kwh_per_million_tokens")
                                    else None))
        checking = time.perf_counter()
        verdict, reserved = await self._check_and_reserve(run, guard_request, reservation)
        metrics.stage_ended("checks", model.id, checking)
        if pages:
            await self._prepare_images(run)
        run.headers += guard_headers(verdict) + tuple((h.name, h.value) for h in reserved.headers)
        if verdict.mode in (guard_pb2.GUARD_MODE_ENFORCE, guard_pb2.GUARD_MODE_SHADOW) and not (
                params.raw_prompt or run.ocr):
            run.output_guard = OutputGuard(output_guard.system_text(params.messages),
                                           enforce=verdict.mode == guard_pb2.GUARD_MODE_ENFORCE)
        if params.n > 1 or len(prompts) > 1:
            run.choices = tuple(choices.split(run, prompts, params.n, self._own_output))
        return run

    async def _prepare_images(self, run: ChatRun) -> None:
        """Once granted: the low-detail copies made (llmaas.router.images.downscaled) and, for a vision model, the
        vLLM contract's `image` input encoded once (base64, off the event loop), not per attempt. A failure or a
        client gone meanwhile releases the reservation, nothing billed."""
        with self._released_on_failure(run):
            run.pages = await images.downscaled(run.pages)
            if not run.ocr:
                run.images = await asyncio.to_thread(lambda: tuple(base64.b64encode(p.data) for p in run.pages))

    @contextlib.contextmanager
    def _released_on_failure(self, run: ChatRun) -> Iterator[None]:
        """A granted reservation whose request goes no further is released, nothing billed: `cancelled` when the
        client left meanwhile, `rejected` on any failure."""
        try:
            yield
        except asyncio.CancelledError:
            self._settle(run, "cancelled")
            raise
        except BaseException:
            self._settle(run, "rejected")
            raise

    async def _check_and_reserve(self, run: ChatRun, guard_request, reservation):
        """The guard's verdict and metering's grant, asked at once: each is a round trip, and together they were most
        of the latency the platform adds. A refused grant (or a replayed id) cancels the guard's check; a prompt the
        guard blocks, or a guard that fails, releases the reservation (settled `rejected`: nothing billed, its request
        slot given back), as does a client gone meanwhile (`cancelled`)."""
        guard = asyncio.ensure_future(self._downstream.check_prompt(guard_request, run.caller.signed))
        try:
            reserved = await self._downstream.reserve(reservation, run.caller.signed)
        except asyncio.CancelledError:
            guard.cancel()
            # The client left while metering was granting: whatever metering did, release it now (a settlement of
            # an id it never reserved is refused and logged; one it did is released, nothing billed).
            self._settle(run, "cancelled")
            raise
        except BaseException:
            guard.cancel()
            raise
        if reserved.replay:
            # Only a replayed identity header (bound to its request id) can repeat an id: never served twice (and the
            # reservation is the first request's: not released here).
            guard.cancel()
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "This request was already made: it is not served again.",
                           code="request_replayed")
        with self._released_on_failure(run):
            verdict = await guard
        if verdict.decision == guard_pb2.DECISION_BLOCK:
            self._settle(run, "rejected")
            raise invalid_request(f"The prompt was rejected by the prompt security policy ({guard_reasons(verdict)}).",
                                  param="messages", code="prompt_rejected")
        return verdict, reserved

    @staticmethod
    def _check_capabilities(params: ChatParams, model) -> None:
        if model.type not in ("chat", "ocr"):
            raise invalid_request(f"The model '{model.id}' is a {model.type} model and does not support chat "
                                  f"completions.", param="model", code="model_not_supported")
        if model.type == "ocr":
            if params.raw_prompt:
                raise invalid_request(f"The model '{model.id}' is an OCR model: it reads images sent to chat "
                                      "completions.", param="model", code="model_not_supported")
            ocr.check_request(params, model.id)
        if params.n > 1 and model.type == "ocr":
            raise invalid_request(f"The model '{model.id}' is an OCR model: it reads a page once (n must be 1).",
                                  param="n", code="unsupported_value")
        if params.logit_bias and "logit_bias" not in model.capabilities:
            raise invalid_request(f"The model '{model.id}' does not support 'logit_bias'.", param="logit_bias",
                                  code="unsupported_parameter")
        if params.wants_tools and "tools" not in model.capabilities:
            raise invalid_request(f"The model '{model.id}' does not support tools.", param="tools",
                                  code="unsupported_parameter")
        if params.reasoning_effort:
            # The effort reaches a model through its chat template; one whose entry lists no effort would ignore it.
            efforts = model.reasoning.efforts if model.HasField("reasoning") else ()
            if not efforts:
                raise invalid_request(f"The model '{model.id}' does not support 'reasoning_effort'.",
                                      param="reasoning_effort", code="unsupported_parameter")
            if params.reasoning_effort not in efforts:
                supported = ", ".join(f"'{e}'" for e in efforts)
                raise invalid_request(f"Unsupported value: '{params.reasoning_effort}' is not supported with the "
                                      f"model '{model.id}'. Supported values are: {supported}.",
                                      param="reasoning_effort", code="unsupported_value")
        if any(m.has_image for m in params.messages):
            if "vision" not in model.capabilities:
                raise invalid_request(f"The model '{model.id}' does not support image inputs.", param="messages",
                                      code="unsupported_content")
            if model.type == "chat" and (params.tools is not None or params.has_tool_calls or params.raw_prompt):
                # The tool formats render text only: the images would reach the model without their placeholders.
                raise invalid_request("Images cannot be combined with tools in one request.", param="messages",
                                      code="unsupported_content")

    async def run(self, run: ChatRun) -> AsyncIterator[Delta]:
        """The model's deltas. A non-streamed request is buffered by the replica pool (nothing reaches the client
        before the end), so it can be retried on another replica at any point. run.usage counts what the serving
        attempt produced, delivered or not: a client that leaves is billed for the work done until then."""
        dispatched = time.perf_counter()

        def produced(delta: Delta | None) -> None:
            if delta is None:  # the attempt starts over on another replica: only the answer served counts
                run.usage, run.finish_reason, run.first_token = Usage(), None, 0.0
                return
            if delta.final:
                metrics.stage_ended("backend", run.model, dispatched)
            if delta.input_tokens is not None and not run.prompt_checked:
                # The backend's exact count, on its first response (before anything reached the client): a prompt
                # plus max_tokens over the context is refused as OpenAI does, and costs the client nothing.
                run.prompt_checked = True
                try:
                    check_prompt_tokens(run.params, delta.input_tokens, run.max_model_len)
                except ApiError:
                    run.usage, run.finish_reason = Usage(), None
                    raise
            if delta.input_tokens is not None:
                run.usage.prompt_tokens = delta.input_tokens
            if delta.output_tokens:
                run.first_token = run.first_token or time.perf_counter()
                run.usage.completion_tokens += delta.output_tokens
            if delta.finish_reason:
                run.finish_reason = delta.finish_reason

        on_produced = produced
        if run.reasoning is not None:
            # Only a reasoning model counts its reasoning tokens as they come (a retried attempt starts over).
            counter = run.reasoning_counter()

            def on_produced(delta: Delta | None) -> None:
                nonlocal counter
                produced(delta)
                if delta is None:
                    counter = run.reasoning_counter()
                    return
                counter.feed(delta.text, delta.output_tokens or 0)
                run.usage.reasoning_tokens = counter.count

        if run.ocr:  # one unary call per page, its answer whole (llmaas.router.ocr)
            source = ocr.read(self._replicas, run.model, run.triton_model, run.endpoints, run.request_id, run.pages,
                              run.prompt, run.sampling["max_tokens"], on_produced)
        else:
            # A non-streamed answer comes whole from the backend (one response, not one per token), except a
            # reasoning model's: its reasoning tokens are counted from the per-token responses.
            source = self._replicas.generate(run.endpoints, run.triton_model, run.prompt, run.sampling,
                                             run.request_id, buffered=not run.params.stream,
                                             whole=run.reasoning is None, public_model=run.model,
                                             images=run.images, on_produced=on_produced)
        try:
            if run.output_guard is not None:
                async for delta in self._guarded(run, source):
                    yield delta
                return
            async for delta in source:
                if delta.final:
                    run.outcome = "completed"  # before the yield: the consumer may stop right after the final delta
                yield delta
        except ApiError as err:
            run.error, run.outcome = err, "failed"
            raise
        except Exception:
            run.outcome = "failed"
            raise

    async def _guarded(self, run: ChatRun, source: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        """The deltas through the output guard. Shadow: unchanged, findings counted (and named in a non-streamed
        answer's header). Enforce, as OpenAI's content filter, for exfiltration only: the answer ends at the delta
        that completed the finding, `finish_reason: content_filter`, the backend's generation stopped there (billed:
        what it produced until then). A stream withholds that delta (what came before is sent); a non-streamed
        answer, held here whole (nothing reaches the client before its end anyway), is cut before the offending
        part. A system-prompt leak is reported in either mode, never cut: ordinary answers restate instructions."""
        guard = run.output_guard
        scanner = guard.scanner
        held: list[Delta] | None = None if run.params.stream else []
        cut = False
        async for delta in source:
            found = scanner.feed(delta.text) if delta.text else []
            if delta.final:
                found += scanner.end()
            if found:
                self._output_findings(run, found)
                if guard.cuts(found):
                    cut = True
                    if held is not None:
                        held.append(delta)
                        held = _cut(held, first_offending("".join(d.text for d in held)))
                    break
            if delta.final:
                run.outcome = "completed"
            if held is None:
                yield delta
            else:
                held.append(delta)
        if cut:
            # Stop the backend now (its generator's finally cancels the call), then end as a filtered answer.
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
            run.finish_reason = "content_filter"
            run.outcome = "completed"
        if held is not None:
            if guard.reasons:
                run.headers += (output_guard.header([guard]),)
            for delta in held:
                yield delta
        if cut:
            yield Delta("", "content_filter", None, None, True)

    @staticmethod
    def _output_findings(run: ChatRun, found) -> None:
        """Counted by reason and model, named on the span and in the log: reasons only, never the text."""
        mode = "enforce" if run.output_guard.enforce else "shadow"
        for finding in found:
            metrics.output_finding(run.model, finding.reason, mode)
        reasons = ",".join(run.output_guard.reasons)
        trace.get_current_span().set_attribute("llmaas.output_guard.reasons", reasons)
        log.info("output guard finding", extra={"fields": {
            "request_id": run.request_id, "model": run.model, "reasons": reasons, "mode": mode}})

    @staticmethod
    def _own_output(child: ChatRun) -> None:
        """What each choice shapes and checks on its own: its tool calls, logprobs and reasoning, its output guard."""
        child.output = ChatOutput.for_params(child.params, child.reasoning, child.constrained)
        if child.output_guard is not None:
            child.output_guard = child.output_guard.fresh()

    async def run_choices(self, run: ChatRun) -> AsyncIterator[tuple[int, Delta]]:
        """A request with several choices: (choice index, delta) as each choice's generation produces them, the
        request's usage summed at the end (llmaas.router.choices)."""
        try:
            async with aclosing(choices.merge(run.choices, self.run)) as merged:
                async for item in merged:
                    yield item
        except ApiError as err:
            run.error = err  # what the client gets: the first choice to fail
            raise
        choices.sum_usage(run)

    async def collect(self, run: ChatRun) -> list[list[Delta]]:
        """A non-streamed answer: each choice's deltas (one list for a single choice)."""
        if not run.choices:
            async with aclosing(self.run(run)) as deltas:
                return [[d async for d in deltas]]
        per_choice: list[list[Delta]] = [[] for _ in run.choices]
        async with aclosing(self.run_choices(run)) as merged:
            async for index, delta in merged:
                per_choice[index].append(delta)
        flagged = [c.output_guard for c in run.choices if c.output_guard is not None and c.output_guard.reasons]
        if flagged:  # what the output guard found in any choice, on the request's answer
            run.headers += (output_guard.header(flagged),)
        return per_choice

    def finish(self, run: ChatRun, billed: bool = True) -> None:
        """Settles what was produced and records how the request ended, once (later calls do nothing). A request
        whose output never ended (the client went away, even before the first delta) is `cancelled`. `billed=False`:
        released, nothing billed (a batch line that failed)."""
        if run.finished:
            return
        run.finished = True
        if run.choices:
            choices.sum_usage(run)
        if not billed:
            run.usage = Usage()
        outcome = run.outcome or "cancelled"
        span = trace.get_current_span()
        span.set_attribute("llmaas.prompt_tokens", run.usage.prompt_tokens)
        span.set_attribute("llmaas.completion_tokens", run.usage.completion_tokens)
        if run.reasoning is not None:
            span.set_attribute("llmaas.reasoning_tokens", run.usage.reasoning_tokens)
        span.set_attribute("llmaas.finish_reason", run.finish_reason or "")
        # Queued, never awaited: the caller may be a cancelled stream, and both must still land.
        self._settle(run, outcome)
        status = {"completed": 200, "cancelled": CLIENT_CLOSED}.get(outcome, 500)
        metrics.chat_ended(run.model, outcome, run.caller.started, run.first_token, run.usage.completion_tokens,
                           run.params.stream, max(1, len(run.choices)))
        self._record(run.caller, run.model, run.usage, run.error, status)

    def _record(self, caller: Caller, model: str, usage: Usage, error: ApiError | None, status: int = 200) -> None:
        """The audit record of how the request ended, batched with other requests' (idempotent by request id, so
        retried like a settlement)."""
        if error is not None:
            status = error.http_status
        metrics.request_ended(caller.endpoint, model, status, (error.code or "") if error else "", caller.started)
        self._records.submit((caller, auth_pb2.RecordRequestRequest(
            request_id=caller.request_id, endpoint=caller.endpoint, model=model, status=status,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            trace_id=_trace_id(), detail=(error.code or "") if error else "")))

    def _fresh_signature(self, caller: Caller) -> str:
        """The caller's identity signed recently: the header it came with expires (60 s) before a long answer ends.
        Re-signed once half its life is gone (a hand-off retried across a restart)."""
        now = time.monotonic()
        if not caller.fresh or now >= caller.fresh[1]:
            caller.fresh[:] = [encode_identity(caller.identity, self._secret, request_id=caller.request_id,
                                               client_address=caller.client_address), now + IDENTITY_TTL_SECONDS / 2]
        return caller.fresh[0]

    def _settle(self, run: ChatRun, outcome: str) -> None:
        """Hands the real usage to metering, batched with other requests' (idempotent by request id: a retried
        batch never counts twice)."""
        self._settlements.submit((run.caller, metering_pb2.SettleRequest(
            request_id=run.request_id, prompt_tokens=run.usage.prompt_tokens,
            completion_tokens=run.usage.completion_tokens, reasoning_tokens=run.usage.reasoning_tokens,
            outcome=outcome)))

    async def drain(self) -> None:
        """Waits for pending settlements and audit records (called on shutdown)."""
        await self._settlements.drain()
        await self._records.drain()


def _cut(deltas: list[Delta], at: int) -> list[Delta]:
    """The deltas whose text comes before output offset `at` (the one it falls in shortened, without its logprobs:
    they would name the cut tokens), none final: the filtered end follows."""
    kept, offset = [], 0
    for d in deltas:
        if offset + len(d.text) <= at:
            kept.append(Delta(d.text, None, d.input_tokens, d.output_tokens, False, d.logprobs) if d.final else d)
        else:
            if at > offset:
                kept.append(Delta(d.text[:at - offset], None, d.input_tokens, d.output_tokens, False))
            break
        offset += len(d.text)
    return kept


def _signed(request: metering_pb2.SettleRequest, identity: str) -> metering_pb2.SettleRequest:
    request.identity = identity
    return request


def _trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.trace_id else ""


def check_model_permission(identity: Identity, requested: str, model) -> None:
    """The key's allowed models must cover the model that serves (its id or an alias; the name asked for is one of
    them) and, when it stands in for a retired model, that retired model as well (the name asked for or its id)."""
    if model.substituted_for and not identity.may_use(requested, model.substituted_for):
        raise permission_denied(f"This API key is not allowed to use the model '{model.substituted_for}'.",
                                param="model")
    if not identity.may_use(model.id, *model.aliases):
        stands_in = f" (which serves the retired '{model.substituted_for}')" if model.substituted_for else ""
        raise permission_denied(f"This API key is not allowed to use the model '{model.id}'{stands_in}.",
                                param="model")


def lifecycle_headers(model) -> tuple[tuple[str, str], ...]:
    """Response headers for a model at the end of its life (Envoy passes gRPC response metadata on as HTTP headers):
    RFC 9745 Deprecation, RFC 8594 Sunset, and a Link to the recommended successor. A retired model served by its
    successor (the tenant opted in) says so: `x-llmaas-model-substituted: <retired id>; served-by=<successor id>`."""
    headers = [("x-llmaas-model-substituted", f"{model.substituted_for}; served-by={model.id}")] \
        if model.substituted_for else []
    headers += [("x-llmaas-model-phase", model.phase)] if model.phase else []
    if model.deprecation:
        headers += [("deprecation", model.deprecation), ("sunset", model.sunset)]
        if model.successor:
            headers.append(("link", f'</v1/models/{model.successor}>; rel="successor-version"'))
    return tuple(headers)


def guard_reasons(verdict: guard_pb2.CheckPromptResponse) -> str:
    """The reasons that carried the verdict, strongest first (weak learned-layer hints left out)."""
    ranked = sorted(verdict.findings, key=lambda f: -f.score)
    strong = [f.reason for f in ranked if f.score >= 0.3] or [f.reason for f in ranked[:1]]
    return ", ".join(dict.fromkeys(strong)) or "policy"


def guard_headers(verdict: guard_pb2.CheckPromptResponse) -> tuple[tuple[str, str], ...]:
    """Shadow mode: the request goes through, and the client sees what enforce mode would have done."""
    if not verdict.flagged or verdict.decision == guard_pb2.DECISION_BLOCK:
        return ()
    reasons = guard_reasons(verdict).replace(" ", "")
    return (("x-llmaas-guard", f"flagged; score={verdict.score:.2f}; reasons={reasons}"),)


def _sampling(params: ChatParams, max_tokens: int) -> dict:
    """vLLM SamplingParams for the backend: only what the client set, plus max_tokens."""
    sampling: dict = {"max_tokens": max_tokens}
    for name in ("temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty", "seed"):
        value = getattr(params, name)
        if value is not None:
            sampling[name] = value
    if params.stop:
        sampling["stop"] = list(params.stop)
    guided = params.tools.guided_decoding() if params.tools is not None else None
    if guided is not None or params.guided_decoding is not None:
        sampling["guided_decoding"] = guided or params.guided_decoding
    if params.logit_bias:
        # vLLM's JSON form (SamplingParams.from_optional's): token ids as string keys.
        sampling["logit_bias"] = {str(token): bias for token, bias in params.logit_bias.items()}
    if params.logprobs:
        # vLLM's logprobs=N: the sampled token's logprob and the N most likely ones.
        sampling["logprobs"] = params.top_logprobs
    return sampling
