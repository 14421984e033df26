"""Reasoning models: the output split into reasoning and answer (whole, and streamed in any split, markers across
deltas), the reasoning tokens counted from the backend's per-response counts, the message and chunk shapes (tool calls
and logprobs on the answer only), reasoning_effort checked against the catalogue and passed to the chat template,
the catalogue's `reasoning` field, and the deterministic engine's reasoning mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from llmaas.catalog.entries import CatalogError, load_catalog
from llmaas.catalog.v1 import catalog_pb2
from llmaas.common.errors import ApiError
from llmaas.router import template
from llmaas.router.chat_output import ChatOutput
from llmaas.router.kserve import Delta
from llmaas.router.params import Message, parse_chat_request
from llmaas.router.pipeline import ChatPipeline
from llmaas.router.reasoning import ReasoningSplitter, ReasoningTokens, split_reasoning
from llmaas.router.v1 import router_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "triton" / "backends" / "vllm"))

from llmaas_cpu.deterministic import DeterministicEngine, effort_of, reasoning_for, tokenize_text  # noqa: E402
from llmaas_cpu.sampling import SamplingParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
THINK = catalog_pb2.ReasoningFormat(start="<think>", end="</think>", efforts=["low", "medium", "high"])
OUTPUT = "<think>\nFirst, 2 < 3. Then </thin is not the end.\n</think>\n\nThe answer is 4."
REASONING, ANSWER = "\nFirst, 2 < 3. Then </thin is not the end.\n", "The answer is 4."


def streamed(text: str, size: int, start: str = "<think>", end: str = "</think>", **kw) -> list[tuple[str, str]]:
    splitter = ReasoningSplitter(start, end, **kw)
    pieces = [splitter.feed(text[i:i + size]) for i in range(0, len(text), size)] + [splitter.finish()]
    return [p for p in pieces if p != ("", "")]


# --- the split --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    (OUTPUT, (REASONING, ANSWER)),
    ("\n  " + OUTPUT, (REASONING, ANSWER)),  # blank lines before the start marker
    ("<think></think>Hi", ("", "Hi")),  # empty reasoning
    ("<think>\n\n</think>\n\n", ("\n\n", "")),  # reasoning only
    ("<think>cut by max_tokens, no end marker", ("cut by max_tokens, no end marker", "")),
    ("<think>cut inside the end marker </thi", ("cut inside the end marker </thi", "")),
    ("No reasoning. <think>later</think> is content", (None, "No reasoning. <think>later</think> is content")),
    ("  <thinking> is not the marker", (None, "  <thinking> is not the marker")),
    ("<thi", (None, "<thi")),  # an output that only began the marker
    ("", (None, "")),
])
def test_whole_output(text, expected):
    assert split_reasoning(text, "<think>", "</think>") == expected


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 1000])
@pytest.mark.parametrize("text", [OUTPUT, "<think></think>Hi", "<think>no end", "plain <think> text", "\n<th"])
def test_streamed_in_any_split_is_the_whole_split(text, size):
    pieces = streamed(text, size)
    reasoning, content = split_reasoning(text, "<think>", "</think>")
    assert "".join(r for r, _ in pieces) == (reasoning or "") and "".join(c for _, c in pieces) == content
    # No reasoning after the answer began.
    first_content = next((i for i, (_, c) in enumerate(pieces) if c), len(pieces))
    assert not any(r for r, _ in pieces[first_content + 1:])


def test_markers_split_across_deltas_are_never_sent_in_part():
    pieces = streamed(OUTPUT, 1)
    assert all("<" not in c for _, c in pieces)
    assert "".join(r for r, _ in pieces).count("</think>") == 0 and ("", "T") in pieces


def test_a_template_that_opens_the_reasoning():
    # DeepSeek-R1's template ends the prompt with "<think>\n": the output starts inside the reasoning.
    assert split_reasoning("Hmm.\n</think>\nYes.", "", "</think>") == ("Hmm.\n", "Yes.")
    assert split_reasoning("cut", "", "</think>") == ("cut", "")
    # Guided decoding writes the answer from the first token: no reasoning then.
    assert split_reasoning('{"a": 1}', "", "</think>", constrained=True) == (None, '{"a": 1}')


def test_other_markers():
    assert split_reasoning("[THINK]x[/THINK]y", "[THINK]", "[/THINK]") == ("x", "y")


# --- the reasoning tokens ---------------------------------------------------------------------------------------------
def _token_deltas(text: str, eos: bool = True) -> list[tuple[str, int]]:
    return [(t, 1) for t in tokenize_text(text)] + ([("", 1)] if eos else [])


@pytest.mark.parametrize("effort", ["low", "high"])
def test_reasoning_tokens_are_those_up_to_the_end_marker(effort):
    counter = ReasoningTokens("<think>", "</think>")
    for text, n in _token_deltas(reasoning_for(effort) + "Echo: hi"):
        counter.feed(text, n)
    assert counter.count == len(tokenize_text(reasoning_for(effort).rstrip()))


def test_reasoning_tokens_without_reasoning_or_without_its_end():
    counter = ReasoningTokens("<think>", "</think>")
    for text, n in _token_deltas("Echo: no thinking here"):
        counter.feed(text, n)
    assert counter.count == 0
    counter = ReasoningTokens("<think>", "</think>")
    for text, n in _token_deltas("<think> still thinking when cut", eos=False):
        counter.feed(text, n)
    assert counter.count == len(tokenize_text("<think> still thinking when cut"))
    # Several tokens per response (a non-streaming backend's one response) count together.
    counter = ReasoningTokens("<think>", "</think>")
    counter.feed("<think>a</think>b", 5)
    assert counter.count == 5


# --- the message and the chunks ---------------------------------------------------------------------------------------
def parse(**body):
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return parse_chat_request(json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest()))


def deltas_of(text: str, size: int = 1, logprobs: bool = False) -> list[Delta]:
    out = []
    for i in range(0, len(text), size):
        piece = text[i:i + size]
        lp = f'[{{"7": {{"logprob": -0.5, "rank": 1, "decoded_token": {piece!r}}}}}]'.replace("'", '"') \
            if logprobs else None
        out.append(Delta(piece, None, 3, 1, False, lp.encode() if lp else None))
    return out + [Delta("", "stop", 3, 1, True)]


def test_message_has_reasoning_content_and_the_answer():
    output = ChatOutput.for_params(parse(), THINK)
    message, logprobs = output.message(deltas_of(OUTPUT, 3))
    assert message == {"role": "assistant", "content": ANSWER, "refusal": None, "reasoning_content": REASONING}
    assert logprobs is None and output.finish_reason("stop") == "stop"
    plain, _ = ChatOutput.for_params(parse(), THINK).message(deltas_of("Just text."))
    assert plain["reasoning_content"] is None and plain["content"] == "Just text."


def test_a_model_without_reasoning_gets_no_output_shaping():
    assert ChatOutput.for_params(parse()) is None


def test_streamed_chunks_reasoning_first_then_content():
    output = ChatOutput.for_params(parse(), THINK)
    parts = [p for d in deltas_of(OUTPUT, 4) for p, _ in output.deltas(d)] + [p for p, _ in output.end()]
    assert all(set(p) in ({"reasoning_content"}, {"content"}) for p in parts)
    first_content = next(i for i, p in enumerate(parts) if "content" in p)
    assert all("reasoning_content" in p for p in parts[:first_content])
    assert all("content" in p for p in parts[first_content:])
    assert "".join(p.get("reasoning_content", "") for p in parts) == REASONING
    assert "".join(p.get("content", "") for p in parts) == ANSWER


TOOLS = [{"type": "function", "function": {"name": "get_time"}}]
CALL = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'


def test_tool_calls_are_parsed_from_the_answer_only():
    p = parse(tools=TOOLS)
    text = f"<think>Maybe {CALL}? No.</think>{CALL}"
    message, _ = ChatOutput.for_params(p, THINK).message(deltas_of(text, 5))
    assert message["reasoning_content"] == f"Maybe {CALL}? No."
    assert message["content"] is None and [c["function"]["name"] for c in message["tool_calls"]] == ["get_time"]
    # A call written only while thinking is no call.
    output = ChatOutput.for_params(p, THINK)
    message, _ = output.message(deltas_of(f"<think>{CALL}</think>It is noon.", 5))
    assert "tool_calls" not in message and message["content"] == "It is noon."
    assert output.finish_reason("stop") == "stop"
    # Streamed: the call comes as OpenAI's tool_calls deltas after the reasoning.
    output = ChatOutput.for_params(p, THINK)
    parts = [q for d in deltas_of(text, 2) for q, _ in output.deltas(d)] + [q for q, _ in output.end()]
    assert "".join(q.get("reasoning_content", "") for q in parts) == f"Maybe {CALL}? No."
    assert [q["tool_calls"][0]["function"].get("name") for q in parts if "tool_calls" in q][0] == "get_time"
    assert output.finish_reason("stop") == "tool_calls"


def test_structured_output_is_the_answer():
    # A required call's JSON (guided decoding) after the reasoning parses as the call.
    p = parse(tools=TOOLS, tool_choice="required")
    message, _ = ChatOutput.for_params(p, THINK, constrained=True).message(
        deltas_of('<think>x</think>[{"name": "get_time", "arguments": {}}]', 4))
    assert message["reasoning_content"] == "x" and message["tool_calls"][0]["function"]["name"] == "get_time"


def test_logprobs_cover_the_answer_tokens_only():
    output = ChatOutput.for_params(parse(logprobs=True), THINK)
    _, logprobs = output.message(deltas_of("<think>ab</think>cd", 1, logprobs=True))
    assert [e["token"] for e in logprobs["content"]] == ["c", "d"]


# --- reasoning_effort -------------------------------------------------------------------------------------------------
def model(**kw) -> catalog_pb2.ResolveModelResponse:
    return catalog_pb2.ResolveModelResponse(id="m", type="chat", **kw)


@pytest.mark.parametrize("effort", ["none", "minimal", "low", "medium", "high", "xhigh", "max"])
def test_openais_efforts_parse(effort):
    assert parse(reasoning_effort=effort).reasoning_effort == effort


@pytest.mark.parametrize("entry,effort,code", [
    (model(), "low", "unsupported_parameter"),  # no reasoning at all
    (model(capabilities=["reasoning"], reasoning=catalog_pb2.ReasoningFormat(end="</think>")), "low",
     "unsupported_parameter"),  # a reasoning model that takes no effort
    (model(capabilities=["reasoning"], reasoning=THINK), "minimal", "unsupported_value"),
])
def test_an_effort_the_model_does_not_take_is_a_400_naming_it(entry, effort, code):
    with pytest.raises(ApiError) as e:
        ChatPipeline._check_capabilities(parse(reasoning_effort=effort), entry)
    assert (e.value.param, e.value.code, e.value.status.name) == ("reasoning_effort", code, "INVALID_ARGUMENT")


def test_an_effort_the_model_takes_reaches_its_template():
    ChatPipeline._check_capabilities(parse(reasoning_effort="high"), model(capabilities=["reasoning"],
                                                                            reasoning=THINK))
    source = (ROOT / "tests/e2e/chat_templates/llmaas-test-reasoning.jinja").read_text()
    messages = (Message("user", "hi"),)
    assert template.render_prompt(source, messages, reasoning_effort="high").startswith(
        "<|im_start|>system\nReasoning: high\n")
    assert template.render_prompt(source, messages).startswith("<|im_start|>system\nReasoning: medium\n")


# --- the catalogue ----------------------------------------------------------------------------------------------------
ENTRY = ("models:\n  - {{id: m, editor: e, type: chat, production_date: 2026-01-01, licence: MIT, max_model_len: 64,"
         " default_max_tokens: 8, triton_model: t, chat_template: t.jinja{extra}}}\n")


def catalog(tmp_path, extra: str, template_text: str = "{{ messages }}"):
    (tmp_path / "t.jinja").write_text(template_text)
    (tmp_path / "c.yaml").write_text(ENTRY.format(extra=extra))
    return load_catalog([tmp_path / "c.yaml"]).lookup("m")


def test_catalogue_reasoning_defaults_and_fields(tmp_path):
    assert catalog(tmp_path, "").reasoning is None
    default = catalog(tmp_path, ", capabilities: [reasoning]").reasoning
    assert (default.start, default.end, default.efforts) == ("<think>", "</think>", ())
    entry = catalog(tmp_path, ", capabilities: [reasoning], reasoning: {start: '', end: '</think>', efforts: [low]}",
                    "{{ reasoning_effort }}")
    assert (entry.reasoning.start, entry.reasoning.efforts) == ("", ("low",))


@pytest.mark.parametrize("extra,words", [
    (", reasoning: {end: '</x>'}", "needs the 'reasoning' capability"),
    (", capabilities: [reasoning], reasoning: {end: ''}", "non-empty marker"),
    (", capabilities: [reasoning], reasoning: {efforts: [turbo]}", "not among"),
    (", capabilities: [reasoning], reasoning: {efforts: [low]}", "never reads 'reasoning_effort'"),
    (", capabilities: [reasoning], reasoning: {stop: x}", "unknown key"),
])
def test_catalogue_reasoning_errors(tmp_path, extra, words):
    with pytest.raises(CatalogError, match=words):
        catalog(tmp_path, extra)


# --- the deterministic engine's reasoning mode ------------------------------------------------------------------------
def reply(prompt: str) -> str:
    engine = DeterministicEngine(reasoning=True)
    out = []
    for step in engine.generate(prompt, engine.tokenize(prompt), SamplingParams(), False):
        if step.is_eos:
            break
        out.append(step.piece.decode())
    return "".join(out)


def test_the_engine_thinks_as_long_as_the_effort_says():
    prompt = "<|im_start|>system\nReasoning: {}\n<|im_end|>\n<|im_start|>user\nsay hi<|im_end|>\n"
    for effort in ("low", "medium", "high"):
        assert reply(prompt.format(effort)).startswith(reasoning_for(effort) + "Echo: ")
    assert len(reasoning_for("low")) < len(reasoning_for("medium")) < len(reasoning_for("high"))
    # Only the template's line at the top counts: a user cannot set it.
    assert effort_of("<|im_start|>user\nReasoning: high<|im_end|>") == "medium"
    assert not DeterministicEngine().reasoning
