"""Reading agency CSV files and the values in them, for every CSV mapper (docs/formats/README.md).

The conventions: UTF-8 (a byte-order mark is tolerated), RFC 4180, one header row whose names are
case-insensitive and in any order; unknown columns are reported (warning) and ignored; a missing
required column makes the file unusable (file-level error). Dates are ``YYYY-MM-DD`` or
``DD/MM/YYYY``; date-times ISO 8601 in local UK time unless they carry an offset; genders
``M``/``F``/``U`` or the DfE/NHS ``1``/``2``/``0``/``9``.

Nothing here raises on bad data. :class:`CsvTable` streams :class:`Row` objects; each row's helpers
(:meth:`Row.date`, :meth:`Row.gender`, …) report problems as :class:`~mappings.core.SourceIssue`
items naming the file, the line (where the record starts) and the column, with ``record`` set to the
row's record key so that lenient mode can drop just that record. The pure parsers
(:func:`parse_date`, :func:`parse_datetime`, :func:`parse_gender`, :func:`parse_int`) raise
``ValueError`` with a message fit for a person; the row helpers turn that into an issue.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
import datetime as dt
from typing import Any

from . import codes, systems
from .core import SourceFile, SourceIssue
from .dates import UK_TIME

MIN_YEAR = 1900  # earlier years in agency files are placeholders or typing errors, not real dates

# Administrative gender (R4 valueset-administrative-gender) from the codes agencies use: M/F/U and
# the DfE/NHS Data Dictionary person gender codes (0 not known, 1 male, 2 female, 9 indeterminate).
GENDERS = {"m": "male", "male": "male", "1": "male",
           "f": "female", "female": "female", "2": "female",
           "u": "unknown", "unknown": "unknown", "0": "unknown",
           "9": "other", "indeterminate": "other", "other": "other"}

RecordKey = Callable[[dict[str, str]], str]

UK_POSTCODE = re.compile(r"[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}")  # the shape of a UK postcode, upper case
# DfE unique pupil number: a check letter and 12 digits, or (a temporary UPN) 11 digits and a letter
UPN_FORM = re.compile(r"[A-Z]\d{12}|[A-Z]\d{11}[A-Z]")
UPN_UNKNOWN = frozenset(f"UN{n}" for n in range(1, 8))  # "why no UPN" codes some files put in its place

_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_UK_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{2,4})")
_ISO_DATETIME = re.compile(r"(\d{4}-\d{1,2}-\d{1,2})[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
                           r"\s*(Z|[+-]\d{2}:?\d{2})?")
_UK_DATETIME = re.compile(r"(\d{1,2}/\d{1,2}/\d{2,4})[T ](\d{1,2}):(\d{2})(?::(\d{2}))?")


# --- pure value parsers ------------------------------------------------------------------------

def parse_date(text: str) -> dt.date:
    """A calendar date from ``YYYY-MM-DD`` or ``DD/MM/YYYY`` (FHIR ``date``, datatypes.html#date).

    Raises ValueError for anything else, for impossible dates (31/02/2024), and for years before
    1900. When the month is over 12 but the day would make a month, the message says the day and
    month look swapped — the only case where a swap can be detected from the value alone.
    """
    text = text.strip()
    if m := _ISO_DATE.fullmatch(text):
        year, month, day = (int(g) for g in m.groups())
        layout = "YYYY-MM-DD"
    elif m := _UK_DATE.fullmatch(text):
        day, month, year = (int(g) for g in m.groups())
        if len(m.group(3)) != 4:
            raise ValueError(f"{text!r}: the year must have four digits (DD/MM/YYYY)")
        layout = "DD/MM/YYYY"
    else:
        raise ValueError(f"{text!r} is not a date; expected YYYY-MM-DD or DD/MM/YYYY")
    if month > 12 and 1 <= day <= 12:
        raise ValueError(f"{text!r} is not a date: there is no month {month}; the day and month look swapped "
                         f"(expected {layout})")
    try:
        value = dt.date(year, month, day)
    except ValueError:
        raise ValueError(f"{text!r} is not a real date (expected {layout})") from None
    if year < MIN_YEAR:
        raise ValueError(f"{text!r}: a year before {MIN_YEAR} is not plausible")
    return value


def swapped(value: dt.date) -> dt.date | None:
    """``value`` with day and month exchanged, if that is another real date (for hints only)."""
    if value.day == value.month or value.day > 12:
        return None
    try:
        return value.replace(month=value.day, day=value.month)
    except ValueError:
        return None


def parse_datetime(text: str) -> dt.datetime | dt.date:
    """A FHIR ``dateTime`` (datatypes.html#dateTime): ISO 8601 (``2025-03-04T21:40``, seconds and an
    offset optional) or ``DD/MM/YYYY HH:MM``. A time without an offset is local UK time (GMT or BST
    on that day), because FHIR requires a zone whenever a time is given. A bare date is a date."""
    text = text.strip()
    if m := _ISO_DATETIME.fullmatch(text) or _UK_DATETIME.fullmatch(text):
        day = parse_date(m.group(1))
        hour, minute, second = int(m.group(2)), int(m.group(3)), int(m.group(4) or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"{text!r}: {hour:02d}:{minute:02d}:{second:02d} is not a time of day")
        zone_text = m.group(5) if m.re is _ISO_DATETIME else None
        if zone_text:
            tz = dt.datetime.strptime(zone_text.replace(":", "") if zone_text != "Z" else "+0000", "%z").tzinfo
        else:
            tz = UK_TIME
        return dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=tz)
    try:
        return parse_date(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date-time; expected YYYY-MM-DDTHH:MM (UK time, or with an offset) "
                         f"or DD/MM/YYYY HH:MM") from None


def parse_gender(text: str) -> str:
    """An R4 administrative gender code from M/F/U, male/female/unknown, or 1/2/0/9 (9, DfE
    "indeterminate", becomes ``other``). Raises ValueError for anything else."""
    try:
        return GENDERS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not a gender; expected M, F, U or 1, 2, 0, 9") from None


def parse_int(text: str, *, minimum: int | None = 0) -> int:
    """A whole number written as digits (an optional sign); ``minimum`` None means any."""
    text = text.strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f"{text!r} is not a whole number")
    value = int(text)
    if minimum is not None and value < minimum:
        raise ValueError(f"{value} is below {minimum}")
    return value


# --- reading -------------------------------------------------------------------------------------

class _Lines:
    """The physical lines of a file as text, decoded one by one so that a bad byte is pinned to its
    line. Lines that are not UTF-8 are read as Windows-1252 (what Excel on Windows writes) and
    counted; characters that neither can decode are replaced and their lines remembered."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.not_utf8: list[int] = []
        self.undecodable: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        for number, raw in enumerate(io.BytesIO(self.content), start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.not_utf8.append(number)
                text = raw.decode("cp1252", errors="replace")
                if "\ufffd" in text:
                    self.undecodable.add(number)
                yield text


def read_header(source: SourceFile) -> list[str]:
    """The column names of ``source`` (stripped, lower-case), without reading further; [] when the
    file is empty or not CSV. For mappers that recognise a table by its header row."""
    try:
        for cells in csv.reader(_Lines(source.content), strict=True):
            if any(c.strip() for c in cells):
                return [c.strip().lower() for c in cells]
    except csv.Error:
        pass
    return []


@dataclass(frozen=True)
class Where:
    """Where a record starts in a CSV file, kept in typed records so that later checks can name it."""

    file: str
    line: int

    @property
    def location(self) -> str:
        return f"line {self.line}"


@dataclass
class Row:
    """One CSV record: its values by lower-case column name, where it starts, and its record key."""

    file: str
    line: int
    values: dict[str, str]
    record: str
    issues: list[SourceIssue] = field(repr=False)

    @property
    def location(self) -> str:
        return f"line {self.line}"

    @property
    def where(self) -> Where:
        return Where(self.file, self.line)

    def get(self, name: str) -> str:
        """The stripped value of column ``name`` ("" when empty or when the file has no such column)."""
        return self.values.get(name.lower(), "")

    def issue(self, severity: str, column: str, message: str, code: str = "value") -> None:
        self.issues.append(SourceIssue(severity, self.file, self.location, column, message, code,
                                       record=self.record))

    def error(self, column: str, message: str, code: str = "value") -> None:
        self.issue("error", column, message, code)

    def warning(self, column: str, message: str, code: str = "value") -> None:
        self.issue("warning", column, message, code)

    def required(self, name: str) -> str | None:
        """The value of a column that must not be empty; an error for this record when it is."""
        value = self.get(name)
        if not value:
            self.error(name, "required value is missing", "required")
            return None
        return value

    def date(self, name: str, *, required: bool = False, not_after: dt.date | None = None) -> dt.date | None:
        """The date in column ``name``; errors for a missing required value, an impossible date, or
        (``not_after``) a date later than allowed — with a day/month swap hint when a swap fits."""
        text = self.required(name) if required else self.get(name)
        if not text:
            return None
        try:
            value = parse_date(text)
        except ValueError as exc:
            self.error(name, str(exc))
            return None
        if not_after is not None and value > not_after:
            alt = swapped(value)
            hint = "; the day and month may be swapped" if alt is not None and alt <= not_after else ""
            self.error(name, f"{text} is after {not_after.isoformat()}{hint}")
            return None
        return value

    def datetime(self, name: str, *, required: bool = False) -> dt.datetime | dt.date | None:
        """The date-time in column ``name`` (see :func:`parse_datetime`)."""
        text = self.required(name) if required else self.get(name)
        if not text:
            return None
        try:
            return parse_datetime(text)
        except ValueError as exc:
            self.error(name, str(exc))
            return None

    def period(self, start_name: str, start: dt.date | None, end_name: str, end: dt.date | None) -> bool:
        """Checks that ``end`` is not before ``start`` (Period, per-1 invariant); an error otherwise,
        saying whether swapping day and month of either date would put them in order."""
        if start is None or end is None or end >= start:
            return True
        hint = ""
        if (alt := swapped(end)) is not None and alt >= start:
            hint = f"; {end_name} with day and month swapped ({alt.isoformat()}) would fit"
        elif (alt := swapped(start)) is not None and end >= alt:
            hint = f"; {start_name} with day and month swapped ({alt.isoformat()}) would fit"
        self.error(end_name, f"{self.get(end_name)} is before {start_name} {self.get(start_name)}{hint}")
        return False

    def gender(self, name: str, *, required: bool = False) -> str | None:
        """The administrative gender in column ``name``; an unknown value is a warning (the caller
        keeps the text), since the rest of the record is still sound."""
        text = self.required(name) if required else self.get(name)
        if not text:
            return None
        try:
            return parse_gender(text)
        except ValueError as exc:
            self.warning(name, f"{exc}; kept as text", "code-invalid")
            return None

    def gender_and_text(self, name: str) -> tuple[str | None, str]:
        """:meth:`gender`, and the value as written when it is not a known gender ("" otherwise),
        for the mapping to keep as text."""
        text = self.get(name)
        gender = self.gender(name)
        return gender, text if gender is None else ""

    def nhs_number(self, name: str) -> str | None:
        """A valid NHS number from column ``name`` (spaces and hyphens dropped). One that fails the
        check is a warning and is not recorded: it could link the record to someone else."""
        value = self.get(name).replace(" ", "").replace("-", "")
        if not value:
            return None
        if systems.nhs_number_is_valid(value):
            return value
        self.warning(name, f"{self.get(name)!r} is not a valid NHS number (10 digits, modulus-11 check digit); "
                           "not recorded")
        return None

    def differs(self, values: dict[str, tuple[Any, Any]], given_for: str) -> None:
        """A warning for each column whose new value differs from the old one given for the same
        person in another record (``{column: (old, new)}``); the caller decides which is kept."""
        for column, (old, new) in values.items():
            if old and new and old != new:
                self.warning(column, f"{new} differs from {old} given for {given_for}")

    def one_per_file(self, name: str, value: str | None, first: str | None, what: str) -> bool:
        """False, with an error for this record, when ``value`` (a force, a trust) differs from the
        ``first`` one the file named: one agency per import."""
        if value and first is not None and value != first:
            self.error(name, f"{value!r} differs from the {what} of the file ({first!r}); send one {what} per file")
            return False
        return True

    def integer(self, name: str, *, required: bool = False, minimum: int | None = 0) -> int | None:
        text = self.required(name) if required else self.get(name)
        if not text:
            return None
        try:
            return parse_int(text, minimum=minimum)
        except ValueError as exc:
            self.error(name, str(exc))
            return None

    def code(self, name: str, allowed: Collection[str], *, required: bool = False) -> str | None:
        """A value that must be one of ``allowed`` (compared case-insensitively, returned as listed);
        anything else is an error. For codes the mapping cannot do without (a record type)."""
        text = self.required(name) if required else self.get(name)
        if not text:
            return None
        by_upper = {a.upper(): a for a in allowed}
        if text.upper() in by_upper:
            return by_upper[text.upper()]
        self.error(name, f"{text!r} is not one of {', '.join(sorted(allowed))}", "code-invalid")
        return None

    def concept(self, name: str, code_system: str, *, required: bool = False) -> dict[str, Any] | None:
        """A CodeableConcept for the code in column ``name`` from one of our CodeSystems
        (profiles/codesystems/``code_system``.json). A code outside it is kept as ``text`` and
        reported (warning), never dropped."""
        text = self.required(name) if required else self.get(name)
        if not text:
            return None
        for candidate in (text, text.upper(), text.lower()):
            if codes.is_known(code_system, candidate):
                return codes.concept(code_system, candidate)
        self.warning(name, f"unknown code {text!r} (not in CodeSystem {code_system}); kept as text",
                     "code-invalid")
        return {"text": text}


def optional_upn(row: Row, column: str) -> str | None:
    """The UPN in ``column``, upper-cased without spaces; None when blank or an unknown-reason code
    (UN1–UN7), and also, with a warning, when it is not the shape of a UPN: a malformed UPN is not
    used as an identifier, where it could link the child to someone else."""
    upn = row.get(column).upper().replace(" ", "")
    if not upn or upn in UPN_UNKNOWN:
        return None
    if not UPN_FORM.fullmatch(upn):
        row.warning(column, f"{row.get(column)!r} is not a UPN (a letter and 12 digits, or 11 digits and a "
                    "letter); not used as an identifier")
        return None
    return upn


class CsvTable:
    """One CSV file, checked against the columns a mapper expects and read row by row.

    The header is read when the table is made: a missing required column or a repeated column name
    is a file-level error (``ok`` is False and no rows are read); an unknown column is a warning.
    Iterating streams :class:`Row` objects; blank lines are skipped; a line with the wrong number of
    values is an error for its record; a line that breaks the CSV syntax ends the file with a
    file-level error. ``key`` names the column holding the record key (or computes it from the
    values); a row without one gets ``"<file> line N"``, a record of its own.
    """

    def __init__(self, source: SourceFile, issues: list[SourceIssue], *, required: Collection[str],
                 optional: Collection[str] = (), key: str | RecordKey | None = None) -> None:
        self.source = source
        self.issues = issues
        self.required = [c.lower() for c in required]
        self.known = set(self.required) | {c.lower() for c in optional}
        self._key = key
        self._lines = _Lines(source.content)
        self._reader = csv.reader(self._lines, strict=True)
        self.columns: list[str] = []
        self.ok = self._read_header()

    def _file_issue(self, severity: str, line: int, column: str, message: str, code: str) -> None:
        self.issues.append(SourceIssue(severity, self.source.name, f"line {line}", column, message, code))

    def _read_header(self) -> bool:
        try:
            header = next((cells for cells in self._reader if any(c.strip() for c in cells)), None)
        except csv.Error as exc:
            self._file_issue("error", self._reader.line_num, "", f"not a CSV file: {exc}", "structure")
            return False
        if header is None:
            self._file_issue("error", 1, "", "the file is empty (no header row)", "structure")
            return False
        line = self._reader.line_num
        self.columns = [c.strip().lower() for c in header]
        ok = True
        seen: set[str] = set()
        for name in self.columns:
            if name in seen and name:
                self._file_issue("error", line, name, "column appears more than once", "structure")
                ok = False
            seen.add(name)
        for name in self.required:
            if name not in seen:
                self._file_issue("error", line, name, "required column is missing", "required")
                ok = False
        for position, name in enumerate(self.columns, start=1):
            if name not in self.known:
                label = name or f"column {position}"
                self._file_issue("warning", line, label, "unknown column, ignored", "not-supported")
        return ok

    def has(self, name: str) -> bool:
        return name.lower() in self.columns

    def __iter__(self) -> Iterator[Row]:
        if not self.ok:
            return
        width = len(self.columns)
        previous = self._reader.line_num
        try:
            for cells in self._reader:
                start, previous = previous + 1, self._reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                values = {name: cell.strip() for name, cell in zip(self.columns, cells) if name in self.known}
                row = Row(self.source.name, start, values, self._record_key(values, start), self.issues)
                if len(cells) != width:
                    row.error("", f"the line has {len(cells)} values but the header has {width} columns",
                              "structure")
                if any(n in self._lines.undecodable for n in range(start, previous + 1)):
                    row.error("", "characters that are neither UTF-8 nor Windows-1252 (replaced by \ufffd)",
                              "structure")
                yield row
        except csv.Error as exc:
            self._file_issue("error", self._reader.line_num, "", f"CSV syntax error: {exc}", "structure")
        finally:
            self._report_encoding()

    def _record_key(self, values: dict[str, str], line: int) -> str:
        if self._key is None:
            key = ""
        elif callable(self._key):
            key = self._key(values)
        else:
            key = values.get(self._key.lower(), "")
        return key or f"{self.source.name} line {line}"

    def _report_encoding(self) -> None:
        lines = self._lines.not_utf8
        if lines:
            self._file_issue("warning", lines[0], "",
                             f"{len(lines)} line(s) are not UTF-8 (first: line {lines[0]}); they were read as "
                             f"Windows-1252 — save the file as UTF-8", "value")
            self._lines.not_utf8 = []
