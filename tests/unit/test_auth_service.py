"""The auth servicer's own rules: who may call which admin RPC, and the router's completion records."""

from __future__ import annotations

import grpc
import pytest
from llmaas.auth.authorizer import Authorizer
from llmaas.auth.servicer import AuthServicer
from llmaas.auth.v1 import auth_pb2
from llmaas.common.errors import ApiError
from llmaas.common.identity import IDENTITY_HEADER, ROLE_TENANT_ADMIN, Identity, encode_identity

from tests.support.auth_store import SECRET, audit_log, auth_engine, key_store

ADMIN = "admin-token-for-tests"


class Context:
    """A stand-in for grpc.aio's ServicerContext (unit tests only): metadata and a peer."""

    def __init__(self, *metadata: tuple[str, str]) -> None:
        self._md = metadata

    def invocation_metadata(self):
        return self._md

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"


def as_admin() -> Context:
    return Context(("authorization", f"Bearer {ADMIN}"))


def as_identity(identity: Identity, secret: str = SECRET) -> Context:
    return Context((IDENTITY_HEADER, encode_identity(identity, secret)))


@pytest.fixture
def servicer(database_url) -> AuthServicer:
    engine = auth_engine(database_url)
    store, audit = key_store(engine), audit_log(engine)
    return AuthServicer(store, audit, Authorizer(store, audit, ADMIN), ADMIN, SECRET)


async def _tenant(servicer, name="acme") -> str:
    return (await servicer.CreateTenant(auth_pb2.CreateTenantRequest(name=name), as_admin())).tenant.tenant_id


async def test_tenant_admin_is_confined_to_its_tenant(servicer):
    a, b = await _tenant(servicer, "a"), await _tenant(servicer, "b")
    tenant_admin = as_identity(Identity(a, "adminkey", ROLE_TENANT_ADMIN))
    made = await servicer.CreateApiKey(auth_pb2.CreateApiKeyRequest(tenant_id=a, name="app"), tenant_admin)
    assert made.key.tenant_id == a and made.api_key.startswith("sk-llmaas-")
    for call in (servicer.CreateApiKey(auth_pb2.CreateApiKeyRequest(tenant_id=b), tenant_admin),
                 servicer.ListAuditEvents(auth_pb2.ListAuditEventsRequest(tenant_id=b), tenant_admin),
                 servicer.ListTenants(auth_pb2.ListTenantsRequest(), tenant_admin),
                 servicer.VerifyAuditChain(auth_pb2.VerifyAuditChainRequest(), tenant_admin)):
        with pytest.raises(ApiError) as e:
            await call
        assert e.value.status == grpc.StatusCode.PERMISSION_DENIED


async def test_forged_identity_and_app_keys_are_not_admins(servicer):
    a = await _tenant(servicer)
    forged = as_identity(Identity(a, "x", ROLE_TENANT_ADMIN), "a-different-secret-of-sufficient-length-0123")
    with pytest.raises(ApiError) as e:
        await servicer.ListApiKeys(auth_pb2.ListApiKeysRequest(tenant_id=a), forged)
    assert e.value.status == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(ApiError) as e:
        await servicer.ListApiKeys(auth_pb2.ListApiKeysRequest(tenant_id=a), as_identity(Identity(a, "app")))
    assert e.value.status == grpc.StatusCode.PERMISSION_DENIED


async def test_key_requests_are_validated(servicer):
    a = await _tenant(servicer)
    bad = [auth_pb2.CreateApiKeyRequest(tenant_id=a, role="root"),
           auth_pb2.CreateApiKeyRequest(tenant_id=a, allowed_models=[" "]),
           auth_pb2.CreateApiKeyRequest(tenant_id=a, quotas=[auth_pb2.Quota(window_seconds=60)])]
    for request in bad:
        with pytest.raises(ApiError) as e:
            await servicer.CreateApiKey(request, as_admin())
        assert e.value.status == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ApiError) as e:
        await servicer.CreateApiKey(auth_pb2.CreateApiKeyRequest(tenant_id="ten_nope"), as_admin())
    assert e.value.code == "tenant_not_found"


