"""Subscriptions through the HTTP API on SQLite and PostgreSQL, with real commits, the real outbox
drain and delivery thread, and a real HTTP receiver: lifecycle, validation, payload shapes, filters,
signatures, ordering, failure and recovery, $status and $events."""
from __future__ import annotations

import time

from fhir_server.conformance import load_conformance_resources
from subscriptions.signing import HEADER, verify
from subscriptions.spec import SIGNING_SECRET

from .conftest import CHILD_DATA, SECRET, create, flag, subscription, wait_status


def active_subscription(http, receiver, **kwargs) -> dict:
    created = create(http, subscription(receiver.url, **kwargs))
    assert created["status"] == "requested"
    return wait_status(http, created["id"], "active")


def test_a_subscription_is_activated_by_a_signed_handshake(http, receiver) -> None:
    created = create(http, subscription(receiver.url, headers=("Authorization: Bearer subscriber-token",)))
    assert created["status"] == "requested"
    assert SIGNING_SECRET not in str(created)  # the secret is write-only
    assert "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription" \
        in created["meta"]["profile"]

    current = wait_status(http, created["id"], "active")
    assert SIGNING_SECRET not in str(current)
    handshake = receiver.of("handshake")[0]
    status = handshake.status()
    assert status["status"] == "requested"
    assert status["events-since-subscription-start"] == "0"
    assert status["subscription"]["reference"].endswith(f"/Subscription/{created['id']}")
    assert handshake.body["type"] == "history"
    assert handshake.headers["Authorization"] == "Bearer subscriber-token"
    assert handshake.headers["X-SG-Subscription"] == created["id"]
    assert verify(SECRET, handshake.raw, handshake.headers[HEADER])
    assert not verify("another-secret-0123456789", handshake.raw, handshake.headers[HEADER])
    assert not verify(SECRET, handshake.raw + b" ", handshake.headers[HEADER])


def test_invalid_subscriptions_are_refused_with_the_element_named_and_nothing_written(http, receiver) -> None:
    cases = [
        (subscription(receiver.url) | {"criteria": "https://w3id.org/sg-fhir/SubscriptionTopic/none"},
         "Subscription.criteria"),
        (subscription(receiver.url, filters=("Flag?colour=red",)),
         "Subscription.criteria.extension('backport-filter-criteria')[0]"),
        (subscription(receiver.url, filters=("Flag?patient:missing=true",)),
         "Subscription.criteria.extension('backport-filter-criteria')[0]"),
        (subscription(receiver.url, filters=("lead-practitioner=Organization/1",)),
         "Subscription.criteria.extension('backport-filter-criteria')[0]"),
        (subscription(receiver.url, topic=CHILD_DATA), "Subscription.criteria.extension"),
        (subscription(receiver.url, channel_type="email"), "Subscription.channel.type"),
        (subscription("http://example.org/hook"), "Subscription.channel.endpoint"),
        (subscription("ftp://127.0.0.1/hook"), "Subscription.channel.endpoint"),
        (subscription(receiver.url, content="everything"),
         "Subscription.channel.payload.extension('backport-payload-content')"),
        (subscription(receiver.url, secret=None), "Subscription.channel.extension"),
        (subscription(receiver.url, secret="short"), "Subscription.channel.extension('subscription-signing-secret')"),
        (subscription(receiver.url, heartbeat=0), "Subscription.channel.extension('backport-heartbeat-period')"),
        (subscription(receiver.url, max_count=5000), "Subscription.channel.extension('backport-max-count')"),
        (subscription(receiver.url, headers=("X-SG-Signature: forged",)), "Subscription.channel.header[0]"),
        (subscription(receiver.url, headers=("no colon here",)), "Subscription.channel.header[0]"),
    ]
    for body, expression in cases:
        response = http.post("/fhir/Subscription", json=body)
        assert response.status_code == 422, (expression, response.get_data(as_text=True))
        outcome = response.get_json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert any(expression in issue.get("expression", []) for issue in outcome["issue"]), (expression, outcome)
    assert http.get("/fhir/Subscription").get_json()["total"] == 0
    time.sleep(0.3)
    assert receiver.received == []


