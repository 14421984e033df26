"""python -m llmaas.router — the public API surface: validation, dispatch to Triton, response shaping."""

import asyncio

from llmaas.common.config import env_str, grpc_port, internal_secret
from llmaas.common.server import run_service, serve
from llmaas.common.service_auth import ROUTER, ServiceCredentials
from llmaas.router import metrics
from llmaas.router.downstream import Downstream
from llmaas.router.model_cache import CatalogWatcher, ModelCache
from llmaas.router.pipeline import ChatPipeline
from llmaas.router.replicas import ReplicaPool
from llmaas.router.servicer import RouterServicer
from llmaas.router.status import StatusPage
from llmaas.router.v1 import router_pb2, router_pb2_grpc


async def run() -> None:
    # Clients are made inside the running loop: grpc.aio channels belong to the loop that creates them.
    cache = ModelCache()
    downstream = Downstream(
        auth=env_str("LLMAAS_AUTH_ADDR"), guard=env_str("LLMAAS_GUARD_ADDR"),
        catalog=env_str("LLMAAS_CATALOG_ADDR"), metering=env_str("LLMAAS_METERING_ADDR"),
        credentials=ServiceCredentials(ROUTER, internal_secret()), model_cache=cache)
    # Subscribes the resolution cache to the catalog's revisions (uncached until the first one arrives).
    watcher = asyncio.create_task(CatalogWatcher(downstream.watch_catalog, cache).run())
    # The Triton replicas come from the catalog with each resolution (its routing table).
    replicas = ReplicaPool(on_model_failure=downstream.report_replica_failure)
    pipeline = ChatPipeline(downstream, replicas, internal_secret())
    metrics.watch_replicas(replicas.breaker_states)
    status = StatusPage(downstream.serving_status)

    def register(server):
        router_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(pipeline, status), server)
        return [router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name]

    async def on_stop():
        watcher.cancel()
        await pipeline.drain()
        await replicas.close()
        await downstream.close()

    await serve("router", grpc_port(), register, on_stop=on_stop)


def main() -> None:
    run_service(run())


if __name__ == "__main__":
    main()
