"""Merging upserts: two formats of one agency complete the same Patient instead of replacing it."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from fhir_server.repository.context import RequestContext
from mappings import codes
from mappings.cin_census import map_files as map_cin
from mappings.core import SourceFile
from mappings.fhir_shapes import sourced
from mappings.loader import ImportSummary, import_file
from mappings.merge import element_of, merge_resource
from mappings.ssda903 import map_files as map_ssda903

from ..functional.test_crud import body

FIXTURES = Path(__file__).parent / "fixtures"
BASE = "https://w3id.org/sg-fhir"
LA201 = f"{BASE}/Id/la-child-id/201"
NHS = "https://fhir.nhs.uk/Id/nhs-number"
UPN = f"{BASE}/Id/upn"
EXT = f"{BASE}/StructureDefinition"
TAG = f"{BASE}/CodeSystem/source-agency"


# -- the pure merge --------------------------------------------------------------------------------

def _patient(**elements) -> dict:
    return {"resourceType": "Patient", **elements}


def test_new_elements_win_and_absent_ones_are_kept() -> None:
    stored = _patient(id="p1", gender="female", birthDate="2012-03-12", name=[{"family": "Khan"}],
                      meta={"versionId": "3", "lastUpdated": "2025-01-01T00:00:00Z", "source": "x"})
    merged = merge_resource(stored, _patient(gender="male"))
    assert merged == _patient(gender="male", birthDate="2012-03-12", name=[{"family": "Khan"}], meta={"source": "x"})


def test_identifiers_are_the_union_by_system_and_the_new_value_wins() -> None:
    stored = _patient(identifier=[{"system": LA201, "value": "C1"}, {"system": NHS, "value": "9434765919"}])
    new = _patient(identifier=[{"system": LA201, "value": "C1"}, {"system": UPN, "value": "K201400112345"},
                               {"system": NHS, "value": "9434765870"}])
    assert merge_resource(stored, new)["identifier"] == [
        {"system": LA201, "value": "C1"}, {"system": NHS, "value": "9434765870"},
        {"system": UPN, "value": "K201400112345"}]


def test_extensions_are_the_union_by_url_and_a_repeating_one_is_replaced_whole() -> None:
    eth = {"url": f"{EXT}/ethnic-category", "valueCodeableConcept": {"text": "WBRI"}}
    stored = _patient(extension=[eth, {"url": f"{EXT}/disability", "valueString": "AUT"},
                                 {"url": f"{EXT}/disability", "valueString": "LD"}])
    new = _patient(extension=[{"url": f"{EXT}/disability", "valueString": "HAND"}])
    assert merge_resource(stored, new)["extension"] == [eth, {"url": f"{EXT}/disability", "valueString": "HAND"}]


def test_a_choice_element_and_a_primitive_extension_are_one_element() -> None:
    assert element_of("Patient", "deceasedBoolean") == "deceased" and element_of("Patient", "_gender") == "gender"
    assert element_of("Patient", "managingOrganization") == "managingOrganization"
    stored = _patient(deceasedDateTime="2024-01-01", _gender={"extension": [{"url": "u", "valueString": "7"}]})
    assert merge_resource(stored, _patient(deceasedBoolean=False, gender="male")) == \
        _patient(deceasedBoolean=False, gender="male")


def test_tags_are_merged() -> None:
    a = {"system": TAG, "code": "local-authority/201"}
    b = {"system": "http://example.org/tags", "code": "reviewed"}
    merged = merge_resource(_patient(meta={"tag": [a, b], "versionId": "2"}),
                            _patient(meta={"tag": [{**a, "display": "LA 201"}]}))
    assert merged["meta"] == {"tag": [{**a, "display": "LA 201"}, b]}


def test_merging_in_either_order_settles_on_one_resource() -> None:
    cin = _patient(identifier=[{"system": LA201, "value": "C1"}, {"system": NHS, "value": "9434765919"}],
                   gender="male", extension=[{"url": f"{EXT}/disability", "valueString": "AUT"}])
    ssda = _patient(identifier=[{"system": LA201, "value": "C1"}, {"system": UPN, "value": "K201400112345"}],
                    gender="male", birthDate="2012-03-12")
    for first, second in ((cin, ssda), (ssda, cin)):
        settled = merge_resource(first, second)
        for _ in range(3):
            assert merge_resource(merge_resource(settled, first), second) == settled
            assert merge_resource(settled, first) == settled and merge_resource(settled, second) == settled


# -- CIN census and SSDA903 of one local authority, through the loader ------------------------------

def _cin_201(la: str = "201", ethnicity: str = "WBRI", reference_date: str = "2023-03-31") -> bytes:
    """The LA 202 census fixture moved to LA 201, its first child made SSDA903's C1001 (same birth
    date, sex and ethnicity) with an NHS number and disabilities but no UPN: SSDA903 adds that."""
    xml = (FIXTURES / "cin" / "la202_2023.xml").read_text(encoding="utf-8")
    xml = xml.replace("<ReferenceDate>2023-03-31</ReferenceDate>", f"<ReferenceDate>{reference_date}</ReferenceDate>")
    xml = xml.replace("<LEA>202</LEA>", f"<LEA>{la}</LEA>").replace("<LAchildID>C001</LAchildID>",
                                                                  "<LAchildID>C1001</LAchildID>")
    xml = xml.replace("<UPN>A202123456789</UPN>", "").replace("<PersonBirthDate>2012-04-17</PersonBirthDate>",
                                                              "<PersonBirthDate>2012-03-12</PersonBirthDate>")
    xml = xml.replace("<GenderCurrent>2</GenderCurrent>", "<GenderCurrent>1</GenderCurrent>")
    return xml.replace("<Ethnicity>AIND</Ethnicity>", f"<Ethnicity>{ethnicity}</Ethnicity>").encode()


def _import(app, fmt: str, la: str = "201", **cin) -> ImportSummary:
    """Import the census (``_cin_201(la, **cin)``) or the SSDA903 fixture return as LA ``la``'s."""
    if fmt == "cin-census-xml":
        sources = [SourceFile(f"{la}_cin.xml", _cin_201(la, **cin))]
        agency, result = map_cin(sources, today=date(2025, 6, 30))
    else:
        sources = [SourceFile(n.replace("201", la), (FIXTURES / "ssda903" / n).read_bytes())
                   for n in ("201_header.csv", "201_episodes.csv", "201_missing.csv")]
        agency, result = map_ssda903(sources, today=date(2025, 6, 30))
    assert agency is not None, [i.message for i in result.issues]
    services = app.extensions["fhir"]
    ctx = RequestContext(base_url=services.settings.base_url, client_id=f"la-{la}-etl")
    combined = SourceFile(", ".join(s.name for s in sources), b"".join(s.content for s in sources))
    summary = import_file(services.router, ctx, result, agency, combined, fmt)
    assert summary.written, [i.diagnostics for i in summary.issues]
    return summary


