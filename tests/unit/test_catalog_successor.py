"""A retired model served by its successor for tenants that opted in (ResolveModel), along migration chains."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from llmaas.catalog.entries import load_catalog
from llmaas.catalog.pools import Pools
from llmaas.catalog.reload import CatalogSource
from llmaas.catalog.served import ServedModels, Snapshot
from llmaas.catalog.servicer import CatalogServicer, serving_successor
from llmaas.catalog.v1 import catalog_pb2
from llmaas.common.errors import ApiError

# Dates far from today on both sides, so the phases do not depend on when the tests run.
CATALOG = """
models:
  - {id: old, aliases: [old-alias], type: chat, production_date: 2020-01-01, end_of_support: 2021-01-01,
     migration: mid}
  - {id: mid, editor: e, type: chat, production_date: 2020-06-01, end_of_support: 2022-01-01, migration: new,
     licence: x, max_model_len: 64, default_max_tokens: 8, triton_model: mid-t, pool: p}
  - {id: new, aliases: [new-alias], editor: e, type: chat, production_date: 2021-06-01, licence: x,
     max_model_len: 64, default_max_tokens: 8, triton_model: new-t, pool: p, capabilities: [tools]}
  - {id: lonely, type: chat, production_date: 2020-01-01, end_of_support: 2021-01-01, migration: gone}
  - {id: gone, type: chat, production_date: 2020-01-01}
  - {id: later, type: chat, production_date: 2020-01-01, end_of_support: 2099-01-01, migration: new}
"""


class FakeTriton:
    """A fake Triton replica (unit tests only), as tritonclient answers: its repository index (as_json=True), the
    models' own readiness, and the repository API. `ready`: loaded and answering; `broken`: loaded, but the model's
    instance is dead (the index still says READY, ModelReady says no), until it is reloaded."""

    def __init__(self, *ready: str) -> None:
        self.ready = set(ready)
        self.broken: set[str] = set()
        self.fail = False
        self.calls: list[tuple[str, str]] = []

    async def get_model_repository_index(self, as_json: bool = False):
        if self.fail:
            raise RuntimeError("connection refused")
        return {"models": [{"name": n, "state": "READY"} for n in sorted(self.ready | self.broken)]
                + [{"name": "loading-t", "state": "LOADING"}]}

    async def is_model_ready(self, model: str) -> bool:
        return model in self.ready

    async def unload_model(self, model: str) -> None:
        self.calls.append(("unload", model))
        self.ready.discard(model)
        self.broken.discard(model)

    async def load_model(self, model: str) -> None:
        self.calls.append(("load", model))
        self.broken.discard(model)
        self.ready.add(model)

    async def close(self) -> None:
        pass


def served_by(*replicas: FakeTriton, **options) -> ServedModels:
    """ServedModels over fake replicas named r0, r1, ... in one pool `p` (the catalogue's pool)."""
    fakes = {f"r{i}:1": fake for i, fake in enumerate(replicas)}
    return ServedModels(Pools({"p": tuple(fakes)}), client_factory=fakes.__getitem__, **options)


class Context:
    def invocation_metadata(self):
        return ()


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return path


def servicer(catalog_file: Path, triton: FakeTriton) -> CatalogServicer:
    return CatalogServicer(CatalogSource([catalog_file]), served_by(triton), "secret")


async def resolve(svc: CatalogServicer, model: str, opted_in: bool) -> catalog_pb2.ResolveModelResponse:
    return await svc.ResolveModel(catalog_pb2.ResolveModelRequest(model=model, serve_successor=opted_in), Context())


async def refused(svc: CatalogServicer, model: str, opted_in: bool) -> ApiError:
    with pytest.raises(ApiError) as e:
        await resolve(svc, model, opted_in)
    assert e.value.status == grpc.StatusCode.NOT_FOUND
    return e.value


async def test_without_opt_in_a_retired_model_names_its_migration(catalog_file):
    err = await refused(servicer(catalog_file, FakeTriton("mid-t", "new-t")), "old", opted_in=False)
    assert err.code == "model_retired" and "'new'" in err.message and "No model" not in err.message


async def test_opted_in_the_recommended_successor_answers_and_says_for_whom(catalog_file):
    svc = servicer(catalog_file, FakeTriton("mid-t", "new-t"))
    for name in ("old", "old-alias"):
        r = await resolve(svc, name, opted_in=True)
        assert (r.id, r.substituted_for, r.triton_model) == ("new", "old", "new-t")
        assert list(r.aliases) == ["new-alias"] and list(r.capabilities) == ["tools"]
        assert r.phase == "production" and not r.deprecation  # the lifecycle of the model that serves


async def test_the_served_model_closest_to_the_end_of_the_chain_answers(catalog_file):
    # mid is past its end of support but still deployed: it answers for itself, and for old when new is not there.
    svc = servicer(catalog_file, FakeTriton("mid-t"))
    r = await resolve(svc, "old", opted_in=True)
    assert (r.id, r.substituted_for, r.successor) == ("mid", "old", "new")
    itself = await resolve(svc, "mid", opted_in=True)
    assert itself.id == "mid" and not itself.substituted_for


async def test_a_served_model_is_never_substituted(catalog_file):
    r = await resolve(servicer(catalog_file, FakeTriton("mid-t", "new-t")), "mid", opted_in=True)
    assert r.id == "mid" and not r.substituted_for and r.phase == "end_of_support"


async def test_opted_in_without_a_served_successor_is_still_refused_clearly(catalog_file):
    svc = servicer(catalog_file, FakeTriton())
    err = await refused(svc, "old", opted_in=True)
    assert err.code == "model_retired" and "'new'" in err.message and "No model of its migration chain" in err.message
    assert (await refused(svc, "lonely", opted_in=True)).code == "model_retired"


async def test_only_retired_models_are_substituted(catalog_file):
    svc = servicer(catalog_file, FakeTriton("mid-t", "new-t"))
    # Not served but still in production: not retired, so not found, opted in or not.
    assert (await refused(svc, "later", opted_in=True)).code == "model_not_found"
    assert (await refused(svc, "nope", opted_in=True)).code == "model_not_found"


async def test_get_model_never_substitutes(catalog_file):
    with pytest.raises(ApiError) as e:
        await servicer(catalog_file, FakeTriton("new-t")).GetModel(catalog_pb2.GetModelRequest(model="old"), Context())
    assert e.value.code == "model_retired"


def test_serving_successor_walks_the_chain_from_its_end(catalog_file):
    catalog = load_catalog([catalog_file])
    old = catalog.lookup("old")

    def ready(*models: str) -> Snapshot:
        return Snapshot(Pools({"p": ("r0:1",)}), {"r0:1": frozenset(models)})

    assert serving_successor(old, catalog, ready("mid-t", "new-t")).id == "new"
    assert serving_successor(old, catalog, ready("mid-t")).id == "mid"
    assert serving_successor(old, catalog, ready()) is None
    assert serving_successor(catalog.lookup("new"), catalog, ready("new-t")) is None  # no chain
