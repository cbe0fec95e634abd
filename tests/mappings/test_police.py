"""police-notifications-csv / -json through $import-agency-data into the real database (SQLite and
PostgreSQL): every mapping rule, merged rows, security labels, RelatedPersons, idempotency, bad input."""
from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import quote

from mappings.core import SourceFile
from mappings.police import map_csv_files, map_json_files

from ..functional.test_crud import body

FIXTURES = Path(__file__).parent / "fixtures" / "police"
BASE = "https://w3id.org/sg-fhir"
PERSON = f"{BASE}/Id/20/person"
REFERENCE = f"{BASE}/Id/police-reference/20"
RISK = f"{BASE}/CodeSystem/risk-factor"
SDV = ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "SDV")
RESTRICTED = ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def post_file(client, fmt: str, name: str, content: bytes, *, lenient: bool = False):
    url = f"/fhir/$import-agency-data?format={fmt}" + ("&lenient=true" if lenient else "")
    return client.post(url, data={"file": (io.BytesIO(content), name)}, content_type="multipart/form-data")


def search(client, query: str) -> list[dict]:
    bundle = body(client.get(f"/fhir/{query}"))
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


def one(client, query: str) -> dict:
    found = search(client, query)
    assert len(found) == 1, (query, found)
    return found[0]


def patient(client, person_id: str) -> dict:
    return one(client, f"Patient?identifier={quote(PERSON)}|{person_id}")


def notification(client, reference: str, child: str) -> dict:
    return one(client, f"Observation?identifier={quote(BASE + '/Id/20/notification')}|{reference}/{child}")


def codes(concept: dict) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept.get("coding", [])}


def security(resource: dict) -> set[tuple[str, str]]:
    return {(s["system"], s["code"]) for s in resource.get("meta", {}).get("security", [])}


def involved(observation: dict) -> dict[str, str]:
    """RelatedPerson reference → role code, from the involved-adult extensions."""
    out = {}
    for ext in observation.get("extension", []):
        if ext["url"].endswith("/involved-adult"):
            parts = {p["url"]: p for p in ext["extension"]}
            role = parts["role"]["valueCodeableConcept"]
            out[parts["person"]["valueReference"]["reference"]] = (role.get("coding") or [{}])[0].get("code",
                                                                                                    role.get("text"))
    return out


