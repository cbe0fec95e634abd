"""school-census-csv through $import-agency-data into the real database.

Fixtures (tests/mappings/fixtures/education/) are synthetic: school_census_201.csv holds four pupils
at two schools with every record type; school_census_201_bad.csv a problem of every kind.
"""
from __future__ import annotations

import io
from datetime import date
from decimal import Decimal
from pathlib import Path

from mappings.core import SourceFile
from mappings.education import map_files

from ..functional.test_crud import body

FIXTURES = Path(__file__).parent / "fixtures" / "education"
CLEAN = FIXTURES / "school_census_201.csv"
BAD = FIXTURES / "school_census_201_bad.csv"
BASE = "https://w3id.org/sg-fhir"
UPN = f"{BASE}/Id/upn"
RISK = f"{BASE}/CodeSystem/risk-factor"
EXT = f"{BASE}/StructureDefinition"
TODAY = date(2025, 6, 30)


def _post(client, content: bytes, *, name: str = "school_census_201.csv", lenient: bool = False):
    url = "/fhir/$import-agency-data?format=school-census-csv" + ("&lenient=true" if lenient else "")
    return client.post(url, data={"file": (io.BytesIO(content), name)}, content_type="multipart/form-data")


def _summary(res) -> str:
    return body(res)["issue"][0]["diagnostics"]


def _one(client, query: str) -> dict:
    bundle = body(client.get(f"/fhir/{query}"))
    assert bundle["total"] == 1, (query, bundle["total"])
    return bundle["entry"][0]["resource"]


def _obs(client, kind: str, key: str) -> dict:
    return _one(client, f"Observation?identifier={BASE}/Id/201/{kind}|{key}")


def _component(obs: dict, code: str) -> dict | None:
    found = [c for c in obs.get("component", []) if c["code"]["coding"][0]["code"] == code]
    return found[0] if found else None


