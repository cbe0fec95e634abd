"""Subscriptions notify only about what their owner may read (subscriptions/access.py), through the
HTTP API with authentication on, real commits, the delivery thread and a real receiver, on SQLite
and PostgreSQL. Every agency writes through its own token, so each resource carries its
source-agency tag as in production; the police Observation is labelled SDV + R."""
from __future__ import annotations

import time
from typing import Any

import pytest
import simplejson
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from fhir_server.auth.labels import ACT_CODE, CONFIDENTIALITY
from fhir_server.storage.tables import audit_event, resource, subscription_state
from subscriptions.delivery import UNOWNED

from tests.functional.test_access_policy import ids, send

from .conftest import CHILD_DATA, Receiver, create, flag, subscription, wait_status
from .test_classic_r4 import classic

LABELS = [{"system": ACT_CODE, "code": "SDV"}, {"system": CONFIDENTIALITY, "code": "R"}]


@pytest.fixture
def api(auth_sub_app: Flask) -> FlaskClient:
    return auth_sub_app.test_client()


@pytest.fixture
def tokens(auth_sub_app: Flask) -> dict[str, str]:
    auth = auth_sub_app.extensions["fhir"].auth

    def mint(role: str, agency: str, scope: str, purpose: str | None = "safeguarding") -> str:
        return auth.mint_dev_token(client_id=f"{role}-app", scope=scope, practitioner="Practitioner/p1",
                                   agency=agency, role=role, purpose=purpose)

    return {
        "mash": mint("mash-practitioner", "la:201", "user/*.cruds"),  # cleared for SDV/R, safeguarding
        "school": mint("school-dsl", "education:201", "user/*.cruds"),  # SDV/R only on Flags
        "flags-only": mint("social-worker", "la:201", "user/Subscription.cruds user/Flag.rs"),
        "police": mint("police", "police:01", "user/Observation.cruds"),
        "other-la": mint("mash-practitioner", "la:202", "user/*.cruds"),  # another local authority
        "break-glass": mint("mash-practitioner", "la:201", "user/*.cruds", purpose="BTG"),
    }


def created(api: FlaskClient, body: dict[str, Any], token: str) -> dict[str, Any]:
    res = send(api, "POST", body["resourceType"], body, token)
    assert res.status_code == 201, res.get_data(as_text=True)
    return res.get_json()


def observation(patient: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": text},
            "subject": {"reference": patient}, **extra}


def focuses(receiver: Receiver, sub_id: str) -> list[tuple[int, str]]:
    """(event-number, "Type/id") of every event delivered to ``sub_id``."""
    with receiver.lock:
        items = [r for r in receiver.received if r.kind == "event-notification"
                 and r.headers.get("X-SG-Subscription") == sub_id]
    out = []
    for r in items:
        for event in r.status()["notification-event"]:
            ref = event["focus"]["reference"].split("/_history/")[0].split("/")
            out.append((int(event["event-number"]), f"{ref[-2]}/{ref[-1]}"))
    return out


def test_topic_notifications_follow_each_subscribers_access(api: FlaskClient, tokens: dict[str, str],
                                                           receiver: Receiver) -> None:
    child = created(api, {"resourceType": "Patient", "name": [{"family": "Okafor"}]}, tokens["mash"])["id"]
    sub = subscription(receiver.url, topic=CHILD_DATA, filters=(f"patient=Patient/{child}", "_type=Observation,Flag"))
    subs = {who: created(api, sub, tokens[who])["id"] for who in ("mash", "school", "flags-only")}
    stored = created(api, sub, tokens["mash"])
    assert "access" not in simplejson.dumps(stored)  # kept server-side, never in the resource

    police = created(api, observation(f"Patient/{child}", "Domestic abuse incident", meta={"security": LABELS}),
                     tokens["police"])["id"]
    attendance = created(api, observation(f"Patient/{child}", "Attendance 84%"), tokens["school"])["id"]
    cp_flag = created(api, flag(f"Patient/{child}"), tokens["mash"])["id"]

    receiver.wait_for(lambda r: len(focuses(r, subs["mash"])) >= 3 and len(focuses(r, subs["school"])) >= 2
                      and len(focuses(r, subs["flags-only"])) >= 1)
    time.sleep(0.5)  # nothing hidden arrives late either
    assert focuses(receiver, subs["mash"]) == [
        (1, f"Observation/{police}"), (2, f"Observation/{attendance}"), (3, f"Flag/{cp_flag}")]
    # the school never hears of the police record: its numbers have no gap where it was
    assert focuses(receiver, subs["school"]) == [(1, f"Observation/{attendance}"), (2, f"Flag/{cp_flag}")]
    # a token scoped to Flags hears of no Observation at all
    assert focuses(receiver, subs["flags-only"]) == [(1, f"Flag/{cp_flag}")]
    school_status = send(api, "GET", f"Subscription/{subs['school']}/$status", None, tokens["school"])
    params = {p["name"]: p for p in school_status.get_json()["entry"][0]["resource"]["parameter"]}
    assert params["events-since-subscription-start"]["valueString"] == "2"


