"""Who is calling: the product's two HTTP credentials and the Socket.io token.

The fake backend does not verify JWTs; it only enforces that a credential of
the right shape is present when ``--require-auth`` is on, which is what a load
test needs to exercise (401s, refused connects) without a real identity provider.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse

UNAUTHORIZED_DETAIL = "missing credentials: send 'Authorization: Bearer <token>' or 'X-Fingerprint-ID: <id>'"


def http_credentials_present(headers: Mapping[str, str]) -> bool:
    """A non-empty Bearer token or a non-empty X-Fingerprint-ID header."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return True
    return bool(headers.get("x-fingerprint-id", "").strip())


def unauthorized() -> JSONResponse:
    return JSONResponse({"detail": UNAUTHORIZED_DETAIL}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def socket_token_present(auth: object) -> bool:
    """Socket.io connect: ``auth = {"token": "<jwt>"}`` with a non-empty token."""
    if not isinstance(auth, Mapping):
        return False
    token = auth.get("token")
    return isinstance(token, str) and bool(token.strip())
