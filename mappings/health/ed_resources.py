"""ED attendance records → FHIR R4 resources (docs/formats/ed-attendances-csv.md). Pure: no I/O.

Per attendance an ``ed-attendance`` Observation (effective = arrival; chief complaint, diagnosis and
discharge destination as components) with, as its members (Observation.hasMember), an
``ed-safeguarding-concern`` Observation carrying the SNOMED CT concept and the clinician's text, and
an ``ed-injury`` Observation carrying the injury mechanism. Per patient, an
``ed-frequent-attendance`` Observation for each run of attendances that meets the rule below.

Frequent attendance: a child (under 18 at the first attendance, or of unknown age) with at least
:data:`FREQUENT_COUNT` attendances within :data:`FREQUENT_WINDOW` in this file. Every attendance
that is the third (or later) within 365 days of the one two before it qualifies; overlapping
windows merge into one run, which becomes one Observation (effectivePeriod = first to last
arrival, valueInteger = attendances in the run, derivedFrom = those attendances), identified by
the hospital number and the run's first attendance so that re-importing the file changes nothing.
Attendances with errors are not counted.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from .. import codes, systems
from ..core import Agency, Upsert
from ..dates import age_on, day_of, fhir_datetime, instant
from ..fhir_shapes import RESTRICTED, organization_reference, period, person_patient, source_record
from . import snomed
from .ed_reader import Attendance, Concept, EdFile, EdPatient

FREQUENT_COUNT = 3
FREQUENT_WINDOW = dt.timedelta(days=365)


def hospital_number_system(ods: str) -> str:
    return systems.source_record_system(ods, "hospital-number")


def to_fhir(ed: EdFile, agency: Agency, bad_records: set[str]) -> list[Upsert]:
    ods = agency.code
    patients = {hn: _patient(p, ods) for hn, p in ed.patients.items()}
    out: list[Upsert] = list(patients.values())
    attendance_obs: dict[str, Upsert] = {}
    for attendance in ed.attendances.values():
        subject = patients[attendance.hospital_number]
        members = _members(attendance, subject, agency)
        main = _attendance(attendance, subject, agency, members)
        attendance_obs[attendance.attendance_id] = main
        out += [main, *members]
    out += _frequent_attendance(ed, patients, attendance_obs, agency, bad_records)
    return out


def _patient(p: EdPatient, ods: str) -> Upsert:
    """The patient by hospital number, with the latest attendance's details. The postcodes of their
    other attendances follow the current one as addresses of ``use`` old, as the school census mapping
    keeps a pupil's: a trust that saw the child before and after a move is evidence of both homes, and
    record linkage compares every address an agency knows (docs/linkage.md)."""
    return person_patient(hospital_number_system(ods), p.hospital_number, p, old_postcodes=p.postcodes_seen)


def _observation(kind: str, key: str, subject: Upsert, agency: Agency, record: str, **elements: Any) -> Upsert:
    """An Observation of the trust's, coded ``risk-factor#<kind>``, performed by the trust."""
    return source_record("Observation", agency, kind, key, record=record, status="final",
                         code=codes.concept("risk-factor", kind), subject={"reference": subject.full_url},
                         performer=[organization_reference(agency)], **elements)


def _attendance(a: Attendance, subject: Upsert, agency: Agency, members: list[Upsert]) -> Upsert:
    upsert = _observation("ed-attendance", a.attendance_id, subject, agency, a.record,
                          effectiveDateTime=fhir_datetime(a.arrival))
    resource = upsert.resource
    if members:
        resource["hasMember"] = [{"reference": m.full_url} for m in members]
    components = [(label, _codeable(c)) for label, c in (("Chief complaint", a.chief_complaint),
                                                         ("Diagnosis", a.diagnosis),
                                                         ("Discharge destination", a.discharge_destination))
                  if c is not None]
    if components:
        resource["component"] = [{"code": {"text": label}, "valueCodeableConcept": value}
                                 for label, value in components]
    return upsert


def _members(a: Attendance, subject: Upsert, agency: Agency) -> list[Upsert]:
    out: list[Upsert] = []
    if a.concern is not None:
        out.append(_observation("ed-safeguarding-concern", a.attendance_id, subject, agency, a.record,
                                meta={"security": [RESTRICTED]}, effectiveDateTime=fhir_datetime(a.arrival),
                                valueCodeableConcept=_codeable(a.concern)))
    if a.injury:
        injury = _observation("ed-injury", a.attendance_id, subject, agency, a.record,
                              effectiveDateTime=fhir_datetime(a.arrival))
        if a.injury_mechanism is not None:
            injury.resource["valueCodeableConcept"] = _codeable(a.injury_mechanism)
        if a.diagnosis is not None:
            injury.resource["component"] = [{"code": {"text": "Diagnosis"},
                                             "valueCodeableConcept": _codeable(a.diagnosis)}]
        out.append(injury)
    return out


def _codeable(c: Concept) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.code:
        out["coding"] = [snomed.coding(c.code)]
    if c.text:
        out["text"] = c.text
    return out


def frequent_runs(arrivals: list[dt.datetime]) -> list[tuple[int, int]]:
    """Index ranges (first, last) of the runs that meet the frequent-attendance rule in sorted
    ``arrivals`` (module docstring). Pure, for testing the rule on its own."""
    runs: list[tuple[int, int]] = []
    for i in range(FREQUENT_COUNT - 1, len(arrivals)):
        first = i - (FREQUENT_COUNT - 1)
        if arrivals[i] - arrivals[first] <= FREQUENT_WINDOW:
            if runs and first <= runs[-1][1]:
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((first, i))
    return runs


def _frequent_attendance(ed: EdFile, patients: dict[str, Upsert], attendance_obs: dict[str, Upsert], agency: Agency,
                         bad_records: set[str]) -> list[Upsert]:
    by_patient: dict[str, list[Attendance]] = {}
    for a in ed.attendances.values():
        if a.record not in bad_records:
            by_patient.setdefault(a.hospital_number, []).append(a)
    out: list[Upsert] = []
    for hospital_number, attendances in by_patient.items():
        patient = ed.patients[hospital_number]
        if patient.record in bad_records:
            continue
        attendances.sort(key=lambda a: instant(a.arrival))
        arrivals = [instant(a.arrival) for a in attendances]
        for first, last in frequent_runs(arrivals):
            run = attendances[first:last + 1]
            if patient.birth_date and age_on(patient.birth_date, day_of(run[0].arrival)) >= 18:
                continue  # the rule is about children
            out.append(_frequent(run, patients[hospital_number], attendance_obs, agency))
    return out


def _frequent(run: list[Attendance], subject: Upsert, attendance_obs: dict[str, Upsert], agency: Agency) -> Upsert:
    key = f"{run[0].hospital_number}/{run[0].attendance_id}"
    first, last = run[0].arrival, run[-1].arrival
    note = (f"{len(run)} emergency department attendances between {day_of(first).isoformat()} and "
            f"{day_of(last).isoformat()} (rule: {FREQUENT_COUNT} or more within {FREQUENT_WINDOW.days} days)")
    return _observation("ed-frequent-attendance", key, subject, agency, f"frequent attendance {key}",
                        effectivePeriod=period(first, last), valueInteger=len(run),
                        derivedFrom=[{"reference": attendance_obs[a.attendance_id].full_url} for a in run],
                        note=[{"text": note}])
