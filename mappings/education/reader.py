"""school-census-csv rows → typed records (records.py), with every problem reported.

One row per pupil and record (docs/formats/school-census-csv.md). The record key of every row is its
UPN, so an error in any of a pupil's rows rejects that pupil (Patient and Observations together) in
lenient mode; a row without a usable UPN is an error for that row alone. All rows of an import must
name the same local authority (``la_code``): it is the agency, and the identifiers are minted per LA.
"""
from __future__ import annotations

import re
from datetime import date

from ..core import SourceFile, SourceIssue
from ..csvutil import UK_POSTCODE, UPN_FORM, CsvTable, Row
from .records import (ATTENDANCE, CME, EHE, PERMANENT_EXCLUSION, RECORD_TYPES, SUSPENSION, Attendance, CensusFile,
                      Exclusion, MissingEducation, Pupil, School)

REQUIRED = ("la_code", "upn", "dob", "record_type")
OPTIONAL = ("school_urn", "school_name", "forename", "surname", "gender", "postcode", "term", "period_start",
            "period_end", "possible_sessions", "attended_sessions", "authorised_absence_sessions",
            "unauthorised_absence_sessions", "event_date", "exclusion_category", "exclusion_reason", "sessions")

_LA_CODE = re.compile(r"\d{3}")
_URN = re.compile(r"\d{6}")
_TERM = re.compile(r"\d{4}-(autumn|spring|summer)")
# exclusion_category that contradicts record_type
_CATEGORY_FOR = {SUSPENSION: {"FIXD", "LNCH"}, PERMANENT_EXCLUSION: {"PERM"}}


def upn_key(values: dict[str, str]) -> str:
    """The record key: the UPN as we store it (upper case, no spaces)."""
    return values.get("upn", "").upper().replace(" ", "")


def read_files(files: list[SourceFile], issues: list[SourceIssue], today: date) -> CensusFile | None:
    """Read every file of the import. None (with a file-level error) when a file lacks a required
    column or the files do not name exactly one local authority."""
    census = CensusFile()
    reader = _Reader(census, issues, today)
    for source in files:
        table = CsvTable(source, issues, required=REQUIRED, optional=OPTIONAL, key=upn_key)
        if not table.ok:
            return None
        for row in table:
            census.keys.add(row.record)
            reader.row(row)
    if not reader.la_codes:
        name = files[0].name if files else ""
        issues.append(SourceIssue("error", name, "line 1", "la_code", "no row names the local authority (la_code)",
                                  "required"))
        return None
    if len(reader.la_codes) > 1:
        found = ", ".join(f"{code} ({file} line {line})" for code, (file, line) in sorted(reader.la_codes.items()))
        first_file = next(iter(reader.la_codes.values()))[0]
        issues.append(SourceIssue("error", first_file, "line 1", "la_code", f"the rows name several local "
                                  f"authorities: {found}; import each LA's file separately", "invariant"))
        return None
    census.la_code = next(iter(reader.la_codes))
    for upn, pupil in census.pupils.items():
        if pupil.birth_date is None:
            issues.append(SourceIssue("error", pupil.where.file, pupil.where.location, "dob",
                                      "no usable date of birth for this pupil in any row", "required", record=upn))
    return census


