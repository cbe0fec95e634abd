"""The access policy's pure parts: purposes, agency tags, references, Visibility.allows and the
evaluation of Consent provisions (consent.html#provision), without a database."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from fhir_server.auth import consent, labels, policy
from fhir_server.auth.consent import DenyRule, _Caller, _rules
from fhir_server.repository.context import RequestContext

BASE = "http://localhost/fhir"
NOW = datetime(2025, 6, 1)
SCHEDULE_8 = "https://www.legislation.gov.uk/ukpga/2018/12/schedule/8/paragraph/4"


def ctx(role: str, agency: str | None = "la:201", purpose: str | None = None, **extra: Any) -> RequestContext:
    return RequestContext(BASE, role=role, agency=agency, purpose_of_use=purpose, authenticated=True,
                          issuer="dev", **extra)


def res(res_type: str, *, tag: str | None = None, security: list[tuple[str, str]] = (), **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"security": [{"system": s, "code": c} for s, c in security]}
    if tag:
        meta["tag"] = [{"system": labels.AGENCY_TAG_SYSTEM, "code": tag}]
    return {"resourceType": res_type, "id": "x", "meta": meta, **extra}


@pytest.mark.parametrize("purpose, expected", [
    ("safeguarding", "safeguarding"), ("ABUSE", "safeguarding"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActReason|CAREMGT", "care"), ("BTG", "break-glass"),
    ("HCOMPL", "audit"), ("MARKETING", None), (None, None)])
def test_purpose_classes(purpose: str | None, expected: str | None) -> None:
    assert policy.purpose_class(purpose) == expected


def test_agency_tags_and_patient_references() -> None:
    assert labels.agency_tag_code("la:201") == "local-authority/201"
    assert labels.agency_tag_code("health:RXX") == "health/RXX"
    assert labels.agency_tag_code("unknown:1") is None and labels.agency_tag_code(None) is None
    content = {"subject": {"reference": "Patient/a"}, "x": [{"reference": f"{BASE}/Patient/b/_history/2"}],
               "focus": [{"reference": "RelatedPerson/c"}]}
    assert set(labels.patient_references(content)) == {"a", "b"}


def test_the_server_itself_and_auth_off_are_unrestricted() -> None:
    assert policy.visibility(RequestContext.system(BASE)) is None
    assert policy.visibility(RequestContext(BASE)) is None
    # a development token claiming role "system" is not the server
    assert policy.visibility(ctx("system")) is not None


def test_visibility_of_roles_and_purposes() -> None:
    sdv = [labels.SDV, labels.RESTRICTED]
    police_obs = res("Observation", tag="police/01", security=sdv)
    police_flag = res("Flag", tag="police/01", security=sdv)
    health_obs = res("Observation", tag="health/RXX")
    school = policy.visibility(ctx("school-dsl", "education:201", "safeguarding"))
    assert school is not None
    assert school.allows(police_flag) and not school.allows(police_obs) and not school.allows(health_obs)
    assert not school.allows(res("Condition", tag="education/201"))
    assert school.allows(res("Observation", tag="education/201", security=[labels.RESTRICTED]))  # its own
    care = policy.visibility(ctx("social-worker", purpose="CAREMGT"))
    assert care is not None and not care.allows(police_obs) and care.allows(health_obs)
    safeguarding = policy.visibility(ctx("social-worker", purpose="safeguarding"))
    assert safeguarding is not None and safeguarding.allows(police_obs)
    assert not safeguarding.allows(res("Observation", tag="local-authority/201", security=[labels.VERY_RESTRICTED]))
    btg = policy.visibility(ctx("social-worker", purpose="BTG", break_glass_reason="why"))
    assert btg is not None and btg.allows(res("Observation", security=[labels.VERY_RESTRICTED]))
    auditor = policy.visibility(ctx("auditor"))
    assert auditor is not None and auditor.allows(res("AuditEvent")) and not auditor.allows(health_obs)


def caller(**kw: Any) -> _Caller:
    base: dict[str, Any] = dict(practitioner="Practitioner/p1",
                                organization=(consent.ORGANIZATION_SYSTEMS["local-authority"], "201"),
                                role="social-worker", purpose="CAREMGT", purpose_class="care")
    base.update(kw)
    return _Caller(**base)


def the_consent(provision: dict[str, Any], *policies: str) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Consent", "id": "c1", "status": "active",
                           "patient": {"reference": "Patient/child"}, "provision": provision,
                           "organization": [{"identifier": {"system": consent.ORGANIZATION_SYSTEMS["health"],
                                                            "value": "RXX"}}]}
    if policies:
        out["policy"] = [{"uri": p} for p in policies]
    return out


def rules(provision: dict[str, Any], who: _Caller, *policies: str) -> list[DenyRule]:
    return list(_rules(the_consent(provision, *policies), who, {}, NOW))


def test_nested_deny_applies_by_purpose_actor_and_period() -> None:
    by_purpose = {"type": "permit", "provision": [{"type": "deny", "purpose": [{"code": "CAREMGT"}],
                                                   "securityLabel": [{"system": labels.ACT_CODE, "code": "PSY"}],
                                                   "class": [{"code": "Observation"}]}]}
    [rule] = rules(by_purpose, caller())
    assert rule.patients == {"child"} and rule.owner == "health/RXX" and rule.basis == ()
    assert rule.labels == {labels.PSY} and rule.types == {"Observation"}
    assert rule.matches(res("Observation", tag="health/RXX", security=[labels.PSY],
                            subject={"reference": "Patient/child"}))
    assert not rule.matches(res("Observation", tag="health/RXX", subject={"reference": "Patient/child"}))
    assert rules(by_purpose, caller(purpose="TREAT", purpose_class="care")) != []  # same class
    assert rules(by_purpose, caller(purpose="safeguarding", purpose_class="safeguarding")) == []

    by_actor = {"type": "permit", "provision": [{"type": "deny", "actor": [
        {"reference": {"identifier": {"system": consent.ORGANIZATION_SYSTEMS["local-authority"], "value": "201"}}}]}]}
    assert len(rules(by_actor, caller())) == 1
    assert rules(by_actor, caller(organization=(consent.ORGANIZATION_SYSTEMS["police"], "01"))) == []
    by_practitioner = {"type": "permit", "provision": [{"type": "deny", "actor": [
        {"reference": {"reference": "Practitioner/p1"}}]}]}
    assert len(rules(by_practitioner, caller())) == 1
    assert rules(by_practitioner, caller(practitioner="Practitioner/p2")) == []
    expired = {"type": "permit", "provision": [{"type": "deny", "period": {"end": "2020-01-01"}}]}
    assert rules(expired, caller()) == []


def test_refusal_with_permit_exceptions_and_safeguarding_override() -> None:
    refused = {"type": "deny", "provision": [{"type": "permit", "actor": [{"reference": {"reference": "Practitioner/gp"}}]}]}
    [rule] = rules(refused, caller())
    assert rule.basis == ()
    assert rules(refused, caller(practitioner="Practitioner/gp")) == []  # the permitted exception
    sg = caller(purpose="ABUSE", purpose_class="safeguarding")
    assert rules(refused, sg)[0].basis == ()  # no lawful basis named: the refusal holds
    [override] = rules(refused, sg, SCHEDULE_8)
    assert override.basis == (SCHEDULE_8,)
    # a refusal that names the safeguarding purpose itself is not set aside
    named = {"type": "deny", "purpose": [{"code": "safeguarding"}]}
    assert rules(named, sg, SCHEDULE_8)[0].basis == ()


def test_write_checks() -> None:
    health = ctx("health-safeguarding", "health:RXX")
    stamped = policy.check_write(health, None, {"resourceType": "Observation"})
    assert stamped is not None and labels.source_agencies(stamped) == {"health/RXX"}
    from fhir_server.auth.errors import AccessDenied
    with pytest.raises(AccessDenied):
        policy.check_write(health, None, {"resourceType": "EpisodeOfCare"})
    with pytest.raises(AccessDenied):
        policy.check_write(health, res("Observation", tag="police/01"), res("Observation", tag="health/RXX"))
    shared = res("Organization", tag="education/201")
    assert policy.check_write(health, shared, shared) is not None
    assert policy.check_write(RequestContext.system(BASE), None, {"resourceType": "AuditEvent"}) is not None
