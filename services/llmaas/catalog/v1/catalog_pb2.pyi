from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("object", "data")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    object: str
    data: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, object: _Optional[str] = ..., data: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "object", "created", "owned_by", "root", "aliases", "max_model_len", "permission", "type", "capabilities", "lifecycle")
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    object: str
    created: int
    owned_by: str
    root: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    max_model_len: int
    permission: _containers.RepeatedCompositeFieldContainer[ModelPermission]
    type: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    lifecycle: ModelLifecycle
    def __init__(self, id: _Optional[str] = ..., object: _Optional[str] = ..., created: _Optional[int] = ..., owned_by: _Optional[str] = ..., root: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., max_model_len: _Optional[int] = ..., permission: _Optional[_Iterable[_Union[ModelPermission, _Mapping]]] = ..., type: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., lifecycle: _Optional[_Union[ModelLifecycle, _Mapping]] = ...) -> None: ...

class ModelLifecycle(_message.Message):
    __slots__ = ("phase", "production_date", "end_of_support", "notice_start", "sunset", "lts", "successor")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PRODUCTION_DATE_FIELD_NUMBER: _ClassVar[int]
    END_OF_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    NOTICE_START_FIELD_NUMBER: _ClassVar[int]
    SUNSET_FIELD_NUMBER: _ClassVar[int]
    LTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSOR_FIELD_NUMBER: _ClassVar[int]
    phase: str
    production_date: str
    end_of_support: str
    notice_start: str
    sunset: str
    lts: bool
    successor: str
    def __init__(self, phase: _Optional[str] = ..., production_date: _Optional[str] = ..., end_of_support: _Optional[str] = ..., notice_start: _Optional[str] = ..., sunset: _Optional[str] = ..., lts: _Optional[bool] = ..., successor: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListLifecycleRequest(_message.Message):
    __slots__ = ("date",)
    DATE_FIELD_NUMBER: _ClassVar[int]
    date: str
    def __init__(self, date: _Optional[str] = ...) -> None: ...

class ListLifecycleResponse(_message.Message):
    __slots__ = ("object", "date", "data")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    object: str
    date: str
    data: _containers.RepeatedCompositeFieldContainer[ModelLifecycleEntry]
    def __init__(self, object: _Optional[str] = ..., date: _Optional[str] = ..., data: _Optional[_Iterable[_Union[ModelLifecycleEntry, _Mapping]]] = ...) -> None: ...

class ModelLifecycleEntry(_message.Message):
    __slots__ = ("id", "editor", "type", "served", "lifecycle")
    ID_FIELD_NUMBER: _ClassVar[int]
    EDITOR_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    editor: str
    type: str
    served: bool
    lifecycle: ModelLifecycle
    def __init__(self, id: _Optional[str] = ..., editor: _Optional[str] = ..., type: _Optional[str] = ..., served: _Optional[bool] = ..., lifecycle: _Optional[_Union[ModelLifecycle, _Mapping]] = ...) -> None: ...

class ModelPermission(_message.Message):
    __slots__ = ("id", "object", "allow_sampling", "allow_view", "allow_fine_tuning")
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    ALLOW_VIEW_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FINE_TUNING_FIELD_NUMBER: _ClassVar[int]
    id: str
    object: str
    allow_sampling: bool
    allow_view: bool
    allow_fine_tuning: bool
    def __init__(self, id: _Optional[str] = ..., object: _Optional[str] = ..., allow_sampling: _Optional[bool] = ..., allow_view: _Optional[bool] = ..., allow_fine_tuning: _Optional[bool] = ...) -> None: ...

class ResolveModelRequest(_message.Message):
    __slots__ = ("model", "serve_successor")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERVE_SUCCESSOR_FIELD_NUMBER: _ClassVar[int]
    model: str
    serve_successor: bool
    def __init__(self, model: _Optional[str] = ..., serve_successor: _Optional[bool] = ...) -> None: ...

class ResolveModelResponse(_message.Message):
    __slots__ = ("id", "triton_model", "pool", "chat_template", "max_model_len", "default_max_tokens", "type", "capabilities", "bos_token", "eos_token", "phase", "deprecation", "sunset", "successor", "substituted_for", "aliases", "kwh_per_million_tokens", "endpoints", "reasoning")
    ID_FIELD_NUMBER: _ClassVar[int]
    TRITON_MODEL_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    BOS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DEPRECATION_FIELD_NUMBER: _ClassVar[int]
    SUNSET_FIELD_NUMBER: _ClassVar[int]
    SUCCESSOR_FIELD_NUMBER: _ClassVar[int]
    SUBSTITUTED_FOR_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    KWH_PER_MILLION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    id: str
    triton_model: str
    pool: str
    chat_template: str
    max_model_len: int
    default_max_tokens: int
    type: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    bos_token: str
    eos_token: str
    phase: str
    deprecation: str
    sunset: str
    successor: str
    substituted_for: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    kwh_per_million_tokens: float
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    reasoning: ReasoningFormat
    def __init__(self, id: _Optional[str] = ..., triton_model: _Optional[str] = ..., pool: _Optional[str] = ..., chat_template: _Optional[str] = ..., max_model_len: _Optional[int] = ..., default_max_tokens: _Optional[int] = ..., type: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., bos_token: _Optional[str] = ..., eos_token: _Optional[str] = ..., phase: _Optional[str] = ..., deprecation: _Optional[str] = ..., sunset: _Optional[str] = ..., successor: _Optional[str] = ..., substituted_for: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., kwh_per_million_tokens: _Optional[float] = ..., endpoints: _Optional[_Iterable[str]] = ..., reasoning: _Optional[_Union[ReasoningFormat, _Mapping]] = ...) -> None: ...

class ReasoningFormat(_message.Message):
    __slots__ = ("start", "end", "efforts")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    EFFORTS_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    efforts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ..., efforts: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchCatalogRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReportReplicaFailureRequest(_message.Message):
    __slots__ = ("replica", "triton_model")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    TRITON_MODEL_FIELD_NUMBER: _ClassVar[int]
    replica: str
    triton_model: str
    def __init__(self, replica: _Optional[str] = ..., triton_model: _Optional[str] = ...) -> None: ...

class ReportReplicaFailureResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...

class CatalogRevision(_message.Message):
    __slots__ = ("revision", "instance", "heartbeat_seconds")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    instance: str
    heartbeat_seconds: int
    def __init__(self, revision: _Optional[int] = ..., instance: _Optional[str] = ..., heartbeat_seconds: _Optional[int] = ...) -> None: ...

class GetServingStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServingStatusResponse(_message.Message):
    __slots__ = ("models", "sample_seconds")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ServingStatus]
    sample_seconds: int
    def __init__(self, models: _Optional[_Iterable[_Union[ServingStatus, _Mapping]]] = ..., sample_seconds: _Optional[int] = ...) -> None: ...

class ServingStatus(_message.Message):
    __slots__ = ("id", "replicas", "replicas_serving", "availability_1h", "availability_24h", "incidents")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_SERVING_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_1H_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_24H_FIELD_NUMBER: _ClassVar[int]
    INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    replicas: int
    replicas_serving: int
    availability_1h: float
    availability_24h: float
    incidents: _containers.RepeatedCompositeFieldContainer[Incident]
    def __init__(self, id: _Optional[str] = ..., replicas: _Optional[int] = ..., replicas_serving: _Optional[int] = ..., availability_1h: _Optional[float] = ..., availability_24h: _Optional[float] = ..., incidents: _Optional[_Iterable[_Union[Incident, _Mapping]]] = ...) -> None: ...

class Incident(_message.Message):
    __slots__ = ("kind", "replica", "since")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    replica: int
    since: int
    def __init__(self, kind: _Optional[str] = ..., replica: _Optional[int] = ..., since: _Optional[int] = ...) -> None: ...