async def test_completion_records_need_a_signed_identity_and_are_idempotent(servicer):
    a = await _tenant(servicer)
    request = auth_pb2.RecordRequestRequest(request_id="req-1", endpoint="POST /v1/chat/completions",
                                            model="m", status=200, prompt_tokens=3, completion_tokens=4)
    with pytest.raises(ApiError) as e:
        await servicer.RecordRequest(request, Context())
    assert e.value.status == grpc.StatusCode.UNAUTHENTICATED
    caller = as_identity(Identity(a, "k1"))
    assert (await servicer.RecordRequest(request, caller)).recorded
    assert not (await servicer.RecordRequest(request, caller)).recorded  # a retry never counts twice
    events = (await servicer.ListAuditEvents(auth_pb2.ListAuditEventsRequest(tenant_id=a), as_admin())).events
    completed = [e for e in events if e.action == "request.completed"]
    assert len(completed) == 1 and completed[0].key_id == "k1" and completed[0].completion_tokens == 4
    assert (await servicer.VerifyAuditChain(auth_pb2.VerifyAuditChainRequest(), as_admin())).ok


async def test_every_admin_action_is_audited(servicer):
    a = await _tenant(servicer)
    key = await servicer.CreateApiKey(auth_pb2.CreateApiKeyRequest(tenant_id=a, name="app"), as_admin())
    await servicer.RotateApiKey(auth_pb2.RotateApiKeyRequest(tenant_id=a, key_id=key.key_id, grace_seconds=60),
                                as_admin())
    await servicer.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(tenant_id=a, key_id=key.key_id), as_admin())
    events = (await servicer.ListAuditEvents(auth_pb2.ListAuditEventsRequest(tenant_id=a), as_admin())).events
    assert [e.action for e in events] == ["tenant.create", "key.create", "key.rotate", "key.revoke"]
    assert all(e.actor == "admin-token" and e.hash for e in events)


async def test_update_tenant_opt_in_round_trip_by_its_admin_only(servicer):
    a, b = await _tenant(servicer, "a"), await _tenant(servicer, "b")
    listed = (await servicer.ListTenants(auth_pb2.ListTenantsRequest(), as_admin())).tenants
    assert [t.HasField("serve_successor") and t.serve_successor for t in listed] == [False, False]  # shown, off
    key = await servicer.CreateApiKey(auth_pb2.CreateApiKeyRequest(tenant_id=a, name="app"), as_admin())
    tenant_admin = as_identity(Identity(a, "adminkey", ROLE_TENANT_ADMIN))
    done = await servicer.UpdateTenant(auth_pb2.UpdateTenantRequest(tenant_id=a, serve_successor=True), tenant_admin)
    assert done.tenant.tenant_id == a and done.tenant.serve_successor
    # The flag travels in the key's identity, on the direct gRPC path too.
    who = await servicer.Authenticate(auth_pb2.AuthenticateRequest(api_key=key.api_key), Context())
    assert who.identity.serve_successor
    with pytest.raises(ApiError) as e:  # another tenant's admin
        await servicer.UpdateTenant(auth_pb2.UpdateTenantRequest(tenant_id=b, serve_successor=True), tenant_admin)
    assert e.value.status == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(ApiError) as e:  # nothing to change
        await servicer.UpdateTenant(auth_pb2.UpdateTenantRequest(tenant_id=a), as_admin())
    assert e.value.status == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ApiError) as e:
        await servicer.UpdateTenant(auth_pb2.UpdateTenantRequest(tenant_id="ten_nope", serve_successor=True),
                                    as_admin())
    assert e.value.code == "tenant_not_found"
    off = await servicer.UpdateTenant(auth_pb2.UpdateTenantRequest(tenant_id=a, serve_successor=False), as_admin())
    assert off.tenant.HasField("serve_successor") and not off.tenant.serve_successor
    events = (await servicer.ListAuditEvents(auth_pb2.ListAuditEventsRequest(tenant_id=a), as_admin())).events
    updates = [(e.actor, e.detail) for e in events if e.action == "tenant.update"]
    assert updates == [("adminkey", "serve_successor=true"), ("admin-token", "serve_successor=false")]


