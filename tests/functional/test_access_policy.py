"""Agency/role policy, security labels, Consent and break-glass through HTTP, on SQLite and
PostgreSQL, with authentication on (tokens from the development issuer, as in test_auth.py).

One small multi-agency record is seeded as the server's own work: a child known to the local
authority, the police (a domestic-abuse notification and Flag, labelled SDV + R), health (an A&E
attendance labelled R, a mental-health Observation labelled PSY) and education (attendance).
"""
from __future__ import annotations

import logging
from typing import Any

import pytest
import simplejson
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from fhir_server.auth.labels import ACT_CODE, AGENCY_TAG_SYSTEM, CONFIDENTIALITY
from fhir_server.auth.service import AuthService
from fhir_server.repository.context import RequestContext
from fhir_server.storage.tables import resource
from tests.functional.test_auth import auth_app, auth_conn, auth_settings  # noqa: F401 - fixtures

FHIR_JSON = "application/fhir+json"
SDV = {"system": ACT_CODE, "code": "SDV"}
PSY = {"system": ACT_CODE, "code": "PSY"}
R = {"system": CONFIDENTIALITY, "code": "R"}
V = {"system": CONFIDENTIALITY, "code": "V"}
RISK_FACTOR = "https://w3id.org/sg-fhir/CodeSystem/risk-factor"
SCHEDULE_1 = "https://www.legislation.gov.uk/ukpga/2018/12/schedule/1/part/2/paragraph/18"


def tag(agency: str) -> dict[str, str]:
    return {"system": AGENCY_TAG_SYSTEM, "code": agency}


def meta(agency: str, *labels: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"tag": [tag(agency)]}
    if labels:
        out["security"] = list(labels)
    return out


def obs(res_id: str, agency: str, text: str, subject: str = "Patient/child", *labels: dict[str, str],
        code: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": text}
    if code:  # a risk-factor code: the family summary shows the Observation as a fact
        concept["coding"] = [{"system": RISK_FACTOR, "code": code, "display": text}]
    return {"resourceType": "Observation", "id": res_id, "status": "final", "code": concept,
            "effectiveDateTime": "2024-05-01", "subject": {"reference": subject}, "meta": meta(agency, *labels)}


RECORD: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "la", "name": "LA 201",
     "identifier": [{"system": "https://w3id.org/sg-fhir/Id/la-code", "value": "201"}],
     "meta": meta("local-authority/201")},
    {"resourceType": "Organization", "id": "trust", "name": "RXX trust",
     "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RXX"}],
     "meta": meta("health/RXX")},
    {"resourceType": "Patient", "id": "child", "name": [{"family": "Okafor", "given": ["Ada"]}],
     "birthDate": "2015-03-01", "meta": meta("local-authority/201")},
    {"resourceType": "Patient", "id": "other", "name": [{"family": "Other"}], "meta": meta("local-authority/201")},
    obs("ed-visit", "health/RXX", "A&E attendance: head injury", "Patient/child", R, code="ed-injury"),
    obs("mental-health", "health/RXX", "CAMHS referral", "Patient/child", PSY, code="ed-safeguarding-concern"),
    obs("health-plain", "health/RXX", "Weight"),
    obs("da-notice", "police/01", "Domestic abuse incident", "Patient/child", SDV, R,
        code="domestic-abuse-child-present"),
    obs("attendance", "education/201", "Attendance 84%", code="persistent-absence"),
    obs("other-obs", "police/01", "Other child's incident", "Patient/other"),
    obs("very-restricted", "local-authority/201", "Adoption record", "Patient/child", V, code="looked-after"),
    {"resourceType": "Flag", "id": "police-flag", "status": "active", "code": {"text": "Operation Encompass notice"},
     "subject": {"reference": "Patient/child"}, "meta": meta("police/01", SDV, R)},
    {"resourceType": "Flag", "id": "cp-flag", "status": "active", "code": {"text": "Child protection plan"},
     "subject": {"reference": "Patient/child"}, "meta": meta("local-authority/201")},
    {"resourceType": "EpisodeOfCare", "id": "cin", "status": "active", "patient": {"reference": "Patient/child"},
     "meta": meta("local-authority/201")},
    {"resourceType": "Provenance", "id": "import", "recorded": "2024-01-01T00:00:00Z",
     "target": [{"reference": "Observation/da-notice"}, {"reference": "Observation/other-obs"},
                {"reference": "Patient/child"}],
     "agent": [{"who": {"display": "police feed"}}], "meta": meta("police/01")},
    {"resourceType": "AuditEvent", "id": "audit-1", "recorded": "2024-01-01T00:00:00Z",
     "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
     "agent": [{"requestor": True, "who": {"display": "someone"}}], "source": {"observer": {"display": "server"}}},
]


