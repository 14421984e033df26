"""Several choices in one request: chat's `n`, and /v1/completions' `n` and its array of prompts.

Each choice is its own backend generation, a child run of the request's (llmaas.router.pipeline.ChatRun): its own
prompt (the completions' prompt it answers), sampling seed, answer shaping and output guard, and its own usage. The
request keeps one guard verdict, one reservation (covering every choice: n times max_tokens, every prompt), one
settlement and one audit record, with the children's usage summed: every choice's completion tokens, each prompt's
tokens once (as OpenAI and vLLM count `n`). Choices are numbered as OpenAI does: prompt p's j-th is p * n + j.

A seed set by the client becomes seed + j for the j-th choice of a prompt: the choices differ, and the same request
gives the same choices again (vLLM's own `n` draws them from one seeded generator, which no backend call exposes).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing

from llmaas.common.errors import internal_error


def split(run, prompts: Sequence[str], n: int, fresh_output: Callable) -> list:
    """The children of `run`: n per prompt, in OpenAI's order. `fresh_output(child)`: what a child gets of its own
    (answer shaping, output guard), set on it."""
    children = []
    for p, prompt in enumerate(prompts):
        params = run.params
        if len(prompts) > 1:  # /v1/completions: the child answers its own prompt (echo, logprobs offsets)
            message = params.messages[p]
            params = dataclasses.replace(params, messages=(message,), prompt_bytes=message.size)
        for j in range(n):
            sampling = dict(run.sampling)
            if "seed" in sampling:
                sampling["seed"] = sampling["seed"] + j
            child = dataclasses.replace(
                run, request_id=f"{run.request_id}.{p * n + j}", params=params, prompt=prompt, sampling=sampling,
                usage=type(run.usage)(), finish_reason=None, error=None, outcome=None, finished=False,
                prompt_checked=False, first_token=0.0, choices=(), prompt_index=p)
            fresh_output(child)
            children.append(child)
    return children


def sum_usage(run) -> None:
    """The request's usage from its children's: completion and reasoning tokens summed, each prompt's tokens once
    (the largest count its choices reported: a choice cancelled before its first response reports none)."""
    usage = type(run.usage)()
    prompts: dict[int, int] = {}
    for child in run.choices:
        prompts[child.prompt_index] = max(prompts.get(child.prompt_index, 0), child.usage.prompt_tokens)
        usage.completion_tokens += child.usage.completion_tokens
        usage.reasoning_tokens += child.usage.reasoning_tokens
    usage.prompt_tokens = sum(prompts.values())
    run.usage = usage
    run.first_token = min((c.first_token for c in run.choices if c.first_token), default=0.0)
    outcomes = {c.outcome for c in run.choices}
    run.outcome = ("failed" if "failed" in outcomes or run.error is not None else
                   "completed" if outcomes == {"completed"} else None)
    if run.error is None:  # the error the client got (run_choices sets it), else a failed choice's
        run.error = next((c.error for c in run.choices if c.error is not None), None)
    finishes = [c.finish_reason for c in run.choices if c.finish_reason]
    run.finish_reason = finishes[0] if finishes else None


async def merge(children: Sequence, generate: Callable[[object], AsyncIterator]) -> AsyncIterator[tuple[int, object]]:
    """Every child's deltas as they come, tagged with the child's index. The first error of any child is raised
    (after what came before it), and the other children are stopped; closing the iterator stops them all (their
    generators see a cancellation, as a client leaving a single-choice stream). A child cancelled by anything but
    this (a cancelled backend call surfaces as a cancellation) fails the request: it never leaves merge waiting."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()
    stopping = False

    async def pump(index: int, child) -> None:
        try:
            async with aclosing(generate(child)) as deltas:
                async for delta in deltas:
                    queue.put_nowait((index, delta))
        except asyncio.CancelledError:
            if stopping:
                raise
            queue.put_nowait((index, internal_error()))
            return
        except Exception as e:  # noqa: BLE001 - handed to the consumer, in order
            queue.put_nowait((index, e))
            return
        queue.put_nowait((index, done))

    tasks = [asyncio.ensure_future(pump(i, child)) for i, child in enumerate(children)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
