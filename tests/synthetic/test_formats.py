"""Every file is well-formed in its own format: CSV headers exactly as docs/formats/README.md (and the
DfE SSDA903 tables) define them, CIN census XML in the schema's structure, police JSON in the
documented shape, FHIR Bundles that the server's own validation accepts."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lxml import etree

from fhir_server.fhir.validation import validate_resource
from mappings.csvutil import parse_date, parse_datetime
from mappings.health.snomed import concept_id_problem
from mappings.systems import AGENCY_TAG_SYSTEM, NHS_NUMBER
from synthetic.writers.ed_attendances import UNKNOWN_DISCHARGE
from synthetic.writers.interventions import HEADER as INTERVENTIONS_HEADER

from .conftest import Dataset, read_csv

REPO = Path(__file__).resolve().parents[2]
CIN_XSD = Path("/work/shared/reference/cin_census/CIN_schema_2024.xsd")
# The DfE SSDA903 tables (../shared/reference/AGENCY_FORMATS.md §2)
SSDA903 = {"header": "CHILD,SEX,DOB,ETHNIC,UPN,MOTHER,MC_DOB",
           "episodes": "CHILD,DECOM,RNE,LS,CIN,PLACE,PLACE_PROVIDER,DEC,REC,REASON_PLACE_CHANGE,HOME_POST,PL_POST,URN",
           "missing": "CHILD,DOB,MISSING,MIS_START,MIS_END"}
UK_DATE = re.compile(r"^\d{2}/\d{2}/\d{4}$")


def documented_columns(fmt: str) -> list[str]:
    """The column list of ``### fmt`` in docs/formats/README.md (the first backquoted run after it)."""
    text = (REPO / "docs/formats/README.md").read_text(encoding="utf-8")
    section = text.split(f"### {fmt}", 1)[1]
    columns = section.split("`", 2)[1]
    return [c.strip() for c in columns.replace("\n", " ").split(",")]


@pytest.mark.parametrize("fmt", ["police-notifications-csv", "school-census-csv", "ed-attendances-csv"])
def test_csv_headers_are_exactly_the_documented_columns(dataset: Dataset, fmt: str) -> None:
    expected = documented_columns(fmt)
    assert len(expected) > 10
    paths = dataset.paths(fmt)
    assert paths
    for path in paths:
        header, rows = read_csv(path)
        assert header == expected, path.name
        assert rows


def test_ssda903_tables_have_the_dfe_columns_and_uk_dates(dataset: Dataset) -> None:
    entries = dataset.entries("ssda903-csv")
    assert entries
    for entry in entries:
        for rel in entry["paths"]:
            table = rel.rsplit("_", 1)[1].removesuffix(".csv")
            header, rows = read_csv(dataset.root / rel)
            assert ",".join(header) == SSDA903[table]
            for row in rows:
                for column in ("DOB", "DECOM", "DEC", "MIS_START", "MIS_END"):
                    if row.get(column):
                        assert UK_DATE.match(row[column]), (rel, column, row[column])


def test_interventions_csv_has_its_documented_columns(dataset: Dataset) -> None:
    doc = (REPO / "docs/synthetic-data.md").read_text(encoding="utf-8")
    documented = doc.split("### interventions-csv", 1)[1].split("`", 2)[1]
    assert [c.strip() for c in documented.replace("\n", " ").split(",")] == list(INTERVENTIONS_HEADER)
    for path in dataset.paths("interventions-csv"):
        header, rows = read_csv(path)
        assert tuple(header) == INTERVENTIONS_HEADER and rows


def test_csv_dates_and_datetimes_parse(dataset: Dataset) -> None:
    checks = {"police-notifications-csv": (("child_dob", "adult_dob"), ("incident_start", "incident_end")),
              "school-census-csv": (("dob", "period_start", "period_end", "event_date"), ()),
              "ed-attendances-csv": (("dob",), ("arrival",)),
              "interventions-csv": (("dob", "referral_date", "start_date", "end_date"), ())}
    for fmt, (dates, datetimes) in checks.items():
        for path in dataset.paths(fmt):
            for row in read_csv(path)[1]:
                for column in dates:
                    if row[column]:
                        parse_date(row[column])
                for column in datetimes:
                    if row[column]:
                        parse_datetime(row[column])


# -- CIN census XML --------------------------------------------------------------------------------

# The element order of the DfE schema's sequences, as regular expressions over child tag names.
CIN_ORDER = {
    "Message": r"Header Children ",
    "Header": r"CollectionDetails Source ",
    "CollectionDetails": r"Collection Year ReferenceDate ",
    "Source": r"SourceLevel LEA SoftwareCode Release SerialNo DateTime ",
    "Children": r"(Child )+",
    "Child": r"ChildIdentifiers ChildCharacteristics (CINdetails )+",
    "ChildIdentifiers": r"LAchildID (UPN )?(UPNunknown )?PersonBirthDate (GenderCurrent |Sex )",
    "ChildCharacteristics": r"Ethnicity (Disabilities )?",
    "Disabilities": r"(Disability )+",
    "CINdetails": r"CINreferralDate ReferralSource PrimaryNeedCode (CINclosureDate ReasonForClosure )?"
                  r"(DateOfInitialCPC )?(Assessments )*(CINPlanDates )*(Section47 )*ReferralNFA "
                  r"(ChildProtectionPlans )*",
    "Assessments": r"AssessmentActualStartDate (AssessmentAuthorisationDate FactorsIdentifiedAtAssessment )?",
    "FactorsIdentifiedAtAssessment": r"(AssessmentFactors )+",
    "CINPlanDates": r"CINPlanStartDate (CINPlanEndDate )?",
    "Section47": r"S47ActualStartDate InitialCPCtarget (DateOfInitialCPC )?ICPCnotRequired ",
    "ChildProtectionPlans": r"CPPstartDate (CPPendDate )?InitialCategoryOfAbuse LatestCategoryOfAbuse "
                            r"NumberOfPreviousCPP (Reviews )?",
    "Reviews": r"(CPPreviewDate )+",
}


