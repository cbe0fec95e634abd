"""The authentication service: verifies bearer tokens into a RequestContext, runs the SMART token
endpoint, publishes the SMART configuration and JWK Set, and mints development tokens.

Built once per process by ``build_services``; every piece of state it relies on (clients, keys,
used ``jti`` values, fetched JWK Sets) is in the database, so any worker can answer any request.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine

from ..repository.context import RequestContext
from . import events
from .assertions import ASSERTION_ALGS, ASSERTION_TYPE, ReplayGuard, verify_client_assertion
from .clients import ClientRegistry, fetch_jwks
from .context import PURPOSE, context_from_token
from .errors import AccessDenied, InvalidToken, OAuthError
from .issuers import ACCESS_TOKEN_TYPE, Issuer, KeyStoreIssuer, OidcIssuer, TrustedIssuers
from .keys import DEV, SERVER, KeyStore
from .scopes import ScopeError, ScopeSet, split_scopes
from .store import AuthDatabase
from .tokens import TokenRejected

if TYPE_CHECKING:
    from ..config import Settings
    from .clients import Fetcher

TOKEN_PATH = "auth/token"
SMART_CONFIGURATION_PATH = ".well-known/smart-configuration"
JWKS_PATH = ".well-known/jwks.json"
DEV_MAX_LIFETIME = 24 * 3600  # a development token lives at most a day
OIDC_MAX_LIFETIME = 24 * 3600
# What a request may reach without a token: paths relative to the FHIR base (GET only).
PUBLIC_PATHS = frozenset({"metadata"})


class AuthService:
    def __init__(self, settings: "Settings", engine: Engine, *, connection: Connection | None = None,
                 fetcher: "Fetcher" = fetch_jwks) -> None:
        self.settings = settings
        self.db = AuthDatabase(engine, connection)
        self.server_keys = KeyStore(self.db, SERVER, configured=settings.auth_signing_key,
                                    cache_seconds=settings.auth_key_cache_seconds)
        self.dev_keys = KeyStore(self.db, DEV, cache_seconds=settings.auth_key_cache_seconds)
        self.clients = ClientRegistry(self.db, trusted_urls=settings.auth_trusted_jwks_urls,
                                      jwks_timeout=settings.auth_jwks_timeout,
                                      jwks_cache_seconds=settings.auth_jwks_cache_seconds, fetcher=fetcher)
        self.replay = ReplayGuard(self.db)
        self.issuers = self._trusted_issuers()

    # -- URLs and identities ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/{TOKEN_PATH}"

    @property
    def issuer(self) -> str:
        """``iss`` of the access tokens the token endpoint issues."""
        return f"{self.base_url}/auth"

    @property
    def dev_issuer(self) -> str:
        """``iss`` of development tokens (trusted only with FHIR_AUTH_DEV_ISSUER on)."""
        return f"{self.base_url}/auth/dev"

    def _trusted_issuers(self) -> TrustedIssuers:
        s = self.settings
        issuers: list[Issuer] = [KeyStoreIssuer(SERVER, self.issuer, self.server_keys, audience=self.base_url,
                                                max_lifetime=s.auth_token_lifetime)]
        disabled: dict[str, str] = {}
        if s.auth_dev_issuer:
            issuers.append(KeyStoreIssuer(DEV, self.dev_issuer, self.dev_keys, audience=self.base_url,
                                          max_lifetime=DEV_MAX_LIFETIME))
        else:
            disabled[self.dev_issuer] = "dev-issuer-disabled"
        if s.auth_oidc_issuer and s.auth_oidc_jwks:
            issuers.append(OidcIssuer(s.auth_oidc_issuer, s.auth_oidc_jwks,
                                      audience=s.auth_oidc_audience or self.base_url, clients=self.clients,
                                      max_lifetime=OIDC_MAX_LIFETIME))
        return TrustedIssuers(issuers, known_but_disabled=disabled)

    # -- API requests -----------------------------------------------------------------------------

    def authenticate(self, method: str, path: str, headers: Mapping[str, str],
                     info: events.RequestInfo) -> RequestContext:
        """The context of one API request (``headers`` with lower-case names).

        With authentication off: an unauthenticated context (no guard is installed either). On:
        a verified bearer token, or none at all for the public paths; anything else is a 401
        (RFC 6750 §3.1) recorded by ``events.denied``.
        """
        anonymous = RequestContext(self.base_url, remote_addr=info.remote_addr)
        if info.request_id:
            anonymous = anonymous.with_changes(request_id=info.request_id)
        if not self.settings.auth_enabled:
            return anonymous
        authorization = headers.get("authorization")
        if authorization is None:
            if method in ("GET", "HEAD") and path.strip("/") in PUBLIC_PATHS:
                return anonymous
            events.denied("no-credentials", None, info)
            raise InvalidToken("This request needs a bearer token (Authorization: Bearer ...); see "
                               f"{self.base_url}/{SMART_CONFIGURATION_PATH}", reason="no-credentials",
                               oauth_error=None)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            events.denied("bad-authorization-header", None, info, f"scheme {scheme[:20]!r}")
            raise InvalidToken("The Authorization header must be 'Bearer <access token>'",
                               reason="bad-authorization-header", oauth_error="invalid_request")
        try:
            verified = self.issuers.verify(token)
        except TokenRejected as exc:
            events.denied(exc.reason, None, info, exc.message)
            raise InvalidToken(exc.message, reason=exc.reason) from exc
        try:
            return context_from_token(verified.issuer, verified.claims, headers, base_url=self.base_url,
                                      request_id=anonymous.request_id, remote_addr=info.remote_addr)
        except AccessDenied as exc:
            client = verified.claims.get("client_id") or verified.claims.get("sub")
            events.denied(exc.reason, str(client) if client else None, info, exc.diagnostics)
            raise

    # -- the token endpoint -----------------------------------------------------------------------

    def token(self, form: Mapping[str, str], info: events.RequestInfo) -> dict[str, Any]:
        """``POST [base]/auth/token``, SMART Backend Services (backend-services.html#obtain-access-token):
        ``grant_type=client_credentials`` with a ``private_key_jwt`` client assertion. Returns the
        access token response; raises :class:`OAuthError` (logged by ``events.denied``)."""
        try:
            return self._token(form, info)
        except OAuthError as exc:
            events.denied(exc.reason, exc.client_id, info, exc.description, endpoint="token")
            raise

    def _token(self, form: Mapping[str, str], info: events.RequestInfo) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials",
                             reason="unsupported-grant-type")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}",
                             reason="bad-assertion-type")
        assertion = form.get("client_assertion")
        if not assertion:
            raise OAuthError("invalid_request", "client_assertion is required", reason="no-assertion")
        if not form.get("scope"):
            raise OAuthError("invalid_request", "scope is required (e.g. system/Patient.rs)", reason="no-scope")
        try:
            requested = ScopeSet.parse(form["scope"], strict=True)
        except ScopeError as exc:
            raise OAuthError("invalid_scope", str(exc), reason="bad-scope") from exc
        try:
            verified = verify_client_assertion(assertion, token_url=self.token_url, clients=self.clients,
                                               replay=self.replay)
        except TokenRejected as exc:
            raise OAuthError("invalid_client", exc.message, reason=exc.reason, client_id=_claimed(assertion)) from exc
        client = verified.client
        granted = requested.intersect(client.scope_set)
        if not granted:
            raise OAuthError("invalid_scope", f"None of the requested scopes is allowed for client "
                                              f"{client.client_id!r} (registered: {' '.join(client.scopes)})",
                             reason="no-scope-granted", client_id=client.client_id)
        scope = " ".join(granted)
        now = int(time.time())
        lifetime = self.settings.auth_token_lifetime
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.base_url, "sub": client.client_id, "client_id": client.client_id,
            "scope": scope, "agency": client.agency, "role": client.role,
            "iat": now, "nbf": now, "exp": now + lifetime, "jti": uuid.uuid4().hex,
        }
        purposes = split_scopes(form.get("purpose_of_use"))
        if any(not PURPOSE.match(p) for p in purposes):
            raise OAuthError("invalid_request", "purpose_of_use takes purpose-of-use codes (e.g. CAREMGT), "
                                                "separated by spaces", reason="bad-purpose", client_id=client.client_id)
        if purposes:
            claims["purpose"] = " ".join(purposes)  # our extension: the purposes this token may serve
        token = self.server_keys.ring().signer.sign(claims, typ=ACCESS_TOKEN_TYPE)
        events.token_issued(client.client_id, scope, claims["jti"], info, agency=client.agency, role=client.role)
        return {"access_token": token, "token_type": "bearer", "expires_in": lifetime, "scope": scope}

    # -- published metadata -----------------------------------------------------------------------

    def smart_configuration(self) -> dict[str, Any]:
        """``[base]/.well-known/smart-configuration`` (SMART App Launch conformance.html)."""
        scopes = ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write"]
        if self.settings.auth_dev_issuer or self.settings.auth_oidc_issuer:
            scopes += ["user/*.cruds", "user/*.rs", "user/*.read", "user/*.write"]
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.base_url}/{JWKS_PATH}",
            "token_endpoint": self.token_url,
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
            "grant_types_supported": ["client_credentials"],
            "scopes_supported": scopes,
            "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
        }

    def jwks(self) -> dict[str, Any]:
        """``[base]/.well-known/jwks.json``: the public keys our access tokens verify with."""
        return self.server_keys.ring().jwks()

    def capability_security(self) -> dict[str, Any]:
        """CapabilityStatement.rest.security for SMART (conformance.html#using-cors and the
        oauth-uris extension of SMART 1, still read by many clients)."""
        return {
            "cors": False,
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                     "code": "SMART-on-FHIR"}],
                         "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"}],
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": self.token_url}],
            }],
            "description": "SMART Backend Services (client_credentials with a private_key_jwt assertion, RS384 or "
                           f"ES384); configuration at {self.base_url}/{SMART_CONFIGURATION_PATH}",
        }

    # -- the development issuer -------------------------------------------------------------------

    def mint_dev_token(self, *, client_id: str, scope: str, practitioner: str | None = None,
                       purpose: str | None = None, agency: str | None = None, role: str | None = None,
                       lifetime: int = 3600) -> str:
        """A token of the development issuer (``fhir-server dev-token``). Refused unless
        FHIR_AUTH_DEV_ISSUER is on: the server would not accept it anyway, and a production
        database should never hold development keys."""
        if not self.settings.auth_dev_issuer:
            raise AccessDenied("The development issuer is disabled (set FHIR_AUTH_DEV_ISSUER=1, never in production)",
                               reason="dev-issuer-disabled")
        ScopeSet.parse(scope, strict=True)  # ScopeError for a malformed scope
        if purpose is not None and not all(PURPOSE.match(p) for p in split_scopes(purpose)):
            raise ValueError(f"{purpose!r} is not a purpose-of-use code (e.g. CAREMGT, BTG)")
        if not 0 < lifetime <= DEV_MAX_LIFETIME:
            raise ValueError(f"A development token lives 1 to {DEV_MAX_LIFETIME} seconds")
        client = self.clients.get(client_id)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.dev_issuer, "aud": self.base_url, "sub": practitioner or client_id, "client_id": client_id,
            "scope": " ".join(split_scopes(scope)), "iat": now, "nbf": now, "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "agency": agency or (client.agency if client else None),
            "role": role or (client.role if client else None),
            "practitioner": practitioner, "purpose": purpose,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return self.dev_keys.ring().signer.sign(claims, typ=ACCESS_TOKEN_TYPE)


def _claimed(assertion: str) -> str | None:
    """The client id an assertion claims (unverified: for the log line only)."""
    from .tokens import unverified_parts

    try:
        iss = unverified_parts(assertion)[1].get("iss")
    except TokenRejected:
        return None
    return iss if isinstance(iss, str) else None


def with_security(statement: Callable[[], dict[str, Any]], auth: AuthService) -> Callable[[], dict[str, Any]]:
    """Wrap a CapabilityStatement builder so that ``rest[0].security`` advertises SMART."""
    def build() -> dict[str, Any]:
        built = statement()
        rest = [dict(r) for r in built.get("rest") or []]
        if rest:
            rest[0]["security"] = auth.capability_security()
        return {**built, "rest": rest}
    return build
