"""``$intervention-impact`` through HTTP on both databases, on a seeded population whose true effects
are known because the test makes them (impact/simulation.py)."""
from __future__ import annotations

import base64
import random
from datetime import datetime
from xml.etree import ElementTree

import pytest
from sqlalchemy import insert, select

from fhir_server.storage.tables import resource, risk_score_history

from impact import simulation
from impact.simulation import EPISODE, day

URL = "/fhir/$intervention-impact"


@pytest.fixture
def population(client):
    entries, truth = simulation.population()
    for bundle in simulation.bundles(entries):
        r = client.post("/fhir", json=bundle, content_type="application/fhir+json")
        assert r.status_code == 200, r.get_json()
    return truth


def _parts(parameter: dict) -> dict[str, list]:
    out: dict[str, list] = {}
    for p in parameter.get("part", []):
        out.setdefault(p["name"], []).append(p)
    return out


def _value(p: dict):
    return next(v for k, v in p.items() if k.startswith("value"))


def _outcome(result: dict, code: str) -> dict[str, object]:
    for o in _parts(result)["outcome"]:
        parts = _parts(o)
        if _value(parts["code"][0]) == code:
            return {k: _value(v[0]) for k, v in parts.items() if k != "balance"} | {"balance": parts.get("balance", [])}
    raise AssertionError(code)


def _results(body: dict) -> list[dict]:
    return [p for p in body["parameter"] if p["name"] == "result"]


def test_evaluate_recovers_a_known_effect_and_reports_no_effect_for_mentoring(client, population):
    r = client.get(f"{URL}?mode=evaluate&intervention=parenting-programme,mentoring&outcome=cp-plan")
    assert r.status_code == 200, r.get_json()
    parenting, mentoring = _results(r.get_json())
    found = _outcome(parenting, "cp-plan")
    truth = population["parenting-programme"]
    assert found["ci-lower"] <= truth <= found["ci-upper"], (found, truth)
    assert found["ci-upper"] < 0  # a real effect of this size is detected
    # how strong a confounder it would take to explain it away: E-values, the interval's nearer to none
    assert found["e-value"] > found["e-value-ci"] > 1
    check = _parts(_parts(parenting)["first-month-check"][0])
    assert _value(check["passed"][0]) == "passed" and "First-month check passed" in _value(check["statement"][0])
    assert _value(check["ci-lower"][0]) <= 0 <= _value(check["ci-upper"][0])
    assert found["treated"] > 100 and found["effective-comparison"] > 50
    # weighting balanced what drove the offer
    recent = next(b for b in found["balance"] if _value(_parts(b)["covariate"][0]) == "concerns-4-12m")
    before, after = (abs(_value(_parts(recent)[k][0])) for k in ("smd-before", "smd-after"))
    assert before > 0.3 and after < min(before / 2, 0.25)

    zero = _outcome(mentoring, "cp-plan")
    assert population["mentoring"] == 0.0
    if "estimate" in zero:
        assert zero["ci-lower"] <= 0 <= zero["ci-upper"], zero  # not reported as significant
        assert "includes no effect" in zero["statement"]
    else:  # too few to say, or withheld by the first-month check (which also errs at its 5% level)
        assert zero["statement"].startswith(("Too few", "First-month check failed")), zero
    _check_trajectory(parenting)
    _measure_report_says_the_same(client, parenting, found)


def _measure_report_says_the_same(client, parenting: dict, found: dict) -> None:
    """output=measure-report: the same figures as a summary MeasureReport, the chart as an attachment."""
    r = client.get(f"{URL}?mode=evaluate&intervention=parenting-programme&outcome=cp-plan&output=measure-report")
    assert r.status_code == 200, r.get_json()
    report = r.get_json()
    assert report["resourceType"] == "MeasureReport" and report["type"] == "summary"
    assert report["status"] == "complete" and report["period"]["start"] <= report["period"]["end"]
    plan, check, trajectory = report["group"]
    assert plan["code"]["coding"][0]["code"] == "cp-plan"
    assert check["code"]["coding"][0]["code"] == "first-month-check"
    assert "First-month check passed" in _extension(check, "impact-first-month-check")["valueString"]
    assert plan["measureScore"]["value"] == found["estimate"]
    effect = {e["url"]: _value(e) for e in _extension(plan, "impact-effect")["extension"]}
    assert (effect["ci-lower"], effect["ci-upper"]) == (found["ci-lower"], found["ci-upper"])
    assert (effect["e-value"], effect["e-value-ci"]) == (found["e-value"], found["e-value-ci"])
    counts = {p["code"].get("text", "all"): p["count"] for p in plan["population"]}
    assert counts["treated"] == found["treated"] and counts["all"] == found["treated"] + found["comparison"]
    chart = _extension(trajectory, "impact-trajectory-chart")["valueAttachment"]
    assert chart == _value(_parts(_parts(parenting)["trajectory"][0])["chart"][0])
    # the server's own R4 structural check accepts it as a resource a client could store
    created = client.post("/fhir/MeasureReport", json=report, content_type="application/fhir+json")
    assert created.status_code == 201, created.get_json()