@pytest.fixture
def http(auth_app: Flask) -> FlaskClient:  # noqa: F811
    return auth_app.test_client()


@pytest.fixture
def auth(auth_app: Flask) -> AuthService:  # noqa: F811
    return auth_app.extensions["fhir"].auth


@pytest.fixture
def seeded(auth_app: Flask) -> Flask:  # noqa: F811
    seed(auth_app, RECORD)
    return auth_app


def seed(app: Flask, resources: list[dict[str, Any]]) -> None:
    services = app.extensions["fhir"]
    ctx = RequestContext.system(services.settings.base_url)
    with services.repo.unit_of_work() as uow:
        for res in resources:
            uow.update(ctx, res["resourceType"], res["id"], res)


def token(auth: AuthService, role: str, agency: str, *, scope: str = "user/*.rs", purpose: str | None = None,
          practitioner: str | None = "Practitioner/p1") -> str:
    return auth.mint_dev_token(client_id=f"{role}-app", scope=scope, practitioner=practitioner, agency=agency,
                               role=role, purpose=purpose)


def get(http: FlaskClient, url: str, tok: str, **headers: str) -> Any:
    return http.get(f"/fhir/{url}", headers={"Authorization": f"Bearer {tok}", **headers})


def send(http: FlaskClient, method: str, url: str, body: Any, tok: str, **headers: str) -> Any:
    return http.open(f"/fhir/{url}", method=method, data=simplejson.dumps(body), content_type=FHIR_JSON,
                     headers={"Authorization": f"Bearer {tok}", **headers})


def ids(bundle: dict[str, Any], res_type: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if res_type is None or e["resource"]["resourceType"] == res_type}


def summary_ids(document: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in document.get("entry", [])}


def count_rows(app: Flask) -> int:  # noqa: F811
    services = app.extensions["fhir"]
    with services.repo.unit_of_work(write=False) as uow:
        return int(uow.conn.execute(select(func.count()).select_from(resource)).scalar_one())


def assert_forbidden(res: Any, reason_text: str = "") -> None:
    assert res.status_code == 403, res.get_data(as_text=True)
    body = res.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "forbidden"
    assert reason_text in body["issue"][0]["diagnostics"]


# -- the examples -------------------------------------------------------------------------

def test_school_reads_flags_and_education_but_no_health_details(http: FlaskClient, auth: AuthService,
                                                                 seeded: Flask) -> None:
    school = token(auth, "school-dsl", "education:201", purpose="safeguarding")
    observations = get(http, "Observation?subject=Patient/child", school).get_json()
    assert ids(observations) == {"attendance"}
    assert observations["total"] == 1
    assert ids(get(http, "Flag?subject=Patient/child", school).get_json()) == {"police-flag", "cp-flag"}
    assert get(http, "Observation/ed-visit", school).status_code == 404
    assert get(http, "Observation/attendance", school).status_code == 200
    assert_forbidden(get(http, "Condition?subject=Patient/child", school), "may not read Condition")

    summary = get(http, "Patient/child/$family-summary", school).get_json()
    shown = summary_ids(summary)
    assert {"Observation/attendance", "Flag/police-flag", "Flag/cp-flag"} <= shown
    assert not shown & {"Observation/ed-visit", "Observation/mental-health", "Observation/health-plain",
                        "Observation/da-notice", "EpisodeOfCare/cin"}
    text = simplejson.dumps(summary)
    assert "head injury" not in text and "CAMHS" not in text and "health/RXX" not in text
    assert "Domestic abuse incident" not in text and "Operation Encompass notice" in text


