import datetime as dt
from decimal import Decimal

import pytest
from llmaas.metering import tiers as tw
from llmaas.metering.pricing import (
    MAX_EUR,
    PricingError,
    Usage,
    cost_nano,
    energy_uwh,
    eur_to_nano,
    format_eur,
    load_prices,
    parse_eur,
    parse_prices,
    started_minutes,
    to_cents,
    worst_case_nano,
)
from llmaas.metering.tiers import TierError, load_tiers, parse_tiers
from llmaas.stack.paths import DEPLOY_DIR

PRICES = DEPLOY_DIR / "metering" / "prices.yaml"
TIERS = DEPLOY_DIR / "metering" / "tiers.yaml"
NOW = dt.datetime(2026, 11, 23, 15, 4, 5, tzinfo=dt.UTC)


def test_deployed_prices_are_the_reference_ones():
    p = load_prices(PRICES).at(NOW)
    assert p.as_eur() == {"input": Decimal("1.8"), "output": Decimal(8), "reasoning": Decimal(8),
                          "rerank": Decimal(4), "batch_input": Decimal("0.9"), "batch_output": Decimal(4),
                          "audio_minute": Decimal("0.01")}
    assert (p.input, p.output, p.batch_input) == (1800, 8000, 900)  # nano-EUR per token


def test_costs_are_exact_integers_of_nano_eur():
    p = load_prices(PRICES).at(NOW)
    assert cost_nano(p, "chat", Usage(15, 42)) == 15 * 1800 + 42 * 8000
    assert cost_nano(p, "chat", Usage(10, 30, reasoning_tokens=20)) == 10 * 1800 + 10 * 8000 + 20 * 8000
    assert cost_nano(p, "batch", Usage(1_000_000, 1_000_000)) == 4_900_000_000  # 0.9 + 4 EUR
    assert cost_nano(p, "rerank", Usage(250_000)) == 1_000_000_000
    assert format_eur(cost_nano(p, "chat", Usage(1, 0))) == "0.000001800"
    # Sums of per-request costs equal the cost of the summed tokens: nothing was rounded per request.
    requests = [Usage(i % 97, i % 13) for i in range(1000)]
    total = sum(cost_nano(p, "chat", u) for u in requests)
    assert total == cost_nano(p, "chat", Usage(sum(u.prompt_tokens for u in requests),
                                               sum(u.completion_tokens for u in requests)))
    assert to_cents(4_995_000_000) == Decimal("5.00") and to_cents(4_994_999_999) == Decimal("4.99")


def test_audio_is_billed_per_started_minute():
    p = load_prices(PRICES).at(NOW)
    assert [started_minutes(ms) for ms in (0, 1, 60_000, 60_001, 125_000)] == [0, 1, 1, 2, 3]
    assert cost_nano(p, "audio", Usage(audio_ms=61_000)) == 2 * 10_000_000


def test_worst_case_bounds_the_real_cost():
    p = load_prices(PRICES).at(NOW)
    worst = worst_case_nano(p, "chat", 100, 50)
    assert worst == 100 * 1800 + 50 * 8000
    assert cost_nano(p, "chat", Usage(100, 50, reasoning_tokens=50)) <= worst


def test_energy_is_micro_wh_rounded_half_up_per_request():
    assert energy_uwh(Decimal("6.32"), 1000) == 6_320_000  # 6.32 kWh/M * 1000 tokens = 6.32 Wh
    assert energy_uwh(Decimal("0.0005"), 1) == 1 and energy_uwh(Decimal("0.0004"), 1) == 0  # 0.5 uWh rounds up
    assert energy_uwh(None, 1000) == 0


def test_effective_dates_pick_the_entry_in_force():
    table = parse_prices({"currency": "EUR", "prices": [
        {"effective_from": dt.date(2025, 1, 1), "input": "1.8", "output": "8", "reasoning": "8", "rerank": "4",
         "batch_input": "0.9", "batch_output": "4", "audio_minute": "0.01"},
        {"effective_from": dt.date(2026, 12, 1), "input": "2", "output": "8", "reasoning": "8", "rerank": "4",
         "batch_input": "1", "batch_output": "4", "audio_minute": "0.01"}]})
    assert table.at(NOW).input == 1800
    assert table.at(dt.datetime(2026, 12, 1, tzinfo=dt.UTC)).input == 2000


@pytest.mark.parametrize("change, message", [
    ({"input": "1.8001"}, "at most 3 decimals"),
    ({"input": "-1"}, "non-negative"),
    ({"input": "abc"}, "not a number"),
    ({"extra": "1"}, "unknown fields"),
    ({"effective_from": "soon"}, "must be a date"),
])
def test_a_bad_price_file_is_refused_with_its_place(change, message):
    entry = {"effective_from": dt.date(2025, 1, 1), "input": "1.8", "output": "8", "reasoning": "8", "rerank": "4",
             "batch_input": "0.9", "batch_output": "4", "audio_minute": "0.01", **change}
    with pytest.raises(PricingError, match=message):
        parse_prices({"currency": "EUR", "prices": [entry]})
    with pytest.raises(PricingError, match="after the previous"):
        good = {**entry, **{k: v for k, v in
                            {"input": "1.8", "extra": None, "effective_from": dt.date(2025, 1, 1)}.items()}}
        good.pop("extra")
        parse_prices({"currency": "EUR", "prices": [good, good]})


def test_deployed_tiers_are_the_reference_ones():
    tiers = load_tiers(TIERS)
    t1 = tiers.get("")
    assert (t1.id, t1.purchase_credit_nano, t1.monthly_budget_nano, t1.output_tokens_per_hour,
            t1.output_tokens_per_day) == ("tier1", 200 * 10**9, 1000 * 10**9, 150_000, 3_600_000)
    assert [tiers.get(t).monthly_budget_nano for t in ("tier2", "tier3", "tier4")] == [
        3000 * 10**9, 5000 * 10**9, 10000 * 10**9]
    monthly = tiers.get("monthly")
    assert monthly.monthly_budget_nano is None and monthly.output_tokens_per_hour is None
    with pytest.raises(TierError, match="default_tier"):
        parse_tiers({"default_tier": "nope", "tiers": {"t": {
            "name": "T", "description": "", "purchase_credit": None, "monthly_budget": "1",
            "output_tokens_per_hour": None, "output_tokens_per_day": None, "requests_per_minute": None}}})


def test_windows_are_aligned():
    assert tw.hour_window(NOW) == (int(dt.datetime(2026, 11, 23, 15, tzinfo=dt.UTC).timestamp()),
                                   int(dt.datetime(2026, 11, 23, 16, tzinfo=dt.UTC).timestamp()))
    start, end = tw.month_window(dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC))
    assert end == int(dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp())
    start, end = tw.slot_window(NOW, 60)
    assert end - start == 60 and start % 60 == 0 and start <= NOW.timestamp() < end


@pytest.mark.parametrize("amount", ["1e999", "9" * 20, "1000000000.000000001"])
def test_an_amount_beyond_a_bigint_of_nano_eur_is_refused(amount):
    # (a tenant budget of "1e999" EUR reached the database: a 500, found by the fuzzer)
    with pytest.raises(PricingError, match="at most 1000000000 EUR"):
        parse_eur(amount, "monthly_budget_eur")
    assert eur_to_nano(parse_eur(str(MAX_EUR), "x")) < 2**63
