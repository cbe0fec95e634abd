"""Typed records of one SSDA903 return, as read (reader.py) and before any FHIR (to_fhir.py).

Dates are parsed (``None`` when absent or unusable — the reader has reported why). Coded columns are
already CodeableConcepts from our CodeSystems, or ``{"text": …}`` for a code outside them (reported).
Every record keeps its file and line so that later checks can name them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ..csvutil import Where

Concept = dict[str, Any]  # a FHIR CodeableConcept


@dataclass(frozen=True)
class ChildHeader:
    """One row of the Header table: who the child is."""

    where: Where
    child_id: str
    gender: str | None  # R4 administrative gender
    gender_text: str  # the SEX value as written (kept when it is not a known code)
    birth_date: date | None
    ethnicity: Concept | None = None
    upn: str | None = None  # a well-formed UPN, upper-cased; None when absent, unknown (UN1–UN5) or malformed


@dataclass(frozen=True)
class Episode:
    """One row of the Episodes table: a period with one legal status and one placement."""

    where: Where
    child_id: str
    start: date  # DECOM
    end: date | None = None  # DEC
    reason_new: Concept | None = None  # RNE
    legal_status: Concept | None = None  # LS
    category_of_need: Concept | None = None  # CIN
    placement: Concept | None = None  # PLACE
    provider: Concept | None = None  # PLACE_PROVIDER
    reason_ceased: Concept | None = None  # REC
    reason_place_change: Concept | None = None  # REASON_PLACE_CHANGE
    home_postcode: str | None = None  # HOME_POST
    placement_postcode: str | None = None  # PL_POST
    placement_urn: str | None = None  # URN (Ofsted unique reference number of the placement)

    @property
    def ends_period_of_care(self) -> bool:
        """Closed with a known REC other than X1 (X1: a new episode follows the same day)."""
        found = _codes(self.reason_ceased)
        return self.end is not None and bool(found) and "X1" not in found

    @property
    def starts_period_of_care(self) -> bool:
        """RNE S: the child started to be looked after."""
        return "S" in _codes(self.reason_new)


def _codes(concept: Concept | None) -> set[str]:
    return {c.get("code", "") for c in (concept or {}).get("coding", [])}


@dataclass(frozen=True)
class MissingEpisode:
    """One row of the Missing table: the child was missing (M) or away without authorisation (A)."""

    where: Where
    child_id: str
    kind: str  # "M", "A", or the unknown value as written
    start: date
    end: date | None = None
    birth_date: date | None = None  # DOB, to cross-check with the header


@dataclass
class Return:
    """Everything read from the tables of one return; ``la_code`` is None when it cannot be told."""

    la_code: str | None
    header_file: str
    children: dict[str, ChildHeader] = field(default_factory=dict)
    episodes: list[Episode] = field(default_factory=list)
    missing: list[MissingEpisode] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # every record key seen (children and keyless rows)
    tables: set[str] = field(default_factory=set)  # the tables the return has ("Header", "Episodes", "Missing")

    def dates(self) -> list[date]:
        """Every episode and missing-episode date the return lists (starts and ends)."""
        rows: list[Episode | MissingEpisode] = [*self.episodes, *self.missing]
        return [d for row in rows for d in (row.start, row.end) if d is not None]