def _extension(element: dict, name: str) -> dict:
    return next(e for e in element["extension"] if e["url"].endswith(f"/{name}"))


def test_risk_score_at_6_months_reads_the_score_history(client, population):
    """The risk-score-6m outcome reads what triage recorded at the time (risk_score_history). The
    history here is written as a server scoring through the period would have: every child scored
    every 6 months with some noise, and each parenting-programme child's score 3 points lower from
    the month after the start, so the programme's effect on the score at 6 months is -3."""
    conn = client.application.extensions["fhir"].repo._bound  # the test's connection (rolled back after it)
    episodes = {}
    bundle = client.get(f"/fhir/EpisodeOfCare?type={EPISODE}|parenting-programme&_count=1000").get_json()
    for e in bundle["entry"]:
        episodes[e["resource"]["patient"]["reference"].split("/")[1]] = ("parenting-programme",
                                                                        e["resource"]["period"]["start"])
    with conn.begin_nested():
        children = conn.execute(select(resource.c.res_id).where(resource.c.res_type == "Patient")).scalars().all()
        rng = random.Random(7)
        rows = []
        for child in children:
            kind, start = episodes.get(child, (None, None))
            lower_from = _month(start) + 1 if kind == "parenting-programme" else simulation.MONTHS
            months = sorted({*range(0, simulation.MONTHS, 6), min(lower_from, simulation.MONTHS - 1)})
            rows += [{"child_id": child, "scored_at": datetime.fromisoformat(simulation.day(month, 1)),
                      "score": 10 + rng.gauss(0, 1) - (3 if month >= lower_from else 0), "band": "green",
                      "config_version": "test"} for month in months]
        conn.execute(insert(risk_score_history), rows)
    r = client.get(f"{URL}?mode=evaluate&intervention=parenting-programme&outcome=risk-score-6m")
    assert r.status_code == 200, r.get_json()
    (result,) = _results(r.get_json())
    found = _outcome(result, "risk-score-6m")
    assert found["ci-upper"] < 0 and "risk score points" in found["statement"]
    # The operation compares starting the programme now with not starting anything now: a few comparison
    # children start it within the next 6 months and carry its -3 by then, so the estimate falls a little
    # short of -3 (it cannot exceed it), and the interval reaches no further than the true per-child drop.
    assert -3.5 <= found["ci-lower"] and -3.2 <= found["estimate"] <= -2.5, found
    assert found["treated"] > 100


def _month(iso_day: str) -> int:
    """The period month (impact.simulation) of an ISO date."""
    return (int(iso_day[:4]) - simulation.ORIGIN.year) * 12 + int(iso_day[5:7]) - simulation.ORIGIN.month


def _check_trajectory(result: dict) -> None:
    """The difference-in-differences on concern events, its pre-trend check and the SVG chart."""
    trajectory = _parts(_parts(result)["trajectory"][0])
    assert "Pre-trend check" in _value(trajectory["pre-trend"][0])
    assert 0 <= _value(trajectory["pre-trend-p-value"][0]) <= 1
    lower, upper = _value(trajectory["ci-lower"][0]), _value(trajectory["ci-upper"][0])
    assert lower <= 0 <= upper  # the programme changes plans, not the rate of concern events
    assert len(trajectory["point"]) == 18
    chart = _value(trajectory["chart"][0])
    assert chart["contentType"] == "image/svg+xml"
    svg = ElementTree.fromstring(base64.b64decode(chart["data"]))
    assert svg.tag.endswith("svg") and len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 2


