"""The compact AuditEvent a read's own statement writes (audit/pending.py) claims a disclosure: it
must never outlive an answer that was not sent. With real commits and authentication on, on SQLite
and PostgreSQL (SQLite writes the full AuditEvent after the answer, so it is the baseline)."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from fhir_server.audit import seal_job
from fhir_server.auth.labels import label_mask
from fhir_server.config import Settings
from fhir_server.errors import Forbidden, RunAgain
from fhir_server.periodic import local_beat
from fhir_server.storage.tables import audit_event, resource
from tests.functional.test_access_policy import PSY, RECORD, consent, get, obs, seed, token
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


def corrected(app: Flask) -> set[str]:
    """Ids of the AuditEvents another AuditEvent says were not answered (balp.not_answered)."""
    return {e["what"]["reference"].split("/", 1)[1] for ev in events(app) for e in ev.get("entity", [])
            if e.get("what", {}).get("reference", "").startswith("AuditEvent/")}


def uncorrected_disclosures(app: Flask, ref: str) -> list[dict[str, Any]]:
    gone = corrected(app)
    return [e for e in disclosures_of(app, ref) if e["id"] not in gone]


class RefuseAfter:
    """A guard that refuses (or fails) a GET after its answer was read — as a guard's ``after`` may."""

    def __init__(self, error: BaseException, times: int = 1_000) -> None:
        self.error, self.times = error, times

    def before(self, req: Any) -> None:
        return None

    def after(self, req: Any, response: Any) -> None:
        if req.method == "GET" and self.times > 0:
            self.times -= 1
            raise self.error


def other_weight_for_care(app: Flask) -> tuple[Any, str]:
    """The record and another child's weight (health/RXX) seeded, the sealer stopped (the test
    reads the compact events), and a social worker's token: the set-up of the tests below."""
    services = app.extensions["fhir"]
    local_beat.cancel(seal_job(services.engine))
    seed(app, [*RECORD, obs("other-weight", "health/RXX", "Weight", "Patient/other")])
    return services, token(services.auth, "social-worker", "la:201", purpose="CAREMGT")


@pytest.mark.parametrize("url", ["Observation/other-weight", "Observation?subject=Patient/other"])
def test_an_answer_refused_after_its_statement_recorded_it_is_said_not_sent(committing_app: Flask, url: str) -> None:
    app, http = committing_app, committing_app.test_client()
    services, care = other_weight_for_care(app)
    services.router.guards.append(RefuseAfter(Forbidden("Refused after the read")))
    assert get(http, url, care).status_code == 403
    assert uncorrected_disclosures(app, "Observation/other-weight") == []
    if services.engine.dialect.name == "postgresql":  # the statement's event is there, and named as not sent
        compact = disclosures_of(app, "Observation/other-weight")
        assert len(compact) == 1 and compact[0]["id"] in corrected(app)
        correction = next(e for e in events(app) if f"AuditEvent/{compact[0]['id']}" in
                          [x.get("what", {}).get("reference") for x in e.get("entity", [])])
        assert correction["outcome"] == "4" and correction["outcomeDesc"].startswith("403")
    services.router.guards.pop()
    assert get(http, url, care).status_code == 200
    assert len(uncorrected_disclosures(app, "Observation/other-weight")) == 1


def test_an_attempt_run_again_after_its_statement_recorded_it_is_said_not_sent(committing_app: Flask) -> None:
    app, http = committing_app, committing_app.test_client()
    services, care = other_weight_for_care(app)
    services.router.guards.append(RefuseAfter(RunAgain("changed"), times=1))
    assert get(http, "Observation/other-weight", care).status_code == 200  # the second attempt answers
    assert len(uncorrected_disclosures(app, "Observation/other-weight")) == 1
    if services.engine.dialect.name == "postgresql":
        assert len(disclosures_of(app, "Observation/other-weight")) == 2  # one per attempt, the first corrected


def test_an_unexpected_error_after_the_statement_recorded_it_is_said_not_sent(committing_app: Flask) -> None:
    app, http = committing_app, committing_app.test_client()
    services, care = other_weight_for_care(app)
    services.router.guards.append(RefuseAfter(RuntimeError("a bug after the read")))
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert get(http, "Observation/other-weight", care).status_code == 500
    assert uncorrected_disclosures(app, "Observation/other-weight") == []
    if services.engine.dialect.name == "postgresql":
        correction = next(e for e in events(app) if any(x.get("what", {}).get("reference", "").startswith(
            "AuditEvent/") for x in e.get("entity", [])))
        assert correction["outcome"] == "8" and correction["outcomeDesc"].startswith("500 exception")


def test_a_read_the_sql_rule_refuses_but_the_answer_allows_is_recorded_not_run_again(
        committing_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """The statement's INSERT refuses by its SQL access rule (here the policy's ``sensitivity`` column
    out of step with the content: a PSY bit the content does not carry) while the Python rule shows it:
    the Consents did not change (its ``policy_ok``), so the read is answered, with its full event."""
    app, http = committing_app, committing_app.test_client()
    services, care = other_weight_for_care(app)
    assert get(http, "Observation/other-weight", care).status_code == 200
    with services.engine.begin() as conn:
        conn.execute(update(resource).where(resource.c.res_type == "Observation", resource.c.res_id == "other-weight")
                     .values(sensitivity=label_mask({(PSY["system"], PSY["code"])})))
    with caplog.at_level(logging.WARNING, logger="fhir_server.audit.pending"):
        assert get(http, "Observation/other-weight", care).status_code == 200
    assert len(uncorrected_disclosures(app, "Observation/other-weight")) == 2
    if services.engine.dialect.name == "postgresql":
        assert "SQL access rule refused" in caplog.text
