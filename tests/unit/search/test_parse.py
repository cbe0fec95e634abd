"""search.parse: query parameters → SearchRequest (R4 search.html), without a database."""
from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_server.errors import BadRequest
from fhir_server.search.model import SearchParam
from fhir_server.search.parse import (Criterion, HasCriterion, MissingValue, NumberValue, QuantityValue,
                                      ReferenceValue, StringValue, TextValue, TokenValue,
                                      TypedIdentifierValue, UriValue, normalize_string, parse_search,
                                      split_unescaped, unescape)
from fhir_server.search.query import uri_ancestors

BASE = "http://example.org/fhir"
_COMMON = {"_id": "token", "_lastUpdated": "date", "_tag": "token", "_profile": "uri", "_security": "token",
           "_source": "uri"}


def _p(rtype: str, code: str, kind: str, *targets: str) -> SearchParam:
    return SearchParam(code=code, type=kind, resource_type=rtype, expression=f"{rtype}.{code}",
                       url=f"http://hl7.org/fhir/SearchParameter/{rtype}-{code}", targets=targets)


class FakeRegistry:
    """Just enough of search.registry.SearchRegistry for parsing."""

    def __init__(self) -> None:
        defs = {
            "Patient": [("name", "string"), ("family", "string"), ("birthdate", "date"),
                        ("identifier", "token"), ("gender", "token"),
                        ("general-practitioner", "reference", "Organization", "Practitioner"),
                        ("organization", "reference", "Organization")],
            "Observation": [("code", "token"), ("date", "date"), ("status", "token"),
                            ("subject", "reference", "Group", "Device", "Patient", "Location"),
                            ("patient", "reference", "Patient"), ("value-quantity", "quantity"),
                            ("code-value-quantity", "composite"), ("focus", "reference")],
            "Organization": [("name", "string"), ("identifier", "token")],
            "Practitioner": [("name", "string")],
            "Group": [("name", "string")],
            "RiskAssessment": [("probability", "number")],
            "ValueSet": [("url", "uri")],
            "Provenance": [("target", "reference")],
            "AuditEvent": [("entity", "reference"), ("agent", "reference")],
        }
        self.params: dict[str, dict[str, SearchParam]] = {}
        for rtype, items in defs.items():
            table = {code: _p(rtype, code, kind) for code, kind in _COMMON.items()}
            for code, kind, *targets in items:
                table[code] = _p(rtype, code, kind, *targets)
            self.params[rtype] = table

    def params_for(self, resource_type: str) -> dict[str, SearchParam]:
        return self.params.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.params.get(resource_type, {}).get(code)


REG = FakeRegistry()


def parse(rtype: str | None, *params: tuple[str, str], strict: bool = False):
    return parse_search(list(params), REG, [rtype] if rtype else None, strict=strict, base_url=BASE)


def test_escaping_splits_only_unescaped_separators() -> None:
    assert split_unescaped(r"a\,b,c", ",") == [r"a\,b", "c"]
    assert unescape(r"a\,b\|c\$d\\e") == r"a,b|c$d\e"
    req = parse("Patient", ("name", r"smith\,john,jones"))
    assert [v.value for v in req.criteria[0].values] == ["smith,john", "jones"]


def test_repeated_names_are_anded_commas_ored() -> None:
    req = parse("Patient", ("gender", "male,female"), ("gender", "other"))
    assert len(req.criteria) == 2
    assert [v.code for v in req.criteria[0].values] == ["male", "female"]


@pytest.mark.parametrize("raw,expected", [
    ("http://loinc.org|1234-5", TokenValue("http://loinc.org", "1234-5")),
    ("|1234-5", TokenValue("", "1234-5")),
    ("http://loinc.org|", TokenValue("http://loinc.org", None)),
    ("1234-5", TokenValue(None, "1234-5")),
    (r"a\|b", TokenValue(None, "a|b")),
])
def test_token_forms(raw: str, expected: TokenValue) -> None:
    assert parse("Observation", ("code", raw)).criteria[0].values == (expected,)


