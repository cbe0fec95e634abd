"""Token search against the terminology the server holds, through HTTP on SQLite and PostgreSQL
(search.html#token): ``:in`` / ``:not-in`` expand a ValueSet (valueset.html#compose) and
``:below`` / ``:above`` follow a CodeSystem's hierarchy (codesystem.html#hierarchy); uri
``:below`` / ``:above`` (search.html#uri)."""
from __future__ import annotations

import pytest

from fhir_server.conformance import load_conformance_resources

from .test_crud import body, post, put

HARM = "https://example.org/fhir/CodeSystem/harm"
LOINC = "http://loinc.org"
XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'

# abuse ⊃ {physical ⊃ {bruise (parent property), fracture (declared "isa" property)}, emotional};
# neglect ⊃ educational-neglect (a "child" property); a nested group that is not is-a elsewhere.
HARM_CODESYSTEM = {
    "resourceType": "CodeSystem", "id": "harm", "url": HARM, "version": "1", "status": "active",
    "content": "complete",
    "property": [{"code": "parent", "uri": "http://hl7.org/fhir/concept-properties#parent", "type": "code"},
                 {"code": "child", "uri": "http://hl7.org/fhir/concept-properties#child", "type": "code"},
                 {"code": "isa", "uri": "http://hl7.org/fhir/concept-properties#parent", "type": "code"},
                 {"code": "severity", "type": "string"}],
    "concept": [
        {"code": "abuse", "display": "Abuse", "concept": [
            {"code": "physical", "display": "Physical abuse",
             "property": [{"code": "severity", "valueString": "high"}]},
            {"code": "emotional", "display": "Emotional abuse"}]},
        {"code": "neglect", "display": "Neglect", "property": [{"code": "child", "valueCode": "educational-neglect"}]},
        {"code": "educational-neglect", "display": "Educational neglect"},
        {"code": "bruise", "display": "Bruising", "property": [{"code": "parent", "valueCode": "physical"},
                                                              {"code": "severity", "valueString": "high"}]},
        {"code": "fracture", "display": "Fracture", "property": [{"code": "isa", "valueCode": "physical"}]},
    ],
}


def _vs(vs_id: str, compose: dict | None = None, **extra) -> dict:
    out = {"resourceType": "ValueSet", "id": vs_id, "url": f"https://example.org/fhir/ValueSet/{vs_id}",
           "status": "active", **extra}
    if compose is not None:
        out["compose"] = compose
    return out


def _is_a(code: str, op: str = "is-a") -> dict:
    return {"system": HARM, "filter": [{"property": "concept", "op": op, "value": code}]}


def _obs(system: str, code: str) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": system, "code": code}]},
            "text": {"status": "generated", "div": XHTML.format(code)}}


def _stored(client, resource: dict) -> None:
    res = put(client, resource)
    assert res.status_code in (200, 201), res.data


@pytest.fixture
def harm(client):
    """The CodeSystem, and one Observation per code (plus a LOINC one and one of another system)."""
    _stored(client, HARM_CODESYSTEM)
    for code in ("abuse", "physical", "emotional", "neglect", "educational-neglect", "bruise", "fracture"):
        assert post(client, _obs(HARM, code)).status_code == 201
    post(client, _obs(LOINC, "29463-7"))
    post(client, _obs("https://example.org/other", "physical"))  # same code, other system
    return client


def codes(client, query: str) -> list[str]:
    res = client.get(f"/fhir/Observation?{query}")
    assert res.status_code == 200, res.data
    return sorted(f"{e['resource']['code']['coding'][0]['code']}"
                  + ("" if e["resource"]["code"]["coding"][0]["system"] == HARM else "@other")
                  for e in body(res).get("entry", []) if e["search"]["mode"] == "match")


def error(client, query: str, status: int = 400) -> dict:
    res = client.get(f"/fhir/Observation?{query}")
    assert res.status_code == status, res.data
    outcome = body(res)
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome["issue"][0]


# -- :in / :not-in ------------------------------------------------------------------------------------

def test_in_expands_is_a_filter_by_canonical_url_id_and_absolute_reference(harm):
    _stored(harm, _vs("abuse", {"include": [_is_a("abuse")]}))
    expected = ["abuse", "bruise", "emotional", "fracture", "physical"]
    assert codes(harm, "code:in=https://example.org/fhir/ValueSet/abuse") == expected
    assert codes(harm, "code:in=ValueSet/abuse") == expected
    assert codes(harm, "code:in=http://localhost/fhir/ValueSet/abuse") == expected  # this server's URL
    assert codes(harm, "code:in=https://example.org/fhir/ValueSet/abuse|") == expected


def test_not_in_is_the_complement_including_other_systems(harm):
    _stored(harm, _vs("abuse", {"include": [_is_a("abuse")]}))
    assert codes(harm, "code:not-in=ValueSet/abuse") == [
        "29463-7@other", "educational-neglect", "neglect", "physical@other"]