def test_estimate_for_one_child_counts_comparable_cases(client, population):
    busy = client.get("/fhir/Observation?_count=1").get_json()["entry"][0]["resource"]["subject"]["reference"]
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "mode", "valueCode": "estimate"},
        {"name": "intervention", "valueCode": "parenting-programme"},
        {"name": "patient", "valueReference": {"reference": busy}},
        {"name": "outcome", "valueCode": "cp-plan"}]}
    r = client.post(URL, json=body, content_type="application/fhir+json")
    assert r.status_code == 200, r.get_json()
    (result,) = _results(r.get_json())
    parts = _parts(result)
    assert _value(parts["patient"][0])["reference"] == busy
    comparable = _value(parts["comparable-cases"][0])
    found = _outcome(result, "cp-plan")
    assert 0 < found["treated"] <= comparable  # the comparable cases with 12 months of data after their start
    if "estimate" in found:
        assert found["ci-lower"] <= found["estimate"] <= found["ci-upper"]
    else:  # thin evidence is said in words: too few cases, or groups still unbalanced
        assert found["statement"].startswith(("Too few", "The children who received it still differ",
                                              "First-month check failed"))
    assert "first-month check" in _value(_parts(parts["first-month-check"][0])["statement"][0]).lower()
    caution = next(p for p in r.get_json()["parameter"] if p["name"] == "caution")
    assert "not a prediction" in caution["valueString"]
    _unknown_child_is_404(client)
    _thin_evidence_is_said_in_words(client)


def test_help_offered_on_a_risk_the_records_do_not_show_is_not_reported(client):
    """Honesty: in this population some children have a crisis no agency has recorded yet when help is
    offered, and their workers offer it far more often (impact/simulation.py ``hidden``). Mentoring
    does nothing, yet its children have more plans afterwards than any comparison with the same
    records: weighting cannot see the crisis. The first-month check sees it (more concern events in
    the month the help started, before it could have worked) and no effect is reported, not a false
    finding of harm, nor a wrong figure for the parenting programme."""
    entries, truth = simulation.population(800, seed=3, hidden=1.0)
    for bundle in simulation.bundles(entries):
        assert client.post("/fhir", json=bundle, content_type="application/fhir+json").status_code == 200
    assert truth["mentoring"] == 0.0
    r = client.get(f"{URL}?mode=evaluate&intervention=parenting-programme,mentoring&outcome=cp-plan")
    assert r.status_code == 200, r.get_json()
    for result in _results(r.get_json()):
        check = _parts(_parts(result)["first-month-check"][0])
        assert _value(check["passed"][0]) == "failed" and _value(check["ci-lower"][0]) > 0
        found = _outcome(result, "cp-plan")
        assert "estimate" not in found and found["treated"] > 20
        assert found["statement"].startswith("First-month check failed") and "not show" in found["statement"]
        did = _parts(_parts(result)["trajectory"][0])
        assert "estimate" not in did and _value(did["statement"][0]).startswith("First-month check failed")


def _thin_evidence_is_said_in_words(client) -> None:
    one = client.get("/fhir/Patient?_count=1").get_json()["entry"][0]["resource"]["id"]
    episode = {"resourceType": "EpisodeOfCare", "status": "finished",
               "type": [{"coding": [{"system": EPISODE, "code": "family-group-conference"}]}],
               "patient": {"reference": f"Patient/{one}"}, "period": {"start": day(20), "end": day(21)}}
    assert client.post("/fhir/EpisodeOfCare", json=episode, content_type="application/fhir+json").status_code == 201
    r = client.get(f"{URL}?mode=evaluate&intervention=family-group-conference&outcome=referrals")
    found = _outcome(_results(r.get_json())[0], "referrals")
    assert "estimate" not in found and found["treated"] == 1
    assert found["statement"].startswith("Too few comparable cases")


@pytest.mark.parametrize("query, where", [
    ("intervention=mentoring", "mode"),
    ("mode=guess&intervention=mentoring", "mode"),
    ("mode=evaluate", "intervention"),
    ("mode=evaluate&intervention=cp-plan", "intervention"),
    ("mode=evaluate&intervention=mentoring&outcome=happiness", "outcome"),
    ("mode=estimate&intervention=mentoring", "patient"),
    ("mode=estimate&intervention=mentoring&patient=Observation/1", "patient"),
    ("mode=evaluate&intervention=mentoring&patient=Patient/1", "patient"),
    ("mode=evaluate&intervention=mentoring&horizon=0", "horizon"),
    ("mode=evaluate&intervention=mentoring&start=last-year", "start"),
    ("mode=evaluate&intervention=mentoring&provider=Patient/2", "provider"),
    ("mode=evaluate&intervention=mentoring&colour=red", "colour"),
    ("mode=evaluate&intervention=mentoring&output=pdf", "output"),
])
def test_bad_input_is_a_400_operation_outcome(client, query, where):
    r = client.get(f"{URL}?{query}")
    assert r.status_code == 400
    outcome = r.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [where]


