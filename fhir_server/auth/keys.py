"""Signing keys: the server's (access tokens) and the development issuer's (``dev-token``).

backend-services.html and RFC 7517/7518: tokens are signed with RS384 or ES384, each key has a
``kid`` (its RFC 7638 thumbprint, so every worker computes the same one), and the public halves are
published as a JWK Set at ``[base]/.well-known/jwks.json``.

Rotation: a :class:`KeyRing` holds several keys, newest first; the newest signs, all verify.

- Configured keys (``FHIR_AUTH_SIGNING_KEY``: PEM text, or PEM files separated by commas): the
  first listed signs. Rotate by listing ``old,new`` (everyone can verify the new key), then
  ``new,old`` (the new key signs), then ``new`` once old tokens have expired.
- Without configuration (development, tests) the key lives in the database
  (``auth_signing_key``), generated once, so that every gunicorn worker signs and verifies with the
  same keys; ``fhir-server auth-key rotate|remove`` rotates it. Anyone who can read that table can
  mint tokens: production configures its key instead (docs/security.md).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from ..storage.tables import auth_signing_key
from .store import AuthDatabase, utcnow

log = logging.getLogger(__name__)

SIGNING_ALGS = ("RS384", "ES384")  # backend-services.html: servers SHALL support both
MIN_RSA_BITS = 2048
SERVER, DEV = "server", "dev"  # the issuers whose keys this module keeps

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class SigningKeyError(ValueError):
    """A key that cannot be used: wrong type, too small, wrong curve, unreadable PEM."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): a ``kid`` every process derives alike."""
    members = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}.get(str(jwk.get("kty")))
    if members is None:
        raise SigningKeyError(f"Unsupported key type {jwk.get('kty')!r}")
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def alg_for(key: PrivateKey | PublicKey) -> str:
    """The algorithm a key signs with here: RS384 for RSA, ES384 for EC P-384."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size < MIN_RSA_BITS:
            raise SigningKeyError(f"RSA keys must have at least {MIN_RSA_BITS} bits, not {key.key_size}")
        return "RS384"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if not isinstance(key.curve, ec.SECP384R1):
            raise SigningKeyError(f"EC signing keys must be on P-384 (ES384), not {key.curve.name}")
        return "ES384"
    raise SigningKeyError(f"Unsupported key type {type(key).__name__}: use RSA or EC P-384")


def public_jwk(key: PublicKey, alg: str) -> dict[str, Any]:
    """The public JWK (RFC 7517) with ``kid`` (thumbprint), ``alg`` and ``use: sig``."""
    if isinstance(key, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    jwk = {k: v for k, v in jwk.items() if k in ("kty", "n", "e", "crv", "x", "y")}
    return {**jwk, "kid": thumbprint(jwk), "alg": alg, "use": "sig"}


def load_private_pem(pem: bytes | str) -> PrivateKey:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"Not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise SigningKeyError(f"Unsupported key type {type(key).__name__}: use RSA or EC P-384")
    return key


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def generate_private_key(alg: str = "RS384") -> PrivateKey:
    if alg == "RS384":
        return rsa.generate_private_key(public_exponent=65537, key_size=MIN_RSA_BITS)
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    raise SigningKeyError(f"Signing algorithm must be one of {', '.join(SIGNING_ALGS)}, not {alg!r}")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private_key: PrivateKey = field(repr=False)
    jwk: dict[str, Any] = field(repr=False)

    @classmethod
    def from_private(cls, key: PrivateKey) -> "SigningKey":
        alg = alg_for(key)
        jwk = public_jwk(key.public_key(), alg)
        return cls(jwk["kid"], alg, key, jwk)

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def sign(self, claims: dict[str, Any], *, typ: str = "JWT") -> str:
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers={"kid": self.kid, "typ": typ})


@dataclass(frozen=True)
class KeyRing:
    """Keys of one issuer, newest first: ``signer`` signs, every key verifies."""

    keys: tuple[SigningKey, ...]

    @property
    def signer(self) -> SigningKey:
        if not self.keys:
            raise SigningKeyError("No signing key")
        return self.keys[0]

    def find(self, kid: str | None) -> SigningKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (no private member ever leaves this method)."""
        return {"keys": [dict(k.jwk) for k in self.keys]}


def configured_keys(value: str) -> KeyRing:
    """``FHIR_AUTH_SIGNING_KEY``: one PEM, or comma-separated PEM file paths (first signs)."""
    if value.lstrip().startswith("-----BEGIN"):
        pems = [value]
    else:
        pems = []
        for name in (p.strip() for p in value.split(",")):
            if not name:
                continue
            try:
                pems.append(Path(name).expanduser().read_text(encoding="ascii"))
            except OSError as exc:
                raise SigningKeyError(f"Cannot read the signing key file {name}: {exc.strerror}") from exc
    keys = tuple(SigningKey.from_private(load_private_pem(pem)) for pem in pems)
    if not keys:
        raise SigningKeyError("FHIR_AUTH_SIGNING_KEY names no key")
    return KeyRing(keys)


