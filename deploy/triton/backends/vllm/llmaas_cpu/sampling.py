"""Parse the `sampling_parameters` JSON exactly as strictly as the real vLLM backend would.

The real backend builds `vllm.SamplingParams(**json)`: an unknown key is an error, values are coerced to the field's
type (clients often send numbers as strings), `null` means "use the default" and the defaults are vLLM's (notably
max_tokens=16). A request that production accepts must be accepted here, and vice versa where we can tell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


class SamplingError(ValueError):
    """The request's sampling parameters are invalid (reported in-band to the client)."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None
    skip_special_tokens: bool = True
    truncate_prompt_tokens: int | None = None
    # vLLM's guided decoding (GuidedDecodingParams): the JSON schema text the output must match, or any JSON object.
    guided_json: str | None = None
    guided_json_object: bool = False
    # OpenAI's logit_bias as vLLM takes it: (token id, bias clamped to [-100, 100]) pairs.
    logit_bias: tuple[tuple[int, float], ...] = ()
    # Accepted vLLM keys that the CPU engines do not act on (see README); kept for transparency.
    ignored: tuple[str, ...] = field(default=())

    @property
    def greedy(self) -> bool:
        # vLLM switches to greedy sampling below this temperature.
        return self.temperature < 1e-5

    @property
    def guided(self) -> bool:
        return self.guided_json is not None or self.guided_json_object


_INT = ("max_tokens", "min_tokens", "top_k", "seed", "logprobs", "truncate_prompt_tokens", "n", "best_of",
        "prompt_logprobs")
_FLOAT = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
          "length_penalty")
_BOOL = ("include_stop_str_in_output", "ignore_eos", "skip_special_tokens", "use_beam_search", "detokenize",
         "spaces_between_special_tokens")
# Keys vLLM's SamplingParams (0.6 .. 0.11) accepts that we accept but do not implement on CPU; harmless to ignore.
_IGNORED = ("spaces_between_special_tokens", "output_kind", "logits_processors", "extra_args", "bad_words",
            "allowed_token_ids", "length_penalty", "early_stopping", "prompt_logprobs", "flat_logprobs")
# Keys whose absence of support would silently change the *shape* of the answer: refused instead. (vLLM 0.11's
# `structured_outputs` is the renamed `guided_decoding`; the router sends `guided_decoding`.)
_REFUSED = ("structured_outputs",)
_KNOWN = frozenset(_INT + _FLOAT + _BOOL + _IGNORED + _REFUSED
                   + ("stop", "stop_token_ids", "lora_name", "guided_decoding", "logit_bias"))
# GuidedDecodingParams keys the CPU engine enforces; the others (regex, choice, grammar, backend, ...) are refused.
_GUIDED_KEYS = ("json", "json_object")


