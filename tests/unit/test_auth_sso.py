"""Admins signing in with their SSO: OIDC JWTs verified against a JWKS (here a file, as an identity provider's
endpoint would serve it), through the same Authorizer that ext_authz uses."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from llmaas.auth.authorizer import Attempt, Authorizer
from llmaas.auth.sso import SsoVerifier
from llmaas.common.errors import ApiError
from llmaas.common.identity import ROLE_PLATFORM_ADMIN, ROLE_TENANT_ADMIN

from tests.support.auth_store import audit_log, auth_engine, key_store

ISSUER, AUDIENCE = "https://sso.example.test/realms/acme", "llmaas-admin"


@pytest.fixture(scope="module")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def authorizer(tmp_path, signing_key):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    engine = auth_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    return Authorizer(key_store(engine), audit_log(engine), "admin-token-for-tests",
                      SsoVerifier(jwks.as_uri(), ISSUER, AUDIENCE))


def _token(key, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


async def _admin(authorizer, token):
    return await authorizer.authorize(token, Attempt(endpoint="GET /admin/v1/tenants"), admin_api=True)


async def test_platform_and_tenant_admins(authorizer, signing_key):
    platform = await _admin(authorizer, _token(signing_key, llmaas_role="platform_admin"))
    assert platform.role == ROLE_PLATFORM_ADMIN and platform.key_id == "sso:alice"
    tenant = await _admin(authorizer, _token(signing_key, llmaas_role="tenant_admin", llmaas_tenant="ten_a"))
    assert tenant.role == ROLE_TENANT_ADMIN and tenant.tenant_id == "ten_a"


@pytest.mark.parametrize("claims", [
    {"llmaas_role": "platform_admin", "aud": "someone-else"},
    {"llmaas_role": "platform_admin", "iss": "https://evil.test"},
    {"llmaas_role": "platform_admin", "exp": int(time.time()) - 3600},
    {"llmaas_role": "tenant_admin"},  # no tenant
    {},  # no role
])
async def test_refused_tokens(authorizer, signing_key, claims):
    result = await _admin(authorizer, _token(signing_key, **claims))
    assert isinstance(result, ApiError) and result.code == "invalid_sso_token"


async def test_other_signers_and_algorithm_confusion_are_refused(authorizer, signing_key):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert isinstance(await _admin(authorizer, _token(stranger, llmaas_role="platform_admin")), ApiError)
    public_pem = signing_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    hs = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60,
                     "llmaas_role": "platform_admin"}, public_pem.decode()[:40] * 2, algorithm="HS256",
                    headers={"kid": "k1"})
    assert isinstance(await _admin(authorizer, hs), ApiError)


async def test_sso_tokens_do_not_call_models(authorizer, signing_key):
    result = await authorizer.authorize(_token(signing_key, llmaas_role="platform_admin"),
                                        Attempt(endpoint="GET /v1/models"), admin_api=False)
    assert isinstance(result, ApiError) and result.code == "invalid_api_key"
