import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from llmaas.common.v1 import streamed_call_pb2 as _streamed_call_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PART_SOURCE_UNSPECIFIED: _ClassVar[PartSource]
    PART_SOURCE_SYSTEM: _ClassVar[PartSource]
    PART_SOURCE_USER: _ClassVar[PartSource]
    PART_SOURCE_ASSISTANT: _ClassVar[PartSource]
    PART_SOURCE_TOOL_RESULT: _ClassVar[PartSource]
    PART_SOURCE_DOCUMENT: _ClassVar[PartSource]

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ALLOW: _ClassVar[Decision]
    DECISION_BLOCK: _ClassVar[Decision]

class GuardMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GUARD_MODE_UNSPECIFIED: _ClassVar[GuardMode]
    GUARD_MODE_ENFORCE: _ClassVar[GuardMode]
    GUARD_MODE_SHADOW: _ClassVar[GuardMode]
    GUARD_MODE_OFF: _ClassVar[GuardMode]
PART_SOURCE_UNSPECIFIED: PartSource
PART_SOURCE_SYSTEM: PartSource
PART_SOURCE_USER: PartSource
PART_SOURCE_ASSISTANT: PartSource
PART_SOURCE_TOOL_RESULT: PartSource
PART_SOURCE_DOCUMENT: PartSource
DECISION_UNSPECIFIED: Decision
DECISION_ALLOW: Decision
DECISION_BLOCK: Decision
GUARD_MODE_UNSPECIFIED: GuardMode
GUARD_MODE_ENFORCE: GuardMode
GUARD_MODE_SHADOW: GuardMode
GUARD_MODE_OFF: GuardMode

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

class CheckPromptRequest(_message.Message):
    __slots__ = ("tenant_id", "end_user_id", "parts", "request_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    END_USER_ID_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    end_user_id: str
    parts: _containers.RepeatedCompositeFieldContainer[PromptPart]
    request_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., end_user_id: _Optional[str] = ..., parts: _Optional[_Iterable[_Union[PromptPart, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PromptPart(_message.Message):
    __slots__ = ("source", "text")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    source: PartSource
    text: str
    def __init__(self, source: _Optional[_Union[PartSource, str]] = ..., text: _Optional[str] = ...) -> None: ...

class CheckPromptResponse(_message.Message):
    __slots__ = ("decision", "score", "findings", "mode", "flagged", "threshold")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    score: float
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    mode: GuardMode
    flagged: bool
    threshold: float
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., score: _Optional[float] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., mode: _Optional[_Union[GuardMode, str]] = ..., flagged: _Optional[bool] = ..., threshold: _Optional[float] = ...) -> None: ...

class Finding(_message.Message):
    __slots__ = ("layer", "reason", "score")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    layer: str
    reason: str
    score: float
    def __init__(self, layer: _Optional[str] = ..., reason: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class TenantPolicy(_message.Message):
    __slots__ = ("tenant_id", "mode", "threshold")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    mode: GuardMode
    threshold: float
    def __init__(self, tenant_id: _Optional[str] = ..., mode: _Optional[_Union[GuardMode, str]] = ..., threshold: _Optional[float] = ...) -> None: ...

class GetTenantPolicyRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class SetTenantPolicyRequest(_message.Message):
    __slots__ = ("tenant_id", "policy")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    policy: TenantPolicy
    def __init__(self, tenant_id: _Optional[str] = ..., policy: _Optional[_Union[TenantPolicy, _Mapping]] = ...) -> None: ...

class GetTenantPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: TenantPolicy
    def __init__(self, policy: _Optional[_Union[TenantPolicy, _Mapping]] = ...) -> None: ...

class SetTenantPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: TenantPolicy
    def __init__(self, policy: _Optional[_Union[TenantPolicy, _Mapping]] = ...) -> None: ...

class ListGuardRefusalsRequest(_message.Message):
    __slots__ = ("tenant_id", "limit")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    limit: int
    def __init__(self, tenant_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class GuardRefusal(_message.Message):
    __slots__ = ("created_at", "request_id", "decision", "mode", "score", "threshold", "reasons")
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    created_at: _timestamp_pb2.Timestamp
    request_id: str
    decision: str
    mode: GuardMode
    score: float
    threshold: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., decision: _Optional[str] = ..., mode: _Optional[_Union[GuardMode, str]] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class ListGuardRefusalsResponse(_message.Message):
    __slots__ = ("refusals",)
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    refusals: _containers.RepeatedCompositeFieldContainer[GuardRefusal]
    def __init__(self, refusals: _Optional[_Iterable[_Union[GuardRefusal, _Mapping]]] = ...) -> None: ...
