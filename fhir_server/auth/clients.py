"""Registered SMART backend-services clients and their public keys.

backend-services.html#registering-a-client-communicating-public-keys: a client registers its public
keys either as a JWK Set (kept inline) or as a JWK Set URL, which the server fetches. This server
fetches only from URLs on the configured trusted list (``FHIR_AUTH_TRUSTED_JWKS_URLS``), with a
short timeout, and keeps what it fetched in the database (``auth_jwks_cache``) for
``FHIR_AUTH_JWKS_CACHE_SECONDS``, so that every worker shares one copy.

Each client also carries what the server asserts about it in its tokens: the agency it belongs to
(``la:201``, ``police:01``, ``health:RXX``, ``education:201``), its role, and the most it may be
granted (SMART ``system/`` scopes).
"""
from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..storage.tables import auth_client, auth_jwks_cache
from .scopes import ScopeError, ScopeSet, split_scopes
from .store import AuthDatabase, utcnow

CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}$")
# kind:code, e.g. la:201, police:01, health:RXX, education:201
AGENCY = re.compile(r"^(la|police|health|education|other):[A-Za-z0-9._-]{1,58}$")
ROLE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
KNOWN_ROLES = ("mash-practitioner", "social-worker", "school-dsl", "health-safeguarding", "police", "auditor",
               "system")
MAX_JWKS_BYTES = 256 * 1024
# A kid the cached JWK Set lacks makes us fetch again, but not more often than this.
REFETCH_AFTER = timedelta(seconds=30)
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

Fetcher = Callable[[str, float], dict[str, Any]]


class ClientError(ValueError):
    """A registration that cannot be accepted (CLI: one line, exit 1)."""


class JwksUnavailable(Exception):
    """A JWK Set URL that is not trusted, does not answer, or does not hold a JWK Set."""


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    agency: str
    role: str
    scopes: tuple[str, ...]
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    active: bool = True
    created: datetime | None = field(default=None, compare=False)

    @property
    def scope_set(self) -> ScopeSet:
        return ScopeSet.parse(self.scopes)


def validate_client(client: Client, trusted_urls: tuple[str, ...]) -> None:
    """Refuse registrations the token endpoint could not use safely; :class:`ClientError` says why."""
    if not CLIENT_ID.match(client.client_id):
        raise ClientError("The client id takes letters, digits and . _ : @ - (at most 255)")
    if not client.name.strip():
        raise ClientError("The client needs a name")
    if not AGENCY.match(client.agency):
        raise ClientError(f"Agency {client.agency!r} is not kind:code with kind la, police, health, education "
                          "or other (e.g. la:201, police:01, health:RXX)")
    if not ROLE.match(client.role):
        raise ClientError(f"Role {client.role!r} is not a lower-case code such as {', '.join(KNOWN_ROLES)}")
    try:
        scopes = ScopeSet.parse(client.scopes, strict=True)
    except ScopeError as exc:
        raise ClientError(str(exc)) from exc
    if not scopes:
        raise ClientError("The client needs at least one system/ scope, e.g. \"system/Patient.rs\"")
    for scope in scopes.scopes:
        if scope.context != "system":
            raise ClientError(f"Backend-services clients are granted system/ scopes only, not {scope.text!r}")
        if scope.constraint:
            raise ClientError(f"Scope constraints (?param=value) are not supported: {scope.text!r}")
    if (client.jwks is None) == (client.jwks_url is None):
        raise ClientError("Give the client's public keys either as a JWK Set (--jwks) or a JWK Set URL (--jwks-url)")
    if client.jwks is not None:
        check_jwks(client.jwks)
    if client.jwks_url is not None and not is_trusted(client.jwks_url, trusted_urls):
        raise ClientError(f"{client.jwks_url} is not under a trusted JWK Set URL (FHIR_AUTH_TRUSTED_JWKS_URLS: "
                          f"{', '.join(trusted_urls) or 'empty'})")


def check_jwks(jwks: Any) -> None:
    """A public JWK Set whose keys can verify RS384 or ES384 assertions and carry a ``kid``."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ClientError("A JWK Set is a JSON object with a non-empty \"keys\" array (RFC 7517 §5)")
    for i, key in enumerate(jwks["keys"]):
        if not isinstance(key, dict):
            raise ClientError(f"keys[{i}] is not a JSON object")
        if any(m in key for m in PRIVATE_MEMBERS):
            raise ClientError(f"keys[{i}] holds private key material: register the public key only")
        if key.get("kty") not in ("RSA", "EC"):
            raise ClientError(f"keys[{i}]: kty must be RSA or EC, not {key.get('kty')!r}")
        if not key.get("kid"):
            raise ClientError(f"keys[{i}] has no kid (SMART clients name the key they sign with)")


def is_trusted(url: str, trusted: tuple[str, ...]) -> bool:
    """Whether ``url`` lies under one of the ``trusted`` URL prefixes: same scheme, host and port,
    and a path below the prefix's (so ``https://keys.example`` does not trust
    ``https://keys.example.evil``)."""
    target = urlsplit(url)
    if target.scheme not in ("https", "http") or not target.netloc or target.username or target.password:
        return False
    for prefix in trusted:
        base = urlsplit(prefix)
        if (base.scheme, base.netloc.lower()) != (target.scheme, target.netloc.lower()):
            continue
        path = base.path or "/"
        if target.path == path or target.path.startswith(path if path.endswith("/") else path + "/"):
            return True
    return False


