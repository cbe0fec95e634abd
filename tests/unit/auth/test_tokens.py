"""JWT rules (auth/tokens.py) and signing keys (auth/keys.py), without a database."""
from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_server.auth.keys import KeyRing, SigningKey, SigningKeyError, alg_for, configured_keys, private_pem, \
    public_jwk, thumbprint
from fhir_server.auth.tokens import Expectations, TokenRejected, check_alg, public_key_from_jwk, unverified_parts, \
    verify_signed


@pytest.fixture(scope="module")
def rsa_signing() -> SigningKey:
    return SigningKey.from_private(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_signing() -> SigningKey:
    return SigningKey.from_private(ec.generate_private_key(ec.SECP384R1()))


@pytest.mark.parametrize("alg, reason", [("none", "alg-none"), ("None", "alg-none"), ("", "alg-none"),
                                         (None, "alg-none"), ("HS256", "key-confusion"), ("hs384", "key-confusion"),
                                         ("RS256", "alg-not-allowed"), ("ES256", "alg-not-allowed")])
def test_check_alg_refuses(alg: str | None, reason: str) -> None:
    with pytest.raises(TokenRejected) as refused:
        check_alg({"alg": alg}, ("RS384", "ES384"))
    assert refused.value.reason == reason


def test_check_alg_accepts() -> None:
    assert check_alg({"alg": "ES384"}, ("RS384", "ES384")) == "ES384"


def test_keys_sign_with_their_algorithm(rsa_signing: SigningKey, ec_signing: SigningKey) -> None:
    assert (rsa_signing.alg, ec_signing.alg) == ("RS384", "ES384")
    assert rsa_signing.kid == thumbprint(rsa_signing.jwk), "kid is the RFC 7638 thumbprint"
    assert "d" not in rsa_signing.jwk and rsa_signing.jwk["use"] == "sig"
    with pytest.raises(SigningKeyError):
        alg_for(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(SigningKeyError):
        alg_for(rsa.generate_private_key(public_exponent=65537, key_size=1024))


def test_thumbprint_matches_rfc7638_example() -> None:
    # RFC 7638 §3.1
    jwk = {"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
           "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV"
                "4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d"
                "0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-"
                "csFCur-kEgU8awapJzKnqDKgw"}
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_signed_tokens_verify_and_fail_as_they_should(rsa_signing: SigningKey, ec_signing: SigningKey) -> None:
    now = int(time.time())
    claims = {"iss": "https://a", "sub": "c", "aud": "https://fhir", "exp": now + 60, "iat": now, "jti": "1"}
    expect = Expectations(audience="https://fhir", issuer="https://a")
    token = ec_signing.sign(claims)
    assert verify_signed(token, ec_signing.public_key, "ES384", expect)["sub"] == "c"
    with pytest.raises(TokenRejected) as wrong_key_type:
        verify_signed(token, rsa_signing.public_key, "ES384", expect)
    assert wrong_key_type.value.reason == "alg-key-mismatch"
    for changes, reason in (({"exp": now - 100}, "expired"), ({"nbf": now + 100}, "not-yet-valid"),
                            ({"aud": "https://other"}, "wrong-audience"), ({"iss": "https://b"}, "wrong-issuer"),
                            ({"jti": None}, "missing-claim")):
        body = {k: v for k, v in {**claims, **changes}.items() if v is not None}
        with pytest.raises(TokenRejected) as refused:
            verify_signed(ec_signing.sign(body), ec_signing.public_key, "ES384", expect)
        assert refused.value.reason == reason, changes
    other = SigningKey.from_private(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(TokenRejected) as forged:
        verify_signed(other.sign(claims), ec_signing.public_key, "ES384", expect)
    assert forged.value.reason == "bad-signature"


def test_public_key_from_jwk(rsa_signing: SigningKey, ec_signing: SigningKey) -> None:
    assert isinstance(public_key_from_jwk(rsa_signing.jwk, "RS384"), rsa.RSAPublicKey)
    for jwk, alg, reason in ((rsa_signing.jwk, "ES384", "alg-key-mismatch"),
                             ({**ec_signing.jwk, "alg": None}, "RS384", "alg-key-mismatch"),
                             ({**ec_signing.jwk, "d": "x"}, "ES384", "bad-key"),
                             ({"kty": "oct", "k": "c2VjcmV0"}, "HS256", "bad-key")):
        jwk = {k: v for k, v in jwk.items() if v is not None}
        with pytest.raises(TokenRejected) as refused:
            public_key_from_jwk(jwk, alg)
        assert refused.value.reason == reason


def test_unverified_parts_refuse_garbage() -> None:
    for token in ("", "a.b", "a.b.c", "x" * 20_000):
        with pytest.raises(TokenRejected):
            unverified_parts(token)


def test_key_ring_and_configured_keys(tmp_path, rsa_signing: SigningKey, ec_signing: SigningKey) -> None:
    ring = KeyRing((ec_signing, rsa_signing))
    assert ring.signer is ec_signing
    assert ring.find(rsa_signing.kid) is rsa_signing and ring.find("nope") is None
    assert [k["kid"] for k in ring.jwks()["keys"]] == [ec_signing.kid, rsa_signing.kid]
    first, second = tmp_path / "a.pem", tmp_path / "b.pem"
    first.write_text(private_pem(rsa_signing.private_key))
    second.write_text(private_pem(ec_signing.private_key))
    assert [k.kid for k in configured_keys(f"{first}, {second}").keys] == [rsa_signing.kid, ec_signing.kid]
    assert configured_keys(private_pem(ec_signing.private_key)).signer.kid == ec_signing.kid
    with pytest.raises(SigningKeyError):
        configured_keys(str(tmp_path / "missing.pem"))
    assert public_jwk(rsa_signing.public_key, "RS384") == rsa_signing.jwk


def test_a_token_signed_by_a_ring_key_decodes_with_the_published_jwk(ec_signing: SigningKey) -> None:
    token = ec_signing.sign({"sub": "x"}, typ="at+jwt")
    assert jwt.get_unverified_header(token) == {"alg": "ES384", "kid": ec_signing.kid, "typ": "at+jwt"}
    assert jwt.decode(token, jwt.PyJWK(ec_signing.jwk).key, algorithms=["ES384"])["sub"] == "x"


def test_verified_cache() -> None:
    from fhir_server.auth.issuers import VerifiedCache, VerifiedToken

    class Issuer:
        trusted = True

        def still_trusts(self, kid: str | None) -> bool:
            return self.trusted

    issuer = Issuer()
    cache = VerifiedCache(size=2)
    now = int(time.time())
    good = VerifiedToken("server", {"exp": now + 300})
    cache.put("a", issuer, "k", good)  # type: ignore[arg-type]
    assert cache.get("a") is good
    cache.put("old", issuer, "k", VerifiedToken("server", {"exp": now - 120}))  # type: ignore[arg-type]
    assert cache.get("old") is None, "an expired token is verified (and refused) again"
    issuer.trusted = False
    assert cache.get("a") is None, "a token whose key was removed is verified (and refused) again"
    issuer.trusted = True
    for name in ("b", "c", "d"):
        cache.put(name, issuer, "k", good)  # type: ignore[arg-type]
    assert cache.get("b") is None and cache.get("d") is good, "least recently used entries go first"
