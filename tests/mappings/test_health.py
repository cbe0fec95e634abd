"""ed-attendances-csv and fhir-bundle through $import-agency-data into the real database (SQLite and
PostgreSQL): mapping rules, frequent attendance, idempotency, validation and bad input."""
from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from urllib.parse import quote

from mappings.core import SourceFile
from mappings.health import map_fhir_bundles
from mappings.health.ed_resources import frequent_runs
from mappings.health.snomed import concept_id_problem

from ..functional.test_crud import body
from .test_police import codes, one, post_file, search, security

FIXTURES = Path(__file__).parent / "fixtures" / "health"
BASE = "https://w3id.org/sg-fhir"
HOSPITAL = f"{BASE}/Id/R9Q/hospital-number"
NHS = "https://fhir.nhs.uk/Id/nhs-number"
RISK = f"{BASE}/CodeSystem/risk-factor"
SCT = "http://snomed.info/sct"
RESTRICTED = ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def observation(client, kind: str, key: str) -> dict:
    return one(client, f"Observation?identifier={quote(f'{BASE}/Id/R9Q/{kind}')}|{quote(key)}")


def ed_patient(client, hospital_number: str) -> dict:
    return one(client, f"Patient?identifier={quote(HOSPITAL)}|{hospital_number}")


def test_ed_attendances_map_to_observations(client):
    res = post_file(client, "ed-attendances-csv", "ed.csv", fixture("ed_attendances.csv"))
    assert res.status_code == 200, body(res)
    lily = ed_patient(client, "H1001")
    assert {(i["system"], i["value"]) for i in lily["identifier"]} == {(HOSPITAL, "H1001"), (NHS, "9990000050")}
    assert lily["address"][0]["postalCode"] == "HX3 0BW"  # the latest attendance's address
    assert lily["meta"]["tag"][0]["code"] == "health/R9Q"
    zara = ed_patient(client, "H1003")
    assert [i["system"] for i in zara["identifier"]] == [HOSPITAL]  # 9990000060 fails the check digit
    assert zara["birthDate"] == "2009-04-03"

    visit = observation(client, "ed-attendance", "ED25-003071")
    assert codes(visit["code"]) == {(RISK, "ed-attendance")}
    assert visit["subject"]["reference"] == f"Patient/{lily['id']}"
    assert visit["effectiveDateTime"] == "2025-03-14T10:05:00+00:00"
    components = {c["code"]["text"]: c["valueCodeableConcept"] for c in visit["component"]}
    assert codes(components["Diagnosis"]) == {(SCT, "110030002")}
    assert components["Discharge destination"] == {"text": "Admitted to paediatric ward"}
    concern = observation(client, "ed-safeguarding-concern", "ED25-003071")
    injury = observation(client, "ed-injury", "ED25-003071")
    assert {m["reference"] for m in visit["hasMember"]} == {f"Observation/{concern['id']}",
                                                             f"Observation/{injury['id']}"}
    assert codes(concern["code"]) == {(RISK, "ed-safeguarding-concern")}
    assert codes(concern["valueCodeableConcept"]) == {(SCT, "836881000000105")}
    assert "non-mobile infant" in concern["valueCodeableConcept"]["text"]
    assert security(concern) == {RESTRICTED}
    assert codes(injury["code"]) == {(RISK, "ed-injury")}
    assert injury["valueCodeableConcept"] == {"text": "Fall from a changing table"}
    fever = observation(client, "ed-attendance", "ED25-000114")
    assert codes(fever["component"][0]["valueCodeableConcept"]) == {(SCT, "386661006")}
    assert "hasMember" not in fever
    assert search(client, f"Observation?identifier={quote(BASE + '/Id/R9Q/ed-injury')}|ED25-000114") == []

    frequent = search(client, f"Observation?code={quote(RISK)}|ed-frequent-attendance")
    assert {f["subject"]["reference"] for f in frequent} == {f"Patient/{lily['id']}", f"Patient/{zara['id']}"}
    lily_frequent = observation(client, "ed-frequent-attendance", "H1001/ED25-000114")
    assert lily_frequent["valueInteger"] == 3
    assert lily_frequent["effectivePeriod"] == {"start": "2025-01-05T19:20:00+00:00",
                                                "end": "2025-06-30T23:40:00+01:00"}
    assert len(lily_frequent["derivedFrom"]) == 3
    # Zara's first attendance is more than a year before her third: the run starts at the second.
    assert observation(client, "ed-frequent-attendance", "H1003/ED24-009012")["valueInteger"] == 3
    provenance = search(client, "Provenance")
    assert len(provenance) == 1 and any("schedule/1" in p for p in provenance[0]["policy"])


