"""Chains (search.html#chaining) and reverse chains (search.html#has) that end in composite
parameters, ``near``, ``_text``, ``_content``, ``_list`` and the token terminology modifiers, nested
chains, the 400s for what cannot end a chain, and the caller's access filter on every resource a
chain or ``_has`` looks into — through HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fhir_server.auth.service import AuthService

from .test_access_policy import R, SDV, auth, get, http, meta, seed, seeded, token  # noqa: F401 - fixtures
from .test_auth import auth_app, auth_conn, auth_settings  # noqa: F401 - fixtures
from .test_crud import body, post, put
from .test_search_terminology import HARM, HARM_CODESYSTEM, _is_a, _vs

LOINC = "http://loinc.org"
XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'
NEAR_CLINIC = quote("51.5|-0.12|1")


def _narrative(words: str) -> dict[str, str]:
    return {"status": "generated", "div": XHTML.format(words)}


def _created(client: FlaskClient, resource: dict[str, Any]) -> str:
    res = post(client, resource)
    assert res.status_code == 201, res.get_data(as_text=True)
    return str(body(res)["id"])


def _obs(subject: str, coding: dict[str, str], words: str, **value: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [coding]},
            "subject": {"reference": subject}, "text": _narrative(words), **value}


def _weight(kg: int) -> dict[str, Any]:
    return {"valueQuantity": {"value": kg, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}}


def _report(subject: str, *results: str) -> dict[str, Any]:
    return {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "Assessment"},
            "subject": {"reference": subject}, "result": [{"reference": r} for r in results]}


@pytest.fixture
def world(client: FlaskClient) -> dict[str, str]:
    """Two children, each with a weight and a harm Observation, reports on them, an Encounter at a
    nearby and one at a distant Location, a List, and the harm CodeSystem with an 'abuse' ValueSet."""
    assert put(client, HARM_CODESYSTEM).status_code in (200, 201)
    assert put(client, _vs("abuse", {"include": [_is_a("abuse")]})).status_code in (200, 201)
    w: dict[str, str] = {}
    w["ada"] = _created(client, {"resourceType": "Patient", "name": [{"family": "Okafor"}],
                                 "text": _narrative("bruised arm")})
    w["ben"] = _created(client, {"resourceType": "Patient", "name": [{"family": "Brown"}],
                                 "text": _narrative("healthy")})
    ada, ben = f"Patient/{w['ada']}", f"Patient/{w['ben']}"
    w["weight_a"] = _created(client, _obs(ada, {"system": LOINC, "code": "29463-7"}, "heavy", **_weight(80)))
    w["weight_b"] = _created(client, _obs(ben, {"system": LOINC, "code": "29463-7"}, "light", **_weight(20)))
    w["harm_a"] = _created(client, _obs(ada, {"system": HARM, "code": "bruise"}, "bruising seen"))
    w["harm_b"] = _created(client, _obs(ben, {"system": HARM, "code": "educational-neglect"}, "absent"))
    for key, obs in (("rep", "harm"), ("wrep", "weight")):
        for child, patient in (("a", ada), ("b", ben)):
            w[f"{key}_{child}"] = _created(client, _report(patient, f"Observation/{w[f'{obs}_{child}']}"))
    for child, patient, (lat, lon) in (("a", ada, (51.5, -0.12)), ("b", ben, (54.0, -2.0))):
        w[f"loc_{child}"] = _created(client, {"resourceType": "Location", "name": f"site {child}",
                                              "position": {"latitude": lat, "longitude": lon}})
        w[f"enc_{child}"] = _created(client, {
            "resourceType": "Encounter", "status": "finished", "subject": {"reference": patient},
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "location": [{"location": {"reference": f"Location/{w[f'loc_{child}']}"}}]})
    watch = {"resourceType": "List", "id": "watch", "status": "current", "mode": "working",
             "entry": [{"item": {"reference": ada}}, {"item": {"reference": f"Observation/{w['harm_b']}"}}]}
    assert put(client, watch).status_code == 201
    return w


def found(client: FlaskClient, query: str) -> list[str]:
    """Ids of the matches, parsed strictly (an ignored parameter would be a 400, not a wider answer)."""
    res = client.get(f"/fhir/{query}", headers={"Prefer": "handling=strict"})
    assert res.status_code == 200, res.get_data(as_text=True)
    return sorted(e["resource"]["id"] for e in body(res).get("entry", []) if e["search"]["mode"] == "match")


def expect(world: dict[str, str], *keys: str) -> list[str]:
    return sorted(world[k] for k in keys)


CHAINS = [  # (query, the matches' keys in `world`)
    # chains ending in a composite: the one Observation must meet both components
    ("DiagnosticReport?result.code-value-quantity=" + quote(f"{LOINC}|29463-7$gt50"), ("wrep_a",)),
    ("DiagnosticReport?result:Observation.code-value-quantity=" + quote("29463-7$lt50"), ("wrep_b",)),
    ("DiagnosticReport?result.code-value-quantity=" + quote(f"{HARM}|bruise$gt50"), ()),
    # near at the end of a chain, and of a chain inside _has inside a chain
    (f"Encounter?location.near={NEAR_CLINIC}", ("enc_a",)),
    (f"DiagnosticReport?subject._has:Encounter:subject:location.near={NEAR_CLINIC}", ("rep_a", "wrep_a")),
    # _text / _content / _list on the referenced resource; commas OR
    ("Observation?subject._text=bruised", ("weight_a", "harm_a")),
    ("Observation?subject:Patient._text=bruised,healthy", ("weight_a", "weight_b", "harm_a", "harm_b")),
    ("Observation?subject:Patient._content=brown", ("weight_b", "harm_b")),
    ("Observation?subject:Patient._list=watch", ("weight_a", "harm_a")),
    ("Observation?subject:Patient._list=List/watch&code=29463-7", ("weight_a",)),
    ("DiagnosticReport?result.subject:Patient._text=bruised", ("rep_a", "wrep_a")),  # two levels
    # token terminology modifiers on the referenced resource
    ("DiagnosticReport?result.code:in=ValueSet/abuse", ("rep_a",)),
    ("DiagnosticReport?result.code:not-in=ValueSet/abuse", ("rep_b", "wrep_a", "wrep_b")),
    ("DiagnosticReport?result.code:below=" + quote(f"{HARM}|neglect"), ("rep_b",)),
    ("DiagnosticReport?result.code:above=" + quote(f"{HARM}|bruise"), ("rep_a",)),
    # _has ending in each of them
    ("Patient?_has:Observation:subject:code-value-quantity=" + quote(f"{LOINC}|29463-7$gt50"), ("ada",)),
    ("Patient?_has:Observation:subject:code-value-quantity=" + quote(f"{LOINC}|29463-7$gt90"), ()),
    ("Patient?_has:Observation:subject:_text=light", ("ben",)),
    ("Patient?_has:Observation:subject:_content=heavy", ("ada",)),
    ("Patient?_has:Observation:subject:_list=watch", ("ben",)),
    ("Patient?_has:Observation:subject:code:in=ValueSet/abuse", ("ada",)),
    ("Patient?_has:Observation:subject:code:below=" + quote(f"{HARM}|neglect"), ("ben",)),
    ("Patient?_has:Observation:subject:code:above=" + quote(f"{HARM}|bruise"), ("ada",)),
    (f"Patient?_has:Encounter:subject:location.near={NEAR_CLINIC}", ("ada",)),
    # nested: _has then a chain, a chain then _has, _has within _has
    ("Location?_has:Encounter:location:subject:Patient._text=bruised", ("loc_a",)),
    ("Encounter?subject:Patient._has:Observation:subject:code:in=ValueSet/abuse", ("enc_a",)),
    ("Patient?_has:Observation:subject:_has:DiagnosticReport:result:subject:Patient._text=healthy", ("ben",)),
]


@pytest.mark.parametrize("query,keys", CHAINS, ids=[q for q, _ in CHAINS])
def test_chains_and_reverse_chains_end_in_any_criterion(client: FlaskClient, world: dict[str, str],
                                                        query: str, keys: tuple[str, ...]) -> None:
    assert found(client, query) == expect(world, *keys)


def test_chained_special_parameters_combine_by_and(client: FlaskClient, world: dict[str, str]) -> None:
    both = "Observation?subject:Patient._text=bruised,healthy&subject:Patient._content=brown"
    assert found(client, both) == expect(world, "weight_b", "harm_b")
    assert found(client, both + "&_has:DiagnosticReport:result:_list=watch") == []
    # the index follows the referenced resource: after an update the chain sees the new narrative
    ada = body(client.get(f"/fhir/Patient/{world['ada']}"))
    ada["text"] = _narrative("recovered")
    assert put(client, ada).status_code == 200
    assert found(client, "Observation?subject:Patient._text=bruised") == []
    assert found(client, "Observation?subject:Patient._text=recovered") == expect(world, "weight_a", "harm_a")


NOT_ALLOWED = [  # (query, issue.expression)
    ("Observation?subject:Patient._sort=family", "subject:Patient._sort"),
    ("Observation?subject._count=1", "subject._count"),
    ("Observation?subject:Patient._include=Patient:organization", "subject:Patient._include"),
    ("Observation?subject:Patient._summary=true", "subject:Patient._summary"),
    ("Observation?subject:Patient._elements=id", "subject:Patient._elements"),
    ("Observation?subject:Patient._type=Patient", "subject:Patient._type"),
    ("Observation?subject:Patient._query=current", "subject:Patient._query"),
    ("Observation?subject:Patient._filter=family%20eq%20Okafor", "subject:Patient._filter"),
    ("Patient?_has:Observation:subject:_filter=code%20eq%20x", "_has:Observation:subject:_filter"),
    ("Patient?_has:Observation:subject:_revinclude=Provenance:target", "_has:Observation:subject:_revinclude"),
    ("Observation?subject:Patient._text.name=x", "subject:Patient._text.name"),  # not a reference
    ("Patient?_has:Observation:subject:_list.code=x", "_has:Observation:subject:_list.code"),
    ("Observation?subject:Patient._text:exact=bruised", "subject:Patient._text:exact"),
    ("Patient?_has:Observation:subject:_content:missing=true", "_has:Observation:subject:_content:missing"),
    ("Observation?subject:Patient._list=%24current-problems", "subject:Patient._list"),
    ("Observation?subject:Patient._text=%21%21", "subject:Patient._text"),  # no word
    ("DiagnosticReport?result.code-value-quantity=29463-7", "result.code-value-quantity"),  # one part short
    ("Patient?_has:Observation:subject:code-value-quantity:exact=29463-7$1",
     "_has:Observation:subject:code-value-quantity:exact"),
    ("Encounter?location.near=" + quote("91|0|1"), "location.near"),
    ("Observation?focus:Bundle._text=x", "focus:Bundle._text"),  # a Bundle has no narrative (strict)
]


@pytest.mark.parametrize("query,expression", NOT_ALLOWED, ids=[q for q, _ in NOT_ALLOWED])
def test_what_cannot_end_a_chain_is_a_400_never_ignored(client: FlaskClient, query: str, expression: str) -> None:
    for headers in ({}, {"Prefer": "handling=strict"}):
        if query.startswith("Observation?focus:Bundle") and not headers:
            continue  # an unknown parameter is ignored with a warning unless strict (search.html#errors)
        res = client.get(f"/fhir/{query}", headers=headers)
        assert res.status_code == 400, res.get_data(as_text=True)
        outcome = body(res)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == [expression]


def test_an_unknown_chained_special_is_reported_when_lenient(client: FlaskClient) -> None:
    bundle = body(client.get("/fhir/Observation?focus:Bundle._text=x"))
    warnings = [i for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
                for i in e["resource"]["issue"]]
    assert [w["expression"] for w in warnings] == [["focus:Bundle._text"]]


# -- access: a chain or _has never looks into what the caller may not see ---------------------------

HIDDEN = [  # police records labelled SDV + R: withheld from a social worker unless for safeguarding
    {"resourceType": "Observation", "id": "hidden-weight", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "29463-7"}]}, "subject": {"reference": "Patient/child"},
     "text": _narrative("concealed injury"), "meta": meta("police/01", SDV, R), **_weight(95)},
    {"resourceType": "DiagnosticReport", "id": "la-report", "status": "final", "code": {"text": "Assessment"},
     "subject": {"reference": "Patient/child"}, "result": [{"reference": "Observation/hidden-weight"}],
     "meta": meta("local-authority/201")},
    {"resourceType": "List", "id": "police-list", "status": "current", "mode": "working",
     "entry": [{"item": {"reference": "Patient/child"}}], "meta": meta("police/01", SDV, R)},
]
THROUGH_HIDDEN = [  # (query, what it finds when the hidden record may be seen)
    ("DiagnosticReport?result.code-value-quantity=" + quote(f"{LOINC}|29463-7$gt90"), ["la-report"]),
    ("DiagnosticReport?result:Observation._text=concealed", ["la-report"]),
    ("DiagnosticReport?result._content=concealed", ["la-report"]),
    ("Patient?_has:Observation:subject:_text=concealed", ["child"]),
    ("Patient?_has:Observation:subject:code-value-quantity=" + quote("29463-7$gt90"), ["child"]),
    ("Patient?_has:DiagnosticReport:subject:result._content=concealed", ["child"]),
    ("Provenance?target:Observation._content=domestic", ["import"]),
    ("Patient?_list=police-list", ["child"]),
    ("DiagnosticReport?subject:Patient._list=police-list", ["la-report"]),
]


@pytest.mark.parametrize("query,visible", THROUGH_HIDDEN, ids=[q for q, _ in THROUGH_HIDDEN])
def test_chains_cannot_reveal_a_hidden_resource(http: FlaskClient, auth: AuthService,  # noqa: F811
                                                 seeded: Flask, query: str, visible: list[str]) -> None:  # noqa: F811
    seed(seeded, HIDDEN)
    care = token(auth, "social-worker", "la:201", purpose="CAREMGT")
    res = get(http, query, care)
    assert res.status_code == 200, res.get_data(as_text=True)
    assert body(res).get("entry", []) == [] and body(res)["total"] == 0
    safeguarding = token(auth, "social-worker", "la:201", purpose="safeguarding")  # SDV + R released
    res = get(http, query, safeguarding)
    assert res.status_code == 200, res.get_data(as_text=True)
    assert sorted(e["resource"]["id"] for e in body(res).get("entry", [])) == visible