def test_classic_criteria_notify_only_what_the_subscriber_may_read(api: FlaskClient, tokens: dict[str, str],
                                                                   receiver: Receiver) -> None:
    child = created(api, {"resourceType": "Patient", "name": [{"family": "Okafor"}]}, tokens["mash"])["id"]
    criteria = classic(receiver.url, f"Observation?subject=Patient/{child}")
    cleared = created(api, criteria, tokens["mash"])["id"]
    school = created(api, criteria, tokens["school"])["id"]

    police = created(api, observation(f"Patient/{child}", "Domestic abuse incident", meta={"security": LABELS}),
                     tokens["police"])["id"]
    attendance = created(api, observation(f"Patient/{child}", "Attendance 84%"), tokens["school"])["id"]

    def paths(sub_id: str) -> list[str]:
        with receiver.lock:
            return [r.path for r in receiver.received if r.headers.get("X-SG-Subscription") == sub_id]

    receiver.wait_for(lambda r: len(paths(cleared)) >= 2 and len(paths(school)) >= 1)
    time.sleep(0.5)
    assert paths(cleared) == [f"/notify/Observation/{police}", f"/notify/Observation/{attendance}"]
    assert paths(school) == [f"/notify/Observation/{attendance}"]


def test_no_subscription_under_break_glass(api: FlaskClient, tokens: dict[str, str], receiver: Receiver) -> None:
    res = send(api, "POST", "Subscription", subscription(receiver.url), tokens["break-glass"],
               **{"X-Break-Glass-Reason": "child missing tonight"})
    assert res.status_code == 403, res.get_data(as_text=True)
    assert "break-glass" in res.get_json()["issue"][0]["diagnostics"]


def test_a_subscription_without_recorded_access_fails_closed_until_put_again(
        sub_app: Flask, receiver: Receiver) -> None:
    http = sub_app.test_client()
    body = subscription(receiver.url)
    sub_id = create(http, body)["id"]
    wait_status(http, sub_id, "active")
    with sub_app.extensions["fhir"].engine.begin() as conn:  # as migration 0019 leaves an older row
        conn.execute(update(subscription_state).where(subscription_state.c.sub_id == sub_id).values(access=None))
    create(http, flag("Patient/p1"))
    current = wait_status(http, sub_id, "error")
    assert current["error"] == UNOWNED
    time.sleep(0.5)
    assert receiver.event_numbers(sub_id) == []  # not even that something changed

    assert http.put(f"/fhir/Subscription/{sub_id}", json={**current, "status": "requested"}).status_code == 200
    wait_status(http, sub_id, "active")
    create(http, flag("Patient/p1"))
    receiver.wait_for(lambda r: r.event_numbers(sub_id) == [1])


