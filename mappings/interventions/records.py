"""Typed records of an interventions-csv file, as read (reader.py) and before any FHIR (to_fhir.py).

Dates are parsed (``None`` when absent or unusable — the reader has reported why). The intervention
type is already a CodeableConcept from our episode-type CodeSystem, or ``{"text": …}`` for a value
outside its intervention codes (reported). Every record keeps its file and line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ..csvutil import Where

Concept = dict[str, Any]  # a FHIR CodeableConcept

END_REASONS = ("completed", "disengaged")  # the documented end_reason values


@dataclass
class Child:
    """Who the child is, gathered from all their rows: the values of the row with the latest
    intervention win (names and addresses change), a value absent there is taken from another row."""

    child_id: str  # the LA's own child id (LAchildID / CHILD): the Patient's key
    where: Where  # the first row naming the child
    as_of: date | None = None  # the date of the row the details come from
    forename: str = ""
    surname: str = ""
    birth_date: date | None = None
    gender: str | None = None  # R4 administrative gender
    gender_text: str = ""  # the value as written, kept when it is not a known code
    postcode: str = ""
    nhs_number: str | None = None  # a valid one (an invalid one is reported and dropped)
    upn: str | None = None  # a well-formed UPN, upper case


@dataclass(frozen=True)
class Provider:
    """Who delivers an intervention, as the LA names it: ``key`` is the name folded to lower case
    with its spaces collapsed, so that two spellings of one name are one provider."""

    key: str
    name: str  # the first spelling in the file


@dataclass(frozen=True)
class LeadProfessional:
    """The LA worker leading an intervention, by the id the LA's system gives them."""

    professional_id: str
    name: str = ""


@dataclass(frozen=True)
class Intervention:
    """One row: one child's episode of one intervention."""

    where: Where
    episode_id: str
    child_id: str
    kind: Concept  # episode-type coding, or {"text": …}
    referral_date: date | None = None  # when it was offered
    start: date | None = None
    end: date | None = None
    end_reason: str = ""  # completed | disengaged (lower case), or an unknown value as written
    provider: str | None = None  # Provider.key
    lead_id: str | None = None  # LeadProfessional.professional_id
    lead_name: str = ""  # the lead professional's name as this row gives it


@dataclass
class InterventionsFile:
    """Everything read from the file(s) of one import; ``la_code`` None when it cannot be told."""

    la_code: str | None = None
    children: dict[str, Child] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)
    leads: dict[str, LeadProfessional] = field(default_factory=dict)
    interventions: list[Intervention] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # every record key seen (child ids and keyless rows)
