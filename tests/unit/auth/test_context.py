"""Request context from a verified token: purpose of use, break-glass, practitioner (auth/context.py),
and the denial log (auth/events.py)."""
from __future__ import annotations

import logging

import pytest

from fhir_server.auth import events
from fhir_server.auth.clients import Client, ClientError, check_jwks, is_trusted, validate_client
from fhir_server.auth.context import context_from_token, practitioner_reference, purpose_of_use
from fhir_server.auth.errors import AccessDenied
from fhir_server.errors import BadRequest


def test_purpose_of_use() -> None:
    assert purpose_of_use([], {}) == (None, None)
    assert purpose_of_use(["CAREMGT"], {}) == ("CAREMGT", None)
    assert purpose_of_use(["CAREMGT", "GOV"], {}) == (None, None), "several allowed: the header picks"
    assert purpose_of_use(["CAREMGT", "GOV"], {"x-purpose-of-use": "GOV"}) == ("GOV", None)
    assert purpose_of_use([], {"x-purpose-of-use": "ABUSE"}) == ("ABUSE", None)
    with pytest.raises(AccessDenied):
        purpose_of_use(["CAREMGT"], {"x-purpose-of-use": "GOV"})
    with pytest.raises(BadRequest):
        purpose_of_use([], {"x-purpose-of-use": "two words"})


def test_break_glass_needs_a_reason() -> None:
    with pytest.raises(AccessDenied) as refused:
        purpose_of_use([], {"x-purpose-of-use": "BTG"})
    assert refused.value.reason == "break-glass-without-reason"
    system = "http://terminology.hl7.org/CodeSystem/v3-ActReason|BTG"
    assert purpose_of_use([], {"x-purpose-of-use": system, "x-break-glass-reason": " urgent "}) == ("BTG", "urgent")
    with pytest.raises(BadRequest):
        purpose_of_use([], {"x-purpose-of-use": "BTG", "x-break-glass-reason": "x" * 2000})


@pytest.mark.parametrize("value, expected", [
    ("123", "Practitioner/123"), ("Practitioner/123", "Practitioner/123"),
    ("https://fhir.example.org/fhir/Practitioner/9", "Practitioner/9"),
    ("PractitionerRole/5", "PractitionerRole/5"), ("", None), (None, None), (12, None)])
def test_practitioner_reference(value: object, expected: str | None) -> None:
    assert practitioner_reference(value) == expected


def test_context_from_oidc_style_claims() -> None:
    claims = {"iss": "https://idp", "sub": "u1", "azp": "portal", "scp": ["user/Patient.rs", "openid"],
              "fhirUser": "https://fhir/Practitioner/7", "agency": "health:RXX", "role": "health-safeguarding",
              "jti": "t1", "purpose": "CAREMGT TREAT"}
    ctx = context_from_token("https://idp", claims, {"x-purpose-of-use": "TREAT"}, base_url="https://fhir",
                             remote_addr="10.1.1.1")
    assert ctx.authenticated and ctx.client_id == "portal" and ctx.practitioner == "Practitioner/7"
    assert ctx.scopes == frozenset({"user/Patient.rs", "openid"})
    assert (ctx.agency, ctx.role, ctx.purpose_of_use, ctx.token_id) == ("health:RXX", "health-safeguarding",
                                                                        "TREAT", "t1")


def test_denials_are_logged_and_sent_to_listeners(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[events.AuthEvent] = []

    def broken(event: events.AuthEvent) -> None:
        raise RuntimeError("the audit store is down")

    events.add_listener(seen.append)
    events.add_listener(broken)
    try:
        caplog.set_level(logging.INFO, logger="fhir_server.auth")
        info = events.RequestInfo("GET", "/fhir/Patient", "10.0.0.1")
        events.denied("expired", "client-1", info, "The token has expired")
        events.token_issued("client-1", "system/Patient.rs", "jti-1", info)
    finally:
        events.remove_listener(seen.append)
        events.remove_listener(broken)
    assert [(e.kind, e.reason) for e in seen] == [("denied", "expired"), ("token-issued", "issued")]
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("auth.denied"))
    assert '"reason": "expired"' in line and '"client_id": "client-1"' in line and '"remote_addr": "10.0.0.1"' in line
    assert any("listener" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_trusted_urls() -> None:
    trusted = ("https://keys.example.org/jwks/", "https://idp.example.org")
    assert is_trusted("https://keys.example.org/jwks/a.json", trusted)
    assert is_trusted("https://idp.example.org/anything", trusted)
    for url in ("https://keys.example.org/other/a.json", "http://keys.example.org/jwks/a.json",
                "https://keys.example.org.evil.example/jwks/a.json", "https://user@keys.example.org/jwks/a",
                "file:///etc/passwd", "https://idp.example.org:8443/x"):
        assert not is_trusted(url, trusted), url


def test_client_registrations_are_checked() -> None:
    jwks = {"keys": [{"kty": "EC", "crv": "P-384", "x": "a", "y": "b", "kid": "k1"}]}
    ok = Client("mash-app", "MASH", "la:201", "mash-practitioner", ("system/*.rs",), jwks)
    validate_client(ok, ())
    for bad in (Client("bad id", "x", "la:201", "system", ("system/*.rs",), jwks),
                Client("a", "x", "council", "system", ("system/*.rs",), jwks),
                Client("a", "x", "la:201", "System Admin", ("system/*.rs",), jwks),
                Client("a", "x", "la:201", "system", ("user/*.rs",), jwks),
                Client("a", "x", "la:201", "system", ("system/Observation.rs?code=1",), jwks),
                Client("a", "x", "la:201", "system", ("openid",), jwks),
                Client("a", "x", "la:201", "system", ("system/*.rs",)),
                Client("a", "x", "la:201", "system", ("system/*.rs",), jwks, "https://keys.example.org/a")):
        with pytest.raises(ClientError):
            validate_client(bad, ())
    for bad_jwks in ({}, {"keys": []}, {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]},
                     {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "kid": "k", "d": "secret"}]},
                     {"keys": [{"kty": "oct", "k": "x", "kid": "k"}]}):
        with pytest.raises(ClientError):
            check_jwks(bad_jwks)
