"""CIN census XML → FHIR: safe parsing, each mapping rule, bad input, idempotent imports.

Imports run through the real app and database (SQLite and PostgreSQL), either through
``$import-agency-data`` over HTTP or through the loader; pure mapping checks call ``map_files``.
Fixtures in fixtures/cin/ are synthetic, except the DfE-style sample copied from the reference.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from fhir_server.repository.context import RequestContext
from mappings import codes
from mappings.cin_census import map_files
from mappings.cin_census.reader import _Stream
from mappings.cin_census.to_fhir import EXT_DISABILITY, EXT_EXPECTED_BIRTH_DATE, EXT_INITIAL_CATEGORY, EXT_UPN_UNKNOWN
from mappings.core import SourceFile
from mappings.fhir_shapes import EXT_ETHNIC_CATEGORY, EXT_SOURCE_VALUE
from mappings.loader import ImportSummary, import_file

from ..functional.test_crud import body

FIXTURES = Path(__file__).parent / "fixtures" / "cin"
REPO = Path(__file__).resolve().parents[2]
REFERENCE = next((p for p in (REPO.parent / "shared" / "reference", Path("/work/shared/reference")) if p.is_dir()),
                 None)
BASE = "https://w3id.org/sg-fhir"
CS = f"{BASE}/CodeSystem"
LA202 = f"{BASE}/Id/la-child-id/202"

# AGENCY_FORMATS.md §1, "Assessment factors": the table and the list after it.
REFERENCE_FACTORS = """1A 1B 1C 2A 2B 2C 3A 3B 3C 4A 4B 4C 5A 5B 5C 6A 6B 6C 7A 8B 8C 8D 8E 8F 9A 10A 11A 12A 13A
    14A 15A 16A 17A 18B 18C 19B 19C 20 21 22A 23A 24A""".split()


# -- helpers ---------------------------------------------------------------------------------------

def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def load(app, name: str, data: bytes | None = None, *, lenient: bool = False) -> ImportSummary:
    """Map and load one file through the loader (the same path as $import-agency-data)."""
    source = SourceFile(name, fixture(name) if data is None else data)
    agency, result = map_files([source])
    assert agency is not None, [i.message for i in result.issues]
    services = app.extensions["fhir"]
    ctx = RequestContext(base_url=services.settings.base_url, client_id="la-etl")
    return import_file(services.router, ctx, result, agency, source, "cin-census-xml", lenient=lenient)


def post(client, name: str, data: bytes | None = None, *, lenient: bool = False):
    url = f"/fhir/$import-agency-data?format=cin-census-xml&filename={name}" + ("&lenient=true" if lenient else "")
    return client.post(url, data=fixture(name) if data is None else data, content_type="application/xml")


def search(client, query: str) -> list[dict]:
    path, _, params = query.partition("?")
    encoded = "&".join(f"{k}={quote(v, safe=':/|,')}" for k, v in (p.split("=", 1) for p in params.split("&")))
    bundle = body(client.get(f"/fhir/{path}?{encoded}"))
    assert bundle["resourceType"] == "Bundle", bundle
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


def one(client, query: str) -> dict:
    found = search(client, query)
    assert len(found) == 1, (query, found)
    return found[0]


def total(client, resource_type: str) -> int:
    return body(client.get(f"/fhir/{resource_type}?_summary=count"))["total"]


def ext(resource: dict, url: str) -> list:
    return [e for e in resource.get("extension", []) if e["url"] == url]


def codings(concepts: list[dict]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for cc in concepts for c in cc.get("coding", [])}


def expressions(outcome_or_issues) -> dict[str, dict]:
    issues = outcome_or_issues["issue"] if isinstance(outcome_or_issues, dict) else outcome_or_issues
    return {e: i for i in issues for e in i.get("expression", [])}


def census(*children: str, lea: str = "209") -> bytes:
    return ("<Message><Header><CollectionDetails><Collection>CIN</Collection><ReferenceDate>2023-03-31"
            f"</ReferenceDate></CollectionDetails><Source><LEA>{lea}</LEA></Source></Header><Children>"
            + "".join(children) + "</Children></Message>").encode()


def child(child_id: str = "K1", identifiers: str = "<PersonBirthDate>2015-01-01</PersonBirthDate><Sex>1</Sex>",
          details: str = "", characteristics: str = "<Ethnicity>WBRI</Ethnicity>", extra: str = "") -> str:
    details = details or ("<CINreferralDate>2022-01-01</CINreferralDate><ReferralSource>1A</ReferralSource>"
                          "<ReferralNFA>0</ReferralNFA>")
    return (f"<Child><ChildIdentifiers><LAchildID>{child_id}</LAchildID>{identifiers}</ChildIdentifiers>"
            f"<ChildCharacteristics>{characteristics}</ChildCharacteristics><CINdetails>{details}</CINdetails>"
            f"{extra}</Child>")


def mapped(data: bytes, name: str = "t.xml"):
    agency, result = map_files([SourceFile(name, data)])
    return agency, result, [u.resource for u in result.upserts]


# -- CodeSystems -----------------------------------------------------------------------------------

def test_every_assessment_factor_in_the_reference_is_in_the_code_system():
    factors = set(REFERENCE_FACTORS)
    if REFERENCE is not None:
        text = (REFERENCE / "AGENCY_FORMATS.md").read_text(encoding="utf-8")
        section = text[text.index("- Assessment factors"):text.index("## 2.")]
        factors |= set(re.findall(r"\b\d{1,2}[A-F]?\b", section))
    assert len(factors) == 42
    assert sorted(f for f in factors if not codes.is_known("cin-assessment-factor", f)) == []


@pytest.mark.skipif(REFERENCE is None, reason="the shared reference (CIN schema) is not beside the repository")
@pytest.mark.parametrize("xsd_type, code_system", [
    ("assessmentfactorstype", "cin-assessment-factor"), ("referralsourcetype", "cin-referral-source"),
    ("primaryneedcodetype", "cin-primary-need"), ("reasonforclosuretype", "cin-closure-reason"),
    ("categoryofabuse", "cin-category-of-abuse"), ("disabilitytype", "cin-disability"),
    ("ethnicitytype", "cin-ethnicity"), ("unknownupntype", "cin-upn-unknown")])
def test_code_systems_hold_exactly_the_schema_enumerations(xsd_type, code_system):
    from lxml import etree
    schema = etree.parse(str(REFERENCE / "cin_census" / "CIN_schema_2024.xsd"),
                         etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
    ns = {"xs": "http://www.w3.org/2001/XMLSchema"}
    wanted = {e.get("value") for e in schema.iterfind(f".//xs:simpleType[@name='{xsd_type}']//xs:enumeration", ns)}
    cs = codes.code_system(code_system)
    assert {c["code"] for c in cs["concept"]} == wanted
    assert cs["url"] == f"{CS}/{code_system}" and cs["count"] == len(wanted)


# -- the reference sample --------------------------------------------------------------------------

def test_the_sample_file_reports_its_problems_and_maps_the_rest(client):
    res = post(client, "sample_CIN_Census_2021.xml", lenient=True)
    outcome = body(res)
    assert res.status_code == 200, outcome
    found = expressions(outcome)
    where = "sample_CIN_Census_2021.xml#/Message/Children/Child[1]"
    assert found[f"{where}/ChildIdentifiers/text()"]["severity"] == "warning"  # stray "PersonBirthDate"
    assert "1066" in found[f"{where}/ChildIdentifiers/ExpectedPersonBirthDate"]["diagnostics"]
    assert found[f"{where}/ChildIdentifiers/PersonBirthDate"]["severity"] == "warning"  # aged 58
    assert found[f"{where}/CINdetails[1]/ChildProtectionPlans[1]/CPPstartDate"]["code"] == "business-rule"
    assert not [i for i in outcome["issue"] if i["severity"] == "error"]
    patient = one(client, "Patient?identifier=https://w3id.org/sg-fhir/Id/la-child-id/201|DfEX0000001")
    assert (patient["gender"], patient["birthDate"], patient["deceasedDateTime"]) == ("male", "1965-03-27",
                                                                                       "1980-10-08")
    assert not ext(patient, EXT_EXPECTED_BIRTH_DATE)  # 1066 dropped (and a birth date is given anyway)
    assert {i["system"].rsplit("/", 1)[-1]: i["value"] for i in patient["identifier"]} == {
        "201": "DfEX0000001", "upn": "A123456789123", "former-upn": "X98765432123B"}
    pid = f"Patient/{patient['id']}"
    assert len(search(client, f"EpisodeOfCare?patient={pid}")) == 4
    assert len(search(client, f"Observation?subject={pid}")) == 2
    flag = one(client, f"Flag?subject={pid}")
    assert flag["status"] == "inactive" and flag["period"] == {"start": "1970-02-17", "end": "1971-03-14"}


# -- mapping rules ---------------------------------------------------------------------------------

def test_child_maps_to_a_patient_with_identifiers_demographics_and_characteristics(app, client):
    summary = load(app, "la202_2023.xml")
    assert summary.written and summary.created == 13, summary.outcome()
    girl = one(client, f"Patient?identifier={LA202}|C001")
    assert {(i["system"], i["value"]) for i in girl["identifier"]} == {
        (LA202, "C001"), (f"{BASE}/Id/upn", "A202123456789"), ("https://fhir.nhs.uk/Id/nhs-number", "9434765919")}
    assert (girl["gender"], girl["birthDate"]) == ("female", "2012-04-17")
    assert ext(girl, EXT_ETHNIC_CATEGORY)[0]["valueCodeableConcept"]["coding"][0]["code"] == "AIND"
    assert [e["valueCodeableConcept"]["coding"][0]["code"] for e in ext(girl, EXT_DISABILITY)] == ["AUT", "LD"]
    org_ref = girl["managingOrganization"]["reference"]
    org = body(client.get(f"/fhir/{org_ref}"))
    assert org["identifier"] == [{"system": f"{BASE}/Id/la-code", "value": "202"}]
    assert one(client, "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919")["id"] == girl["id"]

    unborn = one(client, f"Patient?identifier={LA202}|C002")
    assert unborn["gender"] == "unknown" and "birthDate" not in unborn  # <Sex>0</Sex>: not recorded or unborn
    assert ext(unborn, EXT_EXPECTED_BIRTH_DATE) == [{"url": EXT_EXPECTED_BIRTH_DATE, "valueDate": "2023-09-01"}]
    assert ext(unborn, EXT_UPN_UNKNOWN)[0]["valueCodeableConcept"]["coding"][0]["code"] == "UN1"


def test_cin_details_plans_and_enquiries_map_to_searchable_episodes(app, client):
    load(app, "la202_2023.xml")
    girl = one(client, f"Patient?identifier={LA202}|C001")
    pid = f"Patient/{girl['id']}"
    cin = one(client, f"EpisodeOfCare?patient={pid}&type={CS}/episode-type|cin")
    assert cin["status"] == "active" and cin["period"] == {"start": "2022-06-01"}
    assert codings(cin["type"]) >= {(f"{CS}/cin-referral-source", "6"), (f"{CS}/cin-primary-need", "N1")}
    assert cin["identifier"] == [{"system": f"{BASE}/Id/202/cin-episode", "value": "C001/2022-06-01"}]
    assert cin["managingOrganization"]["reference"] == girl["managingOrganization"]["reference"]
    assert one(client, f"EpisodeOfCare?type={CS}/cin-referral-source|6")["id"] == cin["id"]  # referred by police

    s47 = one(client, f"EpisodeOfCare?patient={pid}&type={CS}/episode-type|s47-enquiry")
    assert s47["status"] == "finished" and s47["period"] == {"start": "2022-06-05", "end": "2022-06-20"}

    plan = one(client, f"EpisodeOfCare?patient={pid}&type={CS}/episode-type|cp-plan")
    assert plan["status"] == "active" and plan["period"] == {"start": "2022-06-20"}
    assert (f"{CS}/cin-category-of-abuse", "EMO") in codings(plan["type"])  # latest category: searchable
    assert ext(plan, EXT_INITIAL_CATEGORY)[0]["valueCodeableConcept"]["coding"][0]["code"] == "NEG"
    flag = one(client, f"Flag?subject={pid}")
    assert flag["status"] == "active" and flag["period"] == {"start": "2022-06-20"}
    assert codings([flag["code"]]) == {(f"{CS}/safeguarding-flag", "cp-plan")}
    assert flag["category"][0]["text"] == "Safeguarding"

    other = one(client, f"Patient?identifier={LA202}|C002")
    closed = one(client, f"EpisodeOfCare?patient=Patient/{other['id']}&type={CS}/episode-type|cin")
    assert closed["status"] == "finished" and closed["period"] == {"start": "2023-01-10", "end": "2023-03-01"}
    assert (f"{CS}/cin-closure-reason", "RC7") in codings(closed["type"])
    cin_plan = one(client, f"EpisodeOfCare?patient=Patient/{other['id']}&type={CS}/episode-type|cin-plan")
    assert cin_plan["status"] == "finished"
    assert one(client, f"Flag?subject=Patient/{other['id']}")["status"] == "inactive"  # a closed plan


def test_assessment_factors_become_coded_observations(app, client):
    load(app, "la202_2023.xml")
    girl = one(client, f"Patient?identifier={LA202}|C001")
    observations = search(client, f"Observation?subject=Patient/{girl['id']}")
    assert sorted(o["code"]["coding"][0]["code"] for o in observations) == ["11A", "3A", "4B"]
    dv = one(client, f"Observation?code={CS}/cin-assessment-factor|3A")
    assert (dv["status"], dv["effectiveDateTime"]) == ("final", "2022-06-20")  # authorised on the 20th
    assert dv["category"][0]["coding"][0]["code"] == "social-history"
    assert dv["identifier"] == [{"system": f"{BASE}/Id/202/cin-assessment-factor", "value": "C001/2022-06-02/3A"}]
    cse = one(client, f"Observation?code={CS}/risk-factor|child-sexual-exploitation")  # 11A, cross-agency code
    assert cse["code"]["coding"][0]["code"] == "11A"


def test_an_unauthorised_assessment_gives_preliminary_observations():
    details = ("<CINreferralDate>2022-01-01</CINreferralDate><ReferralSource>1A</ReferralSource>"
               "<Assessments><AssessmentActualStartDate>2022-01-03</AssessmentActualStartDate>"
               "<FactorsIdentifiedAtAssessment><AssessmentFactors>16A</AssessmentFactors>"
               "<AssessmentFactors>16A</AssessmentFactors></FactorsIdentifiedAtAssessment></Assessments>"
               "<ReferralNFA>0</ReferralNFA>")
    _, result, resources = mapped(census(child(details=details)))
    [obs] = [r for r in resources if r["resourceType"] == "Observation"]
    assert (obs["status"], obs["effectiveDateTime"]) == ("preliminary", "2022-01-03")
    assert [i.code for i in result.issues] == ["duplicate"]  # 16A twice: recorded once, reported


@pytest.mark.parametrize("identifiers, gender", [
    ("<GenderCurrent>1</GenderCurrent>", "male"), ("<Sex>1</Sex>", "male"),
    ("<GenderCurrent>2</GenderCurrent>", "female"), ("<Sex>2</Sex>", "female"),
    ("<Sex>0</Sex>", "unknown"), ("<GenderCurrent>9</GenderCurrent>", "other"), ("<Sex>9</Sex>", "other")])
def test_sex_and_gender_current_both_work(identifiers, gender):
    _, result, resources = mapped(census(child(identifiers=identifiers)))
    assert resources[0]["gender"] == gender and not result.issues


def test_sex_wins_when_it_disagrees_with_gender_current():
    _, result, resources = mapped(census(child(identifiers="<GenderCurrent>1</GenderCurrent><Sex>2</Sex>")))
    assert resources[0]["gender"] == "female"
    [issue] = result.issues
    assert (issue.severity, issue.location, issue.field) == (
        "warning", "/Message/Children/Child[1]/ChildIdentifiers", "Sex")


def test_two_files_in_one_import_give_one_patient_and_the_later_file_wins():
    agency, result = map_files([SourceFile("a.xml", fixture("la202_2023.xml")),
                                SourceFile("b.xml", fixture("la202_2024.xml"))])
    assert agency is not None and agency.code == "202" and result.records == 4
    patients = [u for u in result.upserts if u.resource_type == "Patient"]
    assert sorted(p.resource["identifier"][0]["value"] for p in patients) == ["C001", "C002", "C003"]
    flags = {u.resource["identifier"][0]["value"]: u.resource["status"] for u in result.upserts
             if u.resource_type == "Flag"}
    assert flags["C001/2022-06-20"] == "inactive"  # ended in the 2024 file


def test_files_of_two_las_are_not_mixed():
    agency, result = map_files([SourceFile("a.xml", census(child(), lea="301")),
                                SourceFile("b.xml", census(child(), lea="302"))])
    assert agency is None and any(i.severity == "error" and i.file == "b.xml" for i in result.issues)


# -- bad input -------------------------------------------------------------------------------------

def test_bad_values_reject_the_file_by_default(app, client):
    summary = load(app, "bad_values.xml")
    assert not summary.written and summary.rejected_records == 5
    assert total(client, "Patient") == 0


def test_bad_values_are_reported_by_xpath_and_lenient_mode_loads_the_rest(client):
    res = post(client, "bad_values.xml", lenient=True)
    outcome = body(res)
    assert res.status_code == 200, outcome
    found = expressions(outcome)
    child_ = "bad_values.xml#/Message/Children/Child[{}]".format
    assert found[child_(1) + "/ChildIdentifiers/LAchildID"]["severity"] == "error"  # missing
    assert found[child_(2) + "/CINdetails[1]/CINclosureDate"]["severity"] == "error"  # before referral
    assert found[child_(4) + "/ChildIdentifiers/PersonBirthDate"]["severity"] == "error"  # 2999: future
    assert found[child_(4) + "/CINdetails[1]/CINreferralDate"]["severity"] == "error"  # month 13
    for path in ("/CINdetails[1]/ReferralSource", "/ChildCharacteristics/Ethnicity", "/ChildIdentifiers/Sex",
                 "/CINdetails[1]/Assessments[1]/FactorsIdentifiedAtAssessment/AssessmentFactors[1]"):
        assert (found[child_(3) + path]["severity"], found[child_(3) + path]["code"]) == ("warning", "code-invalid")
    assert found[child_(3) + "/CINdetails[1]/Shoesize"]["code"] == "not-supported"
    assert found[child_(3) + "/ChildIdentifiers/NHSnumber"]["severity"] == "warning"
    assert found["bad_values.xml#/Message/Children/text()"]["severity"] == "warning"  # stray words

    ids = "https://w3id.org/sg-fhir/Id/la-child-id/203"
    assert [p["identifier"][0]["value"] for p in search(client, f"Patient?identifier={ids}|B002,{ids}|B004")] == []
    assert one(client, f"Patient?identifier={ids}|B005")
    odd = one(client, f"Patient?identifier={ids}|B003")
    # unknown codes are kept as text, never dropped; the bad NHS number and UPN are not stored
    assert odd["gender"] == "unknown" and ext(odd, EXT_SOURCE_VALUE)[0]["valueString"] == "Sex: 7"
    assert ext(odd, EXT_ETHNIC_CATEGORY)[0]["valueCodeableConcept"] == {
        "text": "Ethnicity: XXXX", "extension": [{"url": f"{BASE}/StructureDefinition/value-source", "valueCode": "cin-census"}]}
    assert [i["system"] for i in odd["identifier"]] == [ids]
    episode = one(client, f"EpisodeOfCare?patient=Patient/{odd['id']}")
    assert {"text": "ReferralSource: ZZ"} in episode["type"]
    assert one(client, f"Observation?subject=Patient/{odd['id']}")["code"] == {"text": "AssessmentFactors: 99Z"}


def test_a_child_id_twice_in_one_file_is_an_error_for_that_child():
    _, result, _ = mapped(census(child("K1"), child("K2"), child("K1")))
    errors = [i for i in result.issues if i.severity == "error"]
    assert [(i.record, i.code) for i in errors] == [("K1", "duplicate")]
    assert result.rejected_records == 1


def test_unknown_and_not_yet_mapped_elements_are_reported():
    _, result, _ = mapped(census(child(extra="<PreProceedingsandFGDM><X>1</X></PreProceedingsandFGDM>")))
    [issue] = result.issues
    assert (issue.field, issue.severity, issue.code) == ("PreProceedingsandFGDM", "warning", "not-supported")


# -- hostile and broken files ----------------------------------------------------------------------

XXE = fixture("hostile_xxe.xml")


@pytest.mark.parametrize("name, data", [
    ("hostile_xxe.xml", None), ("hostile_billion_laughs.xml", None),
    ("xxe-utf16.xml", XXE.decode().replace("UTF-8", "UTF-16").encode("utf-16")),
    ("xxe-utf16-no-bom.xml", XXE.decode().replace("UTF-8", "UTF-16").encode("utf-16-le")),
])
def test_hostile_files_are_rejected_unparsed_and_nothing_is_written(client, name, data):
    res = post(client, name, data, lenient=True)
    outcome = body(res)
    assert res.status_code == 422, outcome
    [security] = [i for i in outcome["issue"] if i["severity"] == "error"]
    assert security["code"] == "security" and security["expression"] == [f"{name}#line 2/DOCTYPE"]
    assert total(client, "Patient") == 0 and total(client, "Provenance") == 0


def test_a_doctype_that_escapes_the_byte_scan_is_still_refused_by_the_parser():
    issues: list = []
    records = list(_Stream(SourceFile("x.xml", XXE), issues, today=__import__("datetime").date.today()).run())
    assert records == [] and [(i.severity, i.code) for i in issues] == [("error", "security")]


def test_files_over_the_size_limit_are_refused(monkeypatch):
    agency, result = map_files([SourceFile("big.xml", census(child()))], max_bytes=100)
    assert agency is None and [i.code for i in result.issues] == ["too-costly"]
    monkeypatch.setenv("FHIR_CIN_MAX_BYTES", "100")
    assert [i.code for i in map_files([SourceFile("big.xml", census(child()))])[1].issues] == ["too-costly"]


def test_malformed_xml_is_a_file_level_error_with_its_line(client):
    res = post(client, "malformed.xml", lenient=True)
    outcome = body(res)
    assert res.status_code == 422
    [error] = [i for i in outcome["issue"] if i["severity"] == "error"]
    assert error["code"] == "structure" and error["expression"] == ["malformed.xml#line 12/XML"]
    assert total(client, "Patient") == 0  # not even the well-formed first child


@pytest.mark.parametrize("data, fragment", [
    (b"", "not well-formed"), (b"<NotACensus/>", "not a CIN census"),
    (census(child()).replace(b"<LEA>209</LEA>", b"<LEA>20</LEA>"), "3-digit"),
    (b"<Message><Children>" + child().encode() + b"</Children></Message>", "no Header"),
])
def test_unusable_files_give_one_file_level_error(data, fragment):
    agency, result = map_files([SourceFile("f.xml", data)])
    assert agency is None
    assert any(i.severity == "error" and i.record == "" and fragment in i.message for i in result.issues), \
        [i.message for i in result.issues]


def test_large_files_are_streamed_child_by_child():
    children = [child(f"K{n}") for n in range(3000)]
    agency, result = map_files([SourceFile("big.xml", census(*children))])
    assert agency is not None and result.records == 3000 and not result.issues
    assert len({u.match for u in result.upserts if u.resource_type == "Patient"}) == 3000


# -- idempotency -----------------------------------------------------------------------------------

def test_importing_the_same_file_twice_changes_nothing(app, client):
    first = load(app, "la202_2023.xml")
    again = load(app, "la202_2023.xml")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 13), again.outcome()
    assert total(client, "Provenance") == 1
    girl = one(client, f"Patient?identifier={LA202}|C001")
    assert girl["meta"]["versionId"] == "1" and first.created == 13


def test_a_corrected_file_updates_only_the_changed_resource(app, client):
    load(app, "la202_2023.xml")
    corrected = fixture("la202_2023.xml").replace(b"<PrimaryNeedCode>N1</PrimaryNeedCode>",
                                                  b"<PrimaryNeedCode>N2</PrimaryNeedCode>")
    summary = load(app, "la202_2023.xml", corrected)
    assert (summary.created, summary.updated, summary.unchanged) == (0, 1, 12), summary.outcome()
    episode = one(client, f"EpisodeOfCare?identifier={BASE}/Id/202/cin-episode|C001/2022-06-01")
    assert episode["meta"]["versionId"] == "2" and (f"{CS}/cin-primary-need", "N2") in codings(episode["type"])


def test_a_child_in_two_census_files_is_one_patient_and_an_ended_plan_retires_its_flag(app, client):
    load(app, "la202_2023.xml")
    girl = one(client, f"Patient?identifier={LA202}|C001")
    flag = one(client, f"Flag?subject=Patient/{girl['id']}")
    later = load(app, "la202_2024.xml")
    # C001's Patient, CIN episode, enquiry and factors are unchanged; plan and Flag updated; C003 is new
    assert (later.created, later.updated, later.unchanged) == (2, 2, 6), later.outcome()
    assert one(client, f"Patient?identifier={LA202}|C001")["meta"]["versionId"] == "1"
    after = one(client, f"Flag?subject=Patient/{girl['id']}")
    assert after["id"] == flag["id"] and after["status"] == "inactive"
    assert after["period"] == {"start": "2022-06-20", "end": "2023-06-30"}
    assert total(client, "Patient") == 3 and total(client, "Provenance") == 2


def test_resources_are_valid_fhir_and_carry_their_source(app, client):
    load(app, "la202_2023.xml")
    girl = one(client, f"Patient?identifier={LA202}|C001")
    assert girl["meta"]["source"].endswith("/agency/local-authority/202")
    for resource_type in ("Patient", "EpisodeOfCare", "Observation", "Flag"):
        for resource in search(client, f"{resource_type}?_count=50"):
            res = client.post(f"/fhir/{resource_type}/$validate", data=json.dumps(resource),
                              content_type="application/fhir+json")
            assert res.status_code == 200, body(res)
            assert not [i for i in body(res)["issue"] if i["severity"] in ("error", "fatal")], body(res)