def fetch_jwks(url: str, timeout: float) -> dict[str, Any]:
    """GET a JWK Set (at most 256 KiB, ``timeout`` seconds); :class:`JwksUnavailable` otherwise."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - trusted list only
            raw = response.read(MAX_JWKS_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise JwksUnavailable(f"Cannot fetch the JWK Set at {url}: {exc}") from exc
    if len(raw) > MAX_JWKS_BYTES:
        raise JwksUnavailable(f"The JWK Set at {url} is larger than {MAX_JWKS_BYTES} bytes")
    try:
        jwks = json.loads(raw)
    except ValueError as exc:
        raise JwksUnavailable(f"The JWK Set at {url} is not JSON") from exc
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise JwksUnavailable(f"{url} does not hold a JWK Set")
    return jwks


class ClientRegistry:
    def __init__(self, db: AuthDatabase, *, trusted_urls: tuple[str, ...] = (), jwks_timeout: float = 3.0,
                 jwks_cache_seconds: int = 300, fetcher: Fetcher = fetch_jwks) -> None:
        self.db = db
        self.trusted_urls = trusted_urls
        self.jwks_timeout = jwks_timeout
        self.jwks_cache = timedelta(seconds=jwks_cache_seconds)
        self.fetcher = fetcher

    # -- registry ---------------------------------------------------------------------------

    def add(self, client: Client, *, replace: bool = False) -> Client:
        """Register ``client`` (``replace``: update an existing registration instead of refusing)."""
        validate_client(client, self.trusted_urls)
        now = utcnow()
        values = {"name": client.name, "agency": client.agency, "role": client.role,
                  "scopes": " ".join(split_scopes(client.scopes)), "jwks": client.jwks,
                  "jwks_url": client.jwks_url, "active": client.active, "updated": now}
        with self.db.begin() as conn:
            exists = conn.execute(select(auth_client.c.client_id)
                                  .where(auth_client.c.client_id == client.client_id)).first()
            if exists and not replace:
                raise ClientError(f"A client {client.client_id!r} is already registered (--replace updates it)")
            if exists:
                conn.execute(update(auth_client).where(auth_client.c.client_id == client.client_id).values(**values))
            else:
                conn.execute(auth_client.insert().values(client_id=client.client_id, created=now, **values))
        found = self.get(client.client_id)
        assert found is not None
        return found

    def get(self, client_id: str) -> Client | None:
        with self.db.read() as conn:
            row = conn.execute(select(auth_client).where(auth_client.c.client_id == client_id)).first()
        return _client(row) if row else None

    def all(self) -> list[Client]:
        with self.db.read() as conn:
            rows = conn.execute(select(auth_client).order_by(auth_client.c.client_id)).all()
        return [_client(r) for r in rows]

    def set_active(self, client_id: str, active: bool) -> bool:
        with self.db.begin() as conn:
            count = conn.execute(update(auth_client).where(auth_client.c.client_id == client_id)
                                 .values(active=active, updated=utcnow())).rowcount
        return bool(count)

    # -- keys ---------------------------------------------------------------------------------

    def jwks_for(self, client: Client, *, refresh: bool = False) -> dict[str, Any]:
        """The client's JWK Set: inline, or fetched from its URL (cached in the database)."""
        if client.jwks is not None:
            return client.jwks
        assert client.jwks_url is not None
        return self.remote_jwks(client.jwks_url, refresh=refresh)

    def remote_jwks(self, url: str, *, refresh: bool = False) -> dict[str, Any]:
        """A JWK Set from a trusted URL, from the shared cache when fresh enough. ``refresh`` (a kid
        was not found) fetches again unless the cached copy is younger than :data:`REFETCH_AFTER`."""
        if not is_trusted(url, self.trusted_urls):
            raise JwksUnavailable(f"{url} is not a trusted JWK Set URL")
        now = utcnow()
        with self.db.read() as conn:
            row = conn.execute(select(auth_jwks_cache).where(auth_jwks_cache.c.url == url)).first()
        if row is not None:
            age = now - row.fetched_at
            if age < self.jwks_cache and not (refresh and age >= REFETCH_AFTER):
                return dict(row.jwks)
        jwks = self.fetcher(url, self.jwks_timeout)
        with self.db.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(auth_jwks_cache).values(url=url, jwks=jwks, fetched_at=now)
            conn.execute(stmt.on_conflict_do_update(index_elements=["url"],
                                                    set_={"jwks": jwks, "fetched_at": now}))
        return jwks


def _client(row: Any) -> Client:
    return Client(row.client_id, row.name, row.agency, row.role, tuple(split_scopes(row.scopes)), row.jwks,
                  row.jwks_url, bool(row.active), row.created)
