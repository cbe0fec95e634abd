"""``Patient/[id]/$family-summary`` through HTTP on SQLite and PostgreSQL, and the pure family graph.

The family is the four-agency Whitfield family of test_everything.py; a second test imports the police
notifications fixture through ``$import-agency-data`` and finds a child's brother and carers there.
"""
from __future__ import annotations

import io
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lxml import etree

from fhir_server.fhir.validation import validate_resource
from fhir_server.single_view.access import filter_family
from fhir_server.single_view.document import render_family_summary
from fhir_server.single_view.facts import HOUSEHOLD_MEMBER, PARENT_OR_CARER, FactContext, facts_of
from fhir_server.single_view.family import address_keys, build_family_graph, relationship
from fhir_server.single_view.family_loader import FamilyRecord
from fhir_server.single_view.narrative import XHTML_NS, div, table
from fhir_server.single_view.record import ChildRecord, Found

from .test_crud import body
from .test_everything import AGENCY_TAG, load_family

BASE = "http://localhost/fhir"
PROFILES = Path(__file__).resolve().parents[2] / "profiles"
POLICE_FIXTURES = Path(__file__).resolve().parents[1] / "mappings" / "fixtures" / "police"
# narrative.html#xhtml: the basic HTML FHIR allows, of which the renderer uses these
ALLOWED_ELEMENTS = {"div", "p", "b", "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "br", "span"}


def summary(client, patient: str = "maya-master") -> dict[str, Any]:
    res = client.get(f"/fhir/Patient/{patient}/$family-summary")
    assert res.status_code == 200, res.data[:3000]
    return body(res)


def sections(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["code"]["coding"][0]["code"]: s for s in document["entry"][0]["resource"]["section"]}


def text_of(section: dict[str, Any]) -> str:
    """All the words of a section's narrative (and its sub-sections'), markup removed."""
    words = " ".join(etree.fromstring(section["text"]["div"]).itertext())
    return " ".join([words, *(text_of(s) for s in section.get("section", []))])


def entries(section: dict[str, Any]) -> set[str]:
    out = {e["reference"].removeprefix(BASE + "/") for e in section.get("entry", [])}
    for sub in section.get("section", []):
        out |= entries(sub)
    return out


def assert_valid_xhtml(markup: str) -> None:
    root = etree.fromstring(markup)
    assert root.tag == f"{{{XHTML_NS}}}div"
    for element in root.iter():
        assert element.tag.startswith(f"{{{XHTML_NS}}}"), element.tag
        assert element.tag.split("}")[1] in ALLOWED_ELEMENTS, element.tag
        assert not element.attrib, element.attrib
    assert "".join(root.itertext()).strip()


def walk_sections(items: list[dict[str, Any]]):
    for s in items:
        yield s
        yield from walk_sections(s.get("section", []))


# -- HTTP ---------------------------------------------------------------------------------------------

def test_document_structure_is_a_valid_fhir_document(client):
    load_family(client)
    doc = summary(client)
    validate_resource(doc, expected_type="Bundle")  # R4 structure of the Bundle and every resource in it
    assert doc["type"] == "document" and doc["identifier"]["value"].startswith("urn:uuid:") and doc["timestamp"]
    composition = doc["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition" and composition["status"] == "final"
    assert composition["type"]["coding"][0] == {"system": "http://loinc.org", "code": "60591-5",
                                                "display": "Patient summary Document"}
    assert composition["type"]["text"] == "Multi-agency family summary"
    assert composition["subject"]["reference"] == f"{BASE}/Patient/maya-master"
    assert composition["title"] == "Multi-agency family summary: Maya Whitfield (born 2014-05-20)"
    assert composition["date"] and composition["confidentiality"] == "R"
    full_urls = [e["fullUrl"] for e in doc["entry"]]
    assert len(full_urls) == len(set(full_urls))
    by_url = {e["fullUrl"]: e["resource"] for e in doc["entry"]}
    assert by_url[composition["author"][0]["reference"]]["resourceType"] == "Device"
    references = [composition["subject"]["reference"]] + [
        e["reference"] for s in walk_sections(composition["section"]) for e in s.get("entry", [])]
    assert all(ref in by_url for ref in references), [r for r in references if r not in by_url]
    for e in doc["entry"][2:]:  # stored resources: their own absolute URL
        assert e["fullUrl"] == f"{BASE}/{e['resource']['resourceType']}/{e['resource']['id']}"
    assert_valid_xhtml(composition["text"]["div"])
    assert list(sections(doc)) == ["child", "family", "involvement", "flags", "risk-factors", "interventions",
                                   "chronology", "sources"]
    for section in walk_sections(composition["section"]):
        assert section["text"]["status"] == "generated"
        assert_valid_xhtml(section["text"]["div"])
        assert section.get("entry") or section.get("section") or section.get("emptyReason") is None


def test_sections_hold_every_agency_and_the_family(client):
    load_family(client)
    found = sections(summary(client))
    child = found["child"]
    assert entries(child) == {f"Patient/{p}" for p in ("maya-master", "maya-la", "maya-police", "maya-school",
                                                         "maya-health")}
    words = text_of(child)
    for expected in ("Master person id: MP-0001", "NHS number: 9990000018", "UPN: K201400112345",
                     "LA child id (201): C1001", "person id (20): P100", "20 Police", "Hillside Primary School"):
        assert expected in words, expected

    family = text_of(found["family"])
    assert "Claire Whitfield" in family and "Kyle Benson" in family and "Leo Whitfield" in family
    assert "sibling (shared mother Claire Whitfield)" in family
    assert "Substance misuse service" in family  # the mother's own health record (a Patient of her own)
    assert "Alleged perpetrator: Domestic abuse incident, child present" in family
    assert "Drug misuse by a parent or carer" in family and "Parent or carer (not named" in family
    assert "Noah" not in family and "Price" not in family  # next door, same postcode
    assert {"Patient/claire-health", "EpisodeOfCare/eoc-claire-sms", "RelatedPerson/rp-pol-kyle-maya",
            "Patient/leo-police", "Patient/leo-la"} <= entries(found["family"])

    involvement = text_of(found["involvement"])
    assert "Priya Shah" in involvement and "Tom Reed" in involvement
    assert "Child protection plan" in involvement and "School attendance support" in involvement
    assert {"EpisodeOfCare/eoc-cin", "EpisodeOfCare/eoc-cp", "Practitioner/pr-sw",
            "Organization/org-police"} <= entries(found["involvement"])
    assert "EpisodeOfCare/eoc-early-help" not in entries(found["involvement"])  # closed

    assert entries(found["flags"]) == {"Flag/flag-cp"}
    risks = found["risk-factors"]
    assert {s["title"] for s in risks["section"]} == {"20 Police", "Calderdale Royal Hospital",
                                                      "Hillside Primary School",
                                                      "Local authority 201 children's social care"}
    assert {"Observation/obs-da-maya", "Observation/obs-marac", "Observation/obs-suspension",
            "Observation/obs-attendance", "Observation/obs-ed-concern", "Observation/obs-cin-2b"} <= entries(risks)
    assert "Observation/obs-ed" not in entries(risks)  # an attendance is an event; its concern is the risk
    assert "Persistent absence" in text_of(risks) and "police_export.csv" in text_of(risks)

    interventions = text_of(found["interventions"])
    assert "Early help family support" in interventions and "Substance misuse service" in interventions
    chronology = found["chronology"]
    assert "Observation/obs-cin-old" not in entries(chronology)  # years ago
    assert "EpisodeOfCare/eoc-early-help" not in entries(chronology)  # ended more than 12 months ago
    assert {"Observation/obs-ed", "Observation/obs-da-maya", "EpisodeOfCare/eoc-claire-sms"} <= entries(chronology)
    sources = text_of(found["sources"])
    for name in ("la_export.csv", "police_export.csv", "school_export.csv", "health_export.csv"):
        assert name in sources
    assert entries(found["sources"]) >= {"Organization/org-la", "Organization/org-police"}


def test_every_value_is_escaped(client):
    load_family(client)
    doc = summary(client)
    chronology = sections(doc)["chronology"]["text"]["div"]
    assert "neighbour heard shouting &lt;and&gt; a door smashed" in chronology
    assert "<and>" not in chronology


def test_from_an_agency_record_the_same_child_and_family(client):
    load_family(client)
    found = sections(summary(client, "maya-police"))
    assert "Patient/maya-la" in entries(found["child"])
    assert "Leo Whitfield" in text_of(found["family"])


def test_unknown_or_deleted_patient_and_parameters(client):
    load_family(client)
    res = client.get("/fhir/Patient/nobody/$family-summary")
    assert res.status_code == 404 and "Whitfield" not in res.get_data(as_text=True)
    client.delete("/fhir/Patient/noah-la")
    assert client.get("/fhir/Patient/noah-la/$family-summary").status_code == 410
    assert client.get("/fhir/Patient/maya-master/$family-summary?x=1").status_code == 400
    assert client.post("/fhir/Patient/maya-master/$family-summary").status_code == 200


def test_imported_police_notifications_make_a_family(client):
    content = (POLICE_FIXTURES / "notifications.csv").read_bytes()
    res = client.post("/fhir/$import-agency-data?format=police-notifications-csv",
                      data={"file": (io.BytesIO(content), "notifications.csv")}, content_type="multipart/form-data")
    assert res.status_code == 200, res.data[:2000]
    person = quote("https://w3id.org/sg-fhir/Id/20/person")
    amelia = body(client.get(f"/fhir/Patient?identifier={person}|P100231"))["entry"][0]["resource"]
    doc = summary(client, amelia["id"])
    validate_resource(doc, expected_type="Bundle")
    found = sections(doc)
    family = text_of(found["family"])
    assert "Oliver Hughes" in family and "sibling (shared father Daniel Hughes and mother Sarah Hughes)" in family
    assert "Daniel Hughes" in family and "Sarah Hughes" in family
    assert "Liam Carter" in family  # only Oliver's mother's partner: still the household's story
    assert "Callum" not in family and "Chloe" not in family
    risks = text_of(found["risk-factors"])
    assert "Child missing from home or care" in risks and "Adult in the household referred to MARAC" in risks
    assert "notifications.csv" in text_of(found["sources"])


# -- collect / filter / render without a database ----------------------------------------------------

def _found(resource: dict[str, Any], mode: str = "match") -> Found:
    return Found(0, resource["resourceType"], resource["id"], resource, mode)


def _tagged(agency: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {**resource, "meta": {"tag": [{"system": AGENCY_TAG, "code": agency, "display": agency}]}}


def test_a_filter_removes_what_the_caller_may_not_see_before_rendering():
    child = _tagged("la/1", {"resourceType": "Patient", "id": "c", "name": [{"family": "Ng", "given": ["Ada"]}],
                             "birthDate": "2016-01-01"})
    police = _tagged("police/9", {"resourceType": "Observation", "id": "o1", "status": "final",
                                  "code": {"text": "Secret incident"}, "subject": {"reference": "Patient/c"},
                                  "effectiveDateTime": "2026-10-01"})
    la = _tagged("la/1", {"resourceType": "Flag", "id": "f1", "status": "active", "code": {"text": "CP plan"},
                          "subject": {"reference": "Patient/c"}})
    record = FamilyRecord(ChildRecord("c", ("c",), [_found(child), _found(police), _found(la)]),
                          patients={"c": child})
    now = datetime(2026, 11, 25, tzinfo=timezone.utc)
    shown = render_family_summary(record, subject_id="c", now=now, base_url=BASE, profiles_dir=PROFILES)
    assert "Secret incident" in str(shown)
    not_police = filter_family(record, lambda r: not r["meta"]["tag"][0]["code"].startswith("police"))
    hidden = render_family_summary(not_police, subject_id="c", now=now, base_url=BASE, profiles_dir=PROFILES)
    assert "Secret incident" not in str(hidden) and "CP plan" in str(hidden)
    validate_resource(hidden, expected_type="Bundle")


def test_with_a_token_only_the_types_its_scopes_can_read_are_shown():
    from fhir_server.repository.context import RequestContext
    from fhir_server.single_view.access import allow_all, filter_for

    assert filter_for(RequestContext(BASE)) is allow_all  # authentication off
    assert filter_for(RequestContext(BASE, authenticated=True, scopes=frozenset({"system/*.rs"}))) is allow_all
    narrow = filter_for(RequestContext(BASE, authenticated=True,
                                       scopes=frozenset({"system/Patient.rs", "user/Flag.read"})))
    assert narrow({"resourceType": "Patient"}) and narrow({"resourceType": "Flag"})
    assert not narrow({"resourceType": "Observation"})


def test_narrative_escapes_and_never_is_empty():
    markup = div(table(["a"], [["<script>alert(1)</script>", ["x & y", None]]]))
    assert "<script>" not in markup and "&lt;script&gt;" in markup and "x &amp; y" in markup
    assert_valid_xhtml(markup)
    assert_valid_xhtml(div())


# -- the family graph (pure) -------------------------------------------------------------------------

def _patient(pid: str, given: str, born: str, *, line: str | None = None, postcode: str | None = None,
             links: tuple[str, ...] = (), ident: tuple[str, str] | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": pid, "name": [{"family": "Smith", "given": [given]}],
                           "birthDate": born}
    if postcode:
        res["address"] = [{"line": [line] if line else [], "postalCode": postcode}]
    if links:
        res["link"] = [{"other": {"reference": f"Patient/{o}"}, "type": "seealso"} for o in links]
    if ident:
        res["identifier"] = [{"system": ident[0], "value": ident[1]}]
    return res


def _related(rid: str, child: str, given: str, born: str, code: str, ident: tuple[str, str] | None = None,
             family: str = "Smith") -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "RelatedPerson", "id": rid, "patient": {"reference": f"Patient/{child}"},
                           "name": [{"family": family, "given": [given]}], "birthDate": born,
                           "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                                         "code": code}], "text": ROLE_WORDS[code]}]}
    if ident:
        res["identifier"] = [{"system": ident[0], "value": ident[1]}]
    return res


TODAY = date(2026, 11, 25)
ROLE_WORDS = {"MTH": "mother", "STPFTH": "stepfather"}


def test_same_name_and_birthday_children_at_different_addresses_stay_apart():
    patients = {"a": _patient("a", "Oliver", "2015-01-01", line="1 High St", postcode="LS1 1AA"),
                "b": _patient("b", "Oliver", "2015-01-01", line="9 Low Rd", postcode="M1 2BB")}
    related = {"r1": _related("r1", "a", "Jane", "1985-05-05", "MTH"),
               "r2": _related("r2", "b", "Anne", "1980-01-01", "MTH", family="Jones")}
    graph = build_family_graph({"a"}, patients, related, BASE, today=TODAY)
    assert graph.by_record.get("Patient/b") != graph.subject
    assert all(p.name != "Anne Jones" for p in graph.family())
    assert [p.name for p in graph.family()] == ["Jane Smith"]


def test_adults_join_across_agencies_and_make_siblings():
    patients = {"m": _patient("m", "Maya", "2014-01-01", links=("a", "b")), "a": _patient("a", "Maya", "2014-01-01"),
                "b": _patient("b", "Maya", "2014-01-01"), "l": _patient("l", "Leo", "2017-01-01"),
                "mum": _patient("mum", "Claire", "1989-02-11", ident=("urn:nhs", "123"))}
    related = {"r1": _related("r1", "a", "Claire", "1989-02-11", "MTH"),  # agency A: name + birthday
               "r2": _related("r2", "l", "Claire", "1989-02-11", "MTH", ident=("urn:police/person", "A1")),
               "r3": _related("r3", "b", "Kyle", "1990-03-03", "STPFTH", ident=("urn:police/person", "A2"),
                              family="Benson"),
               "r4": _related("r4", "l", "Kyle", "1992-12-12", "STPFTH", ident=("urn:police/person", "A2"),
                              family="Benson")}
    graph = build_family_graph({"m"}, patients, related, BASE, today=TODAY)
    subject = graph.people[graph.subject]
    assert set(subject.patient_records) == {"Patient/m", "Patient/a", "Patient/b"}
    mum = graph.person_of("RelatedPerson/r1")
    assert mum is graph.person_of("RelatedPerson/r2") is graph.person_of("Patient/mum")  # her own Patient record
    assert mum.kind == "adult"
    assert graph.person_of("RelatedPerson/r3") is graph.person_of("RelatedPerson/r4")  # same police person id
    leo = graph.person_of("Patient/l")
    assert leo.kind == "child"
    assert graph.relations_to_subject(leo.key) == ["sibling (shared mother Claire Smith)"]
    assert {p.name for p in graph.family()} == {"Claire Smith", "Kyle Benson", "Leo Smith"}


def test_households_need_postcode_and_first_line():
    patients = {"c": _patient("c", "Ann", "2015-01-01", line="12 Rowan Close", postcode="LS6 2AB"),
                "same": _patient("same", "Bob", "2016-01-01", line="12  rowan close.", postcode="ls62ab"),
                "street": _patient("street", "Cat", "2016-01-01", line="14 Rowan Close", postcode="LS6 2AB"),
                "bare": _patient("bare", "Dan", "2016-01-01", postcode="LS6 2AB")}
    graph = build_family_graph({"c"}, patients, {}, BASE, today=TODAY)
    assert {p.name for p in graph.family()} == {"Bob Smith"}
    assert graph.relations_to_subject(graph.by_record["Patient/same"]) == [
        "household (same address 12 Rowan Close, LS6 2AB)"]
    ended = {"address": [{"line": ["1 A St"], "postalCode": "B1 1AA", "period": {"end": "2020-01-01"}}]}
    assert address_keys(ended, today=TODAY) == {}


def test_relationship_categories():
    assert relationship([{"coding": [{"system": "x", "code": "MTH"}], "text": "mother"}]) == ("mother", "parent")
    assert relationship([{"coding": [{"code": "mothers-partner", "display": "Mother's partner"}]}]) == \
        ("Mother's partner", "step-parent")
    assert relationship(None) == ("related person", "other")


def test_cin_factor_letters_say_whom_a_factor_concerns():
    graph = build_family_graph({"c"}, {"c": _patient("c", "Ann", "2015-01-01")}, {}, BASE, today=TODAY)
    ctx = FactContext(BASE, datetime(2026, 11, 25), {}, graph.by_record.get, {})
    factor = "https://w3id.org/sg-fhir/CodeSystem/cin-assessment-factor"
    about = {}
    for code in ("2A", "2B", "2C", "21"):
        obs = {"resourceType": "Observation", "id": code, "status": "final", "subject": {"reference": "Patient/c"},
               "code": {"coding": [{"system": factor, "code": code}]}, "effectiveDateTime": "2026-01-01"}
        fact = facts_of(obs, ctx)[0]
        about[code] = (fact.about, fact.category)
    assert about == {"2A": (graph.subject, "risk"), "2B": (PARENT_OR_CARER, "risk"),
                     "2C": (HOUSEHOLD_MEMBER, "risk"), "21": (graph.subject, "event")}
