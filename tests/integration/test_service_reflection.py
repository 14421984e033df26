"""gRPC reflection only where configured: a real service process (metering, the lightest) serves it when
LLMAAS_GRPC_REFLECTION is set (`llmaas up --grpc-reflection`) and not otherwise, and its internal service still
refuses a caller without a credential either way."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from llmaas.common.server import REFLECTION_ENV
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc
from llmaas.stack.component import Component
from llmaas.stack.services import grpc_healthy

from tests.support.ports import free_base_port
from tests.support.process import running_component

pytestmark = pytest.mark.integration


def _metering(data_dir: Path, port: int, reflection: bool) -> Component:
    env = {"LLMAAS_GRPC_PORT": str(port), "LLMAAS_METERING_DATABASE_URL": f"sqlite:///{data_dir / 'm.db'}",
           "LLMAAS_ADMIN_TOKEN": "admin", "LLMAAS_INTERNAL_SECRET": "s" * 48, "PYTHONUNBUFFERED": "1"}
    if reflection:
        env[REFLECTION_ENV] = "1"
    return Component(name="metering", argv=[sys.executable, "-m", "llmaas.metering"], env=env,
                     ready=lambda: grpc_healthy(f"127.0.0.1:{port}"))


def _services(address: str) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                timeout=10))
    return [s.name for s in answer.list_services_response.service]


@pytest.mark.parametrize("reflection", [False, True], ids=["default", "configured"])
def test_reflection_only_where_configured(tmp_path, reflection):
    port = free_base_port(span=1)
    address = f"127.0.0.1:{port}"
    with running_component(_metering(tmp_path, port, reflection), tmp_path):
        if reflection:
            assert {"llmaas.metering.v1.MeteringService", "llmaas.metering.v1.MeteringInternalService"} \
                <= set(_services(address))
        else:
            with pytest.raises(grpc.RpcError) as e:
                _services(address)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as e:
            metering_pb2_grpc.MeteringInternalServiceStub(channel).Reserve(
                metering_pb2.ReserveRequest(request_id="r", tenant_id="t"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
