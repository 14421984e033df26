"""Every port of the local stack, derived from one base port so several stacks can run side by side."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import NamedTuple

SERVICES = ("auth", "guard", "router", "metering", "catalog")
AUTH_MAX_REPLICAS = 3
TRITON_MAX_REPLICAS = 4
HOST = "127.0.0.1"


class TritonPorts(NamedTuple):
    grpc: int
    http: int
    metrics: int


@dataclass(frozen=True)
class StackPorts:
    base: int

    @property
    def envoy_http(self) -> int:
        return self.base

    @property
    def envoy_admin(self) -> int:
        return self.base + 1

    def service(self, name: str) -> int:
        """gRPC port of one of the five llmaas services."""
        return self.base + 2 + SERVICES.index(name)

    def triton(self, index: int) -> TritonPorts:
        """Ports of Triton replica `index` (1 is the main one, at base + 7..9; the others after the first span)."""
        if index == 1:
            return TritonPorts(self.base + 7, self.base + 8, self.base + 9)
        if not 2 <= index <= TRITON_MAX_REPLICAS:
            raise ValueError(f"Triton replicas are numbered 1 to {TRITON_MAX_REPLICAS}")
        first = self.base + 20 + 3 * (index - 2)
        return TritonPorts(first, first + 1, first + 2)

    @property
    def triton_grpc(self) -> int:
        return self.triton(1).grpc

    @property
    def triton_http(self) -> int:
        return self.triton(1).http

    @property
    def triton_metrics(self) -> int:
        return self.triton(1).metrics

    @property
    def otlp_grpc(self) -> int:
        return self.base + 10

    @property
    def otlp_http(self) -> int:
        return self.base + 11

    @property
    def jaeger_query_http(self) -> int:
        return self.base + 12

    @property
    def jaeger_query_grpc(self) -> int:
        return self.base + 13

    @property
    def jaeger_health(self) -> int:
        return self.base + 14

    @property
    def jaeger_metrics(self) -> int:
        return self.base + 15

    @property
    def metering_metrics(self) -> int:
        """Prometheus metrics of the metering service (HTTP)."""
        return self.base + 18

    def metrics(self, service: str, replica: int = 0) -> int:
        """Prometheus metrics (HTTP) of a service (`replica`: auth's, 0 the main one). Metering's kept its port;
        the others follow the first span, at base + 32 .. 37."""
        if service == "metering":
            return self.metering_metrics
        if service == "auth":
            if not 0 <= replica <= AUTH_MAX_REPLICAS - 1:
                raise ValueError(f"at most {AUTH_MAX_REPLICAS} auth replicas")
            return self.base + 32 + replica
        return self.base + 32 + AUTH_MAX_REPLICAS + ("guard", "router", "catalog").index(service)

    def auth_replica(self, index: int) -> int:
        """gRPC port of auth replica `index` (0 is the main one, at service("auth"))."""
        if index == 0:
            return self.service("auth")
        if not 1 <= index <= AUTH_MAX_REPLICAS - 1:
            raise ValueError(f"at most {AUTH_MAX_REPLICAS} auth replicas")
        return self.base + 15 + index

    def auth_authz_http(self, index: int) -> int:
        """The HTTP port auth replica `index` answers Envoy's ext_authz on (llmaas.auth.ext_authz_http)."""
        if not 0 <= index <= AUTH_MAX_REPLICAS - 1:
            raise ValueError(f"at most {AUTH_MAX_REPLICAS} auth replicas")
        return self.base + 29 + index

    # base + 16 .. base + 17: extra auth replicas; base + 18 metering's metrics; base + 19 reserved; base + 20 .. 28:
    # Triton replicas 2 to 4 (gRPC, HTTP, metrics each); base + 29 .. 31: auth's ext_authz over HTTP (three
    # replicas); base + 32 .. 37: the services' metrics (auth's three replicas, guard, router, catalog); base + 38 .. 39
    # reserved.
    SPAN = 40


def port_taken(port: int) -> bool:
    """True when something listens on 127.0.0.1:`port` (or holds it without SO_REUSEADDR). SO_REUSEADDR here, as
    every component sets it: a port in TIME_WAIT after a stack stopped is free for the next one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False