def test_only_the_owning_agency_reads_a_subscription(api: FlaskClient, tokens: dict[str, str],
                                                     receiver: Receiver) -> None:
    """A Subscription's channel.header holds its receiver's credentials: only its own agency (the
    source-agency tag stamped at create) reads it, whatever the role (auth/policy.OWNER_ONLY_TYPES)."""
    body = subscription(receiver.url, headers=("Authorization: Bearer la-201-receiver",))
    la_sub = created(api, body, tokens["mash"])
    school_sub = created(api, subscription(receiver.url, headers=("Authorization: Bearer school-receiver",)),
                         tokens["school"])

    def searched(who: str) -> set[str]:
        res = send(api, "GET", "Subscription", None, tokens[who])
        assert res.status_code == 200, res.get_data(as_text=True)
        return ids(res.get_json())

    # another agency, even a role that reads every type: as if it did not exist
    for url in (f"Subscription/{la_sub['id']}", f"Subscription/{la_sub['id']}/_history/1",
                f"Subscription/{la_sub['id']}/$status", f"Subscription/{la_sub['id']}/$events"):
        res = send(api, "GET", url, None, tokens["other-la"])
        assert res.status_code == 404, (url, res.get_data(as_text=True))
        assert "la-201-receiver" not in res.get_data(as_text=True)
    assert searched("other-la") == set()
    for url in ("Subscription/_history", f"Subscription/{la_sub['id']}/_history", "Subscription/$status"):
        res = send(api, "GET", url, None, tokens["other-la"])
        text = res.get_data(as_text=True)
        assert res.status_code in (200, 404) and "la-201-receiver" not in text, (url, text)
        if res.status_code == 200:  # a 404 names only the id asked for
            assert la_sub["id"] not in text, (url, text)

    # a school's DSL reads its own although Subscription is not among its role's read types
    own = send(api, "GET", f"Subscription/{school_sub['id']}", None, tokens["school"])
    assert own.status_code == 200, own.get_data(as_text=True)
    assert own.get_json()["channel"]["header"] == ["Authorization: Bearer school-receiver"]
    assert send(api, "GET", f"Subscription/{school_sub['id']}/$status", None, tokens["school"]).status_code == 200
    assert send(api, "GET", f"Subscription/{la_sub['id']}", None, tokens["school"]).status_code == 404
    assert searched("school") == {school_sub["id"]}
    everything = send(api, "GET", "Subscription/$status", None, tokens["school"]).get_data(as_text=True)
    assert school_sub["id"] in everything and la_sub["id"] not in everything

    # the owning agency still reads and updates its own, and sees no other agency's
    assert searched("mash") == {la_sub["id"]}
    res = send(api, "PUT", f"Subscription/{la_sub['id']}", {**body, "id": la_sub["id"], "reason": "renamed"},
               tokens["mash"])
    assert res.status_code == 200, res.get_data(as_text=True)
    read = send(api, "GET", f"Subscription/{la_sub['id']}", None, tokens["mash"]).get_json()
    assert read["reason"] == "renamed" and read["channel"]["header"] == ["Authorization: Bearer la-201-receiver"]


