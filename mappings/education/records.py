"""Typed records of a school-census-csv file, as read (reader.py) and before any FHIR (to_fhir.py).

Dates are parsed and counts are integers (``None`` when absent or unusable — the reader has said
why). Coded values are CodeableConcepts from our CodeSystems, or ``{"text": …}`` for a code outside
them (reported). Every record keeps its file and line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ..csvutil import Where

Concept = dict[str, Any]  # a FHIR CodeableConcept

ATTENDANCE, SUSPENSION, PERMANENT_EXCLUSION, CME, EHE = (
    "ATTENDANCE", "SUSPENSION", "PERMANENT_EXCLUSION", "CME", "EHE")
RECORD_TYPES = (ATTENDANCE, SUSPENSION, PERMANENT_EXCLUSION, CME, EHE)


@dataclass
class Pupil:
    """Who the pupil is, gathered from all their rows (the most recent record's values win)."""

    upn: str
    where: Where  # the first row naming the pupil
    as_of: date | None = None  # date of the record the details come from
    forename: str = ""
    surname: str = ""
    birth_date: date | None = None
    gender: str | None = None  # R4 administrative gender
    gender_text: str = ""  # the value as written, kept when it is not a known code
    postcode: str = ""
    postcodes_seen: list[str] = field(default_factory=list)  # every postcode of their rows, first seen first


@dataclass(frozen=True)
class School:
    urn: str
    name: str = ""


@dataclass(frozen=True)
class Attendance:
    """One pupil's attendance at one school over one term."""

    where: Where
    upn: str
    school: str | None  # URN
    term: str
    start: date
    end: date
    possible: int
    attended: int
    authorised: int | None = None
    unauthorised: int | None = None


@dataclass(frozen=True)
class Exclusion:
    """A suspension or a permanent exclusion, starting on ``start``."""

    where: Where
    upn: str
    school: str | None
    permanent: bool
    start: date
    reason: Concept | None = None
    category: Concept | None = None
    sessions: int | None = None


@dataclass(frozen=True)
class MissingEducation:
    """A child missing education (CME, from the day identified) or electively home educated (EHE,
    from its start); ``end`` when it ended. ``school`` is the school the child was last on roll at."""

    where: Where
    upn: str
    kind: str  # CME | EHE
    school: str | None
    start: date
    end: date | None = None


@dataclass
class CensusFile:
    """Everything read from the file(s) of one import; ``la_code`` None when it cannot be told."""

    la_code: str | None = None
    pupils: dict[str, Pupil] = field(default_factory=dict)
    schools: dict[str, School] = field(default_factory=dict)
    attendance: list[Attendance] = field(default_factory=list)
    exclusions: list[Exclusion] = field(default_factory=list)
    missing: list[MissingEducation] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # every record key seen (UPNs and keyless rows)
