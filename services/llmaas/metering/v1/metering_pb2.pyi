from google.api import annotations_pb2 as _annotations_pb2
from llmaas.common.v1 import streamed_call_pb2 as _streamed_call_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamCallsRequest(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[_streamed_call_pb2.StreamedCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[_streamed_call_pb2.StreamedCall, _Mapping]]] = ...) -> None: ...

class StreamCallsResponse(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[_streamed_call_pb2.StreamedReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[_streamed_call_pb2.StreamedReply, _Mapping]]] = ...) -> None: ...

class Quota(_message.Message):
    __slots__ = ("window_seconds", "max_requests", "max_tokens")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    window_seconds: int
    max_requests: int
    max_tokens: int
    def __init__(self, window_seconds: _Optional[int] = ..., max_requests: _Optional[int] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("request_id", "tenant_id", "key_id", "model", "max_input_tokens", "max_output_tokens", "quotas", "kind", "max_audio_ms", "kwh_per_million_tokens")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MAX_AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    KWH_PER_MILLION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tenant_id: str
    key_id: str
    model: str
    max_input_tokens: int
    max_output_tokens: int
    quotas: _containers.RepeatedCompositeFieldContainer[Quota]
    kind: str
    max_audio_ms: int
    kwh_per_million_tokens: float
    def __init__(self, request_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., key_id: _Optional[str] = ..., model: _Optional[str] = ..., max_input_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., quotas: _Optional[_Iterable[_Union[Quota, _Mapping]]] = ..., kind: _Optional[str] = ..., max_audio_ms: _Optional[int] = ..., kwh_per_million_tokens: _Optional[float] = ...) -> None: ...

class ResponseHeader(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("granted", "headers", "replay")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    headers: _containers.RepeatedCompositeFieldContainer[ResponseHeader]
    replay: bool
    def __init__(self, granted: _Optional[bool] = ..., headers: _Optional[_Iterable[_Union[ResponseHeader, _Mapping]]] = ..., replay: _Optional[bool] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("request_id", "prompt_tokens", "completion_tokens", "outcome", "reasoning_tokens", "audio_ms", "identity")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompt_tokens: int
    completion_tokens: int
    outcome: str
    reasoning_tokens: int
    audio_ms: int
    identity: str
    def __init__(self, request_id: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., outcome: _Optional[str] = ..., reasoning_tokens: _Optional[int] = ..., audio_ms: _Optional[int] = ..., identity: _Optional[str] = ...) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ("recorded", "cost_eur", "capped", "refused_prompt_tokens", "refused_completion_tokens", "refused_reasoning_tokens", "refused_audio_ms")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    COST_EUR_FIELD_NUMBER: _ClassVar[int]
    CAPPED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    recorded: bool
    cost_eur: str
    capped: bool
    refused_prompt_tokens: int
    refused_completion_tokens: int
    refused_reasoning_tokens: int
    refused_audio_ms: int
    def __init__(self, recorded: _Optional[bool] = ..., cost_eur: _Optional[str] = ..., capped: _Optional[bool] = ..., refused_prompt_tokens: _Optional[int] = ..., refused_completion_tokens: _Optional[int] = ..., refused_reasoning_tokens: _Optional[int] = ..., refused_audio_ms: _Optional[int] = ...) -> None: ...

class SettleBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SettleRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[SettleRequest, _Mapping]]] = ...) -> None: ...

