"""Delivering one subscription's notifications over ``rest-hook``, in event-number order.

:meth:`Deliverer.run` is what every delivery job does, whichever event it was sent for: take the
subscription's lease (one deliverer at a time, so events arrive in order), then send the handshake if
one is due, then the undelivered events in Bundles of at most ``backport-max-count``, then a
heartbeat if one is due; move the cursor after each 2xx. A failure records the error and backs off
exponentially (capped, over hours); after :data:`ERROR_AFTER` consecutive failures the Subscription
goes to ``error`` (with ``Subscription.error`` saying why) and back to ``active`` on the next success.
The lease is a row update (not a held transaction), so no database lock is held across an HTTP call.

A classic R4 Subscription (search criteria) goes through the same run, lease, cursor and backoff:
its "handshake" only sets it ``active`` (R4 has none), and each event is one request of its own
(notifications.classic_request: a ping, or the resource PUT to the endpoint).

A Subscription with no recorded access context (stored before migration 0019, see access.py)
delivers nothing, not even events recorded before the upgrade: it is set to ``error`` with
:data:`UNOWNED` as the reason until its owner PUTs it again (or, with no owner tag to say whose it
is, an operator deletes it and its owner creates it again).

It re-reads everything from the database, so running it twice, concurrently or late is harmless:
a job for an event already delivered finds nothing to send.
"""
from __future__ import annotations

import logging
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fhir_server.errors import FhirError
from fhir_server.fhir import jsonio
from fhir_server.fhir.instants import utcnow
from fhir_server.repository.context import RequestContext

from . import store
from .notifications import classic_request, notification_bundle
from .signing import HEADER, sign

if TYPE_CHECKING:
    from fhir_server import Services

log = logging.getLogger(__name__)
DELIVERY_CLIENT = "subscriptions"  # the client id of the server's own status changes
ERROR_AFTER = 3  # consecutive failures before the Subscription shows status error
LEASE_MARGIN = 5.0
# (with authentication on only its owning client may PUT it, and one stored before owner tags has no
# owner: docs/subscriptions.md)
UNOWNED = ("Created before notifications were limited to what the subscriber may read: if it carries your "
           "client's owner tag, PUT it again (status requested) with your own token to resume; if it has none "
           "(stored before owner tags), ask an operator to delete it and create it again with POST")


@dataclass(frozen=True)
class Outcome:
    kind: str  # sent | idle | busy | failed | gone
    retry_in: float | None = None
    sent: int = 0  # notifications sent


