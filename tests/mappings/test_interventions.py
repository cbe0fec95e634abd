"""interventions-csv: an LA's early help interventions into the real database (SQLite and PostgreSQL).

Imports run through the loader (with a fixed "today", as the mapper checks dates against it) or through
``$import-agency-data`` over HTTP. Fixtures (tests/mappings/fixtures/interventions/) are synthetic:
202_interventions.csv is a clean file of LA 202 whose child C001 is the CIN census fixture's
(fixtures/cin/la202_2023.xml); 202_interventions_bad.csv has a problem of every kind.
"""
from __future__ import annotations

import io
from datetime import date
from pathlib import Path
from urllib.parse import quote

from fhir_server.repository.context import RequestContext
from mappings.cin_census import map_files as map_cin
from mappings.core import SourceFile
from mappings.interventions import map_files
from mappings.interventions.to_fhir import EXT_END_REASON, EXT_REFERRAL_DATE
from mappings.loader import ImportSummary, import_file

from ..functional.test_crud import body

HERE = Path(__file__).parent / "fixtures"
FIXTURES = HERE / "interventions"
CLEAN, BAD = "202_interventions.csv", "202_interventions_bad.csv"
BASE = "https://w3id.org/sg-fhir"
CS = f"{BASE}/CodeSystem"
CHILD_ID = f"{BASE}/Id/la-child-id/202"
EPISODE_ID = f"{BASE}/Id/202/intervention"
PRACTITIONER_ID = f"{BASE}/Id/202/practitioner"
PROVIDER_ID = f"{BASE}/Id/202/intervention-provider"
NHS = "https://fhir.nhs.uk/Id/nhs-number"
UPN = f"{BASE}/Id/upn"
TODAY = date(2025, 6, 30)
HEADER = ("la_code,episode_id,child_id,upn,nhs_number,forename,surname,dob,gender,postcode,intervention_type,"
          "provider,lead_professional_id,lead_professional,referral_date,start_date,end_date,end_reason\n")


def _text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def _load(app, name: str = CLEAN, text: str | None = None) -> ImportSummary:
    """Map (as of TODAY) and load one file through the loader, the path $import-agency-data takes."""
    source = SourceFile(name, (text if text is not None else _text(name)).encode())
    agency, result = map_files([source], today=TODAY)
    assert agency is not None, [i.message for i in result.issues]
    return _write(app, result, agency, source, "interventions-csv")


def _load_cin(app) -> ImportSummary:
    source = SourceFile("la202_2023.xml", (HERE / "cin" / "la202_2023.xml").read_bytes())
    agency, result = map_cin([source])
    assert agency is not None
    return _write(app, result, agency, source, "cin-census-xml")


def _write(app, result, agency, source: SourceFile, fmt: str) -> ImportSummary:
    services = app.extensions["fhir"]
    ctx = RequestContext(base_url=services.settings.base_url, client_id="la-202-etl")
    summary = import_file(services.router, ctx, result, agency, source, fmt)
    assert summary.written, [i.diagnostics for i in summary.issues]
    return summary


def _post(client, name: str, content: bytes, *, lenient: bool = False):
    url = "/fhir/$import-agency-data?format=interventions-csv" + ("&lenient=true" if lenient else "")
    return client.post(url, data={"file": [(io.BytesIO(content), name)]}, content_type="multipart/form-data")


def _search(client, query: str) -> list[dict]:
    bundle = body(client.get(f"/fhir/{query}"))
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


def _one(client, query: str) -> dict:
    found = _search(client, query)
    assert len(found) == 1, (query, len(found))
    return found[0]


def _ext(resource: dict, url: str) -> list[dict]:
    return [e for e in resource.get("extension", []) if e["url"] == url]


def _code(concepts: list[dict]) -> list[str]:
    return [c.get("code") or concept.get("text", "") for concept in concepts for c in concept.get("coding") or [{}]]


# --- mapping rules, end to end ---------------------------------------------------------------------