def _record_entry(tenant: str, request_id: str, *, key: str = "k1", secret: str = SECRET, bound_to: str | None = None,
                  ttl: float = 60, tokens: int = 4) -> auth_pb2.RequestRecord:
    """What the router sends for one request: the record, and the caller's identity signed for that request."""
    identity = encode_identity(Identity(tenant, key), secret, request_id=request_id if bound_to is None else bound_to,
                               client_address="10.0.0.9", ttl=ttl)
    return auth_pb2.RequestRecord(
        record=auth_pb2.RecordRequestRequest(request_id=request_id, endpoint="POST /v1/chat/completions", model="m",
                                             status=200, prompt_tokens=3, completion_tokens=tokens),
        identity=identity, client_address="10.0.0.9")


async def test_batched_completion_records_are_verified_one_by_one_and_written_in_one_transaction(servicer):
    a = await _tenant(servicer)
    assert (await servicer.RecordRequest(_record_entry(a, "stored").record,
                                         as_identity(Identity(a, "k1")))).recorded
    transactions = []
    append_batch = servicer._audit.store.append_batch
    servicer._audit.store.append_batch = lambda records: transactions.append(len(records)) or append_batch(records)
    batch = auth_pb2.RecordRequestsRequest(records=[
        _record_entry(a, "r1"),
        _record_entry(a, "r2", secret="a-different-secret-of-sufficient-length-0123"),  # forged
        _record_entry(a, "r3", bound_to="another-request"),  # a header minted for another request
        _record_entry(a, "r4", ttl=-1),  # expired
        _record_entry(a, "stored"),  # already recorded: a retry
        _record_entry(a, "r1", tokens=99),  # repeated in the batch
        _record_entry(a, "r5"),
        auth_pb2.RequestRecord(record=auth_pb2.RecordRequestRequest(request_id="r6")),  # no identity
    ])
    outcomes = (await servicer.RecordRequests(batch, Context())).outcomes
    R = auth_pb2  # noqa: N806 - short names for the table below
    assert list(outcomes) == [R.RECORD_OUTCOME_RECORDED, R.RECORD_OUTCOME_REFUSED, R.RECORD_OUTCOME_REFUSED,
                              R.RECORD_OUTCOME_REFUSED, R.RECORD_OUTCOME_DUPLICATE, R.RECORD_OUTCOME_DUPLICATE,
                              R.RECORD_OUTCOME_RECORDED, R.RECORD_OUTCOME_REFUSED]
    assert transactions == [4]  # the four that verified, together
    # A retry of the whole batch (the router's, after an UNAVAILABLE) records nothing twice.
    again = (await servicer.RecordRequests(batch, Context())).outcomes
    assert R.RECORD_OUTCOME_RECORDED not in again
    events = (await servicer.ListAuditEvents(auth_pb2.ListAuditEventsRequest(tenant_id=a), as_admin())).events
    completed = {e.request_id: e for e in events if e.action == "request.completed"}
    assert sorted(completed) == ["r1", "r5", "stored"]
    assert completed["r1"].completion_tokens == 4 and completed["r1"].client_address == "10.0.0.9"
    assert completed["r1"].key_id == "k1" and completed["r1"].tenant_id == a
    assert (await servicer.VerifyAuditChain(auth_pb2.VerifyAuditChainRequest(), as_admin())).ok


async def test_record_request_refuses_an_identity_bound_to_another_request(servicer):
    a = await _tenant(servicer)
    entry = _record_entry(a, "r1", bound_to="r2")
    with pytest.raises(ApiError) as e:
        await servicer.RecordRequest(entry.record, Context((IDENTITY_HEADER, entry.identity)))
    assert e.value.status == grpc.StatusCode.UNAUTHENTICATED


async def test_record_requests_batches_are_bounded(servicer):
    a = await _tenant(servicer)
    with pytest.raises(ApiError) as e:
        await servicer.RecordRequests(auth_pb2.RecordRequestsRequest(
            records=[_record_entry(a, f"r{i}") for i in range(1001)]), Context())
    assert e.value.status == grpc.StatusCode.INVALID_ARGUMENT
