"""$triage honours the access policy (docs/security.md, "Derived views"), through HTTP with
authentication on, on SQLite and PostgreSQL: a child whose Patient record is restricted (R) is neither
listed nor counted for a caller not cleared for it; a listed child's factors whose evidence the caller
may not see (an SDV-labelled police Observation, for a school) are left out and the row says so."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ..functional.test_auth import auth_app, auth_conn, auth_settings, bearer, http  # noqa: F401 - fixtures
from .conftest import observation, patient
from .test_triage_http import children, total

LA, POLICE = "local-authority/202", "police/20"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def labelled(resource: dict[str, Any], system: str, code: str) -> dict[str, Any]:
    return {**resource, "meta": {**resource["meta"], "security": [{"system": system, "code": code}]}}


def token(app: Flask, client_id: str, role: str, agency: str, scope: str = "system/*.rs") -> str:
    return app.extensions["fhir"].auth.mint_dev_token(client_id=client_id, scope=scope, agency=agency, role=role)


@pytest.fixture
def families(http: FlaskClient, auth_app: Flask) -> dict[str, str]:  # noqa: F811
    """Child A: a local authority record with two toxic-trio factors and a police record (same NHS number)
    with an SDV-labelled domestic-abuse Observation. Child B: a police record labelled R (restricted:
    e.g. a child in a refuge) with a missing episode. Written by each agency's own client; then the
    outbox drain links the records and scores the children."""
    la = bearer(token(auth_app, "la-app", "social-worker", "la:202", "system/*.cruds"))
    police = bearer(token(auth_app, "police-app", "police", "police:20", "system/*.cruds"))

    def post(resource: dict[str, Any], headers: dict[str, str]) -> str:
        res = http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
        assert res.status_code == 201, res.get_data(as_text=True)
        return res.get_json()["id"]

    ids = {"a_la": post(patient(LA, "9434765919", "Amelia", "Hughes", "2015-06-14"), la)}
    for code in ("2B", "4B"):  # parental substance misuse, mental health
        ids[code] = post(observation(LA, f"Patient/{ids['a_la']}", "cin-assessment-factor", code, 10), la)
    ids["a_police"] = post(patient(POLICE, "9434765919", "Amelia", "Hughes", "2015-06-14"), police)
    ids["da"] = post(labelled(observation(POLICE, f"Patient/{ids['a_police']}", "risk-factor",
                                          "domestic-abuse-child-present", 2),
                              ACT_CODE, "SDV"), police)
    ids["b_police"] = post(labelled(patient(POLICE, "9990000026", "Noah", "Patel", "2012-01-03", "male"),
                                    CONFIDENTIALITY, "R"), police)
    ids["b_missing"] = post(observation(POLICE, f"Patient/{ids['b_police']}", "risk-factor", "missing-episode", 5),
                            police)
    from fhir_server.worker import drain_batch
    from linkage.consumer import link_on_write
    from triage.consumer import rescore_on_write
    conn = auth_app.extensions["fhir"].repo._bound
    while drain_batch(conn, consumers=[link_on_write, rescore_on_write]):
        pass
    return ids


def triage(http: FlaskClient, headers: dict[str, str]) -> dict[str, Any]:  # noqa: F811
    res = http.get("/fhir/$triage", headers=headers)
    assert res.status_code == 200, res.get_data(as_text=True)
    return res.get_json()


def factor_codes(row: dict[str, Any]) -> set[str]:
    return {next(v for k, v in part.items() if k.startswith("value"))
            for f in row.get("factor", []) for part in f if part["name"] == "code"}


def evidence(row: dict[str, Any]) -> set[str]:
    return {part["valueReference"]["reference"] for f in row.get("factor", []) for part in f
            if part["name"] == "evidence"}


def test_a_cleared_caller_sees_every_child_and_factor(http: FlaskClient, auth_app: Flask,  # noqa: F811
                                                      families: dict[str, str]) -> None:
    mash = bearer(token(auth_app, "mash", "mash-practitioner", "la:202"), **{"X-Purpose-Of-Use": "safeguarding"})
    result = triage(http, mash)
    assert total(result) == 2
    rows = children(result)
    amelia = next(r for r in rows if "domestic-abuse" in factor_codes(r))
    assert f"Observation/{families['da']}" in evidence(amelia)
    assert "factors-withheld" not in amelia and "toxic-trio" in factor_codes(amelia)


def test_a_restricted_child_is_not_listed_and_hidden_evidence_is_withheld(
        http: FlaskClient, auth_app: Flask, families: dict[str, str]) -> None:  # noqa: F811
    # a social worker caring for the child (purpose CAREMGT): neither SDV nor R released
    worker = bearer(token(auth_app, "sw", "social-worker", "la:202"), **{"X-Purpose-Of-Use": "CAREMGT"})
    result = triage(http, worker)
    assert total(result) == 1  # the restricted child is not counted either
    (amelia,) = children(result)
    listed = {p["reference"] for p in amelia["patient"]}
    assert f"Patient/{families['b_police']}" not in listed
    assert "domestic-abuse" not in factor_codes(amelia)
    assert f"Observation/{families['da']}" not in evidence(amelia)
    # the LA's own factors stay; the toxic trio (it rests on the domestic abuse too) does not
    assert factor_codes(amelia) == {"parental-substance-misuse", "parental-mental-health"}
    assert {f"Observation/{families['2B']}", f"Observation/{families['4B']}"} == evidence(amelia)
    assert amelia["factors-withheld"] == [True]
    csv = http.get("/fhir/$triage?_format=csv", headers=worker).get_data(as_text=True)
    assert "Patel" not in csv and families["b_police"] not in csv and "omestic" not in csv


# -- the list filter decides once for all children, as the per-record rule does ------------------

ROLES = [("mash-practitioner", "la:202", "safeguarding"), ("mash-practitioner", "la:202", "CAREMGT"),
         ("social-worker", "la:202", "CAREMGT"), ("social-worker", "la:202", None),
         ("school-dsl", "education:202", "safeguarding"), ("police", "police:20", "safeguarding"),
         ("police", "police:20", None), ("health-safeguarding", "health:R9Q", "CAREMGT"), ("auditor", "la:202", None)]
EDUCATION, HEALTH = "education/202", "health/R9Q"


@pytest.fixture
def more_families(http: FlaskClient, auth_app: Flask, families: dict[str, str]) -> dict[str, str]:  # noqa: F811
    """Beside ``families``: child C, a local authority record labelled V (very restricted); child D, a
    school's record labelled SDV; child E, a hospital record labelled PSY; child F, deleted after it
    was scored (its score row stays until the drain); child G, a local authority record and a
    hospital record labelled PSY that linkage joins under a master (the master itself unlabelled);
    and a police Consent refusing Amelia's police record for care management."""
    writers = {LA: ("la-app", "social-worker", "la:202"), POLICE: ("police-app", "police", "police:20"),
               EDUCATION: ("school-app", "school-dsl", "education:202"),
               HEALTH: ("trust-app", "health-safeguarding", "health:R9Q")}

    def post(resource: dict[str, Any], agency: str) -> str:
        headers = bearer(token(auth_app, *writers[agency], "system/*.cruds"))
        res = http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
        assert res.status_code == 201, res.get_data(as_text=True)
        return res.get_json()["id"]

    ids = dict(families)
    ids["c"] = post(labelled(patient(LA, "9990000034", "Cara", "Jones", "2016-02-01"), CONFIDENTIALITY, "V"), LA)
    ids["d"] = post(labelled(patient(EDUCATION, "9990000042", "Dan", "Smith", "2013-03-02", "male"),
                             ACT_CODE, "SDV"), EDUCATION)
    ids["e"] = post(labelled(patient(HEALTH, "9990000050", "Eve", "Brown", "2011-04-03"), ACT_CODE, "PSY"), HEALTH)
    ids["f"] = post(patient(LA, "9990000069", "Finn", "Green", "2014-05-04", "male"), LA)
    ids["g_la"] = post(patient(LA, "9990000077", "Gina", "White", "2012-06-05"), LA)
    ids["g_health"] = post(labelled(patient(HEALTH, "9990000077", "Gina", "White", "2012-06-05"), ACT_CODE, "PSY"),
                           HEALTH)
    for key, agency in (("c", LA), ("d", EDUCATION), ("e", HEALTH), ("f", LA), ("g_la", LA)):
        post(observation(agency, f"Patient/{ids[key]}", "risk-factor", "missing-episode", 3), agency)
    ids["consent"] = post({
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{ids['a_police']}"},
        "provision": {"type": "permit", "provision": [{"type": "deny", "purpose": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "CAREMGT"}]}]}}, POLICE)
    drain(auth_app)
    from triage.store import children_of
    services = auth_app.extensions["fhir"]
    (ids["g"],) = children_of(services.repo._bound, [ids["g_la"]], services.settings.base_url)
    assert ids["g"] not in (ids["g_la"], ids["g_health"])  # a master links the two records
    la = bearer(token(auth_app, "la-app", "social-worker", "la:202", "system/*.cruds"))
    assert http.delete(f"/fhir/Patient/{ids['f']}", headers=la).status_code in (200, 204)
    return ids


