"""The catalogue file(s): parsed, validated, and indexed by id and alias. A bad file raises CatalogError naming the
model and field; nothing half-loaded is ever used."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import yaml

MODEL_TYPES = {"chat", "embedding", "rerank", "vision", "ocr", "audio", "image", "translation", "safety"}


class CatalogError(ValueError):
    pass


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
    max_len = _field(raw, "max_model_len", int, where)
    default_max = _field(raw, "default_max_tokens", int, where, default=1024)
    if not 0 < default_max <= max_len:
        raise CatalogError(f"{where}: default_max_tokens must be in 1..max_model_len")
    return ModelEntry(
        id=model_id,
        editor=_field(raw, "editor", str, where),
        type=mtype,
        aliases=tuple(_field(raw, "aliases", list, where, default=[])),
        production_date=_field(raw, "production_date", dt.date, where),
        licence=_field(raw, "licence", str, where),
        max_model_len=max_len,
        default_max_tokens=default_max,
        capabilities=tuple(_field(raw, "capabilities", list, where, default=[])),
        triton_model=_field(raw, "triton_model", str, where, default=""),
        pool=_field(raw, "pool", str, where, default=""),
        chat_template=template,
        bos_token=_field(raw, "bos_token", str, where, default=""),
        eos_token=_field(raw, "eos_token", str, where, default=""),
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
            models.append(entry)
    return Catalog(tuple(models), by_name)
