"""Chained parameters (search.html#chaining) and reverse chaining ``_has`` (search.html#has)."""
from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest

from .conftest import Store


def ids(store: Store, rtype: str, query: str) -> list[str]:
    return sorted(store.ids(rtype, query))


@pytest.mark.parametrize("query,expected", [
    ("subject:Patient.name=peter", ["obs1", "obs3"]),
    ("subject.name=peter", ["obs1", "obs3"]),
    ("subject:Patient.family:exact=Müller", ["obs2"]),
    ("subject.gender=male,female", ["obs1", "obs2", "obs3"]),
    ("subject:Patient.organization.name=acme", ["obs1", "obs3"]),
    ("subject:Patient.organization:Organization.partof.name=acme group", ["obs1", "obs3"]),
    ("subject.name=nobody", []),
    ("subject:Patient.name=peter&code=999", ["obs3"]),
    ("subject:Patient._id=p2", ["obs2"]),
])
def test_chain(data: Store, query: str, expected: list[str]) -> None:
    assert ids(data, "Observation", query) == expected


def test_chain_skips_deleted_targets(data: Store) -> None:
    data.put({"resourceType": "Observation", "id": "to-deleted", "status": "final", "code": {"text": "x"},
              "subject": {"reference": "Patient/p-deleted"}})
    assert ids(data, "Observation", "subject:Patient.family=chalmers") == ["obs1", "obs3"]


def test_chain_on_a_non_reference_is_a_400(data: Store) -> None:
    with pytest.raises(BadRequest) as err:
        data.search("Observation", "code.name=x")
    assert err.value.issues[0].expression == ("code.name",)


@pytest.mark.parametrize("query,expected", [
    ("_has:Observation:subject:code=1234-5", ["p1", "p2"]),
    ("_has:Observation:subject:code=999", ["p1"]),
    ("_has:Observation:patient:status=preliminary", ["p2"]),
    ("_has:Observation:subject:code=1234-5&_has:Observation:subject:code=999", ["p1"]),
    ("_has:RiskAssessment:subject:probability=gt1", ["p2"]),
    ("_has:Observation:subject:_has:Provenance:target:agent=Practitioner/pr1", ["p1"]),
    ("_has:Observation:subject:subject:Patient.name=peter", ["p1"]),
])
def test_has(data: Store, query: str, expected: list[str]) -> None:
    assert ids(data, "Patient", query) == expected


def test_has_ignores_deleted_sources(data: Store) -> None:
    data.put({"resourceType": "Observation", "id": "gone", "status": "final",
              "code": {"coding": [{"code": "gone-code"}]}, "subject": {"reference": "Patient/p3"}}, deleted=True)
    assert ids(data, "Patient", "_has:Observation:subject:code=gone-code") == []


def test_has_errors(data: Store) -> None:
    with pytest.raises(BadRequest):
        data.search("Patient", "_has:Observation:code:status=final")
    with pytest.raises(BadRequest):
        data.search("Patient", "_has:Observation:subject=x")
