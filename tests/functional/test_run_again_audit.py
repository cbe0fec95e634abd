"""A request the Router runs again (errors.RunAgain: the Consents changed while a read that used the
process's cached copy ran, rest/router.py) records what its *answered* attempt did, once: one
AuditEvent per interaction, one review flag (break-glass, shared-without-consent). The discarded
attempt answered nothing, so it disclosed nothing and leaves nothing in the trail.

A hook on the Router (a guard whose ``before`` runs once the request is authorised, before its
access policy is bound and its data read) commits a Consent change from another connection in the
middle of the request, as a second worker would: on PostgreSQL the policy uses the process's
cached Consents, whose version the read's own statement (with its compact AuditEvent,
audit/pending.py) finds stale. Real commits, authentication on, SQLite and PostgreSQL (only
PostgreSQL reads use the cached Consents, so only there is anything run again: on SQLite the same
assertions hold with one attempt).
"""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from fhir_server.audit import balp
from fhir_server.config import Settings
from fhir_server.storage.tables import audit_event
from tests.functional.test_access_policy import RECORD, SCHEDULE_1, consent, get, ids, send, token, seed

SUBTYPE = "https://w3id.org/sg-fhir/CodeSystem/auth-event"
BTG = {"X-Purpose-Of-Use": "BTG", "X-Break-Glass-Reason": "Child in resus, parents unreachable"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(auth_enabled=True, auth_dev_issuer=True, auth_key_cache_seconds=0)


class ChangeConsentMidRequest:
    """Router guard: the first time a request matching ``path`` is authorised (before its data is
    read and its AuditEvent written), commit ``changed`` from a connection of its own."""

    def __init__(self, app: Flask, path: str, changed: list[dict[str, Any]]) -> None:
        self.app, self.path, self.changed = app, path, changed
        self.fired = 0
        self.attempts = 0

    def before(self, req: Any) -> None:
        if not req.path.startswith(self.path):
            return
        self.attempts += 1
        if not self.fired:
            self.fired += 1
            seed(self.app, self.changed)

    def after(self, req: Any, response: Any) -> None:
        return None


def trail(app: Flask) -> list[dict[str, Any]]:
    """The AuditEvents in the trail, after the sealer has expanded the compact rows reads and
    searches write on PostgreSQL (audit/pending.py) into full events, as an auditor's search does."""
    app.extensions["fhir"].audit.seal_pending()
    with app.extensions["fhir"].engine.connect() as conn:
        return [row[0] for row in conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq))]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    """Each AuditEvent as the auth-event kind it records, or "interaction" (BALP read/query)."""
    out = []
    for event in events:
        codes = [c.get("code") for c in event.get("subtype") or [] if c.get("system") == SUBTYPE]
        out.append(codes[0] if codes else "interaction")
    return out


def review_flags(events: list[dict[str, Any]]) -> int:
    return sum(1 for e in events for t in (e.get("meta") or {}).get("tag") or []
               if t.get("system") == balp.REVIEW_SYSTEM)


@pytest.fixture
def app(committing_app: Flask) -> Flask:
    seed(committing_app, RECORD)
    return committing_app


def retried(app: Flask) -> bool:
    """Whether reads here use cached Consents (and so may be run again): PostgreSQL."""
    return app.extensions["fhir"].router.consent_cache is not None


def test_a_share_without_consent_is_recorded_once_when_the_read_runs_again(app: Flask) -> None:
    http: FlaskClient = app.test_client()
    services = app.extensions["fhir"]
    seed(app, [consent({"type": "deny"}, policy=SCHEDULE_1)])  # refused, but a safeguarding basis
    mash = token(services.auth, "mash-practitioner", "la:201", purpose="safeguarding")
    assert get(http, "Patient/other", mash).status_code == 200  # the Consents are now cached
    unrelated = {**consent({"type": "deny"}), "id": "consent-other", "patient": {"reference": "Patient/other"}}
    hook = ChangeConsentMidRequest(app, "Observation", [unrelated])
    services.router.guards.append(hook)
    before = len(trail(app))

    res = get(http, "Observation?subject=Patient/child", mash)
    assert res.status_code == 200, res.get_data(as_text=True)
    assert {"health-plain", "ed-visit"} <= ids(res.get_json())
    assert hook.attempts == (2 if retried(app) else 1)
    new = trail(app)[before:]
    assert sorted(kinds(new)) == ["interaction", "shared-without-consent"], kinds(new)
    assert review_flags(new) == 1