def test_school_without_safeguarding_purpose_does_not_see_labelled_flags(http: FlaskClient, auth: AuthService,
                                                                         seeded: Flask) -> None:
    school = token(auth, "school-dsl", "education:201")
    assert ids(get(http, "Flag?subject=Patient/child", school).get_json()) == {"cp-flag"}


def test_mash_practitioner_for_safeguarding_reads_the_whole_family_summary(http: FlaskClient, auth: AuthService,
                                                                           seeded: Flask) -> None:
    mash = token(auth, "mash-practitioner", "la:201", purpose="safeguarding")
    shown = summary_ids(get(http, "Patient/child/$family-summary", mash).get_json())
    assert {"Observation/ed-visit", "Observation/mental-health", "Observation/da-notice", "Observation/attendance",
            "Observation/very-restricted", "Flag/police-flag", "Flag/cp-flag", "EpisodeOfCare/cin"} <= shown

    # the same practitioner for care management: sensitive records withheld
    care = token(auth, "mash-practitioner", "la:201", purpose="CAREMGT")
    shown = summary_ids(get(http, "Patient/child/$family-summary", care).get_json())
    assert "Observation/attendance" in shown and "Flag/cp-flag" in shown
    assert not shown & {"Observation/ed-visit", "Observation/mental-health", "Observation/da-notice",
                        "Flag/police-flag"}


def test_auditor_reads_audit_trail_and_provenance_but_no_clinical_content(http: FlaskClient, auth: AuthService,
                                                                          seeded: Flask) -> None:
    auditor = token(auth, "auditor", "la:201", purpose="HCOMPL")
    assert ids(get(http, "AuditEvent", auditor).get_json()) == {"audit-1"}
    assert "import" in ids(get(http, "Provenance", auditor).get_json())
    assert_forbidden(get(http, "Observation", auditor), "may not read Observation")
    assert_forbidden(get(http, "Patient/child", auditor), "may not read Patient")
    assert_forbidden(get(http, "Patient/child/$everything", auditor))
    # whole-system search and includes bring in nothing clinical either
    everything = get(http, "?_count=100", auditor).get_json()
    assert {e["resource"]["resourceType"] for e in everything.get("entry", [])} <= {"AuditEvent", "Provenance",
                                                                                    "Organization"}
    included = get(http, "Provenance?_include=Provenance:target", auditor).get_json()
    assert {e["resource"]["resourceType"] for e in included["entry"]} <= {"Provenance"}
    # the Provenance's targets are records the auditor may not see: left out, not leaked
    prov = next(e["resource"] for e in included["entry"] if e["resource"]["id"] == "import")
    assert prov["target"] == [{"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                              "valueCode": "masked"}]}]


def test_health_client_cannot_write_social_care_episodes(http: FlaskClient, auth: AuthService, seeded: Flask) -> None:
    health = token(auth, "health-safeguarding", "health:RXX", scope="user/*.cruds")
    before = count_rows(seeded)
    episode = {"resourceType": "EpisodeOfCare", "status": "active", "patient": {"reference": "Patient/child"}}
    assert_forbidden(send(http, "POST", "EpisodeOfCare", episode, health), "may not write EpisodeOfCare")
    assert_forbidden(send(http, "PUT", "EpisodeOfCare/cin", {**episode, "id": "cin"}, health))
    assert_forbidden(send(http, "DELETE", "EpisodeOfCare/cin", None, health))
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs("x1", "health/RXX", "ok"), "request": {"method": "PUT", "url": "Observation/x1"}},
        {"resource": episode, "request": {"method": "POST", "url": "EpisodeOfCare"}}]}
    assert send(http, "POST", "", transaction, health).status_code == 403
    assert count_rows(seeded) == before


