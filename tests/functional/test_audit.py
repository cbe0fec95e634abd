"""The audit trail and write provenance through HTTP, on SQLite and PostgreSQL: BALP AuditEvents for
reads, searches, operations and writes; Provenance and X-Provenance; the append-only, hash-chained
trail and $verify-audit naming a link tampered with in the database; auditors' searches;
$subject-access; authentication events (denied attempts, tokens issued, break-glass).
"""
from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
import simplejson
from flask.testing import FlaskClient
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from fhir_server.audit import balp
from fhir_server.storage import append_only
from fhir_server.storage.tables import audit_event, resource
from tests.functional.test_auth import (  # noqa: F401 - fixtures
    ClientKey, assertion, auth, auth_app, auth_conn, auth_settings, bearer, http, register, rsa_key, token_request)

FHIR_JSON = "application/fhir+json"


def post(client: FlaskClient, path: str, body: Any, **headers: str) -> Any:
    return client.post(f"/fhir/{path}", data=simplejson.dumps(body), content_type=FHIR_JSON, headers=headers)


def child(client: FlaskClient, family: str = "Okafor") -> str:
    res = post(client, "Patient", {"resourceType": "Patient", "name": [{"family": family}], "gender": "female"})
    assert res.status_code == 201, res.get_data(as_text=True)
    return res.get_json()["id"]


def observation(client: FlaskClient, patient_id: str) -> str:
    res = post(client, "Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                                       "subject": {"reference": f"Patient/{patient_id}"}})
    assert res.status_code == 201
    return res.get_json()["id"]


def events(client: FlaskClient) -> list[dict[str, Any]]:
    """Every AuditEvent recorded so far, in order (sealed or not), straight from the trail table."""
    conn = client.application.extensions["fhir"].repo._bound
    return [r.content for r in conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq))]


def last_event(client: FlaskClient) -> dict[str, Any]:
    return events(client)[-1]


def search(client: FlaskClient, query: str, **headers: str) -> dict[str, Any]:
    res = client.get(f"/fhir/{query}", headers=headers)
    assert res.status_code == 200, res.get_data(as_text=True)
    return res.get_json()


def entity_refs(event: dict[str, Any], role: str | None = None) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", [])
            if "reference" in e.get("what", {}) and (role is None or e.get("role", {}).get("code") == role)]


def profile(event: dict[str, Any]) -> str:
    return event["meta"]["profile"][0].rsplit(".", 1)[-1] if "Source" not in event["meta"]["profile"][0] \
        else "PrivacyDisclosure.Source"


def verify(client: FlaskClient) -> dict[str, Any]:
    res = client.get("/fhir/$verify-audit")
    assert res.status_code == 200, res.get_data(as_text=True)
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in res.get_json()["parameter"]}


# -- AuditEvents for every interaction -------------------------------------------------------------

def test_a_read_is_a_balp_patient_read(client: FlaskClient) -> None:
    pid = child(client)
    oid = observation(client, pid)
    assert client.get(f"/fhir/Observation/{oid}").status_code == 200
    event = last_event(client)
    assert profile(event) == "PatientRead"
    assert event["type"]["code"] == "rest" and event["subtype"][0]["code"] == "read"
    assert event["action"] == "R" and event["outcome"] == "0"
    assert entity_refs(event, "1") == [f"Patient/{pid}"]
    assert entity_refs(event, "4") == [f"Observation/{oid}/_history/1"]
    assert {a["type"]["coding"][0]["code"] for a in event["agent"]} >= {"110153", "110152"}


def test_a_search_lists_every_resource_returned_and_the_query(client: FlaskClient) -> None:
    pid = child(client)
    ids = [observation(client, pid) for _ in range(3)]
    bundle = search(client, f"Observation?subject=Patient/{pid}")
    assert bundle["total"] == 3
    event = last_event(client)
    assert profile(event) == "PatientQuery" and event["subtype"][0]["code"] == "search-type"
    assert sorted(r.split("/")[1] for r in entity_refs(event, "4")) == sorted(ids)
    query = next(e for e in event["entity"] if e.get("role", {}).get("code") == "24")
    assert base64.b64decode(query["query"]).decode() == f"Observation?subject=Patient%2F{pid}"
    assert entity_refs(event, "1") == [f"Patient/{pid}"]


def test_history_and_operations_are_audited(client: FlaskClient) -> None:
    pid = child(client)
    client.get(f"/fhir/Patient/{pid}/_history")
    assert last_event(client)["subtype"][0]["code"] == "history-instance"
    assert client.get(f"/fhir/Patient/{pid}/$everything").status_code == 200
    event = last_event(client)
    assert profile(event) == "PrivacyDisclosure.Source"
    assert event["type"] == {"system": balp.DCM, "code": "110106", "display": "Export"}
    assert [c["code"] for c in event["subtype"]] == ["disclose", "operation", "everything"]
    assert f"Patient/{pid}" in entity_refs(event, "1")