def test_a_file_maps_children_episodes_providers_and_lead_professionals(app, client):
    summary = _load(app)
    assert (summary.records, summary.rejected_records, summary.resources, summary.created) == (3, 0, 15, 15)
    assert not summary.issues

    amira = _one(client, f"Patient?identifier={CHILD_ID}|C001")
    assert {(i["system"], i["value"]) for i in amira["identifier"]} == {
        (CHILD_ID, "C001"), (NHS, "9434765919"), (UPN, "A202123456789")}
    # the latest intervention's name and postcode (she moved and took a double-barrelled surname)
    assert amira["name"] == [{"use": "official", "family": "Hussain-Reed", "given": ["Amira"]}]
    assert amira["address"] == [{"use": "home", "postalCode": "HX3 5QT"}]
    assert (amira["gender"], amira["birthDate"]) == ("female", "2012-04-17")
    assert amira["meta"]["source"].endswith("/agency/local-authority/202")
    la = body(client.get(f"/fhir/{amira['managingOrganization']['reference']}"))
    assert la["identifier"] == [{"system": f"{BASE}/Id/la-code", "value": "202"}]

    done = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|EH202-0001")
    assert done["status"] == "finished" and done["period"] == {"start": "2022-02-01", "end": "2022-05-31"}
    assert done["type"] == [{"coding": [{"system": f"{CS}/episode-type", "code": "early-help",
                                         "display": "Early help family support"}]}]
    assert done["patient"]["reference"] == f"Patient/{amira['id']}"
    assert _ext(done, EXT_REFERRAL_DATE) == [{"url": EXT_REFERRAL_DATE, "valueDate": "2022-01-10"}]
    assert _ext(done, EXT_END_REASON) == [{"url": EXT_END_REASON, "valueString": "completed"}]
    assert done["meta"]["tag"][0]["code"] == "local-authority/202"

    hub = body(client.get(f"/fhir/{done['managingOrganization']['reference']}"))
    assert hub["name"] == "Calderdale Early Help Family Hub" and hub["identifier"] == [
        {"system": PROVIDER_ID, "value": "calderdale early help family hub"}]
    # another spelling of the hub's name is the same Organization
    leo_help = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|EH202-0005")
    assert leo_help["managingOrganization"]["reference"] == done["managingOrganization"]["reference"]
    assert len(_search(client, f"Organization?identifier={PROVIDER_ID}|")) == 4

    lead = body(client.get(f"/fhir/{done['careManager']['reference']}"))
    assert lead["resourceType"] == "Practitioner" and lead["name"] == [{"use": "official", "text": "Aoife O'Brien"}]
    assert lead["identifier"] == [{"system": PRACTITIONER_ID, "value": "202-EH001"}]
    assert done["careManager"]["display"] == "Aoife O'Brien"
    assert _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|EH202-0003")["careManager"]["reference"] == \
        done["careManager"]["reference"]

    ongoing = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|EH202-0002")
    assert ongoing["status"] == "active" and ongoing["period"] == {"start": "2023-10-02"}
    assert not _ext(ongoing, EXT_END_REASON)
    fgc = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|EH202-0003")
    assert _ext(fgc, EXT_END_REASON)[0]["valueString"] == "disengaged"
    referred = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|EH202-0004")  # offered, not started
    assert referred["status"] == "planned" and "period" not in referred
    assert _ext(referred, EXT_REFERRAL_DATE)[0]["valueDate"] == "2024-05-13"

    # searchable the ways an impact evaluation filters: by type, by provider, by lead professional
    assert len(_search(client, f"EpisodeOfCare?type={CS}/episode-type|early-help")) == 2
    by_provider = _search(client, "EpisodeOfCare?organization.name=Calderdale Early Help")
    assert {e["identifier"][0]["value"] for e in by_provider} == {"EH202-0001", "EH202-0005"}
    hub_key = quote(f"{PROVIDER_ID}|calderdale early help family hub")
    assert _search(client, f"EpisodeOfCare?organization:Organization.identifier={hub_key}") == by_provider
    by_name = "Practitioner?name=" + quote("aoife o'brien")  # the start of HumanName.text
    assert _one(client, by_name)["id"] == lead["id"]
    by_lead = _search(client, f"EpisodeOfCare?care-manager={done['careManager']['reference']}")
    assert {e["identifier"][0]["value"] for e in by_lead} == {"EH202-0001", "EH202-0003"}

    provenance = _one(client, "Provenance")
    assert len(provenance["target"]) == 15 and provenance["entity"][0]["what"]["display"] == CLEAN


