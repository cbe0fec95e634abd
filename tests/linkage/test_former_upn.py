"""A CIN census child's former UPN is evidence against other agencies' UPNs (docs/linkage.md): the
census imported over HTTP, a school's record of the child under the UPN it held before, linking on
write and $match, on SQLite and PostgreSQL."""
from __future__ import annotations

import io
from typing import Any

from tests.functional.test_crud import body

from .conftest import agency_patient

UPN = "https://w3id.org/sg-fhir/Id/upn"
FORMER_UPN = "https://w3id.org/sg-fhir/Id/former-upn"
MASTER_TAG = "https://w3id.org/sg-fhir/CodeSystem/linkage|master"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def _child(la_child_id: str, birth_date: str, sex: str, *, upn: str | None, former: str | None) -> str:
    ids = f"<LAchildID>{la_child_id}</LAchildID>"
    ids += f"<UPN>{upn}</UPN>" if upn else ""
    ids += f"<FormerUPN>{former}</FormerUPN>" if former else ""
    ids += "" if upn else "<UPNunknown>UN5</UPNunknown>"
    return (f"<Child><ChildIdentifiers>{ids}<PersonBirthDate>{birth_date}</PersonBirthDate>"
            f"<GenderCurrent>{sex}</GenderCurrent></ChildIdentifiers>"
            "<ChildCharacteristics><Ethnicity>WBRI</Ethnicity></ChildCharacteristics>"
            "<CINdetails><CINreferralDate>2023-01-10</CINreferralDate><ReferralSource>2A</ReferralSource>"
            "<PrimaryNeedCode>N4</PrimaryNeedCode><ReferralNFA>false</ReferralNFA></CINdetails></Child>")


def _census(*children: str) -> bytes:
    """A synthetic CIN census of LA 202 in the DfE schema's order (no names: the return has none)."""
    return ("<?xml version='1.0' encoding='UTF-8'?><Message><Header><CollectionDetails><Collection>CIN</Collection>"
            "<Year>2023</Year><ReferenceDate>2023-03-31</ReferenceDate></CollectionDetails><Source>"
            "<SourceLevel>L</SourceLevel><LEA>202</LEA><SoftwareCode>Test</SoftwareCode><Release>1</Release>"
            "<SerialNo>001</SerialNo><DateTime>2023-05-01T09:00:00</DateTime></Source></Header><Children>"
            + "".join(children) + "</Children></Message>").encode()


def _import(client, content: bytes) -> None:
    response = client.post("/fhir/$import-agency-data?format=cin-census-xml",
                           data={"file": [(io.BytesIO(content), "202_cin.xml")]}, content_type="multipart/form-data")
    assert response.status_code in (200, 201), response.data


def _patient_with(client, system: str, value: str) -> dict[str, Any]:
    found = body(client.get(f"/fhir/Patient?identifier={system}|{value}")).get("entry", [])
    assert len(found) == 1, (system, value, len(found))
    return found[0]["resource"]


def _master_of(client, patient_id: str) -> str | None:
    masters = body(client.get(f"/fhir/Patient?_tag={MASTER_TAG}&_count=100")).get("entry", [])
    for entry in masters:
        if any(link["other"]["reference"] == f"Patient/{patient_id}" for link in entry["resource"].get("link", [])):
            return entry["resource"]["id"]
    return None


def test_former_upn_links_the_cin_child_to_the_school_record_of_its_old_upn(client, drain):
    school = body(client.post("/fhir/Patient", json=agency_patient(
        "education/202", "Keira", "Lindqvist", "2013-06-21", postcode="N17 6AB",
        identifiers=[(UPN, "A202131100017")])))["id"]
    # a different child of the same sex and birthday at another school: birth date and sex are not enough
    other = body(client.post("/fhir/Patient", json=agency_patient(
        "education/202", "Mia", "Okonjo", "2013-06-21", postcode="N15 3QT",
        identifiers=[(UPN, "A202131100025")])))["id"]
    _import(client, _census(
        _child("C7001", "2013-06-21", "2", upn="A202131100033", former="A202131100017"),
        _child("C7002", "2013-06-21", "2", upn=None, former="A202131100041")))  # a former UPN no one else holds
    drain()

    cin = _patient_with(client, FORMER_UPN, "A202131100017")
    master = _master_of(client, cin["id"])
    assert master is not None and master == _master_of(client, school)
    assert _master_of(client, other) is None  # never linked on birth date and sex
    lone = _patient_with(client, FORMER_UPN, "A202131100041")
    assert _master_of(client, lone["id"]) is None

    # $match with what the census holds (no name): the school's record under the old UPN is certain
    query = {k: v for k, v in cin.items() if k not in ("id", "meta")}
    response = client.post("/fhir/Patient/$match", json={"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": query}, {"name": "onlyCertainMatches", "valueBoolean": True}]})
    assert response.status_code == 200
    certain = {e["resource"]["id"] for e in body(response).get("entry", []) if e["resource"]["resourceType"] == "Patient"}
    assert school in certain and other not in certain


def test_a_school_record_arriving_after_the_census_finds_it_by_the_former_upn(client, drain):
    _import(client, _census(_child("C7101", "2014-02-03", "1", upn=None, former="A202141100019")))
    drain()
    school = body(client.post("/fhir/Patient", json=agency_patient(
        "education/202", "Tomasz", "Wrobel", "2014-02-13", gender="male", postcode="N17 9LR",
        identifiers=[(UPN, "A202141100019")])))["id"]  # a digit of the day keyed wrongly: only the UPN block finds the census record
    drain()
    cin = _patient_with(client, FORMER_UPN, "A202141100019")
    assert _master_of(client, school) is not None and _master_of(client, school) == _master_of(client, cin["id"])
