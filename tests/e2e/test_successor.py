"""Through the real Envoy: a retired model is refused naming its successor, or served by it once the tenant opted in
(PATCH /admin/v1/tenants/{id}); and a catalogue change reaches the router's resolution cache at once."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from pathlib import Path

import grpc
import httpx
import pytest
from llmaas.auth.store import VERIFY_CACHE_SECONDS
from llmaas.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from llmaas.router.v1 import router_pb2, router_pb2_grpc

from tests.support.stack import FLIP_MODEL, RETIRED_MODEL, TEST_MODEL, gateway_channel, lifecycle_catalog_text

pytestmark = pytest.mark.e2e

# A tenant update reaches every auth replica within the key verification cache's lifetime (the identity carrying
# the opt-in is built from the cached key row); the slack covers a loaded machine.
OPT_IN_BOUND = VERIFY_CACHE_SECONDS + 1.5
SUBSTITUTED = f"{RETIRED_MODEL}; served-by={TEST_MODEL}"


class Admin:
    def __init__(self, stack, token: str) -> None:
        self._client = httpx.Client(base_url=stack["admin_url"], headers={"Authorization": f"Bearer {token}"},
                                    timeout=30)

    def call(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        return self._client.request(method, path, json=body)


def _ok(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def admin(stack) -> Admin:
    return Admin(stack, stack["admin_token"])


@pytest.fixture(scope="module")
def tenant(admin) -> str:
    return _ok(admin.call("POST", "/tenants", {"name": f"successor-{secrets.token_hex(4)}"}))["tenant"]["tenant_id"]


def new_key(admin: Admin, tenant: str, **fields) -> str:
    return _ok(admin.call("POST", f"/tenants/{tenant}/keys", {"name": "successor-e2e", **fields}))["api_key"]


def chat(stack, key: str, model: str = RETIRED_MODEL, **extra) -> httpx.Response:
    return httpx.post(stack["base_url"] + "/chat/completions", timeout=60, headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": "who answers?"}],
                            "max_tokens": 3, **extra})


def until(check, bound: float) -> float:
    """Seconds until check() holds (polled), failing past `bound`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < bound, f"not within {bound:.1f}s"
        time.sleep(0.1)
    return time.monotonic() - start


def after_every_cache(changed_at: float) -> None:
    """Waits out the verification cache of every auth replica (the first answer that reflects a change comes from
    one replica; another may still hold the key's entry for up to VERIFY_CACHE_SECONDS after the change)."""
    time.sleep(max(0.0, changed_at + VERIFY_CACHE_SECONDS + 0.2 - time.monotonic()))


def set_opt_in(admin: Admin, tenant: str, value: bool) -> dict:
    return _ok(admin.call("PATCH", f"/tenants/{tenant}", {"serve_successor": value}))["tenant"]


def test_retired_model_is_served_by_its_successor_once_the_tenant_opts_in(stack, admin, tenant):
    key = new_key(admin, tenant)
    refused = chat(stack, key)
    assert refused.status_code == 404, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_retired" and f"'{TEST_MODEL}'" in error["message"]
    assert "x-llmaas-model-substituted" not in refused.headers

    opted_in_at = time.monotonic()
    updated = set_opt_in(admin, tenant, True)
    assert updated["tenant_id"] == tenant and updated["serve_successor"] is True
    listed = {t["tenant_id"]: t for t in _ok(admin.call("GET", "/tenants"))["tenants"]}
    assert listed[tenant]["serve_successor"] is True
    until(lambda: chat(stack, key).status_code == 200, OPT_IN_BOUND)
    after_every_cache(opted_in_at)

    served = chat(stack, key)
    assert served.status_code == 200 and served.json()["model"] == TEST_MODEL
    assert served.headers["x-llmaas-model-substituted"] == SUBSTITUTED
    assert served.headers["x-llmaas-model-phase"] == "production"
    streamed = chat(stack, key, stream=True)
    assert streamed.status_code == 200 and streamed.headers["x-llmaas-model-substituted"] == SUBSTITUTED
    assert f'"model":"{TEST_MODEL}"' in streamed.text.replace(" ", "")

    # Direct gRPC callers get the opt-in from auth's Authenticate (not ext_authz) and the same answer.
    with grpc.insecure_channel(stack["services"]["router"]) as channel:
        request = router_pb2.CreateChatCompletionRequest(model=RETIRED_MODEL, max_tokens=3)
        request.messages.add(role="user").content.string_value = "who answers?"
        response, call = router_pb2_grpc.RouterServiceStub(channel).CreateChatCompletion.with_call(
            request, metadata=(("authorization", f"Bearer {key}"),), timeout=30)
    assert response.model == TEST_MODEL
    assert dict(call.initial_metadata())["x-llmaas-model-substituted"] == SUBSTITUTED

    # Opting out again: refused again, within the same bound.
    opted_out_at = time.monotonic()
    assert set_opt_in(admin, tenant, False)["serve_successor"] is False
    until(lambda: chat(stack, key).status_code == 404, OPT_IN_BOUND)
    after_every_cache(opted_out_at)
    assert all(chat(stack, key).status_code == 404 for _ in range(4))