def drain(app: Flask) -> None:
    from fhir_server.worker import drain_batch
    from linkage.consumer import link_on_write
    from triage.consumer import rescore_on_write
    conn = app.extensions["fhir"].repo._bound
    while drain_batch(conn, consumers=[link_on_write, rescore_on_write]):
        pass


def listed(http: FlaskClient, auth_app: Flask, role: str, agency: str, purpose: str | None  # noqa: F811
           ) -> tuple[int, set[str]]:
    headers = bearer(token(auth_app, f"{role}-app", role, agency), **({"X-Purpose-Of-Use": purpose} if purpose else {}))
    result = triage_page(http, headers)
    return total(result), {row["patient"][0]["reference"].split("/", 1)[1] for row in children(result)}


def triage_page(http: FlaskClient, headers: dict[str, str]) -> dict[str, Any]:  # noqa: F811
    res = http.get("/fhir/$triage?_count=1000", headers=headers)
    assert res.status_code == 200, res.get_data(as_text=True)
    return res.get_json()


def per_record(auth_app: Flask, role: str, agency: str, purpose: str | None) -> set[str]:
    """The children the per-child rule (``Visibility.patient_visible``: the Patient and each record it
    links, tested one by one) lets this caller see."""
    from sqlalchemy import select

    from fhir_server.auth.policy import visibility
    from fhir_server.repository.context import RequestContext
    from fhir_server.storage.tables import risk_score

    services = auth_app.extensions["fhir"]
    conn = services.repo._bound
    ctx = RequestContext(services.settings.base_url, client_id=f"{role}-app", agency=agency, role=role,
                         purpose_of_use=purpose, authenticated=True, issuer="dev")
    access = visibility(ctx, conn)
    assert access is not None
    return set(conn.execute(select(risk_score.c.child_id).where(access.patient_visible(risk_score.c.child_id)))
               .scalars())