def test_a_write_and_its_audit_event_and_provenance_commit_together(client: FlaskClient) -> None:
    before = len(events(client))
    pid = child(client)
    event = last_event(client)
    assert len(events(client)) == before + 1
    assert profile(event) == "PatientCreate" and event["action"] == "C"
    assert entity_refs(event, "1") == [f"Patient/{pid}"]
    provenance = search(client, f"Provenance?target=Patient/{pid}")["entry"][0]["resource"]
    assert provenance["target"] == [{"reference": f"Patient/{pid}/_history/1"}]
    assert provenance["activity"]["coding"][0]["code"] == "CREATE"
    # the Provenance's source is the request, which its AuditEvent names too
    request_id = provenance["entity"][0]["what"]["identifier"]
    assert request_id["system"] == balp.REQUEST_ID_SYSTEM
    assert any(e["what"].get("identifier") == request_id for e in event["entity"])
    # a failing write leaves no Provenance and only the AuditEvent of its refusal (outcome 4)
    count = len(events(client))
    provenances = search(client, "Provenance?_summary=count")["total"]
    bad = post(client, "Patient", {"resourceType": "Patient", "gender": "not-a-gender"})
    assert bad.status_code in (400, 422)
    assert [e["outcome"] for e in events(client)[count:]] == ["0", "4"]  # (the Provenance search, the refusal)
    assert search(client, "Provenance?_summary=count")["total"] == provenances


def test_a_transaction_gets_one_audit_event_and_one_provenance_per_activity(client: FlaskClient) -> None:
    pid = child(client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b6f1c1e-7d1a-4c9e-9a51-3d1c2b7c9a01",
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "a"},
                      "subject": {"reference": f"Patient/{pid}"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Patient", "id": pid, "gender": "male"},
         "request": {"method": "PUT", "url": f"Patient/{pid}"}},
    ]}
    given = {"resourceType": "Provenance", "agent": [{"who": {"display": "Duty social worker"}}],
             "entity": [{"role": "source", "what": {"display": "Strategy meeting minutes 2026-11-20"}}]}
    res = post(client, "", bundle, **{"X-Provenance": simplejson.dumps(given)})
    assert res.status_code == 200, res.get_data(as_text=True)
    event = last_event(client)
    assert event["subtype"][0]["code"] == "transaction"
    assert entity_refs(event, "1") == [f"Patient/{pid}"]
    assert len(entity_refs(event, "4")) == 1  # the Observation; the Patient is the patient entity
    provs = [e["resource"] for e in search(client, "Provenance?_count=50")["entry"]]
    by_activity = {p["activity"]["coding"][0]["code"]: p for p in provs if p["target"][0]["reference"]
                   .split("/")[0] in ("Observation", "Patient") and p["entity"] == given["entity"]}
    assert set(by_activity) == {"CREATE", "UPDATE"}
    assert by_activity["UPDATE"]["target"] == [{"reference": f"Patient/{pid}/_history/2"}]
    for prov in by_activity.values():
        assert prov["entity"] == given["entity"]
        assert prov["agent"][0]["who"]["display"] == "Duty social worker"