def test_a_share_the_rerun_no_longer_makes_is_not_recorded(app: Flask) -> None:
    """The refusal is withdrawn while the first attempt runs: the answer comes from the second
    attempt, under no refusal, so no share without consent was made and none is flagged."""
    http: FlaskClient = app.test_client()
    services = app.extensions["fhir"]
    refused = consent({"type": "deny"}, policy=SCHEDULE_1)
    seed(app, [refused])
    mash = token(services.auth, "mash-practitioner", "la:201", purpose="safeguarding")
    assert get(http, "Patient/other", mash).status_code == 200
    hook = ChangeConsentMidRequest(app, "Observation", [{**refused, "status": "inactive"}])
    services.router.guards.append(hook)
    before = len(trail(app))

    res = get(http, "Observation?subject=Patient/child", mash)
    assert res.status_code == 200, res.get_data(as_text=True)
    assert {"health-plain", "ed-visit"} <= ids(res.get_json())
    new = trail(app)[before:]
    # PostgreSQL: the first attempt used the cached Consents and was run again; SQLite read the
    # Consents after the change. Either way the answer was made under no refusal.
    assert kinds(new) == ["interaction"], kinds(new)
    assert review_flags(new) == 0


def test_a_refusal_run_again_is_audited_once(app: Flask) -> None:
    """A read refused (404) from the cached Consents is checked and run again; the refusal that
    is finally answered is the one audited."""
    http: FlaskClient = app.test_client()
    services = app.extensions["fhir"]
    care = token(services.auth, "social-worker", "la:201", purpose="CAREMGT")
    deny = consent({"type": "permit", "provision": [
        {"type": "deny", "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                      "code": "CAREMGT"}]}]})
    seed(app, [deny])
    assert get(http, "Patient/other", care).status_code == 200
    hook = ChangeConsentMidRequest(app, "Observation/health-plain",
                                   [{**deny, "id": "consent-other", "patient": {"reference": "Patient/other"}}])
    services.router.guards.append(hook)
    before = len(trail(app))
    assert get(http, "Observation/health-plain", care).status_code == 404
    new = trail(app)[before:]
    assert len(new) == 1 and new[0]["outcome"] != "0", new


def test_break_glass_is_flagged_once_per_request(app: Flask) -> None:
    """Break-glass reads no Consent (it overrides them): a Consent changed meanwhile does not make
    it run again; it is recorded with one break-glass event, whatever happens to the Consents."""
    http: FlaskClient = app.test_client()
    services = app.extensions["fhir"]
    seed(app, [consent({"type": "deny"})])
    sw = token(services.auth, "social-worker", "la:201")
    assert get(http, "Patient/other", sw).status_code == 200
    hook = ChangeConsentMidRequest(app, "Observation", [consent({"type": "deny"}, status="inactive")])
    services.router.guards.append(hook)
    before = len(trail(app))

    assert get(http, "Observation/health-plain", sw, **BTG).status_code == 200
    assert hook.attempts == 1
    new = trail(app)[before:]
    assert sorted(kinds(new)) == ["break-glass", "interaction"], kinds(new)
    flagged = [k for e, k in zip(new, kinds(new)) if e.get("meta", {}).get("tag")]
    assert sorted(flagged) == ["break-glass", "interaction"]  # the grant, and what it let through


def test_a_break_glass_batch_is_one_break_glass_grant(app: Flask) -> None:
    """A batch or transaction under break-glass is one request: one break-glass event, however
    many entries it has (each entry passes the same guards)."""
    http: FlaskClient = app.test_client()
    services = app.extensions["fhir"]
    sw = token(services.auth, "social-worker", "la:201")
    before = len(trail(app))
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/very-restricted"}},
        {"request": {"method": "GET", "url": "Observation?subject=Patient/child"}},
        {"request": {"method": "GET", "url": "Flag/police-flag"}}]}
    res = send(http, "POST", "", batch, sw, **BTG)
    assert res.status_code == 200, res.get_data(as_text=True)
    assert [e["response"]["status"][:3] for e in res.get_json()["entry"]] == ["200", "200", "200"]
    new = trail(app)[before:]
    assert kinds(new).count("break-glass") == 1, kinds(new)
    assert kinds(new).count("interaction") == 1  # the Bundle's entries share one AuditEvent
