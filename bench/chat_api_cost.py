"""The router's own CPU for one plain chat request (no tools, no logprobs), against a baseline commit, in one run: what
the chat API's parsing and response building add to the common case (issue 14: a plain request must not pay for
tools, logprobs or the parameter checks).

    .venv/bin/python -m bench.chat_api_cost [--baseline 8de389e] [--seconds 2] [--pairs 8]

Times, in-process and single-threaded: parse_chat_request, the prompt rendering, the sampling parameters, then the
non-streamed body (completion + JSON) and a 32-chunk stream's events, for this checkout and for the baseline's
`services/` (extracted with git archive, run in a subprocess with it first on the path). Then a request with tools,
one with logprobs and one to a reasoning model (its 32 tokens split into reasoning and answer) on this checkout, for
scale. Prints CPU µs per request (process time, best of 5) and the ratio. The output guard's scan is timed as the
pipeline runs it (a ~120-word system prompt's leak check in a second comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKLOAD = r'''
import json, sys, time
from types import SimpleNamespace
from google.protobuf import json_format
from llmaas.router import openai_json as oj
from llmaas.router.params import parse_chat_request
from llmaas.router.pipeline import ChatRun, Usage, _sampling
from llmaas.router.template import render_prompt
from llmaas.router.v1 import router_pb2

body = json.loads(sys.argv[1])
seconds = float(sys.argv[2])
template = open(sys.argv[3]).read()
request = json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest())
Delta = __import__("llmaas.router.kserve", fromlist=["Delta"]).Delta
deltas = [Delta(" word", None, 20, 1, False) for _ in range(31)] + [Delta("", "stop", 20, 1, True)]
SHAPED = "output" in ChatRun.__dataclass_fields__
try:  # the output guard (issue 19 item 5), on by default (enforce): the plain request pays for it
    from llmaas.router.output_guard import OutputGuard, system_text
except ImportError:
    OutputGuard = None
if SHAPED:
    from llmaas.router.chat_output import ChatOutput
reasoning = None
if sys.argv[4:] == ["reasoning"]:  # the deterministic reasoning model's shape: markers over several tokens
    from llmaas.catalog.v1.catalog_pb2 import ReasoningFormat
    reasoning = ReasoningFormat(start="<think>", end="</think>")
    pieces = ["<", "think", ">", "\nThe"] + [" word"] * 12 + ["\n<", "/", "think", ">"] + [" word"] * 11
    deltas = [Delta(p, None, 20, 1, False) for p in pieces] + [Delta("", "stop", 20, 1, True)]


def one():
    params = parse_chat_request(request)
    kwargs = {"tools": params.tools} if hasattr(params, "tools") else {}
    prompt = render_prompt(template, params.messages, "<|im_start|>", "<|im_end|>", **kwargs)
    fields = dict(id="chatcmpl-1", request_id="r", created=1, model="m", params=params, caller=None,
                  triton_model="t", endpoints=("a",), prompt=prompt, sampling=_sampling(params, 32))
    output = None
    if SHAPED:
        output = fields["output"] = ChatOutput.for_params(params, *([reasoning] if reasoning else []))
    if reasoning is not None:
        fields["reasoning"] = reasoning
    run = ChatRun(**fields)
    run.usage = Usage(20, 32)
    if OutputGuard is not None:  # as the pipeline does: the whole answer at once, then the stream delta by delta
        system = system_text(params.messages)
        whole = OutputGuard(system, enforce=True)
        whole.scanner.feed("".join(d.text for d in deltas))
        whole.scanner.end()
        streamed = OutputGuard(system, enforce=True)
        for d in deltas:
            if d.text:
                streamed.scanner.feed(d.text)
        streamed.scanner.end()
    if hasattr(oj, "completion_of"):  # the body as the servicer builds it (an older baseline: its two builders)
        oj.json_body(oj.completion_of(run, [deltas]))
    elif output is None:
        oj.json_body(oj.completion(run, "".join(d.text for d in deltas)))
    else:
        oj.json_body(oj.shaped_completion(run, deltas))
    if output is None:
        data = b"".join(oj.sse(oj.chunk(run, {"content": d.text})) for d in deltas if d.text)
        data += oj.sse(oj.chunk(run, {}, "stop"))
    else:
        run.output = ChatOutput.for_params(params, *([reasoning] if reasoning else []))
        if reasoning is not None:  # the pipeline counts its tokens as they come
            counter = run.reasoning_counter()
            for d in deltas:
                counter.feed(d.text, d.output_tokens)
        data = b"".join(oj.shaped_chunks(run, run.output.deltas(d)) for d in deltas)
        data += oj.shaped_chunks(run, run.output.end()) + oj.sse(oj.final_chunk(run))


best = float("inf")
for _ in range(5):
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds / 5:
        one()
        n += 1
    best = min(best, (time.process_time() - start) / n)
print(best * 1e6)
'''

PLAIN = {"model": "m", "messages": [{"role": "system", "content": "You are concise."},
                                    {"role": "user", "content": "Summarise the plot of Hamlet in three lines. " * 4}],
         "max_tokens": 32, "temperature": 0.7, "stream": False}
# A system prompt long enough for the output guard's leak check (~120 words: its 8-word runs hashed per request).
LONG_SYSTEM = {**PLAIN, "messages": [{"role": "system", "content": (
    "You are the support assistant of Acme Bank. Answer in the customer's language, politely and briefly. Never give "
    "investment advice, never reveal internal procedures, and hand the conversation to a human adviser when the "
    "customer asks about a loan, a complaint or a closed account. ") * 2 + "Keep every answer under one hundred "
    "words, cite the relevant page of the help centre when there is one, and never invent a fee or a rate."},
    PLAIN["messages"][1]]}
TOOLS = {**PLAIN, "tools": [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "tool_choice": "auto"}
LOGPROBS = {**PLAIN, "logprobs": True, "top_logprobs": 2}


def _measure(services: Path, body: dict, seconds: float, *mode: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(services)}
    template = ROOT / "deploy/catalog/chat_templates/smollm2.jinja"
    out = subprocess.run([sys.executable, "-c", WORKLOAD, json.dumps(body), str(seconds), str(template), *mode],
                         env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default="8de389e")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--pairs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "base.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), args.baseline, "services"], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        base = Path(tmp) / "services"
        def compare(title: str, body, pairs: int) -> None:
            rows = []
            for i in range(pairs):  # interleaved, alternating which goes first: the machine is shared
                first, second = (base, ROOT / "services") if i % 2 == 0 else (ROOT / "services", base)
                a, b = _measure(first, body, args.seconds), _measure(second, body, args.seconds)
                rows.append((a, b) if i % 2 == 0 else (b, a))
            baseline, current = min(r[0] for r in rows), min(r[1] for r in rows)
            print(title)
            print(f"  baseline {args.baseline}: {baseline:8.1f} µs")
            print(f"  this checkout:    {current:8.1f} µs   ratio {current / baseline:.3f}")

        compare("plain chat request, router CPU (parse, render, sampling, body + 32-chunk stream), best of runs:",
                PLAIN, args.pairs)
        compare("the same with a ~120-word system prompt (the output guard's leak check on):", LONG_SYSTEM,
                max(args.pairs // 2, 2))
        print(f"  with tools (auto): {_measure(ROOT / 'services', TOOLS, args.seconds):8.1f} µs")
        print(f"  with logprobs:     {_measure(ROOT / 'services', LOGPROBS, args.seconds):8.1f} µs (no logprobs in "
              f"the deltas: shaping only)")
        print(f"  reasoning model:   {_measure(ROOT / 'services', PLAIN, args.seconds, 'reasoning'):8.1f} µs (split, "
              f"counted)")


if __name__ == "__main__":
    main()