def test_payload_shapes_empty_id_only_and_full_resource(http, receiver) -> None:
    subs = {content: active_subscription(http, receiver, content=content, filters=("Flag?patient=Patient/c1",))
            for content in ("empty", "id-only", "full-resource")}
    written = create(http, flag("Patient/c1", band="red"))
    receiver.wait_for(lambda r: len(r.of("event-notification")) == 3)
    by_sub = {r.headers["X-SG-Subscription"]: r for r in receiver.of("event-notification")}

    empty = by_sub[subs["empty"]["id"]]
    assert len(empty.body["entry"]) == 1
    assert empty.status()["notification-event"] == [
        {"event-number": "1", "timestamp": empty.status()["notification-event"][0]["timestamp"]}]

    id_only = by_sub[subs["id-only"]["id"]]
    event = id_only.status()["notification-event"][0]
    assert event["event-number"] == "1"
    assert event["focus"]["reference"].endswith(f"/Flag/{written['id']}/_history/1")
    assert id_only.status()["events-since-subscription-start"] == "1"
    assert id_only.status()["topic"] == "https://w3id.org/sg-fhir/SubscriptionTopic/escalation-flag"
    entry = id_only.body["entry"][1]
    assert entry["fullUrl"].endswith(f"/Flag/{written['id']}")
    assert entry["request"] == {"method": "POST", "url": "Flag"}
    assert "resource" not in entry

    full = by_sub[subs["full-resource"]["id"]]
    entry = full.body["entry"][1]
    assert entry["resource"]["id"] == written["id"]
    assert entry["resource"]["subject"] == {"reference": "Patient/c1"}
    assert entry["response"]["status"] == "201"
    for received in by_sub.values():
        assert received.body["type"] == "history"
        assert received.body["entry"][0]["resource"]["resourceType"] == "Parameters"
        assert verify(SECRET, received.raw, received.headers[HEADER])


def test_filters_patient_author_band_lead_practitioner_and_organisation(http, receiver) -> None:
    create(http, {"resourceType": "EpisodeOfCare", "id": "ignored", "status": "active",
                  "patient": {"reference": "Patient/c2"}, "careManager": {"reference": "Practitioner/lead-1"},
                  "managingOrganization": {"reference": "Organization/la-201"}})
    subs = {
        "patient": active_subscription(http, receiver, filters=("Flag?patient=Patient/c2",)),
        "other-patient": active_subscription(http, receiver, filters=("Flag?patient=c9",)),
        "red": active_subscription(http, receiver, filters=("Flag?band=red",)),
        "amber-or-green": active_subscription(http, receiver, filters=("band=amber,green",)),
        "lead": active_subscription(http, receiver, filters=("Flag?lead-practitioner=Practitioner/lead-1",)),
        "org": active_subscription(http, receiver, filters=("Flag?organization=Organization/la-201",)),
        "author": active_subscription(http, receiver, filters=("Flag?author=Practitioner/dsl-7",)),
        "both": active_subscription(http, receiver, filters=("Flag?patient=Patient/c2", "Flag?band=amber")),
    }
    create(http, flag("Patient/c2", band="red"))
    create(http, flag("Patient/c3", band="amber", author="Practitioner/dsl-7"))
    # not a safeguarding Flag: no topic event at all
    create(http, {"resourceType": "Flag", "status": "active", "code": {"text": "Allergy"},
                  "subject": {"reference": "Patient/c2"}})
    expected = {"patient": 1, "other-patient": 0, "red": 1, "amber-or-green": 1, "lead": 1, "org": 1,
                "author": 1, "both": 0}
    receiver.wait_for(lambda r: len(r.event_numbers()) >= sum(expected.values()))
    time.sleep(0.5)  # nothing more arrives
    got = {name: len(receiver.event_numbers(sub["id"])) for name, sub in subs.items()}
    assert got == expected


