"""A model's lifecycle on a given day, computed from its catalogue dates. Pure functions: no clock, no I/O.

Sources: the "Model Lifecycle" section of the reference (concepts.md): DMP is the production date, DSP "the projected
date from which the model will no longer be maintained", and "a 3-month notice period is respected before any
effective removal" ("Deprecation: 3-month notice before removal").

The rule (one definition, used everywhere). With E = `end_of_support` (the DSP) and N = E minus NOTICE_MONTHS
calendar months (the same day of the month, clamped to the month's last day: 2026-06-30 -> 2026-03-30,
2026-05-31 -> 2026-02-28):

- no E: "production" forever (a model without a published end of support), unless it is `deprecated`;
- today < N: "production";
- N <= today < E: "notice" — the 3-month notice runs, the model is still supported and served;
- today >= E: "end_of_support" — E is both the end of support and the removal (sunset) date: the notice is given
  *before* E so that removal can take effect at E. A model past E that is still deployed keeps answering (the
  schedule is projected and revised each quarter) but is overdue for removal;
- a `deprecated` model (the reference's "Deprecated Models" list: no longer on the platform, its deprecation date
  stored as E) is "removed" from E on (and always, if it has no E); before E it follows the rules above.

So the notice starts at N, the sunset (removal) date is E, and served traffic carries `Deprecation` (RFC 9745, the
notice start) and `Sunset` (RFC 8594, E) headers from N on, i.e. in every phase except "production".

LTS: the LTS flag does not change this arithmetic. For an LTS model the DSP in the schedule already is the extended,
guaranteed date (every LTS row of the reference ends in 2026-12 or 2027-12), so its notice and sunset derive from it
the same way; what LTS adds is that E is a commitment, not a projection subject to the quarterly review (extended
support beyond it is a contract matter, outside the catalogue). `Status.lts` carries the flag for display.

Successor: the model to migrate to is the end of the `migration` chain (A -> B -> C gives C), so a client is never
sent to a model that itself names a replacement. The loader refuses unknown targets and cycles; `migration_chain`
still stops at the first repeat, so it terminates on any input.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from email.utils import format_datetime

from llmaas.catalog.entries import Catalog, ModelEntry

NOTICE_MONTHS = 3

PRODUCTION = "production"
NOTICE = "notice"
END_OF_SUPPORT = "end_of_support"
REMOVED = "removed"
PHASES = (PRODUCTION, NOTICE, END_OF_SUPPORT, REMOVED)


def months_before(day: dt.date, months: int) -> dt.date:
    """The same day `months` calendar months earlier, clamped to the last day of that month."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def notice_start(entry: ModelEntry) -> dt.date | None:
    """The first day of the deprecation notice, or None when the model has no end of support."""
    if entry.end_of_support is None:
        return None
    return months_before(entry.end_of_support, NOTICE_MONTHS)


def sunset_date(entry: ModelEntry) -> dt.date | None:
    """The removal date: the end of support itself (the notice precedes it)."""
    return entry.end_of_support


def phase(entry: ModelEntry, today: dt.date) -> str:
    end = entry.end_of_support
    if end is None:
        return REMOVED if entry.deprecated else PRODUCTION
    if today >= end:
        return REMOVED if entry.deprecated else END_OF_SUPPORT
    if today >= months_before(end, NOTICE_MONTHS):
        return NOTICE
    return PRODUCTION


def announces_deprecation(entry: ModelEntry, today: dt.date) -> bool:
    """Whether responses served by this model should carry Deprecation and Sunset headers today."""
    return phase(entry, today) != PRODUCTION


def _midnight_utc(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def deprecation_headers(entry: ModelEntry, today: dt.date) -> dict[str, str]:
    """The response headers for today: {} in production, else Deprecation (RFC 9745 structured date of the notice
    start) and Sunset (RFC 8594 HTTP-date of the removal date). A deprecated model without an end of support gets {}:
    both headers carry dates, and none is invented."""
    if not announces_deprecation(entry, today) or entry.end_of_support is None:
        return {}
    start, sunset = notice_start(entry), sunset_date(entry)
    assert start is not None and sunset is not None
    return {
        "Deprecation": f"@{int(_midnight_utc(start).timestamp())}",
        "Sunset": format_datetime(_midnight_utc(sunset), usegmt=True),
    }


def migration_chain(entry: ModelEntry, catalog: Catalog) -> list[ModelEntry]:
    """The models `entry` migrates to, in order, following `migration` links; stops at an unknown target or a
    repeat (the loader refuses both, this only guarantees termination)."""
    chain: list[ModelEntry] = []
    seen = {entry.id}
    current = entry
    while current.migration:
        target = catalog.lookup(current.migration)
        if target is None or target.id in seen:
            break
        chain.append(target)
        seen.add(target.id)
        current = target
    return chain


def successor(entry: ModelEntry, catalog: Catalog) -> ModelEntry | None:
    """The recommended replacement: the last model of the migration chain, or None when there is none."""
    chain = migration_chain(entry, catalog)
    return chain[-1] if chain else None


@dataclass(frozen=True)
class Status:
    model: str
    phase: str
    lts: bool
    end_of_support: dt.date | None
    notice_start: dt.date | None
    sunset: dt.date | None
    announce: bool
    successor: str | None


def status(entry: ModelEntry, catalog: Catalog, today: dt.date) -> Status:
    """Everything above for one model on one day."""
    replacement = successor(entry, catalog)
    return Status(model=entry.id, phase=phase(entry, today), lts=entry.lts, end_of_support=entry.end_of_support,
                  notice_start=notice_start(entry), sunset=sunset_date(entry),
                  announce=announces_deprecation(entry, today),
                  successor=replacement.id if replacement else None)
