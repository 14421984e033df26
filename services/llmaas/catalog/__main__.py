"""python -m llmaas.catalog — the catalogue service."""

import asyncio
import os
from pathlib import Path

from llmaas.catalog.pools import Pools
from llmaas.catalog.reload import CatalogSource
from llmaas.catalog.served import ServedModels
from llmaas.catalog.servicer import CatalogServicer
from llmaas.catalog.status import ServingHistory, sample_forever
from llmaas.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from llmaas.catalog.watch import Revisions
from llmaas.common.config import ConfigError, env_str, grpc_port, internal_secret
from llmaas.common.server import run_service, serve


async def run() -> None:
    paths = [Path(p) for p in env_str("LLMAAS_CATALOG_FILES").split(os.pathsep) if p]
    revisions = Revisions()  # pushed to the router (WatchCatalog), whose resolution cache it invalidates
    try:
        source = CatalogSource(paths, on_change=lambda: revisions.bump("catalogue reloaded"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        pools = Pools.parse(os.environ["LLMAAS_TRITON_POOLS"]) if os.environ.get("LLMAAS_TRITON_POOLS") \
            else Pools.single(env_str("LLMAAS_TRITON_GRPC"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # Inside the loop: its gRPC channels belong to it. Only models the catalogue in force references are reloaded.
    served = ServedModels(pools, on_change=lambda: revisions.bump("served models changed"),
                          wanted=lambda: frozenset(m.triton_model for m in source.current.models if m.triton_model))
    history = ServingHistory()  # the availability the public status shows (llmaas.catalog.status)
    watchers = [asyncio.create_task(source.watch()), asyncio.create_task(served.watch()),
                asyncio.create_task(sample_forever(history, served, lambda: source.current))]

    def register(server):
        servicer = CatalogServicer(source, served, internal_secret(), revisions, history)
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(servicer, server)
        catalog_pb2_grpc.add_CatalogInternalServiceServicer_to_server(servicer, server)
        return [catalog_pb2.DESCRIPTOR.services_by_name[name].full_name
                for name in ("CatalogService", "CatalogInternalService")]

    async def on_stop():
        for watcher in watchers:
            watcher.cancel()
        await served.close()

    await serve("catalog", grpc_port(), register, on_stop=on_stop, on_drain=revisions.close, ready=served.known)


def main() -> None:
    run_service(run())


if __name__ == "__main__":
    main()