def test_csv_notifications_map_to_patients_related_persons_and_observations(client):
    res = post_file(client, "police-notifications-csv", "notifications.csv", fixture("notifications.csv"))
    assert res.status_code == 200, body(res)

    force = one(client, f"Organization?identifier={quote(BASE + '/Id/police-force')}|20")
    amelia = patient(client, "P100231")
    assert {(i["system"], i["value"]) for i in amelia["identifier"]} == {
        (PERSON, "P100231"), ("https://fhir.nhs.uk/Id/nhs-number", "9990000018")}
    assert amelia["name"] == [{"use": "official", "family": "Hughes", "given": ["Amelia"]}]
    assert (amelia["birthDate"], amelia["gender"]) == ("2015-06-14", "female")
    assert amelia["address"][0]["postalCode"] == "LS6 2AB"  # normalised from "ls6 2ab"
    assert amelia["meta"]["tag"][0]["code"] == "police/20"
    oliver = patient(client, "P100232")
    assert oliver["birthDate"] == "2018-01-04"  # 04/01/2018 is DD/MM/YYYY
    callum = patient(client, "P100377")
    assert [i["system"] for i in callum["identifier"]] == [PERSON]  # his NHS number fails the check digit
    assert callum["gender"] == "male"  # DfE code 1

    # Four rows share 20-250304-0117: one notification per child, each with both adults.
    incident = search(client, f"Observation?identifier={quote(REFERENCE)}|20-250304-0117")
    assert len(incident) == 2
    da = notification(client, "20-250304-0117", "P100231")
    assert codes(da["code"]) == {(RISK, "domestic-abuse-child-present")}
    assert da["subject"]["reference"] == f"Patient/{amelia['id']}"
    assert da["performer"][0]["reference"] == f"Organization/{force['id']}"
    assert da["effectiveDateTime"] == "2025-03-04T21:40:00+00:00"
    assert security(da) == {SDV, RESTRICTED}
    notes = [n["text"] for n in da["note"]]
    assert notes[0].startswith("Circumstances: Neighbour called police")
    assert notes[1] == "Child's voice: Amelia said: \"I hid behind the sofa with Oliver, Dad was shouting at Mum.\""
    assert notes[2] == "Where the child was: in the living room"
    school = [e for e in da["extension"] if e["url"].endswith("/child-school")]
    assert school[0]["valueIdentifier"]["value"] == "107812"

    related = {r["identifier"][1]["value"]: r for r in search(client, f"RelatedPerson?patient=Patient/{amelia['id']}")}
    assert set(related) == {"A200114", "A200115"}
    daniel, sarah = related["A200114"], related["A200115"]
    assert daniel["relationship"][0]["coding"][0]["code"] == "FTH"
    assert sarah["relationship"][0]["coding"][0]["code"] == "MTH"
    assert daniel["name"][0]["family"] == "Hughes" and daniel["birthDate"] == "1986-09-02"
    assert involved(da) == {f"RelatedPerson/{daniel['id']}": "alleged-perpetrator",
                            f"RelatedPerson/{sarah['id']}": "victim"}

    oliver_da = notification(client, "20-250304-0117", "P100232")
    assert codes(oliver_da["code"]) == {(RISK, "domestic-abuse-child-not-present")}
    assert len(involved(oliver_da)) == 2
    unknown_presence = notification(client, "20-250615-0300", "P100232")
    assert codes(unknown_presence["code"]) == {(RISK, "domestic-abuse-child-presence-unknown")}
    assert "not known" in unknown_presence["code"]["coding"][0]["display"]
    carter = one(client, f"RelatedPerson?identifier={quote(BASE + '/Id/20/relationship')}|A200116:P100232")
    assert carter["relationship"][0]["coding"][0]["code"] == "mothers-partner"

    missing = notification(client, "20-250410-0458", "P100231")
    assert codes(missing["code"]) == {(RISK, "missing-episode")}
    assert missing["effectivePeriod"] == {"start": "2025-04-10T19:30:00+01:00", "end": "2025-04-11T08:15:00+01:00"}
    assert security(missing) == set()

    arrest = notification(client, "20-250502-0021", "P100377")
    assert codes(arrest["code"]) == {(RISK, "child-arrested")}
    assert arrest["valueString"] == "Possession of a bladed article in a public place"
    assert security(arrest) == {RESTRICTED}
    assert codes(notification(client, "20-250520-0133", "P100377")["code"]) == {(RISK, "child-criminal-exploitation")}
    cse = notification(client, "20-250512-0090", "P100412")
    assert codes(cse["code"]) == {(RISK, "child-sexual-exploitation")} and security(cse) == {SDV, RESTRICTED}

    marac = notification(client, "20-250601-0007", "P100231")
    assert codes(marac["code"]) == {(RISK, "marac-referral")}
    assert marac["focus"] == [{"reference": f"RelatedPerson/{daniel['id']}"}]
    mappa = notification(client, "20-250608-0044", "P100412")
    moss = one(client, f"RelatedPerson?identifier={quote(PERSON)}|A200302")
    assert codes(mappa["code"]) == {(RISK, "mappa-referral")} and mappa["focus"][0]["reference"].endswith(moss["id"])
    assert involved(mappa) == {f"RelatedPerson/{moss['id']}": "other"}

    assert len(search(client, "Observation?subject:Patient.identifier=" + quote(PERSON) + "|P100231")) == 3
    provenance = search(client, "Provenance")
    assert len(provenance) == 1
    assert provenance[0]["policy"] == ["https://www.legislation.gov.uk/ukpga/2018/12/schedule/8/paragraph/4"]


def test_reimport_changes_nothing_and_a_correction_updates_only_its_resource(client):
    content = fixture("notifications.csv")
    assert post_file(client, "police-notifications-csv", "notifications.csv", content).status_code == 200
    again = body(post_file(client, "police-notifications-csv", "notifications.csv", content))
    assert "0 created, 0 updated, 20 unchanged" in again["issue"][0]["diagnostics"]
    assert len(search(client, "Provenance")) == 1
    corrected = content.replace(b"Found in a trap house in Bramley", b"Found in a flat in Bramley")
    outcome = body(post_file(client, "police-notifications-csv", "notifications.csv", corrected))
    assert "0 created, 1 updated, 19 unchanged" in outcome["issue"][0]["diagnostics"]
    cce = notification(client, "20-250520-0133", "P100377")
    assert cce["meta"]["versionId"] == "2" and "a flat in Bramley" in cce["note"][0]["text"]
    assert len(search(client, "Patient")) == 4


def test_json_shape_maps_like_the_csv(client):
    res = post_file(client, "police-notifications-json", "notifications.json", fixture("notifications.json"))
    assert res.status_code == 200, body(res)
    da = notification(client, "20-250304-0117", "P100231")
    assert codes(da["code"]) == {(RISK, "domestic-abuse-child-present")}
    assert len(involved(da)) == 2 and security(da) == {SDV, RESTRICTED}
    assert notification(client, "20-250410-0458", "P100231")["effectivePeriod"]["end"] == "2025-04-11T08:15:00+01:00"
    # The same people as the CSV, so importing the CSV afterwards adds the rest and duplicates nothing.
    assert post_file(client, "police-notifications-csv", "n.csv", fixture("notifications.csv")).status_code == 200
    assert len(search(client, "Patient")) == 4
    assert len(search(client, f"Observation?identifier={quote(REFERENCE)}|20-250304-0117")) == 2


