"""ssda903-csv: the tables of one return through $import-agency-data into the real database.

Fixtures (tests/mappings/fixtures/ssda903/) are synthetic: 201_{header,episodes,missing}.csv is a
clean return of three children; 201_*_bad.csv a return with a problem of every kind.
"""
from __future__ import annotations

import io
from datetime import date
from pathlib import Path

from mappings.core import SourceFile
from mappings.ssda903 import map_files
from mappings.ssda903.reader import la_code_from_name

from ..functional.test_crud import body

FIXTURES = Path(__file__).parent / "fixtures" / "ssda903"
CLEAN = ("201_header.csv", "201_episodes.csv", "201_missing.csv")
BAD = ("201_header_bad.csv", "201_episodes_bad.csv", "201_missing_bad.csv")
BASE = "https://w3id.org/sg-fhir"
CHILD_ID = f"{BASE}/Id/la-child-id/201"
EPISODE_ID = f"{BASE}/Id/201/ssda903-episode"
FLAG_ID = f"{BASE}/Id/201/ssda903-looked-after-flag"
MISSING_ID = f"{BASE}/Id/201/ssda903-missing"
EXT = f"{BASE}/StructureDefinition"
TODAY = date(2025, 6, 30)
INFERRED = ("information", "collection-year")  # the year the import inferred, without collection-year


def _files(*names: str, **replaced: bytes) -> list[tuple[str, bytes]]:
    return [(n, replaced.get(n.replace(".", "_"), (FIXTURES / n).read_bytes())) for n in names]


def _post(client, files: list[tuple[str, bytes]], *, lenient: bool = False):
    data = {"file": [(io.BytesIO(content), name) for name, content in files]}
    url = "/fhir/$import-agency-data?format=ssda903-csv" + ("&lenient=true" if lenient else "")
    return client.post(url, data=data, content_type="multipart/form-data")


def _summary(res) -> str:
    return body(res)["issue"][0]["diagnostics"]


def _one(client, query: str) -> dict:
    bundle = body(client.get(f"/fhir/{query}"))
    assert bundle["total"] == 1, (query, bundle["total"])
    return bundle["entry"][0]["resource"]


def _codes(concepts: list[dict]) -> set[str]:
    return {c.get("code") or "" for concept in concepts for c in concept.get("coding", [])}


def _ext(resource: dict, name: str) -> dict:
    found = [e for e in resource.get("extension", []) if e["url"] == f"{EXT}/{name}"]
    assert len(found) == 1, name
    return found[0]


# --- mapping rules, end to end ---------------------------------------------------------------------

def test_a_return_maps_children_episodes_flags_and_missing_episodes(client):
    res = _post(client, _files(*CLEAN))
    assert res.status_code == 200, body(res)
    assert "3 records, 0 rejected; 15 resources: 15 created" in _summary(res)

    oliver = _one(client, f"Patient?identifier={CHILD_ID}|C1001")
    assert {(i["system"].rsplit("/", 2)[-2:][-1], i["value"]) for i in oliver["identifier"]} == \
        {("201", "C1001"), ("upn", "K201400112345")}
    assert oliver["gender"] == "male" and oliver["birthDate"] == "2012-03-12"
    assert _ext(oliver, "ethnic-category")["valueCodeableConcept"]["coding"][0]["code"] == "WBRI"
    assert oliver["meta"]["source"].endswith("/agency/local-authority/201")
    assert oliver["managingOrganization"]["reference"].startswith("Organization/")
    # UN2 ("UPN unknown") is no identifier
    assert [i["value"] for i in _one(client, f"Patient?identifier={CHILD_ID}|C1002")["identifier"]] == ["C1002"]

    first = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|C1001/2022-04-01")
    assert first["status"] == "finished" and first["period"] == {"start": "2022-04-01", "end": "2022-09-15"}
    assert _codes(first["type"]) == {"looked-after", "C2", "U4"}
    assert first["patient"]["reference"] == f"Patient/{oliver['id']}"
    assert _ext(first, "ssda903-reason-new-episode")["valueCodeableConcept"]["coding"][0]["code"] == "S"
    assert _ext(first, "ssda903-reason-episode-ceased")["valueCodeableConcept"]["coding"][0]["code"] == "X1"
    assert _ext(first, "ssda903-reason-place-change")["valueCodeableConcept"]["coding"][0]["code"] == "CREQB"
    assert _ext(first, "ssda903-category-of-need")["valueCodeableConcept"]["coding"][0]["code"] == "N1"
    assert _ext(first, "ssda903-placement-provider")["valueCodeableConcept"]["coding"][0]["code"] == "PR1"
    assert _ext(first, "ssda903-home-postcode")["valueString"] == "LS8 4"
    current = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|C1001/2022-09-15")
    assert current["status"] == "active" and "end" not in current["period"]
    assert _ext(current, "ssda903-placement-urn")["valueIdentifier"]["value"] == "SC123456"
    assert body(client.get(f"/fhir/EpisodeOfCare?type={BASE}/CodeSystem/ssda903-placement-type|K2"))["total"] == 1

    # the Flag follows the latest period of care: X1 links episodes, E4A ends a period
    flag = _one(client, f"Flag?identifier={FLAG_ID}|C1001")
    assert flag["status"] == "active" and flag["period"] == {"start": "2022-04-01"}
    assert flag["code"]["coding"][0]["code"] == "looked-after"
    assert flag["subject"]["reference"] == f"Patient/{oliver['id']}"
    assert _one(client, f"Flag?identifier={FLAG_ID}|C1002")["status"] == "inactive"
    assert _one(client, f"Flag?identifier={FLAG_ID}|C1002")["period"] == {"start": "2021-01-10", "end": "2022-02-28"}
    assert _one(client, f"Flag?identifier={FLAG_ID}|C1003")["period"] == {"start": "2023-06-01"}

    missing = _one(client, f"Observation?identifier={MISSING_ID}|C1001/2022-11-03/M")
    assert missing["code"]["coding"][0]["code"] == "missing-episode"
    assert missing["effectivePeriod"] == {"start": "2022-11-03", "end": "2022-11-04"}
    assert missing["performer"][0]["reference"].startswith("Organization/")
    away = _one(client, f"Observation?identifier={MISSING_ID}|C1001/2022-12-20/A")
    assert away["code"]["coding"][0]["code"] == "away-from-placement"
    assert _one(client, f"Observation?identifier={MISSING_ID}|C1003/2024-02-14/M")["effectivePeriod"] == \
        {"start": "2024-02-14"}

    provenance = body(client.get("/fhir/Provenance"))["entry"][0]["resource"]
    assert len(provenance["target"]) == 15
    assert provenance["entity"][0]["what"]["display"] == ", ".join(CLEAN)


