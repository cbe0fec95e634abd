"""Authentication and scope failures.

API calls raise :class:`InvalidToken` (401) and :class:`InsufficientScope` (403): FhirErrors, so
they become OperationOutcomes in the one error handler; ``auth/smart.py`` adds the RFC 6750
``WWW-Authenticate: Bearer`` header. The token endpoint speaks OAuth instead and raises
:class:`OAuthError` (RFC 6749 §5.2), answered as ``{"error": ..., "error_description": ...}``.
Every one carries ``reason``: the short code written to the log by ``auth.events.denied``.
"""
from __future__ import annotations

from ..errors import Forbidden, Unauthorized


class InvalidToken(Unauthorized):
    """401: no bearer token, or one that does not verify (RFC 6750 §3.1).

    ``oauth_error`` is None when the request carried no credentials at all (RFC 6750 §3.1: then the
    challenge names no error).
    """

    def __init__(self, diagnostics: str, *, reason: str, oauth_error: str | None = "invalid_token") -> None:
        super().__init__(diagnostics)
        self.reason = reason
        self.oauth_error = oauth_error


class InsufficientScope(Forbidden):
    """403: the token is good but its scopes do not cover the interaction (RFC 6750 §3.1
    ``insufficient_scope``). ``scope`` names the scope that would have allowed it."""

    def __init__(self, diagnostics: str, *, scope: str, reason: str = "insufficient-scope",
                 expression: str | tuple[str, ...] = ()) -> None:
        super().__init__(diagnostics, expression=expression)
        self.scope = scope
        self.reason = reason


class AccessDenied(Forbidden):
    """403 for a rule other than scopes (break-glass without a reason, a purpose the token does not
    allow); later policies (agency, role, consent) raise it too."""

    def __init__(self, diagnostics: str, *, reason: str) -> None:
        super().__init__(diagnostics)
        self.reason = reason


class OAuthError(Exception):
    """An error answer of the token endpoint (RFC 6749 §5.2; SMART backend-services.html says an
    authentication failure is ``invalid_client``)."""

    STATUS = {"invalid_client": 401, "invalid_request": 400, "invalid_grant": 400, "invalid_scope": 400,
              "unauthorized_client": 400, "unsupported_grant_type": 400}

    def __init__(self, error: str, description: str, *, reason: str, client_id: str | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.reason = reason
        self.client_id = client_id

    @property
    def status(self) -> int:
        return self.STATUS.get(self.error, 400)

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}