def test_an_agency_writes_only_its_own_data(http: FlaskClient, auth: AuthService, seeded: Flask) -> None:
    health = token(auth, "health-safeguarding", "health:RXX", scope="user/*.cruds")
    before = count_rows(seeded)
    # another agency's record: not to be changed or deleted
    changed = obs("da-notice", "police/01", "rewritten", "Patient/child")
    assert_forbidden(send(http, "PUT", "Observation/da-notice", changed, health), "belongs to police/01")
    assert_forbidden(send(http, "DELETE", "Observation/attendance", None, health), "belongs to education/201")
    same = next(r for r in RECORD if r["id"] == "da-notice")  # even a PUT that would change nothing
    assert_forbidden(send(http, "PUT", "Observation/da-notice", same, health), "belongs to police/01")
    # a new record claiming to be another agency's
    assert_forbidden(send(http, "POST", "Observation", obs("n", "police/01", "forged"), health),
                     "tagged as another agency's")
    assert count_rows(seeded) == before
    # its own: created and stamped with its tag; updated
    plain = {"resourceType": "Observation", "status": "final", "code": {"text": "Height"},
             "subject": {"reference": "Patient/child"}}
    created = send(http, "POST", "Observation", plain, health)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert tag("health/RXX") in [{k: t[k] for k in ("system", "code")} for t in created.get_json()["meta"]["tag"]]
    assert send(http, "PUT", "Observation/health-plain", obs("health-plain", "health/RXX", "Weight 30kg"),
                health).status_code == 200
    # the auditor writes nothing, and nobody writes AuditEvents
    auditor = token(auth, "auditor", "la:201", scope="user/*.cruds")
    assert_forbidden(send(http, "POST", "Provenance", {"resourceType": "Provenance"}, auditor), "may not create")
    la = token(auth, "social-worker", "la:201", scope="user/*.cruds")
    assert_forbidden(send(http, "POST", "AuditEvent", RECORD[-1], la), "written by the server")
    nobody = auth.mint_dev_token(client_id="x", scope="user/*.cruds", role="social-worker")
    assert_forbidden(send(http, "POST", "Observation", plain, nobody), "names the agency")


# -- security labels: hidden inside the query, everywhere -------------------------------------------

@pytest.mark.parametrize("url", [
    "Observation?subject=Patient/child",
    "Observation?subject=Patient/child&_summary=count",
    "Observation?subject=Patient/child&_count=1",
    "Patient/child/Observation",
    "Patient/child/*",
    "Patient?_id=child&_revinclude=Observation:subject",
    "Flag?_id=police-flag",
    "Observation?subject:Patient.family=Okafor",
    "Patient?_has:Observation:subject:code:text=Domestic",
    "Observation/_history",
    "_history",
    "?_type=Observation,Flag",
    "Provenance?_id=import&_include=Provenance:target",
    "Patient/child/$everything",
])
def test_labelled_records_never_reach_a_caller_without_the_purpose(http: FlaskClient, auth: AuthService,
                                                                   seeded: Flask, url: str) -> None:
    care = token(auth, "social-worker", "la:201", purpose="CAREMGT")
    res = get(http, url, care)
    assert res.status_code == 200, res.get_data(as_text=True)
    body = res.get_json()
    text = simplejson.dumps(body.get("entry", []))  # (the links repeat the query)
    for hidden in ("da-notice", "ed-visit", "mental-health", "very-restricted", "police-flag",
                   "Domestic abuse", "Operation Encompass", "head injury", "CAMHS"):
        assert hidden not in text, (hidden, url)
    if "_summary=count" in url:
        assert body["total"] == 2  # health-plain and attendance: no leak through Bundle.total
    if url.startswith("Patient?_has"):
        assert body["total"] == 0
    if url.startswith("Observation?subject:Patient"):
        assert ids(body) == {"health-plain", "attendance"}