def _guided(value: object) -> dict:
    """`guided_decoding` (a dict, or its JSON text as Triton's vLLM backend also accepts) -> SamplingParams fields."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise SamplingError("sampling parameter 'guided_decoding' is not valid JSON") from None
    if not isinstance(value, dict):
        raise SamplingError("sampling parameter 'guided_decoding' must be an object")
    value = {k: v for k, v in value.items() if v is not None and v is not False}
    unknown = sorted(k for k in value if k not in _GUIDED_KEYS)
    if unknown:
        raise SamplingError("guided_decoding key(s) not supported by the CPU engine: " + ", ".join(map(repr, unknown)))
    if len(value) != 1:
        raise SamplingError("guided_decoding needs exactly one of 'json' (a schema) or 'json_object'")
    if "json_object" in value:
        if value["json_object"] is not True:
            raise SamplingError("guided_decoding 'json_object' must be a boolean")
        return {"guided_json_object": True}
    schema = value["json"]
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:
            raise SamplingError("guided_decoding 'json' is not valid JSON") from None
    if not isinstance(schema, (dict, bool)):
        raise SamplingError("guided_decoding 'json' must be a JSON schema object")
    return {"guided_json": json.dumps(schema)}


def _logit_bias(value: object) -> tuple[tuple[int, float], ...]:
    """{token id (an int, or its JSON string key): bias} -> pairs, biases clamped to [-100, 100] as vLLM's
    SamplingParams.from_optional does."""
    if not isinstance(value, dict):
        raise SamplingError("sampling parameter 'logit_bias' must be a map of token ids to numbers")
    pairs = []
    for token, bias in value.items():
        try:
            token_id = int(token)
        except (TypeError, ValueError):
            raise SamplingError("sampling parameter 'logit_bias' must be a map of token ids to numbers") from None
        if token_id < 0 or isinstance(bias, bool) or not isinstance(bias, (int, float)) or bias != bias:
            raise SamplingError("sampling parameter 'logit_bias' must be a map of token ids to numbers")
        pairs.append((token_id, min(100.0, max(-100.0, float(bias)))))
    return tuple(sorted(pairs))


def _as_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise SamplingError(f"sampling parameter '{key}' must be a boolean")


def _as_number(key: str, value: object, kind: type) -> int | float:
    if isinstance(value, bool):
        raise SamplingError(f"sampling parameter '{key}' must be a number")
    try:
        number = kind(value)  # "0.7" -> 0.7, like the real backend's type coercion
    except (TypeError, ValueError):
        raise SamplingError(f"sampling parameter '{key}' must be {'an integer' if kind is int else 'a number'}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise SamplingError(f"sampling parameter '{key}' must be an integer")
    return number


def _as_str_tuple(key: str, value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise SamplingError(f"sampling parameter '{key}' must be a string or a list of strings")
    if any(s == "" for s in items):
        raise SamplingError("stop cannot contain an empty string")
    return tuple(items)


def parse_sampling_parameters(raw: str | bytes | None) -> SamplingParams:
    """JSON text -> validated SamplingParams. Raises SamplingError with a message safe to return to the client."""
    if raw is None or (isinstance(raw, (str, bytes)) and not raw.strip()):
        return SamplingParams()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise SamplingError(f"sampling_parameters is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise SamplingError("sampling_parameters must be a JSON object")
    unknown = sorted(k for k in data if k not in _KNOWN)
    if unknown:
        raise SamplingError("SamplingParams got unexpected keyword argument(s): " + ", ".join(map(repr, unknown)))
    data = {k: v for k, v in data.items() if v is not None}

    values: dict = {}
    for key, value in data.items():
        if key in _INT:
            values[key] = _as_number(key, value, int)
        elif key in _FLOAT:
            values[key] = _as_number(key, value, float)
        elif key in _BOOL:
            values[key] = _as_bool(key, value)
        elif key == "stop":
            values[key] = _as_str_tuple(key, value)
        elif key == "stop_token_ids":
            ids = value if isinstance(value, list) else None
            if ids is None or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise SamplingError("sampling parameter 'stop_token_ids' must be a list of integers")
            values[key] = tuple(ids)
        elif key == "guided_decoding":
            values.update(_guided(value))
        elif key == "logit_bias":
            values[key] = _logit_bias(value)
        elif key in _REFUSED:
            raise SamplingError(f"sampling parameter '{key}' is not supported by the CPU engine")
        elif key == "lora_name":
            # Same answer as the real backend when the model.json does not enable LoRA.
            raise SamplingError("LoRA feature is not enabled.")
        else:
            values[key] = value
    return _validate(values)


def _validate(v: dict) -> SamplingParams:
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise SamplingError(message)

    check(v.get("n", 1) == 1, "n > 1 is not supported by the CPU engine")
    check(v.get("best_of", 1) in (1, None), "best_of > 1 is not supported by the CPU engine")
    check(not v.get("use_beam_search", False), "beam search is not supported by the CPU engine")
    check(v.get("detokenize", True), "detokenize=false is not supported by the CPU engine")
    check(v.get("temperature", 1.0) >= 0.0, "temperature must be non-negative")
    check(0.0 < v.get("top_p", 1.0) <= 1.0, "top_p must be in (0, 1]")
    check(v.get("top_k", -1) >= -1, "top_k must be -1 (disable), 0 (disable) or at least 1")
    check(0.0 <= v.get("min_p", 0.0) <= 1.0, "min_p must be in [0, 1]")
    check(v.get("max_tokens", 16) >= 1, "max_tokens must be at least 1")
    check(0 <= v.get("min_tokens", 0) <= v.get("max_tokens", 16), "min_tokens must be in [0, max_tokens]")
    for key in ("presence_penalty", "frequency_penalty"):
        check(-2.0 <= v.get(key, 0.0) <= 2.0, f"{key} must be in [-2, 2]")
    check(v.get("repetition_penalty", 1.0) > 0.0, "repetition_penalty must be greater than zero")
    check(v.get("logprobs", 0) >= 0, "logprobs must be non-negative")
    check(v.get("logprobs", 0) <= 20, "logprobs must be at most 20 (vLLM's default max_logprobs)")
    check(v.get("truncate_prompt_tokens", 1) >= 1, "truncate_prompt_tokens must be at least 1")

    fields = {k: v[k] for k in SamplingParams.__dataclass_fields__ if k in v and k != "ignored"}
    fields["ignored"] = tuple(sorted(k for k in v if k in _IGNORED))
    return SamplingParams(**fields)