def _child(client, la: str = "201") -> dict:
    found = body(client.get(f"/fhir/Patient?identifier={BASE}/Id/la-child-id/{la}|C1001"))
    assert found["total"] == 1
    return found["entry"][0]["resource"]


def test_cin_and_ssda903_complete_one_patient_and_settle(app, client) -> None:
    versions = []
    for fmt in ("cin-census-xml", "ssda903-csv", "cin-census-xml", "ssda903-csv"):
        _import(app, fmt)
        versions.append(_child(client)["meta"]["versionId"])
    assert versions[2:] == [versions[1]] * 2, versions  # the second round writes no new version
    child = _child(client)
    assert {(i["system"], i["value"]) for i in child["identifier"]} == {
        (LA201, "C1001"), (NHS, "9434765919"), (UPN, "K201400112345")}
    urls = [e["url"].rsplit("/", 1)[-1] for e in child["extension"]]
    assert urls.count("disability") == 2 and "ethnic-category" in urls
    assert child["gender"] == "male" and child["birthDate"] == "2012-03-12"
    assert [t["code"] for t in child["meta"]["tag"]] == ["local-authority/201"]
    # the other children of each return are untouched by the other
    assert body(client.get(f"/fhir/Patient?identifier={LA201}|C1002"))["total"] == 1
    assert body(client.get(f"/fhir/Patient?identifier={LA201}|C002"))["total"] == 1


def test_a_second_round_in_either_order_reports_nothing_changed(app, client) -> None:
    _import(app, "ssda903-csv")
    _import(app, "cin-census-xml")
    for fmt in ("ssda903-csv", "cin-census-xml"):
        again = _import(app, fmt)
        assert again.created == 0 and again.updated == 0, (fmt, again.outcome()["issue"][0]["diagnostics"])
    assert {i["system"] for i in _child(client)["identifier"]} == {LA201, NHS, UPN}


# -- a value two returns disagree on (ethnicity): ranked, so the order of import does not matter -----

ETHNIC = f"{EXT}/ethnic-category"


def _ethnicity(code: str, fmt: str) -> dict:
    concept = codes.concept("cin-ethnicity", code) if codes.is_known("cin-ethnicity", code) else {"text": code}
    return {"url": ETHNIC, "valueCodeableConcept": sourced(concept, fmt)}