def test_new_agency_data_for_a_child(http, receiver) -> None:
    sub = active_subscription(http, receiver, topic=CHILD_DATA, filters=("patient=Patient/c4",))
    typed = active_subscription(http, receiver, topic=CHILD_DATA,
                                filters=("patient=Patient/c4", "_type=Encounter"))
    create(http, {"resourceType": "Patient", "id": "x", "name": [{"family": "Other"}]})
    observation = create(http, {"resourceType": "Observation", "status": "final", "code": {"text": "School absence"},
                                "subject": {"reference": "Patient/c4"}})
    create(http, {"resourceType": "Observation", "status": "final", "code": {"text": "School absence"},
                  "subject": {"reference": "Patient/c5"}})
    encounter = create(http, {"resourceType": "Encounter", "status": "finished",
                              "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
                              "subject": {"reference": "Patient/c4"}})
    receiver.wait_for(lambda r: len(r.event_numbers(sub["id"])) == 2 and len(r.event_numbers(typed["id"])) == 1)
    focus = [e["focus"]["reference"] for r in receiver.of("event-notification")
             if r.headers["X-SG-Subscription"] == sub["id"] for e in r.status()["notification-event"]]
    assert [f.split("/fhir/")[1] for f in focus] == [f"Observation/{observation['id']}/_history/1",
                                                     f"Encounter/{encounter['id']}/_history/1"]


def test_events_arrive_once_in_order_and_status_and_events_report_them(http, receiver) -> None:
    sub = active_subscription(http, receiver, filters=("Flag?patient=Patient/c6",), max_count=3)
    ids = [create(http, flag("Patient/c6"))["id"] for _ in range(12)]
    receiver.wait_for(lambda r: len(r.event_numbers(sub["id"])) >= 12)
    assert receiver.event_numbers(sub["id"]) == list(range(1, 13))
    assert all(len(r.numbers()) <= 3 for r in receiver.of("event-notification"))

    status = http.get(f"/fhir/Subscription/{sub['id']}/$status")
    assert status.status_code == 200
    bundle = status.get_json()
    assert bundle["type"] == "searchset" and bundle["total"] == 1
    params = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    assert params["type"]["valueCode"] == "query-status"
    assert params["status"]["valueCode"] == "active"
    assert params["events-since-subscription-start"]["valueString"] == "12"

    typed = http.get(f"/fhir/Subscription/$status?id={sub['id']}&status=active").get_json()
    assert typed["total"] == 1
    assert http.get("/fhir/Subscription/$status?status=off").get_json()["total"] == 0

    events = http.get(f"/fhir/Subscription/{sub['id']}/$events?eventsSinceNumber=4&eventsUntilNumber=6"
                      "&content=full-resource")
    assert events.status_code == 200
    body = events.get_json()
    assert body["type"] == "history"
    numbers = [int(p["part"][0]["valueString"]) for p in body["entry"][0]["resource"]["parameter"]
               if p["name"] == "notification-event"]
    assert numbers == [4, 5, 6]
    assert [e["resource"]["id"] for e in body["entry"][1:]] == ids[3:6]
    assert {p["name"]: p for p in body["entry"][0]["resource"]["parameter"]}["type"]["valueCode"] == "query-event"
    posted = http.post(f"/fhir/Subscription/{sub['id']}/$events", json={
        "resourceType": "Parameters", "parameter": [{"name": "eventsSinceNumber", "valueString": "11"}]})
    assert len(posted.get_json()["entry"]) == 3  # status + events 11 and 12 (id-only)

    assert http.get(f"/fhir/Subscription/{sub['id']}/$events?eventsSinceNumber=x").status_code == 400
    assert http.get(f"/fhir/Subscription/{sub['id']}/$events?content=all").status_code == 400
    assert http.get(f"/fhir/Subscription/{sub['id']}/$events?eventsSinceNumber=5&eventsUntilNumber=2")\
        .status_code == 400
    assert http.get("/fhir/Subscription/nope/$status").status_code == 404


def test_a_failing_endpoint_puts_the_subscription_in_error_and_recovery_delivers_everything_in_order(
        http, receiver) -> None:
    sub = active_subscription(http, receiver, filters=("Flag?patient=Patient/c7",))
    receiver.failing = True
    for _ in range(3):
        create(http, flag("Patient/c7"))
    errored = wait_status(http, sub["id"], "error", timeout=30)
    assert "HTTP 500" in errored["error"]
    status = http.get(f"/fhir/Subscription/{sub['id']}/$status").get_json()
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["status"]["valueCode"] == "error"
    assert "HTTP 500" in params["error"]["valueCodeableConcept"]["text"]
    create(http, flag("Patient/c7"))  # still recorded while in error

    receiver.failing = False
    receiver.wait_for(lambda r: len(r.event_numbers(sub["id"])) >= 4, timeout=30)
    assert receiver.event_numbers(sub["id"]) == [1, 2, 3, 4]
    recovered = wait_status(http, sub["id"], "active")
    assert "error" not in recovered


