"""search.indexer, search.extract and search.normalize: index rows per R4 search.html, no database."""
from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import simplejson
from hypothesis import HealthCheck, given, settings, strategies as st

from fhir_server.search import extract
from fhir_server.search.extract import compile_expression, is_compiled, reference_type, root_keys
from fhir_server.search.indexer import ROW_COLUMNS, Indexer, parse_reference
from fhir_server.search.normalize import date_range, normalize_string, number_range
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.tables import INDEX_TABLES

PROFILES = Path(__file__).resolve().parents[3] / "profiles"


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load(PROFILES)


@pytest.fixture(scope="module")
def indexer(registry: SearchRegistry) -> Indexer:
    return Indexer(registry)


def rows_for(indexer: Indexer, resource: dict[str, Any], table: str, param: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "param"} for r in indexer.rows(resource)[table] if r["param"] == param]


def test_row_columns_match_the_index_tables() -> None:
    assert set(ROW_COLUMNS) == set(INDEX_TABLES)
    for key, table in INDEX_TABLES.items():
        value_columns = tuple(c.name for c in table.columns if c.name not in ("resource_pk", "res_type"))
        assert ROW_COLUMNS[key] == value_columns, key


# --- normalize -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, low, high", [
    ("2020", datetime(2020, 1, 1), datetime(2020, 12, 31, 23, 59, 59, 999999)),
    ("2020-02", datetime(2020, 2, 1), datetime(2020, 2, 29, 23, 59, 59, 999999)),
    ("2020-12", datetime(2020, 12, 1), datetime(2020, 12, 31, 23, 59, 59, 999999)),
    ("2020-02-03", datetime(2020, 2, 3), datetime(2020, 2, 3, 23, 59, 59, 999999)),
    ("2020-02-03T10:00:00Z", datetime(2020, 2, 3, 10), datetime(2020, 2, 3, 10, 0, 0, 999999)),
    ("2020-02-03T10:00:00+01:00", datetime(2020, 2, 3, 9), datetime(2020, 2, 3, 9, 0, 0, 999999)),
    ("2020-02-03T00:30:00-05:30", datetime(2020, 2, 3, 6), datetime(2020, 2, 3, 6, 0, 0, 999999)),
    ("2020-02-03T10:00:00.5Z", datetime(2020, 2, 3, 10, 0, 0, 500000), datetime(2020, 2, 3, 10, 0, 0, 599999)),
    ("2020-02-03T10:00:00.123456789Z", datetime(2020, 2, 3, 10, 0, 0, 123456), datetime(2020, 2, 3, 10, 0, 0, 123456)),
    ("2020-02-03T10:00Z", datetime(2020, 2, 3, 10), datetime(2020, 2, 3, 10, 0, 59, 999999)),  # search values
    ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999), datetime(2016, 12, 31, 23, 59, 59, 999999)),
    ("9999-12-31T23:59:59-05:00", datetime.max, datetime.max),
    ("0001-01-01T00:00:00+05:00", datetime.min, datetime.min),
])
def test_date_range(value: str, low: datetime, high: datetime) -> None:
    assert date_range(value) == (low, high)


@pytest.mark.parametrize("value", ["", "20", "2020-1", "2020-13", "2020-02-30", "2020-02-03T25:00:00Z",
                                   "yesterday", "2020-02-03 10:00", "0000"])
def test_date_range_rejects_non_dates(value: str) -> None:
    with pytest.raises(ValueError):
        date_range(value)


def test_number_range_follows_the_written_precision() -> None:
    assert number_range(Decimal("100")) == (Decimal("99.5"), Decimal("100.5"))
    assert number_range(Decimal("100.00")) == (Decimal("99.995"), Decimal("100.005"))
    assert number_range(Decimal("1e2")) == (Decimal("50"), Decimal("150"))
    assert number_range(Decimal("0.1")) == (Decimal("0.05"), Decimal("0.15"))


def test_normalize_string() -> None:
    assert normalize_string("Çağlar MÜLLER-Łódź Zoë") == "caglar muller-łodz zoe"
    assert normalize_string("ﬁne") == "fine"  # NFKD compatibility decomposition