@pytest.mark.parametrize("prefer", ["return=minimal", "return=OperationOutcome", "return=representation"])
def test_a_write_answered_without_its_body_still_names_the_patient(client: FlaskClient, prefer: str) -> None:
    """The patient entities of a write come from what was sent when nothing is returned (and from a
    Bundle's urn:uuid references as rewritten), so an auditor finds the write under the child."""
    pid = child(client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5a0e2c8d-61a4-4b0e-9f1f-2a8c7d3b1e01",
         "resource": {"resourceType": "Patient", "name": [{"family": "Brennan"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "b"},
                      "subject": {"reference": "urn:uuid:5a0e2c8d-61a4-4b0e-9f1f-2a8c7d3b1e01"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "c"},
                      "subject": {"reference": f"Patient/{pid}"}},
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    res = post(client, "", bundle, Prefer=prefer)
    assert res.status_code == 200, res.get_data(as_text=True)
    created = next(loc.split("Patient/")[1].split("/")[0] for loc in
                   (e["response"]["location"] for e in res.get_json()["entry"]) if "/Patient/" in f"/{loc}")
    assert sorted(entity_refs(last_event(client), "1")) == sorted([f"Patient/{pid}", f"Patient/{created}"])
    single = post(client, "Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "d"},
                                          "subject": {"reference": f"Patient/{pid}"}}, Prefer=prefer)
    assert single.status_code == 201
    assert entity_refs(last_event(client), "1") == [f"Patient/{pid}"]


@pytest.mark.parametrize("header", ["{not json", '{"resourceType": "Patient"}',
                                    '{"resourceType": "Provenance", "entity": [{"role": "not-a-role"}]}'])
def test_a_bad_x_provenance_is_a_400_and_nothing_is_written(client: FlaskClient, header: str) -> None:
    count = len(events(client))
    res = post(client, "Patient", {"resourceType": "Patient", "gender": "female"}, **{"X-Provenance": header})
    assert res.status_code == 400
    assert res.get_json()["issue"][0]["expression"] == ["X-Provenance"]
    assert search(client, "Patient")["total"] == 0
    assert [e["outcome"] for e in events(client)[count:]] == ["4", "0"]  # the refusal, the search


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_audit_events_cannot_be_changed_through_the_api(client: FlaskClient, method: str) -> None:
    child(client)
    client.application.extensions["fhir"].audit.seal_pending()
    ae = search(client, "AuditEvent")["entry"][0]["resource"]
    res = getattr(client, method)(f"/fhir/AuditEvent/{ae['id']}", data=simplejson.dumps(ae), content_type=FHIR_JSON)
    assert res.status_code == 405
    assert post(client, "AuditEvent", ae).status_code == 405
    assert client.get(f"/fhir/AuditEvent/{ae['id']}").get_json() == ae


def test_reads_fail_closed_when_the_audit_cannot_be_written(client: FlaskClient) -> None:
    pid = child(client)
    conn = client.application.extensions["fhir"].repo._bound
    with conn.begin_nested() as sp:
        conn.execute(text("DROP TABLE audit_event"))
        res = client.get(f"/fhir/Patient/{pid}")
        assert res.status_code == 503
        assert res.get_json()["resourceType"] == "OperationOutcome"
        assert "audit" in res.get_json()["issue"][0]["diagnostics"]
        sp.rollback()


# -- the hash chain ----------------------------------------------------------------------------------

def test_the_chain_is_sealed_in_order_and_verifies(client: FlaskClient) -> None:
    recorder = client.application.extensions["fhir"].audit
    recorder.seal_pending()  # (a trail left by another test's committed requests, if any)
    base = verify(client)["sealed"] + 1  # + that verify, sealed below
    pid = child(client)
    for _ in range(3):
        client.get(f"/fhir/Patient/{pid}")
    first = verify(client)
    assert first["intact"] is True and first["sealed"] == base - 1 and first["pending"] == 5
    bundle = search(client, "AuditEvent?_sort=date&_count=1000")  # sealing publishes them, the verify's too
    chain_ext = [{x["url"]: next(v for k, v in x.items() if k.startswith("value")) for x in ext["extension"]}
                 for e in bundle["entry"] for ext in e["resource"]["extension"] if ext["url"] == balp.CHAIN_EXTENSION]
    by_seq = sorted(chain_ext, key=lambda c: c["sequence"])
    assert [c["sequence"] for c in by_seq] == list(range(1, base + 6))
    assert by_seq[0]["previousHash"] == "0" * 64
    assert all(b["previousHash"] == a["hash"] for a, b in zip(by_seq, by_seq[1:]))
    second = verify(client)
    assert second["intact"] is True and second["sealed"] == base + 5 and second["pending"] == 1  # the search
    assert second["headHash"] == by_seq[-1]["hash"]


@pytest.mark.parametrize("attack", ["alter", "remove", "rehash", "served-copy"])
def test_tampering_in_the_database_is_named(client: FlaskClient, attack: str) -> None:
    pid = child(client)
    for _ in range(4):
        client.get(f"/fhir/Patient/{pid}")
    client.application.extensions["fhir"].audit.seal_pending()
    conn = client.application.extensions["fhir"].repo._bound
    victim = conn.execute(select(audit_event).where(audit_event.c.chain_pos == 3)).one()
    with append_only.bypassed(conn):  # an attacker with the database superuser's powers
        _tamper(conn, attack, victim)
    result = verify(client)
    assert result["intact"] is False
    expected = 4 if attack == "rehash" else 3
    assert result["brokenLink"] == expected
    if attack != "remove":
        event_at = victim.event_id if expected == 3 else conn.execute(
            select(audit_event.c.event_id).where(audit_event.c.chain_pos == 4)).scalar_one()
        assert result["brokenEvent"] == {"reference": f"AuditEvent/{event_at}"}
    assert result["problem"]


def _tamper(conn: Any, attack: str, victim: Any) -> None:
    if attack == "alter":  # hide who looked
        content = dict(victim.content)
        content["agent"] = content["agent"][1:]
        conn.execute(update(audit_event).where(audit_event.c.seq == victim.seq).values(content=content))
    elif attack == "remove":
        conn.execute(audit_event.delete().where(audit_event.c.seq == victim.seq))
    elif attack == "rehash":  # alter row and served copy, recompute the hash: the next link no longer follows
        from fhir_server.audit.chain import link_hash, served_copy
        content = {**victim.content, "outcome": "8"}
        digest = link_hash(victim.prev_hash, content)
        conn.execute(update(audit_event).where(audit_event.c.seq == victim.seq).values(content=content, hash=digest))
        conn.execute(update(resource).where(resource.c.res_type == "AuditEvent", resource.c.res_id == victim.event_id)
                     .values(content=served_copy(content, 3, victim.prev_hash, digest)))
    else:
        served = conn.execute(select(resource.c.content).where(resource.c.res_type == "AuditEvent",
                                                               resource.c.res_id == victim.event_id)).scalar_one()
        conn.execute(update(resource).where(resource.c.res_type == "AuditEvent", resource.c.res_id == victim.event_id)
                     .values(content={**served, "outcome": "8"}))


@pytest.mark.parametrize("statement", [
    "UPDATE audit_event SET content = '{\"resourceType\": \"AuditEvent\"}' WHERE chain_pos = 2",
    "UPDATE audit_event SET hash = 'x' WHERE chain_pos = 2",
    "UPDATE audit_event SET chain_pos = NULL WHERE chain_pos = 2",
    "UPDATE audit_event SET event_id = 'forged' WHERE chain_pos IS NULL",
    "DELETE FROM audit_event WHERE chain_pos = 2",
    "DELETE FROM audit_event WHERE chain_pos IS NULL",
])
def test_the_database_refuses_to_change_or_remove_an_audit_event(client: FlaskClient, statement: str) -> None:
    """The triggers of storage/append_only.py: ordinary SQL (the server's own role included) cannot
    rewrite the trail; sealing, the one permitted change, still works and the chain verifies."""
    pid = child(client)
    for _ in range(3):
        client.get(f"/fhir/Patient/{pid}")
    client.application.extensions["fhir"].audit.seal_pending()
    client.get(f"/fhir/Patient/{pid}")  # one left unsealed
    conn = client.application.extensions["fhir"].repo._bound
    before = [tuple(r) for r in conn.execute(select(audit_event).order_by(audit_event.c.seq))]
    savepoint = conn.begin_nested()
    with pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text(statement))
    savepoint.rollback()
    assert [tuple(r) for r in conn.execute(select(audit_event).order_by(audit_event.c.seq))] == before
    client.application.extensions["fhir"].audit.seal_pending()  # the one UPDATE the triggers allow
    result = verify(client)
    assert result["intact"] is True and result["pending"] == 0 and result["sealed"] == len(before)


