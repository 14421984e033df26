"""Administrators signing in with their SSO: OIDC-issued JWTs, verified against the identity provider's JWKS.

Configured with LLMAAS_ADMIN_JWKS_URL (https://... or file://...), LLMAAS_ADMIN_JWT_ISSUER and
LLMAAS_ADMIN_JWT_AUDIENCE. Only asymmetric signatures are accepted (never `none` or a shared-secret HMAC); issuer,
audience, expiry and not-before are checked. The role comes from the `llmaas_role` claim: `platform_admin`, or
`tenant_admin` with the tenant in `llmaas_tenant`. Anything else is not an admin.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import jwt

from llmaas.common.identity import ROLE_PLATFORM_ADMIN, ROLE_TENANT_ADMIN, Identity

log = logging.getLogger("llmaas.auth.sso")

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
ROLE_CLAIM = "llmaas_role"
TENANT_CLAIM = "llmaas_tenant"
_LEEWAY_SECONDS = 30


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class _FileJwks:
    """A JWKS kept as a file (air-gapped sites copy their identity provider's keys); re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime: float | None = None
        self._set: jwt.PyJWKSet | None = None

    def get_signing_key_from_jwt(self, token: str) -> jwt.PyJWK:
        mtime = self._path.stat().st_mtime
        if self._set is None or mtime != self._mtime:
            self._set, self._mtime = jwt.PyJWKSet.from_json(self._path.read_text()), mtime
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._set.keys:
            if key.key_id == kid:
                return key
        raise jwt.PyJWKClientError(f"no key {kid!r} in the JWKS file")


class SsoVerifier:
    def __init__(self, jwks_url: str, issuer: str, audience: str) -> None:
        parsed = urlparse(jwks_url)
        self._jwks = (_FileJwks(Path(parsed.path)) if parsed.scheme == "file"
                      else jwt.PyJWKClient(jwks_url, lifespan=300, cooldown_duration=30, timeout=5))
        self._issuer = issuer
        self._audience = audience

    def verify(self, token: str) -> Identity | None:
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=ALGORITHMS, audience=self._audience, issuer=self._issuer,
                                leeway=_LEEWAY_SECONDS, options={"require": ["exp", "iss", "aud", "sub"]})
        except (jwt.PyJWTError, OSError) as e:
            log.info("SSO token refused", extra={"fields": {"reason": type(e).__name__}})
            return None
        actor = f"sso:{claims['sub']}"[:200]
        role = claims.get(ROLE_CLAIM)
        if role == ROLE_PLATFORM_ADMIN:
            return Identity(tenant_id="", key_id=actor, role=ROLE_PLATFORM_ADMIN)
        if role == ROLE_TENANT_ADMIN and isinstance(claims.get(TENANT_CLAIM), str) and claims[TENANT_CLAIM]:
            return Identity(tenant_id=claims[TENANT_CLAIM], key_id=actor, role=ROLE_TENANT_ADMIN)
        return None
