"""The _filter parameter through HTTP on SQLite and PostgreSQL (search_filter.html): each operator
per parameter type, and/or/not and parentheses, chains and [filters] through references, escapes,
errors with positions, and _filter combined with other parameters, paging, _sort, _include, _total."""
from __future__ import annotations

import pytest

from .test_crud import body, post

NHS = "https://fhir.nhs.uk/Id/nhs-number"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PROFILE = "https://w3id.org/sg-fhir/StructureDefinition/child"


def search(client, path: str, expr: str, *params: tuple[str, str], headers=None):
    return client.get(path, query_string=[("_filter", expr), *params], headers=headers or {})


def found(client, path: str, expr: str, *params: tuple[str, str]) -> list[str]:
    res = search(client, path, expr, *params)
    assert res.status_code == 200, body(res)
    return sorted(e["resource"]["id"] for e in body(res).get("entry", []) if e["search"]["mode"] == "match")


def error(client, path: str, expr: str, **kw) -> str:
    res = search(client, path, expr, **kw)
    assert res.status_code == 400, body(res)
    outcome = body(res)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["_filter"]
    return outcome["issue"][0]["diagnostics"]


def patient(**fields) -> dict:
    return {"resourceType": "Patient", **fields}


def _obs(subject: str, code: str, when: str, kg: float | None = None) -> dict:
    obs = {"resourceType": "Observation", "status": "final", "subject": {"reference": subject},
           "code": {"coding": [{"system": LOINC, "code": code}]}, "effectiveDateTime": when}
    if kg is not None:
        obs["valueQuantity"] = {"value": kg, "unit": "kg", "system": UCUM, "code": "kg"}
    return obs


@pytest.fixture
def data(client):
    """Three children and observations about two of them."""
    ids = {}
    ids["peter"] = body(post(client, patient(
        name=[{"family": "Peterson", "given": ["Peter"]}], gender="male", birthDate="2014-10-10", active=True,
        identifier=[{"system": NHS, "value": "9990000018"}], meta={"profile": [PROFILE]})))["id"]
    ids["emile"] = body(post(client, patient(
        name=[{"family": "Brontë", "given": ["Émile"]}], gender="female", birthDate="2010-05",
        identifier=[{"system": NHS, "value": "9990000026"}])))["id"]
    ids["oneil"] = body(post(client, patient(
        name=[{"family": 'O"Neil', "given": ["Saoirse Ann"]}], birthDate="2016-02-29",
        identifier=[{"system": NHS, "value": "9990000034"}], meta={"profile": [PROFILE + "-v2"]})))["id"]
    ids["w1"] = body(post(client, _obs(f"Patient/{ids['peter']}", "29463-7", "2025-03-01", 20.5)))["id"]
    ids["w2"] = body(post(client, _obs(f"Patient/{ids['peter']}", "29463-7", "2025-03-05T10:30:00Z", 22)))["id"]
    ids["w3"] = body(post(client, _obs(f"Patient/{ids['emile']}", "29463-7", "2025-04", 31)))["id"]
    ids["h1"] = body(post(client, _obs(f"Patient/{ids['emile']}", "8302-2", "2025-03-02")))["id"]
    return ids


def _all(data, *names):
    return sorted(data[n] for n in names)


# -- string (search_filter.html#ops: case-insensitive character sequences) --------------------------

def test_string_operators(client, data):
    assert found(client, "/fhir/Patient", 'family eq "PETERSON"') == _all(data, "peter")
    assert found(client, "/fhir/Patient", "family eq bronte") == _all(data, "emile")  # accents too
    assert found(client, "/fhir/Patient", "family eq peter") == []  # eq is the whole sequence
    assert found(client, "/fhir/Patient", "family ne peterson") == _all(data, "emile", "oneil")
    assert found(client, "/fhir/Patient", 'name co "ETE"') == _all(data, "peter")
    assert found(client, "/fhir/Patient", "given sw sao") == _all(data, "oneil")
    assert found(client, "/fhir/Patient", "family ew son") == _all(data, "peter")
    assert found(client, "/fhir/Patient", "family gt o") == _all(data, "peter", "oneil")
    assert found(client, "/fhir/Patient", "family lt o") == _all(data, "emile")
    assert found(client, "/fhir/Patient", "family ge peterson") == _all(data, "peter")
    assert found(client, "/fhir/Patient", 'family le "o\\"neil"') == _all(data, "emile", "oneil")


