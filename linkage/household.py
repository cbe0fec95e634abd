"""Household evidence for a family that moved: when one agency holds a child at the old address and
another at the new one, the child's name and birth date agree but the postcodes do not. On its own
such a pair is never linked automatically (the wrong-merge guard: two different children with the
same name and birthday at different addresses). It becomes certain when *another person* of the
same household shows the same move: a record at one of the first record's postcodes is the same
person as a record at one of the candidate's postcodes (a sibling's school and hospital records, a
parent's police and GP records). Two independent people with matching records across the same two
addresses is what a move looks like; two unrelated children who happen to share a name and birthday
do not bring a matching household with them.

The rule is symmetric: the corroborating pair is corroborated by the first one, so the linker links
both (the first sibling to arrive would otherwise wait for review for ever).

Pure functions over :class:`~linkage.model.Score` vectors; :class:`~linkage.linker.Matcher` finds the
records at the two addresses through the store.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from . import compare
from .model import CERTAIN, COMPARISONS, Model, Score, forenames_corroborate
from .record import PersonRecord

# agreement a "moved" pair needs beyond the probability: the same birth date and a name that agrees
# (a nickname or a typo in the forename, a double-barrelled or mistyped surname), postcodes present
MOVE_FORENAME = ("exact", "equivalent", "close")
MOVE_SURNAME = ("exact", "close", "part")
MOVE_POSTCODE = ("district", "different")
# a record is of another person than the pair when its forename or its birth date clearly differs
_OTHER_FORENAME = ("different", "initial")
_OTHER_DOB = ("year", "different")
_NAMES = tuple(c.name for c in COMPARISONS)


def levels(score: Score) -> dict[str, str | None]:
    return dict(zip(_NAMES, score.vector))


def moved_pair(model: Model, score: Score) -> bool:
    """A pair that would be a match but for the address: probable or better, the birth date exact,
    forename and surname agreeing (not by a keying slip alone, nor closely with the sexes apart:
    :func:`~linkage.model.forenames_corroborate`), and both postcodes known but apart."""
    v = levels(score)
    return (score.probability >= model.thresholds.probable and v["dob"] == "exact"
            and v["forename"] in MOVE_FORENAME and forenames_corroborate(score.vector, slip=score.forename_slip)
            and v["surname"] in MOVE_SURNAME and v["postcode"] in MOVE_POSTCODE)


def other_person(a: PersonRecord, b: PersonRecord) -> bool:
    """Whether ``a`` is certainly not a record of the person ``b`` is: a different forename (twins
    differ there) or a different birth date. Needed so that a child's own second record at the old
    address cannot count as a household member corroborating itself."""
    forename = compare.compare_forenames(list(a.given), list(b.given))
    dob = compare.compare_dates(a.birth_date, b.birth_date)
    return forename in _OTHER_FORENAME or dob in _OTHER_DOB


def corroborating_pair(model: Model, record: PersonRecord, candidate: PersonRecord,
                       here: Iterable[PersonRecord], there: Iterable[PersonRecord],
                       score: Callable[[PersonRecord, PersonRecord], Score],
                       same_master: Callable[[PersonRecord, PersonRecord], bool]) -> tuple[PersonRecord, PersonRecord,
                                                                                      Score] | None:
    """Another person's two records, one at an address of ``record`` (``here``) and one at an address
    of ``candidate`` (``there``), that are the same person: already linked together, certain on their
    own (an NHS number, a police id), or themselves a moved pair. None when there is no such pair."""
    pair_ids = {record.id, candidate.id}
    others_here = [r for r in here if r.id not in pair_ids and other_person(r, record) and other_person(r, candidate)]
    others_there = [r for r in there if r.id not in pair_ids and other_person(r, record)
                    and other_person(r, candidate)]
    # only pairs that could be one person are scored: the same birth date (a moved pair needs it) or a
    # shared identifier — a tower block's postcode must not cost a score per pair of its residents
    by_birth: dict[dt.date | None, list[PersonRecord]] = {}
    by_identifier: dict[tuple[str, str], list[PersonRecord]] = {}
    for b in others_there:
        by_birth.setdefault(b.birth_date, []).append(b)
        for key in _identifiers(b):
            by_identifier.setdefault(key, []).append(b)
    for a in others_here:
        near = {b.id: b for b in by_birth.get(a.birth_date, []) if a.birth_date is not None}
        near.update({b.id: b for key in _identifiers(a) for b in by_identifier.get(key, [])})
        for b in near.values():
            if a.id == b.id or set(a.postcodes) & set(b.postcodes):
                continue
            s = score(a, b)
            if s.grade == CERTAIN or moved_pair(model, s) or (same_master(a, b) and s.grade is not None):
                return a, b, s
    return None


def _identifiers(record: PersonRecord) -> set[tuple[str, str]]:
    return set(record.identifiers) | ({("nhs", record.nhs)} if record.nhs else set())