def test_census_maps_pupils_schools_attendance_exclusions_cme_and_ehe(client):
    res = _post(client, CLEAN.read_bytes())
    assert res.status_code == 200, body(res)
    assert "4 records, 0 rejected; 13 resources: 13 created" in _summary(res)

    oliver = _one(client, f"Patient?identifier={UPN}|K201400112345")
    assert oliver["name"] == [{"use": "official", "family": "Hughes", "given": ["Oliver"]}]
    assert (oliver["gender"], oliver["birthDate"]) == ("male", "2012-03-12")
    assert oliver["address"] == [{"use": "home", "postalCode": "LS8 4QT"}]
    assert oliver["meta"]["source"].endswith("/agency/education/201")
    assert _one(client, f"Patient?identifier={UPN}|R201400298765")["birthDate"] == "2015-11-05"  # DD/MM/YYYY
    assert _one(client, f"Patient?identifier={UPN}|T201400354321")["gender"] == "male"  # 1

    hillside = _one(client, f"Organization?identifier={BASE}/Id/school-urn|100234")
    assert hillside["name"] == "Hillside Primary School" and hillside["type"][0]["coding"][0]["code"] == "edu"
    service = _one(client, "Organization?name:contains=education service")
    assert service["name"] == "Local authority 201 education service"
    # its own identifier system: it is not a school, nor the LA's children's social care
    assert service["identifier"] == [{"system": f"{BASE}/Id/la-education-service", "value": "201"}]
    assert body(client.get(f"/fhir/Organization?identifier={BASE}/Id/school-urn|201"))["total"] == 0

    good = _obs(client, "school-attendance", "K201400112345/2024-autumn/100234")
    assert good["code"]["coding"][0] == {"system": RISK, "code": "school-attendance",
                                         "display": "School attendance rate for a term"}
    assert good["valueQuantity"] == {"value": Decimal("95.0"), "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    assert good["effectivePeriod"] == {"start": "2024-09-04", "end": "2024-12-20"}
    assert good["subject"]["reference"] == f"Patient/{oliver['id']}"
    assert good["performer"] == [{"reference": f"Organization/{hillside['id']}"}]
    assert _component(good, "possible-sessions")["valueQuantity"]["value"] == 140
    assert _component(good, "unauthorised-absence-sessions")["valueQuantity"]["code"] == "{session}"
    assert _component(good, "persistent-absence") is None and _component(good, "severe-absence") is None
    persistent = _obs(client, "school-attendance", "K201400112345/2025-spring/100234")
    assert persistent["valueQuantity"]["value"] == Decimal("82.2")
    assert _component(persistent, "persistent-absence")["valueBoolean"] is True
    assert _component(persistent, "severe-absence") is None
    severe = _obs(client, "school-attendance", "R201400298765/2024-autumn/137455")
    assert str(severe["valueQuantity"]["value"]) == "45.0"
    assert _component(severe, "persistent-absence") and _component(severe, "severe-absence")
    classed = body(client.get(f"/fhir/Observation?component-code={RISK}|persistent-absence"))
    assert classed["total"] == 2

    suspension = _obs(client, "school-suspension", "R201400298765/2024-11-18/137455")
    assert suspension["code"]["coding"][0]["code"] == "suspension"
    assert suspension["effectiveDateTime"] == "2024-11-18"
    assert suspension["valueCodeableConcept"]["coding"][0]["code"] == "PD"
    assert _component(suspension, "excluded-sessions")["valueQuantity"]["value"] == 4
    assert _component(suspension, "exclusion-category")["valueCodeableConcept"]["coding"][0]["code"] == "FIXD"
    exclusion = _obs(client, "school-exclusion", "T201400354321/2025-02-10/137455")
    assert exclusion["code"]["coding"][0]["code"] == "permanent-exclusion"
    assert exclusion["valueCodeableConcept"]["coding"][0]["code"] == "PA"

    cme = _obs(client, "child-missing-education", "T201400354321/2025-03-03")
    assert cme["code"]["coding"][0]["code"] == "child-missing-education"
    assert cme["effectivePeriod"] == {"start": "2025-03-03", "end": "2025-05-01"}
    assert cme["performer"] == [{"reference": f"Organization/{service['id']}",
                                 "display": "Local authority 201 education service"}]
    ehe = _obs(client, "elective-home-education", "B201400476543/2025-01-13")
    assert ehe["effectivePeriod"] == {"start": "2025-01-13"}
    assert ehe["extension"] == [{"url": f"{EXT}/education-last-school",
                                 "valueReference": {"reference": f"Organization/{hillside['id']}"}}]


def test_reimport_changes_nothing_and_a_correction_updates_only_that_term(client):
    assert _post(client, CLEAN.read_bytes()).status_code == 200
    again = _post(client, CLEAN.read_bytes())
    assert "13 resources: 0 created, 0 updated, 13 unchanged" in _summary(again)
    assert body(client.get("/fhir/Provenance"))["total"] == 1

    # the school corrects Oliver's spring term: 110 of 118 sessions (93.2%), no longer persistent
    corrected = CLEAN.read_text().replace("118,97,9,12", "118,110,5,3").encode()
    res = _post(client, corrected)
    assert "13 resources: 0 created, 1 updated, 12 unchanged" in _summary(res)
    spring = _obs(client, "school-attendance", "K201400112345/2025-spring/100234")
    assert spring["valueQuantity"]["value"] == Decimal("93.2") and _component(spring, "persistent-absence") is None
    assert body(client.get(f"/fhir/Observation?component-code={RISK}|persistent-absence"))["total"] == 1


def test_an_education_import_never_overwrites_the_local_authoritys_patient(client):
    """The same child (same UPN) is a Patient of the LA (SSDA903) and one of the education service."""
    ssda903 = Path(__file__).parent / "fixtures" / "ssda903"
    files = {"file": [(io.BytesIO((ssda903 / n).read_bytes()), n) for n in ("201_header.csv", "201_episodes.csv")]}
    assert client.post("/fhir/$import-agency-data?format=ssda903-csv", data=files,
                       content_type="multipart/form-data").status_code == 200
    assert _post(client, CLEAN.read_bytes()).status_code == 200
    assert _post(client, CLEAN.read_bytes()).status_code == 200
    both = body(client.get(f"/fhir/Patient?identifier={UPN}|K201400112345"))
    sources = sorted(e["resource"]["meta"]["source"].rsplit("/", 2)[-2] for e in both["entry"])
    assert sources == ["education", "local-authority"]
    la = next(e["resource"] for e in both["entry"] if "local-authority" in e["resource"]["meta"]["source"])
    assert la["meta"]["versionId"] == "1" and "/la-child-id/201" in la["identifier"][0]["system"]
    # LA 201's children's social care and education service are two Organizations
    services = {e["resource"]["name"]: e["resource"]["identifier"][0]["system"].rsplit("/", 1)[-1]
                for e in body(client.get("/fhir/Organization?identifier=201"))["entry"]}
    assert services == {"Local authority 201 children's social care": "la-code",
                        "Local authority 201 education service": "la-education-service"}


def test_bad_rows_reject_the_file_by_default_and_only_those_pupils_when_lenient(client):
    strict = _post(client, BAD.read_bytes(), name=BAD.name)
    assert strict.status_code == 422
    assert body(client.get("/fhir/Patient"))["total"] == 0
    issues = body(strict)["issue"][1:]
    where = {(i["severity"], i["expression"][0].split("#", 1)[1]) for i in issues}
    assert ("warning", "line 1/notes") in where  # unknown column
    assert ("error", "line 3/upn") in where  # missing UPN
    assert ("error", "line 4/upn") in where  # malformed UPN
    assert ("error", "line 5/dob") in where  # 2014-02-30
    assert ("error", "line 6/attended_sessions") in where  # more attended than possible
    assert ("warning", "line 7/exclusion_reason") in where  # XX: kept as text
    assert ("error", "line 8/event_date") in where  # 2024-25-11: day and month swapped
    assert ("error", "line 9/record_type") in where  # VISIT
    assert ("warning", "line 10/possible_sessions") in where  # sessions do not add up
    assert all(i["expression"][0].startswith(f"{BAD.name}#") for i in issues)
    swapped = next(i for i in issues if i["expression"][0].endswith("line 8/event_date"))
    assert "swapped" in swapped["diagnostics"]

    lenient = _post(client, BAD.read_bytes(), name=BAD.name, lenient=True)
    assert lenient.status_code == 200
    loaded = {e["resource"]["identifier"][0]["value"] for e in body(client.get("/fhir/Patient"))["entry"]}
    assert loaded == {"H201400600001", "H201400600005"}
    reason = _obs(client, "school-suspension", "H201400600005/2025-01-20/139876")["valueCodeableConcept"]
    assert reason == {"text": "XX"}


def test_local_authority_rules():
    header = "la_code,upn,dob,record_type,event_date\n"
    agency, result = map_files([SourceFile("a.csv", (header + "201,H201400600001,2014-01-01,CME,2025-01-01\n"
                                                              "202,H201400600002,2014-01-01,CME,2025-01-01\n").encode())],
                               today=TODAY)
    assert agency is None and "several local authorities" in result.issues[0].message
    agency, result = map_files([SourceFile("a.csv", b"upn,dob,record_type\nH201400600001,2014-01-01,CME\n")],
                               today=TODAY)
    assert agency is None and [(i.field, i.record) for i in result.issues] == [("la_code", "")]
    agency, result = map_files([SourceFile("a.csv", (header + ",H201400600001,2014-01-01,CME,2025-01-01\n").encode())],
                               today=TODAY)
    assert agency is None and result.issues[0].message == "no row names the local authority (la_code)"


def test_pupil_details_come_from_the_most_recent_record():
    header = "la_code,upn,forename,surname,dob,gender,postcode,record_type,event_date\n"
    rows = ("201,H201400600001,Ruby,Walsh,2014-01-10,F,LS1 4AB,EHE,2025-03-01\n"
            "201,h201400600001,Rubie,,2014-10-01,,LS2 9ZZ,CME,2025-01-01\n"
            "201,H201400600002,Leo,Bennett,,Q,ls11 5xy,CME,2025-01-01\n")
    agency, result = map_files([SourceFile("a.csv", (header + rows).encode())], today=TODAY)
    patients = {u.record: u.resource for u in result.upserts if u.resource_type == "Patient"}
    ruby = patients["H201400600001"]
    assert (ruby["name"][0]["given"], ruby["birthDate"], ruby["address"][0]["postalCode"]) == \
        (["Ruby"], "2014-01-10", "LS1 4AB")
    # the older row's postcode is kept as an old address (record linkage compares every address)
    assert ruby["address"] == [{"use": "home", "postalCode": "LS1 4AB"}, {"use": "old", "postalCode": "LS2 9ZZ"}]
    assert patients["H201400600002"]["gender"] == "unknown"
    assert patients["H201400600002"]["address"][0]["postalCode"] == "LS11 5XY"
    assert [(i.severity, i.field, i.location) for i in result.issues] == [
        ("warning", "dob", "line 3"), ("warning", "gender", "line 4"), ("error", "dob", "line 4")]
