"""search.filter: the _filter grammar (search_filter.html) and its binding to search parameters,
without a database."""
from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_server.errors import BadRequest
from fhir_server.search.filter import Comparison, FilterError, Logical, Not, PathStep, parse_filter
from fhir_server.search.filter_bind import (BoundLogical, BoundNot, BoundReference, BoundTest, ConceptRef,
                                            FilterCriterion, ValueSetRef)
from fhir_server.search.parse import DateValue, NumberValue, QuantityValue, ReferenceValue, StringValue, TokenValue

from .test_parse import parse


def flat(node):
    """A compact form of a syntax tree for assertions."""
    if isinstance(node, Logical):
        return (node.op, flat(node.left), flat(node.right))
    if isinstance(node, Not):
        return ("not", flat(node.operand))
    assert isinstance(node, Comparison)
    path = ".".join(s.name + (f"[{flat(s.filter)}]" if s.filter else "") for s in node.path)
    return (path, node.op, node.value)


def syntax_error(text: str) -> FilterError:
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    return caught.value


# -- grammar ------------------------------------------------------------------------------------------

def test_the_spec_examples_parse() -> None:
    assert flat(parse_filter('name co "pet"')) == ("name", "co", "pet")
    assert flat(parse_filter('given eq "peter" and birthdate ge 2014-10-10')) == \
        ("and", ("given", "eq", "peter"), ("birthdate", "ge", "2014-10-10"))
    assert flat(parse_filter("code eq http://loinc.org|1234-5")) == ("code", "eq", "http://loinc.org|1234-5")
    assert flat(parse_filter('subject.name co "pet"')) == ("subject.name", "co", "pet")
    related = parse_filter('related[type eq "has-component"].target pr true')
    assert flat(related) == ("related[('type', 'eq', 'has-component')].target", "pr", "true")
    assert flat(parse_filter("related[type eq has-component].target re Observation/4"))[2] == "Observation/4"


def test_and_or_are_left_to_right_without_precedence() -> None:
    assert flat(parse_filter("a eq 1 or b eq 2 and c eq 3")) == \
        ("and", ("or", ("a", "eq", "1"), ("b", "eq", "2")), ("c", "eq", "3"))
    assert flat(parse_filter("a eq 1 and b eq 2 or c eq 3")) == \
        ("or", ("and", ("a", "eq", "1"), ("b", "eq", "2")), ("c", "eq", "3"))
    assert flat(parse_filter("a eq 1 or (b eq 2 and c eq 3)")) == \
        ("or", ("a", "eq", "1"), ("and", ("b", "eq", "2"), ("c", "eq", "3")))


def test_not_parentheses_and_whitespace() -> None:
    assert flat(parse_filter("not(a eq 1)")) == ("not", ("a", "eq", "1"))
    assert flat(parse_filter("  not ( a eq 1 )  ")) == ("not", ("a", "eq", "1"))
    assert flat(parse_filter("not(not(a eq 1))")) == ("not", ("not", ("a", "eq", "1")))
    assert flat(parse_filter("(a eq 1)and(b eq 2)")) == ("and", ("a", "eq", "1"), ("b", "eq", "2"))
    assert flat(parse_filter("a\teq\t1")) == ("a", "eq", "1")
    assert flat(parse_filter("note eq x")) == ("note", "eq", "x")  # a name that starts like 'not'


def test_keywords_and_operators_are_case_insensitive_names_are_not() -> None:
    assert flat(parse_filter("Name EQ x AND family Co y")) == ("and", ("Name", "eq", "x"), ("family", "co", "y"))
    assert flat(parse_filter("NOT(a eq 1) Or b eq 2")) == ("or", ("not", ("a", "eq", "1")), ("b", "eq", "2"))


