"""The audit trail and write provenance (issue 4, "Provenance and audit"; docs/security.md).

- :mod:`.balp`: AuditEvents shaped like IHE BALP (pure).
- :mod:`.chain`: the append-only ``audit_event`` table, sealing into a SHA-256 hash chain, and
  verification.
- :mod:`.provenance`: Provenance for every write, ``X-Provenance``.
- :mod:`.recorder`: the Router hooks (recorder + guard) and the authentication-event buffer.
- :mod:`.operations`: ``$verify-audit`` and ``Patient/[id]/$subject-access``.

:func:`install` wires it into the services (``build_services``); :func:`install_flask` adds the
per-request buffer of authentication events (``create_app``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..auth import events
from ..operations.builtin import load_definition
from .recorder import AuditRecorder

if TYPE_CHECKING:
    from flask import Flask

    from .. import Services

log = logging.getLogger(__name__)
EXTENSION = "fhir_audit"


def install(services: "Services") -> AuditRecorder | None:
    """Register the operations (always: an auditor can verify a trail written earlier) and, when
    ``settings.audit_enabled``, the recorder and guard on the router and the periodic sealing."""
    from .operations import (SUBJECT_ACCESS_FILE, VERIFY_FILE, make_subject_access_handler,
                             make_verify_handler)

    settings = services.settings
    ops = services.router.operations
    ops.register(load_definition(settings, VERIFY_FILE), make_verify_handler())
    ops.register(load_definition(settings, SUBJECT_ACCESS_FILE), make_subject_access_handler(settings))
    if not settings.audit_enabled:
        return None
    recorder = AuditRecorder(services.repo, max_json_depth=settings.max_json_depth)
    if services.router.access_policy is not None and services.engine.dialect.name == "postgresql" \
            and not settings.audit_durable_reads:
        # reads' AuditEvent INSERT checks the Consents' version: they may use a cached copy
        from ..auth.consent import ConsentCache
        recorder.consent_cache = services.router.consent_cache = ConsentCache()
    services.router.guards.append(recorder)
    services.router.recorders.append(recorder)
    _schedule_sealing(services, recorder)
    return recorder


def _schedule_sealing(services: "Services", recorder: AuditRecorder) -> None:
    """Without a broker, seal every :data:`~.chain.SEAL_SECONDS` on this process's local beat (with
    one, the Celery beat entry of :mod:`.tasks` does). Never on the outbox drain: the seal's lock
    would make drains, and so notifications, wait for each other. Not for storage bound to a test's
    connection (the test seals when it wants to)."""
    from ..periodic import local_beat
    from ..worker import celery
    from .chain import SEAL_SECONDS

    if services.repo._bound is None and celery.conf.task_always_eager:
        local_beat.every(seal_job(services.engine), SEAL_SECONDS, lambda: recorder.seal_pending(wait=False),
                         owner=services.engine)


def seal_job(engine: object) -> str:
    """The local beat's name for the sealing job of the server on ``engine``."""
    return f"audit-seal-{id(engine):x}"


def install_flask(app: "Flask", recorder: AuditRecorder | None) -> None:
    """Authentication events of a request (401/403, tokens issued, break-glass) become AuditEvents,
    written in a transaction of their own when the request ends."""
    if recorder is None:
        return
    app.extensions[EXTENSION] = recorder
    events.add_listener(_buffer_auth_event)
    recorder.defer = _buffer_failure
    recorder.checkpoint = _checkpoint

    @app.teardown_request
    def _write_auth_events(_exc: BaseException | None) -> None:
        from flask import g

        pending: list[dict[str, Any]] = g.pop("audit_auth_events", [])
        if not pending:
            return
        try:
            recorder.write_events(pending)
        except Exception:  # noqa: BLE001 - the answer has been given; the log line keeps the event
            log.exception("Could not write %d authentication AuditEvent(s)", len(pending))


def _buffer_auth_event(event: "events.AuthEvent") -> None:
    from flask import current_app, g, has_app_context, has_request_context

    if not (has_app_context() and has_request_context()):
        return  # outside a request (CLI): the auth log line is the record
    recorder = current_app.extensions.get(EXTENSION)
    if recorder is None:
        return
    pending = g.setdefault("audit_auth_events", [])
    key = review_key(event)
    if key is not None:
        flagged: dict[tuple[str, str], int] = g.setdefault("audit_review_flags", {})
        if key in flagged:
            return  # one request, one review flag: a Bundle's entries pass the same guard
        flagged[key] = len(pending)
    pending.append(recorder.auth_event_resource(event))
    if event.kind == "denied" and event.extra.get("refusal_answers", True):
        # the refusal is the request's answer: its failure AuditEvent would repeat it. A refusal set
        # aside (another client's Subscription deleted as an absent one: 204) is not, so a later
        # failure of the request (a transaction Bundle's failing entry) still gets its AuditEvent.
        g.audit_refusal_recorded = True


def review_key(event: "events.AuthEvent") -> tuple[str, str] | None:
    """What makes a review-flagged event (break-glass, shared-without-consent) the same within one
    request: its kind and, for a share, the Consent set aside. None for other events."""
    if not event.extra.get("review"):
        return None
    return event.kind, str(event.extra.get("consent") or "")


def _checkpoint() -> Callable[[], None]:
    """AuditRecorder.checkpoint: mark the request's buffer; the function returned drops what was
    buffered after the mark (an attempt the Router runs again, rest/router.py)."""
    from flask import g, has_request_context

    if not has_request_context():
        return lambda: None
    mark = len(g.setdefault("audit_auth_events", []))
    refused = bool(g.get("audit_refusal_recorded"))

    def discard() -> None:
        del g.audit_auth_events[mark:]
        g.audit_refusal_recorded = refused
        flagged = g.get("audit_review_flags") or {}
        for key in [k for k, at in flagged.items() if at >= mark]:
            del flagged[key]

    return discard


def _buffer_failure(event: dict[str, Any]) -> bool:
    """AuditRecorder.defer: a refused request's AuditEvent joins the request's buffer (written when
    it ends), unless the refusal was already recorded as a denied authentication event."""
    from flask import g, has_request_context

    if not has_request_context():
        return False
    if not g.get("audit_refusal_recorded"):
        g.setdefault("audit_auth_events", []).append(event)
    return True


READ_ONLY_INTERACTIONS = ("read", "vread", "search-type", "history-instance", "history-type")


def with_read_only_audit(statement: Any) -> Any:
    """Wrap a CapabilityStatement builder: AuditEvent is served read-only (the trail is written by
    the server and append-only; every write of one answers 405)."""
    def build() -> dict[str, Any]:
        built = statement()
        rest = [dict(r) for r in built.get("rest") or []]
        for r in rest:
            resources = []
            for res in r.get("resource") or []:
                if res.get("type") == "AuditEvent":
                    res = {k: v for k, v in res.items() if k not in (
                        "updateCreate", "conditionalCreate", "conditionalUpdate", "conditionalDelete", "versioning")}
                    res["interaction"] = [i for i in res.get("interaction", [])
                                          if i.get("code") in READ_ONLY_INTERACTIONS]
                    res["documentation"] = ("Written by the server only: one IHE BALP AuditEvent per interaction, "
                                            "hash-chained and append-only ($verify-audit). See docs/security.md.")
                resources.append(res)
            r["resource"] = resources
        return {**built, "rest": rest}
    return build