def test_ed_reimport_is_idempotent(client):
    first = body(post_file(client, "ed-attendances-csv", "ed.csv", fixture("ed_attendances.csv")))
    again = body(post_file(client, "ed-attendances-csv", "ed.csv", fixture("ed_attendances.csv")))
    created = int(first["issue"][0]["diagnostics"].split(" created")[0].rsplit(" ", 1)[1])
    assert created == 24
    assert "0 created, 0 updated, 24 unchanged" in again["issue"][0]["diagnostics"]
    assert len(search(client, "Patient")) == 4


def test_ed_bad_rows_reject_the_file_unless_lenient(client):
    content = fixture("bad_ed_attendances.csv")
    strict = post_file(client, "ed-attendances-csv", "bad.csv", content)
    assert strict.status_code == 422
    expressions = {e for i in body(strict)["issue"] for e in i.get("expression", [])}
    assert {"bad.csv#line 2/dob", "bad.csv#line 4/arrival", "bad.csv#line 5/hospital_number",
            "bad.csv#line 8/attendance_id"} <= expressions
    assert search(client, "Observation") == []

    lenient = post_file(client, "ed-attendances-csv", "bad.csv", content, lenient=True)
    assert lenient.status_code == 200, body(lenient)
    assert search(client, f"Patient?identifier={quote(HOSPITAL)}|H2001") == []  # impossible date of birth
    assert search(client, f"Observation?identifier={quote(BASE + '/Id/R9Q/ed-attendance')}|ED25-010001") == []
    assert search(client, f"Observation?identifier={quote(BASE + '/Id/R9Q/ed-attendance')}|ED25-010007") == []
    alfie = observation(client, "ed-attendance", "ED25-010002")
    assert alfie["component"][0]["valueCodeableConcept"] == {"text": "386661007"}  # bad check digit, kept as text
    evie_concern = observation(client, "ed-safeguarding-concern", "ED25-010006")
    assert evie_concern["valueCodeableConcept"] == {"text": "Child disclosed being left alone overnight"}
    diagnostics = " ".join(i["diagnostics"] for i in body(lenient)["issue"])
    assert "check digit is wrong" in diagnostics and "'maybe' is not Y or N" in diagnostics


def test_frequent_attendance_rule():
    day = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    at = [day + dt.timedelta(days=d) for d in (0, 100, 200, 900, 1000, 1364, 1365, 2000)]
    assert frequent_runs(at) == [(0, 2), (4, 6)]  # 1364 is 464 days after 900; 1365 is 365 after 1000
    assert frequent_runs([day + dt.timedelta(days=d) for d in (0, 100, 200, 300)]) == [(0, 3)]  # one run
    assert frequent_runs(at[:2]) == []
    assert frequent_runs([day, day + dt.timedelta(days=200), day + dt.timedelta(days=366)]) == []


def test_snomed_concept_ids_are_checked():
    for code in ("386661006", "836881000000105", "300731000000106", "342191000000101", "999002381000000108"):
        assert concept_id_problem(code) is None, code
    assert "check digit" in concept_id_problem("386661007")
    assert concept_id_problem("012345") is not None and concept_id_problem("12a45") is not None
    assert "partition" in concept_id_problem("386661016")