def _check_order(elem: etree._Element) -> None:
    children = [c for c in elem if isinstance(c.tag, str)]
    if elem.tag in CIN_ORDER:
        tags = "".join(f"{c.tag} " for c in children)
        assert re.fullmatch(CIN_ORDER[elem.tag], tags), f"<{elem.tag}> holds {tags!r}"
    elif children:
        pytest.fail(f"unexpected element <{elem.tag}> with children")
    for child in children:
        _check_order(child)


def test_cin_census_files_follow_the_schema_structure(dataset: Dataset) -> None:
    from synthetic.world import World

    world = World(1)
    paths = dataset.paths("cin-census-xml")
    assert paths
    for path in paths:
        root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
        _check_order(root)
        la = path.name.split("_")[0]
        assert root.findtext("Header/Source/LEA") == la
        gender = world.la(la).gender_element
        children = root.findall("Children/Child")
        assert children and all(c.find(f"ChildIdentifiers/{gender}") is not None for c in children)
        ids = [c.findtext("ChildIdentifiers/LAchildID") for c in children]
        assert len(ids) == len(set(ids))


@pytest.mark.skipif(not CIN_XSD.is_file(), reason="the DfE CIN census XSD (shared reference) is not here")
def test_cin_census_files_validate_against_the_xsd(dataset: Dataset) -> None:
    """Validated against the 2024 schema, with two known differences from what LAs send today: newer
    census years write <Sex> for <GenderCurrent>, and a first child protection plan has 0 previous
    plans, which the schema's positiveInteger would refuse."""
    xsd = CIN_XSD.read_text(encoding="utf-8").replace(
        '<xs:element name="NumberOfPreviousCPP" type="xs:positiveInteger"',
        '<xs:element name="NumberOfPreviousCPP" type="xs:nonNegativeInteger"')
    schema = etree.XMLSchema(etree.fromstring(xsd.encode()))
    for path in dataset.paths("cin-census-xml"):
        text = path.read_text(encoding="utf-8").replace("<Sex>", "<GenderCurrent>").replace("</Sex>",
                                                                                         "</GenderCurrent>")
        doc = etree.fromstring(text.encode())
        assert schema.validate(doc), (path.name, schema.error_log.last_error)


# -- police JSON -----------------------------------------------------------------------------------

def test_police_json_has_the_documented_shape(dataset: Dataset) -> None:
    columns = documented_columns("police-notifications-csv")
    # the documented top level; school_urn goes with the child (the notification is about one child)
    top = {c for c in columns if not c.startswith(("child_", "adult_"))} - {"school_urn"} | {
        "child", "adults", "child_voice"}
    child_keys = {c.removeprefix("child_") for c in columns if c.startswith("child_")} - {"voice"} | {"school_urn"}
    adult_keys = {c.removeprefix("adult_") for c in columns if c.startswith("adult_")}
    paths = dataset.paths("police-notifications-json")
    assert paths
    for path in paths:
        items = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(items, list) and items
        for item in items:
            assert set(item) <= top and {"force_code", "police_reference", "notification_type", "child"} <= set(item)
            assert set(item["child"]) <= child_keys
            for adult in item["adults"]:
                assert set(adult) <= adult_keys


# -- FHIR bundles and codes ------------------------------------------------------------------------

def test_fhir_bundles_pass_the_servers_validation(dataset: Dataset) -> None:
    paths = dataset.paths("fhir-bundle")
    assert paths
    for path in paths:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        tag = bundle["meta"]["tag"][0]
        assert tag["system"] == AGENCY_TAG_SYSTEM and tag["code"].startswith("health/")
        full_urls = {e["fullUrl"] for e in bundle["entry"]}
        assert len(full_urls) == len(bundle["entry"])
        for entry in bundle["entry"]:
            resource = entry["resource"]
            validate_resource(resource)
            ident = resource["identifier"][0]
            url = f"{resource['resourceType']}?identifier={ident['system']}|{ident['value']}"
            assert entry["request"] == {"method": "PUT", "url": url}
            for ref in re.findall(r'"reference": "([^"]+)"', json.dumps(resource)):
                assert ref in full_urls
            if resource["resourceType"] == "Patient":
                assert ident["system"] == NHS_NUMBER
            for coding in re.findall(r'"system": "http://snomed.info/sct", "code": "(\d+)"', json.dumps(resource)):
                assert concept_id_problem(coding) is None, coding


def test_ed_snomed_codes_are_real_concept_ids(dataset: Dataset) -> None:
    for path in dataset.paths("ed-attendances-csv"):
        for row in read_csv(path)[1]:
            for column in ("chief_complaint_snomed", "diagnosis_snomed", "safeguarding_concern_snomed",
                           "discharge_destination"):
                value = row[column]
                if value and value != UNKNOWN_DISCHARGE:
                    assert concept_id_problem(value) is None, (column, value)
