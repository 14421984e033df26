"""python -m llmaas.metering — the metering service."""

import asyncio
import datetime as dt
import logging
from pathlib import Path

from llmaas.common.config import ConfigError, env_int, env_str, grpc_port, internal_secret
from llmaas.common.db import make_engine, migrate
from llmaas.common.server import run_service, serve
from llmaas.metering import metrics
from llmaas.metering.ledger import Ledger
from llmaas.metering.pricing import PricingError, load_prices
from llmaas.metering.servicer import MeteringServicer
from llmaas.metering.tiers import TierError, load_tiers
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc
from llmaas.stack.paths import DEPLOY_DIR

log = logging.getLogger("llmaas.metering")
SWEEP_SECONDS = 60


async def sweep(ledger: Ledger, ttl_seconds: int) -> None:
    """Releases reservations never settled (their router died) and drops limit windows long over. On a thread: the
    event loop keeps serving meanwhile."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        now = dt.datetime.now(dt.UTC)
        try:
            expired = await asyncio.to_thread(ledger.expire, now - dt.timedelta(seconds=ttl_seconds), now)
            pruned = await asyncio.to_thread(ledger.prune_windows, int(now.timestamp()) - 2 * ttl_seconds)
            if expired or pruned:
                log.info("sweep", extra={"fields": {"expired_reservations": expired, "pruned_windows": pruned}})
        except Exception:
            log.exception("sweep failed")


def main() -> None:
    engine = make_engine(env_str("LLMAAS_METERING_DATABASE_URL"))
    try:
        prices = load_prices(Path(env_str("LLMAAS_METERING_PRICES", str(DEPLOY_DIR / "metering" / "prices.yaml"))))
        tiers = load_tiers(Path(env_str("LLMAAS_METERING_TIERS", str(DEPLOY_DIR / "metering" / "tiers.yaml"))))
    except (PricingError, TierError) as e:
        raise ConfigError(str(e)) from None
    # Longer than any request may run (the gateway's 900 s route timeout), so only abandoned reservations expire.
    ttl = env_int("LLMAAS_METERING_RESERVATION_TTL", 3600)
    migrate(engine, Path(__file__).parent / "migrations")
    ledger = Ledger(engine, prices, tiers)
    servicer = MeteringServicer(ledger, env_str("LLMAAS_ADMIN_TOKEN"), internal_secret())
    metrics.watch_budgets(ledger)

    def register(server):
        metering_pb2_grpc.add_MeteringServiceServicer_to_server(servicer, server)
        metering_pb2_grpc.add_MeteringInternalServiceServicer_to_server(servicer, server)
        return [metering_pb2.DESCRIPTOR.services_by_name[name].full_name
                for name in ("MeteringService", "MeteringInternalService")]

    async def run():
        sweeper = asyncio.create_task(sweep(ledger, ttl))
        try:
            await serve("metering", grpc_port(), register)
        finally:
            sweeper.cancel()

    run_service(run())


if __name__ == "__main__":
    main()
