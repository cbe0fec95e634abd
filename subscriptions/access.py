"""Who a Subscription may be told about what: its owner's access context, kept server-side.

A notification discloses a resource (``full-resource``), or that it changed (``id-only``, ``empty``,
a classic ping). So a Subscription is matched only against what the client that created or last
changed it could read by searching now (docs/security.md): the same :class:`Visibility` rules
(role, source agencies, security labels, Consent refusals read at matching time) and the token's
SMART scopes for the resource's type. The context is recorded by the write hook
(subscriptions/lifecycle.py) into ``subscription_state.access``, never into the resource.

Decisions (docs/subscriptions.md, "Who is notified of what"):

- No recorded context (a row from before migration 0019): nothing matches (fail closed) until the
  owner PUTs the Subscription again; the server shows it as ``error`` saying so (delivery.py).
- A Consent refusal that a person's safeguarding request may set aside (an override, recorded each
  time it is used) is *not* set aside for a standing Subscription: that is a case-by-case decision.
- Break-glass (purpose of use BTG) is for one emergency request: a Subscription is never created
  or changed under it (403), so no standing feed carries its overrides.
- A context the policy does not restrict (authentication off, the server's own work) matches
  everything, as its searches would.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fhir_server.auth.errors import AccessDenied
from fhir_server.auth.policy import Visibility, restricted, visibility
from fhir_server.auth.scopes import READ, scope_set
from fhir_server.repository.context import RequestContext

if TYPE_CHECKING:
    from sqlalchemy import Connection

# The RequestContext fields the policy reads (besides scopes), stored as they were.
FIELDS = ("client_id", "agency", "practitioner", "purpose_of_use", "role", "authenticated", "issuer")


def record(ctx: RequestContext) -> dict[str, Any]:
    """The JSON kept in ``subscription_state.access`` for a client's create or update."""
    if ctx.break_glass:
        raise AccessDenied("A Subscription cannot be created or changed under break-glass access (purpose of use "
                           "BTG): emergency access is for one request, not a standing feed",
                           reason="break-glass-subscription")
    return {**{name: getattr(ctx, name) for name in FIELDS}, "scopes": sorted(ctx.scopes)}


def context(stored: Any, base_url: str) -> RequestContext | None:
    """The RequestContext a stored record stands for; None for no (or an unreadable) record."""
    if not isinstance(stored, dict) or not isinstance(stored.get("scopes"), list):
        return None
    values = {name: stored.get(name) for name in FIELDS}
    values["authenticated"] = values["authenticated"] is True
    return RequestContext(base_url=base_url, scopes=frozenset(map(str, stored["scopes"])), **values)


class Gate:
    """One subscriber's read rules for one drain (Consent is read once, when the gate is built)."""

    def __init__(self, conn: "Connection", stored: Any, base_url: str) -> None:
        self.ctx = context(stored, base_url)
        self.open = self.ctx is not None and not restricted(self.ctx)
        self.visibility: Visibility | None = None
        if self.ctx is not None and not self.open:
            seen = visibility(self.ctx, conn)
            if seen is not None:  # overrides are a person's decision: hidden here (module docstring)
                seen = replace(seen, denies=seen.denies + seen.overrides, overrides=())
            self.visibility = seen
        self._scopes = scope_set(self.ctx.scopes) if self.ctx is not None else None

    def may_read_type(self, res_type: str) -> bool:
        """Whether the subscriber could read ``res_type`` at all (its scopes and role)."""
        if self.open:
            return True
        if self._scopes is None or not self._scopes.allows(READ, res_type):
            return False
        types = self.visibility.read_types if self.visibility is not None else None
        return types is None or res_type in types

    def allows(self, res_type: str, content: dict[str, Any] | None) -> bool:
        """Whether the subscriber could read this version of a resource now."""
        if self.open:
            return True
        if not self.may_read_type(res_type) or content is None:
            return False
        return self.visibility is None or self.visibility.allows(content)


__all__ = ["record", "context", "Gate", "FIELDS"]
