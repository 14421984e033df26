"""python -m llmaas.catalog — the catalogue service."""

import asyncio
import os
from pathlib import Path

from llmaas.catalog.reload import CatalogSource
from llmaas.catalog.served import ServedModels
from llmaas.catalog.servicer import CatalogServicer
from llmaas.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from llmaas.common.config import ConfigError, env_str, grpc_port, internal_secret
from llmaas.common.server import serve


async def run() -> None:
    paths = [Path(p) for p in env_str("LLMAAS_CATALOG_FILES").split(os.pathsep) if p]
    try:
        source = CatalogSource(paths)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    watcher = asyncio.create_task(source.watch())
    served = ServedModels(env_str("LLMAAS_TRITON_GRPC"))  # inside the loop: its gRPC channel belongs to it

    def register(server):
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(source, served, internal_secret()), server)
        return [catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name]

    async def on_stop():
        watcher.cancel()
        await served.close()

    await serve("catalog", grpc_port(), register, on_stop=on_stop)


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