def test_fhir_bundle_is_validated_and_upserted_with_its_references(client):
    content = fixture("bundle.json")
    res = post_file(client, "fhir-bundle", "bundle.json", content)
    assert res.status_code == 200, body(res)
    harvey = one(client, f"Patient?identifier={NHS}|9990000115")
    assert harvey["id"] != "p-77120" and harvey["meta"]["versionId"] == "1"
    assert harvey["meta"]["profile"] == ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]
    assert harvey["meta"]["source"].endswith("/agency/health/R9Q")
    assert harvey["generalPractitioner"] == [{"display": "Hebden Bridge Group Practice"}]
    orgs = search(client, "Organization")
    assert len(orgs) == 1 and orgs[0]["name"] == "Calder Valley Hospitals NHS Trust"
    encounter = one(client, "Encounter")
    assert encounter["subject"]["reference"] == f"Patient/{harvey['id']}"
    assert encounter["serviceProvider"]["reference"] == f"Organization/{orgs[0]['id']}"
    burn = one(client, "Observation")
    assert burn["subject"]["reference"] == f"Patient/{harvey['id']}"  # was the sender's absolute fullUrl
    assert burn["encounter"]["reference"] == f"Encounter/{encounter['id']}"
    assert burn["performer"] == [{"display": "Dr S Ahmed"}]
    assert one(client, "Flag")["subject"]["reference"] == f"Patient/{harvey['id']}"
    outcome = body(res)
    assert any("Practitioner/dr-ahmed" in i["diagnostics"] for i in outcome["issue"])

    # Sent the FHIR way (the Bundle as the body) it is the same import, and changes nothing.
    again = body(client.post("/fhir/$import-agency-data?format=fhir-bundle", data=content,
                             content_type="application/fhir+json"))
    assert "0 created, 0 updated, 4 unchanged" in again["issue"][0]["diagnostics"]
    changed = json.loads(content)
    changed["entry"][1]["resource"]["address"] = [{"postalCode": "HX7 8AB"}]
    third = body(post_file(client, "fhir-bundle", "bundle.json", json.dumps(changed).encode()))
    assert "0 created, 1 updated, 3 unchanged" in third["issue"][0]["diagnostics"]
    assert one(client, f"Patient?identifier={NHS}|9990000115")["address"] == [{"postalCode": "HX7 8AB"}]


def test_fhir_bundle_with_an_invalid_resource_is_rejected(client):
    bundle = json.loads(fixture("bundle.json"))
    bundle["entry"][1]["resource"]["birthDate"] = "2021-13-27"
    content = json.dumps(bundle).encode()
    strict = post_file(client, "fhir-bundle", "bundle.json", content)
    assert strict.status_code == 422
    expressions = {e for i in body(strict)["issue"] for e in i.get("expression", [])}
    assert "bundle.json#/entry/1/resource/Patient.birthDate" in expressions
    assert search(client, "Patient") == [] and search(client, "Observation") == []
    # Lenient: with the Patient invalid, everything else refers to it, so nothing is left to load.
    lenient = body(post_file(client, "fhir-bundle", "bundle.json", content, lenient=True))
    dropped = [i["expression"][0] for i in lenient["issue"] if "refers to record entry 1" in i["diagnostics"]]
    assert sorted(dropped) == ["bundle.json#record entry 2/Encounter", "bundle.json#record entry 3/Observation",
                               "bundle.json#record entry 4/Flag"]
    # An invalid Observation (a status outside its required value set) is dropped alone.
    bundle = json.loads(fixture("bundle.json"))
    bundle["entry"][3]["resource"]["status"] = "done"
    content = json.dumps(bundle).encode()
    assert post_file(client, "fhir-bundle", "bundle.json", content).status_code == 422
    lenient = post_file(client, "fhir-bundle", "bundle.json", content, lenient=True)
    assert lenient.status_code == 200, body(lenient)
    assert len(search(client, "Patient")) == 1 and len(search(client, "Flag")) == 1
    assert search(client, "Observation") == []
    assert any(i.get("expression", [""])[0].startswith("bundle.json#/entry/3/resource/Observation.status")
               for i in body(lenient)["issue"])


