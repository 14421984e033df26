"""Compact signed tokens, `<version>.<payload>.<mac>`: a JSON body in URL-safe base64, HMAC-SHA256 over the version
and the payload with the stack's internal secret. The end user's identity header (llmaas.common.identity) and the
services' credentials (llmaas.common.service_auth) are both made this way, each with its own version prefix, so a
token of one kind never verifies as the other."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(version: str, payload: str, secret: str) -> str:
    return _b64(hmac.new(secret.encode(), f"{version}.{payload}".encode(), hashlib.sha256).digest())


def sign(version: str, body: dict, secret: str) -> str:
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{version}.{payload}.{_mac(version, payload, secret)}"


def verified_body(version: str, token: str, secret: str):
    """The JSON body of a token of this version whose signature verifies (compared in constant time); None when it
    is malformed, of another version or signed with another secret."""
    prefix, _, rest = token.partition(".")
    payload, _, mac = rest.partition(".")
    if prefix != version or not payload or not mac or not hmac.compare_digest(mac, _mac(version, payload, secret)):
        return None
    try:
        return json.loads(_unb64(payload))
    except ValueError:
        return None
