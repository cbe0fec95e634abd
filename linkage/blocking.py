"""Blocking: which stored records are compared with an arriving one at all.

Comparing a record with every other is quadratic; a candidate must share at least one blocking
key. The rules are chosen so that a true match survives any single error the agencies make (a typo
in the name, a transposed or mistyped birth date, a changed surname, a stale postcode):

1. any identifier (NHS number, UPN — a former UPN too —, local authority child id, police person id,
   hospital number);
2. date of birth, or the date with day and month exchanged, with the same gender (or none known);
3. surname (as the search index normalises it), any spelling or known-as form of the first given
   name, and year of birth ± 1 (a mistyped birth date);
4. postcode and year of birth ± 1 (a changed surname, or a nickname, with a mistyped date).

Blocks on a name alone with a birth year were tried and dropped: at 100,000 children a common name
born within three years brings back hundreds of candidates for no measurable gain in recall.

:class:`BlockingQuery` is pure; :mod:`linkage.store` answers it from the FHIR search index tables
(``identifier``, ``birthdate``, ``family``, ``given``, ``address-postalcode``) and
:mod:`linkage.memory` from an in-memory key index, so both find the same candidates.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fhir_server.search.normalize import normalize_string

from .compare import name_variants, swapped
from .record import FORMER_UPN, NHS_NUMBER, UPN, PersonRecord


@dataclass(frozen=True)
class BlockingQuery:
    identifiers: frozenset[tuple[str, str]]  # (system, value), the NHS number included
    birth_dates: frozenset[dt.date]
    years: tuple[int, int] | None  # inclusive range of birth years
    surnames: frozenset[str]  # index-normalised (search.html#string)
    forenames: frozenset[str]
    postcodes: frozenset[str]
    gender: str | None = None  # restricts the date-of-birth block

    @property
    def empty(self) -> bool:
        return not (self.identifiers or self.birth_dates or self.postcodes or self.surnames or self.forenames)


def index_form(value: str) -> str:
    """A string as the search index stores it (``idx_string.value_norm``)."""
    return normalize_string(value).strip()


def query_for(record: PersonRecord) -> BlockingQuery:
    """The blocking keys to look up for ``record``."""
    identifiers = set(record.identifiers)
    # a stored record keeps a former UPN under its own system in the index (a PersonRecord reads it as a UPN)
    identifiers.update((FORMER_UPN, v) for s, v in record.identifiers if s == UPN)
    if record.nhs:
        identifiers.add((NHS_NUMBER, record.nhs))
    dates: set[dt.date] = set()
    years = None
    if record.birth_date:
        dates.add(record.birth_date)
        other = swapped(record.birth_date)
        if other:
            dates.add(other)
        years = (record.birth_date.year - 1, record.birth_date.year + 1)
    surnames = {index_form(record.family)} if record.family and years else set()
    forenames = {index_form(v) for v in name_variants(record.given[0])} if record.given and years else set()
    postcodes = {index_form(p) for p in record.postcodes} if years else set()
    return BlockingQuery(frozenset(identifiers), frozenset(dates), years, frozenset(s for s in surnames if s),
                         frozenset(f for f in forenames if f), frozenset(postcodes), record.gender)


def stored_keys(record: PersonRecord) -> set[str]:
    """The keys under which ``record`` is found (the in-memory twin of the index rows)."""
    keys = {f"id:{s}|{v}" for s, v in record.identifiers}
    if record.nhs:
        keys.add(f"id:{NHS_NUMBER}|{record.nhs}")
    if record.birth_date:
        year = record.birth_date.year
        keys.add(f"dob:{record.birth_date.isoformat()}:{record.gender or 'unknown'}")
        if record.family:
            for given in record.given:
                keys.add(f"name:{index_form(record.family)}:{index_form(given)}:{year}")
        for postcode in record.postcodes:
            keys.add(f"pc:{index_form(postcode)}:{year}")
    return keys


def query_keys(query: BlockingQuery) -> set[str]:
    """The keys to look up for a query (the in-memory twin of the SQL in :mod:`linkage.store`)."""
    keys = {f"id:{s}|{v}" for s, v in query.identifiers}
    genders = (query.gender, "unknown") if query.gender else ("male", "female", "unknown")
    keys.update(f"dob:{d.isoformat()}:{g}" for d in query.birth_dates for g in genders)
    if query.years:
        for year in range(query.years[0], query.years[1] + 1):
            keys.update(f"name:{s}:{g}:{year}" for s in query.surnames for g in query.forenames)
            keys.update(f"pc:{p}:{year}" for p in query.postcodes)
    return keys
