"""interventions-csv rows → typed records (records.py), with every problem reported.

One row per child and intervention episode (docs/formats/interventions-csv.md). The record key of
every row is its ``child_id``, so an error in any of a child's rows rejects that child (Patient and
episodes together) in lenient mode; a row without a ``child_id`` is a record of its own. All rows of
an import must name the same local authority (``la_code``): it is the agency, and the child ids
and episode ids are the LA's own.
"""
from __future__ import annotations

import re
from datetime import date

from .. import codes
from ..core import SourceFile, SourceIssue
from ..csvutil import UK_POSTCODE, CsvTable, Row, optional_upn
from .records import END_REASONS, Child, Concept, Intervention, InterventionsFile, LeadProfessional, Provider

REQUIRED = ("la_code", "episode_id", "child_id", "intervention_type", "start_date")
OPTIONAL = ("upn", "nhs_number", "forename", "surname", "dob", "gender", "postcode", "provider",
            "lead_professional_id", "lead_professional", "referral_date", "end_date", "end_reason")

# episode-type codes for support offered rather than statutory involvement (profiles/codesystems/episode-type.json)
INTERVENTION_TYPES = ("early-help", "family-support", "parenting-programme", "substance-misuse-service",
                      "domestic-abuse-service", "family-group-conference", "school-attendance-support", "mentoring")

_LA_CODE = re.compile(r"\d{3}")


def read_files(files: list[SourceFile], issues: list[SourceIssue], today: date) -> InterventionsFile | None:
    """Read every file of the import. None (with a file-level error) when a file lacks a required
    column or the files do not name exactly one local authority."""
    found = InterventionsFile()
    reader = _Reader(found, issues, today)
    for source in files:
        table = CsvTable(source, issues, required=REQUIRED, optional=OPTIONAL, key="child_id")
        if not table.ok:
            return None
        for row in table:
            found.keys.add(row.record)
            reader.row(row)
    first = files[0].name if files else ""
    if not reader.la_codes:
        issues.append(SourceIssue("error", first, "line 1", "la_code", "no row names the local authority (la_code)",
                                  "required"))
        return None
    if len(reader.la_codes) > 1:
        listed = ", ".join(f"{code} ({file} line {line})" for code, (file, line) in sorted(reader.la_codes.items()))
        issues.append(SourceIssue("error", next(iter(reader.la_codes.values()))[0], "line 1", "la_code",
                                  f"the rows name several local authorities: {listed}; import each LA's file "
                                  "separately", "invariant"))
        return None
    found.la_code = next(iter(reader.la_codes))
    _before_birth(found, issues)
    return found


def _before_birth(found: InterventionsFile, issues: list[SourceIssue]) -> None:
    """An intervention that starts before the child's birth is reported but kept: pre-birth work with
    expectant parents is real, but so is a wrong date."""
    for i in found.interventions:
        birth = found.children[i.child_id].birth_date
        if birth is not None and i.start is not None and i.start < birth:
            issues.append(SourceIssue("warning", i.where.file, i.where.location, "start_date",
                                      f"{i.start.isoformat()} is before the child's date of birth "
                                      f"({birth.isoformat()})", record=i.child_id))


def kind_of(row: Row) -> Concept | None:
    """``intervention_type`` as an episode-type CodeableConcept. A value that is no intervention code
    (legacy text such as "Early Help Assessment", or a statutory type such as ``cp-plan``) is kept
    as ``text`` and reported (warning); a blank one is an error: the episode says nothing without it."""
    text = row.required("intervention_type")
    if text is None:
        return None
    code = text.lower()
    if code in INTERVENTION_TYPES:
        return codes.concept("episode-type", code)
    if codes.is_known("episode-type", code):
        row.warning("intervention_type", f"{text!r} is a statutory episode type, not an intervention; kept as text",
                    "code-invalid")
    else:
        row.warning("intervention_type", f"unknown intervention type {text!r} (expected one of "
                    f"{', '.join(INTERVENTION_TYPES)}); kept as text", "code-invalid")
    return {"text": text}


def _collapsed(text: str) -> str:
    return " ".join(text.split())


