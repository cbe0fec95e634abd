"""Authentication (SMART Backend Services) and scope enforcement through HTTP, on SQLite and
PostgreSQL, with authentication switched on (the rest of the suite runs with it off).

Client keys are generated here with ``cryptography``; each client registers its public JWK Set.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import simplejson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select

from fhir_server import create_app
from fhir_server.auth import events
from fhir_server.auth.clients import Client, ClientError
from fhir_server.auth.keys import public_jwk
from fhir_server.auth.service import AuthService
from fhir_server.config import Settings
from fhir_server.storage.tables import audit_event, auth_jti

FHIR_JSON = "application/fhir+json"
BASE = "http://localhost/fhir"
TOKEN_URL = f"{BASE}/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TRUSTED = "https://keys.example.org/"


# -- keys and clients ---------------------------------------------------------------------------

class ClientKey:
    """A client's private key and the public JWK it registers."""

    def __init__(self, alg: str) -> None:
        self.alg = alg
        self.private = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if alg == "RS384"
                        else ec.generate_private_key(ec.SECP384R1()))
        self.jwk = public_jwk(self.private.public_key(), alg)
        self.kid = self.jwk["kid"]

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def rsa_key() -> ClientKey:
    return ClientKey("RS384")


@pytest.fixture(scope="module")
def ec_key() -> ClientKey:
    return ClientKey("ES384")


@pytest.fixture(scope="module")
def stranger_key() -> ClientKey:
    """A key nobody registered (another server's, an attacker's)."""
    return ClientKey("RS384")


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    # auth on (as in production), the development issuer on (as `make run` and these tests), keys
    # read from the database on every use so that rotation shows at once
    return settings.with_overrides(auth_enabled=True, auth_dev_issuer=True, auth_key_cache_seconds=0,
                                   auth_trusted_jwks_urls=(TRUSTED,))


@pytest.fixture
def auth_conn(engine: Engine) -> Iterator[Any]:
    conn = engine.connect()
    outer = conn.begin()
    try:
        yield conn
    finally:
        outer.rollback()
        conn.close()


@pytest.fixture
def auth_app(auth_conn: Any, auth_settings: Settings) -> Flask:
    return create_app(auth_settings, connection=auth_conn)


@pytest.fixture
def http(auth_app: Flask) -> FlaskClient:
    return auth_app.test_client()


@pytest.fixture
def auth(auth_app: Flask) -> AuthService:
    return auth_app.extensions["fhir"].auth


def register(auth: AuthService, key: ClientKey, scopes: str, client_id: str | None = None,
             agency: str = "la:201", role: str = "mash-practitioner") -> str:
    client_id = client_id or f"client-{uuid.uuid4().hex[:8]}"
    auth.clients.add(Client(client_id, f"Test client {client_id}", agency, role, tuple(scopes.split()), key.jwks))
    return client_id


def assertion(client_id: str, key: ClientKey, *, headers: dict[str, Any] | None = None, signing_key: Any = None,
              alg: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 240,
                            "iat": now, "jti": uuid.uuid4().hex}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    header = {"kid": key.kid, "typ": "JWT", **(headers or {})}
    return jwt.encode(body, signing_key if signing_key is not None else key.private, algorithm=alg or key.alg,
                      headers=header)


def token_request(http: FlaskClient, client_assertion: str, scope: str = "system/Patient.rs", **form: str) -> Any:
    data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion, "scope": scope, **form}
    return http.post("/fhir/auth/token", data=data)


def get_token(http: FlaskClient, client_id: str, key: ClientKey, scope: str) -> str:
    res = token_request(http, assertion(client_id, key), scope)
    assert res.status_code == 200, res.get_data(as_text=True)
    return res.get_json()["access_token"]


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def post(http: FlaskClient, path: str, resource: Any, token: str, **headers: str) -> Any:
    return http.post(f"/fhir/{path}", data=simplejson.dumps(resource), content_type=FHIR_JSON,
                     headers=bearer(token, **headers))


def put(http: FlaskClient, path: str, resource: Any, token: str) -> Any:
    return http.put(f"/fhir/{path}", data=simplejson.dumps(resource), content_type=FHIR_JSON, headers=bearer(token))


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Okafor"}], "gender": "female", **extra}


def observation(subject: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
            "subject": {"reference": subject}}


def server_token(auth: AuthService, *, signer: Any = None, header: dict[str, Any] | None = None,
                 alg: str | None = None, **claims: Any) -> str:
    """An access token as our token endpoint would make it, with ``claims`` changed."""
    now = int(time.time())
    key = auth.server_keys.ring().signer
    body: dict[str, Any] = {"iss": auth.issuer, "aud": BASE, "sub": "c", "client_id": "c",
                            "scope": "system/*.cruds", "iat": now, "nbf": now, "exp": now + 300,
                            "jti": uuid.uuid4().hex}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, signer if signer is not None else key.private_key, algorithm=alg or key.alg,
                      headers={"kid": key.kid, "typ": "at+jwt", **(header or {})})


def denied_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.auth_event.reason for r in caplog.records if getattr(r, "auth_event", None) is not None
            and r.auth_event.kind == "denied"]


def assert_audited_401(http: FlaskClient, reason: str) -> None:
    """The refusal is in the audit trail: a failed Login AuditEvent (DCM 110114/110122, outcome 4)
    whose outcomeDesc starts with ``reason``, written in a transaction of its own."""
    conn = http.application.extensions["fhir"].repo._bound
    last = conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq.desc()).limit(1)).scalar_one()
    assert last["type"]["code"] == "110114" and last["subtype"][0]["code"] == "110122", last
    assert last["outcome"] == "4" and last["outcomeDesc"].startswith(reason), last


def unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(simplejson.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', **header})}.{part(claims)}."


def hmac_signed(claims: dict[str, Any], header: dict[str, Any], secret: bytes) -> str:
    """HS256 with ``secret`` (pyjwt refuses a PEM as an HMAC secret, as an attacker would not)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    signing_input = f"{part(simplejson.dumps({'alg': 'HS256', **header}).encode())}." \
                    f"{part(simplejson.dumps(claims).encode())}"
    return f"{signing_input}.{part(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = simplejson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "system/*.cruds"
    forged = base64.urlsafe_b64encode(simplejson.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


# -- discovery -----------------------------------------------------------------------------------

def test_smart_configuration_is_public(http: FlaskClient) -> None:
    res = http.get("/fhir/.well-known/smart-configuration")
    assert res.status_code == 200
    conf = res.get_json()
    assert conf["token_endpoint"] == TOKEN_URL
    assert conf["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(conf["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert conf["grant_types_supported"] == ["client_credentials"]
    assert {"client-confidential-asymmetric", "permission-v2", "permission-v1"} <= set(conf["capabilities"])
    assert "system/*.rs" in conf["scopes_supported"]


def test_jwks_publishes_public_keys_only(http: FlaskClient) -> None:
    res = http.get("/fhir/.well-known/jwks.json")
    assert res.status_code == 200
    keys = res.get_json()["keys"]
    assert keys and all(k["kid"] and k["alg"] in ("RS384", "ES384") for k in keys)
    assert not any(m in k for k in keys for m in ("d", "p", "q", "dp", "dq", "qi"))


def test_metadata_is_public_and_names_the_token_endpoint(http: FlaskClient) -> None:
    res = http.get("/fhir/metadata")
    assert res.status_code == 200
    security = res.get_json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert security["extension"][0]["extension"][0]["valueUri"] == TOKEN_URL


# -- the client_credentials flow ---------------------------------------------------------------------

@pytest.mark.parametrize("key_fixture", ["rsa_key", "ec_key"])
def test_client_credentials_flow(request: pytest.FixtureRequest, http: FlaskClient, auth: AuthService,
                                 key_fixture: str, caplog: pytest.LogCaptureFixture) -> None:
    key: ClientKey = request.getfixturevalue(key_fixture)
    client_id = register(auth, key, "system/Patient.cruds system/Observation.rs", agency="police:01", role="police")
    caplog.set_level(logging.INFO, logger="fhir_server.auth")
    res = token_request(http, assertion(client_id, key), "system/Patient.rs system/Observation.rs openid")
    assert res.status_code == 200, res.get_data(as_text=True)
    assert res.headers["Cache-Control"] == "no-store"
    answer = res.get_json()
    assert answer["token_type"] == "bearer"
    assert answer["expires_in"] == 300
    assert answer["scope"] == "system/Patient.rs system/Observation.rs"

    jwks = http.get("/fhir/.well-known/jwks.json").get_json()
    kid = jwt.get_unverified_header(answer["access_token"])["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(answer["access_token"], jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], audience=BASE)
    assert claims["client_id"] == client_id
    assert (claims["agency"], claims["role"]) == ("police:01", "police")
    assert claims["exp"] - claims["iat"] == 300
    assert any(getattr(r, "auth_event", None) and r.auth_event.kind == "token-issued" for r in caplog.records)

    token = answer["access_token"]
    assert http.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    assert post(http, "Patient", patient(), token).status_code == 403, "granted rs, not c"


def test_granted_scopes_are_requested_intersected_with_registered(http: FlaskClient, auth: AuthService,
                                                                   rsa_key: ClientKey) -> None:
    client_id = register(auth, rsa_key, "system/Patient.rs")
    res = token_request(http, assertion(client_id, rsa_key), "system/Patient.cruds system/Observation.rs")
    assert res.get_json()["scope"] == "system/Patient.rs"
    none = token_request(http, assertion(client_id, rsa_key), "system/Observation.rs")
    assert none.status_code == 400
    assert none.get_json()["error"] == "invalid_scope"


def test_token_endpoint_request_errors(http: FlaskClient, auth: AuthService, rsa_key: ClientKey) -> None:
    client_id = register(auth, rsa_key, "system/Patient.rs")
    wrong_grant = token_request(http, assertion(client_id, rsa_key), grant_type="authorization_code")
    assert (wrong_grant.status_code, wrong_grant.get_json()["error"]) == (400, "unsupported_grant_type")
    no_assertion = http.post("/fhir/auth/token", data={"grant_type": "client_credentials",
                                                       "client_assertion_type": ASSERTION_TYPE, "scope": "x"})
    assert (no_assertion.status_code, no_assertion.get_json()["error"]) == (400, "invalid_request")
    as_json = http.post("/fhir/auth/token", json={"grant_type": "client_credentials"})
    assert (as_json.status_code, as_json.get_json()["error"]) == (400, "invalid_request")
    bad_scope = token_request(http, assertion(client_id, rsa_key), "system/Patient.xyz")
    assert (bad_scope.status_code, bad_scope.get_json()["error"]) == (400, "invalid_scope")


REJECTED_ASSERTIONS = {
    "alg-none": lambda cid, key, other: unsigned({"iss": cid, "sub": cid, "aud": TOKEN_URL,
                                                  "exp": int(time.time()) + 60, "jti": uuid.uuid4().hex},
                                                 {"kid": key.kid}),
    # key confusion: HMAC with the client's *public* key as the secret
    "key-confusion": lambda cid, key, other: hmac_signed(
        {"iss": cid, "sub": cid, "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": uuid.uuid4().hex},
        {"kid": key.kid, "typ": "JWT"}, key.public_pem()),
    "wrong-audience": lambda cid, key, other: assertion(cid, key, aud="https://elsewhere.example/token"),
    "wrong-subject": lambda cid, key, other: assertion(cid, key, sub="someone-else"),
    "unknown-client": lambda cid, key, other: assertion("nobody", key, sub="nobody"),
    "expired": lambda cid, key, other: assertion(cid, key, exp=int(time.time()) - 120),
    "exp-too-far": lambda cid, key, other: assertion(cid, key, exp=int(time.time()) + 3600),
    "not-yet-valid": lambda cid, key, other: assertion(cid, key, nbf=int(time.time()) + 600),
    "iat-in-the-future": lambda cid, key, other: assertion(cid, key, iat=int(time.time()) + 600),
    "unknown-kid": lambda cid, key, other: assertion(cid, key, headers={"kid": "not-a-registered-kid"}),
    "bad-signature": lambda cid, key, other: tamper(assertion(cid, key)),
    "signed-by-another-key": lambda cid, key, other: assertion(cid, key, signing_key=other.private),
    "missing-jti": lambda cid, key, other: assertion(cid, key, jti=None),
    "untrusted-jku": lambda cid, key, other: assertion(cid, key, headers={"jku": "https://evil.example/jwks"}),
}
EXPECTED_REASON = {"iat-in-the-future": "not-yet-valid", "signed-by-another-key": "bad-signature",
                   "missing-jti": "missing-claim"}


@pytest.mark.parametrize("case", sorted(REJECTED_ASSERTIONS))
def test_rejected_client_assertions(case: str, http: FlaskClient, auth: AuthService, rsa_key: ClientKey,
                                    stranger_key: ClientKey, caplog: pytest.LogCaptureFixture) -> None:
    client_id = register(auth, rsa_key, "system/Patient.rs")
    caplog.set_level(logging.WARNING, logger="fhir_server.auth")
    res = token_request(http, REJECTED_ASSERTIONS[case](client_id, rsa_key, stranger_key))
    assert res.status_code == 401, res.get_data(as_text=True)
    assert res.get_json()["error"] == "invalid_client"
    assert res.get_json()["error_description"]
    assert res.headers["Cache-Control"] == "no-store"
    assert EXPECTED_REASON.get(case, case) in denied_reasons(caplog)
    assert_audited_401(http, EXPECTED_REASON.get(case, case))


def test_a_replayed_assertion_is_refused_by_every_worker(auth_conn: Any, auth_settings: Settings,
                                                         rsa_key: ClientKey, caplog: pytest.LogCaptureFixture) -> None:
    """Two apps stand for two gunicorn workers: the jti each saw is in the shared database."""
    first, second = create_app(auth_settings, connection=auth_conn), create_app(auth_settings, connection=auth_conn)
    client_id = register(first.extensions["fhir"].auth, rsa_key, "system/Patient.rs")
    once = assertion(client_id, rsa_key)
    assert token_request(first.test_client(), once).status_code == 200
    caplog.set_level(logging.WARNING, logger="fhir_server.auth")
    again = token_request(second.test_client(), once)
    assert (again.status_code, again.get_json()["error"]) == (401, "invalid_client")
    assert "replayed-jti" in denied_reasons(caplog)
    assert_audited_401(second.test_client(), "replayed-jti")
    # and a token the first worker issued is good at the second
    token = get_token(first.test_client(), client_id, rsa_key, "system/Patient.rs")
    assert second.test_client().get("/fhir/Patient", headers=bearer(token)).status_code == 200


def test_used_jtis_expire(auth: AuthService, auth_conn: Any) -> None:
    assert auth.replay.claim("c", "j1", time.time() - 3600)
    assert auth.replay.claim("c", "j2", time.time() + 60)  # purges j1, which had expired
    assert not auth.replay.claim("c", "j2", time.time() + 60)
    assert auth_conn.execute(select(func.count()).select_from(auth_jti)).scalar_one() == 1


def test_a_disabled_client_gets_no_token(http: FlaskClient, auth: AuthService, rsa_key: ClientKey) -> None:
    client_id = register(auth, rsa_key, "system/Patient.rs")
    auth.clients.set_active(client_id, False)
    res = token_request(http, assertion(client_id, rsa_key))
    assert (res.status_code, res.get_json()["error"]) == (401, "invalid_client")


def test_jwks_url_clients(http: FlaskClient, auth: AuthService, ec_key: ClientKey) -> None:
    fetched: list[str] = []

    def fetcher(url: str, timeout: float) -> dict[str, Any]:
        fetched.append(url)
        return ec_key.jwks

    auth.clients.fetcher = fetcher
    url = f"{TRUSTED}clients/one.json"
    auth.clients.add(Client("by-url", "Keys by URL", "health:RXX", "health-safeguarding", ("system/*.rs",),
                            jwks_url=url))
    with pytest.raises(ClientError, match="trusted"):
        auth.clients.add(Client("evil", "Evil", "health:RXX", "health-safeguarding", ("system/*.rs",),
                                jwks_url="https://keys.example.org.evil.example/jwks.json"))
    assert token_request(http, assertion("by-url", ec_key, headers={"jku": url})).status_code == 200
    assert token_request(http, assertion("by-url", ec_key)).status_code == 200
    assert fetched == [url], "the JWK Set is cached in the database"


# -- bearer tokens on API calls ------------------------------------------------------------------------

def test_no_token_is_401_with_a_challenge(http: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fhir_server.auth")
    res = http.get("/fhir/Patient")
    assert res.status_code == 401
    outcome = res.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "login"
    assert res.headers["WWW-Authenticate"].startswith('Bearer realm="fhir"')
    assert "error=" not in res.headers["WWW-Authenticate"], "RFC 6750: no error code without credentials"
    assert "no-credentials" in denied_reasons(caplog)
    assert http.post("/fhir", json={"resourceType": "Bundle", "type": "batch"}).status_code == 401


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a b", "token", "Bearer abc"])
def test_garbled_authorization_headers(http: FlaskClient, header: str) -> None:
    res = http.get("/fhir/Patient", headers={"Authorization": header})
    assert res.status_code == 401
    assert res.get_json()["issue"][0]["code"] == "login"
    assert "error=" in res.headers["WWW-Authenticate"]


REJECTED_TOKENS = {
    "alg-none": lambda auth, other: unsigned({"iss": auth.issuer, "aud": BASE, "sub": "c", "scope": "system/*.cruds",
                                              "exp": int(time.time()) + 60, "iat": int(time.time()), "jti": "x"},
                                             {"typ": "at+jwt"}),
    "key-confusion": lambda auth, other: hmac_signed(
        {"iss": auth.issuer, "aud": BASE, "sub": "c", "scope": "system/*.cruds", "exp": int(time.time()) + 60,
         "iat": int(time.time()), "jti": "x"},
        {"kid": auth.jwks()["keys"][0]["kid"], "typ": "at+jwt"},
        jwt.PyJWK(auth.jwks()["keys"][0]).key.public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)),
    "wrong-audience": lambda auth, other: server_token(auth, aud="https://other.example/fhir"),
    "wrong-issuer": lambda auth, other: server_token(auth, iss="https://other.example/auth"),
    "expired": lambda auth, other: server_token(auth, iat=int(time.time()) - 900, nbf=int(time.time()) - 900,
                                                exp=int(time.time()) - 600),
    "not-yet-valid": lambda auth, other: server_token(auth, nbf=int(time.time()) + 600),
    "iat-in-the-future": lambda auth, other: server_token(auth, iat=int(time.time()) + 600, nbf=None),
    "unknown-kid": lambda auth, other: server_token(auth, header={"kid": "no-such-kid"}),
    "bad-signature": lambda auth, other: tamper(server_token(auth, scope="system/Patient.r")),
    # another server's token: our iss and kid, its own key
    "another-servers-key": lambda auth, other: server_token(auth, signer=other.private),
    "lifetime-too-long": lambda auth, other: server_token(auth, exp=int(time.time()) + 86400),
    "not-an-access-token": lambda auth, other: server_token(auth, header={"typ": "JWT"}),
    "missing-jti": lambda auth, other: server_token(auth, jti=None),
    "garbage": lambda auth, other: "not.a.jwt",
}
EXPECTED_TOKEN_REASON = {"wrong-issuer": "untrusted-issuer", "iat-in-the-future": "not-yet-valid",
                         "another-servers-key": "bad-signature", "not-an-access-token": "wrong-type",
                         "missing-jti": "missing-claim", "garbage": "malformed"}


@pytest.mark.parametrize("case", sorted(REJECTED_TOKENS))
def test_rejected_access_tokens(case: str, http: FlaskClient, auth: AuthService, stranger_key: ClientKey,
                                caplog: pytest.LogCaptureFixture) -> None:
    token = REJECTED_TOKENS[case](auth, stranger_key)
    caplog.set_level(logging.WARNING, logger="fhir_server.auth")
    res = http.get("/fhir/Patient", headers=bearer(token))
    assert res.status_code == 401, res.get_data(as_text=True)
    assert res.get_json()["issue"][0]["code"] == "login"
    assert 'error="invalid_token"' in res.headers["WWW-Authenticate"]
    assert res.get_json()["resourceType"] == "OperationOutcome"
    assert EXPECTED_TOKEN_REASON.get(case, case) in denied_reasons(caplog)
    assert_audited_401(http, EXPECTED_TOKEN_REASON.get(case, case))


def test_a_client_assertion_is_not_an_access_token(http: FlaskClient, auth: AuthService, rsa_key: ClientKey) -> None:
    client_id = register(auth, rsa_key, "system/*.cruds")
    res = http.get("/fhir/Patient", headers=bearer(assertion(client_id, rsa_key, aud=BASE)))
    assert res.status_code == 401


def test_a_well_formed_server_token_is_accepted(http: FlaskClient, auth: AuthService) -> None:
    """The control for the rejections above: the same helper, unchanged, passes."""
    assert http.get("/fhir/Patient", headers=bearer(server_token(auth))).status_code == 200


# -- scopes ----------------------------------------------------------------------------------------

@pytest.fixture
def tokens(http: FlaskClient, auth: AuthService, rsa_key: ClientKey) -> dict[str, str]:
    """Tokens granted the scopes named by their keys."""
    client_id = register(auth, rsa_key, "system/*.cruds")
    out = {}
    for scope in ("system/Patient.rs", "system/Patient.cruds", "system/Patient.ru", "system/Observation.rs",
                  "system/Patient.cruds system/Observation.rs", "system/*.read system/Patient.write",
                  "system/*.cruds"):
        out[scope] = get_token(http, client_id, rsa_key, scope)
    return out


def test_read_and_search_scopes(http: FlaskClient, tokens: dict[str, str]) -> None:
    admin = tokens["system/*.cruds"]
    pid = post(http, "Patient", patient(), admin).get_json()["id"]
    reader = tokens["system/Patient.rs"]
    assert http.get(f"/fhir/Patient/{pid}", headers=bearer(reader)).status_code == 200
    assert http.get(f"/fhir/Patient/{pid}/_history/1", headers=bearer(reader)).status_code == 200
    assert http.get("/fhir/Patient?family=okafor", headers=bearer(reader)).get_json()["total"] == 1
    other = http.get(f"/fhir/Patient/{pid}", headers=bearer(tokens["system/Observation.rs"]))
    assert other.status_code == 403
    assert other.get_json()["issue"][0]["code"] == "forbidden"
    assert "system/Patient.r" in other.get_json()["issue"][0]["diagnostics"]
    assert 'error="insufficient_scope"' in other.headers["WWW-Authenticate"]
    assert http.get("/fhir", headers=bearer(reader)).status_code == 403, "whole-system search needs system/*.s"
    assert http.get("/fhir?_type=Patient", headers=bearer(reader)).status_code == 200
    assert http.get("/fhir/_history", headers=bearer(reader)).status_code == 403


def test_write_scopes(http: FlaskClient, tokens: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    reader, writer = tokens["system/Patient.rs"], tokens["system/Patient.cruds"]
    caplog.set_level(logging.WARNING, logger="fhir_server.auth")
    refused = post(http, "Patient", patient(), reader)
    assert refused.status_code == 403
    assert "system/Patient.c" in refused.get_json()["issue"][0]["diagnostics"]
    assert "insufficient-scope" in denied_reasons(caplog)
    created = post(http, "Patient", patient(), writer)
    assert created.status_code == 201
    pid = created.get_json()["id"]
    assert put(http, f"Patient/{pid}", patient(id=pid, gender="male"), reader).status_code == 403
    assert put(http, f"Patient/{pid}", patient(id=pid, gender="male"), writer).status_code == 200
    assert http.delete(f"/fhir/Patient/{pid}", headers=bearer(reader)).status_code == 403
    assert http.delete(f"/fhir/Patient/{pid}", headers=bearer(writer)).status_code == 204
    assert http.get(f"/fhir/Patient/{pid}", headers=bearer(reader)).status_code == 410


def test_update_as_create_needs_create(http: FlaskClient, tokens: dict[str, str]) -> None:
    no_create = tokens["system/Patient.ru"]
    refused = put(http, "Patient/brand-new", patient(id="brand-new"), no_create)
    assert refused.status_code == 403
    assert http.get("/fhir/Patient/brand-new", headers=bearer(no_create)).status_code == 404, "rolled back"
    assert put(http, "Patient/brand-new", patient(id="brand-new"), tokens["system/Patient.cruds"]).status_code == 201
    assert put(http, "Patient/brand-new", patient(id="brand-new", gender="male"), no_create).status_code == 200


def test_includes_and_chains_need_their_types(http: FlaskClient, tokens: dict[str, str]) -> None:
    admin = tokens["system/*.cruds"]
    pid = post(http, "Patient", patient(), admin).get_json()["id"]
    post(http, "Observation", observation(f"Patient/{pid}"), admin)
    obs_only, both = tokens["system/Observation.rs"], tokens["system/Patient.cruds system/Observation.rs"]
    assert http.get("/fhir/Observation", headers=bearer(obs_only)).get_json()["total"] == 1
    for query in ("_include=Observation:subject:Patient", "subject:Patient.family=okafor",
                  "_filter=subject.family%20eq%20okafor"):
        assert http.get(f"/fhir/Observation?{query}", headers=bearer(obs_only)).status_code == 403, query
        assert http.get(f"/fhir/Observation?{query}", headers=bearer(both)).status_code == 200, query
    assert http.get("/fhir/Patient?_revinclude=Observation:subject",
                    headers=bearer(tokens["system/Patient.rs"])).status_code == 403


def test_operations_need_their_types(http: FlaskClient, tokens: dict[str, str]) -> None:
    res = post(http, "Patient/$validate", patient(), tokens["system/Observation.rs"])
    assert res.status_code == 403
    assert post(http, "Patient/$validate", patient(), tokens["system/Patient.rs"]).status_code == 200


def test_v1_scopes(http: FlaskClient, tokens: dict[str, str]) -> None:
    v1 = tokens["system/*.read system/Patient.write"]
    created = post(http, "Patient", patient(), v1)
    assert created.status_code == 201
    assert http.get("/fhir/Observation", headers=bearer(v1)).status_code == 200
    assert http.get("/fhir", headers=bearer(v1)).status_code == 200, "*.read includes whole-system search"
    assert post(http, "Observation", observation(f"Patient/{created.get_json()['id']}"), v1).status_code == 403


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_an_entry_beyond_the_scopes_fails_the_whole_transaction(http: FlaskClient, tokens: dict[str, str]) -> None:
    token = tokens["system/Patient.cruds system/Observation.rs"]
    full_url = f"urn:uuid:{uuid.uuid4()}"
    sent = bundle("transaction",
                  {"fullUrl": full_url, "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
                  {"resource": observation(full_url), "request": {"method": "POST", "url": "Observation"}})
    res = post(http, "", sent, token)
    assert res.status_code == 403
    issue = res.get_json()["issue"][0]
    assert issue["expression"][0] == "Bundle.entry[1]"
    assert "system/Observation.c" in issue["diagnostics"]
    assert http.get("/fhir/Patient", headers=bearer(token)).get_json()["total"] == 0, "nothing was written"
    ok = bundle("transaction", {"fullUrl": full_url, "resource": patient(),
                                "request": {"method": "POST", "url": "Patient"}})
    assert post(http, "", ok, token).status_code == 200


def test_in_a_batch_only_the_entry_beyond_the_scopes_fails(http: FlaskClient, tokens: dict[str, str]) -> None:
    token = tokens["system/Patient.cruds system/Observation.rs"]
    sent = bundle("batch", {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
                  {"resource": observation("Patient/x"), "request": {"method": "POST", "url": "Observation"}})
    res = post(http, "", sent, token)
    assert res.status_code == 200
    statuses = [e["response"]["status"] for e in res.get_json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("403")


# -- the development issuer, purpose of use, break-glass ------------------------------------------------

def test_dev_tokens(http: FlaskClient, auth: AuthService) -> None:
    token = auth.mint_dev_token(client_id="demo", scope="user/*.cruds", practitioner="123", agency="la:201",
                                role="social-worker")
    assert post(http, "Patient", patient(), token).status_code == 201
    assert http.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == f"{BASE}/auth/dev"
    assert (claims["practitioner"], claims["agency"], claims["role"]) == ("123", "la:201", "social-worker")


def test_dev_tokens_are_refused_when_the_dev_issuer_is_off(auth_conn: Any, auth_settings: Settings,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    on = create_app(auth_settings, connection=auth_conn)
    token = on.extensions["fhir"].auth.mint_dev_token(client_id="demo", scope="system/*.cruds")
    off = create_app(auth_settings.with_overrides(auth_dev_issuer=False), connection=auth_conn)
    caplog.set_level(logging.WARNING, logger="fhir_server.auth")
    assert off.test_client().get("/fhir/Patient", headers=bearer(token)).status_code == 401
    assert "dev-issuer-disabled" in denied_reasons(caplog)
    from fhir_server.auth.errors import AccessDenied
    with pytest.raises(AccessDenied):
        off.extensions["fhir"].auth.mint_dev_token(client_id="demo", scope="system/*.cruds")


def test_purpose_of_use_and_break_glass(http: FlaskClient, auth: AuthService,
                                        caplog: pytest.LogCaptureFixture) -> None:
    any_purpose = auth.mint_dev_token(client_id="demo", scope="user/*.rs", practitioner="p1", agency="la:201",
                                      role="mash-practitioner")  # a role the policy lets break the glass
    assert http.get("/fhir/Patient", headers=bearer(any_purpose, **{"X-Purpose-Of-Use": "CAREMGT"})).status_code == 200
    caplog.set_level(logging.WARNING, logger="fhir_server.auth")
    no_reason = http.get("/fhir/Patient", headers=bearer(any_purpose, **{"X-Purpose-Of-Use": "BTG"}))
    assert no_reason.status_code == 403
    assert "X-Break-Glass-Reason" in no_reason.get_json()["issue"][0]["diagnostics"]
    assert "break-glass-without-reason" in denied_reasons(caplog)
    with_reason = http.get("/fhir/Patient", headers=bearer(any_purpose, **{
        "X-Purpose-Of-Use": "BTG", "X-Break-Glass-Reason": "Child at A&E out of hours, no MASH available"}))
    assert with_reason.status_code == 200
    restricted = auth.mint_dev_token(client_id="demo", scope="user/*.rs", purpose="CAREMGT")
    assert http.get("/fhir/Patient", headers=bearer(restricted, **{"X-Purpose-Of-Use": "GOV"})).status_code == 403
    assert http.get("/fhir/Patient", headers=bearer(restricted)).status_code == 200
    assert http.get("/fhir/Patient", headers=bearer(any_purpose, **{"X-Purpose-Of-Use": "no spaces"})).status_code \
        == 400


def test_the_request_context(auth: AuthService) -> None:
    token = auth.mint_dev_token(client_id="demo", scope="user/Patient.rs", practitioner="Practitioner/77",
                                agency="education:201", role="school-dsl", purpose="CAREMGT")
    info = events.RequestInfo("GET", "Patient", "10.0.0.9", None, "req-1")
    ctx = auth.authenticate("GET", "Patient", {"authorization": f"Bearer {token}"}, info)
    assert ctx.authenticated and ctx.issuer == "dev" and ctx.is_user
    assert (ctx.client_id, ctx.agency, ctx.role, ctx.practitioner) == ("demo", "education:201", "school-dsl",
                                                                       "Practitioner/77")
    assert ctx.scopes == frozenset({"user/Patient.rs"})
    assert ctx.purpose_of_use == "CAREMGT" and not ctx.break_glass
    assert (ctx.remote_addr, ctx.request_id) == ("10.0.0.9", "req-1")
    assert ctx.token_id == jwt.decode(token, options={"verify_signature": False})["jti"]


def test_openid_connect_practitioner_tokens(auth_conn: Any, auth_settings: Settings, rsa_key: ClientKey,
                                           tmp_path: Any) -> None:
    """Production's practitioners: tokens of an external OpenID Connect provider, verified with its
    JWK Set (here a file; FHIR_AUTH_OIDC_JWKS_URL fetches one from a trusted URL)."""
    issuer = "https://idp.example.org/realms/la201"
    jwks_file = tmp_path / "idp-jwks.json"
    jwks_file.write_text(simplejson.dumps({"keys": [{**rsa_key.jwk, "alg": "RS256"}]}))
    app = create_app(auth_settings.with_overrides(auth_dev_issuer=False, auth_oidc_issuer=issuer,
                                                  auth_oidc_jwks=str(jwks_file)), connection=auth_conn)
    http = app.test_client()
    now = int(time.time())
    claims = {"iss": issuer, "aud": BASE, "sub": "u-1", "azp": "mash-portal", "iat": now, "exp": now + 600,
              "fhirUser": "https://fhir.example.org/fhir/Practitioner/9", "agency": "la:201",
              "role": "mash-practitioner", "scope": "openid fhirUser user/Patient.rs"}

    def idp_token(**changes: Any) -> str:
        return jwt.encode({**claims, **changes}, rsa_key.private, algorithm="RS256", headers={"kid": rsa_key.kid})

    assert http.get("/fhir/Patient", headers=bearer(idp_token())).status_code == 200
    assert post(http, "Patient", patient(), idp_token()).status_code == 403
    info = events.RequestInfo("GET", "Patient")
    ctx = app.extensions["fhir"].auth.authenticate("GET", "Patient", {"authorization": f"Bearer {idp_token()}"}, info)
    assert (ctx.issuer, ctx.client_id, ctx.practitioner, ctx.agency) == (issuer, "mash-portal", "Practitioner/9",
                                                                          "la:201")
    assert http.get("/fhir/Patient", headers=bearer(idp_token(aud="https://other"))).status_code == 401
    assert http.get("/fhir/Patient", headers=bearer(idp_token(iss="https://idp.example.org/realms/x"))).status_code \
        == 401


# -- key rotation ----------------------------------------------------------------------------------

def test_key_rotation(http: FlaskClient, auth: AuthService, rsa_key: ClientKey) -> None:
    client_id = register(auth, rsa_key, "system/Patient.rs")
    old_token = get_token(http, client_id, rsa_key, "system/Patient.rs")
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_key = auth.server_keys.rotate("ES384")
    new_token = get_token(http, client_id, rsa_key, "system/Patient.rs")
    assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid != old_kid, "the newest key signs"
    assert {k["kid"] for k in http.get("/fhir/.well-known/jwks.json").get_json()["keys"]} == {old_kid, new_key.kid}
    assert http.get("/fhir/Patient", headers=bearer(old_token)).status_code == 200, "older keys still verify"
    assert auth.server_keys.remove(old_kid)
    assert http.get("/fhir/Patient", headers=bearer(old_token)).status_code == 401, "a removed key verifies nothing"
    assert http.get("/fhir/Patient", headers=bearer(new_token)).status_code == 200


def test_configured_signing_keys(auth_conn: Any, auth_settings: Settings, rsa_key: ClientKey, tmp_path: Any) -> None:
    """FHIR_AUTH_SIGNING_KEY: PEM files, the first signs, all verify."""
    pems = []
    for name, key in (("new.pem", ec.generate_private_key(ec.SECP384R1())),
                      ("old.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048))):
        path = tmp_path / name
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        pems.append(str(path))
    app = create_app(auth_settings.with_overrides(auth_signing_key=",".join(pems)), connection=auth_conn)
    auth = app.extensions["fhir"].auth
    ring = auth.server_keys.ring()
    assert [k.alg for k in ring.keys] == ["ES384", "RS384"]
    client_id = register(auth, rsa_key, "system/Patient.rs")
    token = get_token(app.test_client(), client_id, rsa_key, "system/Patient.rs")
    assert jwt.get_unverified_header(token)["alg"] == "ES384"
    assert app.test_client().get("/fhir/Patient", headers=bearer(token)).status_code == 200


# -- auth off --------------------------------------------------------------------------------------

def test_with_auth_disabled_no_token_is_needed(client: FlaskClient) -> None:
    """The `client` fixture is the general suite's app: authentication off."""
    assert client.get("/fhir/Patient").status_code == 200
    assert client.get("/fhir/Patient", headers={"Authorization": "Bearer garbage"}).status_code == 200


# -- the command line, and a real multi-worker server ----------------------------------------------

from tests.functional.test_cli import free_port, migrated_database_url, serving  # noqa: E402,F401 - fixtures
from tests.integration.test_migrations import empty_database_url, scratch_postgres_url  # noqa: E402,F401


def test_cli_clients_dev_tokens_and_keys(migrated_database_url: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                         capsys: pytest.CaptureFixture[str], tmp_path: Any,
                                         rsa_key: ClientKey) -> None:
    from fhir_server.cli import main

    monkeypatch.delenv("FHIR_AUTH_DEV_ISSUER", raising=False)
    monkeypatch.setenv("FHIR_BASE_URL", BASE)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(simplejson.dumps(rsa_key.jwks))
    add = ["client", "add", "--id", "mash-app", "--name", "MASH app", "--agency", "la:201", "--role",
           "mash-practitioner", "--scopes", "system/*.rs system/Flag.cruds", "--jwks", str(jwks_file)]
    assert main(add) == 0
    assert "Registered client mash-app" in capsys.readouterr().out
    assert main(add) == 1
    assert "already registered" in capsys.readouterr().err
    assert main([*add[:7], "nowhere", *add[8:]]) == 1
    assert "kind:code" in capsys.readouterr().err
    assert main(["client", "list"]) == 0
    assert "mash-app\tMASH app\tla:201\tmash-practitioner" in capsys.readouterr().out

    assert main(["dev-token", "--client", "mash-app", "--scope", "user/*.rs"]) == 1
    assert "FHIR_AUTH_DEV_ISSUER" in capsys.readouterr().err
    monkeypatch.setenv("FHIR_AUTH_DEV_ISSUER", "1")
    assert main(["dev-token", "--client", "mash-app", "--scope", "user/*.rs", "--practitioner", "42",
                 "--purpose", "CAREMGT"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["agency"], claims["role"], claims["practitioner"]) == ("la:201", "mash-practitioner", "42")
    assert main(["dev-token", "--client", "x", "--scope", "user/Patient.zz"]) == 1
    capsys.readouterr()

    app = create_app(Settings.from_env())
    try:
        http = app.test_client()
        assert http.get("/fhir/Patient", headers=bearer(token)).status_code == 200
        assert http.get("/fhir/Patient").status_code == 401
        client_token = get_token(http, "mash-app", rsa_key, "system/Flag.cruds")
        assert main(["auth-key", "rotate", "--alg", "ES384"]) == 0
        capsys.readouterr()
        assert main(["auth-key", "list"]) == 0
        listed = capsys.readouterr().out.splitlines()
        assert len(listed) == 2 and listed[0].endswith("signs") and "ES384" in listed[0]
        old_kid = jwt.get_unverified_header(client_token)["kid"]
        app.extensions["fhir"].auth.server_keys.refresh()
        assert http.get("/fhir/Flag", headers=bearer(client_token)).status_code == 200
        assert main(["auth-key", "remove", "--", old_kid]) == 0  # "--": a thumbprint may begin with "-"
        app.extensions["fhir"].auth.server_keys.refresh()  # a running worker would after 30 s
        assert http.get("/fhir/Flag", headers=bearer(client_token)).status_code == 401
    finally:
        app.extensions["fhir"].engine.dispose()


def test_serve_with_the_dev_issuer(migrated_database_url: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                   capsys: pytest.CaptureFixture[str], tmp_path: Any, ec_key: ClientKey) -> None:
    """As `make run` serves: two gunicorn workers, authentication on, the development issuer on.
    Whichever worker answers, tokens, keys and used assertion ids are the same (the database's)."""
    import os

    import requests

    from fhir_server.cli import main

    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    monkeypatch.setenv("FHIR_BASE_URL", base)
    monkeypatch.setenv("FHIR_AUTH_DEV_ISSUER", "1")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(simplejson.dumps(ec_key.jwks))
    assert main(["client", "add", "--id", "police-feed", "--name", "Police feed", "--agency", "police:01",
                 "--role", "police", "--scopes", "system/Patient.cruds", "--jwks", str(jwks_file)]) == 0
    assert main(["dev-token", "--client", "demo", "--scope", "user/*.cruds", "--practitioner", "demo"]) == 0
    dev_token = capsys.readouterr().out.strip().splitlines()[-1]
    env = {**os.environ}
    env.pop("FHIR_BROKER_URL", None)
    env.pop("FHIR_AUTH_ENABLED", None)
    with serving(port, env):
        assert requests.get(f"{base}/Patient", timeout=30).status_code == 401
        assert requests.get(f"{base}/metadata", timeout=30).status_code == 200
        for _ in range(8):  # keep-alive off: each request may land on either worker
            res = requests.get(f"{base}/Patient", headers={**bearer(dev_token), "Connection": "close"}, timeout=30)
            assert res.status_code == 200, res.text
        token_url = f"{base}/auth/token"
        once = assertion("police-feed", ec_key, aud=token_url)
        form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": once, "scope": "system/Patient.cruds"}
        granted = requests.post(token_url, data=form, headers={"Connection": "close"}, timeout=30)
        assert granted.status_code == 200, granted.text
        for _ in range(4):
            replay = requests.post(token_url, data=form, headers={"Connection": "close"}, timeout=30)
            assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"
        token = granted.json()["access_token"]
        for _ in range(4):
            created = requests.post(f"{base}/Patient", json=patient(), timeout=30,
                                    headers={**bearer(token), "Connection": "close"})
            assert created.status_code == 201, created.text


def test_an_async_job_is_visible_only_to_the_client_that_started_it(http: FlaskClient, auth: AuthService,
                                                                     auth_conn: Any, rsa_key: ClientKey) -> None:
    from fhir_server import jobs

    owner = register(auth, rsa_key, "system/*.cruds")
    other = register(auth, rsa_key, "system/*.cruds")
    job_id = jobs.create_job(auth_conn, "import-agency-data", {"format": "cin-census-xml"}, [], client_id=owner)
    assert http.get(f"/fhir/_async/{job_id}",
                    headers=bearer(get_token(http, owner, rsa_key, "system/*.cruds"))).status_code == 202
    stranger = bearer(get_token(http, other, rsa_key, "system/*.cruds"))
    assert http.get(f"/fhir/_async/{job_id}", headers=stranger).status_code == 404
    assert http.delete(f"/fhir/_async/{job_id}", headers=stranger).status_code == 404
    assert http.get(f"/fhir/_async/{job_id}").status_code == 401