def test_quoted_values_escapes_and_spaces(client, data):
    assert found(client, "/fhir/Patient", 'family eq "O\\"Neil"') == _all(data, "oneil")
    assert found(client, "/fhir/Patient", 'given eq "saoirse ann"') == _all(data, "oneil")
    assert found(client, "/fhir/Patient", 'given eq "Sa\\u006Firse Ann"') == _all(data, "oneil")
    assert found(client, "/fhir/Patient", 'name co ")]"') == []  # brackets inside a string are text


# -- token -------------------------------------------------------------------------------------------

def test_token_operators(client, data):
    assert found(client, "/fhir/Observation", f"code eq {LOINC}|29463-7") == _all(data, "w1", "w2", "w3")
    assert found(client, "/fhir/Observation", "code eq loinc|8302-2") == _all(data, "h1")  # predefined alias
    assert found(client, "/fhir/Observation", "code eq |8302-2") == []  # |code: no system
    assert found(client, "/fhir/Observation", "code eq 8302-2") == _all(data, "h1")
    assert found(client, "/fhir/Observation", "code ne 8302-2") == _all(data, "w1", "w2", "w3")
    assert found(client, "/fhir/Patient", "gender eq MALE") == _all(data, "peter")  # case-insensitive
    assert found(client, "/fhir/Patient", f"identifier eq {NHS.upper()}|9990000026") == _all(data, "emile")
    assert found(client, "/fhir/Patient", "active eq true") == _all(data, "peter")
    assert found(client, "/fhir/Patient", f"_id eq {data['emile']} or _id eq {data['oneil']}") == \
        _all(data, "emile", "oneil")
    assert found(client, "/fhir/Patient", f"_id ne {data['emile']}") == _all(data, "peter", "oneil")


def test_present(client, data):
    assert found(client, "/fhir/Patient", "gender pr false") == _all(data, "oneil")
    assert found(client, "/fhir/Patient", "gender pr TRUE") == _all(data, "peter", "emile")
    assert found(client, "/fhir/Observation", "value-quantity pr false") == _all(data, "h1")
    assert "pr" in error(client, "/fhir/Patient", "gender pr maybe")


# -- date, number, quantity -------------------------------------------------------------------------

def test_date_operators(client, data):
    assert found(client, "/fhir/Patient", "birthdate eq 2014-10-10") == _all(data, "peter")
    assert found(client, "/fhir/Patient", "birthdate eq 2010-05") == _all(data, "emile")
    assert found(client, "/fhir/Patient", "birthdate eq 2010-05-01") == []  # a month is not that day
    assert found(client, "/fhir/Patient", "birthdate ne 2014-10-10") == _all(data, "emile", "oneil")
    assert found(client, "/fhir/Patient", "birthdate ge 2014-10-10") == _all(data, "peter", "oneil")
    assert found(client, "/fhir/Patient", "birthdate gt 2014-10-10") == _all(data, "oneil")
    assert found(client, "/fhir/Patient", "birthdate lt 2014") == _all(data, "emile")
    assert found(client, "/fhir/Patient", "birthdate le 2014-10-10") == _all(data, "peter", "emile")
    assert found(client, "/fhir/Patient", "birthdate sa 2014-12-31") == _all(data, "oneil")
    assert found(client, "/fhir/Patient", "birthdate eb 2014-10-10") == _all(data, "emile")
    assert found(client, "/fhir/Patient", "birthdate ap 2014-10-01") == _all(data, "peter")
    # po: the periods overlap; co: the value's period is inside the stored one
    assert found(client, "/fhir/Patient", "birthdate po 2010") == _all(data, "emile")
    assert found(client, "/fhir/Patient", "birthdate co 2010-05-17") == _all(data, "emile")
    assert found(client, "/fhir/Patient", "birthdate co 2010") == []
    assert found(client, "/fhir/Observation", "date eq 2025-03-05T10:30:00Z") == _all(data, "w2")
    assert found(client, "/fhir/Observation", "date eq 2025-03-05T11:30:00+01:00") == _all(data, "w2")
    assert found(client, "/fhir/Observation", "date ge 2025-03-05 and date lt 2025-04") == _all(data, "w2")
    everyone = found(client, "/fhir/Patient", "_lastUpdated ge 2000-01-01")
    assert everyone == _all(data, "peter", "emile", "oneil")
    assert found(client, "/fhir/Patient", "_lastUpdated lt 2000-01-01") == []


