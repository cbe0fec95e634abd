"""Risk scores, $triage, RiskAssessment and escalation Flags through HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

import csv
import io
from typing import Any

from ..functional.test_crud import body
from .conftest import episode, observation, patient

LA, POLICE, HEALTH = "local-authority/202", "police/20", "health/R9Q"


def post(client, resource: dict[str, Any]) -> str:
    res = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert res.status_code == 201, res.data
    return body(res)["id"]


def children(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in parameters["parameter"]:
        if p["name"] == "child":
            row: dict[str, Any] = {}
            for part in p["part"]:
                value = next((v for k, v in part.items() if k.startswith("value")), part.get("part"))
                row.setdefault(part["name"], []).append(value)
            out.append(row)
    return out


def total(parameters: dict[str, Any]) -> int:
    return next(p["valueInteger"] for p in parameters["parameter"] if p["name"] == "total")


def family_at_risk(client) -> dict[str, str]:
    """Child A: a local authority record (child protection plan, toxic trio at assessment) and a police
    record (domestic abuse two days ago) with the same NHS number; child B: one police missing episode."""
    ids = {"worker": post(client, {"resourceType": "Practitioner", "name": [{"family": "Worker", "given": ["Sam"]}]})}
    ids["a_la"] = post(client, patient(LA, "9434765919", "Amelia", "Hughes", "2015-06-14"))
    ids["plan"] = post(client, episode(LA, f"Patient/{ids['a_la']}", "cp-plan", 200,
                                       manager=f"Practitioner/{ids['worker']}"))
    for code in ("3B", "2B", "4B"):
        ids[code] = post(client, observation(LA, f"Patient/{ids['a_la']}", "cin-assessment-factor", code, 10))
    ids["a_police"] = post(client, patient(POLICE, "9434765919", "Amelia", "Hughes", "2015-06-14"))
    ids["b_police"] = post(client, patient(POLICE, "9990000026", "Noah", "Patel", "2012-01-03", "male"))
    ids["b_missing"] = post(client, observation(POLICE, f"Patient/{ids['b_police']}", "risk-factor",
                                                "missing-episode", 5))
    return ids


def test_scores_reasons_ranking_and_risk_assessment(client, drain):
    ids = family_at_risk(client)
    drain()
    result = body(client.get("/fhir/$triage"))
    assert result["resourceType"] == "Parameters" and total(result) == 2
    first, second = children(result)
    master = first["patient"][0]["reference"]
    assert master not in (f"Patient/{ids['a_la']}", f"Patient/{ids['a_police']}")  # the linked master record
    assert first["rank"] == [1] and second["rank"] == [2]
    assert first["band"][0]["code"] == "red" and second["band"][0]["code"] == "green"
    # 30 plan + 20 DA + 15 substance + 12 mental health (decayed 10 days) + 25 toxic trio
    assert 95 < first["score"][0] < 102 and 11 < second["score"][0] <= 12
    assert first["lead-practitioner"][0]["reference"] == f"Practitioner/{ids['worker']}"
    assert first["open-episode"][0]["reference"] == f"EpisodeOfCare/{ids['plan']}"
    factors = {(dict((q["name"], next(v for k, v in q.items() if k.startswith("value"))) for q in f)["agency"],
                dict((q["name"], next(v for k, v in q.items() if k.startswith("value"))) for q in f)["code"])
               for f in first["factor"]}
    assert ("multi-agency", "toxic-trio") in factors and (LA, "cp-plan") in factors
    assert first["trend-7d"] == first["score"]  # not scored a week ago

    found = body(client.get(f"/fhir/RiskAssessment?subject={master}"))
    assert found["total"] == 1
    ra = found["entry"][0]["resource"]
    assert ra["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "red"
    assert {"reference": f"Observation/{ids['3B']}"} in ra["basis"]
    assert ra["extension"][0]["valueDecimal"] == first["score"][0]
    assert any("Toxic" in n["text"] or "together" in n["text"] for n in ra["note"])

    # a write that does not change the score makes no new RiskAssessment version
    client.put(f"/fhir/Practitioner/{ids['worker']}", json={"resourceType": "Practitioner", "id": ids["worker"],
                                                             "name": [{"family": "Worker", "given": ["Samantha"]}]})
    post(client, observation(LA, f"Patient/{ids['a_la']}", "risk-factor", "school-attendance", 3))
    drain()
    assert body(client.get(f"/fhir/RiskAssessment/{ra['id']}"))["meta"]["versionId"] == "1"


def test_flag_raised_once_grown_by_a_trigger_and_closed_on_de_escalation(client, drain):
    child = post(client, patient(LA, "9434765919", "Amelia", "Hughes", "2015-06-14"))
    plan = episode(LA, f"Patient/{child}", "cp-plan", 100)
    plan_id = post(client, plan)
    drain()
    flags = body(client.get(f"/fhir/Flag?subject=Patient/{child}"))
    assert flags["total"] == 1
    flag = flags["entry"][0]["resource"]
    assert flag["status"] == "active" and flag["code"]["coding"][0]["code"] == "escalation"
    assert flag["author"]["reference"] == "Device/sg-fhir-risk-model"
    ext = {e["url"]: e for e in flag["extension"][0]["extension"]}
    assert ext["band"]["valueCoding"]["code"] == "amber" and ext["cause"]["valueCoding"]["code"] == "band-rise"
    assert body(client.get("/fhir/Device/sg-fhir-risk-model"))["status"] == "active"
    provenance = body(client.get(f"/fhir/Provenance?target=Flag/{flag['id']}"))
    assert provenance["total"] == 1

    drain()  # nothing new: nothing written
    post(client, observation(LA, f"Patient/{child}", "risk-factor", "school-attendance", 1))
    drain()
    assert body(client.get(f"/fhir/Flag/{flag['id']}"))["meta"]["versionId"] == "1"

    # a police domestic abuse notification while on the plan fires a trigger: same Flag, updated
    police = post(client, patient(POLICE, "9434765919", "Amelia", "Hughes", "2015-06-14"))
    da = post(client, observation(POLICE, f"Patient/{police}", "risk-factor", "domestic-abuse-child-present", 1))
    drain()
    assert body(client.get(f"/fhir/Flag?subject=Patient/{child}"))["total"] == 0  # the child is now a master
    grown = body(client.get(f"/fhir/Flag/{flag['id']}"))
    master = grown["subject"]["reference"]
    causes = [e["valueCoding"]["code"] for e in grown["extension"][0]["extension"] if e["url"] == "cause"]
    assert grown["status"] == "active" and "domestic-abuse-on-plan" in causes
    assert {"url": "evidence", "valueReference": {"reference": f"Observation/{da}"}} in grown["extension"][0]["extension"]
    all_flags = body(client.get(f"/fhir/Flag?code=escalation"))
    assert all_flags["total"] == 1  # one Flag for one ongoing escalation

    # de-escalation: the plan ends and the notification is withdrawn
    client.put(f"/fhir/EpisodeOfCare/{plan_id}", json={**episode(LA, f"Patient/{child}", "cp-plan", 100,
                                                                 status="finished", end_days_ago=0), "id": plan_id})
    client.delete(f"/fhir/Observation/{da}")
    drain()
    closed = body(client.get(f"/fhir/Flag/{flag['id']}"))
    assert closed["status"] == "inactive" and closed["period"]["end"]
    assert body(client.get(f"/fhir/Provenance?target=Flag/{flag['id']}"))["total"] >= 1
    escalations = [e["resource"] for e in body(client.get("/fhir/Flag?code=escalation"))["entry"]
                   if e["resource"]["resourceType"] == "Flag"]
    assert [(f["id"], f["status"]) for f in escalations] == [(flag["id"], "inactive")]  # Flag has no status search
    row = children(body(client.get("/fhir/$triage")))
    assert [r["patient"][0]["reference"] for r in row] == [master] and "flag" not in row[0]


def test_triage_filters_paging_and_csv(client, drain):
    ids = family_at_risk(client)
    toddler = post(client, patient(HEALTH, "9990000034", "Lily", "Ashworth", "2024-02-11"))
    post(client, observation(HEALTH, f"Patient/{toddler}", "risk-factor", "ed-safeguarding-concern", 3))
    drain()
    assert total(body(client.get("/fhir/$triage"))) == 3
    assert total(body(client.get("/fhir/$triage?band=red"))) == 1
    assert total(body(client.get("/fhir/$triage?band=red,green"))) == 3
    assert total(body(client.get("/fhir/$triage?local-authority=202"))) == 1
    assert total(body(client.get("/fhir/$triage?agency=health"))) == 1
    assert total(body(client.get("/fhir/$triage?agency=police/20&agency=health"))) == 2
    assert total(body(client.get("/fhir/$triage?agency=local-authority"))) == 1
    assert total(body(client.get("/fhir/$triage?age-max=4"))) == 1
    assert total(body(client.get("/fhir/$triage?age-min=5&age-max=17"))) == 2
    assert total(body(client.get("/fhir/$triage?changed-since=2100-01-01"))) == 0
    assert total(body(client.get("/fhir/$triage?changed-since=2020-01-01"))) == 3
    posted = client.post("/fhir/$triage", json={"resourceType": "Parameters",
                                                  "parameter": [{"name": "band", "valueCode": "red"}]})
    assert total(body(posted)) == 1

    page1 = body(client.get("/fhir/$triage?_count=2"))
    assert [r["rank"][0] for r in children(page1)] == [1, 2]
    nxt = next(p["valueUri"] for p in page1["parameter"] if p["name"] == "next")
    page2 = body(client.get(nxt.replace("http://localhost", "")))
    assert [r["rank"][0] for r in children(page2)] == [3]
    assert not any(p["name"] == "next" for p in page2["parameter"])

    for res in (client.get("/fhir/$triage?_format=csv"), client.get("/fhir/$triage", headers={"Accept": "text/csv"})):
        assert res.status_code == 200 and res.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(res.data.decode())))
        assert [r["rank"] for r in rows] == ["1", "2", "3"] and rows[0]["band"] == "red"
        assert "toxic" in rows[0]["top_factors"].lower() or "together" in rows[0]["top_factors"]
        assert rows[0]["lead_practitioner"] == "Sam Worker"

    for query, name in (("band=purple", "band"), ("age-min=x", "age-min"), ("colour=red", "colour"),
                        ("changed-since=yesterday", "changed-since"), ("_count=0", "_count")):
        res = client.get(f"/fhir/$triage?{query}")
        assert res.status_code == 400, query
        assert body(res)["resourceType"] == "OperationOutcome" and body(res)["issue"][0]["expression"] == [name]
    res = client.get("/fhir/$triage?band=purple&_format=csv")
    assert res.status_code == 400 and body(res)["resourceType"] == "OperationOutcome"


def test_triage_is_in_the_capability_statement(client):
    statement = body(client.get("/fhir/metadata"))
    assert "triage" in [o["name"] for o in statement["rest"][0].get("operation", [])]