class _Reader:
    def __init__(self, found: InterventionsFile, issues: list[SourceIssue], today: date) -> None:
        self.found = found
        self.issues = issues
        self.today = today
        self.la_codes: dict[str, tuple[str, int]] = {}  # code → where first seen
        self.episodes: dict[str, Row] = {}  # episode_id → its first row

    def row(self, row: Row) -> None:
        la = row.get("la_code")
        if la and not _LA_CODE.fullmatch(la):
            row.error("la_code", f"{la!r} is not a 3-digit local authority code")
        elif la:
            self.la_codes.setdefault(la, (row.file, row.line))
        child_id = row.required("child_id")
        episode_id = row.required("episode_id")
        if episode_id is not None and self._repeated(row, episode_id):
            return
        kind = kind_of(row)
        referral, start, end = self._dates(row)
        end_reason = self._end_reason(row, end)
        provider = self._provider(row)
        lead_id, lead_name = self._lead(row)
        if child_id is None:
            return
        self._child(row, child_id, start or referral)
        if episode_id is None or kind is None:
            return
        self.found.interventions.append(Intervention(row.where, episode_id, child_id, kind, referral, start, end,
                                                     end_reason, provider, lead_id, lead_name))

    def _repeated(self, row: Row, episode_id: str) -> bool:
        """True for a second row with the same ``episode_id``: written once when it repeats the first
        exactly (warning), an error when it differs (which one is right?)."""
        first = self.episodes.get(episode_id)
        if first is None:
            self.episodes[episode_id] = row
            return False
        if first.values == row.values:
            row.warning("episode_id", f"repeats line {first.line} exactly; written once", "duplicate")
        else:
            row.error("episode_id", f"episode {episode_id} is also at line {first.line} with different details",
                      "duplicate")
        return True

    def _dates(self, row: Row) -> tuple[date | None, date | None, date | None]:
        """referral_date and end_date may not be in the future; a start_date in the future is a
        planned start. An episode needs a start (or, not started yet, a referral date); an end
        needs a start, and not before it."""
        referral = row.date("referral_date", not_after=self.today)
        start = row.date("start_date")
        end = row.date("end_date", not_after=self.today)
        if not row.get("start_date"):
            if end is not None:
                row.error("start_date", "the intervention has an end_date but no start_date", "required")
                return referral, None, None
            if not row.get("referral_date"):
                row.error("start_date", "required value is missing (an intervention not started yet needs "
                          "a referral_date)", "required")
        if not row.period("start_date", start, "end_date", end):
            return referral, start, None
        if referral is not None and start is not None and referral > start:
            row.warning("referral_date", f"{referral.isoformat()} is after start_date {start.isoformat()}: the "
                        "intervention started before it was offered")
        return referral, start, end

    def _end_reason(self, row: Row, end: date | None) -> str:
        text = row.get("end_reason")
        if text and not row.get("end_date"):
            row.error("end_date", f"end_reason {text!r} says the intervention ended but end_date is empty: is it "
                      "open or closed?", "required")
        elif end is not None and not text:
            row.warning("end_reason", "the intervention ended (end_date) without a reason (end_reason)", "required")
        if not text:
            return ""
        if text.lower() in END_REASONS:
            return text.lower()
        row.warning("end_reason", f"unknown end reason {text!r} (expected {' or '.join(END_REASONS)}); kept as text",
                    "code-invalid")
        return text

    def _provider(self, row: Row) -> str | None:
        name = _collapsed(row.get("provider"))
        if not name:
            return None
        key = name.casefold()
        self.found.providers.setdefault(key, Provider(key, name))
        return key

    def _lead(self, row: Row) -> tuple[str | None, str]:
        lead_id = row.get("lead_professional_id")
        name = _collapsed(row.get("lead_professional"))
        if not lead_id:
            if name:
                row.warning("lead_professional_id", "a lead professional without an id: named on the episode, "
                            "but no Practitioner is recorded", "required")
            return None, name
        known = self.found.leads.get(lead_id)
        if known is None or (name and not known.name):
            self.found.leads[lead_id] = LeadProfessional(lead_id, name)
        elif name and name != known.name:
            row.warning("lead_professional", f"lead professional {lead_id} is named {known.name!r} elsewhere in the "
                        "file; that name is kept")
        return lead_id, name

    def _child(self, row: Row, child_id: str, when: date | None) -> None:
        """The child's details come from the row of their latest intervention (by start date, else
        referral date; the later line on a tie), since names and addresses change; a date of birth,
        gender, NHS number or UPN that differs between rows is reported."""
        child = self.found.children.get(child_id)
        first = child is None
        if child is None:
            child = self.found.children[child_id] = Child(child_id, row.where)
        birth = row.date("dob", not_after=self.today)
        gender_text = row.get("gender")
        gender = row.gender("gender")
        nhs = row.nhs_number("nhs_number")
        upn = optional_upn(row, "upn")
        postcode = row.get("postcode").upper()
        if postcode and not UK_POSTCODE.fullmatch(postcode):
            row.warning("postcode", f"{row.get('postcode')!r} is not a UK postcode; kept as written")
        if not first:
            kept = "this child in another row (the latest intervention's value is kept)"
            row.differs({"dob": (child.birth_date and child.birth_date.isoformat(), birth and birth.isoformat()),
                         "nhs_number": (child.nhs_number, nhs), "upn": (child.upn, upn)}, kept)
            if gender_text and child.gender_text and gender != child.gender \
                    and gender_text.upper() != child.gender_text.upper():
                row.differs({"gender": (child.gender_text, gender_text)}, kept)
        latest = child.as_of is None or (when is not None and when >= child.as_of)
        if latest and when is not None:
            child.as_of = when
        for attr, value in (("forename", _collapsed(row.get("forename"))), ("surname", _collapsed(row.get("surname"))),
                            ("birth_date", birth), ("postcode", postcode), ("nhs_number", nhs), ("upn", upn)):
            if value and (latest or not getattr(child, attr)):
                setattr(child, attr, value)
        if gender_text and (latest or not child.gender_text):
            child.gender_text, child.gender = gender_text, gender