def test_number_operators(client, data):
    subject = f"Patient/{data['peter']}"
    risks = {}
    for key, p in (("low", 0.1), ("half", 0.5), ("sure", 0.95)):
        ra = {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": subject},
              "prediction": [{"probabilityDecimal": p}]}
        risks[key] = body(post(client, ra))["id"]
    assert found(client, "/fhir/RiskAssessment", "probability eq 0.5") == [risks["half"]]
    assert found(client, "/fhir/RiskAssessment", "probability eq 0.50") == [risks["half"]]
    assert found(client, "/fhir/RiskAssessment", "probability gt 0.5") == [risks["sure"]]
    assert found(client, "/fhir/RiskAssessment", "probability le 0.5") == sorted([risks["low"], risks["half"]])
    assert found(client, "/fhir/RiskAssessment", "probability ne 0.5") == sorted([risks["low"], risks["sure"]])
    assert found(client, "/fhir/RiskAssessment", "probability ap 0.9") == [risks["sure"]]
    # co: the stored value's implicit range (0.95 covers [0.945, 0.955]) includes the value
    assert found(client, "/fhir/RiskAssessment", "probability co 0.951") == [risks["sure"]]
    assert found(client, "/fhir/RiskAssessment", "probability co 0.96") == []
    assert "number" in error(client, "/fhir/RiskAssessment", "probability eq high")


def test_quantity_operators(client, data):
    assert found(client, "/fhir/Observation", f"value-quantity gt 21|{UCUM}|kg") == _all(data, "w2", "w3")
    assert found(client, "/fhir/Observation", "value-quantity lt 21|ucum|kg") == _all(data, "w1")
    assert found(client, "/fhir/Observation", "value-quantity eq 22||kg") == _all(data, "w2")
    assert found(client, "/fhir/Observation", "value-quantity ge 22") == _all(data, "w2", "w3")
    assert found(client, "/fhir/Observation", f"value-quantity gt 21|{UCUM}|g") == []


# -- reference and uri ---------------------------------------------------------------------------------

def test_reference_re(client, data):
    peter = data["peter"]
    assert found(client, "/fhir/Observation", f"subject re Patient/{peter}") == _all(data, "w1", "w2")
    assert found(client, "/fhir/Observation", f"subject re {peter}") == _all(data, "w1", "w2")
    assert found(client, "/fhir/Observation", f"subject re http://localhost/fhir/Patient/{peter}") == \
        _all(data, "w1", "w2")
    assert found(client, "/fhir/Observation", "patient pr true") == _all(data, "w1", "w2", "w3", "h1")
    message = error(client, "/fhir/Observation", f"subject eq Patient/{peter}")
    assert "'eq'" in message and "position 9" in message and "re" in message


def test_uri_operators(client, data):
    assert found(client, "/fhir/Patient", f"_profile eq {PROFILE}") == _all(data, "peter")
    assert found(client, "/fhir/Patient", f"_profile sw {PROFILE}") == _all(data, "peter", "oneil")
    assert found(client, "/fhir/Patient", "_profile ew child-v2") == _all(data, "oneil")
    assert found(client, "/fhir/Patient", "_profile co sg-fhir") == _all(data, "peter", "oneil")
    # ss: the value subsumes the profile URL (path below it); sb: the value is below the profile URL
    assert found(client, "/fhir/Patient", "_profile ss https://w3id.org/sg-fhir") == _all(data, "peter", "oneil")
    assert found(client, "/fhir/Patient", f"_profile sb {PROFILE}/extra") == _all(data, "peter")
    assert found(client, "/fhir/Patient", "_profile pr false") == _all(data, "emile")


