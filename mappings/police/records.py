"""Typed records of a police notifications file (docs/formats/police-notifications.md).

One :class:`Notification` per police reference and child; the people in it are :class:`Person`
records keyed by the force's own person (nominal) id, so that a child or an adult who appears in
several notifications is one record.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# notification_type → the risk-factor code it records (DA depends on whether the child was present).
TYPES = ("DA", "MISSING", "ARREST", "CSE", "CCE", "MARAC", "MAPPA")
RISK_FACTOR = {"MISSING": "missing-episode", "ARREST": "child-arrested", "CSE": "child-sexual-exploitation",
               "CCE": "child-criminal-exploitation", "MARAC": "marac-referral", "MAPPA": "mappa-referral"}
ROLES = ("alleged-perpetrator", "victim", "other")
RELATIONSHIPS = ("mother", "father", "stepmother", "stepfather", "mothers-partner", "fathers-partner",
                 "grandparent", "sibling", "other")
PRESENCE = ("Y", "N", "U")

When = dt.datetime | dt.date


@dataclass
class Person:
    """A child or an adult as the force records them."""

    person_id: str
    record: str  # "person <id>": the lenient-mode record of the Patient built from a child
    forename: str = ""
    surname: str = ""
    birth_date: dt.date | None = None
    gender: str | None = None
    gender_text: str = ""  # a gender the mapping could not code, kept as the source wrote it
    nhs_number: str | None = None  # only a valid one
    postcode: str = ""


@dataclass
class Involvement:
    """An adult in one notification, with the role they had in it."""

    adult_id: str
    role: str  # a police-adult-role code, or the source text when unknown
    role_known: bool


@dataclass
class Relationship:
    """What an adult is to a child (the latest notification's word for it)."""

    adult_id: str
    child_id: str
    relationship: str  # one of RELATIONSHIPS, or the source text when unknown
    known: bool


@dataclass
class Notification:
    force: str
    reference: str
    child_id: str
    record: str  # "<police reference>/<child person id>"
    type: str  # one of TYPES, or the source text when unknown
    type_known: bool
    start: When
    end: When | None = None
    child_present: str = "U"
    child_location: str = ""
    school_urn: str = ""
    offence: str = ""
    circumstances: str = ""
    child_voice: str = ""
    adults: list[Involvement] = field(default_factory=list)


@dataclass
class PoliceFile:
    """Everything read from one import (one or more files of one force)."""

    force: str | None = None
    notifications: dict[str, Notification] = field(default_factory=dict)
    children: dict[str, Person] = field(default_factory=dict)
    adults: dict[str, Person] = field(default_factory=dict)
    relationships: dict[tuple[str, str], Relationship] = field(default_factory=dict)
    records: set[str] = field(default_factory=set)
