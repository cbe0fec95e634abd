"""Typed records of a CIN census file, as read (reader.py) and before any FHIR (to_fhir.py).

Values are what the file says after light normalisation: dates parsed (``None`` when absent or
unusable — the reader has reported why), codes stripped and upper-cased but not yet checked against
our CodeSystems (to_fhir.py does that, keeps unknown ones as text and reports them). Every record
carries the XPath of its element so that later issues can name it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True)
class CensusHeader:
    """``Message/Header``: which collection, which local authority, when."""

    lea: str | None  # 3-digit local authority code; None when missing or malformed
    collection: str | None = None
    year: str | None = None
    reference_date: date | None = None
    software: str | None = None
    release: str | None = None
    serial_no: str | None = None
    generated: str | None = None  # Source/DateTime as written


@dataclass(frozen=True)
class Assessment:
    xpath: str
    start: date | None
    internal_review: date | None = None
    authorised: date | None = None
    factors: tuple[tuple[str, str], ...] = ()  # (code, XPath of its AssessmentFactors element)


@dataclass(frozen=True)
class CinPlan:
    xpath: str
    start: date | None
    end: date | None = None


@dataclass(frozen=True)
class Section47:
    xpath: str
    start: date | None
    initial_cpc_target: date | None = None
    initial_cpc: date | None = None
    icpc_not_required: bool | None = None


@dataclass(frozen=True)
class ProtectionPlan:
    xpath: str
    start: date | None
    end: date | None = None
    initial_category: str | None = None
    latest_category: str | None = None
    previous_plans: int | None = None
    reviews: tuple[date, ...] = ()


@dataclass(frozen=True)
class CinEpisode:
    """One ``CINdetails``: a referral to children's social care and everything that followed it."""

    xpath: str
    referral_date: date | None
    referral_source: str | None = None
    primary_need: str | None = None
    closure_date: date | None = None
    closure_reason: str | None = None
    initial_cpc: date | None = None
    referral_nfa: bool | None = None
    assessments: tuple[Assessment, ...] = ()
    cin_plans: tuple[CinPlan, ...] = ()
    section47s: tuple[Section47, ...] = ()
    protection_plans: tuple[ProtectionPlan, ...] = ()


@dataclass(frozen=True)
class ChildRecord:
    """One ``Child``. ``key`` names the record in issues (the LAchildID, or ``Child[n]`` without one)."""

    index: int  # 1-based position under Children
    xpath: str
    key: str
    la_child_id: str | None
    upn: str | None = None
    former_upn: str | None = None
    upn_unknown: str | None = None
    nhs_number: str | None = None
    birth_date: date | None = None
    expected_birth_date: date | None = None
    gender: str | None = None  # the code as written in GenderCurrent or Sex
    gender_element: str = "GenderCurrent"
    death_date: date | None = None
    ethnicity: str | None = None
    disabilities: tuple[tuple[str, str], ...] = ()  # (code, XPath)
    episodes: tuple[CinEpisode, ...] = field(default=())