# --- extract: the compiled FHIRPath subset ------------------------------------------------------------

def test_every_r4_base_expression_takes_the_compiled_path(registry: SearchRegistry) -> None:
    slow = [(rt, code, p.expression) for rt in registry.resource_types()
            for code, p in registry.params_for(rt).items()
            if p.type not in ("composite", "special") and not is_compiled(rt, p.expression)]
    assert slow == []


def test_choice_elements_and_as() -> None:
    obs = {"resourceType": "Observation", "effectivePeriod": {"start": "2020"}, "valueQuantity": {"value": 1},
           "component": [{"valueCodeableConcept": {"text": "x"}}, {"valueQuantity": {"value": 2}}]}
    assert compile_expression("Observation", "Observation.effective")(obs) == [("Period", {"start": "2020"})]
    assert compile_expression("Observation", "(Observation.value as Quantity)")(obs) == [("Quantity", {"value": 1})]
    assert compile_expression("Observation", "Observation.value.as(CodeableConcept)")(obs) == []
    assert compile_expression("Observation", "Observation.component.value.ofType(Quantity)")(obs) == [("Quantity", {"value": 2})]
    assert compile_expression("Observation", "(Observation.component.value as CodeableConcept).text")(obs) == [("string", "x")]
    cond = {"resourceType": "Condition", "onsetAge": {"value": 3}, "abatementString": "gone"}
    assert compile_expression("Condition", "Condition.onset.as(Age) | Condition.onset.as(Range)")(cond) == [("Age", {"value": 3})]
    assert compile_expression("Condition", "Condition.abatement.as(string)")(cond) == [("string", "gone")]
    assert compile_expression("Condition", "Condition.onset as Quantity")(cond) == [("Age", {"value": 3})]  # Age is a Quantity


def test_where_resolve_is_filters_by_target_type() -> None:
    fn = compile_expression("Observation", "Observation.subject.where(resolve() is Patient)")
    assert fn({"resourceType": "Observation", "subject": {"reference": "Group/1"}}) == []
    patient = {"reference": "http://other.org/fhir/Patient/7/_history/2"}
    assert fn({"resourceType": "Observation", "subject": patient}) == [("Reference", patient)]
    typed = {"type": "Patient", "identifier": {"value": "x"}}
    assert fn({"resourceType": "Observation", "subject": typed}) == [("Reference", typed)]
    assert reference_type({"reference": "#contained"}) is None
    assert reference_type({"reference": "urn:uuid:1234"}) is None


def test_where_equality_extension_exists_and_index() -> None:
    patient = {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
               "extension": [{"url": "http://x/a", "valueString": "A"}, {"url": "http://x/b", "valueCode": "B"}]}
    assert compile_expression("Patient", "Patient.telecom.where(system='email')")(patient) == \
        [("ContactPoint", {"system": "email", "value": "a@b"})]
    assert compile_expression("Patient", "Patient.extension('http://x/b').value")(patient) == [("code", "B")]
    assert compile_expression("Patient", "Patient.telecom.exists()")(patient) == [("boolean", True)]
    assert compile_expression("Patient", "Patient.photo.exists()")(patient) == [("boolean", False)]
    assert compile_expression("Patient", "Patient.telecom[1].value")(patient) == [("string", "a@b")]
    assert compile_expression("Patient", "Patient.telecom.first().system")(patient) == [("code", "phone")]
    bundle = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Composition", "id": "c"}}, {}]}
    assert compile_expression("Bundle", "Bundle.entry[0].resource")(bundle) == \
        [("Resource", {"resourceType": "Composition", "id": "c"})]


def test_deceased_boolean_logic() -> None:
    fn = compile_expression("Patient", "Patient.deceased.exists() and Patient.deceased != false")
    assert fn({"resourceType": "Patient"}) == [("boolean", False)]
    assert fn({"resourceType": "Patient", "deceasedBoolean": False}) == [("boolean", False)]
    assert fn({"resourceType": "Patient", "deceasedBoolean": True}) == [("boolean", True)]
    assert fn({"resourceType": "Patient", "deceasedDateTime": "2020"}) == [("boolean", True)]