class _Reader:
    def __init__(self, census: CensusFile, issues: list[SourceIssue], today: date) -> None:
        self.census = census
        self.issues = issues
        self.today = today
        self.la_codes: dict[str, tuple[str, int]] = {}

    def row(self, row: Row) -> None:
        la = row.get("la_code")
        if la and not _LA_CODE.fullmatch(la):
            row.error("la_code", f"{la!r} is not a 3-digit local authority code")
        elif la:
            self.la_codes.setdefault(la, (row.file, row.line))
        upn = self._upn(row)
        kind = row.code("record_type", RECORD_TYPES, required=True)
        school = self._school(row)
        if upn is None:
            return
        when: date | None = None
        if kind == ATTENDANCE:
            when = self._attendance(row, upn, school)
        elif kind in (SUSPENSION, PERMANENT_EXCLUSION):
            when = self._exclusion(row, upn, school, kind)
        elif kind in (CME, EHE):
            when = self._missing(row, upn, school, kind)
        self._pupil(row, upn, when)

    def _upn(self, row: Row) -> str | None:
        if row.required("upn") is None:
            return None
        upn = upn_key(row.values)
        if not UPN_FORM.fullmatch(upn):
            row.error("upn", f"{row.get('upn')!r} is not a UPN (a letter and 12 digits, or 11 digits and a letter)")
            return None
        return upn

    def _school(self, row: Row) -> str | None:
        urn = row.get("school_urn")
        if not urn:
            return None
        if not _URN.fullmatch(urn):
            row.warning("school_urn", f"{urn!r} is not a school URN (6 digits); the school is not recorded")
            return None
        name = row.get("school_name")
        known = self.census.schools.get(urn)
        if known is None or (not known.name and name):
            self.census.schools[urn] = School(urn, name)
        elif name and name != known.name:
            row.warning("school_name", f"school {urn} is named {known.name!r} elsewhere in the file; that name is kept")
        return urn

    def _pupil(self, row: Row, upn: str, when: date | None) -> None:
        """The pupil's details come from their most recent record (by its date; the later line on a
        tie), since names and addresses change; a date of birth or gender that differs between rows
        is reported."""
        pupil = self.census.pupils.get(upn)
        if pupil is None:
            pupil = self.census.pupils[upn] = Pupil(upn, row.where)
        birth = row.date("dob", not_after=self.today)
        postcode = row.get("postcode").upper()
        if postcode and not UK_POSTCODE.fullmatch(postcode):
            row.warning("postcode", f"{row.get('postcode')!r} is not a UK postcode; kept as written")
        gender_text = row.get("gender")
        gender = row.gender("gender")
        if birth and pupil.birth_date and birth != pupil.birth_date:
            row.warning("dob", f"{birth.isoformat()} differs from {pupil.birth_date.isoformat()} in another row of this "
                        "pupil; the most recent record's is kept")
        if gender_text and pupil.gender_text and gender_text.upper() != pupil.gender_text.upper() \
                and gender != pupil.gender:
            row.warning("gender", f"{gender_text!r} differs from {pupil.gender_text!r} in another row of this pupil; "
                        "the most recent record's is kept")
        if postcode and postcode not in pupil.postcodes_seen:
            pupil.postcodes_seen.append(postcode)
        latest = pupil.as_of is None or (when is not None and when >= pupil.as_of)
        if latest and when is not None:
            pupil.as_of = when
        for attr, value in (("forename", row.get("forename")), ("surname", row.get("surname")),
                            ("birth_date", birth), ("postcode", postcode)):
            if value and (latest or not getattr(pupil, attr)):
                setattr(pupil, attr, value)
        if gender_text and (latest or not pupil.gender_text):
            pupil.gender_text, pupil.gender = gender_text, gender

    def _attendance(self, row: Row, upn: str, school: str | None) -> date | None:
        term = row.required("term")
        if term and not _TERM.fullmatch(term.lower()):
            row.warning("term", f"{term!r} is not a term such as 2024-autumn; kept as written")
        start = row.date("period_start", required=True, not_after=self.today)
        end = row.date("period_end", required=True)
        possible = row.integer("possible_sessions", required=True)
        attended = row.integer("attended_sessions", required=True)
        authorised = row.integer("authorised_absence_sessions")
        unauthorised = row.integer("unauthorised_absence_sessions")
        if school is None:
            row.warning("school_urn", "an attendance record without a school")
        if term is None or start is None or end is None or possible is None or attended is None:
            return end
        if not row.period("period_start", start, "period_end", end):
            return None
        if attended > possible:
            row.error("attended_sessions", f"{attended} sessions attended of {possible} possible")
            return end
        if authorised is not None and unauthorised is not None and attended + authorised + unauthorised != possible:
            row.warning("possible_sessions", f"attended {attended} + authorised absence {authorised} + unauthorised "
                        f"absence {unauthorised} is not the {possible} possible sessions")
        if possible == 0:
            row.warning("possible_sessions", "no possible sessions in the term: there is no attendance rate to record")
            return end
        self.census.attendance.append(Attendance(row.where, upn, school, term.lower(), start, end, possible, attended,
                                                 authorised, unauthorised))
        return end

    def _exclusion(self, row: Row, upn: str, school: str | None, kind: str) -> date | None:
        start = row.date("event_date", required=True, not_after=self.today)
        if not row.get("exclusion_reason"):
            row.warning("exclusion_reason", "no reason given for the exclusion", "required")
        reason = row.concept("exclusion_reason", "education-exclusion-reason")
        category = row.concept("exclusion_category", "education-exclusion-category")
        codes_ = {c["code"] for c in (category or {}).get("coding", [])}
        if codes_ and not codes_ & _CATEGORY_FOR[kind]:
            row.warning("exclusion_category", f"{row.get('exclusion_category')} does not fit record_type {kind}")
        sessions = row.integer("sessions")
        if school is None:
            row.warning("school_urn", "an exclusion without a school")
        if start is not None:
            self.census.exclusions.append(Exclusion(row.where, upn, school,
                                                    kind == PERMANENT_EXCLUSION, start, reason, category, sessions))
        return start

    def _missing(self, row: Row, upn: str, school: str | None, kind: str) -> date | None:
        start = row.date("event_date", required=True, not_after=self.today)
        end = row.date("period_end", not_after=self.today)
        if start is None or not row.period("event_date", start, "period_end", end):
            return None
        self.census.missing.append(MissingEducation(row.where, upn, kind, school, start, end))
        return start
