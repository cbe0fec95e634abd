"""The compact AuditEvent a read's own statement writes (audit/pending.py) claims a disclosure: it
must never outlive an answer that was not sent. With real commits and authentication on, on SQLite
and PostgreSQL (SQLite writes the full AuditEvent after the answer, so it is the baseline)."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from fhir_server.audit import seal_job
from fhir_server.config import Settings
from fhir_server.periodic import local_beat
from fhir_server.storage.tables import audit_event
from tests.functional.test_access_policy import RECORD, consent, get, obs, seed, token
from tests.functional.test_audit import entity_refs

PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """(``committing_app`` builds its app from these: authentication and the dev issuer on.)"""
    return settings.with_overrides(auth_enabled=True, auth_dev_issuer=True, auth_key_cache_seconds=0)


def events(app: Flask) -> list[dict[str, Any]]:
    app.extensions["fhir"].audit.seal_pending()
    with app.extensions["fhir"].engine.connect() as conn:
        return [r.content for r in conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq))]


def disclosures_of(app: Flask, ref: str) -> list[dict[str, Any]]:
    """The AuditEvents that say ``ref`` was shown (a successful read or search returning it)."""
    return [e for e in events(app) if e.get("outcome") == "0"
            and any(r.split("/_history/")[0] == ref for r in entity_refs(e, "4"))]


def test_a_consent_refusal_by_a_reference_outside_the_index_leaves_no_read_event(committing_app: Flask) -> None:
    """DenyRule.matches sees every ``reference`` of the content (here an extension's), the SQL of
    DenyRule.clause only indexed search parameters: the SQL rule lets the row through, Python hides
    it (404). No AuditEvent may then say it was read."""
    app, http = committing_app, committing_app.test_client()
    local_beat.cancel(seal_job(app.extensions["fhir"].engine))
    hidden = {**obs("ext-only", "health/RXX", "Weight"),
              "extension": [{"url": "https://example.org/fhir/StructureDefinition/about-child",
                             "valueReference": {"reference": "Patient/child"}}]}
    del hidden["subject"]
    deny = consent({"type": "permit", "provision": [
        {"type": "deny", "purpose": [{"system": PURPOSE, "code": "CAREMGT"}]}]})
    seed(app, [*RECORD, hidden, obs("other-weight", "health/RXX", "Weight", "Patient/other"), deny])
    care = token(app.extensions["fhir"].auth, "social-worker", "la:201", purpose="CAREMGT")
    assert get(http, "Observation/ext-only", care).status_code == 404
    assert get(http, "Observation/other-weight", care).status_code == 200  # (the Consent names the child only)
    assert disclosures_of(app, "Observation/ext-only") == []
    refused = [e for e in events(app) if e.get("outcome") == "4" and e["subtype"][0]["code"] == "read"]
    assert len(refused) == 1  # the refusal is recorded, once
    assert len(disclosures_of(app, "Observation/other-weight")) == 1
