from llmaas.common.identity import ROLE_TENANT_ADMIN, Identity, Quota, decode_identity, encode_identity

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
