"""Everything about one child: the Patient compartment of every linked record, and what it refers to.

``Patient/[id]/$everything`` (R4 patient-operation-everything.html) returns "all the information related
to the patient": the resources in the Patient compartment (compartmentdefinition-patient.html) and the
resources they reference that the server judges relevant (practitioners, organisations, locations,
medications, devices). Here the compartment is that of *every* Patient record linked to the requested one
(:mod:`.links`), so one request shows the child across agencies.

Queries (independent of the number of resources): the link closure (one per hop, usually two), one for
the compartment members of all the records at once (an ``IN`` over ``idx_reference`` keyed by the
CompartmentDefinition's parameters), and one per round of referenced resources (at most two).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, false, or_, select, union

from ..search import includes
from ..search.compartment import patient_compartment_params
from ..storage.tables import idx_date, idx_reference, resource
from .links import linked_patients
from .refs import ReferenceIndex

# Referenced resources $everything adds to the compartment (search.mode "include"): shared reference
# data about who provided care where, never another person's record. A Patient, RelatedPerson or any
# clinical resource that is referenced but outside the compartment (a sibling, a Provenance's other
# targets) is left out: it belongs to someone else's record.
INCLUDED_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location", "HealthcareService",
                            "Medication", "Device", "Substance", "Endpoint"})
INCLUDE_ROUNDS = 2  # PractitionerRole → Practitioner / Organization

# The care ("clinical") date of each type, as a date search parameter (search-parameters.json), for the
# start/end parameters: "the date range relates to care dates, not record currency dates". A resource
# of another type, or one without a value for its parameter (a Patient, a RelatedPerson, an undated
# Observation), has no care date and is always in range.
CARE_DATE_PARAMS: dict[str, tuple[str, ...]] = {
    "AdverseEvent": ("date",), "AllergyIntolerance": ("onset",), "Appointment": ("date",),
    "AuditEvent": ("date",), "CarePlan": ("date",), "CareTeam": ("date",), "ClinicalImpression": ("date",),
    "Communication": ("sent",), "CommunicationRequest": ("occurrence",), "Composition": ("date",),
    "Condition": ("onset-date",), "Consent": ("period",), "DetectedIssue": ("identified",),
    "DeviceRequest": ("event-date",), "DiagnosticReport": ("date",), "DocumentReference": ("period",),
    "Encounter": ("date",), "EpisodeOfCare": ("date",), "FamilyMemberHistory": ("date",), "Flag": ("date",),
    "Goal": ("start-date",), "ImagingStudy": ("started",), "Immunization": ("date",),
    "MedicationAdministration": ("effective-time",), "MedicationDispense": ("whenhandedover",),
    "MedicationRequest": ("authoredon",), "MedicationStatement": ("effective",), "Media": ("created",),
    "NutritionOrder": ("datetime",), "Observation": ("date",), "Procedure": ("date",),
    "QuestionnaireResponse": ("authored",), "RiskAssessment": ("date",), "ServiceRequest": ("occurrence",),
    "Specimen": ("collected",), "Task": ("period",), "VisionPrescription": ("datewritten",),
}


@dataclass(frozen=True)
class Found(includes.Found):
    """One current resource: ``mode`` is "match" (in the compartment) or "include" (referenced)."""

    mode: str = "match"

    @property
    def key(self) -> tuple[str, str]:
        return self.res_type, self.res_id


@dataclass(frozen=True)
class RecordFilter:
    """The $everything inputs that narrow the record (all optional): ``types`` (``_type``, applied to
    everything including the Patient), ``since`` (``_since``: meta.lastUpdated at or after), ``start``
    and ``end`` (care dates: the low bound of ``start`` and the high bound of ``end``), and
    ``snapshot`` (paging: only resources that existed when the first page was served)."""

    types: frozenset[str] | None = None
    since: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    snapshot: int | None = None

    def allows_type(self, res_type: str) -> bool:
        return self.types is None or res_type in self.types


@dataclass
class ChildRecord:
    """What was collected for ``patient_id``: ``patient_ids`` are its linked records (itself first)."""

    patient_id: str
    patient_ids: tuple[str, ...]
    matches: list[Found] = field(default_factory=list)
    includes: list[Found] = field(default_factory=list)
    references: ReferenceIndex | None = None  # each resource's references, walked once

    def all(self) -> list[Found]:
        return [*self.matches, *self.includes]


def collect_child_record(conn: Connection, profiles_dir: Path, base_url: str, patient: dict[str, Any],
                         flt: RecordFilter = RecordFilter()) -> ChildRecord:
    """The record of the child whose (current, already read) Patient is ``patient``: the compartment of
    every linked Patient record, filtered by ``flt``, and the :data:`INCLUDED_TYPES` resources they
    reference. Access control is not applied here (see :mod:`.access`)."""
    patient_id = str(patient["id"])
    linked = linked_patients(conn, [patient_id], base_url, known={patient_id: patient})
    ids = (patient_id, *sorted(pid for pid in linked if pid != patient_id))
    matches = select_members(conn, profiles_dir, ids, flt)
    index = ReferenceIndex(base_url)
    includes = select_referenced(conn, base_url, matches, flt, index)
    return ChildRecord(patient_id, ids, matches, includes, index)


def select_members(conn: Connection, profiles_dir: Path, patient_ids: tuple[str, ...] | list[str],
                   flt: RecordFilter = RecordFilter()) -> list[Found]:
    """Current members of the Patient compartments of ``patient_ids`` (the Patients themselves
    included), narrowed by ``flt``: one query, or three with care dates (keys, their dates, contents).

    Every query is driven by primary keys from the index tables (``pk IN (…)``), never by a condition
    the planner could only evaluate row by row over a whole type: a compartment is a few hundred rows
    in a table of millions."""
    members = member_keys(profiles_dir, sorted(set(patient_ids)), flt.types)
    if members is None:
        return []
    where: list[ColumnElement[bool]] = [resource.c.deleted == false(), resource.c.pk.in_(members)]
    if flt.types is not None:
        where.append(resource.c.res_type.in_(sorted(flt.types)))
    if flt.since is not None:
        where.append(resource.c.last_updated >= flt.since)
    if flt.snapshot is not None:
        where.append(resource.c.pk <= flt.snapshot)
    columns = (resource.c.pk, resource.c.res_type, resource.c.res_id)
    if flt.start is not None or flt.end is not None:
        keys = conn.execute(select(*columns).where(*where)).all()
        kept = in_care_range(conn, [(int(pk), t) for pk, t, _i in keys], flt.start, flt.end)
        if not kept:
            return []
        where = [resource.c.pk.in_(sorted(kept))]
    rows = conn.execute(select(*columns, resource.c.content).where(*where))
    return [Found(int(pk), res_type, res_id, content) for pk, res_type, res_id, content in rows]


def member_keys(profiles_dir: Path, patient_ids: list[str], types: frozenset[str] | None = None) -> Any:
    """``SELECT pk`` of the rows in the Patient compartment of one of ``patient_ids``
    (compartmentdefinition-patient.html: a reference search parameter of the row's type points at one of
    them) and of those Patients themselves; None when ``types`` leaves no member type. The CompartmentDefinition's
    (type, parameter) pairs are grouped so the index (res_type, param, target_id, target_type) answers
    each group with one range scan."""
    x = idx_reference
    pairs = [and_(x.c.res_type.in_(sorted(t for t in group_types if types is None or t in types)),
                  x.c.param.in_(params))
             for params, group_types in _param_groups(profiles_dir) if types is None or set(group_types) & types]
    parts: list[Any] = []
    if pairs:
        parts.append(select(x.c.resource_pk.label("pk")).where(
            x.c.target_type == "Patient", x.c.target_id.in_(patient_ids), or_(*pairs)))
    if types is None or "Patient" in types:
        parts.append(select(resource.c.pk.label("pk")).where(resource.c.res_type == "Patient",
                                                             resource.c.res_id.in_(patient_ids)))
    if not parts:
        return None
    return union(*parts) if len(parts) > 1 else parts[0]


def in_care_range(conn: Connection, keys: list[tuple[int, str]], start: datetime | None,
                  end: datetime | None) -> set[int]:
    """The pks among ``keys`` whose care date (:data:`CARE_DATE_PARAMS`) overlaps [start, end], or that
    have none. A stored date is a range (search.html#date), so "overlaps" means: it does not end before
    ``start`` and does not begin after ``end``. One query over ``idx_date`` by pk."""
    dated_types = {pk: t for pk, t in keys if t in CARE_DATE_PARAMS}
    kept = {pk for pk, t in keys if t not in CARE_DATE_PARAMS}
    if not dated_types:
        return kept
    has_date: set[int] = set()
    overlaps: set[int] = set()
    rows = conn.execute(select(idx_date.c.resource_pk, idx_date.c.param, idx_date.c.low, idx_date.c.high).where(
        idx_date.c.resource_pk.in_(sorted(dated_types))))
    for pk, param, low, high in rows:
        if param not in CARE_DATE_PARAMS[dated_types[pk]]:
            continue
        has_date.add(pk)
        if (start is None or high is None or high >= start) and (end is None or low is None or low <= end):
            overlaps.add(pk)
    return kept | overlaps | (set(dated_types) - has_date)


@lru_cache(maxsize=4)
def _param_groups(profiles_dir: Path) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """The CompartmentDefinition's (parameters, types) groups: types sharing the same parameters share
    one SQL term. Patient is left out (its ``link`` members are the linked records, found already)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for res_type, params in patient_compartment_params(profiles_dir).items():
        if res_type != "Patient":
            groups.setdefault(tuple(sorted(params)), []).append(res_type)
    return tuple((params, tuple(sorted(types))) for params, types in sorted(groups.items()))


def select_referenced(conn: Connection, base_url: str, found: list[Found], flt: RecordFilter = RecordFilter(),
                      index: ReferenceIndex | None = None) -> list[Found]:
    """The :data:`INCLUDED_TYPES` resources that ``found`` references and that are not in it
    (search.mode include), in at most :data:`INCLUDE_ROUNDS` queries. ``_type``, ``_since`` and the
    snapshot apply to them; care dates do not (an Organization has none)."""
    index = index or ReferenceIndex(base_url)
    have = {f.key for f in found}
    out: list[Found] = []
    sources = found
    for _round in range(INCLUDE_ROUNDS):
        wanted: dict[str, set[str]] = {}
        for f in sources:
            for target in index.of(f.content):
                if target[0] in INCLUDED_TYPES and target not in have and flt.allows_type(target[0]):
                    wanted.setdefault(target[0], set()).add(target[1])
        if not wanted:
            break
        where: list[ColumnElement[bool]] = [
            resource.c.deleted == false(),
            or_(*(and_(resource.c.res_type == t, resource.c.res_id.in_(sorted(ids)))
                  for t, ids in sorted(wanted.items())))]
        if flt.since is not None:
            where.append(resource.c.last_updated >= flt.since)
        if flt.snapshot is not None:
            where.append(resource.c.pk <= flt.snapshot)
        rows = conn.execute(select(resource.c.pk, resource.c.res_type, resource.c.res_id, resource.c.content)
                            .where(*where))
        sources = [Found(int(pk), t, i, content, "include") for pk, t, i, content in rows]
        out += sources
        have.update((t, i) for t, ids in wanted.items() for i in ids)  # absent ones are not asked again
    return out