def _refusals(client: FlaskClient, since: int) -> list[dict[str, Any]]:
    return [e for e in events(client)[since:] if e.get("outcome") != "0"]


def test_requests_answered_with_an_operation_outcome_are_audited(client: FlaskClient) -> None:
    """400, 404, 405, 412 and 422 each leave one AuditEvent (outcome 4, outcomeDesc the status and
    issue), shaped like the interaction's own, naming the patient asked for; nothing else is written."""
    pid = child(client)
    since = len(events(client))
    missing = client.get("/fhir/Patient/no-such-child")
    bad_search = client.get("/fhir/Observation?no-such-parameter=1", headers={"Prefer": "handling=strict"})
    wrong_version = client.put(f"/fhir/Patient/{pid}", data=simplejson.dumps(
        {"resourceType": "Patient", "id": pid, "gender": "male"}), content_type=FHIR_JSON, headers={"If-Match": 'W/"9"'})
    invalid = post(client, "Patient", {"resourceType": "Patient", "gender": "not-a-gender"})
    no_body = client.post("/fhir/Patient", content_type=FHIR_JSON)
    id_clash = client.put(f"/fhir/Patient/{pid}", data=simplejson.dumps(
        {"resourceType": "Patient", "id": "another"}), content_type=FHIR_JSON)
    rewrite_trail = client.delete(f"/fhir/AuditEvent/{events(client)[0]['id']}")
    statuses = [r.status_code for r in (missing, bad_search, wrong_version, invalid, no_body, id_clash, rewrite_trail)]
    assert statuses == [404, 400, 412, 422, 400, 400, 405], statuses
    refused = _refusals(client, since)
    assert [e["outcomeDesc"].split(" ", 1)[0] for e in refused] == ["404", "400", "412", "422", "400", "400", "405"]
    assert all(e["outcome"] == "4" and e["resourceType"] == "AuditEvent" for e in refused)
    read = refused[0]
    assert read["subtype"][0]["code"] == "read" and read["action"] == "R"
    assert "Patient/no-such-child" in entity_refs(read, "1")
    assert read["outcomeDesc"].startswith("404 not-found")
    assert refused[1]["subtype"][0]["code"] == "search-type"
    assert refused[2]["subtype"][0]["code"] == "update" and f"Patient/{pid}" in entity_refs(refused[2], "1")
    assert refused[3]["subtype"][0]["code"] == "create"
    assert refused[6]["subtype"][0]["code"] == "delete" and refused[6]["action"] == "D"
    assert len(events(client)) == since + 7  # one each, and no Provenance or resource was written
    assert client.get(f"/fhir/Patient/{pid}").get_json()["meta"]["versionId"] == "1"
    assert verify(client)["intact"] is True