def test_cin_census_then_interventions_complete_one_patient_with_the_episodes_attached(app, client):
    _load_cin(app)
    girl = _one(client, f"Patient?identifier={CHILD_ID}|C001")
    _load(app)
    patients = _search(client, f"Patient?identifier={CHILD_ID}|C001")
    assert len(patients) == 1 and patients[0]["id"] == girl["id"]
    child = patients[0]
    # what the census knew (disabilities, ethnicity) stays; the interventions file adds a name and address
    urls = [e["url"].rsplit("/", 1)[-1] for e in child["extension"]]
    assert urls.count("disability") == 2 and "ethnic-category" in urls
    assert child["name"][0]["family"] == "Hussain-Reed" and child["address"][0]["postalCode"] == "HX3 5QT"
    assert {i["system"] for i in child["identifier"]} == {CHILD_ID, NHS, UPN}
    assert [t["code"] for t in child["meta"]["tag"]] == ["local-authority/202"]
    episodes = _search(client, f"EpisodeOfCare?patient=Patient/{child['id']}")
    assert sorted(c["code"] for e in episodes for t in e["type"] for c in t.get("coding", [])
                  if c["system"] == f"{CS}/episode-type") == [
        "cin", "cp-plan", "early-help", "parenting-programme", "s47-enquiry"]
    # the interventions file is the same agency: the episodes and the census's are one LA's records
    org = {e["meta"]["source"] for e in episodes}
    assert len(org) == 1 and org.pop().endswith("/agency/local-authority/202")

    # a second round, in either order, writes no new version of anything
    version = child["meta"]["versionId"]
    again = _load_cin(app)
    assert again.created == 0 and again.updated == 0, again.outcome()["issue"][0]["diagnostics"]
    again = _load(app)
    assert again.created == 0 and again.updated == 0, again.outcome()["issue"][0]["diagnostics"]
    assert _one(client, f"Patient?identifier={CHILD_ID}|C001")["meta"]["versionId"] == version


def test_reimport_changes_nothing_and_a_corrected_file_updates_only_what_changed(app, client):
    _load(app)
    again = _load(app)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 15)
    assert len(_search(client, "Provenance")) == 1

    # a later export: Amira's parenting programme ended, completed
    text = _text(CLEAN).replace("2023-09-04,2023-10-02,,", "2023-09-04,2023-10-02,2023-12-18,completed")
    corrected = _load(app, text=text)
    assert (corrected.created, corrected.updated, corrected.unchanged) == (0, 1, 14)
    ended = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|EH202-0002")
    assert ended["status"] == "finished" and ended["period"] == {"start": "2023-10-02", "end": "2023-12-18"}
    assert _ext(ended, EXT_END_REASON)[0]["valueString"] == "completed"
    assert ended["meta"]["versionId"] == "2"
    assert len(_search(client, "Provenance")) == 2


def test_an_unknown_intervention_type_is_kept_as_text_with_a_warning(client):
    text = _text(CLEAN).replace(",mentoring,", ",Youth mentoring,")
    res = _post(client, CLEAN, text.encode())
    assert res.status_code == 200, body(res)
    issues = body(res)["issue"][1:]
    assert [(i["severity"], i["code"], i["expression"]) for i in issues] == [
        ("warning", "code-invalid", [f"{CLEAN}#line 5/intervention_type"])]
    assert "'Youth mentoring'" in issues[0]["diagnostics"] and "kept as text" in issues[0]["diagnostics"]
    episode = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|EH202-0004")
    assert episode["type"] == [{"text": "Youth mentoring"}]


