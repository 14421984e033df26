"""What authenticating internal calls costs (llmaas.common.service_auth), per call.

    .venv/bin/python -m bench.service_auth [--calls 3000] [--rounds 3]

- the pieces, timed alone: the caller's credential (ServiceCredentials.metadata: a dictionary lookup, no signing),
  the interceptor's check of it (a cached verification), the end user's identity check of a tenant-bound call
  (an HMAC and a JSON decode), and a verification the interceptor has not cached yet;
- the whole, on a real grpc.aio server in this process (servicers that answer at once, so only the checks cost): CPU of this process
  (client and server) per call, interleaved rounds, medians, for a call without the interceptor, a public call
  through it, an internal call with the credential only, and a tenant-bound call with both headers (as the router
  makes them).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import timeit

import grpc
from llmaas.common.identity import IDENTITY_HEADER, Identity, Quota, decode_identity, encode_identity
from llmaas.common.server import ErrorInterceptor
from llmaas.common.service_auth import (
    ROUTER,
    TENANT_BOUND,
    ServiceAuthInterceptor,
    ServiceCredentials,
    _headers,
    mint_service_token,
    verify_service_token,
)
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc

SECRET = "bench-internal-secret-0123456789abcdef-0123456789"
QUOTAS = (Quota(60, 1000, 100000), Quota(86400, 0, 10**9))
RESERVE = "/llmaas.metering.v1.MeteringInternalService/Reserve"


def _request(rid: str) -> metering_pb2.ReserveRequest:
    return metering_pb2.ReserveRequest(request_id=rid, tenant_id="tenant", key_id="key", model="m", quotas=[
        metering_pb2.Quota(window_seconds=q.window_seconds, max_requests=q.max_requests, max_tokens=q.max_tokens)
        for q in QUOTAS])


def pieces() -> None:
    credentials = ServiceCredentials(ROUTER, SECRET)
    interceptor = ServiceAuthInterceptor("metering", SECRET)
    service = credentials.metadata("metering")
    signed = encode_identity(Identity("tenant", "key", quotas=QUOTAS), SECRET, request_id="r1")
    md = (*service, (IDENTITY_HEADER, signed), ("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-00"))
    request = _request("r1")
    token = service[0][1]
    interceptor.caller(md)
    n = 20000
    rows = {
        "credential on the caller (ServiceCredentials.metadata)": lambda: credentials.metadata("metering"),
        "credential check (cached verification)": lambda: interceptor.caller(md),
        "credential check, not cached (HMAC + JSON)": lambda: verify_service_token(token, "metering", SECRET),
        "identity check of a tenant-bound call (HMAC + JSON + compare)":
            lambda: TENANT_BOUND[RESERVE](request, decode_identity(_headers(md)[1], SECRET)),
        "signing an identity (router, direct gRPC caller; once per request)":
            lambda: encode_identity(Identity("tenant", "key", quotas=QUOTAS), SECRET, request_id="r1"),
        "minting a service token (once per audience per 5 min)":
            lambda: mint_service_token(ROUTER, "metering", SECRET),
    }
    for name, fn in rows.items():
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n
        print(f"  {name}: {best * 1e6:.2f} us")


class _Fake(metering_pb2_grpc.MeteringInternalServiceServicer, metering_pb2_grpc.MeteringServiceServicer):
    """Answers at once (a benchmark stand-in)."""

    async def Reserve(self, request, context):
        return metering_pb2.ReserveResponse(granted=True)

    async def ListTiers(self, request, context):
        return metering_pb2.ListTiersResponse()


# (name, interceptor installed, what the client sends): a public call, an internal one, a tenant-bound one.
VARIANTS = {
    "baseline: Reserve, ErrorInterceptor alone, no headers": (False, ""),
    "public call (ListTiers) through the interceptor": (True, "public"),
    "Reserve with the credential, identity check skipped": (True, "credential"),
    "Reserve with the credential and the identity (as the router)": (True, "bound"),
}


async def _round(with_auth: bool, sends: str, calls: int) -> float:
    interceptors = [ErrorInterceptor(), ServiceAuthInterceptor("metering", SECRET)] if with_auth \
        else [ErrorInterceptor()]
    if sends == "credential":  # the same interceptor without Reserve's identity binding
        TENANT_BOUND.pop(RESERVE)
    server = grpc.aio.server(interceptors=interceptors)
    metering_pb2_grpc.add_MeteringInternalServiceServicer_to_server(_Fake(), server)
    metering_pb2_grpc.add_MeteringServiceServicer_to_server(_Fake(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    credentials = ServiceCredentials(ROUTER, SECRET)
    # Signed beforehand: the router forwards the identity it already has (ext_authz's, or its own).
    signed = [encode_identity(Identity("tenant", "key", quotas=QUOTAS), SECRET, request_id=f"r{i}")
              for i in range(calls)]
    requests = [_request(f"r{i}") for i in range(calls)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            internal = metering_pb2_grpc.MeteringInternalServiceStub(channel)
            public = metering_pb2_grpc.MeteringServiceStub(channel)

            async def one(i: int) -> None:
                if sends == "public":
                    await public.ListTiers(metering_pb2.ListTiersRequest())
                elif sends == "":
                    await internal.Reserve(requests[i])
                else:
                    md = credentials.metadata("metering")
                    await internal.Reserve(requests[i], metadata=(*md, (IDENTITY_HEADER, signed[i]))
                                           if sends == "bound" else md)

            for _ in range(200):  # warm-up
                await one(0)
            c0 = time.process_time()
            for i in range(calls):
                await one(i)
            return (time.process_time() - c0) / calls
    finally:
        await server.stop(None)
        if sends == "credential":
            TENANT_BOUND[RESERVE] = _BOUND


_BOUND = TENANT_BOUND[RESERVE]


async def whole(calls: int, rounds: int) -> None:
    """Interleaved rounds; medians."""
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, (with_auth, sends) in VARIANTS.items():
            cpu[name].append(await _round(with_auth, sends, calls))
    base = statistics.median(cpu[next(iter(VARIANTS))])
    for name, values in cpu.items():
        m = statistics.median(values)
        print(f"  {name}: {m * 1e3:.3f} ms ({(m - base) * 1e6:+.0f} us)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("pieces (best of 5):")
    pieces()
    print("whole call (in-process grpc.aio):")
    asyncio.run(whole(args.calls, args.rounds))


if __name__ == "__main__":
    main()
