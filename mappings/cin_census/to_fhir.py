"""CIN census records → FHIR R4 resources (as :class:`~mappings.core.Upsert`) and issues. Pure.

One child yields: a Patient; per CINdetails an EpisodeOfCare (episode-type ``cin``); per CIN plan,
section 47 enquiry and child protection plan an EpisodeOfCare of its own type; per assessment
factor an Observation; per child protection plan a Flag (active while the plan is open).

Business identifiers (the conditional-update keys) are natural keys: the LA's child id plus the
date that starts the thing — the referral date for a CIN episode, the plan or enquiry start date,
the assessment start date and factor code for a factor. They survive re-ordering, a later census
year repeating the same episode, and corrections of anything but the start date itself. A corrected
start date is a new key; the census is a full-year return, so the import retires the resource made
from the old date (``full_return`` in __init__.py, :mod:`mappings.snapshot`).
Codes outside our CodeSystems are kept as CodeableConcept text and reported, never dropped.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .. import codes, systems
from ..core import Agency, SourceIssue, Upsert
from ..fhir_shapes import (EXT_ETHNIC_CATEGORY, EXTENSION, FLAG_CATEGORY, SOCIAL_HISTORY, gender_elements, identifier,
                           organization_reference, patient, period, source_record, sourced)
from .issues import at
from .records import Assessment, ChildRecord, CinEpisode, CinPlan, ProtectionPlan, Section47

EXT_DISABILITY = f"{EXTENSION}/disability"
EXT_UPN_UNKNOWN = f"{EXTENSION}/upn-unknown-reason"
EXT_EXPECTED_BIRTH_DATE = f"{EXTENSION}/expected-birth-date"
EXT_REFERRAL_NFA = f"{EXTENSION}/cin-referral-nfa"
EXT_INITIAL_CPC = f"{EXTENSION}/cin-initial-cpc-date"
EXT_INITIAL_CPC_TARGET = f"{EXTENSION}/cin-initial-cpc-target"
EXT_ICPC_NOT_REQUIRED = f"{EXTENSION}/cin-icpc-not-required"
EXT_INITIAL_CATEGORY = f"{EXTENSION}/cin-initial-category-of-abuse"
EXT_PREVIOUS_CP_PLANS = f"{EXTENSION}/cin-previous-cp-plans"
EXT_CP_REVIEW_DATE = f"{EXTENSION}/cin-cp-review-date"

# Record kinds: source_record_system(lea, kind) is the identifier system of each resource we make.
KIND_EPISODE, KIND_CIN_PLAN, KIND_S47, KIND_CP_PLAN = "cin-episode", "cin-plan", "s47-enquiry", "cp-plan"
KIND_FACTOR, KIND_CP_FLAG = "cin-assessment-factor", "cp-plan-flag"

GENDER = {"1": "male", "2": "female", "0": "unknown", "9": "other"}  # 9 indeterminate → other, as UK Core does
# Assessment factors that mean the same as one of our cross-agency risk factors (an extra coding).
RISK_FACTOR_EQUIVALENT = {"11A": "child-sexual-exploitation", "24A": "child-criminal-exploitation"}


@dataclass
class ChildMapping:
    """Maps one child. ``patient_urls`` is shared by the files of one import, so that a child in two
    files becomes one Patient entry referenced by both."""

    file: str
    agency: Agency
    patient_urls: dict[str, str] = field(default_factory=dict)
    issues: list[SourceIssue] = field(default_factory=list)
    child: ChildRecord = field(init=False)
    keys: dict[tuple[str, str], int] = field(init=False, default_factory=dict)
    org: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.org = organization_reference(self.agency)  # once: its fullUrl is a uuid5 per agency

    @property
    def lea(self) -> str:
        return self.agency.code

    def map(self, child: ChildRecord) -> list[Upsert]:
        """Child → Patient and everything recorded about them (nothing without an LAchildID)."""
        if child.la_child_id is None:
            return []
        self.child, self.keys = child, {}
        patient = self._patient(child)
        out = [patient]
        subject = {"reference": patient.full_url}
        for episode in child.episodes:
            out += self._episode(episode, subject)
        return out

    # -- Patient ---------------------------------------------------------------------------------

    def _patient(self, c: ChildRecord) -> Upsert:
        assert c.la_child_id is not None
        identifiers: list[dict[str, Any]] = []
        if c.upn:
            identifiers.append(identifier(systems.UPN, c.upn, "official"))
        if c.former_upn:
            identifiers.append(identifier(systems.FORMER_UPN, c.former_upn, "old"))
        if c.nhs_number:
            if systems.nhs_number_is_valid(c.nhs_number):
                identifiers.append(identifier(systems.NHS_NUMBER, c.nhs_number, "official"))
            else:
                self._warn(f"{c.xpath}/ChildIdentifiers/NHSnumber", "not a valid NHS number (10 digits, modulus-11 "
                           "check digit); not stored, so that it cannot link this child to someone else", "value")
        extensions: list[dict[str, Any]] = []
        if c.ethnicity:
            ethnicity = self._coded("cin-ethnicity", c.ethnicity, f"{c.xpath}/ChildCharacteristics/Ethnicity",
                                    "Ethnicity")
            extensions.append({"url": EXT_ETHNIC_CATEGORY,
                               "valueCodeableConcept": sourced(ethnicity, "cin-census")})
        for code, xpath in c.disabilities:
            extensions.append({"url": EXT_DISABILITY,
                               "valueCodeableConcept": self._coded("cin-disability", code, xpath, "Disability")})
        if c.upn_unknown:
            extensions.append({"url": EXT_UPN_UNKNOWN, "valueCodeableConcept": self._coded(
                "cin-upn-unknown", c.upn_unknown, f"{c.xpath}/ChildIdentifiers/UPNunknown", "UPNunknown")})
        gender = GENDER.get(c.gender) if c.gender is not None else None
        if c.gender is not None and gender is None:
            self._unknown_code(f"{c.xpath}/ChildIdentifiers/{c.gender_element}", c.gender_element, c.gender,
                               "gender is set to unknown")
        elements, unknown_gender = gender_elements(gender, c.gender or "", c.gender_element)
        extensions += unknown_gender
        if c.birth_date:
            elements["birthDate"] = c.birth_date.isoformat()
        elif c.expected_birth_date:
            extensions.append({"url": EXT_EXPECTED_BIRTH_DATE, "valueDate": c.expected_birth_date.isoformat()})
        if c.death_date:
            elements["deceasedDateTime"] = c.death_date.isoformat()
        url = self.patient_urls.setdefault(c.la_child_id, f"urn:uuid:{uuid.uuid4()}")
        return patient(systems.la_child_id_system(self.lea), c.la_child_id, record=c.key, identifiers=identifiers,
                       extensions=extensions, managing=self.agency, full_url=url, **elements)

    # -- episodes --------------------------------------------------------------------------------

    def _episode(self, e: CinEpisode, subject: dict[str, str]) -> list[Upsert]:
        out: list[Upsert] = []
        closed = e.closure_date
        if e.referral_date is not None:
            types = [codes.concept("episode-type", "cin")]
            for name, code, field_name in (("cin-referral-source", e.referral_source, "ReferralSource"),
                                           ("cin-primary-need", e.primary_need, "PrimaryNeedCode"),
                                           ("cin-closure-reason", e.closure_reason, "ReasonForClosure")):
                if code:
                    types.append(self._coded(name, code, f"{e.xpath}/{field_name}", field_name))
            extensions: list[dict[str, Any]] = []
            if e.referral_nfa is not None:
                extensions.append({"url": EXT_REFERRAL_NFA, "valueBoolean": e.referral_nfa})
            if e.initial_cpc:
                extensions.append({"url": EXT_INITIAL_CPC, "valueDate": e.initial_cpc.isoformat()})
            out.append(self._episode_of_care(KIND_EPISODE, e.referral_date, closed, closed is not None, types,
                                             subject, extensions, f"{e.xpath}/CINreferralDate"))
        for a in e.assessments:
            out += self._factors(a, subject)
        for p in e.cin_plans:
            out += self._cin_plan(p, closed, subject)
        for s in e.section47s:
            out += self._section47(s, closed, subject)
        for c in e.protection_plans:
            out += self._protection_plan(c, closed, subject)
        return out

    def _cin_plan(self, p: CinPlan, closed: date | None, subject: dict[str, str]) -> list[Upsert]:
        if p.start is None:
            return []
        finished = p.end is not None or closed is not None
        return [self._episode_of_care(KIND_CIN_PLAN, p.start, p.end, finished,
                                      [codes.concept("episode-type", "cin-plan")], subject, [],
                                      f"{p.xpath}/CINPlanStartDate")]

    def _section47(self, s: Section47, closed: date | None, subject: dict[str, str]) -> list[Upsert]:
        """An enquiry ends with its initial child protection conference, or when one is not needed."""
        if s.start is None:
            return []
        extensions: list[dict[str, Any]] = []
        if s.initial_cpc_target:
            extensions.append({"url": EXT_INITIAL_CPC_TARGET, "valueDate": s.initial_cpc_target.isoformat()})
        if s.icpc_not_required is not None:
            extensions.append({"url": EXT_ICPC_NOT_REQUIRED, "valueBoolean": s.icpc_not_required})
        finished = s.initial_cpc is not None or bool(s.icpc_not_required) or closed is not None
        return [self._episode_of_care(KIND_S47, s.start, s.initial_cpc, finished,
                                      [codes.concept("episode-type", "s47-enquiry")], subject, extensions,
                                      f"{s.xpath}/S47ActualStartDate")]

    def _protection_plan(self, c: ProtectionPlan, closed: date | None, subject: dict[str, str]) -> list[Upsert]:
        """The plan as an EpisodeOfCare, and a Flag that is active exactly while the plan is open
        (a closed plan's Flag is written as inactive, so that re-importing a later census where the
        plan has ended retires the Flag an earlier import raised)."""
        if c.start is None:
            return []
        types = [codes.concept("episode-type", "cp-plan")]
        if c.latest_category:
            types.append(self._coded("cin-category-of-abuse", c.latest_category, f"{c.xpath}/LatestCategoryOfAbuse",
                                     "LatestCategoryOfAbuse"))
        extensions: list[dict[str, Any]] = []
        if c.initial_category:
            extensions.append({"url": EXT_INITIAL_CATEGORY, "valueCodeableConcept": self._coded(
                "cin-category-of-abuse", c.initial_category, f"{c.xpath}/InitialCategoryOfAbuse",
                "InitialCategoryOfAbuse")})
        if c.previous_plans is not None:
            extensions.append({"url": EXT_PREVIOUS_CP_PLANS, "valueUnsignedInt": c.previous_plans})
        extensions += [{"url": EXT_CP_REVIEW_DATE, "valueDate": d.isoformat()} for d in c.reviews]
        open_ = c.end is None and closed is None
        plan = self._episode_of_care(KIND_CP_PLAN, c.start, c.end, not open_, types, subject, extensions,
                                     f"{c.xpath}/CPPstartDate")
        flag = source_record("Flag", self.agency, KIND_CP_FLAG, plan.resource["identifier"][0]["value"],
                             record=self.child.key, status="active" if open_ else "inactive",
                             category=[FLAG_CATEGORY], code=codes.concept("safeguarding-flag", "cp-plan"),
                             subject=subject, period=period(c.start, c.end), author=dict(self.org))
        return [plan, flag]

    def _episode_of_care(self, kind: str, start: date, end: date | None, finished: bool,
                         types: list[dict[str, Any]], subject: dict[str, str], extensions: list[dict[str, Any]],
                         xpath: str) -> Upsert:
        episode = source_record("EpisodeOfCare", self.agency, kind, self._key(kind, start.isoformat(), xpath),
                                record=self.child.key, status="finished" if finished else "active", type=types,
                                patient=subject, managingOrganization=dict(self.org), period=period(start, end))
        if extensions:
            episode.resource["extension"] = extensions
        return episode

    # -- assessment factors ------------------------------------------------------------------------

    def _factors(self, a: Assessment, subject: dict[str, str]) -> list[Upsert]:
        """One Observation per factor: the factor was identified at the assessment. Final once the
        assessment is authorised, preliminary before; effective at authorisation, else at start."""
        if a.start is None:
            return []
        out: list[Upsert] = []
        assessment = self._key("assessment", a.start.isoformat(), f"{a.xpath}/AssessmentActualStartDate")
        seen: set[str] = set()
        for code, xpath in a.factors:
            if code in seen:
                self._warn(xpath, f"factor {code} repeated in one assessment; recorded once",
                           "duplicate")
                continue
            seen.add(code)
            concept = self._coded("cin-assessment-factor", code, xpath, "AssessmentFactors")
            if code in RISK_FACTOR_EQUIVALENT:
                concept["coding"].append(codes.coding("risk-factor", RISK_FACTOR_EQUIVALENT[code]))
            out.append(source_record("Observation", self.agency, KIND_FACTOR, f"{assessment}/{code}",
                                     record=self.child.key, status="final" if a.authorised else "preliminary",
                                     category=[SOCIAL_HISTORY], code=concept, subject=subject,
                                     effectiveDateTime=(a.authorised or a.start).isoformat(),
                                     performer=[dict(self.org)]))
        return out

    # -- helpers -----------------------------------------------------------------------------------

    def _key(self, kind: str, start: str, xpath: str) -> str:
        """``LAchildID/start-date``; a second record of the same kind and start date for this child
        gets ``#2`` (and a warning), so both are kept and a re-import of the same file matches."""
        assert self.child.la_child_id is not None
        n = self.keys[(kind, start)] = self.keys.get((kind, start), 0) + 1
        key = f"{self.child.la_child_id}/{start}"
        if n > 1:
            self._warn(xpath, f"a second {kind} starting {start} for this child; "
                       f"kept with key suffix #{n}", "duplicate")
            key += f"#{n}"
        return key

    def _coded(self, name: str, code: str, xpath: str, field_name: str) -> dict[str, Any]:
        if codes.is_known(name, code):
            return codes.concept(name, code)
        self._unknown_code(xpath, field_name, code, "kept as text")
        return {"text": f"{field_name}: {code}"}

    def _unknown_code(self, xpath: str, field_name: str, code: str, what: str) -> None:
        self._warn(xpath, f"{code!r} is not a known {field_name} code; {what}", "code-invalid")

    def _warn(self, xpath: str, message: str, code: str) -> None:
        self.issues.append(at("warning", self.file, xpath, message, code=code, record=self.child.key))