def test_root_type_filter_and_resource_level_paths() -> None:
    assert compile_expression("Patient", "Resource.meta.tag")({"resourceType": "Patient", "meta": {"tag": [{"code": "t"}]}}) \
        == [("Coding", {"code": "t"})]
    assert compile_expression("Patient", "Observation.code")({"resourceType": "Patient", "code": {}}) == []
    assert root_keys("Observation", "Observation.effective") == {"effectiveDateTime", "effectivePeriod",
                                                                 "effectiveTiming", "effectiveInstant"}
    assert root_keys("Observation", "(Observation.value as Quantity)") == {"valueQuantity"}
    assert root_keys("Patient", "Patient.deceased.exists() and Patient.deceased != false") is None


def test_unsupported_expressions_fall_back_to_fhirpathpy() -> None:
    expression = "Patient.name.where(given.count() > 1).family"
    assert not is_compiled("Patient", expression)
    fn = compile_expression("Patient", expression)
    patient = {"resourceType": "Patient", "name": [{"family": "A", "given": ["x", "y"]}, {"family": "B", "given": ["z"]}],
               "multipleBirthInteger": 2, "extension": [{"url": "u", "valueDecimal": Decimal("1.50")}]}
    assert fn(patient) == [(None, "A")]
    assert compile_expression("Patient", "Patient.extension.value.where($this > 1)")(patient) == [(None, Decimal("1.50"))]


def test_an_expression_nothing_can_compile_extracts_nothing(caplog: pytest.LogCaptureFixture) -> None:
    fn = compile_expression("Patient", "Patient.@@@")
    assert fn({"resourceType": "Patient", "name": [{"family": "A"}]}) == []
    assert "cannot be compiled" in caplog.text


def test_parser_rejects_what_it_does_not_know() -> None:
    for expression in ("Patient.name.select(family)", "Patient.a + 1", "Patient.a[x]", "Patient.a.resolve()"):
        with pytest.raises(extract.Unsupported):
            extract.compile_typed("Patient", expression)


# --- token ------------------------------------------------------------------------------------------

def test_token_codeable_concept_coding_and_text(indexer: Indexer) -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {
        "coding": [{"system": "http://loinc.org", "code": "15074-8", "display": "Glucose"},
                   {"system": "http://loinc.org", "code": "15074-8", "display": "Glucose"},  # duplicate: one row
                   {"system": "http://snomed.info/sct", "code": "1"}],
        "text": "Blood sugar"}}
    assert rows_for(indexer, obs, "token", "code") == [
        {"system": "http://loinc.org", "code": "15074-8", "text": "Glucose", "type_system": None, "type_code": None},
        # a coding without display carries CodeableConcept.text (so :text finds it once)
        {"system": "http://snomed.info/sct", "code": "1", "text": "Blood sugar", "type_system": None, "type_code": None},
    ]
    labelled = {"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "1", "display": "A"},
                                                                   {"display": "B"}], "text": "C"}}
    assert [(r["code"], r["text"]) for r in rows_for(indexer, labelled, "token", "code")] == [("1", "A"), (None, "B"), (None, "C")]
    assert rows_for(indexer, obs, "token", "status") == [
        {"system": None, "code": "final", "text": None, "type_system": None, "type_code": None}]


def test_token_identifier_contact_point_and_boolean(indexer: Indexer) -> None:
    patient = {"resourceType": "Patient", "id": "p1", "active": False, "gender": "female",
               "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919",
                               "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
                                        "text": "NHS number"}},
                              {"value": "A-1"}],
               "telecom": [{"system": "phone", "value": "0123", "use": "home"}, {"system": "email", "value": "a@b.org"}]}
    assert rows_for(indexer, patient, "token", "identifier") == [
        {"system": "https://fhir.nhs.uk/Id/nhs-number", "code": "9434765919", "text": "NHS number",
         "type_system": "http://terminology.hl7.org/CodeSystem/v2-0203", "type_code": "MR"},
        {"system": None, "code": "A-1", "text": None, "type_system": None, "type_code": None}]
    # search.html#token: a ContactPoint's "system" is its use
    assert rows_for(indexer, patient, "token", "phone") == [
        {"system": "home", "code": "0123", "text": None, "type_system": None, "type_code": None}]
    assert [r["code"] for r in rows_for(indexer, patient, "token", "telecom")] == ["0123", "a@b.org"]
    assert [r["code"] for r in rows_for(indexer, patient, "token", "active")] == ["false"]
    assert [r["code"] for r in rows_for(indexer, patient, "token", "deceased")] == ["false"]
    assert [r["code"] for r in rows_for(indexer, patient, "token", "_id")] == ["p1"]


