"""Where authentication and authorisation outcomes go: one structured log line each.

``denied`` is the single function every rejection passes through (bad or missing token, failed
client assertion, replayed ``jti``, missing scope, break-glass without a reason); ``token_issued``
records each access token the token endpoint grants. Both log one line on the ``fhir_server.auth``
logger (``auth.denied {...json...}``) with the event in ``extra["auth_event"]`` for structured
handlers, then call the listeners registered with :func:`add_listener`.

Extension point for the audit trail: ``add_listener(fn)`` at start-up, where ``fn(event)`` writes
an AuditEvent (``event.kind`` is "denied" or "token-issued", or — from the access policy —
"break-glass" or "shared-without-consent", both with ``extra["review"]`` true). A listener that
raises is logged and does not change the answer (the rejection stands either way).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..repository.context import RequestContext

log = logging.getLogger("fhir_server.auth")


@dataclass(frozen=True)
class RequestInfo:
    """What is known of the HTTP request, even before anyone is authenticated."""

    method: str
    path: str
    remote_addr: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class AuthEvent:
    kind: str  # denied | token-issued | break-glass | shared-without-consent
    reason: str  # short code: expired, replayed-jti, unknown-kid, insufficient-scope, issued...
    client_id: str | None = None
    detail: str = ""
    request: RequestInfo | None = None
    # The authenticated context when there is one (a 403); None for a 401.
    context: "RequestContext | None" = field(default=None, compare=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_log(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "client_id": self.client_id}
        if self.context is not None:
            ctx = self.context
            out.update(agency=ctx.agency, role=ctx.role, practitioner=ctx.practitioner,
                       purpose=ctx.purpose_of_use, token_id=ctx.token_id)
        if self.request is not None:
            out.update({k: v for k, v in asdict(self.request).items() if v is not None})
        if self.detail:
            out["detail"] = self.detail
        out.update(self.extra)
        return {k: v for k, v in out.items() if v is not None}


Listener = Callable[[AuthEvent], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    """Also send every event to ``listener`` (the audit trail plugs in here)."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def denied(reason: str, who: "RequestContext | str | None", request: RequestInfo | None, detail: str = "",
           **extra: Any) -> AuthEvent:
    """Record one rejected attempt. ``who`` is the request context (authenticated but not allowed),
    the client id the attempt claimed (not verified), or None."""
    ctx = None if who is None or isinstance(who, str) else who
    client_id = who if isinstance(who, str) else (ctx.client_id if ctx is not None else None)
    event = AuthEvent("denied", reason, client_id, detail, request, ctx, extra)
    log.warning("auth.denied %s", json.dumps(event.as_log(), default=str, sort_keys=True),
                extra={"auth_event": event})
    _notify(event)
    return event


def token_issued(client_id: str, scope: str, token_id: str, request: RequestInfo | None, **extra: Any) -> AuthEvent:
    """Record an access token granted by the token endpoint."""
    event = AuthEvent("token-issued", "issued", client_id, "", request, None,
                      {"scope": scope, "token_id": token_id, **extra})
    log.info("auth.token-issued %s", json.dumps(event.as_log(), default=str, sort_keys=True),
             extra={"auth_event": event})
    _notify(event)
    return event


def _notify(event: AuthEvent) -> None:
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception:  # noqa: BLE001 - a broken listener must not turn a 401 into a 500
            log.exception("auth event listener %r failed", listener)


# -- governance events (access policy): published for the audit trail, flagged for review ----------

def break_glass(ctx: "RequestContext", request: RequestInfo | None, method: str, path: str) -> AuthEvent:
    """Record one request made with purpose of use BTG (emergency access): who, why (the
    X-Break-Glass-Reason), what. Always ``review: true``: every break-glass access is looked at."""
    event = AuthEvent("break-glass", "break-glass", ctx.client_id, ctx.break_glass_reason or "", request, ctx,
                      {"review": True, "method": method, "path": path, "purpose": ctx.purpose_of_use,
                       "break_glass_reason": ctx.break_glass_reason})
    log.warning("auth.break-glass %s", json.dumps(event.as_log(), default=str, sort_keys=True),
                extra={"auth_event": event})
    _notify(event)
    return event


def shared_without_consent(ctx: "RequestContext", consent: str, patient: str, basis: list[str]) -> AuthEvent:
    """Record that a Consent's refusal was set aside on a lawful basis for safeguarding (sharing
    without consent, AGENCY_FORMATS.md §6): the Consent, the child, the legislation, the caller
    and their purpose. Flagged for review."""
    event = AuthEvent("shared-without-consent", "safeguarding-basis", ctx.client_id,
                      f"{consent} refuses sharing; shared for safeguarding under {' and '.join(basis)}",
                      RequestInfo("", "", ctx.remote_addr, None, ctx.request_id), ctx,
                      {"review": True, "consent": consent, "patient": patient, "policy": basis,
                       "purpose": ctx.purpose_of_use})
    log.warning("auth.shared-without-consent %s", json.dumps(event.as_log(), default=str, sort_keys=True),
                extra={"auth_event": event})
    _notify(event)
    return event