class SettleResult(_message.Message):
    __slots__ = ("request_id", "settlement", "error_code", "error_message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    settlement: SettleResponse
    error_code: str
    error_message: str
    def __init__(self, request_id: _Optional[str] = ..., settlement: _Optional[_Union[SettleResponse, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class SettleBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SettleResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SettleResult, _Mapping]]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("tenant_id", "key_id", "model", "group_by", "start_day", "end_day")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    START_DAY_FIELD_NUMBER: _ClassVar[int]
    END_DAY_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    key_id: str
    model: str
    group_by: _containers.RepeatedScalarFieldContainer[str]
    start_day: str
    end_day: str
    def __init__(self, tenant_id: _Optional[str] = ..., key_id: _Optional[str] = ..., model: _Optional[str] = ..., group_by: _Optional[_Iterable[str]] = ..., start_day: _Optional[str] = ..., end_day: _Optional[str] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("key_id", "model", "day", "month", "kind", "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "total_tokens", "audio_ms", "cost_eur", "energy_kwh", "failed_requests", "cancelled_requests", "expired_requests")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    MONTH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    COST_EUR_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    FAILED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    model: str
    day: str
    month: str
    kind: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    audio_ms: int
    cost_eur: str
    energy_kwh: str
    failed_requests: int
    cancelled_requests: int
    expired_requests: int
    def __init__(self, key_id: _Optional[str] = ..., model: _Optional[str] = ..., day: _Optional[str] = ..., month: _Optional[str] = ..., kind: _Optional[str] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., audio_ms: _Optional[int] = ..., cost_eur: _Optional[str] = ..., energy_kwh: _Optional[str] = ..., failed_requests: _Optional[int] = ..., cancelled_requests: _Optional[int] = ..., expired_requests: _Optional[int] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("requests", "prompt_tokens", "completion_tokens", "tenant_id", "currency", "total", "rows")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    tenant_id: str
    currency: str
    total: UsageRow
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    def __init__(self, requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., tenant_id: _Optional[str] = ..., currency: _Optional[str] = ..., total: _Optional[_Union[UsageRow, _Mapping]] = ..., rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ...) -> None: ...

class Tier(_message.Message):
    __slots__ = ("id", "name", "description", "purchase_credit_eur", "monthly_budget_eur", "output_tokens_per_hour", "output_tokens_per_day", "requests_per_minute")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_CREDIT_EUR_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_BUDGET_EUR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    purchase_credit_eur: str
    monthly_budget_eur: str
    output_tokens_per_hour: int
    output_tokens_per_day: int
    requests_per_minute: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., purchase_credit_eur: _Optional[str] = ..., monthly_budget_eur: _Optional[str] = ..., output_tokens_per_hour: _Optional[int] = ..., output_tokens_per_day: _Optional[int] = ..., requests_per_minute: _Optional[int] = ...) -> None: ...

class ListTiersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTiersResponse(_message.Message):
    __slots__ = ("default_tier", "tiers")
    DEFAULT_TIER_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    default_tier: str
    tiers: _containers.RepeatedCompositeFieldContainer[Tier]
    def __init__(self, default_tier: _Optional[str] = ..., tiers: _Optional[_Iterable[_Union[Tier, _Mapping]]] = ...) -> None: ...

class GetTenantTierRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class GetTenantTierResponse(_message.Message):
    __slots__ = ("tenant_id", "tier", "assigned", "month_spent_eur", "month_charged_eur")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    MONTH_SPENT_EUR_FIELD_NUMBER: _ClassVar[int]
    MONTH_CHARGED_EUR_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tier: Tier
    assigned: bool
    month_spent_eur: str
    month_charged_eur: str
    def __init__(self, tenant_id: _Optional[str] = ..., tier: _Optional[_Union[Tier, _Mapping]] = ..., assigned: _Optional[bool] = ..., month_spent_eur: _Optional[str] = ..., month_charged_eur: _Optional[str] = ...) -> None: ...

class SetTenantTierRequest(_message.Message):
    __slots__ = ("tenant_id", "tier", "monthly_budget_eur")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_BUDGET_EUR_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tier: str
    monthly_budget_eur: str
    def __init__(self, tenant_id: _Optional[str] = ..., tier: _Optional[str] = ..., monthly_budget_eur: _Optional[str] = ...) -> None: ...

class SetTenantTierResponse(_message.Message):
    __slots__ = ("tenant_id", "tier")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tier: Tier
    def __init__(self, tenant_id: _Optional[str] = ..., tier: _Optional[_Union[Tier, _Mapping]] = ...) -> None: ...

class ListPricesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Prices(_message.Message):
    __slots__ = ("effective_from", "input", "output", "reasoning", "rerank", "batch_input", "batch_output", "audio_minute")
    EFFECTIVE_FROM_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    BATCH_INPUT_FIELD_NUMBER: _ClassVar[int]
    BATCH_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MINUTE_FIELD_NUMBER: _ClassVar[int]
    effective_from: str
    input: str
    output: str
    reasoning: str
    rerank: str
    batch_input: str
    batch_output: str
    audio_minute: str
    def __init__(self, effective_from: _Optional[str] = ..., input: _Optional[str] = ..., output: _Optional[str] = ..., reasoning: _Optional[str] = ..., rerank: _Optional[str] = ..., batch_input: _Optional[str] = ..., batch_output: _Optional[str] = ..., audio_minute: _Optional[str] = ...) -> None: ...

class ListPricesResponse(_message.Message):
    __slots__ = ("currency", "prices")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    currency: str
    prices: _containers.RepeatedCompositeFieldContainer[Prices]
    def __init__(self, currency: _Optional[str] = ..., prices: _Optional[_Iterable[_Union[Prices, _Mapping]]] = ...) -> None: ...