def test_values_tokens_and_json_strings() -> None:
    assert parse_filter('a eq "x \\"quoted\\" \\\\ \\/ \\n \\u00e9"').value == 'x "quoted" \\ / \n é'
    assert parse_filter('a eq "(]) and or"').value == "(]) and or"  # anything inside quotes
    only = parse_filter("(a eq x)")
    assert only.value == "x"  # a token stops at ')' and ']'
    assert parse_filter("a eq 2014-10-10T10:00:00+01:00").value == "2014-10-10T10:00:00+01:00"
    assert parse_filter("a eq http://x.org|a\\|b").value == "http://x.org|a\\|b"  # token escapes kept
    assert parse_filter('a eq ""').value == ""
    cmp = parse_filter('a eq "x"')
    assert cmp.quoted and not parse_filter("a eq x").quoted


def test_positions_are_recorded() -> None:
    cmp = parse_filter("subject[gender eq male].name co pet")
    assert [s.position for s in cmp.path] == [1, 25]
    assert (cmp.op_position, cmp.value_position) == (30, 33)
    assert cmp.path[0].filter == Comparison((PathStep("gender", 9),), "eq", "male", False, 16, 19)


@pytest.mark.parametrize("text, position, words", [
    ("", 1, "empty"),
    ("a eq", 5, "value"),
    ("a eq ", 6, "value"),
    ("a xx 1", 3, "unknown operator 'xx'"),
    ("a", 2, "operator"),
    ("(a eq 1", 8, "expected ')'"),
    ("a eq 1)", 7, "unbalanced"),
    ("a eq 1 b eq 2", 8, "expected 'and', 'or'"),
    ("not a eq 1", 5, "expected '('"),
    ('a eq "abc', 6, "unterminated"),
    ('a eq "\\x"', 7, "invalid escape"),
    ('a eq "\\u12"', 7, "invalid escape"),
    ("a[b eq 1 c eq 2", 10, "expected"),
    ("a. eq 1", 3, "parameter name"),
    ("1a eq 1", 1, "parameter name"),
    ("a eq 1 and", 11, "parameter name"),
    ("a eq 1 andb eq 2", 8, "expected 'and', 'or'"),
    ("a:exact eq 1", 2, "whitespace"),
])
def test_syntax_errors_name_the_position(text: str, position: int, words: str) -> None:
    err = syntax_error(text)
    assert err.position == position, err.diagnostics
    assert words in err.diagnostics
    assert f"at position {position}" in err.diagnostics
    assert isinstance(err, BadRequest) and err.issues[0].expression == ("_filter",)


def test_nesting_is_bounded() -> None:
    assert "deeper" in syntax_error("(" * 40 + "a eq 1" + ")" * 40).diagnostics


# -- binding (search.parse hands _filter to search.filter) --------------------------------------------

def bound(rtype: str | None, text: str):
    req = parse(rtype, ("_filter", text))
    assert len(req.criteria) == 1 and isinstance(req.criteria[0], FilterCriterion), req.warnings
    return req.criteria[0].node


def bind_error(rtype: str | None, text: str) -> str:
    with pytest.raises(BadRequest) as caught:
        parse(rtype, ("_filter", text))
    return caught.value.diagnostics


def test_values_are_parsed_by_parameter_type() -> None:
    node = bound("Patient", 'family eq "Brontë" and birthdate ge 2014-10 and gender eq http://x|m')
    assert isinstance(node, BoundLogical) and isinstance(node.left, BoundLogical)
    family, birthdate, gender = node.left.left, node.left.right, node.right
    assert isinstance(family.value, StringValue) and family.value.norm == "bronte"
    assert isinstance(birthdate.value, DateValue) and birthdate.value.prefix == "ge"
    assert gender.value == TokenValue("http://x", "m")
    assert bound("Observation", "code eq loinc|1234-5").value == TokenValue("http://loinc.org", "1234-5")
    quantity = bound("Observation", "value-quantity lt 5.4|ucum|mg").value
    assert isinstance(quantity, QuantityValue) and quantity.prefix == "lt"
    assert quantity.system == "http://unitsofmeasure.org" and quantity.value == Decimal("5.4")
    number = bound("RiskAssessment", "probability ap 0.5").value
    assert isinstance(number, NumberValue) and number.prefix == "ap"
    assert bound("Observation", "subject re Patient/1").value == ReferenceValue(type="Patient", id="1")
    present = bound("Patient", "gender pr false")
    assert isinstance(present, BoundTest) and present.present is False and present.value is None
    assert isinstance(bound("Patient", "not(gender eq m)"), BoundNot)
    assert bound("Observation", "code in ValueSet/x").value == ValueSetRef("ValueSet/x")
    assert bound("Observation", "code ss snomed|123").value == ConceptRef("http://snomed.info/sct", "123")