def test_token_values_are_cut_to_the_column(indexer: Indexer) -> None:
    obs = {"resourceType": "Observation", "code": {"coding": [{"system": "s" * 300, "code": "c" * 300, "display": "d" * 300}]}}
    row = rows_for(indexer, obs, "token", "code")[0]
    assert (len(row["system"]), len(row["code"]), len(row["text"])) == (255, 255, 255)


# --- string -----------------------------------------------------------------------------------------------

def test_string_human_name_and_address(indexer: Indexer) -> None:
    patient = {"resourceType": "Patient",
               "name": [{"family": "Müller", "given": ["Zoë", "Ann"], "prefix": ["Dr"], "text": "Dr Zoë Ann Müller"}],
               "address": [{"line": ["1 High St", "Flat 2"], "city": "Leeds", "postalCode": "LS1 1AA", "country": "UK"}]}
    assert [(r["value_norm"], r["value_exact"]) for r in rows_for(indexer, patient, "string", "name")] == [
        ("muller", "Müller"), ("zoe", "Zoë"), ("ann", "Ann"), ("dr", "Dr"), ("dr zoe ann muller", "Dr Zoë Ann Müller")]
    assert [r["value_exact"] for r in rows_for(indexer, patient, "string", "family")] == ["Müller"]
    assert [r["value_exact"] for r in rows_for(indexer, patient, "string", "address")] == [
        "1 High St", "Flat 2", "Leeds", "LS1 1AA", "UK"]
    assert [r["value_norm"] for r in rows_for(indexer, patient, "string", "address-postalcode")] == ["ls1 1aa"]


def test_string_value_norm_is_truncated_but_exact_is_not(indexer: Indexer) -> None:
    org = {"resourceType": "Organization", "name": "É" * 300}
    row = rows_for(indexer, org, "string", "name")[0]
    assert row["value_norm"] == "e" * 255 and row["value_exact"] == "É" * 300


# --- date ---------------------------------------------------------------------------------------------------

def test_date_values_periods_and_timing(indexer: Indexer) -> None:
    patient = {"resourceType": "Patient", "birthDate": "1974-12-25"}
    assert rows_for(indexer, patient, "date", "birthdate") == [
        {"low": datetime(1974, 12, 25), "high": datetime(1974, 12, 25, 23, 59, 59, 999999)}]
    obs = {"resourceType": "Observation", "effectivePeriod": {"start": "2020-01-01T00:00:00+01:00"}}
    assert rows_for(indexer, obs, "date", "date") == [{"low": datetime(2019, 12, 31, 23), "high": None}]
    obs = {"resourceType": "Observation", "effectiveTiming": {
        "event": ["2020-03-01", "2020-01-15T10:00:00Z"], "repeat": {"boundsPeriod": {"start": "2020-01-10", "end": "2020-02"}}}}
    assert rows_for(indexer, obs, "date", "date") == [
        {"low": datetime(2020, 1, 10), "high": datetime(2020, 3, 1, 23, 59, 59, 999999)}]
    obs = {"resourceType": "Observation", "effectiveDateTime": "not a date", "issued": "2020-05-05T05:05:05.5Z"}
    assert rows_for(indexer, obs, "date", "date") == []
    meta = {"resourceType": "Observation", "meta": {"lastUpdated": "2024-05-01T10:11:12.123+00:00"}}
    assert rows_for(indexer, meta, "date", "_lastUpdated") == [
        {"low": datetime(2024, 5, 1, 10, 11, 12, 123000), "high": datetime(2024, 5, 1, 10, 11, 12, 123999)}]


