"""FHIR Subscriptions (R4 with the Subscriptions R5 Backport IG, STU 1.1): topic-based, rest-hook,
signed, and never losing a notification. docs/subscriptions.md is the user's guide.

Layout (pure modules first):

- ``topics``        — our SubscriptionTopics (profiles/subscriptions/) and the filter matching
- ``spec``          — a Subscription resource checked and read into a :class:`SubscriptionSpec`
- ``notifications`` — notification Bundles and status Parameters
- ``signing``       — the HMAC-SHA256 signature header
- ``store``         — the subscription tables: state, numbered events, lease, cursor
- ``lifecycle``     — the write hook keeping ``subscription_state`` in step with Subscription writes
- ``delivery``      — one subscription's in-order delivery run (handshake, events, heartbeat, backoff)
- ``dispatch``      — outbox consumer → numbered events → one job per (subscription, event); sweep
- ``tasks`` / ``runtime`` — Celery tasks, and which dispatcher serves which drain
- ``operations``    — ``$status`` and ``$events``
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhir_server import Services


def register_subscriptions(services: "Services", *, deliver: bool) -> None:
    """Wire subscriptions into a server: the Subscription write hook, ``$status``/``$events``, and
    (``deliver``: storage not bound to a test's connection) matching on drain and delivery."""
    from fhir_server.worker import register_after_drain, register_consumer

    from . import runtime
    from .lifecycle import make_write_hook
    from .operations import register_operations

    services.repo.write_hooks.setdefault("Subscription", []).append(make_write_hook(services.settings))
    register_operations(services)
    register_consumer(runtime.consume)
    register_after_drain(runtime.after_drain)
    if deliver:
        runtime.install(services)