def test_json_issues_name_json_pointers():
    bad = (b'[{"force_code": "20", "police_reference": "R1", "notification_type": "DA", '
           b'"incident_start": "2025-03-04T21:40", "child": {"person_id": "C1", "dob": "2015-02-30", "shoe": 3},'
           b' "adults": [{"person_id": "A1", "relationship": "neighbour"}]}, 7]')
    agency, result = map_json_files([SourceFile("n.json", bad)])
    assert agency is not None and agency.code == "20"
    where = {(i.severity, i.location, i.field) for i in result.issues}
    assert ("error", "/0/child", "dob") in where
    assert ("warning", "/0/child", "shoe") in where
    assert ("warning", "/0/adults/0", "relationship") in where
    assert ("error", "/1", "") in where
    assert ("warning", "/0", "child_present") in where  # DA without presence: read as not known
    assert map_json_files([SourceFile("n.json", b"{}")])[0] is None


def test_bad_rows_reject_the_file_by_default_and_lenient_loads_the_rest(client):
    content = fixture("bad.csv")
    strict = post_file(client, "police-notifications-csv", "bad.csv", content)
    assert strict.status_code == 422
    issues = body(strict)["issue"]
    expressions = {e for i in issues for e in i.get("expression", [])}
    assert "bad.csv#line 2/child_dob" in expressions
    assert "bad.csv#line 4/police_reference" in expressions
    assert "bad.csv#line 6/incident_end" in expressions
    assert search(client, "Patient") == [] and search(client, "Observation") == []

    lenient = post_file(client, "police-notifications-csv", "bad.csv", content, lenient=True)
    assert lenient.status_code == 200, body(lenient)
    # Jayden's date of birth is impossible: his record and both his notifications are dropped.
    assert search(client, f"Patient?identifier={quote(PERSON)}|P300001") == []
    assert search(client, f"Observation?identifier={quote(REFERENCE)}|20-250702-0001") == []
    assert search(client, f"Observation?identifier={quote(REFERENCE)}|20-250705-0002") == []
    assert search(client, f"Observation?identifier={quote(REFERENCE)}|20-250709-0005") == []  # end before start
    # Unknown codes are kept as text and reported, never dropped.
    asb = notification(client, "20-250708-0004", "P300003")
    assert asb["code"] == {"text": "ASB"} and security(asb) == {RESTRICTED}
    uncle = one(client, f"RelatedPerson?identifier={quote(PERSON)}|A400003")
    assert uncle["relationship"] == [{"text": "uncle"}]
    mason = patient(client, "P300003")
    assert [i["system"] for i in mason["identifier"]] == [PERSON]  # 1234567890 is not an NHS number
    assert "gender" not in mason  # "boy" is not a gender code: kept as the original text
    assert mason["_gender"]["extension"][0]["valueString"] == "boy"
    # An adult's impossible date of birth is reported but does not cost the child's notification.
    gill = one(client, f"RelatedPerson?identifier={quote(PERSON)}|A400005")
    assert "birthDate" not in gill
    noah = notification(client, "20-250710-0006", "P300005")
    assert codes(noah["code"]) == {(RISK, "domestic-abuse-child-not-present")}
    reported = [i["diagnostics"] for i in body(lenient)["issue"]]
    assert any("unknown notification type 'ASB'" in d for d in reported)
    assert any("unknown relationship 'uncle'" in d for d in reported)
    assert any("refers to record person P300001" in d for d in reported)


def test_rows_of_one_notification_that_disagree_are_reported():
    header, first = fixture("notifications.csv").split(b"\n")[:2]
    second = first.replace(b"A200114,Daniel", b"A200115,Sarah").replace(b"2025-03-04T21:40", b"2025-03-05T21:40")
    agency, result = map_csv_files([SourceFile("n.csv", b"\n".join([header, first, second]) + b"\n")])
    assert not result.has_errors
    assert any(i.field == "incident_start" and "line 2 is kept" in i.message for i in result.issues)
    observations = [u for u in result.upserts if u.resource_type == "Observation"]
    assert len(observations) == 1 and observations[0].resource["effectiveDateTime"].startswith("2025-03-04")


def test_one_force_per_file():
    header, first = fixture("notifications.csv").split(b"\n")[:2]
    other = first.replace(b"20,20-250304-0117", b"13,13-250304-0117", 1)
    agency, result = map_csv_files([SourceFile("n.csv", b"\n".join([header, first, other]) + b"\n")])
    assert agency is not None and agency.code == "20"
    assert any(i.field == "force_code" and i.severity == "error" for i in result.issues)
    agency, result = map_csv_files([SourceFile("n.csv", b"force_code\n")])
    assert agency is None and result.has_errors


def test_marac_without_an_adult_is_reported():
    header = fixture("notifications.csv").split(b"\n")[0]
    row = b"20,20-250601-0099,MARAC,2025-06-01,,P100231,Amelia,Hughes,2015-06-14,F,,,,,,,,,,,,,,,Referred,"
    agency, result = map_csv_files([SourceFile("n.csv", header + b"\n" + row + b"\n")])
    assert [(i.severity, i.field) for i in result.issues] == [("warning", "adult_person_id")]
    observation = next(u.resource for u in result.upserts if u.resource_type == "Observation")
    assert "focus" not in observation and observation["code"]["coding"][0]["code"] == "marac-referral"
