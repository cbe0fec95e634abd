"""The loader: one file → one transaction, idempotent, with one Provenance per file."""
from __future__ import annotations

from mappings.core import Agency, MappingResult, SourceFile, SourceIssue, Upsert, identifier_match
from mappings.loader import import_file
from fhir_server.repository.context import RequestContext

from ..functional.test_crud import body

LA = Agency("local-authority", "201", "City of London Children's Services")
SYSTEM = "https://w3id.org/sg-fhir/Id/la-child-id/201"


def _result(family: str = "Patel", *, with_error: bool = False) -> MappingResult:
    result = MappingResult(records=2)
    for n, child_id in enumerate(("C1", "C2")):
        patient = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": child_id}],
                   "name": [{"family": family, "given": [f"Child{n}"]}]}
        pu = Upsert(patient, identifier_match(SYSTEM, child_id), record=child_id)
        flag = {"resourceType": "Flag", "status": "active", "code": {"text": "Child protection plan"},
                "subject": {"reference": pu.full_url}, "identifier": [{"system": SYSTEM + "/cpp", "value": child_id}]}
        result.upserts += [pu, Upsert(flag, identifier_match(SYSTEM + "/cpp", child_id), record=child_id)]
    if with_error:
        result.issues.append(SourceIssue("error", "cin.xml", "/Message/Children/Child[2]", "PersonBirthDate",
                                         "not a date", record="C2"))
        result.rejected_records = 1
    return result


def _import(app, result, content=b"file-1", lenient=False):
    services = app.extensions["fhir"]
    ctx = RequestContext(base_url=services.settings.base_url, client_id="la-201-etl")
    return import_file(services.router, ctx, result, LA, SourceFile("cin.xml", content), "cin-census-xml",
                       lenient=lenient)


def test_import_is_atomic_idempotent_and_has_provenance(app, client):
    first = _import(app, _result())
    assert first.written and first.created == 4
    patients = body(client.get(f"/fhir/Patient?identifier={SYSTEM}|C1"))
    assert patients["total"] == 1
    patient = patients["entry"][0]["resource"]
    assert patient["meta"]["source"].endswith("/agency/local-authority/201")
    flag = body(client.get(f"/fhir/Flag?subject=Patient/{patient['id']}"))["entry"][0]["resource"]
    assert flag["subject"]["reference"] == f"Patient/{patient['id']}"
    provenance = body(client.get("/fhir/Provenance"))
    assert provenance["total"] == 1
    prov = provenance["entry"][0]["resource"]
    assert len(prov["target"]) == 4 and all(t["reference"].count("/") == 1 for t in prov["target"])
    assert any("schedule/1" in p for p in prov["policy"])
    again = _import(app, _result())
    assert again.unchanged == 4 and again.created == 0 and again.updated == 0
    assert body(client.get("/fhir/Provenance"))["total"] == 1
    assert body(client.get(f"/fhir/Patient/{patient['id']}"))["meta"]["versionId"] == "1"
    corrected = _import(app, _result("Patel-Shah"), content=b"file-2")
    assert corrected.updated == 2 and corrected.unchanged == 2
    assert body(client.get("/fhir/Provenance"))["total"] == 2


def test_errors_reject_the_file_unless_lenient(app, client):
    strict = _import(app, _result(with_error=True))
    assert not strict.written
    assert body(client.get("/fhir/Patient"))["total"] == 0
    assert strict.outcome()["issue"][1]["expression"] == ["cin.xml#/Message/Children/Child[2]/PersonBirthDate"]
    lenient = _import(app, _result(with_error=True), lenient=True)
    assert lenient.written and lenient.created == 2
    assert body(client.get(f"/fhir/Patient?identifier={SYSTEM}|C2"))["total"] == 0


def test_a_file_larger_than_the_client_bundle_limit_still_loads_as_one_transaction(app, client):
    router = app.extensions["fhir"].router
    router.settings = router.settings.with_overrides(max_bundle_entries=3)
    summary = _import(app, _result())
    assert summary.written and summary.created == 4
    assert body(client.get("/fhir/Flag"))["total"] == 2


NHS = "https://fhir.nhs.uk/Id/nhs-number"
TAG = "https://w3id.org/sg-fhir/CodeSystem/source-agency"
POLICE = Agency("police", "20", "20 Police")
TRUST = Agency("health", "R9Q", "R9Q NHS trust")
URN = "https://w3id.org/sg-fhir/Id/school-urn"


def _import_as(app, agency, upserts, content):
    services = app.extensions["fhir"]
    ctx = RequestContext(base_url=services.settings.base_url, client_id="etl")
    return import_file(services.router, ctx, MappingResult(upserts, records=len(upserts)), agency,
                       SourceFile("f", content), "test")


def _nhs_patient(family: str) -> Upsert:
    patient = {"resourceType": "Patient", "identifier": [{"system": NHS, "value": "9434765919"}],
               "name": [{"family": family}]}
    return Upsert(patient, identifier_match(NHS, "9434765919"), merge=True)


def test_every_match_is_scoped_to_the_importing_agency(app, client):
    assert _import_as(app, POLICE, [_nhs_patient("Police-Smith")], b"police").created == 1
    assert _import_as(app, TRUST, [_nhs_patient("Trust-Smith")], b"trust").created == 1
    patients = [e["resource"] for e in body(client.get(f"/fhir/Patient?identifier={NHS}|9434765919"))["entry"]]
    assert sorted((p["name"][0]["family"], p["meta"]["tag"][0]["code"], p["meta"]["versionId"]) for p in patients) \
        == [("Police-Smith", "police/20", "1"), ("Trust-Smith", "health/R9Q", "1")]
    # each agency's own record is still the one its next import updates
    assert _import_as(app, POLICE, [_nhs_patient("Police-Smyth")], b"police-2").updated == 1
    families = {e["resource"]["name"][0]["family"]
                for e in body(client.get(f"/fhir/Patient?identifier={NHS}|9434765919"))["entry"]}
    assert families == {"Police-Smyth", "Trust-Smith"}


def test_shared_reference_data_is_matched_across_agencies(app, client):
    def school(name: str | None) -> Upsert:
        org = {"resourceType": "Organization", "identifier": [{"system": URN, "value": "100234"}], "active": True}
        if name:
            org["name"] = name
        return Upsert(org, identifier_match(URN, "100234"), merge=True, shared=True)

    education = [Agency("education", la, f"LA {la} education service") for la in ("201", "202")]
    assert _import_as(app, education[0], [school("Hillside Primary")], b"201").created == 1
    assert _import_as(app, education[1], [school(None)], b"202").updated == 1  # it adds its tag
    for n in range(2):  # and after that neither changes it
        again = _import_as(app, education[n], [school("Hillside Primary" if n == 0 else None)], b"%d" % n)
        assert again.unchanged == 1
    found = body(client.get(f"/fhir/Organization?identifier={URN}|100234"))
    assert found["total"] == 1
    org = found["entry"][0]["resource"]
    assert org["name"] == "Hillside Primary" and org["meta"]["versionId"] == "2"
    assert [t["code"] for t in org["meta"]["tag"]] == ["education/201", "education/202"]
    assert org["meta"]["source"].endswith("/agency/education/201")