def test_descendent_of_generalizes_is_not_a_and_child_property(harm):
    _stored(harm, _vs("below-abuse", {"include": [_is_a("abuse", "descendent-of")]}))
    _stored(harm, _vs("above-bruise", {"include": [_is_a("bruise", "generalizes")]}))
    _stored(harm, _vs("not-abuse", {"include": [_is_a("abuse", "is-not-a")]}))
    _stored(harm, _vs("neglect", {"include": [_is_a("neglect")]}))
    assert codes(harm, "code:in=ValueSet/below-abuse") == ["bruise", "emotional", "fracture", "physical"]
    assert codes(harm, "code:in=ValueSet/above-bruise") == ["abuse", "bruise", "physical"]
    assert codes(harm, "code:in=ValueSet/not-abuse") == ["educational-neglect", "neglect"]
    assert codes(harm, "code:in=ValueSet/neglect") == ["educational-neglect", "neglect"]


def test_listed_concepts_whole_systems_excludes_and_property_filters(harm):
    _stored(harm, _vs("listed", {"include": [{"system": HARM, "concept": [{"code": "neglect"}]},
                                             {"system": LOINC, "concept": [{"code": "29463-7"}]}]}))
    _stored(harm, _vs("whole-but-abuse", {"include": [{"system": HARM}], "exclude": [_is_a("abuse")]}))
    _stored(harm, _vs("high", {"include": [{"system": HARM, "filter": [
        {"property": "severity", "op": "=", "value": "high"}]}]}))
    _stored(harm, _vs("regex", {"include": [{"system": HARM, "filter": [
        {"property": "code", "op": "regex", "value": ".*neglect"}]}]}))
    assert codes(harm, "code:in=ValueSet/listed") == ["29463-7@other", "neglect"]
    assert codes(harm, "code:in=ValueSet/whole-but-abuse") == ["educational-neglect", "neglect"]
    assert codes(harm, "code:in=ValueSet/high") == ["bruise", "physical"]
    assert codes(harm, "code:in=ValueSet/regex") == ["educational-neglect", "neglect"]


def test_value_sets_include_value_sets_and_precomputed_expansions(harm):
    _stored(harm, _vs("abuse", {"include": [_is_a("abuse")]}))
    _stored(harm, _vs("abuse-not-physical", {"include": [{"valueSet": ["https://example.org/fhir/ValueSet/abuse"]}],
                                             "exclude": [{"system": HARM, "concept": [{"code": "physical"}]}]}))
    _stored(harm, _vs("expanded", expansion={"timestamp": "2025-01-01T00:00:00Z", "contains": [
        {"system": HARM, "code": "neglect", "contains": [{"system": HARM, "code": "educational-neglect"}]}]}))
    assert codes(harm, "code:in=ValueSet/abuse-not-physical") == ["abuse", "bruise", "emotional", "fracture"]
    assert codes(harm, "code:in=ValueSet/expanded") == ["educational-neglect", "neglect"]
    # a comma ORs value sets; repeating the parameter ANDs them
    assert codes(harm, "code:in=ValueSet/expanded,ValueSet/abuse-not-physical") == [
        "abuse", "bruise", "educational-neglect", "emotional", "fracture", "neglect"]
    assert codes(harm, "code:in=ValueSet/expanded&code:in=ValueSet/abuse") == []


def test_conformance_code_systems_from_profiles_are_searchable(client, settings, app):
    load_conformance_resources(app.extensions["fhir"].repo, settings, base_search_parameters=False)
    risk = "https://w3id.org/sg-fhir/CodeSystem/risk-factor"
    _stored(client, _vs("risk", {"include": [{"system": risk}]}))
    post(client, _obs(risk, "missing-episode"))
    post(client, _obs(risk, "not-a-risk-code"))
    res = body(client.get("/fhir/Observation?code:in=ValueSet/risk"))
    assert [e["resource"]["code"]["coding"][0]["code"] for e in res["entry"]] == ["missing-episode"]


def test_expansion_follows_changes_to_value_sets_and_code_systems(harm):
    _stored(harm, _vs("abuse", {"include": [_is_a("abuse")]}))
    assert codes(harm, "code:in=ValueSet/abuse") == ["abuse", "bruise", "emotional", "fracture", "physical"]
    _stored(harm, _vs("abuse", {"include": [_is_a("physical")]}))  # the ValueSet changes
    assert codes(harm, "code:in=ValueSet/abuse") == ["bruise", "fracture", "physical"]
    changed = dict(HARM_CODESYSTEM, concept=[c for c in HARM_CODESYSTEM["concept"] if c["code"] != "fracture"])
    _stored(harm, changed)  # the CodeSystem changes: fracture is no longer physical abuse
    assert codes(harm, "code:in=ValueSet/abuse") == ["bruise", "physical"]
    assert codes(harm, f"code:below={HARM}|physical") == ["bruise", "physical"]
    assert harm.delete("/fhir/ValueSet/abuse").status_code in (200, 204)
    assert error(harm, "code:in=ValueSet/abuse")["code"] == "not-found"


