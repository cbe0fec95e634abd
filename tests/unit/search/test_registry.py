"""search.registry and the generated profiles/r4 inputs (R4 search.html, searchparameter-registry.html)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fhir_server.fhir.resource_types import R4_RESOURCE_TYPES
from fhir_server.search.registry import SearchRegistry, split_expression
from scripts.import_r4_definitions import Expander, short_description

PROFILES = Path(__file__).resolve().parents[3] / "profiles"
R4 = PROFILES / "r4"
RESOURCE_LEVEL = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load(PROFILES)


def test_load_is_cached_per_process() -> None:
    SearchRegistry.clear_cache()
    first = SearchRegistry.load(PROFILES)
    assert SearchRegistry.load(PROFILES) is first


def test_every_type_has_the_resource_level_parameters(registry: SearchRegistry) -> None:
    assert set(registry.resource_types()) >= R4_RESOURCE_TYPES
    assert not {"Resource", "DomainResource"} & set(registry.resource_types())
    for rt in ("Patient", "Observation", "Bundle", "Binary", "Parameters"):
        params = registry.params_for(rt)
        assert set(RESOURCE_LEVEL) <= set(params), rt
        assert params["_id"].resource_type == rt and params["_id"].type == "token"
    assert registry.get("Patient", "_lastUpdated").expression == "Resource.meta.lastUpdated"


def test_parameters_without_expression_are_definitions_only(registry: SearchRegistry) -> None:
    codes = {d["code"] for d in registry.definitions()}
    assert {"_text", "_content", "_query", "_filter"} <= codes
    assert not {"_text", "_content", "_query", "_filter"} & set(registry.params_for("Patient"))


def test_multi_type_expressions_are_split_per_type(registry: SearchRegistry) -> None:
    assert registry.get("Observation", "patient").expression == "Observation.subject.where(resolve() is Patient)"
    assert registry.get("AllergyIntolerance", "patient").expression == "AllergyIntolerance.patient"
    assert registry.get("Observation", "code").expression == "Observation.code"
    assert registry.get("ValueSet", "name").expression == "ValueSet.name"
    assert registry.get("Person", "phone").expression == "Person.telecom.where(system='phone')"
    # a part without a type prefix applies to its (single) base
    assert registry.get("InsurancePlan", "name").expression == "name | alias"
    assert registry.get("Condition", "onset-date").expression == "Condition.onset.as(dateTime) | Condition.onset.as(Period)"


def test_search_param_fields(registry: SearchRegistry) -> None:
    subject = registry.get("Observation", "subject")
    assert subject is not None and subject.type == "reference"
    assert set(subject.targets) == {"Group", "Device", "Patient", "Location"}
    assert subject.url == "http://hl7.org/fhir/SearchParameter/Observation-subject"
    composite = registry.get("Observation", "code-value-quantity")
    assert composite is not None and composite.type == "composite"
    assert composite.components[0] == ("http://hl7.org/fhir/SearchParameter/clinical-code", "code")
    # per-type line of a "Multiple Resources" description
    assert registry.get("Observation", "code").description == "The code of the observation type"
    assert registry.get("Patient", "nope") is None
    assert registry.get("NoSuchType", "_id") is None
    assert registry.params_for("NoSuchType") == {}


def test_params_for_returns_a_copy(registry: SearchRegistry) -> None:
    registry.params_for("Patient").clear()
    assert "name" in registry.params_for("Patient")


def test_definition_by_url(registry: SearchRegistry) -> None:
    sp = registry.definition("http://hl7.org/fhir/SearchParameter/clinical-code")
    assert sp is not None and sp["code"] == "code" and "Observation" in sp["base"]


@pytest.mark.parametrize("expression, bases, expected", [
    ("Patient.name | Person.name", ["Patient", "Person"], {"Patient": "Patient.name", "Person": "Person.name"}),
    ("Resource.id", ["Resource"], {"Resource": "Resource.id"}),
    ("name | alias", ["InsurancePlan"], {"InsurancePlan": "name | alias"}),
    ("(A.value as Quantity) | (A.value as Range) | B.x", ["A", "B"],
     {"A": "(A.value as Quantity) | (A.value as Range)", "B": "B.x"}),
    ("A.t.where(x = 'a|b') | B.c.where((y | z).exists())", ["A", "B"],
     {"A": "A.t.where(x = 'a|b')", "B": "B.c.where((y | z).exists())"}),
    ("A.x | C.y", ["A", "B"], {"A": "A.x"}),  # B has no path: not searchable on B
])
def test_split_expression(expression: str, bases: list[str], expected: dict[str, str]) -> None:
    assert split_expression(expression, bases) == expected


def test_own_definitions_override_by_base_and_code(tmp_path: Path) -> None:
    (tmp_path / "r4").mkdir()
    shutil.copy(R4 / "search-parameters.json", tmp_path / "r4" / "search-parameters.json")
    ours = tmp_path / "search-parameters"
    ours.mkdir()
    (ours / "phone.json").write_text(json.dumps({
        "resourceType": "SearchParameter", "url": "http://example.org/SearchParameter/patient-phone",
        "name": "phone", "status": "active", "description": "Any telecom", "code": "phone",
        "base": ["Patient"], "type": "token", "expression": "Patient.telecom"}))
    (ours / "bundle.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "SearchParameter", "url": "http://example.org/SearchParameter/nhs",
                      "name": "nhs", "status": "active", "description": "NHS number", "code": "nhs-number",
                      "base": ["Patient"], "type": "token",
                      "expression": "Patient.identifier.where(system='https://fhir.nhs.uk/Id/nhs-number')"}}]}))
    (ours / "not-a-search-parameter.json").write_text(json.dumps({"resourceType": "StructureDefinition"}))

    reg = SearchRegistry.load(tmp_path)
    assert reg.get("Patient", "phone").expression == "Patient.telecom"
    assert reg.get("Patient", "phone").url == "http://example.org/SearchParameter/patient-phone"
    assert reg.get("Person", "phone").expression == "Person.telecom.where(system='phone')"  # base kept
    assert reg.get("Patient", "nhs-number").type == "token"
    assert reg.definition("http://example.org/SearchParameter/nhs")["code"] == "nhs-number"
    SearchRegistry.clear_cache()


def test_broken_own_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "r4").mkdir()
    shutil.copy(R4 / "search-parameters.json", tmp_path / "r4" / "search-parameters.json")
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(ValueError, match="broken.json"):
        SearchRegistry.load(tmp_path)


# --- the generated inputs in profiles/r4 ---------------------------------------------------------

def test_search_parameter_bundle_is_the_r4_base_set() -> None:
    bundle = json.loads((R4 / "search-parameters.json").read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert "hl7.fhir.r4.examples@4.0.1" in bundle["meta"]["source"] and "CC0" in bundle["meta"]["source"]
    params = [e["resource"] for e in bundle["entry"]]
    assert len(params) == 1376
    assert all(p["url"].startswith("http://hl7.org/fhir/SearchParameter/") and not p["experimental"] for p in params)
    assert all("text" not in p and "xpath" not in p for p in params)
    ids = {p["id"] for p in params}
    assert {"Resource-id", "Resource-lastUpdated", "Resource-tag", "Resource-profile", "Resource-security",
            "Resource-source", "Resource-content", "DomainResource-text"} <= ids


def test_generated_files_carry_provenance() -> None:
    for name in ("summary-elements.json", "required-bindings.json"):
        source = json.loads((R4 / name).read_text())["_source"]
        assert source["package"] == "hl7.fhir.r4.examples@4.0.1" and source["license"] == "CC0-1.0"
    readme = (R4 / "README.md").read_text()
    assert "CC0" in readme and "hl7.fhir.r4.examples" in readme


def test_patient_compartment() -> None:
    comp = json.loads((R4 / "compartment-patient.json").read_text())
    assert comp["resourceType"] == "CompartmentDefinition" and comp["code"] == "Patient"
    observation = next(r for r in comp["resource"] if r["code"] == "Observation")
    assert observation["param"] == ["subject", "performer"]
    assert "text" not in comp


def test_summary_elements() -> None:
    summary = json.loads((R4 / "summary-elements.json").read_text())
    patient = summary["Patient"]
    assert {"id", "meta", "identifier", "name", "gender", "birthDate", "deceasedBoolean", "deceasedDateTime"} <= set(patient["summary"])
    assert "photo" not in patient["summary"]
    assert set(summary["Observation"]["mandatory"]) == {"status", "code"}
    assert len([k for k in summary if not k.startswith("_")]) == 146


def test_required_bindings() -> None:
    bindings = json.loads((R4 / "required-bindings.json").read_text())
    assert bindings["Patient"]["Patient.gender"] == ["male", "female", "other", "unknown"]
    assert bindings["Patient"]["Patient.contact.gender"] == ["male", "female", "other", "unknown"]
    assert "final" in bindings["Observation"]["Observation.status"]
    assert bindings["ContactPoint"]["ContactPoint.system"] == ["phone", "fax", "email", "pager", "url", "sms", "other"]
    assert bindings["_skipped"]["Attachment.contentType"] == "http://hl7.org/fhir/ValueSet/mimetypes"
    # nested concept hierarchies are flattened (the request-intent code system nests its codes)
    assert {"order", "original-order", "reflex-order", "instance-order"} <= set(bindings["ServiceRequest"]["ServiceRequest.intent"])


def test_expander_handles_hierarchies_filters_imports_and_excludes() -> None:
    cs = {"resourceType": "CodeSystem", "url": "http://x/cs", "content": "complete", "concept": [
        {"code": "a", "concept": [{"code": "a1", "concept": [{"code": "a11"}]}, {"code": "a2"}]}, {"code": "b"}]}
    vs = [
        {"resourceType": "ValueSet", "url": "http://x/all", "compose": {"include": [{"system": "http://x/cs"}]}},
        {"resourceType": "ValueSet", "url": "http://x/below-a", "compose": {"include": [
            {"system": "http://x/cs", "filter": [{"property": "concept", "op": "descendent-of", "value": "a"}]}]}},
        {"resourceType": "ValueSet", "url": "http://x/import", "compose": {
            "include": [{"valueSet": ["http://x/all"]}], "exclude": [{"system": "http://x/cs", "concept": [{"code": "b"}]}]}},
        {"resourceType": "ValueSet", "url": "http://x/external", "compose": {"include": [{"system": "urn:ietf:bcp:13"}]}},
        {"resourceType": "ValueSet", "url": "http://x/regex", "compose": {"include": [
            {"system": "http://x/cs", "filter": [{"property": "code", "op": "regex", "value": "a.*"}]}]}},
    ]
    expander = Expander({"CodeSystem": [cs], "ValueSet": vs})
    assert expander.expand("http://x/all|4.0.1") == ["a", "a1", "a11", "a2", "b"]
    assert expander.expand("http://x/below-a") == ["a1", "a11", "a2"]
    assert expander.expand("http://x/import") == ["a", "a1", "a11", "a2"]
    assert expander.expand("http://x/external") is None
    assert expander.expand("http://x/regex") is None
    assert expander.expand("http://x/missing") is None


def test_short_description() -> None:
    assert short_description("A person's name\r\n\r\nmore") == "A person's name"
    assert short_description("Multiple Resources: \r\n\r\n* [Patient](patient.html): The name\r\n* [Person](person.html): Its name") \
        == "Multiple Resources:\n* Patient: The name\n* Person: Its name"