def _settled(a: dict, b: dict) -> list[dict]:
    """The ethnicity stored after importing ``a`` then ``b`` and after ``b`` then ``a``, which must be
    one, and which importing either again must not change."""
    results = []
    for first, second in ((a, b), (b, a)):
        stored = merge_resource(_patient(extension=[first]), _patient(extension=[second]))
        assert merge_resource(stored, _patient(extension=[first])) == stored
        assert merge_resource(stored, _patient(extension=[second])) == stored
        results.append(stored["extension"])
    assert results[0] == results[1]
    return results[0]


def test_a_marked_value_ranks_by_what_it_says_then_by_format() -> None:
    cin, ssda = _ethnicity("WIRI", "cin-census"), _ethnicity("WBRI", "ssda903")
    assert _settled(cin, ssda) == [cin]  # two known codes: the census
    not_yet = _ethnicity("NOBT", "cin-census")
    assert _settled(not_yet, ssda) == [ssda]  # "not yet obtained" loses to any other value
    unknown = _ethnicity("ZZZZ", "cin-census")
    assert "coding" not in unknown["valueCodeableConcept"]
    assert _settled(unknown, ssda) == [ssda]  # an unknown code kept as text loses to a known one
    assert _settled(unknown, _ethnicity("NOBT", "ssda903")) == [unknown]  # … and wins over "not yet obtained"


def test_a_later_or_corrected_return_of_the_same_format_replaces_the_value() -> None:
    first, corrected = _ethnicity("WIRI", "cin-census"), _ethnicity("WBRI", "cin-census")
    assert merge_resource(_patient(extension=[first]), _patient(extension=[corrected]))["extension"] == [corrected]
    known, not_yet = _ethnicity("WIRI", "ssda903"), _ethnicity("NOBT", "ssda903")
    assert merge_resource(_patient(extension=[known]), _patient(extension=[not_yet]))["extension"] == [known]


def test_an_unmarked_stored_value_is_replaced_by_a_marked_one() -> None:
    legacy = {"url": ETHNIC, "valueCodeableConcept": {"text": "WIRI"}}
    ssda = _ethnicity("WBRI", "ssda903")
    assert merge_resource(_patient(extension=[legacy]), _patient(extension=[ssda]))["extension"] == [ssda]


def _as_la201(patient: dict) -> dict:
    """The Patient without what differs between two LAs' copies (id, meta, its LA's system and
    Organization); identifiers and extensions in a fixed order (the merge keeps the order of the
    first import's lists, which says nothing: mappings/merge.py)."""
    out = {k: v for k, v in patient.items() if k not in ("id", "meta", "managingOrganization")}
    out["identifier"] = sorted(({**i, "system": LA201} if "la-child-id" in i["system"] else i
                                for i in out["identifier"]), key=lambda i: i["system"])
    out["extension"] = sorted(out["extension"], key=lambda e: e["url"])  # stable: a url's own order kept
    return out


def _code(patient: dict) -> dict:
    found = [e["valueCodeableConcept"] for e in patient["extension"] if e["url"] == ETHNIC]
    assert len(found) == 1, found
    concept = found[0]
    return concept["coding"][0]["code"] if "coding" in concept else concept["text"]


@pytest.mark.parametrize(("cin", "expected"), [
    ({"ethnicity": "WIRI"}, "WIRI"),  # two known codes: the census's (2022-23; the return is 2023-24)
    ({"ethnicity": "WIRI", "reference_date": "2024-03-31"}, "WIRI"),  # the same year: the census's too
    ({"ethnicity": "NOBT"}, "WBRI"),  # "not yet obtained" never wins
    ({"ethnicity": "ZZZZ"}, "WBRI"),  # an unknown code loses to a known one, and is still reported
], ids=["census", "same-year", "not-yet-obtained", "unknown-code"])
def test_returns_disagreeing_on_ethnicity_store_one_patient_in_either_order(app, client, cin, expected) -> None:
    """The census and the SSDA903 return (``WBRI``) of one child disagree on ethnicity: imported census
    first (LA 201) or return first (LA 203), the stored Patient is the same; importing all again
    writes nothing."""
    orders = {"201": ("cin-census-xml", "ssda903-csv"), "203": ("ssda903-csv", "cin-census-xml")}
    for la, order in orders.items():
        for fmt in order:
            summary = _import(app, fmt, la, **cin)
            if fmt == "cin-census-xml" and expected == "WBRI" and cin["ethnicity"] == "ZZZZ":
                assert any("ZZZZ" in (i.diagnostics or "") for i in summary.issues)  # still reported
    first, second = _child(client, "201"), _child(client, "203")
    assert _code(first) == expected
    assert _as_la201(first) == _as_la201(second)
    for la, order in orders.items():
        for fmt in order:
            again = _import(app, fmt, la, **cin)
            assert again.created == 0 and again.updated == 0, (la, fmt, again.outcome()["issue"][0]["diagnostics"])
    assert _child(client, "201") == first and _child(client, "203") == second