# -- logic -------------------------------------------------------------------------------------------

def test_and_or_not_and_parentheses(client, data):
    assert found(client, "/fhir/Patient", 'given eq "peter" and birthdate ge 2014-10-10') == _all(data, "peter")
    assert found(client, "/fhir/Patient", "gender eq female or family eq peterson") == _all(data, "peter", "emile")
    assert found(client, "/fhir/Patient", "not(gender eq male)") == _all(data, "emile", "oneil")
    assert found(client, "/fhir/Patient", "not (gender pr true) or family sw bron") == _all(data, "emile", "oneil")
    assert found(client, "/fhir/Patient", "not(not(gender eq male))") == _all(data, "peter")
    assert found(client, "/fhir/Patient", "((family eq peterson))") == _all(data, "peter")
    assert found(client, "/fhir/Patient", "(family eq peterson)OR(family eq bronte)") == _all(data, "peter", "emile")


def test_and_or_evaluate_left_to_right_without_precedence(client, data):
    # search_filter.html: "Logical expressions are evaluated left to right, with no precedence"
    left_to_right = "family eq peterson or family eq bronte and gender eq female"  # (A or B) and C
    assert found(client, "/fhir/Patient", left_to_right) == _all(data, "emile")
    grouped = "family eq peterson or (family eq bronte and gender eq female)"
    assert found(client, "/fhir/Patient", grouped) == _all(data, "peter", "emile")
    assert found(client, "/fhir/Patient", "gender eq female and family eq x or family eq peterson") == \
        _all(data, "peter")


# -- chains and [filters] -------------------------------------------------------------------------------

def test_chain_through_a_reference(client, data):
    assert found(client, "/fhir/Observation", 'subject.name co "pet"') == _all(data, "w1", "w2")
    assert found(client, "/fhir/Observation", "patient.birthdate lt 2012 and code eq 29463-7") == _all(data, "w3")
    assert found(client, "/fhir/Observation", "subject.gender pr false") == []
    assert found(client, "/fhir/Observation", "not(subject.family eq peterson)") == _all(data, "w3", "h1")


def test_sub_filter_on_a_reference_applies_to_one_target(client, data):
    # [ ] binds both tests to the same referenced patient
    assert found(client, "/fhir/Observation", "subject[gender eq male and birthdate lt 2012].name pr true") == []
    assert found(client, "/fhir/Observation", "subject[gender eq male or birthdate lt 2012] pr true") == \
        _all(data, "w1", "w2", "w3", "h1")
    assert found(client, "/fhir/Observation", "subject[gender eq female].family sw bro") == _all(data, "w3", "h1")
    assert found(client, "/fhir/Observation", f"subject[gender eq male] re Patient/{data['emile']}") == []
    assert found(client, "/fhir/Observation", f"subject[gender eq female] re Patient/{data['emile']}") == \
        _all(data, "w3", "h1")
    assert found(client, "/fhir/Observation", "subject[gender eq female] pr false") == _all(data, "w1", "w2")
    message = error(client, "/fhir/Patient", "family[given eq x] pr true")
    assert "reference" in message and "position 1" in message


# -- combination with the rest of search -------------------------------------------------------------

def test_filter_combines_with_parameters_sort_paging_include_and_total(client, data):
    expr = "code eq 29463-7 and value-quantity gt 20"
    res = search(client, "/fhir/Observation", expr, ("subject", f"Patient/{data['peter']}"), ("_sort", "-date"),
                 ("_count", "1"), ("_include", "Observation:subject"), ("_total", "accurate"))
    page = body(res)
    assert page["total"] == 2
    matches = [e["resource"]["id"] for e in page["entry"] if e["search"]["mode"] == "match"]
    assert matches == [data["w2"]]
    assert [e["resource"]["id"] for e in page["entry"] if e["search"]["mode"] == "include"] == [data["peter"]]
    following = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert "_filter=" in following
    second = body(client.get(following.replace("http://localhost", "")))
    assert [e["resource"]["id"] for e in second["entry"] if e["search"]["mode"] == "match"] == [data["w1"]]
    repeated = search(client, "/fhir/Patient", "gender eq male", ("_filter", "birthdate lt 2012"))
    assert body(repeated)["total"] == 0  # two _filter parameters are ANDed like any repeated parameter


