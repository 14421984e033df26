"""python -m llmaas.auth — the auth service (ext_authz for Envoy + llmaas.auth.v1.AuthService).

Several replicas may run against one database: verification caches expire within VERIFY_CACHE_SECONDS, audit appends
serialise in the database, and an automatic rotation is claimed by exactly one replica.
"""

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from envoy.service.auth.v3 import external_auth_pb2_grpc

from llmaas.auth import abuse
from llmaas.auth.audit import DURABILITY_BOUND, AuditLog, AuditRecord, AuditStore
from llmaas.auth.authorizer import Authorizer
from llmaas.auth.ext_authz import ExtAuthzServicer
from llmaas.auth.ext_authz_http import ExtAuthzHttpServer
from llmaas.auth.sealed import Sealer
from llmaas.auth.servicer import AuthServicer
from llmaas.auth.sso import SsoVerifier
from llmaas.auth.store import KeyStore
from llmaas.auth.v1 import auth_pb2, auth_pb2_grpc
from llmaas.common.config import ConfigError, env_float, env_int, env_str, grpc_port, internal_secret
from llmaas.common.db import make_engine, migrate
from llmaas.common.server import run_service, serve

log = logging.getLogger("llmaas.auth")


async def rotate_periodically(store: KeyStore, audit: AuditLog, every_seconds: float) -> None:
    """Automatic key rotation: the new secret waits, sealed, for the tenant's admin to retrieve it once."""
    while True:
        try:
            for record in await asyncio.to_thread(store.rotate_due):
                await audit.append(AuditRecord(tenant_id=record.tenant_id, key_id=record.id, actor="scheduler",
                                               action="key.auto_rotate", endpoint="scheduler", status=200))
                log.info("key rotated automatically", extra={"fields": {"key_id": record.id}})
        except Exception as e:  # a database hiccup: try again next round
            log.error("automatic rotation failed", extra={"fields": {"error": type(e).__name__}})
        await asyncio.sleep(every_seconds)


def _sso() -> SsoVerifier | None:
    """Admin sign-in with OIDC JWTs, when an identity provider is configured."""
    url = os.environ.get("LLMAAS_ADMIN_JWKS_URL", "")
    if not url:
        return None
    return SsoVerifier(url, env_str("LLMAAS_ADMIN_JWT_ISSUER"), env_str("LLMAAS_ADMIN_JWT_AUDIENCE"))


def _failure_limits(audit: AuditLog) -> tuple[abuse.FailureLimiter, abuse.DenialTally]:
    """Failed authentications: the per-address budget and the window their audit records aggregate."""
    rate = env_float("LLMAAS_AUTH_FAILURE_RATE", abuse.FAILURE_RATE)
    burst = env_int("LLMAAS_AUTH_FAILURE_BURST", abuse.FAILURE_BURST)
    addresses = env_int("LLMAAS_AUTH_FAILURE_ADDRESSES", abuse.MAX_ADDRESSES)
    window = env_float("LLMAAS_AUTH_DENIED_AUDIT_WINDOW_SECONDS", abuse.DENIED_WINDOW)
    if rate <= 0 or burst < 1 or addresses < 1 or window <= 0:
        raise ConfigError("LLMAAS_AUTH_FAILURE_RATE and LLMAAS_AUTH_DENIED_AUDIT_WINDOW_SECONDS must be positive, "
                          "LLMAAS_AUTH_FAILURE_BURST and LLMAAS_AUTH_FAILURE_ADDRESSES at least 1")
    return abuse.FailureLimiter(rate, burst, addresses), abuse.DenialTally(audit, window)


async def run() -> None:
    engine = make_engine(env_str("LLMAAS_AUTH_DATABASE_URL"))
    migrate(engine, Path(__file__).parent / "migrations")
    secret = internal_secret()
    admin_token = env_str("LLMAAS_ADMIN_TOKEN")
    store = KeyStore(engine, Sealer(secret), cache_seconds=env_float("LLMAAS_AUTH_CACHE_SECONDS", 2.0))
    audit = AuditLog(AuditStore(engine), bound=env_float("LLMAAS_AUTH_AUDIT_BOUND_SECONDS", DURABILITY_BOUND))
    limiter, tally = _failure_limits(audit)
    authorizer = Authorizer(store, audit, admin_token, _sso(), limiter=limiter, tally=tally)
    rotation = asyncio.create_task(
        rotate_periodically(store, audit, env_float("LLMAAS_AUTH_ROTATION_CHECK_SECONDS", 60.0)))

    def register(server):
        servicer = AuthServicer(store, audit, authorizer, admin_token, secret)
        auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
        auth_pb2_grpc.add_AuthInternalServiceServicer_to_server(servicer, server)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(ExtAuthzServicer(authorizer, secret), server)
        return [*(auth_pb2.DESCRIPTOR.services_by_name[name].full_name for name in ("AuthService", "AuthInternalService")),
                "envoy.service.auth.v3.Authorization"]

    # Envoy's ext_authz over HTTP (llmaas.auth.ext_authz_http), on its own port, when the edge asks that way.
    authz_http_port = env_int("LLMAAS_EXT_AUTHZ_HTTP_PORT", 0)
    authz_http = ExtAuthzHttpServer(authorizer, secret)

    async def ready():
        if authz_http_port:
            await authz_http.start(os.environ.get("LLMAAS_BIND_HOST", "127.0.0.1"), authz_http_port)

    async def on_stop():
        await authz_http.close()
        rotation.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rotation
        await authorizer.close()  # the failed attempts counted so far, before the audit log's last commit
        await audit.close()

    await serve("auth", grpc_port(), register, on_stop=on_stop, on_drain=authz_http.drain, ready=ready)


def main() -> None:
    run_service(run())


if __name__ == "__main__":
    main()
