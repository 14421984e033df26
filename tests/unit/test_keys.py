from llmaas.auth import keys
from llmaas.common.identity import bearer_token


def test_new_key_parses_and_matches_only_its_hash():
    key_id, api_key, stored = keys.new_key()
    parsed = keys.parse(api_key)
    assert parsed is not None and parsed[0] == key_id
    assert keys.matches(parsed[1], stored)
    assert not keys.matches(parsed[1] + "x", stored)
    assert parsed[1] not in stored  # only the digest is kept


def test_malformed_keys():
    for bad in ["", "sk-other", "sk-llmaas-short", "sk-llmaas-0123456789abcdef", "sk-llmaas-0123456789abcdefXsecret"]:
        assert keys.parse(bad) is None


def test_bearer_token():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
