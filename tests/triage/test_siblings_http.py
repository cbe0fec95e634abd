"""Siblings found by a shared home and across linked agency records: a write touching one child
rescores the other, through HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fhir_server.fhir.instants import utcnow

from ..functional.test_crud import body
from .conftest import episode, observation, patient
from .test_triage_http import children, post

LA, POLICE, HEALTH = "local-authority/202", "police/20", "health/R9Q"


def at(resource: dict[str, Any], line: str, postcode: str, **extra: Any) -> dict[str, Any]:
    return {**resource, "address": [{"line": [line], "city": "Leeds", "postalCode": postcode, **extra}]}


def scores(client) -> dict[str, dict[str, Any]]:
    """Patient reference → the $triage row (every child)."""
    result = body(client.get("/fhir/$triage?_count=100"))
    return {c["patient"][0]["reference"]: c for c in children(result)}


def factor_codes(row: dict[str, Any]) -> set[str]:
    return {next(q["valueCode"] for q in f if q["name"] == "code") for f in row.get("factor", [])}


def test_a_police_observation_for_one_child_rescores_a_sibling_found_only_by_address(client, drain, monkeypatch):
    # B and its neighbour C share a postcode; only B shares the first line of A's address
    b = post(client, at(patient(LA, "9990000026", "Noah", "Patel", "2014-01-03", "male"), "12 Rowan Close", "LS6 2AB"))
    c = post(client, at(patient(LA, "9434765919", "Ivy", "Stone", "2013-05-01"), "14 Rowan Close", "LS6 2AB"))
    for child in (b, c):
        post(client, observation(LA, f"Patient/{child}", "cin-assessment-factor", "3B", 10))
    drain()
    before = scores(client)
    assert before[f"Patient/{b}"]["score"] == before[f"Patient/{c}"]["score"]
    # A: a police record only, written as the police would write the address
    a = post(client, at({"resourceType": "Patient", "name": [{"family": "Patel", "given": ["Mia"]}],
                         "birthDate": "2017-02-02", "gender": "female",
                         "meta": {"tag": [{"system": "https://w3id.org/sg-fhir/CodeSystem/source-agency",
                                           "code": POLICE}]}}, " 12, rowan  close.", "ls62ab"))
    drain()

    # 200 days on (recency decay lowers B's and C's scores), the police notify about A alone
    monkeypatch.setattr("triage.consumer.utcnow", lambda: utcnow() + timedelta(days=200))
    post(client, observation(POLICE, f"Patient/{a}", "risk-factor", "domestic-abuse-child-present", 0))
    drain()
    after = scores(client)
    assert after[f"Patient/{a}"]["score"][0] > 0
    # B was rescored with the later clock; C (same postcode, another home) was not
    assert after[f"Patient/{b}"]["score"][0] < before[f"Patient/{b}"]["score"][0]
    assert after[f"Patient/{c}"]["score"] == before[f"Patient/{c}"]["score"]


def test_a_sibling_plan_held_on_another_agencys_linked_record_counts(client, drain):
    """A's plan is on the local authority's record, A's address only on the police record (the two are
    linked into one master): B at that address gets the sibling-on-plan factor when the plan is written,
    and loses it when the plan closes."""
    b = post(client, at(patient(HEALTH, "9990000026", "Noah", "Patel", "2014-01-03", "male"), "12 Rowan Close",
                        "LS6 2AB"))
    post(client, at(patient(POLICE, "9434765919", "Amelia", "Patel", "2015-06-14"), "12 Rowan Close", "LS6 2AB"))
    a_la = post(client, patient(LA, "9434765919", "Amelia", "Patel", "2015-06-14"))
    drain()
    assert "sibling-on-plan" not in factor_codes(scores(client)[f"Patient/{b}"])

    plan = post(client, episode(LA, f"Patient/{a_la}", "cp-plan", 20))
    drain()
    row = scores(client)[f"Patient/{b}"]
    assert "sibling-on-plan" in factor_codes(row)
    sibling = next(f for f in row["factor"] if any(q.get("valueCode") == "sibling-on-plan" for q in f))
    assert {"name": "evidence", "valueReference": {"reference": f"EpisodeOfCare/{plan}"}} in sibling

    closed = {**episode(LA, f"Patient/{a_la}", "cp-plan", 20, status="finished", end_days_ago=1), "id": plan}
    assert client.put(f"/fhir/EpisodeOfCare/{plan}", json=closed).status_code == 200
    drain()
    assert "sibling-on-plan" not in factor_codes(scores(client)[f"Patient/{b}"])


@pytest.mark.parametrize("address", [
    {"use": "old"},
    {"period": {"start": "2010-01-01", "end": "2012-01-01"}},
])
def test_a_former_home_or_an_adult_makes_no_sibling(client, drain, address):
    b = post(client, at(patient(HEALTH, "9990000026", "Noah", "Patel", "2014-01-03", "male"), "12 Rowan Close",
                        "LS6 2AB"))
    a_la = post(client, at(patient(LA, "9434765919", "Amelia", "Patel", "2015-06-14"), "12 Rowan Close",
                           "LS6 2AB", **address))
    adult = post(client, at(patient(LA, "9990000018", "Kate", "Patel", "1980-03-03"), "12 Rowan Close", "LS6 2AB"))
    post(client, episode(LA, f"Patient/{a_la}", "cp-plan", 20))
    post(client, episode(LA, f"Patient/{adult}", "looked-after", 20))
    drain()
    assert "sibling-on-plan" not in factor_codes(scores(client)[f"Patient/{b}"])