def test_only_the_creating_client_reads_changes_or_deletes_a_subscription(
        auth_sub_app: Flask, api: FlaskClient, tokens: dict[str, str], receiver: Receiver) -> None:
    """Within one agency, another client (whatever its role and scopes) is answered as if the
    Subscription did not exist — read, vread, history, search, $status, $events, PUT, PATCH and
    DELETE — and every such attempt is in the audit trail; nothing is changed. There is no agency
    administrator role (docs/security.md), so no other client of the agency sees it either."""
    auth = auth_sub_app.extensions["fhir"].auth
    colleague = auth.mint_dev_token(client_id="mash-dashboard-app", scope="user/*.cruds",
                                    practitioner="Practitioner/p2", agency="la:201", role="mash-practitioner",
                                    purpose="safeguarding")
    body = subscription(receiver.url, headers=("Authorization: Bearer la-201-receiver",))
    mine = created(api, body, tokens["mash"])
    sub_id = mine["id"]
    owner_tags = [t for t in mine["meta"]["tag"] if t["system"].endswith("/CodeSystem/owner-client")]
    assert [t["code"] for t in owner_tags] == ["mash-practitioner-app"]
    # the handshake (the server's own write) keeps the owner
    active = send(api, "GET", f"Subscription/{sub_id}", None, tokens["mash"])
    deadline = time.monotonic() + 20
    while active.get_json()["status"] != "active" and time.monotonic() < deadline:
        time.sleep(0.05)
        active = send(api, "GET", f"Subscription/{sub_id}", None, tokens["mash"])
    assert active.get_json()["status"] == "active", active.get_data(as_text=True)
    unknown = "00000000-0000-4000-8000-000000000000"

    def trail() -> list[dict[str, Any]]:
        with auth_sub_app.extensions["fhir"].engine.connect() as conn:
            return [r[0] for r in conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq))]

    def refused_as_unknown(method: str, url: str, payload: Any = None, **headers: str) -> Any:
        """The colleague's answer for ``sub_id`` is the answer for an id that does not exist."""
        answers = []
        for target in (sub_id, unknown):
            before = len(trail())
            res = send(api, method, url.format(target), payload, colleague, **headers)
            text = res.get_data(as_text=True)
            assert "la-201-receiver" not in text
            answers.append((res.status_code, text.replace(target, "ID")))
            if target == sub_id:
                new = trail()[before:]
                assert any(e.get("outcome") != "0" or "not-owner" in e.get("outcomeDesc", "") for e in new), \
                    (method, url, new)
        assert answers[0][0] == answers[1][0], (method, url, answers)
        return answers[0]

    for url in ("Subscription/{}", "Subscription/{}/_history/1", "Subscription/{}/$status",
                "Subscription/{}/$events"):
        status, _text = refused_as_unknown("GET", url)
        assert status == 404, url
    status, _text = refused_as_unknown("GET", "Subscription/{}/_history")
    assert status in (200, 404)
    listed = send(api, "GET", "Subscription", None, colleague)
    assert listed.status_code == 200 and sub_id not in listed.get_data(as_text=True)
    statuses = send(api, "GET", f"Subscription/$status?id={sub_id}", None, colleague)
    assert statuses.status_code == 200 and statuses.get_json()["total"] == 0

    patch = [{"op": "replace", "path": "/reason", "value": "hijacked"}]
    res = api.patch(f"/fhir/Subscription/{sub_id}", data=simplejson.dumps(patch),
                    content_type="application/json-patch+json", headers={"Authorization": f"Bearer {colleague}"})
    assert res.status_code == 404, res.get_data(as_text=True)
    before = len(trail())
    res = send(api, "PUT", f"Subscription/{sub_id}", {**body, "id": sub_id, "channel": {
        **body["channel"], "endpoint": "https://attacker.example/hook"}}, colleague)
    assert res.status_code == 405 and "la-201-receiver" not in res.get_data(as_text=True)
    assert any("not-owner" in e.get("outcomeDesc", "") for e in trail()[before:])
    status, _text = refused_as_unknown("DELETE", "Subscription/{}")
    assert status == 204
    assert any("not-owner" in e.get("outcomeDesc", "") for e in trail())

    # nothing changed: the owner still reads it as it was, active, with its own receiver
    after = send(api, "GET", f"Subscription/{sub_id}", None, tokens["mash"])
    assert after.status_code == 200, after.get_data(as_text=True)
    got = after.get_json()
    assert got["status"] == "active" and got["channel"]["endpoint"] == receiver.url and got["reason"] == body["reason"]
    assert got["meta"]["versionId"] == active.get_json()["meta"]["versionId"]
    assert sub_id in send(api, "GET", "Subscription", None, tokens["mash"]).get_data(as_text=True)

    # an owner tag sent by a client is replaced by its own: no one plants a Subscription on another
    forged = {**body, "meta": {"tag": [{"system": owner_tags[0]["system"], "code": "mash-practitioner-app"}]}}
    planted = created(api, forged, colleague)
    assert [t["code"] for t in planted["meta"]["tag"] if t["system"] == owner_tags[0]["system"]] \
        == ["mash-dashboard-app"]
    assert send(api, "GET", f"Subscription/{planted['id']}", None, tokens["mash"]).status_code == 404
    # the owner deletes its own
    assert send(api, "DELETE", f"Subscription/{sub_id}", None, tokens["mash"]).status_code == 204
    assert send(api, "GET", f"Subscription/{sub_id}", None, tokens["mash"]).status_code == 410


def _outcome(res: Any, target: str) -> tuple[int, list[tuple[str, str, str]]]:
    """The status and OperationOutcome issues of ``res`` with ``target`` (an id) written as ID."""
    body = res.get_json() or {}
    return res.status_code, [(i.get("severity", ""), i.get("code", ""), i.get("diagnostics", "").replace(target, "ID"))
                             for i in body.get("issue", [])]


WRITE_CASES = ["put", "put-if-match", "delete-if-match", "conditional-update", "validate-delete", "owner-put-new-id"]