# -- auditors' questions -------------------------------------------------------------------------------

def test_who_looked_at_this_child_and_when(client: FlaskClient) -> None:
    pid, other = child(client), child(client, "Smith")
    client.get(f"/fhir/Patient/{pid}")
    client.get(f"/fhir/Patient/{other}")
    today = last_event(client)["recorded"][:10]
    found = search(client, f"AuditEvent?patient=Patient/{pid}&date={today}&_count=100")
    subtypes = sorted(e["resource"]["subtype"][0]["code"] for e in found["entry"])
    assert subtypes == ["create", "read"]
    assert all(f"Patient/{pid}" in entity_refs(e["resource"], "1") for e in found["entry"])
    assert search(client, f"AuditEvent?patient=Patient/{pid}&date=lt2000-01-01")["total"] == 0


# -- with authentication on: agents, denied attempts, tokens, auditor-only operations ---------------

def auth_events(http: FlaskClient) -> list[dict[str, Any]]:  # noqa: F811
    conn = http.application.extensions["fhir"].repo._bound
    return [r.content for r in conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq))]


def test_agents_purpose_and_what_a_client_saw(http: FlaskClient, auth: Any) -> None:  # noqa: F811
    writer = auth.mint_dev_token(client_id="mash-app", scope="user/*.cruds", practitioner="Practitioner/7",
                                 agency="la:201", role="mash-practitioner")
    res = http.post("/fhir/Patient", data=simplejson.dumps({"resourceType": "Patient", "gender": "male"}),
                    content_type=FHIR_JSON, headers=bearer(writer, **{"X-Purpose-Of-Use": "CAREMGT"}))
    pid = res.get_json()["id"]
    school = auth.mint_dev_token(client_id="school-app", scope="system/Patient.rs", agency="education:201",
                                 role="school-dsl")
    assert http.get(f"/fhir/Patient/{pid}", headers=bearer(school)).status_code == 200
    created, read = auth_events(http)[-2:]
    assert created["purposeOfEvent"][0]["coding"][0]["code"] == "CAREMGT"
    who = {a["type"]["coding"][0]["code"]: a for a in created["agent"]}
    assert who["IRCP"]["who"] == {"reference": "Practitioner/7"} and who["IRCP"]["requestor"] is True
    assert who["110153"]["who"]["identifier"]["value"] == "mash-app" and who["110153"]["role"][0]["coding"][0][
        "code"] == "mash-practitioner"
    assert who["RESP"]["who"]["identifier"]["value"] == "la:201"
    prov = http.get(f"/fhir/Provenance?target=Patient/{pid}", headers=bearer(writer)).get_json()["entry"][0]["resource"]
    assert prov["agent"][0]["who"] == {"reference": "Practitioner/7"}
    assert prov["agent"][0]["onBehalfOf"]["identifier"]["value"] == "la:201"
    assert any("schedule/1/part/2" in p for p in prov["policy"])
    assert read["agent"][0]["who"]["identifier"]["value"] == "school-app"
    auditor = auth.mint_dev_token(client_id="ico-audit", scope="system/AuditEvent.rs", role="auditor")
    saw = http.get(f"/fhir/AuditEvent?agent:identifier={balp.CLIENT_SYSTEM}|school-app", headers=bearer(auditor))
    assert saw.status_code == 200
    assert [e["resource"]["id"] for e in saw.get_json()["entry"]] == [read["id"]]
    assert http.get("/fhir/AuditEvent?altid=school-app", headers=bearer(auditor)).get_json()["total"] == 1


def test_denied_attempts_and_tokens_issued_are_audited(http: FlaskClient, auth: Any,  # noqa: F811
                                                       rsa_key: ClientKey) -> None:  # noqa: F811
    assert http.get("/fhir/Patient").status_code == 401
    denied = auth_events(http)[-1]
    assert denied["type"]["code"] == "110114" and denied["outcome"] == "4"
    assert denied["outcomeDesc"].startswith("no-credentials")
    reader = auth.mint_dev_token(client_id="reader", scope="system/Patient.rs")
    assert http.get("/fhir/Observation", headers=bearer(reader)).status_code == 403
    forbidden = auth_events(http)[-1]
    assert forbidden["type"]["code"] == "110113" and forbidden["outcome"] == "4"
    assert forbidden["agent"][0]["who"]["identifier"]["value"] == "reader"
    client_id = register(auth, rsa_key, "system/Patient.rs")
    assert token_request(http, assertion(client_id, rsa_key)).status_code == 200
    issued = auth_events(http)[-1]
    assert issued["subtype"][0]["code"] == "110122" and issued["outcome"] == "0"
    assert issued["agent"][0]["who"]["identifier"]["value"] == client_id


