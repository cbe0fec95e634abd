"""``$validate`` (resource-operation-validate.html) through HTTP on SQLite and PostgreSQL, and the
profile differential checks it applies (pure)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import simplejson

from fhir_server import create_app
from fhir_server.conformance import ConformanceSet
from fhir_server.errors import BadRequest
from fhir_server.operations.validate import profile_checker

FHIR_JSON = "application/fhir+json"
PROFILES = Path(__file__).resolve().parents[2] / "profiles"
PROFILE_URL = "https://w3id.org/sg-fhir/StructureDefinition/child-patient"
VS_URL = "https://w3id.org/sg-fhir/ValueSet/marital-subset"
MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"


def body(response):
    return simplejson.loads(response.data, use_decimal=True)


def post(client, url, resource, **headers):
    return client.post(f"/fhir/{url}", data=simplejson.dumps(resource), content_type=FHIR_JSON, headers=headers)


def params(*parameters):
    return {"resourceType": "Parameters", "parameter": list(parameters)}


def diagnostics(outcome) -> list[str]:
    return [i["diagnostics"] for i in outcome["issue"]]


PATIENT = {"resourceType": "Patient", "name": [{"family": "Okafor"}], "gender": "female", "birthDate": "2015-03-09"}


# -- HTTP --------------------------------------------------------------------------------------------

def test_valid_resource_is_all_ok_and_nothing_is_written(client):
    res = post(client, "Patient/$validate", PATIENT)
    assert res.status_code == 200
    assert body(res) == {"resourceType": "OperationOutcome",
                         "issue": [{"severity": "information", "code": "informational", "diagnostics": "All OK"}]}
    assert body(client.get("/fhir/Patient?_total=accurate"))["total"] == 0
    assert body(client.get("/fhir/_history"))["total"] == 0


def test_invalid_resource_answers_200_with_located_errors(client):
    bad = {**PATIENT, "gender": "girl", "contact": [{"gender": "x"}], "birthDate": "09/03/2015"}
    res = post(client, "Patient/$validate", bad)
    assert res.status_code == 200
    issues = body(res)["issue"]
    assert all(i["severity"] == "error" for i in issues)
    assert {e for i in issues for e in i.get("expression", [])} >= {"Patient.birthDate"}
    bindings_only = post(client, "Patient/$validate", {**PATIENT, "gender": "girl", "contact": [{"gender": "x"}]})
    assert [(i["code"], i["expression"]) for i in body(bindings_only)["issue"]] == [
        ("code-invalid", ["Patient.gender"]), ("code-invalid", ["Patient.contact[0].gender"])]
    unknown = post(client, "Patient/$validate", {**PATIENT, "nickname": "Amy"})
    assert body(unknown)["issue"][0]["expression"] == ["Patient.nickname"]


def test_parameters_body_with_mode_create(client):
    res = post(client, "Patient/$validate", params({"name": "resource", "resource": PATIENT},
                                                   {"name": "mode", "valueCode": "create"}))
    assert res.status_code == 200 and diagnostics(body(res)) == ["All OK"]
    wrong_type = post(client, "Patient/$validate", params({"name": "resource", "resource": {
        "resourceType": "Observation", "status": "final", "code": {"text": "x"}}}))
    assert wrong_type.status_code == 200
    assert body(wrong_type)["issue"][0]["severity"] == "error"
    assert body(wrong_type)["issue"][0]["expression"] == ["resourceType"]


def test_instance_level_update_mode_checks_the_id(client):
    ok = post(client, "Patient/p1/$validate?mode=update", {**PATIENT, "id": "p1"})
    assert ok.status_code == 200 and diagnostics(body(ok)) == ["All OK"]
    other = post(client, "Patient/p1/$validate", params({"name": "resource", "resource": {**PATIENT, "id": "p2"}},
                                                        {"name": "mode", "valueCode": "update"}))
    assert other.status_code == 200
    assert body(other)["issue"][0]["severity"] == "error"
    assert body(other)["issue"][0]["expression"] == ["Patient.id"]
    assert client.get("/fhir/Patient/p1").status_code == 404


def test_delete_mode_needs_no_resource(client):
    res = client.get("/fhir/Patient/gone/$validate?mode=delete")
    assert res.status_code == 200
    assert "does not exist" in diagnostics(body(res))[0]
    assert client.put("/fhir/Patient/here", data=json.dumps({**PATIENT, "id": "here"}),
                      content_type=FHIR_JSON).status_code == 201
    res = post(client, "Patient/here/$validate", params({"name": "mode", "valueCode": "delete"}))
    assert res.status_code == 200 and "may be deleted" in diagnostics(body(res))[0]
    assert client.get("/fhir/Patient/here").status_code == 200


@pytest.mark.parametrize("url, sent, expression", [
    ("Patient/$validate?mode=update", PATIENT, "mode"),  # update/delete only at instance level
    ("Patient/$validate?mode=delete", None, "mode"),
    ("Patient/$validate?mode=remove", PATIENT, "mode"),
    ("Patient/$validate", None, "resource"),
    ("Patient/$validate?color=red", PATIENT, "color"),
    ("Patient/$validate", params({"name": "resource", "resource": PATIENT}, {"name": "strict", "valueBoolean": True}),
     "Parameters.parameter[1]"),
    ("Patient/$validate?profile=https://nowhere.example/StructureDefinition/x", PATIENT, "profile"),
])
def test_requests_that_cannot_be_validated_are_4xx(client, url, sent, expression):
    res = client.post(f"/fhir/{url}", data=json.dumps(sent) if sent else None, content_type=FHIR_JSON)
    assert res.status_code == 400, res.data
    assert body(res)["issue"][0]["expression"] == [expression]


def test_unknown_profile_is_refused_not_ignored(client):
    url = "https://nowhere.example/StructureDefinition/x"
    res = post(client, f"Patient/$validate?profile={url}", PATIENT)
    assert res.status_code == 400
    assert body(res)["issue"][0]["diagnostics"].startswith(f"profile validation not supported: {url}")
    assert body(res)["issue"][0]["code"] == "not-supported"


def test_base_profile_is_the_general_validation(client):
    res = post(client, "Patient/$validate", params({"name": "resource", "resource": PATIENT},
                                                   {"name": "profile",
                                                    "valueUri": "http://hl7.org/fhir/StructureDefinition/Patient"}))
    assert res.status_code == 200 and diagnostics(body(res)) == ["All OK"]


def test_parameters_resource_itself_can_be_validated(client):
    sent = params({"name": "x", "valueString": "y"})
    assert diagnostics(body(post(client, "Parameters/$validate", sent))) == ["All OK"]


# -- profiles ------------------------------------------------------------------------------------------

BASE_PATIENT = "http://hl7.org/fhir/StructureDefinition/Patient"


def structure_definition(url: str = PROFILE_URL, base: str = BASE_PATIENT, *elements: dict) -> dict:
    return {"resourceType": "StructureDefinition", "id": url.rsplit("/", 1)[1], "url": url, "name": "ChildPatient",
            "status": "active", "kind": "resource", "abstract": False, "type": "Patient", "baseDefinition": base,
            "derivation": "constraint",
            "differential": {"element": [{"id": "Patient", "path": "Patient", "short": "A child"}, *elements]}}


CHILD_ELEMENTS = (
    {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1, "mustSupport": True},
    {"id": "Patient.name", "path": "Patient.name", "max": "1"},
    {"id": "Patient.name.family", "path": "Patient.name.family", "min": 1, "maxLength": 10},
    {"id": "Patient.identifier.system", "path": "Patient.identifier.system",
     "fixedUri": "https://fhir.nhs.uk/Id/nhs-number"},
    {"id": "Patient.deceased[x]", "path": "Patient.deceased[x]", "type": [{"code": "boolean"}]},
    {"id": "Patient.maritalStatus", "path": "Patient.maritalStatus", "patternCodeableConcept": {"text": "x"}},
    {"id": "Patient.communication.language", "path": "Patient.communication.language",
     "binding": {"strength": "required", "valueSet": VS_URL}},
)
def child_patient(*elements: dict) -> dict:
    return structure_definition(PROFILE_URL, BASE_PATIENT, *elements)


VALUE_SET = {"resourceType": "ValueSet", "id": "marital-subset", "url": VS_URL, "status": "active",
             "compose": {"include": [{"system": "urn:ietf:bcp:47", "concept": [{"code": "en"}, {"code": "cy"}]}]}}


def held(*resources: dict) -> ConformanceSet:
    return ConformanceSet(tuple(resources))


def test_profile_differential_is_checked() -> None:
    check = profile_checker(PROFILE_URL, "Patient", held(child_patient(*CHILD_ELEMENTS), VALUE_SET))
    assert check is not None
    good = {"resourceType": "Patient", "birthDate": "2015", "name": [{"family": "Okafor"}],
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "1"}],
            "deceasedBoolean": False, "maritalStatus": {"text": "x", "coding": []},
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "cy"}]}}]}
    assert check(good) == []
    bad = {"resourceType": "Patient", "name": [{"family": "Okafor-Smithson"}, {"given": ["A"]}],
           "identifier": [{"system": "urn:other", "value": "1"}], "deceasedDateTime": "2020",
           "maritalStatus": {"text": "y"},
           "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr"}]}}]}
    found = {(i.code, i.expression[0]) for i in check(bad)}
    assert found == {("required", "Patient.birthDate"), ("structure", "Patient.name"),
                     ("too-long", "Patient.name[0].family"), ("required", "Patient.name[1].family"),
                     ("value", "Patient.identifier[0].system"), ("structure", "Patient.deceasedDateTime"),
                     ("value", "Patient.maritalStatus"), ("code-invalid", "Patient.communication[0].language")}
    assert all(PROFILE_URL in i.diagnostics for i in check(bad))


def test_profile_on_profile_checks_the_whole_chain() -> None:
    child_url = PROFILE_URL + "-strict"
    strict = structure_definition(child_url, PROFILE_URL, {"id": "Patient.gender", "path": "Patient.gender", "min": 1})
    check = profile_checker(child_url, "Patient", held(strict, child_patient(*CHILD_ELEMENTS[:1])))
    assert check is not None
    assert {i.expression[0] for i in check({"resourceType": "Patient"})} == {"Patient.gender", "Patient.birthDate"}


@pytest.mark.parametrize("element, why", [
    ({"id": "Patient.identifier:nhs", "path": "Patient.identifier", "sliceName": "nhs"}, "slicing"),
    ({"id": "Patient.name", "path": "Patient.name", "constraint": [{"key": "x-1"}]}, "constraint"),
    ({"id": "Patient.managingOrganization", "path": "Patient.managingOrganization",
      "type": [{"code": "Reference", "targetProfile": ["http://x/y"]}]}, "type profiles"),
    ({"id": "Patient.maritalStatus", "path": "Patient.maritalStatus",
      "binding": {"strength": "required", "valueSet": "http://hl7.org/fhir/ValueSet/marital-status"}}, "ValueSet"),
])
def test_profiles_using_what_cannot_be_checked_are_refused(element, why) -> None:
    with pytest.raises(BadRequest) as caught:
        profile_checker(PROFILE_URL, "Patient", held(child_patient(element)))
    assert caught.value.diagnostics.startswith(f"profile validation not supported: {PROFILE_URL}")
    assert why in caught.value.diagnostics


def test_profile_of_another_type_or_not_held_is_refused() -> None:
    with pytest.raises(BadRequest, match="not a constraint on Observation"):
        profile_checker(PROFILE_URL, "Observation", held(structure_definition()))
    with pytest.raises(BadRequest, match="does not hold"):
        profile_checker(PROFILE_URL, "Patient", held())
    assert profile_checker("http://hl7.org/fhir/StructureDefinition/Patient|4.0.1", "Patient", held()) is None


@pytest.fixture
def profiled_client(engine, settings, tmp_path):
    """The app with a profiles directory that also holds a StructureDefinition and a ValueSet."""
    (tmp_path / "r4").symlink_to(PROFILES / "r4")
    shutil.copytree(PROFILES / "operations", tmp_path / "operations")
    (tmp_path / "structure-definitions").mkdir()
    (tmp_path / "structure-definitions" / "child-patient.json").write_text(json.dumps(
        child_patient(*CHILD_ELEMENTS)))
    (tmp_path / "structure-definitions" / "marital-subset.json").write_text(json.dumps(VALUE_SET))
    conn = engine.connect()
    outer = conn.begin()
    application = create_app(settings.with_overrides(profiles_dir=tmp_path), connection=conn)
    yield application.test_client()
    outer.rollback()
    conn.close()


def test_profile_parameter_over_http(profiled_client):
    good = post(profiled_client, f"Patient/$validate?profile={PROFILE_URL}", PATIENT)
    assert good.status_code == 200 and diagnostics(body(good)) == ["All OK"]
    no_birth_date = {k: v for k, v in PATIENT.items() if k != "birthDate"}
    res = post(profiled_client, "Patient/$validate", params({"name": "resource", "resource": no_birth_date},
                                                            {"name": "profile", "valueCanonical": PROFILE_URL}))
    assert res.status_code == 200
    assert [(i["code"], i["expression"]) for i in body(res)["issue"]] == [("required", ["Patient.birthDate"])]