def test_token_modifiers() -> None:
    req = parse("Patient", ("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|MR|123"),
                ("gender:not", "male"), ("identifier:text", "Médical"))
    assert req.criteria[0].values == (TypedIdentifierValue(
        "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "123"),)
    assert req.criteria[1].modifier == "not"
    assert req.criteria[2].values == (TextValue("medical", "médical"),)
    with pytest.raises(BadRequest) as err:
        parse("Patient", ("identifier:of-type", "MR|123"))
    assert err.value.issues[0].expression == ("identifier:of-type",)


def test_string_value_is_normalised() -> None:
    value = parse("Patient", ("name:contains", "ÉLODIE")).criteria[0].values[0]
    assert value == StringValue("ÉLODIE", "elodie")
    assert normalize_string("Müller") == "muller"


@pytest.mark.parametrize("raw,prefix,low,high", [
    ("100", "eq", "99.5", "100.5"),
    ("100.00", "eq", "99.995", "100.005"),
    ("gt5.4", "gt", "5.35", "5.45"),
    ("1e2", "eq", "50", "150"),
    ("le-3", "le", "-3.5", "-2.5"),
])
def test_number_precision(raw: str, prefix: str, low: str, high: str) -> None:
    value = parse("RiskAssessment", ("probability", raw)).criteria[0].values[0]
    assert isinstance(value, NumberValue)
    assert (value.prefix, value.low, value.high) == (prefix, Decimal(low), Decimal(high))


def test_quantity_forms() -> None:
    full = parse("Observation", ("value-quantity", "gt5.4|http://unitsofmeasure.org|mg")).criteria[0].values[0]
    assert isinstance(full, QuantityValue)
    assert (full.prefix, full.value, full.system, full.code, full.code_or_unit) == (
        "gt", Decimal("5.4"), "http://unitsofmeasure.org", "mg", False)
    unit = parse("Observation", ("value-quantity", "5.4||mg")).criteria[0].values[0]
    assert (unit.system, unit.code, unit.code_or_unit) == (None, "mg", True)
    with pytest.raises(BadRequest):
        parse("Observation", ("value-quantity", "5.4|mg"))


def test_invalid_values_name_the_parameter() -> None:
    for name, value in [("probability", "abc"), ("probability", "gtx")]:
        with pytest.raises(BadRequest) as err:
            parse("RiskAssessment", (name, value))
        assert err.value.status == 400
        assert err.value.issues[0].expression == (name,)


def test_dates_are_ranges() -> None:
    pytest.importorskip("fhir_server.search.normalize")
    value = parse("Patient", ("birthdate", "ge2020-02")).criteria[0].values[0]
    assert value.prefix == "ge"
    assert value.low.year == 2020 and value.low.month == 2 and value.low.day == 1
    assert value.high.month == 2 or (value.high.month == 3 and value.high.day == 1)
    with pytest.raises(BadRequest) as err:
        parse("Patient", ("birthdate", "2020-13-45"))
    assert err.value.issues[0].expression == ("birthdate",)


@pytest.mark.parametrize("raw,expected", [
    ("Patient/1", ReferenceValue("Patient", "1")),
    ("1", ReferenceValue(None, "1")),
    ("Patient/1/_history/2", ReferenceValue("Patient", "1", "2")),
    (f"{BASE}/Patient/9", ReferenceValue("Patient", "9")),
    ("http://other.org/fhir/Patient/9", ReferenceValue(url="http://other.org/fhir/Patient/9")),
])
def test_reference_forms(raw: str, expected: ReferenceValue) -> None:
    assert parse("Observation", ("subject", raw)).criteria[0].values == (expected,)


def test_reference_type_modifier_and_identifier() -> None:
    crit = parse("Observation", ("subject:Patient", "1")).criteria[0]
    assert crit.values == (ReferenceValue("Patient", "1"),)
    ident = parse("Observation", ("subject:identifier", "http://nhs.uk|943")).criteria[0]
    assert ident.values == (TokenValue("http://nhs.uk", "943"),)
    with pytest.raises(BadRequest):  # subject cannot point at an Organization
        parse("Observation", ("subject:Organization", "1"))
    with pytest.raises(BadRequest):
        parse("Observation", ("subject", "Nonsense/1"))


def test_missing_on_any_type() -> None:
    crit = parse("Patient", ("birthdate:missing", "true")).criteria[0]
    assert crit.values == (MissingValue(True),)
    with pytest.raises(BadRequest):
        parse("Patient", ("birthdate:missing", "maybe"))


def test_unsupported_modifier_is_always_rejected() -> None:
    with pytest.raises(BadRequest) as err:
        parse("Patient", ("name:below", "x"))
    assert err.value.issues[0].expression == ("name:below",)
    with pytest.raises(BadRequest):
        parse("Observation", ("code:contains", "x"))


def test_uri_modifiers() -> None:
    crit = parse("ValueSet", ("url:below", "http://acme.org/fhir/")).criteria[0]
    assert crit.modifier == "below" and crit.values == (UriValue("http://acme.org/fhir/"),)
    assert "http://acme.org/fhir" in uri_ancestors("http://acme.org/fhir/ValueSet/1")
    assert "http://acme.org/fhir/ValueSet/1" in uri_ancestors("http://acme.org/fhir/ValueSet/1")
    assert "http:" not in uri_ancestors("http://acme.org/fhir/ValueSet/1")


def test_chain_with_and_without_type() -> None:
    crit = parse("Observation", ("subject:Patient.name", "peter")).criteria[0]
    assert isinstance(crit, Criterion) and crit.values == ()
    (target, inner), = crit.chain
    assert target == "Patient" and inner.param.code == "name" and inner.values[0].norm == "peter"
    # subject.name: Patient and Group both have "name" → both are searched (OR)
    crit = parse("Observation", ("subject.name", "peter")).criteria[0]
    assert sorted(t for t, _ in crit.chain) == ["Group", "Patient"]
    # patient.birthdate: only Patient is a target
    crit = parse("Observation", ("patient.organization.name", "acme")).criteria[0]
    (t1, inner1), = crit.chain
    (t2, inner2), = inner1.chain
    assert (t1, t2, inner2.param.code) == ("Patient", "Organization", "name")


def test_chain_errors() -> None:
    with pytest.raises(BadRequest):  # not a reference
        parse("Observation", ("code.name", "x"))
    with pytest.raises(BadRequest):  # no target of subject has 'probability'
        parse("Observation", ("subject.probability", "1"))
    with pytest.raises(BadRequest):  # focus has no declared targets: the type must be named
        parse("Observation", ("focus.name", "x"))
    assert parse("Observation", ("focus:Patient.name", "x")).criteria[0].chain[0][0] == "Patient"


def test_has_nested() -> None:
    crit = parse("Patient", ("_has:Observation:patient:code", "1234-5")).criteria[0]
    assert isinstance(crit, HasCriterion)
    assert (crit.source_type, crit.ref_param.code, crit.criterion.param.code) == ("Observation", "patient", "code")
    nested = parse("Patient", ("_has:Observation:patient:_has:AuditEvent:entity:agent", "Practitioner/1"))
    inner = nested.criteria[0].criterion
    assert isinstance(inner, HasCriterion) and inner.source_type == "AuditEvent"
    with pytest.raises(BadRequest):
        parse("Patient", ("_has:Observation:code:status", "final"))  # code is no reference
    with pytest.raises(BadRequest):
        parse("Patient", ("_has:Observation", "x"))


def test_chains_and_has_end_in_text_content_and_list() -> None:
    from fhir_server.search.special import SpecialCriterion

    crit = parse("Observation", ("subject:Patient._text", "bruised arm")).criteria[0]
    (target, inner), = crit.chain
    assert target == "Patient" and isinstance(inner, SpecialCriterion)
    assert inner.name == "subject:Patient._text" and inner.text is not None
    # without a type: every target with a narrative (all four of subject's)
    crit = parse("Observation", ("subject._content", "x")).criteria[0]
    assert sorted(t for t, _ in crit.chain) == ["Device", "Group", "Location", "Patient"]
    has = parse("Patient", ("_has:Observation:patient:_list", "List/42,43")).criteria[0]
    assert isinstance(has, HasCriterion) and [v.list_id for v in has.criterion.lists] == ["42", "43"]


def test_a_chain_into_has_keeps_only_the_types_the_has_can_refer_to() -> None:
    # Observation.patient refers to Patient only: Group, Device and Location are not candidates
    crit = parse("Observation", ("subject._has:Observation:patient:code", "x")).criteria[0]
    assert [t for t, _ in crit.chain] == ["Patient"]


@pytest.mark.parametrize("name", ["subject:Patient._sort", "subject._count", "subject:Patient._include",
                                  "subject:Patient._filter", "_has:Observation:patient:_summary",
                                  "_has:Observation:patient:_filter", "subject:Patient._text.name",
                                  "subject:Patient._text:exact"])
def test_what_cannot_end_a_chain_is_refused_even_when_lenient(name: str) -> None:
    rtype = "Patient" if name.startswith("_has") else "Observation"
    with pytest.raises(BadRequest) as caught:
        parse(rtype, (name, "x"))
    assert caught.value.issues[0].expression == (name,)


def test_unknown_parameters_warn_or_fail_when_strict() -> None:
    req = parse("Patient", ("foo", "bar"), ("name", "x"), ("_query", "y"))
    assert req.unknown == ("foo", "_query")
    assert req.warnings[0].severity == "warning" and req.warnings[0].expression == ("foo",)
    assert len(req.criteria) == 1
    with pytest.raises(BadRequest) as err:
        parse("Patient", ("foo", "bar"), strict=True)
    assert err.value.issues[0].expression == ("foo",)
    assert parse("Observation", ("code-value-quantity", "x$1")).unknown == ("code-value-quantity",)


def test_result_parameters() -> None:
    req = parse("Observation", ("_sort", "-date,status,_lastUpdated"), ("_count", "5"), ("_offset", "10"),
                ("_total", "estimate"), ("_summary", "true"), ("_snapshot", "42"), ("_format", "json"))
    assert [(k.param.code, k.descending) for k in req.sort] == [
        ("date", True), ("status", False), ("_lastUpdated", False)]
    assert (req.count, req.offset, req.total, req.summary, req.snapshot) == (5, 10, "estimate", "true", 42)
    assert ("_count", "5") not in req.link_params and ("_sort", "-date,status,_lastUpdated") in req.link_params
    for name, value in [("_count", "-1"), ("_count", "x"), ("_offset", "1.5"), ("_total", "some"),
                        ("_summary", "maybe"), ("_sort", "nonsense")]:
        with pytest.raises(BadRequest) as err:
            parse("Observation", (name, value))
        assert err.value.issues[0].expression == (name,)
    with pytest.raises(BadRequest):
        parse("Observation", ("_summary", "true"), ("_elements", "code"))
    assert parse("Observation", ("_elements", "code, status")).elements == ("code", "status")


def test_includes() -> None:
    req = parse("Observation", ("_include", "Observation:subject"), ("_include", "Observation:subject:Patient"),
                ("_include:iterate", "Patient:organization"), ("_revinclude", "Provenance:target"),
                ("_include", "*"))
    inc = req.includes
    assert (inc[0].source_type, inc[0].param.code, inc[0].target_type, inc[0].iterate) == (
        "Observation", "subject", None, False)
    assert inc[1].target_type == "Patient"
    assert inc[2].iterate and inc[2].param.code == "organization"
    assert inc[3].reverse and inc[3].source_type == "Provenance"
    assert inc[4].source_type is None and inc[4].param is None
    for bad in ["Observation", "Observation:code", "Nope:subject", "Observation:subject:Nope"]:
        with pytest.raises(BadRequest):
            parse("Observation", ("_include", bad))
    with pytest.raises(BadRequest):
        parse("Observation", ("_include:deep", "Observation:subject"))


def test_whole_system_search_allows_only_common_parameters() -> None:
    req = parse(None, ("_id", "a,b"), ("_lastUpdated", "gt2020"), ("_type", "Patient,Observation"))
    assert req.resource_types == ("Patient", "Observation")
    assert [c.param.code for c in req.criteria] == ["_id", "_lastUpdated"]
    assert parse(None, ("name", "x")).unknown == ("name",)
    with pytest.raises(BadRequest):
        parse(None, ("name", "x"), strict=True)
    with pytest.raises(BadRequest):
        parse(None, ("_type", "Nope"))


def test_empty_values_are_ignored() -> None:
    assert parse("Patient", ("name", "")).criteria == ()


def test_terminology_modifiers_and_special_parameters_parse() -> None:
    from fhir_server.search.special import SpecialCriterion
    crit = parse("Observation", ("code:in", "ValueSet/x"), ("code:below", "http://s|c")).criteria
    assert crit[0].modifier == "in" and crit[0].values == (UriValue("ValueSet/x"),)
    assert crit[1].modifier == "below" and crit[1].values[0].system == "http://s"
    special = parse("Patient", ("_text", "a OR b"), ("_list", "42")).criteria
    assert all(isinstance(c, SpecialCriterion) for c in special)
    assert special[0].text is not None and special[1].lists[0].list_id == "42"
