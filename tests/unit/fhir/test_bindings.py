"""Required bindings (terminologies.html#required) against the generated R4 table. Pure: no database."""
from __future__ import annotations

import time

import pytest

from fhir_server.errors import Unprocessable
from fhir_server.fhir.bindings import check_required_bindings
from fhir_server.fhir.validation import validate_resource


def _expressions(content: dict) -> list[str]:
    issues = check_required_bindings(content)
    assert all(i.code == "code-invalid" and i.severity == "error" for i in issues)
    return [e for i in issues for e in i.expression]


def test_valid_codes_pass() -> None:
    patient = {"resourceType": "Patient", "gender": "female", "name": [{"use": "official", "family": "X"}],
               "contact": [{"gender": "male", "telecom": [{"system": "phone", "use": "home", "value": "1"}]}],
               "link": [{"type": "seealso", "other": {"reference": "Patient/2"}}]}
    assert check_required_bindings(patient) == []


def test_top_level_code() -> None:
    issues = check_required_bindings({"resourceType": "Patient", "gender": "F"})
    assert [i.expression for i in issues] == [("Patient.gender",)]
    assert "'F'" in issues[0].diagnostics and "female" in issues[0].diagnostics


def test_nested_backbone_in_array_is_indexed() -> None:
    patient = {"resourceType": "Patient", "contact": [{"gender": "male"}, {"gender": "boy"}]}
    assert _expressions(patient) == ["Patient.contact[1].gender"]


def test_datatype_bindings_apply_wherever_the_datatype_occurs() -> None:
    patient = {"resourceType": "Patient", "name": [{"use": "official"}, {"use": "formal"}],
               "contact": [{"address": {"use": "holiday"}}],
               "text": {"status": "typed", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}}
    assert sorted(_expressions(patient)) == ["Patient.contact[0].address.use", "Patient.name[1].use",
                                             "Patient.text.status"]


def test_choice_type_and_nested_datatype() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "valueQuantity": {"value": 1, "comparator": "=="},
           "component": [{"code": {"text": "y"}, "referenceRange": [{"low": {"comparator": "~"}}]}]}
    assert sorted(_expressions(obs)) == ["Observation.component[0].referenceRange[0].low.comparator",
                                         "Observation.valueQuantity.comparator"]


def test_repeating_code_checks_each_value() -> None:
    timing = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
              "subject": {"reference": "Patient/1"}, "medicationCodeableConcept": {"text": "x"},
              "dosageInstruction": [{"timing": {"repeat": {"dayOfWeek": ["mon", "monday", "fri"]}}}]}
    assert _expressions(timing) == ["MedicationRequest.dosageInstruction[0].timing.repeat.dayOfWeek[1]"]


def test_content_reference_uses_the_definition_path() -> None:
    """Questionnaire.item.item is a contentReference to Questionnaire.item: its bindings apply."""
    q = {"resourceType": "Questionnaire", "status": "active",
         "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "freetext"}]}]}
    assert _expressions(q) == ["Questionnaire.item[0].item[0].type"]


def test_extension_values_are_checked() -> None:
    patient = {"resourceType": "Patient",
               "extension": [{"url": "http://example.org/x", "valueContactPoint": {"system": "pigeon"}}]}
    assert _expressions(patient) == ["Patient.extension[0].valueContactPoint.system"]


def test_contained_and_inline_resources() -> None:
    patient = {"resourceType": "Patient", "contained": [{"resourceType": "Patient", "gender": "x"}]}
    assert _expressions(patient) == ["Patient.contained[0].gender"]
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Observation", "status": "done", "code": {"text": "x"}}}]}
    assert _expressions(bundle) == ["Bundle.entry[0].resource.status"]
    params = {"resourceType": "Parameters",
              "parameter": [{"name": "p", "part": [{"name": "q", "resource": {"resourceType": "Patient",
                                                                              "gender": "?"}}]}]}
    assert _expressions(params) == ["Parameters.parameter[0].part[0].resource.gender"]


def test_primitive_extensions_and_wrong_shapes_are_left_to_structure_validation() -> None:
    patient = {"resourceType": "Patient", "_gender": {"extension": []}, "name": "not-a-list-of-objects"}
    assert check_required_bindings(patient) == []
    assert check_required_bindings({"resourceType": "NoSuchType", "gender": "x"}) == []


def test_codes_are_case_sensitive() -> None:
    assert _expressions({"resourceType": "Patient", "gender": "Male"}) == ["Patient.gender"]


def test_validate_resource_refuses_with_422_issues() -> None:
    with pytest.raises(Unprocessable) as caught:
        validate_resource({"resourceType": "Patient", "gender": "x", "contact": [{"gender": "y"}]})
    assert [i.expression for i in caught.value.issues] == [("Patient.gender",), ("Patient.contact[0].gender",)]


def test_fast_enough_for_every_write() -> None:
    patient = {"resourceType": "Patient", "gender": "female",
               "name": [{"use": "official", "family": "F", "given": ["A", "B"]}] * 5,
               "telecom": [{"system": "phone", "use": "home", "value": "1"}] * 5,
               "address": [{"use": "home", "line": ["1 Road"], "city": "Town"}] * 3,
               "contact": [{"gender": "male", "name": {"use": "usual", "family": "G"}}] * 3}
    check_required_bindings(patient)  # compile once
    start = time.perf_counter()
    for _ in range(1000):
        assert check_required_bindings(patient) == []
    assert time.perf_counter() - start < 1.0  # ≈ 0.1 ms each; generous for slow CI machines
