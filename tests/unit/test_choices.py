"""Several choices in one request (llmaas.router.choices): one generation per choice with its own seed and prompt,
merged as they come; one settlement and one audit record for the request, completion tokens summed, each prompt's
tokens once; a failing choice stops the others, a client leaving stops them all, and what was produced is billed."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import aclosing

import pytest
from google.protobuf import json_format
from llmaas.common.errors import ApiError
from llmaas.router import choices
from llmaas.router import openai_json as oj
from llmaas.router.kserve import Delta
from llmaas.router.params import parse_chat_request
from llmaas.router.pipeline import ChatPipeline
from llmaas.router.v1 import router_pb2

from tests.unit.test_router_settlement import SlowReplica, make


def params(**body):
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return parse_chat_request(json_format.ParseDict(body, router_pb2.CreateChatCompletionRequest()))


def with_choices(replica: SlowReplica, n: int, *, stream: bool = False, seed: int | None = None, prompts=("p",)):
    pipeline, run, downstream = make({"r1:1": replica}, stream=stream)
    run.params = params(n=n, stream=stream, **({"seed": seed} if seed is not None else {}))
    run.sampling = {"max_tokens": 16, **({"seed": seed} if seed is not None else {})}
    run.choices = tuple(choices.split(run, list(prompts), n, ChatPipeline._own_output))
    return pipeline, run, downstream


def test_each_choice_has_its_own_seed_request_id_and_state():
    _, run, _ = with_choices(SlowReplica("r1:1"), 3, seed=41)
    assert [c.sampling["seed"] for c in run.choices] == [41, 42, 43] and run.sampling["seed"] == 41
    assert [c.request_id for c in run.choices] == ["req-1.0", "req-1.1", "req-1.2"]
    assert len({id(c.usage) for c in run.choices} | {id(run.usage)}) == 4
    assert all(c.choices == () and c.id == run.id for c in run.choices)


def test_several_prompts_are_answered_n_times_each_in_openais_order():
    _, run, _ = make({"r1:1": SlowReplica("r1:1")}, stream=False)
    run.params = dataclasses.replace(params(n=2), raw_prompt=True, messages=params(
        messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "bb"}]).messages)
    children = choices.split(run, ["a", "bb"], 2, lambda child: None)
    assert [(c.prompt, c.prompt_index, c.params.messages[0].content) for c in children] == [
        ("a", 0, "a"), ("a", 0, "a"), ("bb", 1, "bb"), ("bb", 1, "bb")]
    for child, (prompt_tokens, completion) in zip(children, [(3, 5), (3, 4), (0, 0), (6, 2)], strict=True):
        child.usage.prompt_tokens, child.usage.completion_tokens, child.outcome = prompt_tokens, completion, "completed"
    run.choices = tuple(children)
    choices.sum_usage(run)
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.outcome) == (9, 11, "completed")


async def test_a_request_with_three_choices_is_settled_and_recorded_once_for_all_of_them():
    pipeline, run, downstream = with_choices(SlowReplica("r1:1", tokens=5), 3)
    per_choice = await pipeline.collect(run)
    assert [len(deltas) for deltas in per_choice] == [5, 5, 5]
    body = oj.completion_of(run, per_choice)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] == "xxxxx" and c["finish_reason"] == "length" for c in body["choices"])
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 15, "total_tokens": 22}
    pipeline.finish(run)
    await pipeline.drain()
    assert [(s.request_id, s.prompt_tokens, s.completion_tokens, s.outcome) for s in downstream.settled] == [
        ("req-1", 7, 15, "completed")]
    assert [(r.request_id, r.status, r.completion_tokens) for r in downstream.recorded] == [("req-1", 200, 15)]


async def test_the_choices_are_generated_at_once():
    pipeline, run, _ = with_choices(SlowReplica("r1:1", tokens=10), 4, stream=True)
    started = asyncio.get_running_loop().time()
    order = []
    async with aclosing(pipeline.run_choices(run)) as merged:
        async for index, _ in merged:
            order.append(index)
    assert sorted(order) == sorted([0, 1, 2, 3] * 10)
    assert order[:4] != [0, 0, 0, 0]  # interleaved, as they come
    assert asyncio.get_running_loop().time() - started < 0.35  # 10 tokens of 10 ms each, not 4 x 10 in a row


async def test_a_failing_choice_ends_the_request_and_bills_what_was_produced():
    pipeline, run, downstream = with_choices(SlowReplica("r1:1", tokens=20, fail_after=6), 2, stream=True)
    seen = 0
    with pytest.raises(Exception):  # noqa: B017 - the backend's error, whatever the pool makes of it
        async with aclosing(pipeline.run_choices(run)) as merged:
            async for _ in merged:
                seen += 1
    pipeline.finish(run)
    await pipeline.drain()
    [settled] = downstream.settled
    assert settled.outcome == "failed" and settled.completion_tokens >= 6 and seen >= 6
    assert [r.status for r in downstream.recorded] != [200]


async def test_a_client_leaving_stops_every_choice_and_is_billed_for_what_was_produced():
    pipeline, run, downstream = with_choices(SlowReplica("r1:1", tokens=50), 3, stream=True)

    async def consume():
        async with aclosing(pipeline.run_choices(run)) as merged:
            async for _ in merged:
                pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pipeline.finish(run)
    await pipeline.drain()
    [settled] = downstream.settled
    assert settled.outcome == "cancelled" and 3 <= settled.completion_tokens < 150
    await asyncio.sleep(0.05)
    produced = run.usage.completion_tokens
    choices.sum_usage(run)
    assert run.usage.completion_tokens == produced  # nothing runs on after the client left


async def test_a_streamed_choice_ends_with_its_own_finish_chunk():
    _, run, _ = with_choices(SlowReplica("r1:1"), 2, stream=True)
    child = run.choices[1]
    child.finish_reason = "length"
    events = oj.choice_events(child, 1, Delta("x", "length", 7, 1, True)).split(b"\n\n")
    parsed = [json_format.Parse(e[len(b"data: "):], router_pb2.StreamChatCompletionResponse(),
                                ignore_unknown_fields=True) for e in events if e]
    assert [(c.choices[0].index, c.choices[0].delta.content, c.choices[0].finish_reason) for c in parsed] == [
        (1, "x", ""), (1, "", "length")]


async def test_a_choice_cancelled_under_it_fails_the_request_instead_of_hanging_it():
    async def generate(child):
        if child == "b":
            raise asyncio.CancelledError()  # what grpc.aio raises for a backend call cancelled locally
        for i in range(3):
            await asyncio.sleep(0.01)
            yield i

    seen = []
    with pytest.raises(ApiError) as e:
        async with aclosing(choices.merge(["a", "b"], generate)) as merged:
            async with asyncio.timeout(2):
                async for item in merged:
                    seen.append(item)
    assert e.value.status.name == "INTERNAL"


async def test_the_error_the_client_got_is_the_one_audited():
    pipeline, run, downstream = with_choices(SlowReplica("r1:1", tokens=20, fail_after=3), 2, stream=True)
    with pytest.raises(ApiError) as e:
        async with aclosing(pipeline.run_choices(run)) as merged:
            async for _ in merged:
                pass
    pipeline.finish(run)
    await pipeline.drain()
    assert run.error is e.value and downstream.recorded[0].status == e.value.http_status
