"""JSON Web Token checks shared by client assertions and access tokens (RFC 7515, 7518, 7519, 8725).

The rules that make key confusion impossible (RFC 8725 §2.1, §3.1):

- the algorithm comes from *our* side — the key's type, or the issuer's fixed list — and the
  token's ``alg`` header must be on that list; ``none`` and every HMAC algorithm are refused before
  any key is looked at, so a public key can never be used as an HMAC secret;
- the key is chosen by ``kid`` among the keys of the issuer the token names, and must be of the
  type its algorithm needs (an RSA key never checks an ES384 signature).

Every failure is a :class:`TokenRejected` with a short ``reason`` for the log.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import exceptions as jwt_errors
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# Clock skew tolerated on exp, nbf and iat (RFC 7519 §4.1.4 allows "a small leeway").
LEEWAY_SECONDS = 30
MAX_TOKEN_LENGTH = 16_384
_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGS = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class TokenRejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims *before* verification: used only to pick the issuer and the key (the
    verified decode then checks everything again, strictly)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not _COMPACT_JWS.match(token):
        raise TokenRejected("malformed", "The token is not a compact JWS (header.payload.signature)")
    header_b64, payload_b64, _ = token.split(".")
    try:
        header = json.loads(_b64url(header_b64))
        claims = json.loads(_b64url(payload_b64))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenRejected("malformed", "The token's header or payload is not base64url JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRejected("malformed", "The token's header and payload must be JSON objects")
    return header, claims


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def check_alg(header: dict[str, Any], allowed: frozenset[str] | tuple[str, ...]) -> str:
    """The header's ``alg`` when it is one ``allowed``; ``none`` and HMAC are always refused."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none" or not alg:
        raise TokenRejected("alg-none", "Unsigned tokens (alg none) are not accepted")
    if alg.upper().startswith("HS"):
        raise TokenRejected("key-confusion", f"Symmetric algorithms ({alg}) are not accepted: tokens are signed "
                                             "with a private key (RS384 or ES384)")
    if alg not in allowed:
        raise TokenRejected("alg-not-allowed", f"Algorithm {alg} is not accepted here (use {', '.join(sorted(allowed))})")
    return alg


def key_matches_alg(key: Any, alg: str) -> bool:
    """Whether ``key`` (a public key object) is the kind ``alg`` verifies with."""
    if alg in RSA_ALGS:
        return isinstance(key, rsa.RSAPublicKey)
    if alg in EC_ALGS:
        return isinstance(key, ec.EllipticCurvePublicKey) and _CURVES.get(key.curve.name) == EC_ALGS[alg]
    return False


def public_key_from_jwk(jwk: dict[str, Any], alg: str) -> Any:
    """The public key of ``jwk`` for verifying ``alg``; TokenRejected when they do not fit."""
    if any(m in jwk for m in ("d", "k")):
        raise TokenRejected("bad-key", "A registered key holds private or symmetric material")
    if jwk.get("alg") and jwk["alg"] != alg:
        raise TokenRejected("alg-key-mismatch", f"Key {jwk.get('kid')!r} is for {jwk['alg']}, not {alg}")
    kty = "RSA" if alg in RSA_ALGS else "EC" if alg in EC_ALGS else None
    if jwk.get("kty") != kty:
        raise TokenRejected("alg-key-mismatch", f"Key {jwk.get('kid')!r} ({jwk.get('kty')}) cannot verify {alg}")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise TokenRejected("bad-key", f"Key {jwk.get('kid')!r} is not a usable {alg} key: {exc}") from exc
    if not key_matches_alg(key, alg):
        raise TokenRejected("alg-key-mismatch", f"Key {jwk.get('kid')!r} cannot verify {alg}")
    return key


@dataclass(frozen=True)
class Expectations:
    audience: str | tuple[str, ...]
    issuer: str
    require: tuple[str, ...] = ("iss", "sub", "aud", "exp", "jti")
    subject: str | None = None


def verify_signed(token: str, key: Any, alg: str, expect: Expectations) -> dict[str, Any]:
    """Signature, then ``exp`` (expired), ``nbf``/``iat`` (not yet valid, beyond the leeway),
    ``iss``, ``aud`` and ``sub``, with RFC 7519 semantics; returns the claims."""
    if not key_matches_alg(key, alg):
        raise TokenRejected("alg-key-mismatch", f"The key named by the token cannot verify {alg}")
    audience = list(expect.audience) if isinstance(expect.audience, tuple) else expect.audience
    try:
        claims = jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=expect.issuer,
                            subject=expect.subject, leeway=LEEWAY_SECONDS,
                            options={"require": list(expect.require), "strict_aud": False})
    except jwt_errors.ExpiredSignatureError as exc:
        raise TokenRejected("expired", "The token has expired") from exc
    except jwt_errors.ImmatureSignatureError as exc:
        raise TokenRejected("not-yet-valid", "The token is not valid yet (nbf or iat in the future)") from exc
    except jwt_errors.InvalidAudienceError as exc:
        raise TokenRejected("wrong-audience", f"The token is not meant for this server (aud): {exc}") from exc
    except jwt_errors.InvalidIssuerError as exc:
        raise TokenRejected("wrong-issuer", f"Unexpected issuer (iss): {exc}") from exc
    except jwt_errors.InvalidSubjectError as exc:
        raise TokenRejected("wrong-subject", f"Unexpected subject (sub): {exc}") from exc
    except jwt_errors.MissingRequiredClaimError as exc:
        raise TokenRejected("missing-claim", f"The token lacks a required claim: {exc.claim}") from exc
    except jwt_errors.InvalidSignatureError as exc:
        raise TokenRejected("bad-signature", "The token's signature does not verify") from exc
    except jwt_errors.InvalidTokenError as exc:
        raise TokenRejected("invalid", f"The token is invalid: {exc}") from exc
    return claims


def number_claim(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenRejected("missing-claim", f"The token's {name} is not a number")
    return int(value)
