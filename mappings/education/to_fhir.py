"""school-census-csv records → FHIR R4 resources (as :class:`~mappings.core.Upsert`). Pure.

Per pupil a Patient (UPN); per school an Organization (school URN) that performs the pupil's
attendance and exclusion Observations; per term's attendance one Observation (risk-factor
``school-attendance``, value %) whose components carry the session counts and, when they apply,
``persistent-absence`` (below 90%) and ``severe-absence`` (below 50%); per suspension or permanent
exclusion an Observation valued with the reason; per CME/EHE record an Observation over its period.

Why components rather than Observations of their own for persistent and severe absence: one
resource per pupil and term means a corrected file (attendance revised from 85% to 92%) updates that
one resource and the classification goes with it. A separate "persistent absence" Observation
could not be withdrawn by a conditional update, so it would outlive the correction. Searching
``Observation?component-code=…|persistent-absence`` finds exactly the terms that are classed so.

The pupil's Patient is matched on UPN within this agency's resources (the loader scopes every match
to the importing agency), because local authorities and schools record the same UPN. Schools are
shared reference data, matched on URN alone (``shared``).
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .. import codes, systems
from ..core import Agency, SourceIssue, Upsert, identifier_match
from ..csvutil import Where
from ..fhir_shapes import EXTENSION, SOCIAL_HISTORY, demographics, organization_reference, patient, period, source_record
from .records import Attendance, CensusFile, Exclusion, MissingEducation, Pupil, School

EXT_LAST_SCHOOL = f"{EXTENSION}/education-last-school"
ORGANIZATION_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                 "code": "edu", "display": "Educational Institute"}]}
UCUM = "http://unitsofmeasure.org"

KIND_ATTENDANCE, KIND_SUSPENSION, KIND_EXCLUSION = "school-attendance", "school-suspension", "school-exclusion"
KIND_CME, KIND_EHE = "child-missing-education", "elective-home-education"


def to_fhir(census: CensusFile, agency: Agency, issues: list[SourceIssue]) -> list[Upsert]:
    schools = {urn: _school(school) for urn, school in census.schools.items()}
    patients = {upn: _patient(pupil, agency) for upn, pupil in census.pupils.items()}
    out = [*schools.values(), *patients.values()]
    keys = _Keys(issues)
    for a in census.attendance:
        out.append(_attendance(a, agency, patients, schools, keys))
    for e in census.exclusions:
        out.append(_exclusion(e, agency, patients, schools, keys))
    for m in census.missing:
        out.append(_missing_education(m, agency, patients, schools, keys))
    return out


def _school(school: School) -> Upsert:
    """A school, shared by every agency that names it (matched on URN alone): reference data."""
    org: dict[str, Any] = {"resourceType": "Organization",
                           "identifier": [{"system": systems.SCHOOL_URN, "value": school.urn}],
                           "active": True, "type": [ORGANIZATION_TYPE]}
    if school.name:
        org["name"] = school.name
    return Upsert(org, identifier_match(systems.SCHOOL_URN, school.urn), full_url=f"urn:uuid:{uuid.uuid4()}",
                  merge=True, shared=True)


def _patient(pupil: Pupil, agency: Agency) -> Upsert:
    """The pupil, by UPN; an unknown gender is kept as text, as the CIN mapping does. The postcodes of
    their older rows follow the current one as addresses of ``use`` old (datatypes.html#Address: "this
    address is no longer in use"): the census is often the only record of where a family lived, and
    record linkage compares every address an agency knows (docs/linkage.md)."""
    elements, extensions = demographics(pupil, gender_label="gender")
    old = [{"use": "old", "postalCode": code} for code in pupil.postcodes_seen if code != pupil.postcode]
    if old:
        elements["address"] = [*elements.get("address", []), *old]
    return patient(systems.UPN, pupil.upn, use="official", record=pupil.upn, extensions=extensions, managing=agency,
                   **elements)


class _Keys:
    """Business keys of one import: a second record with the same key gets ``#2``… and a warning,
    so both are kept and a re-import of the same file matches the same resources."""

    def __init__(self, issues: list[SourceIssue]) -> None:
        self.issues = issues
        self.seen: dict[tuple[str, str], int] = defaultdict(int)

    def key(self, kind: str, base: str, where: Where, upn: str, column: str) -> str:
        self.seen[(kind, base)] += 1
        n = self.seen[(kind, base)]
        if n == 1:
            return base
        self.issues.append(SourceIssue("warning", where.file, where.location, column,
                                       f"a second {kind} record for this pupil with the same key ({base}); kept as #{n}",
                                       "duplicate", record=upn))
        return f"{base}#{n}"


def _observation(kind: str, key: str, upn: str, code: dict[str, Any], agency: Agency,
                 patients: dict[str, Upsert], performer: dict[str, str], **elements: Any) -> Upsert:
    """The pupil's Observation; empty elements other than effective[x] are left out."""
    present = {k: v for k, v in elements.items() if v or k.startswith("effective")}
    return source_record("Observation", agency, kind, key, record=upn, status="final", category=[SOCIAL_HISTORY],
                         code=code, subject={"reference": patients[upn].full_url}, performer=[performer], **present)


def _performer(school: str | None, schools: dict[str, Upsert], agency: Agency) -> dict[str, str]:
    """The school when the row names one, else the LA's education service."""
    if school is not None:
        return {"reference": schools[school].full_url}
    return organization_reference(agency)


def _sessions(code: str, value: int | None) -> list[dict[str, Any]]:
    if value is None:
        return []
    return [{"code": codes.concept("education-measure", code),
             "valueQuantity": {"value": value, "unit": "sessions", "system": UCUM, "code": "{session}"}}]


def _attendance(a: Attendance, agency: Agency, patients: dict[str, Upsert], schools: dict[str, Upsert],
                keys: _Keys) -> Upsert:
    """Attendance rate = attended / possible sessions, as a decimal with one place (half up: FHIR
    decimals keep their precision, so 95.0 stays 95.0). The absence classes are
    decided on the exact counts (below 90% is attended × 10 < possible × 9), not on the rounded rate,
    so 89.96% is persistent absence even though it shows as 90.0%."""
    key = keys.key(KIND_ATTENDANCE, f"{a.upn}/{a.term}" + (f"/{a.school}" if a.school else ""), a.where, a.upn,
                   "term")
    rate = (Decimal(100 * a.attended) / a.possible).quantize(Decimal("0.1"), ROUND_HALF_UP)
    components = (_sessions("possible-sessions", a.possible) + _sessions("attended-sessions", a.attended)
                  + _sessions("authorised-absence-sessions", a.authorised)
                  + _sessions("unauthorised-absence-sessions", a.unauthorised))
    if a.attended * 10 < a.possible * 9:
        components.append({"code": codes.concept("risk-factor", "persistent-absence"), "valueBoolean": True})
    if a.attended * 2 < a.possible:
        components.append({"code": codes.concept("risk-factor", "severe-absence"), "valueBoolean": True})
    return _observation(KIND_ATTENDANCE, key, a.upn, codes.concept("risk-factor", "school-attendance"), agency,
                        patients, _performer(a.school, schools, agency),
                        effectivePeriod=period(a.start, a.end),
                        valueQuantity={"value": rate, "unit": "%", "system": UCUM, "code": "%"},
                        component=components)


def _exclusion(e: Exclusion, agency: Agency, patients: dict[str, Upsert], schools: dict[str, Upsert],
               keys: _Keys) -> Upsert:
    kind = KIND_EXCLUSION if e.permanent else KIND_SUSPENSION
    key = keys.key(kind, f"{e.upn}/{e.start.isoformat()}" + (f"/{e.school}" if e.school else ""), e.where, e.upn,
                   "event_date")
    components = _sessions("excluded-sessions", e.sessions)
    if e.category:
        components.append({"code": codes.concept("education-measure", "exclusion-category"),
                           "valueCodeableConcept": e.category})
    code = codes.concept("risk-factor", "permanent-exclusion" if e.permanent else "suspension")
    return _observation(kind, key, e.upn, code, agency, patients, _performer(e.school, schools, agency),
                        effectiveDateTime=e.start.isoformat(), valueCodeableConcept=e.reason, component=components)


def _missing_education(m: MissingEducation, agency: Agency, patients: dict[str, Upsert],
                       schools: dict[str, Upsert], keys: _Keys) -> Upsert:
    """CME and EHE are the local authority's duties, so the LA's education service performs them;
    the school the child was last on roll at, when given, is an extension."""
    kind = KIND_CME if m.kind == "CME" else KIND_EHE
    key = keys.key(kind, f"{m.upn}/{m.start.isoformat()}", m.where, m.upn, "event_date")
    upsert = _observation(kind, key, m.upn, codes.concept("risk-factor", kind), agency, patients,
                          _performer(None, schools, agency), effectivePeriod=period(m.start, m.end))
    if m.school is not None:
        upsert.resource["extension"] = [{"url": EXT_LAST_SCHOOL,
                                         "valueReference": {"reference": schools[m.school].full_url}}]
    return upsert