def test_break_glass_is_flagged_for_review(http: FlaskClient, auth: Any) -> None:  # noqa: F811
    token = auth.mint_dev_token(client_id="ae-app", scope="user/*.rs", practitioner="p9", agency="la:201",
                                role="mash-practitioner")  # a role the access policy lets break the glass
    res = http.get("/fhir/Patient", headers=bearer(token, **{"X-Purpose-Of-Use": "BTG",
                                                             "X-Break-Glass-Reason": "Child at A&E, MASH closed"}))
    assert res.status_code == 200
    event = auth_events(http)[-1]
    assert balp.REVIEW_TAG in event["meta"]["tag"]
    assert event["purposeOfEvent"][0]["text"] == "Break-glass: Child at A&E, MASH closed"
    auditor = auth.mint_dev_token(client_id="ico-audit", scope="system/AuditEvent.rs", role="auditor")
    flagged = http.get(f"/fhir/AuditEvent?_tag={balp.REVIEW_SYSTEM}|break-glass", headers=bearer(auditor))
    flagged_ids = [e["resource"]["id"] for e in flagged.get_json()["entry"]]
    assert event["id"] in flagged_ids and len(flagged_ids) <= 2  # the break-glass event (+ the query it let through)


def test_verify_audit_and_subject_access_are_for_auditors_only(http: FlaskClient, auth: Any) -> None:  # noqa: F811
    writer = auth.mint_dev_token(client_id="mash-app", scope="system/*.cruds", role="mash-practitioner",
                                 agency="la:201")  # a token with no agency may not write (auth/policy.py)
    assert http.get("/fhir/$verify-audit", headers=bearer(writer)).status_code == 403
    res = http.post("/fhir/Patient", data=simplejson.dumps({"resourceType": "Patient", "gender": "male"}),
                    content_type=FHIR_JSON, headers=bearer(writer))
    pid = res.get_json()["id"]
    assert http.get(f"/fhir/Patient/{pid}/$subject-access", headers=bearer(writer)).status_code == 403
    assert auth_events(http)[-1]["outcomeDesc"].startswith("not-an-auditor")
    dpo = auth.mint_dev_token(client_id="dpo", scope="system/Patient.rs system/AuditEvent.rs", role="dpo")
    assert http.get("/fhir/$verify-audit", headers=bearer(dpo)).status_code == 200


def test_subject_access_exports_the_record_and_its_disclosures(client: FlaskClient) -> None:
    pid = child(client)
    oid = observation(client, pid)
    client.get(f"/fhir/Observation/{oid}")
    client.get(f"/fhir/Patient/{pid}/$everything")
    res = client.get(f"/fhir/Patient/{pid}/$subject-access")
    assert res.status_code == 200, res.get_data(as_text=True)
    bundle = res.get_json()
    assert bundle["type"] == "collection"
    types = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert {"Patient", "Observation"} <= set(types)
    disclosed = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "AuditEvent"]
    kinds = [e["subtype"][0]["code"] for e in disclosed]
    assert kinds == ["create", "create", "read", "disclose"]
    assert profile(last_event(client)) == "PrivacyDisclosure.Source"
    assert client.get("/fhir/Patient/nobody/$subject-access").status_code == 404


def test_the_trail_can_be_switched_off_for_measurement(engine: Any, settings: Any) -> None:
    from fhir_server import create_app
    conn = engine.connect()
    outer = conn.begin()
    try:
        app = create_app(settings.with_overrides(audit_enabled=False), connection=conn)
        client = app.test_client()
        child(client)
        assert conn.execute(select(func.count()).select_from(audit_event)).scalar_one() == 0
        assert client.get("/fhir/$verify-audit").status_code == 200
    finally:
        outer.rollback()
        conn.close()
    logging.getLogger(__name__).debug("ok")


