"""The catalogue file(s): parsed, validated, and indexed by id and alias. A bad file raises CatalogError naming the
model and field; nothing half-loaded is ever used.

A deployed model (one with a `triton_model`) needs editor, licence and max_model_len. A reference-only model (no
`triton_model`: described, never served here) may omit them when its source does not give them (editor/licence "",
max_model_len 0); `production_date` stays required, UNKNOWN_PRODUCTION_DATE being the documented placeholder.
Lifecycle fields (all optional): end_of_support (date), lts (bool), migration (the id of a model loaded from any of
the files, checked once all are loaded, no cycles), deprecated (bool), speed_tokens_per_second and
kwh_per_million_tokens (non-negative numbers), parameters (string such as "32B"). See llmaas.catalog.lifecycle.
A model with the `reasoning` capability may say how it writes its reasoning (`reasoning`: start and end markers,
the efforts its chat template takes); see ReasoningFormat."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import yaml

UNKNOWN_PRODUCTION_DATE = dt.date(1970, 1, 1)  # placeholder for a model whose production date the source omits
# "dimensions": an embedding model trained to be shortened (Matryoshka), which honours OpenAI's `dimensions`.
# logit_bias: the model's backend applies OpenAI's logit_bias (the CPU backend's llama.cpp engine does).
CAPABILITIES = {"tools", "vision", "reasoning", "safety", "dimensions", "logit_bias",
                # audio models: English-only unless multilingual; translation into English; word timestamps
                "transcription", "translation", "multilingual", "word_timestamps"}
# OpenAI's ReasoningEffort values; a model takes those its catalogue entry lists.
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
MODEL_TYPES = {"chat", "embedding", "rerank", "vision", "ocr", "audio", "image", "translation", "safety"}


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class ReasoningFormat:
    """How a reasoning model writes its reasoning (llmaas.router.reasoning splits it from the answer): between `start`
    and `end` at the beginning of its output (the defaults are DeepSeek-R1's and Qwen3's). `start` is empty when the
    chat template opens the reasoning itself. `efforts`: the reasoning_effort values the model takes, which its chat
    template receives as `reasoning_effort` (as transformers' apply_chat_template passes it and gpt-oss's template
    reads it); none listed, reasoning_effort is refused."""
    start: str = "<think>"
    end: str = "</think>"
    efforts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    id: str
    editor: str
    type: str
    aliases: tuple[str, ...]
    production_date: dt.date
    licence: str
    max_model_len: int
    default_max_tokens: int
    capabilities: tuple[str, ...]
    triton_model: str
    pool: str
    chat_template: str
    bos_token: str
    eos_token: str
    end_of_support: dt.date | None = None
    lts: bool = False
    migration: str = ""
    deprecated: bool = False
    speed_tokens_per_second: float | None = None
    kwh_per_million_tokens: float | None = None
    parameters: str = ""
    # Set exactly when the capabilities include "reasoning".
    reasoning: ReasoningFormat | None = None

    @property
    def created(self) -> int:
        return int(dt.datetime.combine(self.production_date, dt.time(), dt.UTC).timestamp())


def _field(raw: dict, name: str, kind: type, where: str, default=None):
    if name not in raw:
        if default is not None:
            return default
        raise CatalogError(f"{where}: missing field {name!r}")
    value = raw[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CatalogError(f"{where}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _optional_number(raw: dict, name: str, where: str) -> float | None:
    if name not in raw:
        return None
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CatalogError(f"{where}: field {name!r} must be a non-negative number, got {value!r}")
    return value


def _optional_date(raw: dict, name: str, where: str) -> dt.date | None:
    if name not in raw:
        return None
    value = raw[name]
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise CatalogError(f"{where}: field {name!r} must be a date (YYYY-MM-DD), got {value!r}")
    return value


def _reasoning(raw: dict, capabilities: tuple[str, ...], template: str, where: str) -> ReasoningFormat | None:
    if "reasoning" not in capabilities:
        if "reasoning" in raw:
            raise CatalogError(f"{where}: field 'reasoning' needs the 'reasoning' capability")
        return None
    spec = _field(raw, "reasoning", dict, where, default={})
    where = f"{where}: field 'reasoning'"
    if unknown := sorted(set(spec) - {"start", "end", "efforts"}):
        raise CatalogError(f"{where}: unknown key(s) {unknown}")
    start = _field(spec, "start", str, where, default="<think>")
    end = _field(spec, "end", str, where, default="</think>")
    if not end.strip() or start.strip() != start or end.strip() != end:
        raise CatalogError(f"{where}: 'end' must be a non-empty marker, and markers have no surrounding whitespace")
    efforts = tuple(_field(spec, "efforts", list, where, default=[]))
    if bad := [e for e in efforts if e not in REASONING_EFFORTS]:
        raise CatalogError(f"{where}: efforts {bad} are not among {list(REASONING_EFFORTS)}")
    if efforts and "reasoning_effort" not in template:
        # The effort reaches the model through its chat template only: one that ignores it would accept and ignore.
        raise CatalogError(f"{where}: efforts are listed but the chat_template never reads 'reasoning_effort'")
    return ReasoningFormat(start, end, efforts)


def _parse_entry(raw: dict, base_dir: Path, where: str) -> ModelEntry:
    model_id = _field(raw, "id", str, where)
    where = f"{where} ({model_id})"
    mtype = _field(raw, "type", str, where)
    if mtype not in MODEL_TYPES:
        raise CatalogError(f"{where}: type {mtype!r} is not one of {sorted(MODEL_TYPES)}")
    template = ""
    if "chat_template" in raw:
        path = base_dir / _field(raw, "chat_template", str, where)
        try:
            template = path.read_text(encoding="utf-8")
        except OSError as e:
            raise CatalogError(f"{where}: chat_template {path}: {e.strerror}") from None
    deployed = "triton_model" in raw
    max_len = _field(raw, "max_model_len", int, where, default=None if deployed else 0)
    if max_len < 0:
        raise CatalogError(f"{where}: field 'max_model_len' must not be negative")
    # Only a chat model generates: an embedding or rerank model has no completion budget.
    if (deployed and mtype == "chat") or "default_max_tokens" in raw:
        default_max = _field(raw, "default_max_tokens", int, where, default=1024)
        if not 0 < default_max <= max_len:
            raise CatalogError(f"{where}: default_max_tokens must be in 1..max_model_len")
    else:
        default_max = min(1024, max_len)
    capabilities = tuple(_field(raw, "capabilities", list, where, default=[]))
    if unknown := [c for c in capabilities if c not in CAPABILITIES]:
        raise CatalogError(f"{where}: field 'capabilities' has {unknown}, not in {sorted(CAPABILITIES)}")
    production_date = _field(raw, "production_date", dt.date, where)
    end_of_support = _optional_date(raw, "end_of_support", where)
    if end_of_support is not None and end_of_support < production_date:
        raise CatalogError(f"{where}: field 'end_of_support' is before production_date")
    return ModelEntry(
        id=model_id,
        editor=_field(raw, "editor", str, where, default=None if deployed else ""),
        type=mtype,
        aliases=tuple(_field(raw, "aliases", list, where, default=[])),
        production_date=production_date,
        licence=_field(raw, "licence", str, where, default=None if deployed else ""),
        max_model_len=max_len,
        default_max_tokens=default_max,
        capabilities=capabilities,
        triton_model=_field(raw, "triton_model", str, where, default=""),
        pool=_field(raw, "pool", str, where, default=""),
        chat_template=template,
        bos_token=_field(raw, "bos_token", str, where, default=""),
        eos_token=_field(raw, "eos_token", str, where, default=""),
        end_of_support=end_of_support,
        lts=_field(raw, "lts", bool, where, default=False),
        migration=_field(raw, "migration", str, where, default=""),
        deprecated=_field(raw, "deprecated", bool, where, default=False),
        speed_tokens_per_second=_optional_number(raw, "speed_tokens_per_second", where),
        kwh_per_million_tokens=_optional_number(raw, "kwh_per_million_tokens", where),
        parameters=_field(raw, "parameters", str, where, default=""),
        reasoning=_reasoning(raw, capabilities, template, where),
    )


@dataclass(frozen=True)
class Catalog:
    models: tuple[ModelEntry, ...]
    by_name: dict[str, ModelEntry]

    def lookup(self, name: str) -> ModelEntry | None:
        return self.by_name.get(name)


def load_catalog(paths: list[Path]) -> Catalog:
    models: list[ModelEntry] = []
    by_name: dict[str, ModelEntry] = {}
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise CatalogError(f"{path}: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
            raise CatalogError(f"{path}: expected a mapping with a 'models' list")
        for i, raw in enumerate(doc["models"]):
            if not isinstance(raw, dict):
                raise CatalogError(f"{path}: models[{i}] must be a mapping")
            entry = _parse_entry(raw, path.parent, f"{path}: models[{i}]")
            for name in (entry.id, *entry.aliases):
                if name in by_name:
                    raise CatalogError(f"{path}: {name!r} names two models")
                by_name[name] = entry
            models.append((path, entry))
    _check_migrations(models, by_name)
    return Catalog(tuple(entry for _, entry in models), by_name)


def _check_migrations(models: list[tuple[Path, ModelEntry]], by_name: dict[str, ModelEntry]) -> None:
    """Every `migration` names a loaded model (by id or alias), not itself, and following them never loops."""
    for path, entry in models:
        if not entry.migration:
            continue
        where = f"{path}: model {entry.id!r}: field 'migration'"
        target = by_name.get(entry.migration)
        if target is None:
            raise CatalogError(f"{where}: {entry.migration!r} is not a model of the catalogue")
        seen = [entry.id]
        while target is not None:
            if target.id in seen:
                raise CatalogError(f"{where}: migration chain loops: {' -> '.join([*seen, target.id])}")
            seen.append(target.id)
            target = by_name.get(target.migration) if target.migration else None
