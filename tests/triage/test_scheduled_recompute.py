"""The scheduled recompute: scores decay and triggers expire with time alone, so a run with no new
data rescores and de-escalates a child whose evidence has aged out. The run's clock is injected."""
from __future__ import annotations

from datetime import timedelta

from fhir_server.fhir.instants import utcnow
from fhir_server.periodic import local_beat
from fhir_server.worker import celery, wait_for_background_drains
from triage.recompute import scheduled_recompute

from ..functional.test_crud import body
from .conftest import observation, patient
from .test_triage_http import POLICE, children, post


def test_a_scheduled_run_rescores_and_closes_an_escalation_whose_evidence_aged_out(committing_app):
    client = committing_app.test_client()
    services = committing_app.extensions["fhir"]
    child = post(client, patient(POLICE, "9990000026", "Noah", "Patel", "2012-01-03", "male"))
    for days_ago in (10, 3):  # a second missing episode within 30 days: the repeat-missing trigger
        post(client, observation(POLICE, f"Patient/{child}", "risk-factor", "missing-episode", days_ago))
    wait_for_background_drains(timeout=120)
    before = children(body(client.get("/fhir/$triage")))[0]
    assert before["trigger"] == ["repeat-missing"]
    flag = before["flag"][0]["reference"]
    assert body(client.get(f"/fhir/{flag}"))["status"] == "active"

    # 60 days later, nothing new: the trigger has expired and the missing episodes have decayed
    later = utcnow() + timedelta(days=60)
    stats = scheduled_recompute(services.repo, now=later)
    assert stats is not None and stats.scored == 1 and stats.changed == 1 and stats.flags_closed == 1
    after = children(body(client.get("/fhir/$triage")))[0]
    assert after["score"][0] < before["score"][0] and "trigger" not in after and "flag" not in after
    closed = body(client.get(f"/fhir/{flag}"))
    assert closed["status"] == "inactive" and closed["period"]["end"].startswith(later.date().isoformat())
    provenance = body(client.get(f"/fhir/Provenance?target={flag}"))
    assert any("De-escalated" in (e["resource"].get("reason") or [{}])[0].get("text", "")
               for e in provenance["entry"])

    again = scheduled_recompute(services.repo, now=later)  # idempotent: the same run writes nothing
    assert again is not None and again.changed == 0 and again.flags_closed == again.flags_raised == 0
    assert body(client.get(f"/fhir/{flag}"))["meta"]["versionId"] == closed["meta"]["versionId"]


def test_the_recompute_is_on_the_beat_of_this_process_and_of_celery(committing_app):
    services = committing_app.extensions["fhir"]
    assert f"risk-recompute-{id(services.engine):x}" in local_beat.scheduled()  # no broker in tests
    import triage.tasks  # noqa: F401 - what a Celery worker imports at start-up

    entry = celery.conf.beat_schedule["risk-recompute"]
    assert entry == {"task": "triage.recompute", "schedule": services.settings.risk_recompute_seconds}