def test_in_works_in_chains_reverse_chains_and_conditional_create(harm):
    _stored(harm, _vs("abuse", {"include": [_is_a("abuse")]}))
    pid = body(post(harm, {"resourceType": "Patient", "name": [{"family": "Okafor"}]}))["id"]
    post(harm, dict(_obs(HARM, "bruise"), subject={"reference": f"Patient/{pid}"}))
    found = body(harm.get("/fhir/Patient?_has:Observation:subject:code:in=ValueSet/abuse"))
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]
    again = post(harm, dict(_obs(HARM, "fracture"), subject={"reference": f"Patient/{pid}"}),
                 **{"If-None-Exist": f"subject=Patient/{pid}&code:in=ValueSet/abuse"})
    assert again.status_code == 200  # the bruise Observation matched: nothing created
    assert body(harm.get(f"/fhir/Observation?subject=Patient/{pid}"))["total"] == 1


def test_in_errors_are_400_operation_outcomes(harm):
    issue = error(harm, "code:in=https://example.org/fhir/ValueSet/nothing")
    assert issue["code"] == "not-found" and issue["expression"] == ["code:in"]
    assert "ValueSet" in issue["diagnostics"]
    assert error(harm, "code:not-in=ValueSet/nothing")["expression"] == ["code:not-in"]
    _stored(harm, _vs("unknown-system", {"include": [{"system": "https://example.org/absent",
                                                      "filter": [{"property": "concept", "op": "is-a",
                                                                  "value": "x"}]}]}))
    assert "CodeSystem https://example.org/absent" in error(harm, "code:in=ValueSet/unknown-system")["diagnostics"]
    fragment = dict(HARM_CODESYSTEM, id="fragment", url="https://example.org/fragment", content="fragment")
    _stored(harm, fragment)
    _stored(harm, _vs("whole-fragment", {"include": [{"system": "https://example.org/fragment"}]}))
    assert "fragment" in error(harm, "code:in=ValueSet/whole-fragment")["diagnostics"]
    _stored(harm, _vs("bad-op", {"include": [{"system": HARM, "filter": [
        {"property": "concept", "op": "is-a", "value": "no-such-code"}]}]}))
    assert error(harm, "code:in=ValueSet/bad-op")["code"] == "code-invalid"
    _stored(harm, _vs("loop-a", {"include": [{"valueSet": ["https://example.org/fhir/ValueSet/loop-b"]}]}))
    _stored(harm, _vs("loop-b", {"include": [{"valueSet": ["https://example.org/fhir/ValueSet/loop-a"]}]}))
    assert "includes itself" in error(harm, "code:in=ValueSet/loop-a")["diagnostics"]
    _stored(harm, _vs("empty", {"include": [{"system": HARM, "concept": [{"code": "neglect"}]}]}))
    assert codes(harm, "code:in=ValueSet/empty") == ["neglect"]


# -- :below / :above ------------------------------------------------------------------------------

def test_below_and_above_follow_the_hierarchy(harm):
    assert codes(harm, f"code:below={HARM}|abuse") == ["abuse", "bruise", "emotional", "fracture", "physical"]
    assert codes(harm, f"code:below={HARM}|physical") == ["bruise", "fracture", "physical"]
    assert codes(harm, f"code:below={HARM}|neglect") == ["educational-neglect", "neglect"]
    assert codes(harm, f"code:above={HARM}|fracture") == ["abuse", "fracture", "physical"]
    assert codes(harm, f"code:above={HARM}|abuse") == ["abuse"]
    assert codes(harm, f"code:below={HARM}|emotional,{HARM}|neglect") == [
        "educational-neglect", "emotional", "neglect"]


def test_below_and_above_errors(harm):
    assert "system|code" in error(harm, "code:below=physical")["diagnostics"]
    assert "system|code" in error(harm, f"code:above={HARM}|")["diagnostics"]
    assert error(harm, "code:below=https://example.org/absent|x")["code"] == "not-found"
    issue = error(harm, f"code:below={HARM}|no-such-code")
    assert issue["code"] == "code-invalid" and issue["expression"] == ["code:below"]
    assert error(harm, "_id:below=x")["expression"] == ["_id:below"]
    assert error(harm, "date:in=ValueSet/x")["expression"] == ["date:in"]  # not a token


# -- uri :below / :above ----------------------------------------------------------------------------

def test_uri_below_and_above(client):
    for vs_id in ("abuse", "neglect"):
        _stored(client, _vs(vs_id, {"include": [{"system": HARM}]}))
    _stored(client, dict(_vs("elsewhere", {"include": [{"system": HARM}]}), url="https://example.com/ValueSet/x"))

    def found(query: str) -> list[str]:
        res = client.get(f"/fhir/ValueSet?{query}")
        assert res.status_code == 200, res.data
        return sorted(e["resource"]["id"] for e in body(res).get("entry", []))

    assert found("url:below=https://example.org/fhir/ValueSet") == ["abuse", "neglect"]
    assert found("url:below=https://example.org/fhir/ValueSet/ab") == ["abuse"]  # R4: a prefix
    assert found("url:below=https://example.org") == ["abuse", "neglect"]
    assert found("url:above=https://example.org/fhir/ValueSet/abuse/version/2") == ["abuse"]
    assert found("url=https://example.com/ValueSet/x") == ["elsewhere"]
