"""The quality evaluation's ceiling and its breakdown of missed pairs (linkage.evaluate), on hand-made
records: what the figures next to F1 mean must not depend on a generated dataset."""
from __future__ import annotations

import datetime as dt

import pytest

from linkage import evaluate
from linkage.linker import Matcher
from linkage.memory import MemoryStore
from linkage.model import Model
from linkage.record import LA_CHILD_ID_PREFIX, PersonRecord
from mappings.systems import UPN

BORN = dt.date(2019, 3, 4)


def child_of_three_agencies() -> evaluate.Dataset:
    """One child: a GP record and a school record that share only the name (no identifier in common,
    different addresses), and a CIN census record with the LA's child id, birth date and sex — no
    name, no UPN (UN1) — which no other agency can be linked to."""
    gp = PersonRecord("gp", "health/QWO", ("Amara",), "Okafor", BORN, "female", ("B12 9QT",), "9434765919", True)
    school = PersonRecord("school", "education/330", ("Amara",), "Okafor", BORN, "female", ("B13 8SY",),
                          identifiers=frozenset({(UPN, "A330225412001")}))
    cin = PersonRecord("cin", "local-authority/330", birth_date=BORN, gender="female",
                       identifiers=frozenset({(f"{LA_CHILD_ID_PREFIX}330", "C0042")}))
    return evaluate.Dataset([gp, school, cin], {"gp": "P1", "school": "P1", "cin": "P1"}, {"P1"},
                            extras={"cin": {"ethnicity": "BAFR", "upn_unknown": "UN1"}})


def test_ceiling_counts_every_pair_but_those_of_a_record_nothing_connects():
    data = child_of_three_agencies()
    truth = evaluate.true_pairs(data)
    assert evaluate.unlinkable_pairs(data, truth) == {frozenset({"gp", "cin"}), frozenset({"school", "cin"})}
    report = evaluate.evaluate(data, Model.load())
    assert (report.true_pairs, report.unlinkable) == (3, 2)
    assert report.recall_ceiling == pytest.approx(1 / 3)
    assert report.f1_ceiling == pytest.approx(0.5)  # precision 1 at recall 1/3
    assert report.f1 <= report.f1_ceiling
    assert any("ceiling: recall 0.33333  F1 0.50000" in line for line in report.lines())


def test_breakdown_names_the_cause_the_agencies_and_each_sides_evidence():
    data = child_of_three_agencies()
    store = MemoryStore(data.records)
    rows = evaluate.missed_breakdown(data, evaluate.true_pairs(data), set(), Matcher(Model.load(), store))
    assert sum(r[-1] for r in rows) == 3
    by_agencies = {r[1]: r for r in rows}
    cin_side = "no name, LA child id, UPNunknown UN1, ethnicity"
    health = by_agencies["health + local-authority"]
    assert health[0].startswith("unlinkable") and health[2:4] == ("name, NHS no., postcode", cin_side)
    school = by_agencies["education + local-authority"]
    assert school[0].startswith("unlinkable") and school[2:4] == ("name, UPN, postcode", cin_side)
    named = by_agencies["education + health"]
    assert named[0] == ("named; same name and birth date, different address, no shared identifier or household "
                        "evidence")
    assert named[4] == "probable"  # name and birth date alone: the guard sends it to a practitioner


def test_the_cin_census_extensions_are_read_for_the_breakdown():
    patient = {"resourceType": "Patient", "extension": [
        {"url": "https://w3id.org/sg-fhir/StructureDefinition/ethnic-category",
         "valueCodeableConcept": {"coding": [{"code": "WBRI"}]}},
        {"url": "https://w3id.org/sg-fhir/StructureDefinition/upn-unknown-reason",
         "valueCodeableConcept": {"coding": [{"code": "UN5"}]}},
        {"url": "https://w3id.org/sg-fhir/StructureDefinition/other", "valueString": "x"}]}
    assert evaluate._extension_codes(patient) == {"ethnicity": "WBRI", "upn_unknown": "UN5"}
