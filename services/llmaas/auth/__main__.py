"""python -m llmaas.auth — the auth service (ext_authz for Envoy + llmaas.auth.v1.AuthService)."""

import asyncio
from pathlib import Path

from envoy.service.auth.v3 import external_auth_pb2_grpc

from llmaas.auth.ext_authz import ExtAuthzServicer
from llmaas.auth.servicer import AuthServicer
from llmaas.auth.store import KeyStore
from llmaas.auth.v1 import auth_pb2, auth_pb2_grpc
from llmaas.common.config import env_str, grpc_port
from llmaas.common.db import make_engine, migrate
from llmaas.common.server import serve


def main() -> None:
    engine = make_engine(env_str("LLMAAS_AUTH_DATABASE_URL"))
    migrate(engine, Path(__file__).parent / "migrations")
    store = KeyStore(engine)
    admin_token = env_str("LLMAAS_ADMIN_TOKEN")

    def register(server):
        auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(store, admin_token), server)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(ExtAuthzServicer(store), server)
        return [auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name, "envoy.service.auth.v3.Authorization"]

    asyncio.run(serve("auth", grpc_port(), register))


if __name__ == "__main__":
    main()
