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