# --- reference ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ref, expected", [
    ("Patient/123", ("Patient", "123", None, None)),
    ("Patient/123/_history/2", ("Patient", "123", None, "2")),
    ("http://other.org/fhir/Patient/123", ("Patient", "123", "http://other.org/fhir/Patient/123", None)),
    ("https://x.org/fhir/Patient/1/_history/9", ("Patient", "1", "https://x.org/fhir/Patient/1/_history/9", "9")),
    ("http://x.org/people/NotAType/1", (None, None, "http://x.org/people/NotAType/1", None)),
    ("urn:uuid:8f0b0e2c-8cdb-4b4e-9c36-0c5f6f6d0e5d", (None, None, "urn:uuid:8f0b0e2c-8cdb-4b4e-9c36-0c5f6f6d0e5d", None)),
])
def test_parse_reference(ref: str, expected: tuple[Any, ...]) -> None:
    row = parse_reference("subject", ref)
    assert row is not None
    assert (row["target_type"], row["target_id"], row["target_url"], row["target_version"]) == expected
    assert parse_reference("subject", "#contained") is None


def test_reference_rows_and_logical_identifier(indexer: Indexer) -> None:
    obs = {"resourceType": "Observation",
           "subject": {"reference": "Patient/p1", "display": "Zoë"},
           "performer": [{"reference": "#c1"}, {"identifier": {"system": "https://fhir.nhs.uk/Id/ods", "value": "X1"}}],
           "basedOn": [{"reference": "http://other.org/fhir/ServiceRequest/s1"}]}
    rows = indexer.rows(obs)
    refs = [(r["param"], r["target_type"], r["target_id"], r["target_url"]) for r in rows["reference"]]
    assert ("subject", "Patient", "p1", None) in refs and ("patient", "Patient", "p1", None) in refs
    assert ("based-on", "ServiceRequest", "s1", "http://other.org/fhir/ServiceRequest/s1") in refs
    assert not [r for r in refs if r[0] == "performer"]  # contained and logical: no reference row
    assert [(r["system"], r["code"]) for r in rows["token"] if r["param"] == "performer:identifier"] == [
        ("https://fhir.nhs.uk/Id/ods", "X1")]


def test_reference_to_group_is_not_a_patient(indexer: Indexer) -> None:
    obs = {"resourceType": "Observation", "subject": {"reference": "Group/g1"}}
    params = {r["param"] for r in indexer.rows(obs)["reference"]}
    assert params == {"subject"}


def test_canonical_references(indexer: Indexer) -> None:
    qr = {"resourceType": "QuestionnaireResponse", "questionnaire": "http://example.org/Questionnaire/q1|2.0"}
    assert rows_for(indexer, qr, "reference", "questionnaire") == [
        {"target_type": None, "target_id": None, "target_url": "http://example.org/Questionnaire/q1", "target_version": "2.0"}]
    lib = {"resourceType": "Library", "relatedArtifact": [{"type": "depends-on", "resource": "Library/core"}]}
    assert rows_for(indexer, lib, "reference", "depends-on") == [
        {"target_type": "Library", "target_id": "core", "target_url": "Library/core", "target_version": None}]
    assert rows_for(indexer, lib, "reference", "derived-from") == []


def test_bundle_composition_only_for_a_composition(indexer: Indexer) -> None:
    document = {"resourceType": "Bundle", "type": "document", "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}}]}
    assert rows_for(indexer, document, "reference", "composition") == [
        {"target_type": "Composition", "target_id": "c1", "target_url": None, "target_version": None}]
    collection = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "id": "p"}}]}
    assert rows_for(indexer, collection, "reference", "composition") == []


# --- quantity / number / uri --------------------------------------------------------------------------------------