@pytest.mark.parametrize("role,agency,purpose", ROLES)
def test_the_list_shows_exactly_the_children_the_per_record_rule_shows(
        http: FlaskClient, auth_app: Flask, more_families: dict[str, str],  # noqa: F811
        role: str, agency: str, purpose: str | None) -> None:
    count, shown = listed(http, auth_app, role, agency, purpose)
    assert shown == per_record(auth_app, role, agency, purpose)
    assert count == len(shown)
    assert more_families["f"] not in shown  # deleted: its score row is still there, the child is not


def test_labels_consent_and_deletion_hide_the_children_they_should(
        http: FlaskClient, auth_app: Flask, more_families: dict[str, str]) -> None:  # noqa: F811
    ids = more_families
    _, mash = listed(http, auth_app, "mash-practitioner", "la:202", "safeguarding")
    assert {ids["b_police"], ids["c"], ids["d"], ids["e"], ids["g"]} <= mash and ids["f"] not in mash
    amelia = next(iter(mash - {ids[k] for k in ("b_police", "c", "d", "e", "g")}))  # the master of her two records
    assert len(mash) == 6
    # care management: R, V, SDV and PSY withheld (Gina's hospital record hides her master too);
    # Amelia's police record refused by Consent hides her too
    count, care = listed(http, auth_app, "social-worker", "la:202", "CAREMGT")
    assert care == set() and count == 0
    _, health = listed(http, auth_app, "health-safeguarding", "health:R9Q", "CAREMGT")
    assert health == {ids["e"], ids["g"]}  # PSY released for care; the Consent refuses Amelia for care
    _, school = listed(http, auth_app, "school-dsl", "education:202", "safeguarding")
    assert school == {amelia, ids["d"]}  # its own SDV-labelled record stays visible to it
    _, police = listed(http, auth_app, "police", "police:20", "safeguarding")
    assert police == {amelia, ids["b_police"], ids["d"]}  # SDV and R released for safeguarding; V and PSY not