def _unknown_child_is_404(client) -> None:
    r = client.get(f"{URL}?mode=estimate&intervention=mentoring&patient=Patient/no-such-child")
    assert r.status_code == 404
    assert r.get_json()["resourceType"] == "OperationOutcome"


def test_the_operation_is_declared(client):
    statement = client.get("/fhir/metadata").get_json()
    ops = {o["name"]: o["definition"] for o in statement["rest"][0].get("operation", [])}
    assert ops["intervention-impact"] == "https://w3id.org/sg-fhir/OperationDefinition/intervention-impact"


# -- the access policy (docs/security.md, "Derived views") ----------------------------------------------

R_LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}


@pytest.fixture
def as_caller(app, settings):
    """Callers with authentication on, on the same database connection as ``client`` (which loaded the
    population with authentication off): a social worker of another authority (purpose CAREMGT: no
    restricted records released) and a MASH practitioner (purpose safeguarding: released)."""
    from fhir_server import create_app

    conn = app.extensions["fhir"].repo._bound
    auth_app = create_app(settings.with_overrides(auth_enabled=True, auth_dev_issuer=True), connection=conn)
    service, http = auth_app.extensions["fhir"].auth, auth_app.test_client()

    def call(role: str, purpose: str, path: str, body: dict | None = None):
        token = service.mint_dev_token(client_id=f"{role}-app", scope="system/*.rs", agency="la:999", role=role)
        headers = {"Authorization": f"Bearer {token}", "X-Purpose-Of-Use": purpose}
        if body is None:
            return http.get(path, headers=headers)
        return http.post(path, json=body, headers=headers, content_type="application/fhir+json")
    return call


def _restrict(client, res_type: str, res_id: str) -> None:
    content = client.get(f"/fhir/{res_type}/{res_id}").get_json()
    content["meta"] = {**content.get("meta", {}), "security": [R_LABEL]}
    assert client.put(f"/fhir/{res_type}/{res_id}", json=content, content_type="application/fhir+json").status_code == 200


def test_restricted_children_are_not_identified_to_a_caller_not_cleared(client, population, as_caller):
    """evaluate: the effect figures (aggregates over at least MIN_TREATED children) are the same for
    both callers; a restricted child's episode is listed only to the caller cleared for it. estimate:
    a restricted child is answered as an unknown one (404), not as "forbidden"."""
    query = f"{URL}?mode=evaluate&intervention=parenting-programme&outcome=cp-plan"
    episodes = [_value(p)["reference"] for p in _parts(_results(client.get(query).get_json())[0])["episode"]]
    hidden = episodes[0].split("/", 1)[1]
    child = client.get(f"/fhir/EpisodeOfCare/{hidden}").get_json()["patient"]["reference"]
    _restrict(client, "EpisodeOfCare", hidden)
    _restrict(client, *child.split("/", 1))

    cleared = as_caller("mash-practitioner", "safeguarding", query)
    worker = as_caller("social-worker", "CAREMGT", query)
    assert cleared.status_code == worker.status_code == 200, worker.get_json()
    (full,), (partial,) = _results(cleared.get_json()), _results(worker.get_json())
    listed = [_value(p)["reference"] for p in _parts(partial).get("episode", [])]
    assert f"EpisodeOfCare/{hidden}" in [_value(p)["reference"] for p in _parts(full)["episode"]]
    assert f"EpisodeOfCare/{hidden}" not in listed and len(listed) == len(_parts(full)["episode"]) - 1
    assert _outcome(partial, "cp-plan") == _outcome(full, "cp-plan")  # the aggregates include every child

    body = {"resourceType": "Parameters", "parameter": [
        {"name": "mode", "valueCode": "estimate"}, {"name": "intervention", "valueCode": "parenting-programme"},
        {"name": "patient", "valueReference": {"reference": child}}, {"name": "outcome", "valueCode": "cp-plan"}]}
    assert as_caller("mash-practitioner", "safeguarding", URL, body).status_code == 200
    refused = as_caller("social-worker", "CAREMGT", URL, body)
    assert refused.status_code == 404
    assert "not a child known" in refused.get_json()["issue"][0]["diagnostics"]
