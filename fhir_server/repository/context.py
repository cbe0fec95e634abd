"""The explicit context every repository call runs with (who asks, for whom, why).

Built once per HTTP request by ``fhir_server.auth`` (api/http.py) from the verified access token and
the request headers, and shared by every entry of a batch or transaction Bundle. Later features
(audit, consent, security labels, agency/role policy) read it; nothing in it is trusted unless
``authenticated`` is true.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

# v3 ActReason "break the glass": emergency access, always audited and flagged for review.
BREAK_GLASS = "BTG"


@dataclass(frozen=True)
class RequestContext:
    base_url: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The OAuth client (backend service or the application a practitioner uses).
    client_id: str | None = None
    # Agency the caller acts for, e.g. "la:201", "police:01", "health:RXX", "education:201".
    agency: str | None = None
    # A reference to the person behind a user token ("Practitioner/123"); None for backend services.
    practitioner: str | None = None
    # Granted SMART scopes (fhir_server.auth.scopes parses them).
    scopes: frozenset[str] = frozenset()
    # Purpose of use (v3 ActReason or local code): the X-Purpose-Of-Use header or the token claim.
    purpose_of_use: str | None = None
    # -- added by fhir_server.auth --------------------------------------------------------------
    # Role of the caller, e.g. "mash-practitioner", "social-worker", "school-dsl", "auditor".
    role: str | None = None
    # True only when a token was verified for this request (auth enabled and credentials valid).
    authenticated: bool = False
    # Who issued the token: "server" (our token endpoint), "dev" (development issuer) or the
    # configured OpenID Connect issuer URL.
    issuer: str | None = None
    # The access token's ``jti``: ties every request made with one token together in the audit trail.
    token_id: str | None = None
    # Required when purpose_of_use is BTG (the X-Break-Glass-Reason header).
    break_glass_reason: str | None = None
    # Network address of the caller as the web server saw it (for AuditEvent.agent.network).
    remote_addr: str | None = None

    @property
    def break_glass(self) -> bool:
        return self.purpose_of_use == BREAK_GLASS

    @property
    def is_user(self) -> bool:
        """A person (practitioner) is behind this request, not only a system."""
        return self.practitioner is not None

    def with_changes(self, **changes: object) -> "RequestContext":
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def system(cls, base_url: str, *, client_id: str = "system") -> "RequestContext":
        """Context for the server's own work (CLI commands run by an operator on the server,
        background jobs a client was authorised to start): trusted, with every system scope.
        Never built from anything a request carries."""
        return cls(base_url=base_url, client_id=client_id, scopes=frozenset({"system/*.cruds"}),
                   role="system", authenticated=True, issuer="server")