@pytest.mark.parametrize("case", WRITE_CASES)
def test_another_clients_subscription_is_written_to_exactly_as_an_unknown_id(
        auth_sub_app: Flask, api: FlaskClient, tokens: dict[str, str], receiver: Receiver, case: str) -> None:
    """PUT (plain, with If-Match, conditional with a body id) and DELETE with If-Match get, for another
    client's Subscription, the status and message of an id that does not exist: the ownership check
    comes straight after the row is read, before version and existence checks. A Subscription gets a
    server-assigned id only (http.html#update: a server that does not allow client-defined ids
    answers 405), so a PUT to an unknown id and to a hidden one are the same 405, the owner's own
    included. Each refusal is audited as a `not-owner` Security Alert; nothing changes."""
    auth = auth_sub_app.extensions["fhir"].auth
    colleague = auth.mint_dev_token(client_id="mash-dashboard-app", scope="user/*.cruds",
                                    practitioner="Practitioner/p2", agency="la:201", role="mash-practitioner",
                                    purpose="safeguarding")
    body = subscription(receiver.url, headers=("Authorization: Bearer la-201-receiver",))
    sub_id = created(api, body, tokens["mash"])["id"]
    deadline = time.monotonic() + 20  # the handshake (the server's own write) makes it active first
    current = send(api, "GET", f"Subscription/{sub_id}", None, tokens["mash"]).get_json()
    while current["status"] != "active" and time.monotonic() < deadline:
        time.sleep(0.05)
        current = send(api, "GET", f"Subscription/{sub_id}", None, tokens["mash"]).get_json()
    assert current["status"] == "active", current
    version = current["meta"]["versionId"]
    unknown = "00000000-0000-4000-8000-00000000abcd"

    def trail() -> list[dict[str, Any]]:
        with auth_sub_app.extensions["fhir"].engine.connect() as conn:
            return [r[0] for r in conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq))]

    def same_as_unknown(method: str, url: str, payload: Any = None, *, audited: bool = True,
                        **headers: str) -> tuple[int, Any]:
        answers = []
        for target in (sub_id, unknown):
            before = len(trail())
            sent = payload(target) if callable(payload) else payload
            res = send(api, method, url.format(target), sent, colleague, **headers)
            assert "la-201-receiver" not in res.get_data(as_text=True)
            answers.append(_outcome(res, target))
            if target == sub_id and audited:
                assert any("not-owner" in e.get("outcomeDesc", "") for e in trail()[before:]), (method, url)
        assert answers[0] == answers[1], (method, url, headers, answers)
        return answers[0]

    def hijack(target: str) -> dict[str, Any]:
        return {**body, "id": target, "channel": {**body["channel"], "endpoint": "https://attacker.example/hook"}}

    tags = (f'W/"{version}"', f'W/"{int(version) + 1}"', 'W/"1"')
    if case == "put":
        status, issues = same_as_unknown("PUT", "Subscription/{}", hijack)
        assert status == 405 and "POST" in issues[0][2], issues
    elif case == "put-if-match":
        for tag in tags:
            assert same_as_unknown("PUT", "Subscription/{}", hijack, **{"If-Match": tag})[0] == 405, tag
    elif case == "delete-if-match":
        for tag in tags:
            assert same_as_unknown("DELETE", "Subscription/{}", None, **{"If-Match": tag})[0] == 412, tag
        assert same_as_unknown("DELETE", "Subscription/{}")[0] == 204
    elif case == "conditional-update":
        assert same_as_unknown("PUT", "Subscription?_id=no-such-subscription", hijack)[0] == 405
    elif case == "validate-delete":  # it says whether the id exists
        status, issues = same_as_unknown("POST", "Subscription/{}/$validate?mode=delete", None, audited=False)
        assert status == 200, issues
    else:  # the owner itself creates no Subscription with an id it chooses: the same 405
        own = send(api, "PUT", f"Subscription/{unknown}", {**body, "id": unknown}, tokens["mash"])
        theirs = send(api, "PUT", f"Subscription/{sub_id}", hijack(sub_id), colleague)
        assert own.status_code == 405 and _outcome(own, unknown) == _outcome(theirs, sub_id)
        assert send(api, "GET", f"Subscription/{unknown}", None, tokens["mash"]).status_code == 404
        statement = api.get("/fhir/metadata").get_json()["rest"][0]["resource"]
        assert next(r for r in statement if r["type"] == "Subscription")["updateCreate"] is False
        assert next(r for r in statement if r["type"] == "Patient")["updateCreate"] is True

    # nothing changed
    after = send(api, "GET", f"Subscription/{sub_id}", None, tokens["mash"]).get_json()
    assert after["meta"]["versionId"] == version and after["channel"]["endpoint"] == receiver.url


