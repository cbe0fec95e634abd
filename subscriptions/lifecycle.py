"""The Subscription write hook: every create, update, patch or delete of a Subscription (through any
path: REST, Bundle, conditional) is checked and mirrored into ``subscription_state`` in the same
transaction (fhir_server/repository/sql.py ``write_hooks``).

Lifecycle (subscription.html#status, Backport IG "Subscription lifecycle"):

- A client creates a Subscription, or changes what it asks for (topic, filters, channel): it is
  stored as ``requested`` whatever status it carried, and a handshake is due. The handshake's 2xx
  makes it ``active``; a failure makes it ``error`` with ``Subscription.error`` saying why (retried
  with backoff).
- A client may set ``off`` (no more events are recorded or sent) or ask again with ``requested``.
  A PUT that changes nothing it asks for keeps the current ``active``/``error`` status.
- Only the server (client id ``subscriptions``) moves a Subscription to ``active`` or ``error``.
- Every client write records the caller's access context (subscriptions/access.py) server-side:
  the Subscription is then notified only about what that caller could read.
- Deleting a Subscription stops it; its numbered events stay readable until then via ``$events``.
- A classic R4 Subscription (search criteria) follows the same states; it has no handshake
  (R4 defines none): the server sets it ``active`` once set up (delivery.py).

Bad content is refused with 422 and nothing is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_server.errors import Issue, Unprocessable

from . import access, store
from .delivery import DELIVERY_CLIENT
from .spec import PROFILE, SIGNING_SECRET, SubscriptionSpec, check_criteria, parse_subscription, without_secret
from .topics import load_topics

if TYPE_CHECKING:
    from fhir_server.config import Settings
    from fhir_server.repository.context import RequestContext
    from fhir_server.repository.sql import UnitOfWork


def make_write_hook(settings: "Settings"):
    topics = load_topics(Path(settings.profiles_dir))
    allow_http = settings.subscription_allow_http

    def hook(uow: "UnitOfWork", ctx: "RequestContext", res_type: str, res_id: str,
             content: dict[str, Any] | None, previous: dict[str, Any] | None) -> dict[str, Any] | None:
        conn = uow.conn
        if content is None:
            store.set_status(conn, res_id, "off")
            return None
        spec, secret = parse_subscription(content, topics, allow_http=allow_http)
        recorded = None if _is_delivery(ctx) else access.record(ctx)  # before anything is written
        if spec.classic:
            check_criteria(spec, uow.repo.registry)
        stored = without_secret(content)
        state = store.get(conn, res_id, lock=True)
        if _is_delivery(ctx) and state is not None:
            status = stored.get("status")  # the server's own change: the owner's context stays
            if (previous or {}).get("status") == "off":
                status = "off"  # the client switched it off meanwhile: that wins
            stored["status"] = status
            store.set_status(conn, res_id, status)
            return stored
        if secret is None:
            if spec.classic:  # R4: channel.header authenticates the server; no signature unless asked
                secret = state.secret if state is not None else ""
            elif state is None:
                raise Unprocessable(issues=[Issue(
                    "error", "required",
                    "A rest-hook Subscription needs a signing secret (extension " + SIGNING_SECRET
                    + " on channel, valueString of at least 16 characters): every notification is signed with it",
                    ("Subscription.channel.extension",))])
            else:
                secret = state.secret
        status = _next_status(content.get("status"), state, spec, secret)
        stored["status"] = status
        if status == "requested":
            stored.pop("error", None)
        meta = dict(stored.get("meta") or {})
        profiles = list(meta.get("profile") or [])
        if not spec.classic and PROFILE not in profiles:
            meta["profile"] = profiles + [PROFILE]
            stored["meta"] = meta
        store.save(conn, res_id, status=status, spec=spec, secret=secret, handshake_due=status == "requested",
                   reset_failures=status == "requested", access=recorded)
        return stored

    return hook


def _is_delivery(ctx: "RequestContext") -> bool:
    """The server's own delivery code (RequestContext.system with our client id), never a caller:
    a token's client id alone could be spoofed by registering a client of that name."""
    return ctx.client_id == DELIVERY_CLIENT and ctx.issuer == "server" and ctx.role == "system"


def _next_status(asked: Any, state: store.State | None, spec: SubscriptionSpec, secret: str) -> str:
    if asked == "off":
        return "off"
    # a row without an access context (before migration 0019) starts again: a new handshake
    unchanged = state is not None and state.access is not None and state.spec == spec and state.secret == secret
    if unchanged and state is not None and asked == state.status and state.status in ("active", "error"):
        return state.status
    return "requested"
