"""ed-attendances-csv → typed records + issues (docs/formats/ed-attendances-csv.md); never raises.

One row per emergency department attendance. The patient is identified by the trust's hospital
number; their details come from their latest attendance in the file, and a different date of
birth or NHS number for the same hospital number is reported. SNOMED CT codes are checked for
shape and check digit only (:mod:`.snomed`): a code that fails is kept as text and reported.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from ..core import SourceFile, SourceIssue
from ..csvutil import CsvTable, Row
from ..dates import day_of, instant, today_uk
from . import snomed

REQUIRED = ("ods_code", "attendance_id", "arrival", "hospital_number")
COLUMNS = REQUIRED + ("nhs_number", "forename", "surname", "dob", "gender", "postcode", "chief_complaint_snomed",
                      "diagnosis_snomed", "injury", "injury_mechanism", "safeguarding_concern_snomed",
                      "safeguarding_concern_text", "discharge_destination")


@dataclass
class Concept:
    """A SNOMED CT concept id that passed the check, or the source text when it did not."""

    code: str | None = None
    text: str = ""


@dataclass
class EdPatient:
    hospital_number: str
    record: str  # "patient <hospital number>"
    nhs_number: str | None = None
    forename: str = ""
    surname: str = ""
    birth_date: dt.date | None = None
    gender: str | None = None
    gender_text: str = ""
    postcode: str = ""
    postcodes_seen: list[str] = field(default_factory=list)  # every postcode of their attendances


@dataclass
class Attendance:
    attendance_id: str
    record: str
    hospital_number: str
    arrival: dt.datetime | dt.date
    chief_complaint: Concept | None = None
    diagnosis: Concept | None = None
    injury: bool = False
    injury_mechanism: Concept | None = None
    concern: Concept | None = None
    discharge_destination: Concept | None = None


@dataclass
class EdFile:
    ods_code: str | None = None
    patients: dict[str, EdPatient] = field(default_factory=dict)
    attendances: dict[str, Attendance] = field(default_factory=dict)
    records: set[str] = field(default_factory=set)


def rows(source: SourceFile, issues: list[SourceIssue]) -> Iterator[Row]:
    yield from CsvTable(source, issues, required=REQUIRED, optional=COLUMNS, key="attendance_id")


def collect(all_rows: Iterable[Row]) -> EdFile:
    out = EdFile()
    latest: dict[str, dt.datetime] = {}
    first_line: dict[str, str] = {}
    for row in all_rows:
        out.records.add(row.record)
        ods = row.required("ods_code")
        attendance_id = row.required("attendance_id")
        hospital_number = row.required("hospital_number")
        arrival = row.datetime("arrival", required=True)
        if not row.one_per_file("ods_code", ods, out.ods_code, "trust"):
            continue
        out.ods_code = out.ods_code or ods
        if not (ods and attendance_id and hospital_number and arrival is not None):
            continue
        if attendance_id in out.attendances or attendance_id in first_line:
            row.error("attendance_id", f"attendance {attendance_id} appears twice "
                                       f"(first at {first_line[attendance_id]})", "duplicate")
            continue
        first_line[attendance_id] = row.location
        if day_of(arrival) > today_uk():
            row.error("arrival", f"{row.get('arrival')} is in the future")
        person = _patient(row, hospital_number, arrival, out.patients, latest)
        if person.birth_date and person.birth_date > day_of(arrival):
            row.error("dob", f"{person.birth_date} is after the arrival {row.get('arrival')}")
        out.attendances[attendance_id] = _attendance(row, attendance_id, hospital_number, arrival)
    return out


def _attendance(row: Row, attendance_id: str, hospital_number: str, arrival: dt.datetime | dt.date) -> Attendance:
    attendance = Attendance(attendance_id, row.record, hospital_number, arrival,
                            chief_complaint=_concept(row, "chief_complaint_snomed"),
                            diagnosis=_concept(row, "diagnosis_snomed"),
                            discharge_destination=_concept(row, "discharge_destination", text_allowed=True))
    injury = row.get("injury").upper()
    if injury == "Y":
        attendance.injury = True
        attendance.injury_mechanism = _concept(row, "injury_mechanism", text_allowed=True)
    elif injury not in ("", "N"):
        row.warning("injury", f"{row.get('injury')!r} is not Y or N; no injury recorded", "code-invalid")
    elif row.get("injury_mechanism"):
        row.warning("injury_mechanism", "an injury mechanism without injury=Y is ignored")
    concern = _concept(row, "safeguarding_concern_snomed")
    concern_text = row.get("safeguarding_concern_text")
    if concern is not None or concern_text:
        concern = concern or Concept()
        concern.text = " — ".join(t for t in (concern.text, concern_text) if t)
        attendance.concern = concern
    return attendance


def _concept(row: Row, column: str, *, text_allowed: bool = False) -> Concept | None:
    """A SNOMED CT concept id from ``column``; free text where the format allows it; anything that
    fails the SCTID check is kept as text and reported (warning)."""
    value = row.get(column)
    if not value:
        return None
    if not value.isdigit():
        if text_allowed:
            return Concept(text=value)
        row.warning(column, f"{value!r} is not a SNOMED CT concept id; kept as text", "code-invalid")
        return Concept(text=value)
    problem = snomed.concept_id_problem(value)
    if problem:
        row.warning(column, f"{value!r}: {problem}; kept as text", "code-invalid")
        return Concept(text=value)
    return Concept(code=value)


def _patient(row: Row, hospital_number: str, arrival: dt.datetime | dt.date, patients: dict[str, EdPatient],
             latest: dict[str, dt.datetime]) -> EdPatient:
    """The patient as this row gives them; the latest attendance's details are the ones kept."""
    person_row = replace(row, record=f"patient {hospital_number}")
    person = EdPatient(hospital_number, person_row.record, forename=row.get("forename"), surname=row.get("surname"),
                       birth_date=person_row.date("dob", not_after=today_uk()),
                       postcode=" ".join(row.get("postcode").upper().split()))
    person.gender, person.gender_text = person_row.gender_and_text("gender")
    person.nhs_number = row.nhs_number("nhs_number")
    earlier = patients.get(hospital_number)
    when = instant(arrival)
    person.postcodes_seen = [person.postcode] if person.postcode else []
    if earlier is not None:
        row.differs({"dob": (earlier.birth_date, person.birth_date),
                     "nhs_number": (earlier.nhs_number, person.nhs_number)},
                    f"hospital number {hospital_number} at another attendance")
        person.postcodes_seen = [*earlier.postcodes_seen,
                                 *(c for c in person.postcodes_seen if c not in earlier.postcodes_seen)]
        if when < latest[hospital_number]:
            earlier.postcodes_seen = person.postcodes_seen
            return person  # an older attendance: its details are not the ones kept
    patients[hospital_number] = person
    latest[hospital_number] = when
    return person