def test_another_clients_deleted_subscription_answers_exactly_as_an_unknown_id(
        auth_sub_app: Flask, api: FlaskClient, tokens: dict[str, str], receiver: Receiver) -> None:
    """Once its owner deletes a Subscription, another client — even of the same agency — reading it
    (read, and vread of its versions) gets the status and message of an id that never existed (404),
    not 410: the deletion keeps the owner columns of the version it deleted. The owner still gets 410."""
    auth = auth_sub_app.extensions["fhir"].auth
    colleague = auth.mint_dev_token(client_id="mash-dashboard-app", scope="user/*.cruds",
                                    practitioner="Practitioner/p2", agency="la:201", role="mash-practitioner",
                                    purpose="safeguarding")
    sub_id = created(api, subscription(receiver.url), tokens["mash"])["id"]
    assert send(api, "DELETE", f"Subscription/{sub_id}", None, tokens["mash"]).status_code == 204
    with auth_sub_app.extensions["fhir"].engine.connect() as conn:  # the deletion's own version
        last = conn.execute(select(resource.c.version_id).where(resource.c.res_type == "Subscription",
                                                                 resource.c.res_id == sub_id)).scalar_one()
    unknown = "00000000-0000-4000-8000-00000000dcba"
    for who in (colleague, tokens["other-la"]):
        for path in ("Subscription/{}", "Subscription/{}/_history/1", f"Subscription/{{}}/_history/{last}"):
            theirs = send(api, "GET", path.format(sub_id), None, who)
            never = send(api, "GET", path.format(unknown), None, who)
            assert theirs.status_code == 404, (path, theirs.get_data(as_text=True))
            assert _outcome(theirs, sub_id) == _outcome(never, unknown), path
    assert send(api, "GET", f"Subscription/{sub_id}", None, tokens["mash"]).status_code == 410
    assert send(api, "GET", f"Subscription/{sub_id}/_history/{last}", None, tokens["mash"]).status_code == 410


def test_a_hidden_delete_in_a_failing_transaction_keeps_the_bundles_audit_event(
        auth_sub_app: Flask, api: FlaskClient, tokens: dict[str, str], receiver: Receiver) -> None:
    """The `not-owner` refusal of a DELETE answered as the delete of an absent id is not the request's
    answer: when the transaction then fails, its own failure AuditEvent is still written."""
    auth = auth_sub_app.extensions["fhir"].auth
    colleague = auth.mint_dev_token(client_id="mash-dashboard-app", scope="user/*.cruds",
                                    practitioner="Practitioner/p2", agency="la:201", role="mash-practitioner",
                                    purpose="safeguarding")
    sub_id = created(api, subscription(receiver.url), tokens["mash"])["id"]

    def trail() -> list[dict[str, Any]]:
        with auth_sub_app.extensions["fhir"].engine.connect() as conn:
            return [r[0] for r in conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq))]

    before = len(trail())
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"Subscription/{sub_id}"}},
        {"resource": {"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}},
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    res = send(api, "POST", "", bundle, colleague)
    assert 400 <= res.status_code < 500, res.get_data(as_text=True)
    new = trail()[before:]
    assert any("not-owner" in e.get("outcomeDesc", "") for e in new), new
    failures = [e for e in new if e.get("outcome") not in (None, "0")  # the Bundle's own (a system interaction)
                and any(s.get("code") in ("batch", "transaction") for s in e.get("subtype", []))]
    assert len(failures) == 1 and "Observation.status" in failures[0]["outcomeDesc"], \
        [(e.get("outcome"), e.get("subtype"), e.get("outcomeDesc")) for e in new]
    assert send(api, "GET", f"Subscription/{sub_id}", None, tokens["mash"]).status_code == 200
