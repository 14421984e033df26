import base64
import json

from llmaas.common import signed_token
from llmaas.common.identity import (
    IDENTITY_TTL_SECONDS,
    ROLE_TENANT_ADMIN,
    Identity,
    Quota,
    decode_identity,
    encode_identity,
)

SECRET = "unit-test-internal-secret-0123456789abcdef"


def test_signed_identity_round_trips():
    identity = Identity("ten_a", "k1", ROLE_TENANT_ADMIN, ("mistral*", "qwen3:14b"), (Quota(60, 10, 1000),))
    assert decode_identity(encode_identity(identity, SECRET), SECRET) == identity


def test_forged_or_tampered_identities_are_rejected():
    value = encode_identity(Identity("ten_a", "k1"), SECRET)
    version, payload, mac = value.split(".")
    forged = encode_identity(Identity("ten_b", "k1"), "another-secret-of-enough-length-0123456789")
    assert decode_identity(forged, SECRET) is None
    assert decode_identity(f"{version}.{forged.split('.')[1]}.{mac}", SECRET) is None
    for bad in ["", "v1", "v1..", "garbage", "ten_a", f"v2.{payload}.{mac}"]:
        assert decode_identity(bad, SECRET) is None


def test_model_patterns():
    assert Identity("t", "k").may_use("anything")
    limited = Identity("t", "k", models=("mistral*", "qwen3:14b"))
    assert limited.may_use("mistral-small3.2:24b") and limited.may_use("qwen3:14b")
    assert not limited.may_use("qwen3:30b") and not limited.may_use("")
    assert limited.may_use("alias-not-allowed", "qwen3:14b")


def test_serve_successor_opt_in_round_trips_and_old_tokens_decode_to_off():
    opted = Identity("ten_a", "k1", serve_successor=True)
    assert decode_identity(encode_identity(opted, SECRET), SECRET) == opted
    plain = encode_identity(Identity("ten_a", "k1"), SECRET)
    # Off is the absent field: a token signed before the opt-in existed has exactly this shape.
    assert decode_identity(plain, SECRET).serve_successor is False
    assert len(plain) < len(encode_identity(opted, SECRET))


def test_a_header_is_bound_to_its_request_names_its_audience_and_expires():
    bound = encode_identity(Identity("ten_a", "k1"), SECRET, request_id="req-1", client_address="10.0.0.7", now=1000.0)
    identity = decode_identity(bound, SECRET, now=1000.0)
    assert (identity.request_id, identity.client_address) == ("req-1", "10.0.0.7")
    assert decode_identity(bound, SECRET, now=1000.0 + IDENTITY_TTL_SECONDS) is not None
    assert decode_identity(bound, SECRET, now=1001.0 + IDENTITY_TTL_SECONDS) is None  # expired
    # Another audience (a token of the same format signed for something else) is not an identity.
    version, payload, _ = bound.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["a"] = "someone-else"
    resigned = signed_token.sign(version, body, SECRET)
    assert decode_identity(resigned, SECRET, now=1000.0) is None