def test_concurrent_writers_keep_one_linear_chain(committing_app: Any) -> None:
    """Several threads (as gunicorn workers would) write and read at once with real commits: every
    request's AuditEvent is sealed exactly once, in one unbroken chain."""
    import threading

    from fhir_server.audit import seal_job
    from fhir_server.periodic import local_beat

    local_beat.cancel(seal_job(committing_app.extensions["fhir"].engine))  # this test seals when it counts
    errors: list[str] = []

    def work() -> None:
        client = committing_app.test_client()
        for _ in range(8):
            pid = child(client) if not errors else None
            if pid is None or client.get(f"/fhir/Patient/{pid}").status_code != 200:
                errors.append("request failed")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    committing_app.extensions["fhir"].audit.seal_pending()
    result = verify(committing_app.test_client())
    assert result["intact"] is True
    assert result["sealed"] == 4 * 8 * 2 and result["pending"] == 0
    engine = committing_app.extensions["fhir"].engine
    with engine.connect() as conn:
        positions = [r[0] for r in conn.execute(select(audit_event.c.chain_pos).order_by(audit_event.c.chain_pos))]
    assert sorted(p for p in positions if p is not None) == list(range(1, 65))
    assert positions.count(None) == 1  # the $verify-audit call itself, sealed next time


