"""Classic R4 Subscriptions (subscription.html: search criteria, rest-hook, payload or ping) through
the HTTP API on SQLite and PostgreSQL, with real commits, the outbox drain, the delivery thread and a
real HTTP receiver (tests/subscriptions/conftest.py)."""
from __future__ import annotations

import time
from typing import Any

from subscriptions.signing import HEADER, verify
from subscriptions.spec import PROFILE, SIGNING_SECRET

from .conftest import SECRET, create, wait_status

LOINC = "http://loinc.org"


def classic(endpoint: str, criteria: str, *, payload: str | None = "application/fhir+json",
            headers: tuple[str, ...] = (), secret: str | None = None) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if payload:
        channel["payload"] = payload
    if headers:
        channel["header"] = list(headers)
    if secret:
        channel["extension"] = [{"url": SIGNING_SECRET, "valueString": secret}]
    return {"resourceType": "Subscription", "status": "requested", "reason": "Monitor neonatal bilirubin",
            "criteria": criteria, "channel": channel}


def observation(patient: str, code: str, value: str = "1.50") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": patient},
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": float(value), "unit": "mg/dL"}}


def test_search_criteria_notify_with_the_resource_put_to_the_endpoint(http, receiver) -> None:
    created = create(http, classic(receiver.url, f"Observation?code={LOINC}|1975-2&subject=Patient/p1",
                                   headers=("Authorization: Bearer subscriber-token",)))
    assert created["status"] == "requested"
    assert PROFILE not in (created.get("meta") or {}).get("profile", [])  # not a backport Subscription
    wait_status(http, created["id"], "active")
    assert receiver.received == []  # R4 has no handshake: nothing is sent until something matches

    other_code = create(http, observation("Patient/p1", "2339-0"))
    other_patient = create(http, observation("Patient/p2", "1975-2"))
    raw = ('{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/p1"},'
           '"code":{"coding":[{"system":"http://loinc.org","code":"1975-2"}]},'
           '"valueQuantity":{"value":1.50,"unit":"mg/dL"}}')
    posted = http.post("/fhir/Observation", data=raw, content_type="application/fhir+json")
    assert posted.status_code == 201
    match = posted.get_json()
    receiver.wait_for(lambda r: len(r.received) >= 1)
    time.sleep(0.5)  # the two that do not match must not arrive late either
    assert len(receiver.received) == 1, [(r.method, r.path) for r in receiver.received]
    got = receiver.received[0]
    assert (got.method, got.path) == ("PUT", f"/notify/Observation/{match['id']}")
    assert got.headers["Content-Type"].startswith("application/fhir+json")
    assert got.headers["Authorization"] == "Bearer subscriber-token"
    assert HEADER not in got.headers  # no secret given: the channel's header authenticates the server
    assert got.body["id"] == match["id"] and got.body["meta"]["versionId"] == "1"
    assert b'"value":1.50' in got.raw  # the resource as stored: decimals exactly as written
    assert {other_code["id"], other_patient["id"]}.isdisjoint({r.path.rsplit("/", 1)[-1] for r in receiver.received})

    # an update that still matches notifies again (the new version); one that no longer matches does not
    updated = http.put(f"/fhir/Observation/{match['id']}", json={**match, "status": "amended"})
    assert updated.status_code == 200
    receiver.wait_for(lambda r: len(r.received) == 2)
    assert receiver.received[1].body["meta"]["versionId"] == "2"
    moved = http.put(f"/fhir/Observation/{match['id']}",
                     json={**updated.get_json(), "subject": {"reference": "Patient/p9"}})
    assert moved.status_code == 200
    assert http.delete(f"/fhir/Observation/{match['id']}").status_code in (200, 204)
    time.sleep(0.8)
    assert len(receiver.received) == 2  # no notification for a non-match or a deletion (subscription.html)


def test_no_payload_is_a_ping_with_no_body_and_a_secret_signs_it(http, receiver) -> None:
    created = create(http, classic(receiver.url, "Patient?family=Okafor", payload=None, secret=SECRET))
    assert SIGNING_SECRET not in str(created)
    wait_status(http, created["id"], "active")
    create(http, {"resourceType": "Patient", "name": [{"family": "Okafor"}]})
    create(http, {"resourceType": "Patient", "name": [{"family": "Smith"}]})
    receiver.wait_for(lambda r: len(r.received) == 1)
    time.sleep(0.5)
    assert len(receiver.received) == 1
    ping = receiver.received[0]
    assert (ping.method, ping.path, ping.raw, ping.body) == ("POST", "/notify", b"", None)
    assert ping.headers["X-SG-Subscription"] == created["id"]
    assert verify(SECRET, b"", ping.headers[HEADER])


def test_a_failing_endpoint_gets_every_match_in_order_once_it_answers(http, receiver) -> None:
    created = create(http, classic(receiver.url, "Observation?code=1975-2"))
    wait_status(http, created["id"], "active")
    receiver.failing = True
    ids = [create(http, observation("Patient/p1", "1975-2", value=str(n)))["id"] for n in range(4)]
    wait_status(http, created["id"], "error")
    assert "HTTP 500" in http.get(f"/fhir/Subscription/{created['id']}").get_json()["error"]
    receiver.failing = False
    receiver.wait_for(lambda r: len(r.received) == 4)
    assert [r.path.rsplit("/", 1)[-1] for r in receiver.received] == ids
    wait_status(http, created["id"], "active")


def test_off_stops_classic_notifications(http, receiver) -> None:
    created = create(http, classic(receiver.url, "Observation?code=1975-2"))
    current = wait_status(http, created["id"], "active")
    assert http.put(f"/fhir/Subscription/{created['id']}", json={**current, "status": "off"}).status_code == 200
    create(http, observation("Patient/p1", "1975-2"))
    time.sleep(0.8)
    assert receiver.received == []


def test_invalid_classic_criteria_are_refused_naming_the_element(http, receiver) -> None:
    cases = [
        (classic(receiver.url, "Observation?colour=red"), "Subscription.criteria"),  # unknown parameter
        (classic(receiver.url, "Observation?code:sounds-like=x"), "Subscription.criteria"),
        (classic(receiver.url, "NoSuchType?code=x"), "Subscription.criteria"),
        (classic(receiver.url, "Observation?code=1", payload="application/fhir+xml"), "Subscription.channel.payload"),
        (classic("http://example.org/hook", "Observation?code=1"), "Subscription.channel.endpoint"),
        (classic(receiver.url, "Observation?code=1", secret="short"),
         "Subscription.channel.extension('subscription-signing-secret')"),
    ]
    for body, expression in cases:
        response = http.post("/fhir/Subscription", json=body)
        assert response.status_code == 422, (body["criteria"], response.get_data(as_text=True))
        outcome = response.get_json()
        assert any(expression in issue.get("expression", []) for issue in outcome["issue"]), (expression, outcome)
    assert http.get("/fhir/Subscription").get_json()["total"] == 0


def test_the_capability_statement_says_classic_subscriptions_work(http) -> None:
    statement = http.get("/fhir/metadata").get_json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    assert "classic R4 Subscriptions" in entry["documentation"]
    assert {"create", "read", "update", "delete"} <= {i["code"] for i in entry["interaction"]}