def test_quantity_precision_comparator_and_units(indexer: Indexer) -> None:
    obs = {"resourceType": "Observation", "valueQuantity": {"value": Decimal("5.40"), "unit": "mmol/L",
                                                            "system": "http://unitsofmeasure.org", "code": "mmol/L"}}
    assert rows_for(indexer, obs, "quantity", "value-quantity") == [
        {"low": 5.395, "value": 5.4, "high": 5.405, "system": "http://unitsofmeasure.org", "code": "mmol/L", "unit": "mmol/L"}]
    obs = {"resourceType": "Observation", "valueQuantity": {"value": 100, "comparator": "<"}}
    assert rows_for(indexer, obs, "quantity", "value-quantity")[0]["low"] is None
    assert rows_for(indexer, obs, "quantity", "value-quantity")[0]["high"] == 100.5
    cond = {"resourceType": "Condition", "onsetRange": {"low": {"value": 2, "unit": "a"}, "high": {"value": Decimal("4.5")}}}
    assert rows_for(indexer, cond, "quantity", "onset-age") == [
        {"low": 1.5, "value": None, "high": 4.55, "system": None, "code": None, "unit": "a"}]


def test_a_huge_decimal_is_indexed_but_its_bounds_are_not_remembered(indexer: Indexer) -> None:
    """The bounds cache is keyed by the number's text and counts entries, not bytes: a hostile
    resource's huge decimals (here 4,000 digits each) are indexed as any number is, but never kept,
    while a short number still is."""
    from fhir_server.search import indexer as module
    huge = [Decimal("1." + str(i) * 4000) for i in range(1, 10)]
    obs = {"resourceType": "Observation", "component": [
        {"code": {"text": "c"}, "valueQuantity": {"value": v}} for v in huge]}
    kept = set(module._BOUNDS)
    rows = rows_for(indexer, obs, "quantity", "component-value-quantity")
    assert sorted(r["value"] for r in rows) == sorted(float(v) for v in huge)
    assert all(r["low"] <= r["value"] <= r["high"] for r in rows)  # (half a unit of the 4,000th digit: floats)
    assert not any(len(k) > module._BOUNDS_KEY_LONGEST for k in module._BOUNDS)
    assert set(module._BOUNDS) <= kept  # nothing new: the huge ones were computed, not kept
    assert module._bounds(huge[0]) == module._compute_bounds(huge[0])
    short = Decimal("1234.5678")
    assert module._bounds(short) == module._compute_bounds(short) == (1234.56775, 1234.5678, 1234.56785)
    assert str(short) in module._BOUNDS
    edge = Decimal("1." + "5" * (module._BOUNDS_KEY_LONGEST - 2))  # exactly the longest kept
    module._bounds(edge)
    assert str(edge) in module._BOUNDS and str(Decimal(str(edge) + "5")) not in module._BOUNDS


def test_money_and_number(indexer: Indexer) -> None:
    invoice = {"resourceType": "Invoice", "totalNet": {"value": Decimal("40.00"), "currency": "GBP"}}
    assert rows_for(indexer, invoice, "quantity", "totalnet") == [
        {"low": 39.995, "value": 40.0, "high": 40.005, "system": "urn:iso:std:iso:4217", "code": "GBP", "unit": None}]
    risk = {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": Decimal("0.02")},
                                                             {"probabilityRange": {"low": {"value": 1}, "high": {"value": 3}}}]}
    assert rows_for(indexer, risk, "number", "probability") == [
        {"low": 0.015, "value": 0.02, "high": 0.025}, {"low": 0.5, "value": None, "high": 3.5}]
    float_from_jsonb = {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]}
    assert rows_for(indexer, float_from_jsonb, "number", "probability") == [{"low": 0.245, "value": 0.25, "high": 0.255}]


def test_uri_with_version(indexer: Indexer) -> None:
    patient = {"resourceType": "Patient", "meta": {"profile": ["http://example.org/StructureDefinition/child|1.0"],
                                                   "source": "http://agency.example.org"}}
    assert [r["value"] for r in rows_for(indexer, patient, "uri", "_profile")] == [
        "http://example.org/StructureDefinition/child|1.0", "http://example.org/StructureDefinition/child"]
    assert [r["value"] for r in rows_for(indexer, patient, "uri", "_source")] == ["http://agency.example.org"]


