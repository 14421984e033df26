"""Prices and the cost of one request, in exact integer arithmetic.

Rounding rule (the only one, stated once):
- Every amount is kept as a whole number of nano-EUR (1 EUR = 10^9 nEUR) in Python ints and BIGINT columns. Token
  prices are EUR per million tokens with at most 3 decimals (checked at load), so one token costs a whole number of
  nEUR (1.8 EUR/M = 1800 nEUR per token) and a request's cost, tokens times prices, is exact: nothing is rounded per
  request, so sums per key, tenant, model, day and month add up exactly whatever the grouping.
- Audio is billed per started minute: ceil(milliseconds / 60000) minutes times the minute price (at most 9 decimals).
- Converting to EUR for display is exact (`Decimal(nano) / 10^9`); an invoice total is rounded once, to the cent,
  half up (`to_cents`), never the lines it sums.
- Energy (an estimate, not billed): kWh per million tokens from the catalogue times the request's total tokens, kept
  as a whole number of micro-Wh per request, rounded half up per request (`energy_uwh`).

Cost of a request by kind (completion tokens include reasoning tokens, as in OpenAI's usage):
  chat:   prompt * input + (completion - reasoning) * output + reasoning * reasoning
  batch:  prompt * batch_input + completion * batch_output
  rerank: prompt * rerank      (the reranked tokens)
  audio:  started minutes * audio_minute
  embedding: prompt * input   (input tokens only, as the reference bills embeddings)
The worst case reserved before dispatch uses the same formula with the bounds (output at the dearer of output and
reasoning).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import yaml

NANO = 10**9
PER_MILLION_NANO = 1000  # nEUR per token for 1 EUR per million tokens
KINDS = ("chat", "batch", "rerank", "audio", "embedding")
TOKEN_PRICES = ("input", "output", "reasoning", "rerank", "batch_input", "batch_output")
PRICE_FIELDS = (*TOKEN_PRICES, "audio_minute")


class PricingError(ValueError):
    pass


# The largest amount accepted anywhere (a price, a budget): its nano-EUR, 10^18, fit the signed 64-bit BIGINT
# columns. Beyond it (a budget of "1e999" EUR) the database refused the number: a 500 (found by the fuzzer).
MAX_EUR = Decimal(10**9)


def parse_eur(value, where: str, *, max_decimals: int = 9) -> Decimal:
    """A non-negative EUR amount from a YAML/JSON/proto value (string or integer; floats only via their text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PricingError(f"{where}: must be an amount in EUR, got {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise PricingError(f"{where}: {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise PricingError(f"{where}: must be a non-negative amount, got {value!r}")
    if amount > MAX_EUR:
        raise PricingError(f"{where}: at most {MAX_EUR} EUR")
    if amount.normalize().as_tuple().exponent < -max_decimals:
        raise PricingError(f"{where}: at most {max_decimals} decimals, got {value!r}")
    return amount


def eur_to_nano(amount: Decimal) -> int:
    nano = amount * NANO
    if nano != nano.to_integral_value():
        raise PricingError(f"{amount} EUR is not a whole number of nano-EUR")
    return int(nano)


def nano_to_eur(nano: int) -> Decimal:
    """Exact: 1234567 -> Decimal('0.001234567')."""
    return Decimal(nano).scaleb(-9)


def format_eur(nano: int) -> str:
    """Exact decimal text, trailing zeros kept to the nano (what the API returns: '0.001234567')."""
    return f"{nano_to_eur(nano):.9f}"


def to_cents(nano: int) -> Decimal:
    """An invoice total in EUR, rounded once to the cent, half up."""
    return nano_to_eur(nano).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Prices:
    """One entry of the price table, in nEUR per token (audio: per started minute)."""
    effective_from: dt.datetime
    input: int
    output: int
    reasoning: int
    rerank: int
    batch_input: int
    batch_output: int
    audio_minute: int

    def as_eur(self) -> dict[str, Decimal]:
        """Prices as published: EUR per million tokens, EUR per minute for audio."""
        out = {name: Decimal(getattr(self, name)).scaleb(-3) for name in TOKEN_PRICES}
        out["audio_minute"] = nano_to_eur(self.audio_minute)
        return {k: v.normalize() if v else Decimal(0) for k, v in out.items()}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    audio_ms: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def started_minutes(audio_ms: int) -> int:
    return -(-audio_ms // 60_000) if audio_ms > 0 else 0


def cost_nano(prices: Prices, kind: str, usage: Usage) -> int:
    if kind == "chat":
        reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
        return (usage.prompt_tokens * prices.input + (usage.completion_tokens - reasoning) * prices.output
                + reasoning * prices.reasoning)
    if kind == "batch":
        return usage.prompt_tokens * prices.batch_input + usage.completion_tokens * prices.batch_output
    if kind == "rerank":
        return usage.prompt_tokens * prices.rerank
    if kind == "audio":
        return started_minutes(usage.audio_ms) * prices.audio_minute
    if kind == "embedding":
        return usage.prompt_tokens * prices.input
    raise PricingError(f"unknown kind {kind!r}")


def worst_case_nano(prices: Prices, kind: str, max_input: int, max_output: int, max_audio_ms: int = 0) -> int:
    """The most a request within these bounds can cost: reserved against the budget before dispatch."""
    if kind == "chat":
        return max_input * prices.input + max_output * max(prices.output, prices.reasoning)
    return cost_nano(prices, kind, Usage(max_input, max_output, 0, max_audio_ms))


def energy_uwh(kwh_per_million_tokens: Decimal | None, total_tokens: int) -> int:
    """Estimated energy in micro-Wh (kWh/M tokens * tokens * 10^9 / 10^6), rounded half up per request."""
    if not kwh_per_million_tokens or total_tokens <= 0:
        return 0
    return int((kwh_per_million_tokens * total_tokens * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_kwh(uwh: int) -> str:
    return f"{Decimal(uwh).scaleb(-9):.9f}"


@dataclass(frozen=True)
class PriceTable:
    currency: str
    entries: tuple[Prices, ...]  # by increasing effective_from

    def at(self, when: dt.datetime) -> Prices:
        """The prices in effect at `when` (timezone-aware); before the first entry, the first entry."""
        chosen = self.entries[0]
        for entry in self.entries:
            if entry.effective_from <= when:
                chosen = entry
        return chosen


def _date(value, where: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise PricingError(f"{where}: effective_from needs a timezone (or give a date)")
        return value.astimezone(dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC)
    raise PricingError(f"{where}: effective_from must be a date (YYYY-MM-DD), got {value!r}")


def parse_prices(raw: dict, source: str = "prices") -> PriceTable:
    if not isinstance(raw, dict) or set(raw) - {"currency", "prices"}:
        raise PricingError(f"{source}: expected the keys currency and prices")
    if raw.get("currency") != "EUR":
        raise PricingError(f"{source}: currency must be EUR")
    items = raw.get("prices")
    if not isinstance(items, list) or not items:
        raise PricingError(f"{source}: prices must be a non-empty list")
    entries: list[Prices] = []
    for i, item in enumerate(items):
        where = f"{source}: prices[{i}]"
        if not isinstance(item, dict):
            raise PricingError(f"{where}: must be a mapping")
        expected = {"effective_from", *PRICE_FIELDS}
        if missing := expected - set(item):
            raise PricingError(f"{where}: missing {sorted(missing)}")
        if unknown := set(item) - expected:
            raise PricingError(f"{where}: unknown fields {sorted(unknown)}")
        when = _date(item["effective_from"], where)
        if entries and when <= entries[-1].effective_from:
            raise PricingError(f"{where}: effective_from must be after the previous entry's")
        values = {name: parse_eur(item[name], f"{where}.{name}", max_decimals=3) * PER_MILLION_NANO
                  for name in TOKEN_PRICES}
        values["audio_minute"] = eur_to_nano(parse_eur(item["audio_minute"], f"{where}.audio_minute"))
        entries.append(Prices(effective_from=when, **{k: int(v) for k, v in values.items()}))
    return PriceTable(currency="EUR", entries=tuple(entries))


def load_prices(path: Path) -> PriceTable:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise PricingError(f"{path}: {e}") from None
    return parse_prices(raw, str(path))
