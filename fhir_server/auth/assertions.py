"""The client assertion of SMART Backend Services (backend-services.html#authenticate-client,
RFC 7523 §3): a JWT the client signs with its private key to authenticate at the token endpoint.

Checked, in order, each failure an ``invalid_client`` with its own log reason:

1. header ``alg`` is RS384 or ES384 (``none`` and HMAC refused first), ``kid`` present;
2. ``iss`` = ``sub`` = a registered, active client id;
3. ``jku``, when present, is the client's registered JWK Set URL (and on the trusted list);
4. a key with that ``kid`` in the client's JWK Set (a URL is fetched again once when the kid is new);
5. signature; ``aud`` = the token endpoint URL; ``exp`` not passed and at most five minutes ahead;
   ``nbf``/``iat`` not in the future (30 s leeway);
6. ``jti`` never seen for this client before (kept in the database until the assertion expires, so
   every worker agrees).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from ..storage.tables import auth_jti
from .clients import Client, ClientRegistry, JwksUnavailable
from .store import AuthDatabase, from_timestamp, utcnow
from .tokens import LEEWAY_SECONDS, Expectations, TokenRejected, check_alg, number_claim, public_key_from_jwk, \
    unverified_parts, verify_signed

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS384", "ES384")
MAX_ASSERTION_SECONDS = 300  # backend-services.html: exp no more than five minutes in the future
MAX_JTI_LENGTH = 255


class ReplayGuard:
    """``jti`` values already used, per client, in the database (``auth_jti``)."""

    def __init__(self, db: AuthDatabase) -> None:
        self.db = db

    def claim(self, client_id: str, jti: str, expires_at: float) -> bool:
        """Record ``jti``; False when this client used it before (a replay). Expired entries are
        purged on the way: an assertion past its ``exp`` is refused anyway."""
        try:
            with self.db.begin() as conn:
                conn.execute(delete(auth_jti).where(auth_jti.c.expires_at < utcnow()))
                conn.execute(insert(auth_jti).values(client_id=client_id, jti=jti,
                                                     expires_at=from_timestamp(expires_at + LEEWAY_SECONDS)))
        except IntegrityError:
            return False
        return True


@dataclass(frozen=True)
class VerifiedAssertion:
    client: Client
    claims: dict[str, Any]


def verify_client_assertion(assertion: str, *, token_url: str, clients: ClientRegistry,
                            replay: ReplayGuard) -> VerifiedAssertion:
    header, unverified = unverified_parts(assertion)
    alg = check_alg(header, ASSERTION_ALGS)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("missing-kid", "The client assertion's header names no kid")
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or not client_id:
        raise TokenRejected("missing-claim", "The client assertion has no iss (the client id)")
    if unverified.get("sub") != client_id:
        raise TokenRejected("wrong-subject", "The client assertion's sub must equal its iss (the client id)")
    client = clients.get(client_id)
    if client is None:
        raise TokenRejected("unknown-client", f"No client {client_id!r} is registered")
    if not client.active:
        raise TokenRejected("inactive-client", f"Client {client_id!r} is disabled")
    jku = header.get("jku")
    if jku is not None and jku != client.jwks_url:
        raise TokenRejected("untrusted-jku", "The assertion's jku is not the JWK Set URL registered for this client")
    jwk = _find_key(clients, client, kid)
    key = public_key_from_jwk(jwk, alg)
    claims = verify_signed(assertion, key, alg, Expectations(audience=token_url, issuer=client_id,
                                                             subject=client_id))
    exp = number_claim(claims, "exp")
    if exp > time.time() + MAX_ASSERTION_SECONDS + LEEWAY_SECONDS:
        raise TokenRejected("exp-too-far", "The client assertion's exp is more than five minutes ahead")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise TokenRejected("missing-claim", f"The client assertion needs a jti of 1 to {MAX_JTI_LENGTH} characters")
    if not replay.claim(client_id, jti, exp):
        raise TokenRejected("replayed-jti", "This client assertion (jti) has been used before")
    return VerifiedAssertion(client, claims)


def _find_key(clients: ClientRegistry, client: Client, kid: str) -> dict[str, Any]:
    for attempt in (False, True):
        if attempt and client.jwks_url is None:
            break
        try:
            jwks = clients.jwks_for(client, refresh=attempt)
        except JwksUnavailable as exc:
            raise TokenRejected("jwks-unavailable", str(exc)) from exc
        found = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
        if found:
            return found[0]
    raise TokenRejected("unknown-kid", f"Client {client.client_id!r} has no key with kid {kid!r}")