def test_reimport_changes_nothing_and_a_corrected_return_updates_only_what_changed(client):
    assert _post(client, _files(*CLEAN)).status_code == 200
    again = _post(client, _files(*CLEAN))
    assert "15 resources: 0 created, 0 updated, 15 unchanged" in _summary(again)
    assert body(client.get("/fhir/Provenance"))["total"] == 1

    # a later return: Oliver's placement in the children's home ended; he went home (E4A)
    episodes = (FIXTURES / "201_episodes.csv").read_text().replace(
        "C1001,15/09/2022,P,C2,N1,K2,PR4,,,", "C1001,15/09/2022,P,C2,N1,K2,PR4,31/03/2025,E4A,")
    corrected = _post(client, _files(*CLEAN, **{"201_episodes_csv": episodes.encode()}))
    assert "15 resources: 0 created, 2 updated, 13 unchanged" in _summary(corrected)
    flag = _one(client, f"Flag?identifier={FLAG_ID}|C1001")
    assert flag["status"] == "inactive" and flag["period"] == {"start": "2022-04-01", "end": "2025-03-31"}
    assert flag["meta"]["versionId"] == "2"
    assert body(client.get("/fhir/Provenance"))["total"] == 2


def test_local_authority_from_an_la_code_column_or_the_file_names():
    header = b"CHILD,SEX,DOB,LA_CODE\nC1,1,01/02/2015,937\n"
    agency, result = map_files([SourceFile("header.csv", header)], today=TODAY)
    assert agency is not None and agency.code == "937" and not result.issues
    assert la_code_from_name("exports/201_header.csv") == "201" and la_code_from_name("header.csv") is None

    agency, result = map_files([SourceFile("header.csv", b"CHILD,SEX,DOB\nC1,1,01/02/2015\n")], today=TODAY)
    assert agency is None
    assert [(i.severity, i.field, i.record) for i in result.issues] == [("error", "LA_CODE", "")]
    assert "<LA>_header.csv" in result.issues[0].message

    agency, result = map_files([SourceFile("201_header.csv", header)], today=TODAY)
    assert agency is None and "does not match" in result.issues[0].message
    agency, result = map_files([SourceFile("201_header.csv", b"CHILD,SEX,DOB\nC1,1,01/02/2015\n"),
                                SourceFile("202_episodes.csv", b"CHILD,DECOM,RNE,LS,PLACE,DEC,REC\n")], today=TODAY)
    assert agency is None and "several local authorities" in result.issues[0].message


