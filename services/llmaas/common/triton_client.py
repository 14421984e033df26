"""The asyncio KServe v2 gRPC client to one Triton server, as the catalog (polls, reloads) and the router (inference)
use it.

A Triton server restarts (a crash, a deploy) or starts after the services: gRPC's default reconnect backoff grows to
two minutes, long after the server is back. These clients try again at least every second.
"""

from __future__ import annotations

import tritonclient.grpc.aio as triton_aio

_FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 1000)]


def triton_client(address: str) -> triton_aio.InferenceServerClient:
    return triton_aio.InferenceServerClient(url=address, channel_args=_FAST_RECONNECT)