def test_the_worker_seals_on_a_schedule(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from fhir_server.audit import tasks
    from fhir_server.worker import celery

    assert celery.conf.beat_schedule["seal-audit"]["task"] == tasks.seal_audit.name
    monkeypatch.setattr(tasks, "_recorder", client.application.extensions["fhir"].audit)
    pid = child(client)
    client.get(f"/fhir/Patient/{pid}")
    assert tasks.seal_audit.apply().get() >= 2
    assert verify(client)["pending"] == 0


def test_reads_fail_closed_on_their_own_connection_too(committing_app: Any) -> None:
    """Outside a test transaction a read's AuditEvent goes its own way (PostgreSQL: written by the
    read's own statement into audit_pending; SQLite: a writer transaction): a failure there is a 503
    too, for a read and for a search."""
    client = committing_app.test_client()
    pid = child(client)
    engine = committing_app.extensions["fhir"].engine
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_event RENAME TO audit_event_away"))
        conn.execute(text("ALTER TABLE audit_pending RENAME TO audit_pending_away"))
    try:
        for path in (f"Patient/{pid}", f"Patient?_id={pid}"):
            res = client.get(f"/fhir/{path}")
            assert res.status_code == 503, path
            assert res.get_json()["resourceType"] == "OperationOutcome"
            assert "audit" in res.get_json()["issue"][0]["diagnostics"]
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_event_away RENAME TO audit_event"))
            conn.execute(text("ALTER TABLE audit_pending_away RENAME TO audit_pending"))
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200  # and it recovers


def test_an_import_is_audited_and_keeps_its_one_provenance_per_file(client: FlaskClient) -> None:
    from pathlib import Path

    xml = (Path(__file__).parent.parent / "mappings" / "fixtures" / "cin" / "la202_2023.xml").read_bytes()
    res = client.post("/fhir/$import-agency-data?format=cin-census-xml&filename=la202_2023.xml", data=xml,
                      content_type="application/xml")
    assert res.status_code == 200, res.get_data(as_text=True)
    provenances = [e["resource"] for e in search(client, "Provenance?_count=100")["entry"]]
    assert len(provenances) == 1, "the importer's per-file Provenance only: none added per write"
    recorded = events(client)
    write = next(e for e in recorded if e["subtype"][0]["code"] == "transaction")
    patients = {e["resource"]["id"] for e in search(client, "Patient?_count=100")["entry"]}
    assert {r.split("/")[1] for r in entity_refs(write, "1")} == patients
    operation = next(e for e in recorded if [c["code"] for c in e["subtype"]] == ["operation", "import-agency-data"])
    assert operation["action"] == "E"


def test_the_capability_statement_serves_audit_event_read_only(client: FlaskClient) -> None:
    statement = client.get("/fhir/metadata").get_json()
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert {i["code"] for i in audit["interaction"]} == {"read", "vread", "search-type", "history-instance",
                                                         "history-type"}
    assert "updateCreate" not in audit and "conditionalDelete" not in audit
    system_ops = {o["name"] for o in statement["rest"][0]["operation"]}
    assert "verify-audit" in system_ops
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert "subject-access" in {o["name"] for o in patient["operation"]}


# -- sealing off the hot paths (issue 6: a drain never waits for a seal) ------------------------------

def test_verify_audit_names_the_unsealed_tail(client: FlaskClient) -> None:
    """$verify-audit does not pass off AuditEvents waiting to be sealed as verified: it counts them
    and says, in ``note``, that neither ``intact`` nor ``headHash`` covers them yet."""
    client.application.extensions["fhir"].audit.seal_pending()
    assert not any(p["name"] == "note" for p in client.get("/fhir/$verify-audit").get_json()["parameter"])
    pid = child(client)
    for _ in range(2):
        client.get(f"/fhir/Patient/{pid}")
    result = verify(client)
    # the create, its two reads, and the first $verify-audit (whose own event is written after its answer)
    assert result["intact"] is True and result["pending"] == 4
    assert result["note"].startswith("4 AuditEvent(s) recorded but not yet sealed, the oldest recorded 20")
    assert "not covered by this verification nor by headHash" in result["note"]


def test_an_outbox_drain_does_not_seal(client: FlaskClient) -> None:
    """Sealing left the drain (it serialised every drain behind its lock): a drained write's
    AuditEvent stays pending until the sealing job, or an auditor's read, seals it."""
    from fhir_server.worker import drain_batch

    client.application.extensions["fhir"].audit.seal_pending()
    child(client)
    conn = client.application.extensions["fhir"].repo._bound
    assert drain_batch(conn) >= 1
    unsealed = conn.execute(select(func.count()).where(audit_event.c.chain_pos.is_(None))).scalar_one()
    assert unsealed == 1
    assert client.application.extensions["fhir"].audit.seal_pending() == 1


def test_the_sealing_job_runs_without_a_broker_and_never_waits(committing_app: Any) -> None:
    """Without a broker the local beat seals every SEAL_SECONDS; on PostgreSQL a periodic run that
    finds another sealer holding the lock returns at once (pg_try_advisory_xact_lock) and seals
    nothing twice; the next run seals what is left."""
    from fhir_server.audit import chain, seal_job
    from fhir_server.periodic import local_beat

    services = committing_app.extensions["fhir"]
    assert seal_job(services.engine) in local_beat.scheduled()
    local_beat.cancel(seal_job(services.engine))  # the test runs the job itself
    client = committing_app.test_client()
    pid = child(client)
    client.get(f"/fhir/Patient/{pid}")
    if services.engine.dialect.name == "postgresql":
        with services.engine.begin() as holder:  # another worker's seal, under way
            holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": chain.SEAL_LOCK})
            assert services.audit.seal_pending(wait=False) == 0
    assert services.audit.seal_pending(wait=False) == 2
    assert services.audit.seal_pending(wait=False) == 0  # idempotent: nothing left to seal
    result = verify(client)
    assert result["intact"] is True and result["sealed"] == 2 and result["pending"] == 0


@pytest.mark.parametrize("role", ["auditor", "dpo"])
def test_subject_access_works_for_auditors_with_authentication_on(http: FlaskClient, auth: Any,  # noqa: F811
                                                                  role: str) -> None:
    """docs/security.md "How an auditor uses it": the auditor's (or DPO's) token exports everything
    held about the person — sensitive records included: a subject access request covers them — and
    every AuditEvent that disclosed it; the export is itself audited as a disclosure."""
    writer = auth.mint_dev_token(client_id="mash-app", scope="user/*.cruds", practitioner="Practitioner/7",
                                 agency="la:201", role="mash-practitioner", purpose="safeguarding")
    sealed = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}]}
    res = http.post("/fhir/Patient", data=simplejson.dumps({"resourceType": "Patient", "gender": "male",
                                                              "meta": sealed}),
                    content_type=FHIR_JSON, headers=bearer(writer))
    assert res.status_code == 201, res.get_data(as_text=True)
    pid = res.get_json()["id"]
    res = http.post("/fhir/Observation", data=simplejson.dumps({
        "resourceType": "Observation", "status": "final", "code": {"text": "CAMHS referral"},
        "subject": {"reference": f"Patient/{pid}"},
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}}),
        content_type=FHIR_JSON, headers=bearer(writer))
    assert res.status_code == 201, res.get_data(as_text=True)
    oid = res.get_json()["id"]
    assert http.get(f"/fhir/Observation/{oid}", headers=bearer(writer)).status_code == 200
    examiner = auth.mint_dev_token(client_id=f"{role}-app", scope="system/AuditEvent.rs system/Patient.rs",
                                   role=role)
    res = http.get(f"/fhir/Patient/{pid}/$subject-access", headers=bearer(examiner))
    assert res.status_code == 200, res.get_data(as_text=True)
    held = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in res.get_json()["entry"]}
    assert {f"Patient/{pid}", f"Observation/{oid}"} <= held
    disclosed = [e["resource"] for e in res.get_json()["entry"] if e["resource"]["resourceType"] == "AuditEvent"]
    assert any(e["subtype"][0]["code"] == "read" and any(r.startswith(f"Observation/{oid}") for r in entity_refs(e))
               for e in disclosed), [(e["subtype"], entity_refs(e)) for e in disclosed]
    assert profile(auth_events(http)[-1]) == "PrivacyDisclosure.Source"
    # but the role reads no clinical content otherwise
    assert http.get(f"/fhir/Observation/{oid}", headers=bearer(examiner)).status_code in (403, 404)
    assert http.get("/fhir/Patient/nobody/$subject-access", headers=bearer(examiner)).status_code == 404