def test_bad_file_is_rejected_by_default_and_loads_valid_children_when_lenient(client):
    content = (FIXTURES / BAD).read_bytes()
    strict = _post(client, BAD, content)
    assert strict.status_code == 422
    assert _search(client, "Patient") == [] and _search(client, "EpisodeOfCare") == []
    issues = body(strict)["issue"][1:]
    where = {(i["severity"], i["expression"][0]) for i in issues}
    assert ("error", f"{BAD}#line 3/start_date") in where  # 2023-13-05: day and month swapped
    assert ("error", f"{BAD}#line 4/end_date") in where  # before start_date
    assert ("error", f"{BAD}#line 5/child_id") in where  # no child
    assert ("error", f"{BAD}#line 8/episode_id") in where  # the same episode id with other details
    assert ("error", f"{BAD}#line 9/end_date") in where  # an end reason without an end date
    assert ("error", f"{BAD}#line 10/referral_date") in where  # in the future
    assert ("error", f"{BAD}#line 11/intervention_type") in where  # blank
    for column in ("intervention_type", "end_reason", "gender", "nhs_number"):
        assert ("warning", f"{BAD}#line 6/{column}") in where
    assert ("warning", f"{BAD}#line 12/episode_id") in where  # an exact repeat, written once
    swapped = next(i for i in issues if i["expression"][0] == f"{BAD}#line 3/start_date")
    assert "swapped" in swapped["diagnostics"]

    lenient = _post(client, BAD, content, lenient=True)
    assert lenient.status_code == 200
    assert "9 records, 7 rejected" in body(lenient)["issue"][0]["diagnostics"]
    loaded = {p["identifier"][0]["value"] for p in _search(client, "Patient")}
    assert loaded == {"C020", "C023"}
    odd = _one(client, f"Patient?identifier={CHILD_ID}|C023")
    assert odd["gender"] == "unknown" and [i["system"] for i in odd["identifier"]] == [CHILD_ID]  # no bad NHS number
    episode = _one(client, f"EpisodeOfCare?identifier={EPISODE_ID}|EH202-B005")
    assert episode["type"] == [{"text": "Early Help Assessment"}]
    assert _ext(episode, EXT_END_REASON)[0]["valueString"] == "moved away"
    assert len(_search(client, f"EpisodeOfCare?identifier={EPISODE_ID}|EH202-B001")) == 1


# --- pure rules ----------------------------------------------------------------------------------------

def _map(*rows: str, name: str = "202_interventions.csv"):
    return map_files([SourceFile(name, (HEADER + "".join(r + "\n" for r in rows)).encode())], today=TODAY)


def _row(child: str = "C9", episode: str = "E1", kind: str = "early-help", referral: str = "2024-01-02",
         start: str = "2024-02-01", end: str = "", reason: str = "", dob: str = "2015-05-05", la: str = "202",
         lead: tuple[str, str] = ("L1", "Sam Lee"), provider: str = "Hub") -> str:
    return (f"{la},{episode},{child},,,Ann,Lee,{dob},F,HX1 1AA,{kind},{provider},{lead[0]},{lead[1]},"
            f"{referral},{start},{end},{reason}")


def _issues(result) -> list[tuple[str, str]]:
    return [(i.severity, i.field) for i in result.issues]


def _episodes(result) -> list[dict]:
    return [u.resource for u in result.upserts if u.resource_type == "EpisodeOfCare"]


def test_one_local_authority_per_import():
    agency, result = _map(_row(la=""))
    assert agency is None and [(i.severity, i.field, i.record) for i in result.issues] == [("error", "la_code", "")]
    agency, result = _map(_row(), _row(child="C8", episode="E2", la="203"))
    assert agency is None and "several local authorities" in result.issues[0].message
    agency, result = map_files([SourceFile("x.csv", b"la_code,child_id,episode_id\n202,C1,E1\n")], today=TODAY)
    assert agency is None and {(i.severity, i.field) for i in result.issues} == {
        ("error", "intervention_type"), ("error", "start_date")}  # required columns missing
    agency, result = _map(_row())
    assert agency is not None and (agency.kind, agency.code) == ("local-authority", "202") and not result.issues
    assert agency.name == "Local authority 202 children's social care"  # the CIN census's agency