def test_post_search_and_whole_system(client, data):
    res = client.post("/fhir/Patient/_search", data={"_filter": 'family eq "O\\"Neil"'})
    assert res.status_code == 200 and body(res)["total"] == 1
    expr = f"_id eq {data['peter']} or _id eq {data['w3']}"
    assert found(client, "/fhir/", expr) == _all(data, "peter", "w3")
    assert found(client, "/fhir/", expr, ("_type", "Observation")) == _all(data, "w3")
    assert found(client, "/fhir/", f"_profile sw {PROFILE} and not(_profile ew v2)") == _all(data, "peter")
    compartment = f"/fhir/Patient/{data['peter']}/Observation"
    assert found(client, compartment, "value-quantity gt 21 or date lt 2025-03-02") == _all(data, "w1", "w2")
    counted = body(search(client, "/fhir/Observation", "code eq 29463-7", ("_summary", "count")))
    assert counted["total"] == 3 and "entry" not in counted


# -- errors --------------------------------------------------------------------------------------------

def test_syntax_errors_name_the_position(client, data):
    assert "position 13" in error(client, "/fhir/Patient", "(family eq x")
    assert "position 12" in error(client, "/fhir/Patient", "family eq x)")
    assert "unknown operator 'is' at position 8" in error(client, "/fhir/Patient", "family is x")
    assert "position 11" in error(client, "/fhir/Patient", 'family eq "x')
    assert "position 5" in error(client, "/fhir/Patient", "not family eq x")
    assert "position 13" in error(client, "/fhir/Patient", "family eq x family eq y")
    assert "empty" in error(client, "/fhir/Patient", "   ")


def test_operator_that_does_not_apply_to_the_type(client, data):
    message = error(client, "/fhir/Patient", "family eq x and birthdate sw 2014")
    assert "'sw'" in message and "date" in message and "position 27" in message
    assert "position 8" in error(client, "/fhir/Patient", "gender co ma")
    assert "position 16" in error(client, "/fhir/Observation", "value-quantity co 5")
    assert "position 14" in error(client, "/fhir/Patient", "birthdate eq 2014-13-45")


def test_unknown_parameters_follow_lenient_and_strict_handling(client, data):
    lenient = body(search(client, "/fhir/Patient", "colour eq blue or family eq peterson"))
    outcome = [e["resource"] for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert "colour" in outcome[0]["issue"][0]["diagnostics"]
    assert lenient["total"] == 3  # the whole _filter was ignored, not half of it
    strict = search(client, "/fhir/Patient", "colour eq blue", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and "colour" in body(strict)["issue"][0]["diagnostics"]
    across = search(client, "/fhir/", "family eq x", headers={"Prefer": "handling=strict"})
    assert across.status_code == 400


def test_capability_statement_lists_filter(client):
    statement = body(client.get("/fhir/metadata"))
    rest = statement["rest"][0]
    patient_entry = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert any(p["name"] == "_filter" and p["type"] == "special" for p in patient_entry["searchParam"])
    assert any(p["name"] == "_filter" for p in rest["searchParam"])


# -- terminology: in / ni (ValueSets) and ss / sb (CodeSystem hierarchy) ------------------------------

CONCERN = "https://w3id.org/sg-fhir/CodeSystem/test-concern"


@pytest.fixture
def coded(client):
    """A CodeSystem with a hierarchy (nested concepts and a ``parent`` property) and observations."""
    cs = {"resourceType": "CodeSystem", "url": CONCERN, "status": "active", "content": "complete",
          "concept": [
              {"code": "harm", "concept": [
                  {"code": "physical", "concept": [{"code": "bruising"}]},
                  {"code": "emotional"}]},
              {"code": "neglect"},
              {"code": "online-harm", "property": [{"code": "parent", "valueCode": "harm"}]}]}
    assert post(client, cs).status_code == 201
    out = {}
    for code in ("harm", "bruising", "emotional", "neglect", "online-harm"):
        obs = {"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": CONCERN, "code": code}]}}
        out[code] = body(post(client, obs))["id"]
    out["loinc"] = body(post(client, _obs("Patient/x", "29463-7", "2025-01-01")))["id"]
    return out