class Deliverer:
    def __init__(self, services: "Services") -> None:
        self.services = services
        self.engine = services.engine
        self.base_url = services.settings.base_url
        self.max_backoff = services.settings.subscription_max_backoff

    def run(self, sub_id: str) -> Outcome:
        if self._unowned(sub_id):
            return Outcome("idle")
        owner = uuid.uuid4().hex
        sent = 0
        while True:
            with self.engine.begin() as conn:
                state = store.get(conn, sub_id)
                if state is None or state.status not in store.LIVE:
                    return Outcome("gone", sent=sent)
                ended = state.spec.ended(utcnow())
                claimed = not ended and store.claim(conn, sub_id, owner, state.spec.timeout * 2 + LEASE_MARGIN)
                if claimed:
                    # read again under the lease: the cursor may have moved since the read above
                    state = store.get(conn, sub_id)
                    assert state is not None
                    kind, events = self._work(conn, state)
                    resources = store.versions(conn, events) if kind and state.spec.content == "full-resource" else {}
            if ended:
                self.set_status(sub_id, "off", None)  # Subscription.end has passed
                return Outcome("gone", sent=sent)
            if not claimed:
                return Outcome("busy" if not sent else "sent", sent=sent)
            if kind is None:
                with self.engine.begin() as conn:
                    store.release(conn, sub_id, owner)
                # A job that found the lease taken just before the release relies on this run
                # having seen its event: look again now that the lease is free.
                with self.engine.connect() as conn:
                    again = store.get(conn, sub_id)
                if again is not None and again.status in store.LIVE and (again.pending > 0 or again.handshake_due):
                    continue
                return Outcome("sent" if sent else "idle", sent=sent)
            if state.spec.classic:
                # R4 defines no handshake: being set up is all "requested" waits for
                error = None if kind == "handshake" else self._send(state, *classic_request(state.spec, events[0],
                                                                                            resources))
            else:
                shown = replace(state, status="active") if state.status == "error" else state
                bundle = notification_bundle(self.base_url, shown, kind, events, resources)
                # jsonio: a full-resource payload's decimals are Decimals, sent exactly as stored
                error = self._send(state, "POST", state.spec.endpoint, jsonio.dumps(bundle).encode("utf-8"))
            if error is None:
                with self.engine.begin() as conn:
                    store.delivered(conn, sub_id, owner, through=events[-1].number if events else None,
                                    handshake=kind == "handshake")
                if state.status != "active":
                    self.set_status(sub_id, "active", None)
                sent += 1
                continue
            with self.engine.begin() as conn:
                failures, wait = store.failed(conn, sub_id, owner, error, self.max_backoff)
            log.warning("Subscription/%s: %s failed (%d in a row, next try in %.0f s): %s",
                        sub_id, kind, failures, wait, error)
            if kind == "handshake":
                self.set_status(sub_id, "error", f"Handshake failed: {error}")
            elif failures >= ERROR_AFTER and state.status != "error":
                self.set_status(sub_id, "error", f"{failures} deliveries in a row failed; last: {error}")
            return Outcome("failed", retry_in=wait, sent=sent)

    def _unowned(self, sub_id: str) -> bool:
        """True (after showing ``error``) for a live Subscription without an access context: fail closed."""
        with self.engine.connect() as conn:
            state = store.get(conn, sub_id)
        if state is None or state.access is not None or state.status not in store.LIVE:
            return False
        if state.status != "error":
            self.set_status(sub_id, "error", UNOWNED)
        return True

    def _work(self, conn: Any, state: store.State) -> tuple[str | None, list[store.Event]]:
        if state.handshake_due:
            return "handshake", []
        if state.status == "requested":
            return None, []
        events = store.events(conn, state.sub_id, after=state.delivered_through, limit=state.spec.max_count)
        if events:
            return "event-notification", events
        if state.spec.heartbeat is not None and state.status == "active" and (
                state.last_sent_at is None
                or state.last_sent_at + timedelta(seconds=state.spec.heartbeat) <= utcnow()):
            return "heartbeat", []
        return None, []

    def _send(self, state: store.State, method: str, url: str, body: bytes) -> str | None:
        """Send ``body`` (none for a classic ping) to ``url`` with the channel's headers, signed when
        the subscription has a secret; None on a 2xx, else what went wrong."""
        headers = {name: value for name, value in state.spec.headers}
        headers["X-SG-Subscription"] = state.sub_id
        if body:
            headers["Content-Type"] = f"{state.spec.mime_type}; charset=utf-8"
        if state.secret:
            headers[HEADER] = sign(state.secret, body)
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=state.spec.timeout) as response:  # noqa: S310 - validated URL
                response.read()
                return None
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code} from the endpoint"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"endpoint unreachable: {reason}"

    def set_status(self, sub_id: str, status: str, error: str | None) -> None:
        """Record a lifecycle change on the Subscription resource itself (a new version, so clients
        see it on read and in history); a client's ``off`` is never overridden (see the write hook)."""
        ctx = RequestContext.system(self.base_url, client_id=DELIVERY_CLIENT)
        try:
            with self.services.repo.unit_of_work() as uow:
                current = uow.read("Subscription", sub_id).content or {}
                if current.get("status") == "off":
                    return
                content = {**current, "status": status}
                if error:
                    content["error"] = error[:1000]
                else:
                    content.pop("error", None)
                uow.update(ctx, "Subscription", sub_id, content)
        except FhirError as exc:  # deleted meanwhile
            log.info("Subscription/%s status not recorded: %s", sub_id, exc.diagnostics)