def test_chains_and_sub_filters_follow_reference_targets() -> None:
    chain = bound("Observation", 'subject.name co "pet"')
    assert isinstance(chain, BoundReference) and chain.param.code == "subject"
    assert [t for t, _ in chain.targets] == ["Group", "Patient"]  # the targets that have 'name'
    sub = bound("Observation", "patient[gender eq male and birthdate lt 2012] pr true")
    assert isinstance(sub, BoundReference) and [t for t, _ in sub.targets] == ["Patient"]
    assert isinstance(sub.targets[0][1], BoundLogical) and not sub.negate and sub.ref is None
    with_ref = bound("Observation", "patient[gender eq male] re Patient/7")
    assert with_ref.ref == ReferenceValue(type="Patient", id="7")
    deep = bound("Patient", "general-practitioner.name sw a")
    assert [t for t, _ in deep.targets] == ["Organization", "Practitioner"]
    criterion = parse("Observation", ("_filter", "patient.organization.name eq x")).criteria[0]
    assert criterion.target_types() == {"Patient", "Organization"}


def test_operators_must_apply_to_the_parameter_type() -> None:
    assert "operator 'sw' does not apply to date parameter 'birthdate'" in bind_error("Patient", "birthdate sw 2014")
    message = bind_error("Patient", "family eq x or birthdate sw 2014")
    assert "'sw'" in message and "date" in message and "position 26" in message
    assert "position 8" in bind_error("Patient", "gender gt m")
    assert "position 9" in bind_error("Observation", "subject eq Patient/1")
    assert "position 14" in bind_error("Patient", "birthdate eq tomorrow")
    assert "position 14" in bind_error("Patient", "birthdate eq 2014-02-30")
    assert "cannot be followed" in bind_error("Patient", "family.name eq x")
    assert "ambiguous" in bind_error("Observation", "focus.name eq x")
    assert "system|code" in bind_error("Observation", "code ss 1234")
    assert "not _id" in bind_error("Observation", "_id in ValueSet/x")
    assert "true or false" in bind_error("Patient", "gender pr yes")


def test_unknown_names_follow_strict_and_lenient_handling() -> None:
    lenient = parse("Patient", ("_filter", "colour eq blue"))
    assert lenient.criteria == () and lenient.unknown == ("_filter",)
    assert "colour" in lenient.warnings[0].diagnostics and "position 1" in lenient.warnings[0].diagnostics
    with pytest.raises(BadRequest, match="shoe-size"):
        parse("Patient", ("_filter", "family eq x and shoe-size gt 3"), strict=True)
    with pytest.raises(BadRequest, match="code-value-quantity"):  # composite: not supported here
        parse("Observation", ("_filter", "code-value-quantity eq x"), strict=True)
    across = parse(None, ("_filter", "_id eq a or _lastUpdated gt 2020"))
    assert isinstance(across.criteria[0], FilterCriterion)
    assert parse(None, ("_filter", "family eq x")).unknown == ("_filter",)  # not common to all types
    assert parse("Patient", ("_filter", "")).criteria == ()  # empty parameters are ignored


def test_unknown_names_inside_chains_and_sub_filters_are_named() -> None:
    with pytest.raises(BadRequest, match="'shoe-size' at position 9"):
        parse("Observation", ("_filter", "subject[shoe-size gt 3] pr true"), strict=True)
    with pytest.raises(BadRequest, match="'shoe-size' at position 9"):
        parse("Observation", ("_filter", "patient.shoe-size gt 3"), strict=True)
    with pytest.raises(BadRequest, match="'shoe-size' at position 9"):
        parse("Observation", ("_filter", "subject.shoe-size gt 3"), strict=True)