def test_subsumption(client, coded):
    assert found(client, "/fhir/Observation", f"code ss {CONCERN}|harm") == \
        _all(coded, "harm", "bruising", "emotional", "online-harm")
    assert found(client, "/fhir/Observation", f"code ss {CONCERN}|physical") == _all(coded, "bruising")
    assert found(client, "/fhir/Observation", f"code sb {CONCERN}|bruising") == _all(coded, "harm", "bruising")
    assert found(client, "/fhir/Observation", f"code sb {CONCERN}|online-harm") == _all(coded, "harm", "online-harm")
    assert found(client, "/fhir/Observation", f"not(code ss {CONCERN}|harm)") == _all(coded, "neglect", "loinc")
    assert "not in CodeSystem" in error(client, "/fhir/Observation", f"code ss {CONCERN}|unheard-of")
    assert "position 9" in error(client, "/fhir/Observation", "code ss loinc|29463-7")  # not held
    assert "system|code" in error(client, "/fhir/Observation", "code sb harm")


def test_in_and_ni_value_sets(client, coded):
    listed = {"resourceType": "ValueSet", "status": "active", "url": "https://w3id.org/sg-fhir/ValueSet/t-listed",
              "compose": {"include": [{"system": CONCERN, "concept": [{"code": "neglect"}, {"code": "EMOTIONAL"}]}]}}
    listed_id = body(post(client, listed))["id"]
    assert found(client, "/fhir/Observation", f"code in ValueSet/{listed_id}") == _all(coded, "neglect", "emotional")
    assert found(client, "/fhir/Observation", f"code in http://localhost/fhir/ValueSet/{listed_id}") == \
        _all(coded, "neglect", "emotional")
    assert found(client, "/fhir/Observation", "code ni https://w3id.org/sg-fhir/ValueSet/t-listed") == \
        _all(coded, "harm", "bruising", "online-harm", "loinc")
    harm = {"resourceType": "ValueSet", "status": "active", "url": "https://w3id.org/sg-fhir/ValueSet/t-harm",
            "version": "2", "compose": {
                "include": [{"system": CONCERN, "filter": [{"property": "concept", "op": "is-a", "value": "harm"}]},
                            {"system": LOINC}],
                "exclude": [{"system": CONCERN, "concept": [{"code": "bruising"}]}]}}
    assert post(client, harm).status_code == 201
    assert found(client, "/fhir/Observation", "code in https://w3id.org/sg-fhir/ValueSet/t-harm|2") == \
        _all(coded, "harm", "emotional", "online-harm", "loinc")
    assert "on this server" in error(client, "/fhir/Observation", "code in https://w3id.org/sg-fhir/ValueSet/t-harm|1")
    expanded = {"resourceType": "ValueSet", "status": "active", "url": "https://w3id.org/sg-fhir/ValueSet/t-exp",
                "expansion": {"timestamp": "2025-01-01T00:00:00Z", "contains": [
                    {"system": CONCERN, "code": "bruising"}, {"system": LOINC, "code": "29463-7"}]}}
    assert post(client, expanded).status_code == 201
    assert found(client, "/fhir/Observation", "code in https://w3id.org/sg-fhir/ValueSet/t-exp") == \
        _all(coded, "bruising", "loinc")
    message = error(client, "/fhir/Observation", "code eq x or code in ValueSet/nowhere")
    assert "on this server" in message and "position 22" in message