def test_off_stops_events_and_requested_restarts_with_a_handshake(http, receiver) -> None:
    sub = active_subscription(http, receiver, filters=("Flag?patient=Patient/c8",))
    off = http.put(f"/fhir/Subscription/{sub['id']}", json={**sub, "status": "off"})
    assert off.status_code == 200 and off.get_json()["status"] == "off"
    create(http, flag("Patient/c8"))
    time.sleep(0.8)
    assert receiver.event_numbers(sub["id"]) == []
    assert http.get(f"/fhir/Subscription/$status?status=off").get_json()["total"] == 1

    again = http.put(f"/fhir/Subscription/{sub['id']}", json={**sub, "status": "requested"})
    assert again.get_json()["status"] == "requested"
    wait_status(http, sub["id"], "active")
    assert len(receiver.of("handshake")) == 2
    create(http, flag("Patient/c8"))
    receiver.wait_for(lambda r: r.event_numbers(sub["id"]) == [1])

    # an update that asks for nothing new keeps the status; a deletion stops the subscription
    same = http.put(f"/fhir/Subscription/{sub['id']}", json={**sub, "status": "active"})
    assert same.get_json()["status"] == "active"
    assert http.delete(f"/fhir/Subscription/{sub['id']}").status_code == 204
    create(http, flag("Patient/c8"))
    time.sleep(0.8)
    assert receiver.event_numbers(sub["id"]) == [1]


def test_heartbeats_are_sent_when_nothing_happens(http, receiver) -> None:
    active_subscription(http, receiver, heartbeat=1)
    receiver.wait_for(lambda r: len(r.of("heartbeat")) >= 2, timeout=15)
    beat = receiver.of("heartbeat")[0]
    assert beat.status()["notification-event"] == []
    assert verify(SECRET, beat.raw, beat.headers[HEADER])


def test_the_topics_are_readable_and_the_capability_statement_lists_the_operations(sub_app, http) -> None:
    services = sub_app.extensions["fhir"]
    load_conformance_resources(services.repo, services.settings)  # what `fhir-server migrate` does
    topic = http.get("/fhir/Basic/escalation-flag")
    assert topic.status_code == 200
    extensions = {e["url"].rsplit(".", 1)[-1]: e for e in topic.get_json()["extension"]}
    assert extensions["url"]["valueUri"] == "https://w3id.org/sg-fhir/SubscriptionTopic/escalation-flag"
    filters = {p["valueString"] for e in topic.get_json()["extension"] if e["url"].endswith(".canFilterBy")
               for p in e["extension"] if p["url"] == "filterParameter"}
    assert {"patient", "lead-practitioner", "organization", "band"} <= filters
    assert http.get("/fhir/Basic/child-agency-data").status_code == 200
    statement = http.get("/fhir/metadata").get_json()
    subscription_entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    names = {op["name"] for op in subscription_entry.get("operation", [])}
    assert {"status", "events"} <= names
    assert subscription_entry["supportedProfile"] == [
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"]
    assert {e["valueCanonical"] for e in subscription_entry["extension"]} == {
        "https://w3id.org/sg-fhir/SubscriptionTopic/escalation-flag",
        "https://w3id.org/sg-fhir/SubscriptionTopic/child-agency-data"}


def test_a_subscription_whose_end_has_passed_is_turned_off(http, receiver) -> None:
    bad = http.post("/fhir/Subscription", json={**subscription(receiver.url), "end": "soon"})
    assert bad.status_code in (400, 422)
    created = create(http, {**subscription(receiver.url, filters=("Flag?patient=Patient/c10",)),
                            "end": "2020-01-01T00:00:00Z"})
    wait_status(http, created["id"], "off")
    create(http, flag("Patient/c10"))
    time.sleep(0.8)
    assert receiver.event_numbers(created["id"]) == []
    assert receiver.of("handshake") == []