def test_labelled_records_are_released_for_safeguarding(http: FlaskClient, auth: AuthService, seeded: Flask) -> None:
    safeguarding = token(auth, "social-worker", "la:201", purpose="safeguarding")
    found = get(http, "Observation?subject=Patient/child&_summary=count", safeguarding).get_json()
    assert found["total"] == 4  # + da-notice and ed-visit (SDV, R); PSY and V stay withheld for a social worker
    assert get(http, "Observation/da-notice", safeguarding).status_code == 200
    assert get(http, "Observation/mental-health", safeguarding).status_code == 404
    # a vread and the instance history of a withheld record: as unknown
    care = token(auth, "social-worker", "la:201", purpose="CAREMGT")
    assert get(http, "Observation/da-notice/_history/1", care).status_code == 404
    assert get(http, "Observation/da-notice/_history", care).status_code == 404


def test_provenance_search_shows_only_targets_the_caller_may_see(http: FlaskClient, auth: AuthService,
                                                                 seeded: Flask) -> None:
    care = token(auth, "social-worker", "la:201", purpose="CAREMGT")
    bundle = get(http, "Provenance?patient=Patient/child", care).get_json()
    prov = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "import")
    assert [t["reference"] for t in prov["target"]] == ["Observation/other-obs", "Patient/child"]
    assert any(t.get("code") == "SUBSETTED" for t in prov["meta"]["tag"])
    school = token(auth, "school-dsl", "education:201")
    assert_forbidden(get(http, "Provenance?patient=Patient/child", school))


# -- consent --------------------------------------------------------------------------------------

def consent(provision: dict[str, Any], *, policy: str | None = None, status: str = "active",
            organization: str = "Organization/trust") -> dict[str, Any]:
    out = {"resourceType": "Consent", "id": "consent-1", "status": status,
           "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                 "code": "patient-privacy"}]},
           "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
           "patient": {"reference": "Patient/child"}, "organization": [{"reference": organization}],
           "provision": provision, "meta": meta("health/RXX")}
    if policy:
        out["policy"] = [{"uri": policy}]
    return out