def test_tables_are_recognised_by_their_header_rows(client):
    reviews = ("201_reviews.csv", b"CHILD,DOB,REVIEW,REVIEW_CODE\nC1001,12/03/2012,01/05/2022,PN1\n")
    agency, result = map_files([SourceFile(n, c) for n, c in [reviews, *_files(*CLEAN)]], today=TODAY)
    assert agency is not None
    assert [(i.severity, i.file, i.message) for i in result.issues] == \
        [("warning", "201_reviews.csv", "SSDA903 Reviews table: not mapped, ignored"),
         ("information", "201_reviews.csv, 201_header.csv, 201_episodes.csv, 201_missing.csv",
          "no collection-year was given: inferred 2024 (1 April 2023 to 31 March 2024) from the latest date in "
          "the files, 2024-02-14; give collection-year to state it")]

    res = _post(client, [("201_notes.csv", b"name,text\nx,y\n"), *_files(*CLEAN)])
    assert res.status_code == 422
    assert body(res)["issue"][1]["expression"] == ["201_notes.csv#line 1/"]
    assert body(client.get("/fhir/Patient"))["total"] == 0

    agency, result = map_files([SourceFile(n, c) for n, c in _files("201_episodes.csv")], today=TODAY)
    assert agency is None and "no Header table" in result.issues[0].message
    agency, result = map_files([SourceFile(n, c) for n, c in _files("201_header.csv", "201_header.csv")], today=TODAY)
    assert agency is None and "a second Header table" in result.issues[0].message


def test_bad_return_is_rejected_by_default_and_loads_valid_children_when_lenient(client):
    strict = _post(client, _files(*BAD))
    assert strict.status_code == 422
    assert body(client.get("/fhir/Patient"))["total"] == 0
    issues = body(strict)["issue"][1:]
    where = {(i["severity"], i["expression"][0]) for i in issues}
    assert ("error", "201_header_bad.csv#line 4/DOB") in where  # 31/02/2014
    assert ("error", "201_header_bad.csv#line 3/CHILD") in where  # no CHILD
    assert ("error", "201_episodes_bad.csv#line 3/DECOM") in where  # 12/25/2022, day and month swapped
    assert ("error", "201_episodes_bad.csv#line 4/DEC") in where  # DEC before DECOM
    assert ("error", "201_episodes_bad.csv#line 5/CHILD") in where  # not in the Header table
    assert ("warning", "201_header_bad.csv#line 5/SEX") in where  # X: kept as text
    assert ("warning", "201_header_bad.csv#line 5/ETHNIC") in where
    assert ("warning", "201_header_bad.csv#line 5/UPN") in where
    assert ("warning", "201_episodes_bad.csv#line 6/LS") in where  # Z9: kept as text
    assert ("warning", "201_missing_bad.csv#line 2/MISSING") in where
    swapped = next(i for i in issues if i["expression"][0] == "201_episodes_bad.csv#line 3/DECOM")
    assert "swapped" in swapped["diagnostics"]

    lenient = _post(client, _files(*BAD), lenient=True)
    assert lenient.status_code == 200
    assert "rejected" in _summary(lenient)
    loaded = {p["resource"]["identifier"][0]["value"] for p in body(client.get("/fhir/Patient"))["entry"]}
    assert loaded == {"C2001", "C2003"}
    odd = _one(client, f"Patient?identifier={CHILD_ID}|C2003")
    assert odd["gender"] == "unknown" and _ext(odd, "source-value")["valueString"] == "SEX: X"
    assert _ext(odd, "ethnic-category")["valueCodeableConcept"] == {
        "text": "ZZZZ", "extension": [{"url": f"{EXT}/value-source", "valueCode": "ssda903"}]}
    episode = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|C2003/2023-02-01")
    assert {"text": "Z9"} in episode["type"]
    kept = _one(client, f"Observation?identifier={MISSING_ID}|C2001/2023-05-01/X")
    assert kept["code"] == {"text": "MISSING: X"}


def test_warnings_alone_do_not_stop_an_import(client):
    episodes = (FIXTURES / "201_episodes.csv").read_text().replace("C1002,10/01/2021,S,V2", "C1002,10/01/2021,S,Q7")
    res = _post(client, _files(*CLEAN, **{"201_episodes_csv": episodes.encode()}))
    assert res.status_code == 200
    warning = body(res)["issue"][1]
    assert warning["severity"] == "warning" and warning["expression"] == ["201_episodes.csv#line 4/LS"]
    assert {"text": "Q7"} in _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|C1002/2021-01-10")["type"]


# --- pure rules ----------------------------------------------------------------------------------------

def _map(header: str, episodes: str, missing: str = "") -> tuple:
    files = [SourceFile("201_header.csv", header.encode()), SourceFile("201_episodes.csv", episodes.encode())]
    if missing:
        files.append(SourceFile("201_missing.csv", missing.encode()))
    return map_files(files, today=TODAY)