def test_status_follows_the_dates():
    agency, result = _map(_row(episode="E1", start="2025-09-01"),  # a start still to come: planned
                          _row(episode="E2", start=""),  # referred, not started
                          _row(episode="E3", end="2024-06-01", reason="Completed"))
    planned, referred, finished = _episodes(result)
    assert (planned["status"], planned["period"]) == ("planned", {"start": "2025-09-01"})
    assert referred["status"] == "planned" and "period" not in referred
    assert finished["status"] == "finished" and _ext(finished, EXT_END_REASON)[0]["valueString"] == "completed"
    assert not result.issues

    agency, result = _map(_row(start="", referral=""))
    assert _issues(result) == [("error", "start_date")]
    agency, result = _map(_row(start="", end="2024-05-01", reason="completed"))
    assert _issues(result) == [("error", "start_date")]
    agency, result = _map(_row(end="2024-05-01"))
    assert _issues(result) == [("warning", "end_reason")]
    agency, result = _map(_row(end="2025-07-01", reason="completed"))
    assert _issues(result) == [("error", "end_date")]  # after today


def test_date_checks_that_only_warn():
    agency, result = _map(_row(referral="2024-03-01"))
    assert _issues(result) == [("warning", "referral_date")]  # started before it was offered
    agency, result = _map(_row(dob="2024-03-01"))
    assert _issues(result) == [("warning", "start_date")]  # before birth: pre-birth work, or a wrong date
    assert _episodes(result)


def test_statutory_types_are_no_interventions():
    agency, result = _map(_row(kind="cp-plan"))
    assert _issues(result) == [("warning", "intervention_type")] and "statutory" in result.issues[0].message
    assert _episodes(result)[0]["type"] == [{"text": "cp-plan"}]
    agency, result = _map(_row(kind="Parenting-Programme"))  # codes are matched case-insensitively
    assert _code(_episodes(result)[0]["type"]) == ["parenting-programme"] and not result.issues


def test_lead_professionals_and_providers():
    agency, result = _map(_row(episode="E1", lead=("", "Sam Lee"), provider=""),
                          _row(episode="E2", lead=("L2", "Jo Bloggs")),
                          _row(episode="E3", lead=("L2", "Joanne Bloggs")))
    assert _issues(result) == [("warning", "lead_professional_id"), ("warning", "lead_professional")]
    unnamed, named, renamed = _episodes(result)
    assert unnamed["careManager"] == {"display": "Sam Lee"}  # no id: no Practitioner
    assert unnamed["managingOrganization"]["display"] == "Local authority 202 children's social care"
    assert renamed["careManager"]["display"] == "Jo Bloggs"  # the first name given for L2 is kept
    practitioners = [u for u in result.upserts if u.resource_type == "Practitioner"]
    assert len(practitioners) == 1 and not practitioners[0].merge and not practitioners[0].shared
    providers = [u for u in result.upserts if u.resource_type == "Organization"]
    assert len(providers) == 1 and not providers[0].merge and not providers[0].shared


def test_a_child_in_several_rows_is_one_patient_and_disagreements_are_reported():
    later = _row(episode="E2", referral="2024-06-01", start="2024-07-01", dob="2015-05-06").replace(
        ",Lee,", ",Lee-Smith,")
    agency, result = _map(_row(episode="E1"), later)
    patients = [u.resource for u in result.upserts if u.resource_type == "Patient"]
    assert len(patients) == 1
    assert patients[0]["name"][0]["family"] == "Lee-Smith" and patients[0]["birthDate"] == "2015-05-06"
    assert _issues(result) == [("warning", "dob")]
    assert {e["patient"]["reference"] for e in _episodes(result)} == {
        next(u.full_url for u in result.upserts if u.resource_type == "Patient")}
