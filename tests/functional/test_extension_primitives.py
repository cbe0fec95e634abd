"""Primitive extensions on an Extension's own value (``_valueString``, json.html#primitive) through
HTTP on SQLite and PostgreSQL: accepted and read back as sent when valid, refused with an
OperationOutcome naming the element when not (fhir/extension_primitives.py, fhir/validation.py)."""
from __future__ import annotations

from typing import Any

import simplejson

from fhir_server.fhir.extension_primitives import split

FHIR_JSON = "application/fhir+json"
LANG = {"url": "http://hl7.org/fhir/StructureDefinition/language", "valueCode": "nl"}


def _note(**value: Any) -> dict[str, Any]:
    return {"url": "http://example.org/fhir/StructureDefinition/note", **value}


def _post(client, resource: dict[str, Any]):
    return client.post(f"/fhir/{resource['resourceType']}", data=simplejson.dumps(resource), content_type=FHIR_JSON)


def _issues(response) -> list[tuple[str, list[str]]]:
    outcome = simplejson.loads(response.data)
    assert outcome["resourceType"] == "OperationOutcome"
    return [(i["diagnostics"], i.get("expression", [])) for i in outcome["issue"]]


def test_extension_value_with_its_own_extensions_is_accepted_and_read_back(client) -> None:
    nested = _note(valueString="y", _valueString={"id": "inner", "extension": [LANG]})
    patient = {"resourceType": "Patient", "active": True, "extension": [
        _note(valueString="x", _valueString={"extension": [LANG, {"url": "http://example.org/nested",
                                                                    "extension": [nested]}]}),
        _note(_valueDate={"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                         "valueCode": "unknown"}]})],
        "_active": {"extension": [_note(valueBoolean=True, _valueBoolean={"id": "b1"})]}}
    created = _post(client, patient)
    assert created.status_code == 201, created.data
    back = simplejson.loads(client.get(f"/fhir/Patient/{simplejson.loads(created.data)['id']}").data)
    assert {k: v for k, v in back.items() if k not in ("id", "meta")} == patient


def test_a_primitive_extension_is_validated_as_one(client) -> None:
    """Its extensions are Extensions (url required), and it has only id and extension."""
    res = _post(client, {"resourceType": "Patient", "extension": [
        _note(valueString="x", _valueString={"extension": [{"valueCode": "nl"}], "colour": "red"})]})
    assert res.status_code == 422, res.data
    assert _issues(res) == [
        ("Value for the field 'url' is required.", ["Patient.extension[0]._valueString.extension[0].url"]),
        ("Unknown element", ["Patient.extension[0]._valueString.colour"])]


def test_the_value_must_be_a_primitive_of_one_type(client) -> None:
    complex_type = _post(client, {"resourceType": "Patient", "extension": [
        _note(valueCoding={"code": "a"}, _valueCoding={"id": "c"})]})
    assert complex_type.status_code == 422
    assert [e for _d, e in _issues(complex_type)] == [["Patient.extension[0]._valueCoding"]]
    assert "not the extension of a primitive" in _issues(complex_type)[0][0]
    two_types = _post(client, {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                               "modifierExtension": [_note(valueInteger=1, _valueString={"id": "s"})]})
    assert two_types.status_code == 422
    assert _issues(two_types) == [("Extension.value[x] has one type: '_valueString' beside valueInteger",
                                   ["Observation.modifierExtension[0]._valueString"])]


def test_other_problems_are_still_reported_beside_a_valid_primitive_extension(client) -> None:
    res = _post(client, {"resourceType": "Patient", "gender": "female", "birthDate": "not a date",
                         "extension": [_note(valueString="x", _valueString={"id": "ok"})]})
    assert res.status_code == 422
    assert [e for _d, e in _issues(res)] == [["Patient.birthDate"]]
    assert client.get("/fhir/Patient?gender=female").get_json()["total"] == 0


def test_split_leaves_the_resource_alone_and_shares_what_it_does_not_change() -> None:
    name = [{"family": "Okafor"}]
    resource = {"resourceType": "Patient", "name": name,
                "extension": [_note(valueString="x", _valueString={"id": "a"})]}
    stripped, found = split(resource)
    assert stripped == {"resourceType": "Patient", "name": name, "extension": [_note(valueString="x")]}
    assert stripped["name"] is name and "_valueString" in resource["extension"][0]
    assert [(p.path, p.name, p.element, p.values) for p in found] == [
        (("extension", 0), "valueString", {"id": "a"}, ("valueString",))]
    untouched = {"resourceType": "Patient", "_birthDate": {"id": "b"}, "birthDate": "2015"}
    assert split(untouched) == (untouched, []) and split(untouched)[0] is untouched


def test_r4b_only_data_types_are_refused_and_nothing_is_written(client) -> None:
    """R4 has no CodeableReference or RatioRange (datatypes.html), though the R4B models accept them
    as choices of an Extension's value[x]."""
    for value in ({"valueCodeableReference": {"concept": {"text": "x"}}},
                  {"valueRatioRange": {"lowNumerator": {"value": 1}}}):
        res = _post(client, {"resourceType": "Patient", "identifier": [{"system": "urn:r4b-test", "value": "1"}],
                             "extension": [_note(**value)]})
        assert res.status_code == 422, res.data
        key = next(iter(value))
        assert _issues(res) == [(f"{key} is not an R4 element: R4 has no {key[len('value'):]} data type",
                                 [f"Patient.extension[0].{key}"])]
    search = simplejson.loads(client.get("/fhir/Patient?identifier=urn:r4b-test|1").data)
    assert search["total"] == 0