HEADER = "CHILD,SEX,DOB,ETHNIC,UPN\nC9,2,01/01/2010,WBRI,\n"
EPISODE_COLUMNS = "CHILD,DECOM,RNE,LS,CIN,PLACE,PLACE_PROVIDER,DEC,REC\n"


def _flag(result) -> dict:
    return next(u.resource for u in result.upserts if u.resource_type == "Flag")


def test_flag_starts_at_the_latest_period_of_care():
    agency, result = _map(HEADER, EPISODE_COLUMNS + "C9,01/01/2020,S,V2,N4,U6,PR1,01/06/2020,E4A\n"
                                                    "C9,01/09/2021,S,C1,N1,U3,PR1,15/10/2021,X1\n"
                                                    "C9,15/10/2021,L,C2,N1,U4,PR1,,\n")
    assert _flag(result)["status"] == "active" and _flag(result)["period"] == {"start": "2021-09-01"}
    # a new period of care beginning the day the last one ended (RNE S) starts the flag afresh
    agency, result = _map(HEADER, EPISODE_COLUMNS + "C9,01/01/2020,S,V2,N4,U6,PR1,01/06/2020,E8\n"
                                                    "C9,01/06/2020,S,V2,N4,U6,PR1,,\n")
    assert _flag(result)["period"] == {"start": "2020-06-01"}


def test_episode_consistency_checks():
    agency, result = _map(HEADER, EPISODE_COLUMNS + "C9,01/01/2020,S,V2,N4,U6,PR1,,E4A\n")
    assert [(i.severity, i.field) for i in result.issues] == [("error", "DEC")]  # REC without DEC
    agency, result = _map(HEADER, EPISODE_COLUMNS + "C9,01/01/2020,S,V2,N4,U6,PR1,01/03/2020,\n")
    assert [(i.severity, i.field) for i in result.issues] == [("warning", "REC"), INFERRED]  # DEC without REC
    agency, result = _map(HEADER, EPISODE_COLUMNS + "C9,01/01/2009,S,V2,N4,U6,PR1,01/03/2009,E8\n")
    assert [(i.severity, i.field) for i in result.issues] == [("error", "DECOM"), INFERRED]  # before birth
    agency, result = _map(HEADER, EPISODE_COLUMNS + "C9,01/01/2020,S,V2,N4,U6,PR1,,\n"
                                                    "C9,01/01/2020,S,V2,N4,U6,PR1,,\n")
    assert [(i.severity, i.code) for i in result.issues] == [("error", "duplicate"), ("information", "informational")]
    agency, result = _map(HEADER, EPISODE_COLUMNS + "C9,01/01/2020,S,V2,N4,U6,PR1,,\n"
                                                    "C9,01/02/2020,P,V2,N4,U4,PR1,,\n")
    assert [(i.severity, i.field, i.location) for i in result.issues] == [("warning", "DEC", "line 2"), (*INFERRED, "")]
    agency, result = _map(HEADER, EPISODE_COLUMNS + "C9,01/07/2025,S,V2,N4,U6,PR1,,\n")
    assert [(i.severity, i.field) for i in result.issues] == [("error", "DECOM")]  # after today


def test_missing_episodes_on_the_same_day_are_told_apart():
    missing = ("CHILD,DOB,MISSING,MIS_START,MIS_END\n"
               "C9,01/01/2010,M,03/03/2023,03/03/2023\n"
               "C9,01/01/2010,M,03/03/2023,04/03/2023\n"
               "C9,01/01/2010,M,03/03/2023,04/03/2023\n"
               "C9,02/01/2010,A,05/03/2023,\n")
    agency, result = _map(HEADER, EPISODE_COLUMNS, missing)
    keys = [u.resource["identifier"][0]["value"] for u in result.upserts if u.resource_type == "Observation"]
    assert keys == ["C9/2023-03-03/M", "C9/2023-03-03/M#2", "C9/2023-03-05/A"]
    assert [(i.severity, i.field, i.location) for i in result.issues] == \
        [("warning", "DOB", "line 5"), ("warning", "MIS_START", "line 4"), (*INFERRED, "")]


def test_placement_urn_xxxxxxx_means_none():
    columns = EPISODE_COLUMNS.replace("REC\n", "REC,URN\n")
    agency, result = _map(HEADER, columns + "C9,01/01/2020,S,V2,N4,U6,PR1,,,XXXXXXX\n"
                                            "C9,01/02/2020,P,V2,N4,K2,PR4,,,SC654321\n")
    episodes = [u.resource for u in result.upserts if u.resource_type == "EpisodeOfCare"]
    urns = [[e["valueIdentifier"]["value"] for e in ep.get("extension", []) if e["url"].endswith("placement-urn")]
            for ep in episodes]
    assert urns == [[], ["SC654321"]]
