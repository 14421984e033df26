"""Every port of the local stack, derived from one base port so several stacks can run side by side."""

from __future__ import annotations

from dataclasses import dataclass

SERVICES = ("auth", "guard", "router", "metering", "catalog")


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

    @property
    def triton_grpc(self) -> int:
        return self.base + 7

    @property
    def triton_http(self) -> int:
        return self.base + 8

    @property
    def triton_metrics(self) -> int:
        return self.base + 9

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

    def auth_replica(self, index: int) -> int:
        """gRPC port of auth replica `index` (0 is the main one, at service("auth"))."""
        if index == 0:
            return self.service("auth")
        if not 1 <= index <= AUTH_MAX_REPLICAS - 1:
            raise ValueError(f"at most {AUTH_MAX_REPLICAS} auth replicas")
        return self.base + 15 + index

    # base + 16 .. base + 17: extra auth replicas; base + 18 metering's metrics; base + 19 is reserved for later.
    SPAN = 20


AUTH_MAX_REPLICAS = 3
