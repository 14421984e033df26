"""The asyncio KServe v2 gRPC client to one Triton server, as the catalog (polls, reloads) and the router (inference)
use it.

A Triton server restarts (a crash, a deploy) or starts after the services: gRPC's default reconnect backoff grows to
two minutes, long after the server is back. These clients try again at least every second.
"""

from __future__ import annotations

import grpc
import tritonclient.grpc.aio as triton_aio

_FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 1000)]


def triton_client(address: str) -> triton_aio.InferenceServerClient:
    return triton_aio.InferenceServerClient(url=address, channel_args=_FAST_RECONNECT)


def triton_channel(address: str) -> grpc.aio.Channel:
    """A bare channel for the KServe v2 stub (the router's inference path), with the same reconnects and no message
    size limit below Triton's own (as tritonclient sets it)."""
    return grpc.aio.insecure_channel(address, options=[*_FAST_RECONNECT, ("grpc.max_send_message_length", -1),
                                                       ("grpc.max_receive_message_length", -1)])
