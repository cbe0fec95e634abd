"""``$intervention-impact`` through HTTP on both databases, on a seeded population whose true effects
are known because the test makes them.

1,200 children over 36 months. Each has a latent concern level; agencies record concern events at a
rate that follows it. Who is offered an intervention depends on the concern events of the last year
(selection on what the server can see, so weighting can undo it). A first child protection plan after
the start follows the same history; the parenting programme lowers its hazard; mentoring does
nothing. The true effect on the treated is computed from each treated child's two potential outcomes.
"""
from __future__ import annotations

import base64
import math
from datetime import date
from xml.etree import ElementTree

import numpy as np
import pytest

from mappings import systems

RISK = systems.code_system("risk-factor")
EPISODE = systems.code_system("episode-type")
ORIGIN = date(2022, 1, 1)
MONTHS = 36
CHILDREN = 1_200
PARENTING_HAZARD = 0.3  # the programme cuts the monthly hazard of a first plan to 30%
URL = "/fhir/$intervention-impact"


def _day(month: int, day: int = 10) -> str:
    y, m = divmod(ORIGIN.month - 1 + month, 12)
    return date(ORIGIN.year + y, m + 1, day).isoformat()


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _population(seed: int = 5) -> tuple[list[dict], dict[str, float]]:
    """Transaction entries for the population, and the true effect on the treated per intervention.

    A first child protection plan comes from a monthly hazard that grows with the concern events of
    the last 12 months; the parenting programme multiplies it by ``PARENTING_HAZARD`` from its start.
    Each treated child's plan is drawn twice from the same random numbers, with and without the
    effect, so the true effect on the treated (within 12 months of the start, among children with
    no plan before it) is known exactly for this sample."""
    rng = np.random.default_rng(seed)
    entries: list[dict] = []
    truth: dict[str, list[float]] = {"parenting-programme": [], "mentoring": []}

    def add(resource: dict) -> str:
        full_url = f"urn:uuid:{len(entries):08d}-0000-4000-8000-000000000000"
        entries.append({"fullUrl": full_url, "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
        return full_url

    def first_plan(events: np.ndarray, draws: np.ndarray, start: int, factor: float) -> int | None:
        for month in range(1, MONTHS):
            recent = float(np.log1p(events[max(0, month - 12):month].sum()))
            hazard = 0.006 * math.exp(1.3 * recent) * (factor if month >= start else 1.0)
            if draws[month] < hazard:
                return month
        return None

    for i in range(CHILDREN):
        born = date(2008 + int(rng.integers(0, 12)), int(rng.integers(1, 13)), int(rng.integers(1, 28)))
        patient = add({"resourceType": "Patient", "identifier": [{"system": "https://example.org/child", "value": str(i)}],
                       "birthDate": born.isoformat(), "gender": "female" if i % 2 else "male"})
        events = rng.poisson(0.06 * math.exp(rng.normal()), MONTHS)
        for month in np.nonzero(events)[0]:
            for _ in range(int(events[month])):
                add({"resourceType": "Observation", "status": "final",
                     "code": {"coding": [{"system": RISK, "code": "domestic-abuse-child-present"}]},
                     "subject": {"reference": patient}, "effectiveDateTime": _day(int(month))})
        start = int(rng.integers(12, MONTHS - 12))
        draws = rng.random(MONTHS)
        offered = rng.random() < _sigmoid(-2.2 + 1.4 * float(np.log1p(events[start - 12:start].sum())))
        kind = ("parenting-programme" if rng.random() < 0.7 else "mentoring") if offered else None
        factor = PARENTING_HAZARD if kind == "parenting-programme" else 1.0
        plan = first_plan(events, draws, start, factor)
        if kind:
            add({"resourceType": "EpisodeOfCare", "status": "finished",
                 "type": [{"coding": [{"system": EPISODE, "code": kind}]}],
                 "patient": {"reference": patient}, "period": {"start": _day(start, 2), "end": _day(start + 3, 2)}})
            untreated = first_plan(events, draws, start, 1.0)
            if untreated is None or untreated >= start:  # no plan before the start: in the analysis
                within = [int(p is not None and start <= p < start + 12) for p in (plan, untreated)]
                truth[kind].append(within[0] - within[1])
        if plan is not None:
            add({"resourceType": "EpisodeOfCare", "status": "active",
                 "type": [{"coding": [{"system": EPISODE, "code": "cp-plan"}]}],
                 "patient": {"reference": patient}, "period": {"start": _day(plan, 5)}})
    return entries, {k: float(np.mean(v)) for k, v in truth.items()}


@pytest.fixture
def population(client):
    entries, truth = _population()
    chunks, current = [], []  # urn:uuid references resolve within one Bundle: a child's entries stay together
    for entry in entries:
        if entry["resource"]["resourceType"] == "Patient" and len(current) >= 900:
            chunks.append(current)
            current = []
        current.append(entry)
    chunks.append(current)
    for chunk in chunks:
        r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": chunk},
                        content_type="application/fhir+json")
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
    else:
        assert "Too few" in zero["statement"]
    _check_trajectory(parenting)


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
        assert found["statement"].startswith(("Too few", "The children who received it still differ"))
    caution = next(p for p in r.get_json()["parameter"] if p["name"] == "caution")
    assert "not a prediction" in caution["valueString"]
    _unknown_child_is_404(client)
    _thin_evidence_is_said_in_words(client)


def _thin_evidence_is_said_in_words(client) -> None:
    one = client.get("/fhir/Patient?_count=1").get_json()["entry"][0]["resource"]["id"]
    episode = {"resourceType": "EpisodeOfCare", "status": "finished",
               "type": [{"coding": [{"system": EPISODE, "code": "family-group-conference"}]}],
               "patient": {"reference": f"Patient/{one}"}, "period": {"start": _day(20), "end": _day(21)}}
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
