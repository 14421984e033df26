"""python -m llmaas.metering — the metering service."""

import asyncio
from pathlib import Path

from llmaas.common.config import env_str, grpc_port
from llmaas.common.db import make_engine, migrate
from llmaas.common.server import serve
from llmaas.metering.ledger import Ledger
from llmaas.metering.servicer import MeteringServicer
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc


def main() -> None:
    engine = make_engine(env_str("LLMAAS_METERING_DATABASE_URL"))
    migrate(engine, Path(__file__).parent / "migrations")
    servicer = MeteringServicer(Ledger(engine))

    def register(server):
        metering_pb2_grpc.add_MeteringServiceServicer_to_server(servicer, server)
        return [metering_pb2.DESCRIPTOR.services_by_name["MeteringService"].full_name]

    asyncio.run(serve("metering", grpc_port(), register))


if __name__ == "__main__":
    main()
