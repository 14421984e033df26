"""The routing table's pools: a name (a catalogue entry's `pool`) -> the Triton replicas that make it up.

Configured by LLMAAS_TRITON_POOLS: `name=host:port,host:port;other=host:port` (e.g. one pool per GPU machine type,
several Triton servers in each). Without it, LLMAAS_TRITON_GRPC names one replica that serves every pool. An entry
whose pool is empty takes the first pool; one naming a pool that is not configured is served nowhere (logged once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("llmaas.catalog.pools")

# The pool that serves every entry (LLMAAS_TRITON_GRPC alone, or an explicit `=host:port`).
ANY_POOL = ""


class PoolsError(ValueError):
    pass


@dataclass(frozen=True)
class Pools:
    by_name: dict[str, tuple[str, ...]]
    _unknown_logged: set[str] = field(default_factory=set, compare=False, repr=False)

    @classmethod
    def parse(cls, spec: str) -> Pools:
        by_name: dict[str, tuple[str, ...]] = {}
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            name, sep, addresses = part.partition("=")
            replicas = tuple(a.strip() for a in addresses.split(",") if a.strip())
            if not sep or not replicas:
                raise PoolsError(f"LLMAAS_TRITON_POOLS: {part!r} is not name=host:port[,host:port...]")
            if any(":" not in a for a in replicas):
                raise PoolsError(f"LLMAAS_TRITON_POOLS: every replica of {name.strip()!r} must be host:port")
            if name.strip() in by_name:
                raise PoolsError(f"LLMAAS_TRITON_POOLS: pool {name.strip()!r} is given twice")
            by_name[name.strip()] = replicas
        if not by_name:
            raise PoolsError("LLMAAS_TRITON_POOLS names no pool")
        return cls(by_name)

    @classmethod
    def single(cls, address: str) -> Pools:
        return cls({ANY_POOL: (address,)})

    def addresses(self) -> list[str]:
        """Every replica once, in configuration order."""
        return list(dict.fromkeys(a for replicas in self.by_name.values() for a in replicas))

    def replicas(self, pool: str) -> tuple[str, ...]:
        if pool in self.by_name:
            return self.by_name[pool]
        if not pool:
            return next(iter(self.by_name.values()))
        if ANY_POOL in self.by_name:
            return self.by_name[ANY_POOL]
        if pool not in self._unknown_logged:
            self._unknown_logged.add(pool)
            log.error("catalogue entry names a pool that is not configured", extra={"fields": {
                "pool": pool, "configured": sorted(self.by_name)}})
        return ()
