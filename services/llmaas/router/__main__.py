"""python -m llmaas.router — the public API surface: validation, dispatch to Triton, response shaping."""

import asyncio
import os
import socket
from pathlib import Path

from llmaas.common.config import env_int, env_str, grpc_port, internal_secret
from llmaas.common.db import make_engine, migrate
from llmaas.common.server import MAX_MESSAGE_BYTES, run_service, serve
from llmaas.common.service_auth import ROUTER, ServiceCredentials
from llmaas.router import metrics
from llmaas.router.batch.api import BatchApi
from llmaas.router.batch.crypto import KeyRing, load_master_key
from llmaas.router.batch.files import DEFAULT_RETENTION_SECONDS, FileVault
from llmaas.router.batch.lines import MAX_UPLOAD_BYTES
from llmaas.router.batch.store import Store
from llmaas.router.batch.worker import BatchWorker
from llmaas.router.downstream import Downstream
from llmaas.router.embeddings import EmbeddingService
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
    embeddings = EmbeddingService(pipeline)
    batches, worker_task = await files_and_batches(pipeline, embeddings)

    def register(server):
        router_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(pipeline, status, batches, embeddings),
                                                            server)
        return [router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name]

    async def on_stop():
        watcher.cancel()
        if worker_task is not None:
            worker_task.cancel()
        await pipeline.drain()
        await replicas.close()
        await downstream.close()

    # A file upload (google.api.HttpBody: its bytes and a few more) can be larger than a JSON body's protobuf.
    await serve("router", grpc_port(), register, on_stop=on_stop,
                max_message_bytes=max(MAX_MESSAGE_BYTES, MAX_UPLOAD_BYTES + 64 * 1024))


async def files_and_batches(pipeline: ChatPipeline, embeddings: EmbeddingService):
    """The Files and Batch API and its worker (llmaas.router.batch), when the router has a database for them
    (LLMAAS_ROUTER_DATABASE_URL; `llmaas up` gives it one in the data directory)."""
    url = os.environ.get("LLMAAS_ROUTER_DATABASE_URL")
    if not url:
        return None, None
    engine = make_engine(url)
    await asyncio.to_thread(migrate, engine, Path(__file__).parent / "batch" / "migrations")
    store = Store(engine)
    keys = KeyRing(load_master_key(Path(env_str("LLMAAS_FILES_KEY_FILE"))))
    vault = FileVault(Path(env_str("LLMAAS_FILES_DIR")), keys, store,
                      env_int("LLMAAS_FILES_RETENTION_SECONDS", DEFAULT_RETENTION_SECONDS))
    # Stable for this router's address: restarted after a kill, it takes its batches back at once.
    owner = env_str("LLMAAS_BATCH_WORKER_ID", f"{socket.gethostname()}:{grpc_port()}")
    worker = BatchWorker(store, vault, pipeline, embeddings, owner=owner,
                         concurrency=env_int("LLMAAS_BATCH_CONCURRENCY", 4),
                         yield_to=env_int("LLMAAS_BATCH_CONCURRENCY_UNDER_LOAD", 0),
                         max_batches=env_int("LLMAAS_BATCH_MAX_BATCHES", 4))
    return BatchApi(pipeline, store, vault, worker), asyncio.create_task(worker.run())


def main() -> None:
    run_service(run())


if __name__ == "__main__":
    main()
