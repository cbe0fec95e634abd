"""The issuers whose access tokens the API accepts, and how each one's tokens are verified.

- ``server``: tokens from our own token endpoint, signed with the server's keys (keys.py).
- ``dev``: the development issuer (``fhir-server dev-token``), only when ``FHIR_AUTH_DEV_ISSUER``
  is on; its own keys, kept in the database.
- an OpenID Connect provider (``FHIR_AUTH_OIDC_ISSUER`` with ``FHIR_AUTH_OIDC_JWKS_URL`` or
  ``FHIR_AUTH_OIDC_JWKS_FILE``): practitioners' tokens in production.

A token names its issuer in ``iss`` (read before verification only to choose the issuer); the
issuer's keys, algorithms, audience and lifetime limit then decide. An unknown ``iss`` is a token
from another server and is refused as such.
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .clients import ClientRegistry, JwksUnavailable
from .keys import KeyStore
from .tokens import EC_ALGS, LEEWAY_SECONDS, RSA_ALGS, Expectations, TokenRejected, check_alg, number_claim, \
    public_key_from_jwk, unverified_parts, verify_signed

ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 §2.1: the typ of a JWT access token
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti")
# A refresh of the keys on an unknown kid happens at most this often per issuer and process.
KID_REFRESH_SECONDS = 10.0


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str  # "server", "dev" or the OpenID Connect issuer URL
    claims: dict[str, Any]


class VerifiedCache:
    """Tokens already verified by this process, so that a client reusing its token for five minutes
    pays for one signature check rather than one per request (an ES384 check costs ~0.8 ms).

    Only a cache: an entry is used until the token expires, for at most ``max_age`` seconds, and only
    while its issuer still holds the key that signed it (a removed key is noticed as the key ring is
    re-read). Everything it holds was fully verified, and the database stays the only authority."""

    def __init__(self, size: int = 4096, max_age: float = 60.0) -> None:
        self.size = size
        self.max_age = max_age
        self._entries: OrderedDict[str, tuple[float, "Issuer", str | None, VerifiedToken]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> VerifiedToken | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            self._entries.move_to_end(token)
        until, issuer, kid, verified = entry
        if time.time() >= until or not issuer.still_trusts(kid):
            with self._lock:
                self._entries.pop(token, None)
            return None
        return verified

    def put(self, token: str, issuer: "Issuer", kid: str | None, verified: VerifiedToken) -> None:
        until = min(number_claim(verified.claims, "exp") + LEEWAY_SECONDS, time.time() + self.max_age)
        with self._lock:
            self._entries[token] = (until, issuer, kid, verified)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class Issuer(Protocol):
    name: str
    iss: str

    def verify(self, token: str, header: dict[str, Any]) -> dict[str, Any]: ...

    def still_trusts(self, kid: str | None) -> bool: ...


class KeyStoreIssuer:
    """Tokens signed with a :class:`KeyStore` of ours (the server, or the development issuer)."""

    def __init__(self, name: str, iss: str, keys: KeyStore, *, audience: str, max_lifetime: int) -> None:
        self.name = name
        self.iss = iss
        self.keys = keys
        self.audience = audience
        self.max_lifetime = max_lifetime
        self._last_refresh = 0.0
        self._lock = threading.Lock()

    def verify(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        alg = check_alg(header, ("RS384", "ES384"))
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise TokenRejected("wrong-type", f"Not an access token (typ must be {ACCESS_TOKEN_TYPE})")
        kid = header.get("kid")
        key = self.keys.ring().find(kid)
        if key is None and self._may_refresh():
            self.keys.refresh()  # another worker may have rotated the key a moment ago
            key = self.keys.ring().find(kid)
        if key is None:
            raise TokenRejected("unknown-kid", f"No {self.name} key has kid {kid!r} (a token from another server, "
                                               "or signed with a removed key)")
        if key.alg != alg:
            raise TokenRejected("alg-key-mismatch", f"Key {kid} signs {key.alg}, the token says {alg}")
        claims = verify_signed(token, key.public_key, alg,
                               Expectations(audience=self.audience, issuer=self.iss, require=REQUIRED_CLAIMS))
        check_lifetime(claims, self.max_lifetime)
        return claims

    def still_trusts(self, kid: str | None) -> bool:
        return self.keys.ring().find(kid) is not None

    def _may_refresh(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._last_refresh < KID_REFRESH_SECONDS:
                return False
            self._last_refresh = now
            return True


class OidcIssuer:
    """Tokens of an external OpenID Connect provider, verified with its JWK Set: fetched from a
    trusted URL (cached in the database) or read from a file."""

    ALGS = tuple(sorted(RSA_ALGS | set(EC_ALGS)))

    def __init__(self, iss: str, jwks: str, *, audience: str, clients: ClientRegistry, max_lifetime: int) -> None:
        self.name = iss
        self.iss = iss
        self.jwks_source = jwks
        self.audience = audience
        self.clients = clients
        self.max_lifetime = max_lifetime

    def _jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        if self.jwks_source.startswith(("https://", "http://")):
            try:
                return self.clients.remote_jwks(self.jwks_source, refresh=refresh)
            except JwksUnavailable as exc:
                raise TokenRejected("jwks-unavailable", str(exc)) from exc
        try:
            return json.loads(Path(self.jwks_source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TokenRejected("jwks-unavailable", f"Cannot read the OpenID Connect JWK Set: {exc}") from exc

    def still_trusts(self, kid: str | None) -> bool:
        return True  # its JWK Set is re-read as the cache entry ages out (VerifiedCache.max_age)

    def verify(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        alg = check_alg(header, self.ALGS)
        kid = header.get("kid")
        jwk = None
        for refresh in (False, True):
            keys = [k for k in self._jwks(refresh=refresh).get("keys", []) if isinstance(k, dict)]
            jwk = next((k for k in keys if k.get("kid") == kid), None)
            if jwk is None and kid is None and len(keys) == 1:
                jwk = keys[0]
            if jwk is not None:
                break
        if jwk is None:
            raise TokenRejected("unknown-kid", f"The OpenID Connect provider has no key with kid {kid!r}")
        key = public_key_from_jwk(jwk, alg)
        claims = verify_signed(token, key, alg, Expectations(audience=self.audience, issuer=self.iss,
                                                             require=("iss", "sub", "aud", "exp", "iat")))
        check_lifetime(claims, self.max_lifetime)
        return claims


def check_lifetime(claims: dict[str, Any], max_lifetime: int) -> None:
    """An access token may not live longer than its issuer's limit (a stolen one expires soon)."""
    if number_claim(claims, "exp") - number_claim(claims, "iat") > max_lifetime + LEEWAY_SECONDS:
        raise TokenRejected("lifetime-too-long", f"The token lives longer than {max_lifetime} s")


class TrustedIssuers:
    def __init__(self, issuers: list[Issuer], *, known_but_disabled: dict[str, str] | None = None) -> None:
        self.by_iss = {i.iss: i for i in issuers}
        # iss values we recognise but do not accept now (the development issuer when it is off)
        self.disabled = known_but_disabled or {}
        self.cache = VerifiedCache()

    def verify(self, token: str) -> VerifiedToken:
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        header, unverified = unverified_parts(token)
        check_alg(header, OidcIssuer.ALGS)  # alg none / HMAC refused before anything else
        iss = unverified.get("iss")
        issuer = self.by_iss.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            if isinstance(iss, str) and iss in self.disabled:
                raise TokenRejected(self.disabled[iss], f"Tokens of {iss} are not accepted: that issuer is disabled")
            raise TokenRejected("untrusted-issuer", f"Tokens of issuer {iss!r} are not accepted here")
        verified = VerifiedToken(issuer.name, issuer.verify(token, header))
        kid = header.get("kid")
        self.cache.put(token, issuer, kid if isinstance(kid, str) else None, verified)
        return verified