def test_fhir_bundle_rules_for_identifiers_agency_and_shape():
    bundle = json.loads(fixture("bundle.json"))

    def mapped(b: dict):
        return map_fhir_bundles([SourceFile("b.json", json.dumps(b).encode())])

    no_identifier = copy.deepcopy(bundle)
    del no_identifier["entry"][4]["resource"]["identifier"]
    agency, result = mapped(no_identifier)
    assert any(i.location == "/entry/4/resource" and i.field == "identifier" and i.severity == "error"
               for i in result.issues)

    bad_nhs = copy.deepcopy(bundle)
    bad_nhs["entry"][1]["resource"]["identifier"][0]["value"] = "9990000116"
    assert any(i.field == "identifier[0].value" for i in mapped(bad_nhs)[1].issues)

    # Without the Organization, the agency comes from meta.tag; a collection is accepted too.
    tagged = copy.deepcopy(bundle)
    tagged["type"] = "collection"
    tagged["meta"] = {"tag": [{"system": f"{BASE}/CodeSystem/source-agency", "code": "health/RXY"}]}
    for entry in tagged["entry"]:
        entry.pop("request")
    del tagged["entry"][0]
    agency, result = mapped(tagged)
    assert agency is not None and agency.code == "RXY" and not result.has_errors
    encounter = next(u for u in result.upserts if u.resource_type == "Encounter")
    assert encounter.resource["serviceProvider"]["display"].startswith("urn:")  # not in the Bundle any more

    untagged = copy.deepcopy(tagged)
    del untagged["meta"]
    agency, result = mapped(untagged)
    assert agency is None and result.issues[-1].field == "tag"

    document = copy.deepcopy(bundle)
    document["type"] = "document"
    agency, result = mapped(document)
    assert agency is None and result.issues[0].field == "type"
    assert map_fhir_bundles([SourceFile("b.json", b"not json")])[0] is None

    deleting = copy.deepcopy(bundle)
    deleting["entry"].append({"request": {"method": "DELETE", "url": "Patient/x"},
                              "resource": {"resourceType": "Patient"}})
    assert any(i.field == "method" and i.severity == "error" for i in mapped(deleting)[1].issues)


def test_two_trusts_sending_one_nhs_number_keep_a_patient_each(client):
    bundle = json.loads(fixture("bundle.json"))
    assert post_file(client, "fhir-bundle", "r9q.json", json.dumps(bundle).encode()).status_code == 200
    other = copy.deepcopy(bundle)
    other["entry"][0]["resource"]["identifier"][0]["value"] = "RXY"
    other["entry"][0]["resource"]["name"] = "Another Trust"
    other["entry"][1]["resource"]["name"][0]["family"] = "Pickering-Jones"
    assert post_file(client, "fhir-bundle", "rxy.json", json.dumps(other).encode()).status_code == 200
    patients = search(client, f"Patient?identifier={NHS}|9990000115")
    assert sorted((p["meta"]["tag"][0]["code"], p["name"][0]["family"], p["meta"]["versionId"]) for p in patients) \
        == [("health/R9Q", "Pickering", "1"), ("health/RXY", "Pickering-Jones", "1")]
    assert len(search(client, "Organization")) == 2


def test_a_health_systems_bundle_is_not_a_full_return_what_it_leaves_out_is_kept(client):
    # A transaction (or collection) Bundle says what to write, not "these are all the records":
    # sent again without its Observation and Flag, it changes nothing and retires nothing.
    content = fixture("bundle.json")
    assert post_file(client, "fhir-bundle", "bundle.json", content).status_code == 200
    stored = [one(client, "Observation"), one(client, "Flag")]
    fewer = json.loads(content)
    fewer["entry"] = [e for e in fewer["entry"] if e["resource"]["resourceType"] not in ("Observation", "Flag")]
    outcome = body(post_file(client, "fhir-bundle", "fewer.json", json.dumps(fewer).encode()))
    assert "0 retired" in outcome["issue"][0]["diagnostics"]
    assert [one(client, "Observation"), one(client, "Flag")] == stored
