"""The HTTP side of authentication (Flask): SMART discovery, the JWK Set, the token endpoint, the
request context of each FHIR request, and the ``WWW-Authenticate`` challenge of 401/403 answers.

- ``GET [base]/.well-known/smart-configuration`` (conformance.html), public;
- ``GET [base]/.well-known/jwks.json``: the public keys of our access tokens, public;
- ``POST [base]/auth/token`` (backend-services.html#obtain-access-token), public: answers OAuth JSON
  (RFC 6749 §5.1/§5.2) with ``Cache-Control: no-store``.
"""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, request

from ..api.errors import outcome_response
from ..fhir import jsonio
from ..repository.context import RequestContext
from . import events
from .errors import InsufficientScope, InvalidToken, OAuthError
from .service import JWKS_PATH, SMART_CONFIGURATION_PATH, TOKEN_PATH

if TYPE_CHECKING:
    from .. import Services

log = logging.getLogger(__name__)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_TOKEN_REQUEST_BYTES = 64 * 1024


def request_info() -> events.RequestInfo:
    """What the log line and the RequestContext keep of the HTTP request. ``X-Request-Id`` (set by a
    proxy) becomes the request id when it is a plain token, so log lines can be correlated."""
    request_id = request.headers.get("X-Request-Id")
    if request_id is not None and not REQUEST_ID.match(request_id):
        request_id = None
    return events.RequestInfo(request.method, request.path, request.remote_addr,
                              (request.user_agent.string or None) if request.user_agent else None, request_id)


def request_context(services: "Services", path: str) -> RequestContext:
    """The RequestContext of the current FHIR request (api/http.py calls this for every request)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    return services.auth.authenticate(request.method, path, headers, request_info())


def _services() -> "Services":
    return current_app.extensions["fhir"]


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonio.dumps(body), status=status, headers=headers, content_type="application/json")


def make_blueprint(url_prefix: str) -> Blueprint:
    bp = Blueprint("smart", __name__, url_prefix=url_prefix or None)

    @bp.get(f"/{SMART_CONFIGURATION_PATH}")
    def smart_configuration() -> Response:
        return _json(_services().auth.smart_configuration())

    @bp.get(f"/{JWKS_PATH}")
    def jwks() -> Response:
        return _json(_services().auth.jwks(), headers={"Cache-Control": "public, max-age=60"})

    @bp.post(f"/{TOKEN_PATH}")
    def token() -> Response:
        if (request.content_length or 0) > MAX_TOKEN_REQUEST_BYTES:
            return _json({"error": "invalid_request", "error_description": "The request is too large"}, 400, NO_STORE)
        media = (request.mimetype or "").lower()
        if media != "application/x-www-form-urlencoded":
            err = OAuthError("invalid_request", "The token request is application/x-www-form-urlencoded "
                                                "(RFC 6749 §4.4.2)", reason="bad-content-type")
            events.denied(err.reason, None, request_info(), err.description, endpoint="token")
            return _json(err.body(), err.status, NO_STORE)
        form = {k: v for k, v in request.form.items()}
        try:
            body = _services().auth.token(form, request_info())
        except OAuthError as exc:
            headers = dict(NO_STORE)
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Bearer error="invalid_client"'
            return _json(exc.body(), exc.status, headers)
        return _json(body, 200, NO_STORE)

    return bp


def _challenge(error: str | None, description: str, scope: str | None = None) -> str:
    """RFC 6750 §3: ``Bearer realm="...", error="...", error_description="..."``."""
    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', "'")[:300] + '"'

    parts = [f"realm={quoted('fhir')}"]
    if error:
        parts.append(f"error={quoted(error)}")
        parts.append(f"error_description={quoted(description)}")
    if scope:
        parts.append(f"scope={quoted(scope)}")
    return "Bearer " + ", ".join(parts)


def register(app: Flask, url_prefix: str) -> None:
    """The SMART endpoints, and challenges on 401/403 (more specific than the FhirError handler)."""
    app.register_blueprint(make_blueprint(url_prefix))
    settings = app.extensions["fhir"].settings
    if not settings.auth_enabled and not settings.testing:
        log.warning("Authentication is OFF (FHIR_AUTH_ENABLED=0): every request is served without a token")
    elif settings.auth_enabled and settings.auth_dev_issuer and not settings.testing:
        log.warning("The development token issuer is ON (FHIR_AUTH_DEV_ISSUER=1): its key is in the database and "
                    "`fhir-server dev-token` mints any identity. Never enable it in production.")
    if settings.auth_enabled and not settings.access_policy_enabled and not settings.testing:
        log.warning("The access policy is OFF (FHIR_ACCESS_POLICY_ENABLED=0): scopes only, no roles, labels or "
                    "Consent. For measurement only.")

    @app.errorhandler(InvalidToken)
    def _invalid_token(exc: InvalidToken) -> Response:
        return outcome_response(exc.status, exc.outcome(),
                                {"WWW-Authenticate": _challenge(exc.oauth_error, exc.diagnostics)})

    @app.errorhandler(InsufficientScope)
    def _insufficient_scope(exc: InsufficientScope) -> Response:
        return outcome_response(exc.status, exc.outcome(),
                                {"WWW-Authenticate": _challenge("insufficient_scope", exc.diagnostics, exc.scope)})
