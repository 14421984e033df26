"""python -m llmaas.guard — the prompt security service."""

import asyncio

from llmaas.common.config import ConfigError, env_float, env_str, grpc_port
from llmaas.common.server import serve
from llmaas.guard.servicer import BLOCK_THRESHOLD, GuardServicer
from llmaas.guard.v1 import guard_pb2, guard_pb2_grpc

_MODES = {"enforce": guard_pb2.GUARD_MODE_ENFORCE, "shadow": guard_pb2.GUARD_MODE_SHADOW, "off": guard_pb2.GUARD_MODE_OFF}


def main() -> None:
    mode_name = env_str("LLMAAS_GUARD_MODE", "enforce")
    if mode_name not in _MODES:
        raise ConfigError(f"LLMAAS_GUARD_MODE must be one of {sorted(_MODES)}")
    servicer = GuardServicer(_MODES[mode_name], env_float("LLMAAS_GUARD_THRESHOLD", BLOCK_THRESHOLD))

    def register(server):
        guard_pb2_grpc.add_GuardServiceServicer_to_server(servicer, server)
        return [guard_pb2.DESCRIPTOR.services_by_name["GuardService"].full_name]

    asyncio.run(serve("guard", grpc_port(), register))


if __name__ == "__main__":
    main()
