"""FHIR Subscriptions (R4 with the Subscriptions R5 Backport IG, STU 1.1): topic-based, rest-hook,
signed, and never losing a notification; classic R4 search-criteria Subscriptions on the same
machinery. docs/subscriptions.md is the user's guide.

Layout (pure modules first):

- ``topics``        — our SubscriptionTopics (profiles/subscriptions/) and the filter matching
- ``criteria``      — classic R4 Subscriptions: search criteria matched with the server's own search
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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_server import Services
    from fhir_server.config import Settings


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


TOPIC_CANONICAL_EXT = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                       "capabilitystatement-subscriptiontopic-canonical")


def with_subscription_capabilities(statement: Any, settings: "Settings") -> Any:
    """Wrap a CapabilityStatement builder: the Subscription entry names the backport profile and each
    topic this server publishes (Backport IG STU 1.1, "Capability Statements")."""
    from pathlib import Path

    from .spec import PROFILE
    from .topics import load_topics

    topics = sorted(load_topics(Path(settings.profiles_dir)))

    def build() -> dict[str, Any]:
        result = statement()
        for rest in result.get("rest", []):
            for entry in rest.get("resource", []):
                if entry.get("type") == "Subscription":
                    entry["supportedProfile"] = [PROFILE]
                    entry["documentation"] = (
                        "rest-hook only. Topic-based Subscriptions (Backport IG STU 1.1: criteria = a topic listed "
                        "here, signed notification Bundles, $status, $events), and classic R4 Subscriptions "
                        "(criteria = a search such as Observation?code=..., notified on each matching create or "
                        "update: a POST with no body, or the resource PUT to [endpoint]/[type]/[id] when "
                        "channel.payload is application/fhir+json).")
                    entry["extension"] = [{"url": TOPIC_CANONICAL_EXT, "valueCanonical": url} for url in topics]
        return result

    return build
