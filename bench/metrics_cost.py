"""What the metrics add per request, in microseconds of CPU: everything one chat request records (the gRPC
interceptor on the router's RPC and the four calls it makes to auth, guard and metering: wrapping the handler,
counting and timing the call,
the router's request/TTFT/rate/traffic observations, ext_authz's and the guard's counters, metering's refusal path
left out: a refusal is not the common case), against an empty loop of the same shape (the baseline) in one run.

    .venv/bin/python -m bench.metrics_cost [--requests 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
from llmaas.auth import metrics as auth_metrics
from llmaas.common.metrics import MetricsInterceptor
from llmaas.guard import metrics as guard_metrics
from llmaas.router import metrics as router_metrics

METHODS = ("/llmaas.router.v1.RouterService/ChatCompletionsHttp", "/envoy.service.auth.v3.Authorization/Check",
           "/llmaas.guard.v1.GuardInternalService/CheckPrompt", "/llmaas.metering.v1.MeteringInternalService/Reserve",
           "/llmaas.metering.v1.MeteringInternalService/SettleBatch")


class _Call:
    def __init__(self, method: str) -> None:
        self.method = method


async def _behavior(request, context):
    return request


_HANDLER = grpc.unary_unary_rpc_method_handler(_behavior)
_CALLS = [_Call(m) for m in METHODS]


async def _continuation(details):
    return _HANDLER


async def one_request(interceptors: list[MetricsInterceptor], i: int) -> None:
    started = time.perf_counter()
    for interceptor, call in zip(interceptors, _CALLS, strict=True):
        handler = await interceptor.intercept_service(_continuation, call)
        await handler.unary_unary(i, None)
    auth_metrics.allowed()
    guard_metrics.verdict("allow", "enforce", [])
    router_metrics.chat_ended("smollm2:135m", "completed", started, started + 0.01, 16, True)
    router_metrics.request_ended("POST /v1/chat/completions", "smollm2:135m", 200, "", started)


async def baseline(interceptors: list[MetricsInterceptor], i: int) -> None:
    """The same calls without the interceptor."""
    for _call in _CALLS:
        handler = await _continuation(_call)
        await handler.unary_unary(i, None)


def measure(fn, n: int) -> float:
    interceptors = [MetricsInterceptor(name) for name in ("router", "auth", "guard", "metering", "metering")]

    async def run() -> float:
        t0 = time.process_time()
        for i in range(n):
            await fn(interceptors, i)
        return (time.process_time() - t0) / n * 1e6

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    n = parser.parse_args().requests
    measure(one_request, 1000)  # label children created, caches warm
    base, cost = measure(baseline, n), measure(one_request, n)
    print(f"{n} requests: baseline {base:.2f} us (5 bare handler calls), with metrics {cost:.2f} us: metrics add "
          f"{cost - base:.2f} us of CPU per chat request (all processes together), ratio {cost / base:.1f}x")


if __name__ == "__main__":
    main()
