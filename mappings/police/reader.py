"""Police notification files (CSV and JSON) → typed records + issues; never raises on bad data.

Both shapes become :class:`~mappings.csvutil.Row` objects with the CSV column names, so one set of
rules reads them: a JSON notification is one row per adult (or one row when it has none), and its
issues name the JSON pointer and key instead of the line and column.

Rows with the same police reference and child are one notification (a CSV file repeats the
incident on one row per adult); one reference with several children is one notification per child.
A person's details come from their most recent notification (people move and change surname);
a different date of birth or NHS number for the same person id is reported.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.fhir import jsonio

from ..core import SourceFile, SourceIssue
from ..csvutil import UK_POSTCODE, CsvTable, Row, parse_date
from ..dates import day_of, instant, today_uk
from .records import PRESENCE, RELATIONSHIPS, ROLES, TYPES, Involvement, Notification, Person, PoliceFile, \
    Relationship, When

NOTIFICATION_COLUMNS = ("notification_type", "incident_start", "incident_end", "school_urn", "child_present",
                        "child_location", "offence", "circumstances", "child_voice")
PERSON_FIELDS = ("person_id", "forename", "surname", "dob", "gender", "nhs_number", "postcode")
CHILD_COLUMNS = tuple(f"child_{f}" for f in PERSON_FIELDS)
ADULT_COLUMNS = tuple(f"adult_{f}" for f in PERSON_FIELDS if f != "nhs_number") + ("adult_role",
                                                                                    "adult_relationship")
REQUIRED = ("force_code", "police_reference", "notification_type", "incident_start", "child_person_id")
COLUMNS = ("force_code", "police_reference") + NOTIFICATION_COLUMNS + CHILD_COLUMNS + ADULT_COLUMNS


def record_key(values: dict[str, str]) -> str:
    """A notification is one police reference about one child."""
    reference, child = values.get("police_reference", ""), values.get("child_person_id", "")
    if not reference:
        return ""
    return f"{reference}/{child}" if child else reference


# --- CSV -----------------------------------------------------------------------------------------

def csv_rows(source: SourceFile, issues: list[SourceIssue]) -> Iterator[Row]:
    yield from CsvTable(source, issues, required=REQUIRED, optional=COLUMNS, key=record_key)


# --- JSON ----------------------------------------------------------------------------------------

@dataclass
class JsonRow(Row):
    """A row read from a JSON notification: issues name the JSON pointer and key of each value."""

    pointer: str = ""
    places: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    @property
    def location(self) -> str:
        return self.pointer

    def issue(self, severity: str, column: str, message: str, code: str = "value") -> None:
        location, name = self.places.get(column, (self.pointer, column))
        self.issues.append(SourceIssue(severity, self.file, location, name, message, code, record=self.record))


_TOP = {"force_code", "police_reference", "notification_type", "incident_start", "incident_end", "school_urn",
        "offence", "circumstances", "child_voice"}
_CHILD = {**{f: f"child_{f}" for f in PERSON_FIELDS}, "present": "child_present", "location": "child_location",
          "school_urn": "school_urn"}
_ADULT = {**{f: f"adult_{f}" for f in PERSON_FIELDS if f != "nhs_number"}, "role": "adult_role",
          "relationship": "adult_relationship"}


def json_rows(source: SourceFile, issues: list[SourceIssue]) -> Iterator[Row]:
    """``[{force_code, police_reference, …, child: {…}, adults: [{…}]}, …]`` → rows."""
    try:
        document = jsonio.loads(source.content)
    except FhirError as exc:
        issues.append(SourceIssue("fatal", source.name, "/", "", exc.diagnostics, "structure"))
        return
    if not isinstance(document, list):
        issues.append(SourceIssue("fatal", source.name, "/", "", "expected an array of notifications", "structure"))
        return
    for index, item in enumerate(document):
        pointer = f"/{index}"
        if not isinstance(item, dict):
            issues.append(SourceIssue("error", source.name, pointer, "", "a notification must be an object",
                                      "structure", record=f"{source.name} {pointer}"))
            continue
        values: dict[str, str] = {}
        places: dict[str, tuple[str, str]] = {}
        problems: list[tuple[str, str, str]] = []
        _take(item, pointer, {k: k for k in _TOP}, values, places, problems, skip={"child", "adults"})
        child = item.get("child")
        if isinstance(child, dict):
            _take(child, f"{pointer}/child", _CHILD, values, places, problems)
        elif child is not None:
            problems.append((pointer, "child", "must be an object"))
        adults = item.get("adults", [])
        if not isinstance(adults, list):
            problems.append((pointer, "adults", "must be an array"))
            adults = []
        key = record_key(values) or f"{source.name} {pointer}"
        first = JsonRow(source.name, index, values, key, issues, pointer=pointer, places=places)
        for location, name, message in problems:
            severity = "warning" if message.startswith("unknown") else "error"
            issues.append(SourceIssue(severity, source.name, location, name, message, "structure", record=key))
        if not adults:
            yield first
        for n, adult in enumerate(adults):
            adult_values, adult_places = dict(values), dict(places)
            adult_problems: list[tuple[str, str, str]] = []
            if isinstance(adult, dict):
                _take(adult, f"{pointer}/adults/{n}", _ADULT, adult_values, adult_places, adult_problems)
            else:
                adult_problems.append((f"{pointer}/adults/{n}", "", "an adult must be an object"))
            for location, name, message in adult_problems:
                severity = "warning" if message.startswith("unknown") else "error"
                issues.append(SourceIssue(severity, source.name, location, name, message, "structure", record=key))
            yield JsonRow(source.name, index, adult_values, key, issues, pointer=pointer, places=adult_places)


def _take(obj: dict[str, Any], pointer: str, names: dict[str, str], values: dict[str, str],
          places: dict[str, tuple[str, str]], problems: list[tuple[str, str, str]],
          skip: Collection[str] = ()) -> None:
    for key, value in obj.items():
        if key in skip:
            continue
        column = names.get(key)
        if column is None:
            problems.append((pointer, key, "unknown key, ignored"))
            continue
        places[column] = (pointer, key)
        if value is None:
            values[column] = ""
        elif isinstance(value, bool):
            values[column] = "Y" if value else "N"
        elif isinstance(value, (str, int, Decimal, float)):
            values[column] = str(value).strip()
        else:
            problems.append((pointer, key, "must be a single value (text, number or true/false)"))


# --- rows → records ------------------------------------------------------------------------------

def collect(rows: Iterable[Row]) -> PoliceFile:
    """Merge the rows of one import into notifications and people (module docstring)."""
    out = PoliceFile()
    first_rows: dict[str, Row] = {}
    latest: dict[tuple[str, str], When] = {}  # (child|adult, person id) → start of the notification used
    for row in rows:
        out.records.add(row.record)
        reference = row.required("police_reference")
        force = row.required("force_code")
        child_id = row.required("child_person_id")
        if not row.one_per_file("force_code", force, out.force, "force"):
            continue
        out.force = out.force or force
        if not (reference and force and child_id):
            continue
        notification = out.notifications.get(row.record)
        if notification is None and row.record not in first_rows:
            first_rows[row.record] = row
            parsed = _notification(row, force, reference, child_id)
            if parsed is None:
                continue
            notification = out.notifications[row.record] = parsed
        elif notification is not None:
            _same_as_first(row, first_rows[row.record], NOTIFICATION_COLUMNS, "notification")
        else:
            continue  # the notification's first row was unusable; it has been reported
        when = notification.start
        _person(row, "child", child_id, when, out.children, latest)
        adult_id = row.get("adult_person_id")
        if adult_id:
            _adult(row, notification, adult_id, when, out, latest)
        elif any(row.get(c) for c in ADULT_COLUMNS):
            row.warning("adult_person_id", "adult details without an adult_person_id: the adult is not recorded "
                                           "(the person id is what links them across notifications)", "required")
    for key, notification in out.notifications.items():
        if notification.type in ("MARAC", "MAPPA") and not notification.adults:
            first_rows[key].warning("adult_person_id", f"a {notification.type} notification names no adult: the "
                                                       "adult referred cannot be recorded", "required")
    return out


def _notification(row: Row, force: str, reference: str, child_id: str) -> Notification | None:
    kind = row.required("notification_type")
    start = row.datetime("incident_start", required=True)
    end = row.datetime("incident_end")
    if kind is None or start is None:
        return None
    if day_of(start) > today_uk():
        row.error("incident_start", f"{row.get('incident_start')} is in the future")
    if end is not None and instant(end) < instant(start):
        row.error("incident_end", f"{row.get('incident_end')} is before incident_start {row.get('incident_start')}")
    known = kind.upper() in TYPES
    if not known:
        row.warning("notification_type", f"unknown notification type {kind!r} (expected {', '.join(TYPES)}); "
                                         "kept as text", "code-invalid")
    notification = Notification(force, reference, child_id, row.record, kind.upper() if known else kind, known,
                                start, end, child_location=row.get("child_location"),
                                school_urn=row.get("school_urn"), offence=row.get("offence"),
                                circumstances=row.get("circumstances"), child_voice=row.get("child_voice"))
    present = row.get("child_present").upper()
    if present in PRESENCE:
        notification.child_present = present
    elif present:
        row.warning("child_present", f"{row.get('child_present')!r} is not Y, N or U; read as U (not known)",
                    "code-invalid")
    if notification.type == "DA" and not present:
        row.warning("child_present", "not given for a domestic abuse notification; read as U (not known)",
                    "required")
    if notification.type == "ARREST" and not notification.offence:
        row.warning("offence", "an arrest notification without the offence", "required")
    if notification.school_urn and not notification.school_urn.isdigit():
        row.warning("school_urn", f"{notification.school_urn!r} is not a school URN (digits)")
    return notification


def _same_as_first(row: Row, first: Row, columns: tuple[str, ...], what: str) -> None:
    """Rows of one notification repeat its details; a difference is reported and the first kept."""
    for column in columns:
        value, kept = row.get(column), first.get(column)
        if value and value.casefold() != kept.casefold():
            row.warning(column, f"{value!r} differs from {kept!r} ({first.location}) for the same {what}; "
                                f"{first.location} is kept")


def _person(row: Row, prefix: str, person_id: str, when: When, people: dict[str, Person],
            latest: dict[tuple[str, str], When]) -> Person:
    """Read one person's details from ``row``; the most recent notification's details are kept."""
    person_row = replace(row, record=f"person {person_id}")
    person = Person(person_id, person_row.record, forename=row.get(f"{prefix}_forename"),
                    surname=row.get(f"{prefix}_surname"))
    if prefix == "child":  # the child is the subject: a wrong date of birth rejects their record
        person.birth_date = person_row.date("child_dob", not_after=today_uk())
    elif row.get("adult_dob"):  # an adult's is a detail: reported, and the notification still loads
        try:
            person.birth_date = parse_date(row.get("adult_dob"))
        except ValueError as exc:
            row.warning("adult_dob", f"{exc}; not recorded")
    person.gender, person.gender_text = person_row.gender_and_text(f"{prefix}_gender")
    person.nhs_number = row.nhs_number(f"{prefix}_nhs_number")
    postcode = " ".join(row.get(f"{prefix}_postcode").upper().split())
    if postcode and not UK_POSTCODE.fullmatch(postcode):
        row.warning(f"{prefix}_postcode", f"{postcode!r} does not look like a UK postcode; kept as written")
    person.postcode = postcode
    earlier = people.get(person_id)
    if earlier is not None:
        row.differs({f"{prefix}_dob": (earlier.birth_date, person.birth_date),
                     f"{prefix}_nhs_number": (earlier.nhs_number, person.nhs_number)},
                    f"{prefix} {person_id} in another notification")
        if instant(when) < instant(latest[(prefix, person_id)]):
            return earlier
    people[person_id] = person
    latest[(prefix, person_id)] = when
    return person


def _adult(row: Row, notification: Notification, adult_id: str, when: When, out: PoliceFile,
           latest: dict[tuple[str, str], When]) -> None:
    _person(row, "adult", adult_id, when, out.adults, latest)
    role = row.get("adult_role")
    role_known = role.lower() in ROLES
    if role and not role_known:
        row.warning("adult_role", f"unknown role {role!r} (expected {', '.join(ROLES)}); kept as text",
                    "code-invalid")
    involvement = Involvement(adult_id, role.lower() if role_known else role, role_known)
    if all((i.adult_id, i.role) != (involvement.adult_id, involvement.role) for i in notification.adults):
        notification.adults.append(involvement)
    word = row.get("adult_relationship")
    known = word.lower() in RELATIONSHIPS
    if word and not known:
        row.warning("adult_relationship", f"unknown relationship {word!r} (expected {', '.join(RELATIONSHIPS)}); "
                                          "kept as text", "code-invalid")
    key = (adult_id, notification.child_id)
    stamp_key = ("relationship", f"{adult_id}/{notification.child_id}")
    if word:  # relationships change (a partner becomes a step-parent): the latest word is kept
        stamp = latest.get(stamp_key)
        if stamp is None or instant(when) >= instant(stamp):
            out.relationships[key] = Relationship(adult_id, notification.child_id,
                                                  word.lower() if known else word, known)
            latest[stamp_key] = when
    elif key not in out.relationships:
        out.relationships[key] = Relationship(adult_id, notification.child_id, "", False)
