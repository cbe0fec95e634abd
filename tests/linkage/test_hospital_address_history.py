"""A hospital that saw a child before and after a move knows both homes: the emergency department
file imported over HTTP keeps the older attendances' postcodes (``use`` old), and linking on write
compares them with a school's stale address (docs/linkage.md); on SQLite and PostgreSQL."""
from __future__ import annotations

import io

from tests.functional.test_crud import body

from .conftest import agency_patient

UPN = "https://w3id.org/sg-fhir/Id/upn"
MASTER_TAG = "https://w3id.org/sg-fhir/CodeSystem/linkage|master"
HEADER = ("ods_code,attendance_id,arrival,hospital_number,nhs_number,forename,surname,dob,gender,postcode,"
          "chief_complaint_snomed,diagnosis_snomed,injury,injury_mechanism,safeguarding_concern_snomed,"
          "safeguarding_concern_text,discharge_destination\n")
ROWS = ("R9Q,ED25-000301,2025-06-30T23:40,H2001,,Ruby,Fairclough,2016-09-14,F,HX3 0BW,,125666000,Y,"
        "Contact with hot liquid,,,Discharged home\n"  # the latest attendance first: the file is not in date order
        "R9Q,ED25-000114,2025-01-05T19:20,H2001,,Ruby,Fairclough,2016-09-14,F,HX1 4QP,386661006,,N,,,,"
        "Discharged home\n")


def _masters(client) -> list[dict]:
    return [e["resource"] for e in body(client.get(f"/fhir/Patient?_tag={MASTER_TAG}&_count=100")).get("entry", [])]


def _master_of(client, patient_id: str) -> str | None:
    return next((m["id"] for m in _masters(client)
                 if any(link["other"]["reference"] == f"Patient/{patient_id}" for link in m.get("link", []))), None)


def test_older_attendance_postcodes_are_kept_and_link_the_schools_stale_record(client, drain):
    response = client.post("/fhir/$import-agency-data?format=ed-attendances-csv",
                           data={"file": (io.BytesIO((HEADER + ROWS).encode()), "R9Q_ed.csv")},
                           content_type="multipart/form-data")
    assert response.status_code in (200, 201), response.data
    found = body(client.get("/fhir/Patient?family=Fairclough&birthdate=2016-09-14")).get("entry", [])
    assert len(found) == 1
    hospital = found[0]["resource"]
    assert [(a.get("use"), a["postalCode"]) for a in hospital["address"]] == [("home", "HX3 0BW"), ("old", "HX1 4QP")]

    # the school still holds the address from before the move; a different child of the same name and
    # birthday lives elsewhere
    school = body(client.post("/fhir/Patient", json=agency_patient(
        "education/381", "Ruby", "Fairclough", "2016-09-14", postcode="HX1 4QP",
        identifiers=[(UPN, "K381201600014")])))["id"]
    other = body(client.post("/fhir/Patient", json=agency_patient(
        "education/381", "Ruby", "Fairclough", "2016-09-14", postcode="HX7 5AD",
        identifiers=[(UPN, "K381201600022")])))["id"]
    drain()
    master = _master_of(client, hospital["id"])
    assert master is not None and master == _master_of(client, school)
    assert _master_of(client, other) is None