def test_rows_have_every_column_of_their_table(indexer: Indexer) -> None:
    obs = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2020", "valueQuantity": {"value": 1},
           "meta": {"profile": ["http://p"]}}
    rows = indexer.rows(obs)
    assert set(rows) == set(ROW_COLUMNS)
    for key, table_rows in rows.items():
        for row in table_rows:
            assert tuple(row) == ROW_COLUMNS[key]


def test_unknown_or_missing_resource_type(indexer: Indexer) -> None:
    assert all(v == [] for v in indexer.rows({"resourceType": "NotAType", "id": "x"}).values())
    assert all(v == [] for v in indexer.rows({"id": "x"}).values())


# --- robustness ------------------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.decimals(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["value", "code", "system", "coding", "reference", "start", "end", "low", "high", "text",
                         "family", "given", "line", "event", "repeat", "identifier", "type", "url", "display"]),
        children, max_size=4),
    max_leaves=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.dictionaries(st.sampled_from(
    ["id", "meta", "status", "code", "subject", "effectiveDateTime", "effectivePeriod", "effectiveTiming",
     "valueQuantity", "valueRange", "component", "identifier", "performer", "name", "telecom", "address",
     "birthDate", "deceasedBoolean", "deceasedDateTime", "extension", "category", "basedOn"]), _json, max_size=8),
       resource_type=st.sampled_from(["Observation", "Patient"]))
def test_never_raises_on_malformed_content(indexer: Indexer, fields: dict[str, Any], resource_type: str) -> None:
    warnings = _Collect()
    logger = logging.getLogger("fhir_server.search")
    logger.addHandler(warnings)
    try:
        rows = indexer.rows({"resourceType": resource_type, **fields})
    finally:
        logger.removeHandler(warnings)
    assert set(rows) == set(ROW_COLUMNS)
    for key, table_rows in rows.items():
        for row in table_rows:
            assert tuple(row) == ROW_COLUMNS[key]
    # the safety net in Indexer.rows is not what kept it from raising
    assert warnings.messages == []


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# The package's definitional resources; everything else in it is an example instance.
DEFINITIONS = ("SearchParameter-", "StructureDefinition-", "ValueSet-", "CodeSystem-", "ConceptMap-",
               "OperationDefinition-", "CompartmentDefinition-", "NamingSystem-", "ImplementationGuide-")


def _package_resources(examples_only: bool) -> list[tuple[str, dict[str, Any]]]:
    from scripts.fetch_r4_package import PackageError, ensure_package

    try:
        package = ensure_package()
    except PackageError as exc:
        pytest.skip(f"R4 examples package unavailable: {exc}")
    out = []
    for path in sorted(package.glob("*.json")):
        if examples_only and path.name.startswith(DEFINITIONS):
            continue
        resource = simplejson.loads(path.read_text(encoding="utf-8"), use_decimal=True)
        if isinstance(resource, dict) and "resourceType" in resource:
            out.append((path.name, resource))
    return out


def _index_all(indexer: Indexer, resources: list[tuple[str, dict[str, Any]]], caplog: pytest.LogCaptureFixture) -> int:
    caplog.set_level(logging.WARNING, logger="fhir_server.search")
    total_rows = 0
    for name, resource in resources:
        rows = indexer.rows(resource)
        for key, table_rows in rows.items():
            for row in table_rows:
                assert tuple(row) == ROW_COLUMNS[key], (name, row)
                assert len(row["param"]) <= 64, (name, row)
            total_rows += len(table_rows)
    # the indexer's own warnings only: a background job of another test may log meanwhile
    assert [r.getMessage() for r in caplog.records if r.name.startswith("fhir_server.search")] == []
    return total_rows


def test_every_example_instance_in_the_r4_package_indexes_cleanly(indexer: Indexer, caplog: pytest.LogCaptureFixture) -> None:
    resources = _package_resources(examples_only=True)
    assert len(resources) > 700
    assert _index_all(indexer, resources, caplog) > 5_000


@pytest.mark.slow
def test_every_resource_in_the_r4_package_indexes_cleanly(indexer: Indexer, caplog: pytest.LogCaptureFixture) -> None:
    resources = _package_resources(examples_only=False)  # the ~4,600 definitions too
    assert len(resources) > 5000
    assert _index_all(indexer, resources, caplog) > 100_000
