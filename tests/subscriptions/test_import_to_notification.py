"""End to end through the real app (real commits, the outbox drain, record linkage, rescoring and the
delivery thread) on SQLite and PostgreSQL: a police domestic abuse notification imported with
``$import-agency-data`` for a child on an open child protection plan fires the ``domestic-abuse-on-plan``
trigger; the child's escalation Flag carries it, with a Provenance naming the notification; and a
rest-hook Subscription to the escalation topic receives a signed notification holding that Flag."""
from __future__ import annotations

import io
import json
from typing import Any

from subscriptions.signing import HEADER, verify

from .conftest import SECRET, create, subscription, wait_status

LA_TAG = {"system": "https://w3id.org/sg-fhir/CodeSystem/source-agency", "code": "local-authority/202"}
NHS = "9434765919"
TRIGGER = "domestic-abuse-on-plan"


def notification() -> list[dict[str, Any]]:
    """One police-notifications-json notification (docs/formats/police-notifications.md)."""
    return [{"force_code": "20", "police_reference": "20-261120-0117", "notification_type": "DA",
             "incident_start": "2026-11-20T21:40", "incident_end": None,
             "child": {"person_id": "P100231", "forename": "Amelia", "surname": "Hughes", "dob": "2015-06-14",
                       "gender": "F", "nhs_number": NHS, "postcode": "LS6 2AB", "present": "Y",
                       "location": "in the living room"},
             "adults": [{"person_id": "A200114", "forename": "Daniel", "surname": "Hughes", "dob": "1986-09-02",
                         "gender": "M", "role": "alleged-perpetrator", "relationship": "father"}],
             "offence": None, "circumstances": "Neighbour called police after hearing shouting.",
             "child_voice": "Amelia said: \"I hid behind the sofa.\""}]


def escalation(flag: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for ext in flag.get("extension", []):
        for part in ext.get("extension", []):
            out.setdefault(part["url"], []).append(next(v for k, v in part.items() if k.startswith("value")))
    return out


def causes(flag: dict[str, Any]) -> set[str]:
    return {c["code"] for c in escalation(flag).get("cause", [])}


def test_a_police_notification_for_a_child_on_a_plan_reaches_the_subscriber_as_a_signed_flag(http, receiver):
    worker = create(http, {"resourceType": "Practitioner", "name": [{"family": "Worker", "given": ["Sam"]}]})
    child = create(http, {"resourceType": "Patient", "meta": {"tag": [LA_TAG]},
                          "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS}],
                          "name": [{"family": "Hughes", "given": ["Amelia"]}], "gender": "female",
                          "birthDate": "2015-06-14"})
    create(http, {"resourceType": "EpisodeOfCare", "meta": {"tag": [LA_TAG]}, "status": "active",
                  "type": [{"coding": [{"system": "https://w3id.org/sg-fhir/CodeSystem/episode-type",
                                        "code": "cp-plan"}]}],
                  "patient": {"reference": f"Patient/{child['id']}"}, "period": {"start": "2026-06-01"},
                  "careManager": {"reference": f"Practitioner/{worker['id']}"}})
    sub = create(http, subscription(receiver.url, content="full-resource"))
    wait_status(http, sub["id"], "active")

    upload = (io.BytesIO(json.dumps(notification()).encode()), "20_notifications.json")
    imported = http.post("/fhir/$import-agency-data?format=police-notifications-json",
                         data={"file": upload}, content_type="multipart/form-data")
    assert imported.status_code == 200, imported.data

    def trigger_notified(r: Any) -> bool:
        return any(TRIGGER in causes(e["resource"]) for n in r.of("event-notification")
                   for e in n.body["entry"][1:] if e.get("resource", {}).get("resourceType") == "Flag")

    receiver.wait_for(trigger_notified, timeout=60)
    received = next(n for n in receiver.of("event-notification")
                    if any(TRIGGER in causes(e.get("resource", {})) for e in n.body["entry"][1:]))
    assert verify(SECRET, received.raw, received.headers[HEADER])
    assert received.headers["X-SG-Subscription"] == sub["id"]
    assert received.body["type"] == "history"
    status = received.status()
    assert status["topic"] == "https://w3id.org/sg-fhir/SubscriptionTopic/escalation-flag"
    entry = next(e for e in received.body["entry"][1:] if TRIGGER in causes(e.get("resource", {})))
    sent = entry["resource"]
    assert status["notification-event"][-1]["focus"]["reference"].endswith(
        f"/Flag/{sent['id']}/_history/{sent['meta']['versionId']}")

    # the Flag is about the child's master record (police and local authority records linked), active,
    # with the score, band, the trigger and the police Observation as evidence
    master = sent["subject"]["reference"]
    assert master != f"Patient/{child['id']}"
    links = {link["other"]["reference"] for link in http.get(f"/fhir/{master}").get_json()["link"]}
    assert f"Patient/{child['id']}" in links and len(links) == 2
    assert sent["status"] == "active" and sent["author"]["reference"].startswith("Device/")
    details = escalation(sent)
    observation = next(r["reference"] for r in details["evidence"] if r["reference"].startswith("Observation/"))
    police = http.get(f"/fhir/{observation}").get_json()
    assert police["code"]["coding"][0]["code"] == "domestic-abuse-child-present"
    assert any("Trigger: Police domestic abuse notification" in r for r in details["reason"])

    # one Flag for the ongoing escalation (the plan's band rise, then the trigger), not two
    flags = http.get(f"/fhir/Flag?subject={master}&status=active").get_json()
    assert flags["total"] == 1 and flags["entry"][0]["resource"]["id"] == sent["id"]
    target = f"Flag/{sent['id']}/_history/{sent['meta']['versionId']}"
    provenance = http.get(f"/fhir/Provenance?target={target}").get_json()
    assert provenance["total"] >= 1
    prov = next(e["resource"] for e in provenance["entry"]
                if any(t["reference"] == target for t in e["resource"]["target"])
                and e["resource"]["agent"][0]["who"] == sent["author"])
    assert "Police domestic abuse notification" in prov["reason"][0]["text"]
    assert {"role": "source", "what": {"reference": observation}} in prov["entity"]
