"""Tiers: an upfront purchase credit, a monthly budget and output-token capacity per hour and per day (None: unlimited).

Windows are fixed and aligned, so that a limit's Reset is a moment everyone agrees on: the UTC clock hour, the UTC day
and the UTC calendar month for the tier; for a per-key quota of W seconds, the W-second slots since the Unix epoch.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from llmaas.metering.pricing import PricingError, eur_to_nano, parse_eur

FIELDS = ("name", "description", "purchase_credit", "monthly_budget", "output_tokens_per_hour",
          "output_tokens_per_day", "requests_per_minute")


class TierError(ValueError):
    pass


@dataclass(frozen=True)
class Tier:
    id: str
    name: str
    description: str
    purchase_credit_nano: int | None
    monthly_budget_nano: int | None
    output_tokens_per_hour: int | None
    output_tokens_per_day: int | None
    requests_per_minute: int | None

    def with_budget(self, budget_nano: int | None) -> Tier:
        return self if budget_nano is None else replace(self, monthly_budget_nano=budget_nano)


@dataclass(frozen=True)
class Tiers:
    default: str
    by_id: dict[str, Tier]

    def get(self, tier_id: str) -> Tier:
        return self.by_id[tier_id or self.default]


def _amount(value, where: str) -> int | None:
    if value is None:
        return None
    try:
        return eur_to_nano(parse_eur(value, where))
    except PricingError as e:
        raise TierError(str(e)) from None


def _count(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TierError(f"{where}: must be a positive integer or null, got {value!r}")
    return value


def parse_tiers(raw: dict, source: str = "tiers") -> Tiers:
    if not isinstance(raw, dict) or set(raw) != {"default_tier", "tiers"}:
        raise TierError(f"{source}: expected the keys default_tier and tiers")
    items = raw["tiers"]
    if not isinstance(items, dict) or not items:
        raise TierError(f"{source}: tiers must be a non-empty mapping")
    tiers: dict[str, Tier] = {}
    for tier_id, item in items.items():
        where = f"{source}: tiers.{tier_id}"
        if not isinstance(item, dict):
            raise TierError(f"{where}: must be a mapping")
        if missing := set(FIELDS) - set(item):
            raise TierError(f"{where}: missing {sorted(missing)}")
        if unknown := set(item) - set(FIELDS):
            raise TierError(f"{where}: unknown fields {sorted(unknown)}")
        tiers[str(tier_id)] = Tier(
            id=str(tier_id), name=str(item["name"]), description=str(item["description"]),
            purchase_credit_nano=_amount(item["purchase_credit"], f"{where}.purchase_credit"),
            monthly_budget_nano=_amount(item["monthly_budget"], f"{where}.monthly_budget"),
            output_tokens_per_hour=_count(item["output_tokens_per_hour"], f"{where}.output_tokens_per_hour"),
            output_tokens_per_day=_count(item["output_tokens_per_day"], f"{where}.output_tokens_per_day"),
            requests_per_minute=_count(item["requests_per_minute"], f"{where}.requests_per_minute"))
    if raw["default_tier"] not in tiers:
        raise TierError(f"{source}: default_tier {raw['default_tier']!r} is not a tier")
    return Tiers(default=raw["default_tier"], by_id=tiers)


def load_tiers(path: Path) -> Tiers:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TierError(f"{path}: {e}") from None
    return parse_tiers(raw, str(path))


def epoch(when: dt.datetime) -> int:
    return int(when.timestamp())


def hour_window(now: dt.datetime) -> tuple[int, int]:
    start = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return epoch(start), epoch(start + dt.timedelta(hours=1))


def day_window(now: dt.datetime) -> tuple[int, int]:
    start = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return epoch(start), epoch(start + dt.timedelta(days=1))


def month_window(now: dt.datetime) -> tuple[int, int]:
    start = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return epoch(start), epoch(end)


def slot_window(now: dt.datetime, seconds: int) -> tuple[int, int]:
    t = epoch(now)
    start = t - t % seconds
    return start, start + seconds