def test_the_key_must_be_allowed_the_model_that_serves(stack, admin):
    other = _ok(admin.call("POST", "/tenants", {"name": f"successor-perm-{secrets.token_hex(4)}"}))["tenant"]
    set_opt_in(admin, other["tenant_id"], True)
    only_retired = new_key(admin, other["tenant_id"], allowed_models=[RETIRED_MODEL])
    both = new_key(admin, other["tenant_id"], allowed_models=[RETIRED_MODEL, TEST_MODEL])
    # Fresh keys: their first verification already reads the opted-in tenant.
    denied = chat(stack, only_retired)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    assert f"'{TEST_MODEL}'" in denied.json()["error"]["message"]
    assert chat(stack, both).headers.get("x-llmaas-model-substituted") == SUBSTITUTED


def test_tenant_admin_updates_only_its_own_tenant_and_updates_are_audited(stack, admin, tenant):
    own_admin = Admin(stack, new_key(admin, tenant, role="tenant_admin"))
    assert _ok(own_admin.call("PATCH", f"/tenants/{tenant}", {"serve_successor": False}))["tenant"]["tenant_id"] == tenant
    other = _ok(admin.call("POST", "/tenants", {"name": f"successor-other-{secrets.token_hex(4)}"}))["tenant"]
    denied = own_admin.call("PATCH", f"/tenants/{other['tenant_id']}", {"serve_successor": True})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    assert admin.call("PATCH", "/tenants/ten_0000000000000000", {"serve_successor": True}).status_code == 404
    assert admin.call("PATCH", f"/tenants/{tenant}", {}).status_code == 400
    events = _ok(admin.call("GET", f"/tenants/{tenant}/audit?action=tenant.update"))["events"]
    assert events and all(e["action"] == "tenant.update" for e in events)
    assert events[-1]["detail"] == "serve_successor=false" and events[-1]["actor"] != "admin-token"


def _lifecycle_phase(stack, model: str) -> str:
    body = httpx.get(stack["base_url"] + "/lifecycle", timeout=30).json()
    return next(m for m in body["data"] if m["id"] == model)["lifecycle"]["phase"]


def test_a_catalogue_change_reaches_the_router_at_once(stack):
    overlay = Path(stack["lifecycle_catalog"])
    original = overlay.read_text()
    assert original == lifecycle_catalog_text()
    for _ in range(2):  # the second answer comes from the router's cache
        warm = chat(stack, stack["api_key"], FLIP_MODEL)
        assert warm.status_code == 200 and warm.headers["x-llmaas-model-phase"] == "production"
    try:
        overlay.write_text(lifecycle_catalog_text(flip_end_of_support=dt.date.today() - dt.timedelta(days=1)))
        # The catalog polls its files once a second; the lifecycle endpoint asks the catalog itself (uncached).
        until(lambda: _lifecycle_phase(stack, FLIP_MODEL) == "end_of_support", 10)
        changed = chat(stack, stack["api_key"], FLIP_MODEL)  # the very next request through the router
        assert changed.status_code == 200 and changed.headers["x-llmaas-model-phase"] == "end_of_support"
        assert changed.headers["sunset"].endswith("GMT")
    finally:
        overlay.write_text(original)
        until(lambda: _lifecycle_phase(stack, FLIP_MODEL) == "production", 10)
    restored = chat(stack, stack["api_key"], FLIP_MODEL)
    assert restored.status_code == 200 and restored.headers["x-llmaas-model-phase"] == "production"
    assert "deprecation" not in restored.headers


def test_internal_catalog_methods_are_not_routed_by_the_gateway(stack):
    """Raw gRPC through Envoy's port, with a valid key: the public methods pass, ResolveModel and WatchCatalog (the
    router's) do not."""
    md = (("authorization", f"Bearer {stack['api_key']}"),)
    with gateway_channel(stack) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        assert TEST_MODEL in {m.id for m in stub.ListModels(catalog_pb2.ListModelsRequest(), metadata=md,
                                                             timeout=10).data}
        internal = catalog_pb2_grpc.CatalogInternalServiceStub(channel)
        for call in (lambda: internal.ResolveModel(catalog_pb2.ResolveModelRequest(model=TEST_MODEL), metadata=md,
                                                   timeout=10),
                     lambda: next(internal.WatchCatalog(catalog_pb2.WatchCatalogRequest(), metadata=md, timeout=10))):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED  # Envoy's 404