def test_a_deny_provision_for_a_purpose_hides_the_data_until_the_consent_changes(
        http: FlaskClient, auth: AuthService, seeded: Flask) -> None:
    seed(seeded, [consent({"type": "permit", "provision": [
        {"type": "deny", "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                      "code": "CAREMGT"}]}]})])
    care = token(auth, "social-worker", "la:201", purpose="CAREMGT")
    # the trust's data about this child is hidden for care management; other agencies' is not
    assert ids(get(http, "Observation?subject=Patient/child", care).get_json()) == {"attendance"}
    assert get(http, "Observation/health-plain", care).status_code == 404
    assert "Observation/health-plain" not in summary_ids(get(http, "Patient/child/$family-summary", care).get_json())
    # the other child is not covered
    assert ids(get(http, "Observation?subject=Patient/other", care).get_json()) == {"other-obs"}
    # withdrawn: visible on the very next request
    seed(seeded, [consent({"type": "permit", "provision": [{"type": "deny", "purpose": [{"code": "CAREMGT"}]}]},
                          status="inactive")])
    assert ids(get(http, "Observation?subject=Patient/child", care).get_json()) == {"attendance", "health-plain"}


def test_a_deny_provision_for_an_actor_hides_the_data_from_that_agency_only(
        http: FlaskClient, auth: AuthService, seeded: Flask) -> None:
    seed(seeded, [consent({"type": "permit", "provision": [
        {"type": "deny", "actor": [{"role": {"coding": [{"code": "IRCP"}]},
                                    "reference": {"reference": "Organization/la"}}]}]})])
    la = token(auth, "social-worker", "la:201", purpose="CAREMGT")
    police = token(auth, "police", "police:01", purpose="CAREMGT")
    health = token(auth, "health-safeguarding", "health:RXX", purpose="CAREMGT")
    assert "health-plain" not in ids(get(http, "Observation?subject=Patient/child", la).get_json())
    assert "health-plain" in ids(get(http, "Observation?subject=Patient/child", health).get_json())
    assert get(http, "Observation/health-plain", police).status_code == 404  # police never see health data


def test_refused_consent_is_set_aside_for_safeguarding_on_a_lawful_basis_and_recorded(
        http: FlaskClient, auth: AuthService, seeded: Flask, caplog: pytest.LogCaptureFixture) -> None:
    refused = {"type": "deny"}  # the family refused sharing the trust's records
    seed(seeded, [consent(refused, policy=SCHEDULE_1)])
    caplog.set_level(logging.WARNING, logger="fhir_server.auth")
    care = token(auth, "mash-practitioner", "la:201", purpose="CAREMGT")
    assert "health-plain" not in ids(get(http, "Observation?subject=Patient/child", care).get_json())
    assert not [r for r in caplog.records if getattr(r, "auth_event", None)
                and r.auth_event.kind == "shared-without-consent"]
    safeguarding = token(auth, "mash-practitioner", "la:201", purpose="safeguarding")
    # a search that shows none of the trust's data about the child records no share
    assert get(http, "Observation?subject=Patient/other", safeguarding).status_code == 200
    assert not [r for r in caplog.records if getattr(r, "auth_event", None)
                and r.auth_event.kind == "shared-without-consent"]
    found = ids(get(http, "Observation?subject=Patient/child", safeguarding).get_json())
    assert {"health-plain", "ed-visit"} <= found
    shared = [r.auth_event for r in caplog.records if getattr(r, "auth_event", None)
              and r.auth_event.kind == "shared-without-consent"]
    assert len(shared) == 1  # once per request, however many of the child's records it shows
    assert shared[0].extra["consent"] == "Consent/consent-1" and shared[0].extra["review"] is True
    assert shared[0].extra["patient"] == "Patient/child" and SCHEDULE_1 in shared[0].extra["policy"]

    summary = summary_ids(get(http, "Patient/child/$family-summary", safeguarding).get_json())
    assert "Observation/ed-visit" in summary
    assert len([r for r in caplog.records if getattr(r, "auth_event", None)
                and r.auth_event.kind == "shared-without-consent"]) == 2
    assert get(http, "Observation/health-plain", safeguarding).status_code == 200

    # without a lawful basis for sharing without consent, the refusal holds even for safeguarding
    seed(seeded, [consent(refused)])
    assert "health-plain" not in ids(get(http, "Observation?subject=Patient/child", safeguarding).get_json())


# -- break-glass ------------------------------------------------------------------------------------

def test_break_glass_gives_emergency_access_and_is_flagged_for_review(
        http: FlaskClient, auth: AuthService, seeded: Flask, caplog: pytest.LogCaptureFixture) -> None:
    seed(seeded, [consent({"type": "deny"})])
    caplog.set_level(logging.WARNING, logger="fhir_server.auth")
    sw = token(auth, "social-worker", "la:201")
    assert get(http, "Observation/very-restricted", sw).status_code == 404
    btg = {"X-Purpose-Of-Use": "BTG", "X-Break-Glass-Reason": "Child in resus, parents unreachable"}
    assert get(http, "Observation/very-restricted", sw, **btg).status_code == 200
    assert get(http, "Observation/health-plain", sw, **btg).status_code == 200  # consent refusal overridden
    events = [r.auth_event for r in caplog.records if getattr(r, "auth_event", None)
              and r.auth_event.kind == "break-glass"]
    assert len(events) == 2
    assert events[0].extra["review"] is True
    assert events[0].extra["break_glass_reason"] == "Child in resus, parents unreachable"
    assert events[0].context.practitioner == "Practitioner/p1" and events[0].extra["path"] == "Observation/very-restricted"

    school = token(auth, "school-dsl", "education:201")
    assert_forbidden(get(http, "Flag", school, **btg), "may not use break-glass")
    assert_forbidden(get(http, "Flag", sw, **{"X-Purpose-Of-Use": "BTG"}), "X-Break-Glass-Reason")


def test_unknown_roles_get_no_sensitive_data_and_cannot_break_glass(http: FlaskClient, auth: AuthService,
                                                                    seeded: Flask) -> None:
    stranger = token(auth, "volunteer", "la:201", purpose="safeguarding")
    assert ids(get(http, "Observation?subject=Patient/child", stranger).get_json()) == {"health-plain", "attendance"}
    assert_forbidden(get(http, "Flag", stranger, **{"X-Purpose-Of-Use": "BTG", "X-Break-Glass-Reason": "x"}))


def test_match_offers_no_candidate_the_caller_may_not_see(http: FlaskClient, auth: AuthService,
                                                          seeded: Flask) -> None:
    nhs = {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}
    seed(seeded, [{"resourceType": "Patient", "id": "sealed", "identifier": [nhs], "name": [{"family": "Sealed"}],
                   "birthDate": "2016-02-02", "meta": meta("local-authority/201", V)}])
    asked = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {
        "resourceType": "Patient", "identifier": [nhs], "name": [{"family": "Sealed"}], "birthDate": "2016-02-02"}}]}
    care = token(auth, "social-worker", "la:201", purpose="CAREMGT")
    res = send(http, "POST", "Patient/$match", asked, care)
    assert res.status_code == 200, res.get_data(as_text=True)
    assert res.get_json()["total"] == 0
    mash = token(auth, "mash-practitioner", "la:201", purpose="safeguarding")
    assert ids(send(http, "POST", "Patient/$match", asked, mash).get_json(), "Patient") == {"sealed"}


def test_bundles_apply_the_policy_to_every_entry(http: FlaskClient, auth: AuthService, seeded: Flask) -> None:
    health = token(auth, "health-safeguarding", "health:RXX", scope="user/*.cruds", purpose="CAREMGT")
    before = count_rows(seeded)
    forged = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs("x", "health/RXX", "mine"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": obs("y", "police/01", "forged"), "request": {"method": "POST", "url": "Observation"}}]}
    assert_forbidden(send(http, "POST", "", forged, health), "tagged as another agency's")
    assert count_rows(seeded) == before
    reads = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Observation?subject=Patient/child"}},
        {"request": {"method": "GET", "url": "Observation/da-notice"}}]}
    res = send(http, "POST", "", {**reads, "type": "batch"}, health)
    assert res.status_code == 200, res.get_data(as_text=True)
    first, second = res.get_json()["entry"]
    # the trust's own records, labelled or not (labels protect what is shared); never the police's
    assert ids(first["resource"]) == {"ed-visit", "mental-health", "health-plain", "attendance"}
    assert first["resource"]["total"] == 4
    assert second["response"]["status"].startswith("404")
    res = send(http, "POST", "", reads, health)
    assert res.status_code == 404, res.get_data(as_text=True)
    reads["entry"] = reads["entry"][:1]
    res = send(http, "POST", "", reads, health)
    assert ids(res.get_json()["entry"][0]["resource"]) == {"ed-visit", "mental-health", "health-plain", "attendance"}


def test_an_agency_imports_only_its_own_files(http: FlaskClient, auth: AuthService, seeded: Flask) -> None:
    import io
    from pathlib import Path
    police_csv = (Path(__file__).resolve().parent.parent / "mappings" / "fixtures" / "police"
                  / "notifications.csv").read_bytes()

    def upload(tok: str) -> Any:
        return http.post("/fhir/$import-agency-data", data={
            "format": "police-notifications-csv", "file": (io.BytesIO(police_csv), "notifications.csv")},
            content_type="multipart/form-data", headers={"Authorization": f"Bearer {tok}"})

    before = count_rows(seeded)
    other_force = token(auth, "police", "police:01", scope="user/*.cruds")
    refused = upload(other_force)  # force 20's file, imported by force 01: the import reports the 403
    assert refused.status_code == 422, refused.get_data(as_text=True)[:800]
    forbidden = [i for i in refused.get_json()["issue"] if i["code"] == "forbidden"]
    assert forbidden and "may not write data tagged as another agency's (police/20)" in forbidden[0]["diagnostics"]
    assert count_rows(seeded) == before
    force_20 = token(auth, "police", "police:20", scope="user/*.cruds")
    res = upload(force_20)
    assert res.status_code == 200, res.get_data(as_text=True)[:800]
    assert count_rows(seeded) > before