def test_a_label_or_consent_change_shows_at_once_without_rescoring(
        http: FlaskClient, auth_app: Flask, more_families: dict[str, str]) -> None:  # noqa: F811
    ids = more_families
    police = bearer(token(auth_app, "police-app", "police", "police:20", "system/*.cruds"))
    # care management: R, V, SDV and PSY withheld, Amelia refused by the Consent
    assert listed(http, auth_app, "social-worker", "la:202", "CAREMGT") == (0, set())
    record = http.get(f"/fhir/Patient/{ids['b_police']}", headers=police).get_json()
    record["meta"] = {"tag": record["meta"]["tag"]}  # the R label lifted
    assert http.put(f"/fhir/Patient/{ids['b_police']}", json=record, headers=police).status_code == 200
    assert listed(http, auth_app, "social-worker", "la:202", "CAREMGT") == (1, {ids["b_police"]})
    consent = http.get(f"/fhir/Consent/{ids['consent']}", headers=police).get_json()
    consent["status"] = "inactive"  # the refusal withdrawn: Amelia shows for care management again
    assert http.put(f"/fhir/Consent/{ids['consent']}", json=consent, headers=police).status_code == 200
    count, care = listed(http, auth_app, "social-worker", "la:202", "CAREMGT")
    assert count == 2 and ids["b_police"] in care
    # and a label added hides the child again at once
    record = http.get(f"/fhir/Patient/{ids['b_police']}", headers=police).get_json()
    assert http.put(f"/fhir/Patient/{ids['b_police']}", json=labelled(record, ACT_CODE, "SDV"),
                    headers=police).status_code == 200
    assert listed(http, auth_app, "social-worker", "la:202", "CAREMGT") == (1, care - {ids["b_police"]})


def test_a_child_hidden_after_the_hidden_list_was_read_is_still_not_listed(
        http: FlaskClient, auth_app: Flask, more_families: dict[str, str], monkeypatch) -> None:  # noqa: F811
    """The hidden list is read by its own statement before the page's (reads run in autocommit): a
    label committed in between is caught by the page's own check. Simulated by a hidden list that
    misses every hidden record, as one read just before the label was committed would."""
    from sqlalchemy import false, select

    from fhir_server.auth.policy import Visibility
    from fhir_server.storage.tables import resource

    cleared = listed(http, auth_app, "social-worker", "la:202", "CAREMGT")
    assert cleared == (0, set())
    monkeypatch.setattr(Visibility, "hidden_patients", lambda self: select(resource.c.res_id).where(false()))
    _, shown = listed(http, auth_app, "social-worker", "la:202", "CAREMGT")
    assert shown == set()  # the total, read from the stale list, is all such a race can move


def test_a_record_stored_without_its_policy_columns_hides_its_child_from_the_total_too(
        http: FlaskClient, auth_app: Flask, families: dict[str, str]) -> None:  # noqa: F811
    """Fail closed (docs/security.md): a Patient row written by SQL that bypassed the repository —
    the policy columns' defaults (every label bit, no agency) and no index rows — is withheld by the
    policy's SQL, and so its child is neither listed nor counted: the hidden list takes its
    candidates from those columns (Visibility.hidden_patients), not from index rows it lacks."""
    from sqlalchemy import delete, select, update

    from fhir_server.storage.tables import INDEX_TABLES, resource

    assert listed(http, auth_app, "social-worker", "la:202", "CAREMGT")[0] == 1  # Amelia (Noah is labelled R)
    conn = auth_app.extensions["fhir"].repo._bound
    pk = conn.execute(select(resource.c.pk).where(resource.c.res_type == "Patient",
                                                  resource.c.res_id == families["a_la"])).scalar_one()
    conn.execute(update(resource).where(resource.c.pk == pk).values(sensitivity=-1, agencies=None, owners=None))
    for table in INDEX_TABLES.values():
        conn.execute(delete(table).where(table.c.resource_pk == pk))
    for role, agency, purpose in (("social-worker", "la:202", "CAREMGT"), ("police", "police:20", "safeguarding"),
                                  ("mash-practitioner", "la:202", "safeguarding")):
        count, shown = listed(http, auth_app, role, agency, purpose)
        assert shown == per_record(auth_app, role, agency, purpose), role
        assert count == len(shown), (role, count, shown)
    assert listed(http, auth_app, "social-worker", "la:202", "CAREMGT") == (0, set())
    assert listed(http, auth_app, "mash-practitioner", "la:202", "safeguarding")[0] == 2  # cleared for every label