class KeyStore:
    """The keys of one issuer, read from configuration or the database and reused for
    ``cache_seconds`` (a removed key stops verifying within that time in every worker)."""

    def __init__(self, db: AuthDatabase, issuer: str, *, configured: str | None = None,
                 cache_seconds: int = 30, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.issuer = issuer
        self._configured = configured_keys(configured) if configured else None
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._ring: KeyRing | None = None
        self._read_at = 0.0
        # Keys already parsed, by their PEM: the ring is re-read every ``cache_seconds`` (to see a
        # rotation or a removal), but parsing an RSA private key (with its consistency check) costs
        # milliseconds, paid by whichever request found the ring stale.
        self._parsed: dict[str, SigningKey] = {}

    @property
    def configured(self) -> bool:
        return self._configured is not None

    def ring(self, *, create: bool = True) -> KeyRing:
        """The current keys; generates and stores the first one when there is none (``create``)."""
        if self._configured is not None:
            return self._configured
        with self._lock:
            now = self._clock()
            if self._ring is None or not self._ring.keys or now - self._read_at >= self._cache_seconds:
                ring = self._read()
                if not ring.keys and create:
                    self._insert(generate_private_key(), expect_empty=True)
                    ring = self._read()
                self._ring, self._read_at = ring, now
            return self._ring

    def refresh(self) -> None:
        """Forget the cached keys: the next use reads the database again."""
        with self._lock:
            self._ring = None

    def rotate(self, alg: str = "RS384") -> SigningKey:
        """Add a new key that signs from now on; the older keys keep verifying until removed."""
        self._database_only("rotate")
        key = self._insert(generate_private_key(alg), expect_empty=False)
        self.refresh()
        return key

    def remove(self, kid: str) -> bool:
        """Remove a key: tokens it signed stop verifying (within ``cache_seconds`` everywhere)."""
        self._database_only("remove keys from")
        with self.db.begin() as conn:
            count = conn.execute(delete(auth_signing_key).where(
                auth_signing_key.c.issuer == self.issuer, auth_signing_key.c.kid == kid)).rowcount
        self.refresh()
        return bool(count)

    def _database_only(self, what: str) -> None:
        if self._configured is not None:
            raise SigningKeyError(f"The {self.issuer} keys are configured (FHIR_AUTH_SIGNING_KEY): {what} them there")

    def _read(self) -> KeyRing:
        with self.db.read() as conn:
            rows = conn.execute(select(auth_signing_key.c.private_pem)
                                .where(auth_signing_key.c.issuer == self.issuer)
                                .order_by(auth_signing_key.c.slot.desc())).all()
        parsed = {}
        for r in rows:
            pem = r.private_pem if isinstance(r.private_pem, str) else bytes(r.private_pem).decode("ascii")
            parsed[pem] = self._parsed.get(pem) or SigningKey.from_private(load_private_pem(pem))
        self._parsed = parsed  # (a removed key is forgotten with its row)
        return KeyRing(tuple(parsed.values()))

    def _insert(self, private_key: PrivateKey, *, expect_empty: bool) -> SigningKey:
        """Store a key in the next slot. Two workers generating the first key at once: the unique
        (issuer, slot) index lets one win; the other's key is dropped and it uses the winner's."""
        key = SigningKey.from_private(private_key)
        try:
            with self.db.begin() as conn:
                slot = conn.execute(select(func.coalesce(func.max(auth_signing_key.c.slot), 0))
                                    .where(auth_signing_key.c.issuer == self.issuer)).scalar_one()
                if expect_empty and slot:
                    return key  # someone else stored the first key meanwhile
                conn.execute(insert(auth_signing_key).values(
                    kid=key.kid, issuer=self.issuer, slot=slot + 1, alg=key.alg,
                    private_pem=private_pem(private_key), created=utcnow()))
        except IntegrityError:
            if not expect_empty:
                raise
            return key
        if expect_empty and self.issuer == SERVER:
            log.warning("Generated a %s signing key for access tokens and stored it in the database (no "
                        "FHIR_AUTH_SIGNING_KEY configured: fine for development, not for production)", key.alg)
        elif expect_empty:
            log.info("Generated a %s signing key for the %r issuer and stored it in the database", key.alg,
                     self.issuer)
        return key

    def describe(self) -> list[dict[str, Any]]:
        """kid, alg, slot, created of each stored key, newest first (``auth-key list``)."""
        if self._configured is not None:
            return [{"kid": k.kid, "alg": k.alg, "source": "configured", "signs": i == 0}
                    for i, k in enumerate(self._configured.keys)]
        with self.db.read() as conn:
            rows = conn.execute(select(auth_signing_key.c.kid, auth_signing_key.c.alg, auth_signing_key.c.slot,
                                       auth_signing_key.c.created)
                                .where(auth_signing_key.c.issuer == self.issuer)
                                .order_by(auth_signing_key.c.slot.desc())).all()
        return [{"kid": r.kid, "alg": r.alg, "slot": r.slot, "created": r.created.isoformat(timespec="seconds"),
                 "source": "database", "signs": i == 0} for i, r in enumerate(rows)]
