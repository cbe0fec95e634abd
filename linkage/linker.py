"""Matching and the link decision for one arriving record, over any :class:`LinkStore`.

The decision (issue 5, "linking on write"): an agency record is compared with the candidates that
blocking finds; candidates already linked to a master are judged as their whole cluster (the pair
with the best score speaks for it, and one certainly-not pair with any member vetoes it). Then:

- a *certain* cluster: the record joins its master (a master is created for a pair of unlinked
  records); other certain or probable clusters get a review Task, never an automatic merge;
- otherwise the best *probable* cluster gets a review Task for a practitioner;
- below that, nothing.

A record that a practitioner split off a master is never put back into it automatically, and a pair
already put to review (whatever the answer) is not put again.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from . import household
from .blocking import BlockingQuery, query_for
from .model import CERTAIN, CERTAINLY_NOT, POSSIBLE, PROBABLE, Model, Score, certainly_not, score_pair
from .record import PersonRecord

GRADE_ORDER = {CERTAIN: 0, PROBABLE: 1, POSSIBLE: 2, CERTAINLY_NOT: 3}


class LinkStore(Protocol):
    """What matching and linking need from storage (SQL: :mod:`linkage.store`; memory: :mod:`linkage.memory`)."""

    def candidates(self, query: BlockingQuery, *, exclude: str | None = None) -> list[PersonRecord]: ...

    def term_frequency(self, field: str, value: str) -> float | None: ...

    def population(self) -> int: ...

    def masters_of(self, record_ids: Sequence[str]) -> dict[str, str]: ...

    def members(self, master_id: str) -> list[PersonRecord]: ...

    def excluded(self, master_id: str) -> set[str]: ...

    def reviewed(self, a: str, b: str) -> bool: ...

    def link(self, record: PersonRecord, partner: PersonRecord, master_id: str | None, score: Score) -> str: ...

    def request_review(self, record: PersonRecord, candidate: PersonRecord, master_id: str | None,
                       score: Score) -> None: ...

    def merge(self, into: str, other: str, via: PersonRecord, score: Score) -> None: ...

    def at_postcodes(self, postcodes: Sequence[str]) -> list[PersonRecord]:
        """Agency records with an address at any of ``postcodes`` (a household and its neighbours)."""

    def at_records(self, record_ids: Sequence[str]) -> list[PersonRecord]: ...

    def rejected(self, a: str, b: str) -> bool:
        """Whether a practitioner answered a review of this pair "not the same person"."""

    def close_reviews(self, a: str, b: str, master_id: str) -> None: ...


@dataclass(frozen=True)
class Match:
    record: PersonRecord
    score: Score


@dataclass
class Decision:
    action: str  # linked | review | none | already-linked | skipped
    master_id: str | None = None
    partner: Match | None = None
    reviews: list[Match] = field(default_factory=list)


class Matcher:
    """Scores a record against the store's candidates with one model."""

    def __init__(self, model: Model, store: LinkStore) -> None:
        self.store = store
        self.model = model.for_population(store.population())

    def score(self, a: PersonRecord, b: PersonRecord) -> Score:
        return score_pair(self.model, a, b, self.store.term_frequency)

    def match(self, record: PersonRecord, *, include_not: bool = True) -> list[Match]:
        """Every graded candidate, best first (patient-operation-match.html: ordered from most likely)."""
        query = query_for(record)
        if query.empty:
            return []
        out = []
        for candidate in self.store.candidates(query, exclude=record.id or None):
            if candidate.is_master or candidate.id == record.id:
                continue
            s = self.score(record, candidate)
            if s.grade is None or (s.grade == CERTAINLY_NOT and not include_not):
                continue
            if s.grade == CERTAINLY_NOT and not _looks_alike(self.model, record, candidate):
                continue
            if s.grade == PROBABLE and household.moved_pair(self.model, s):
                s = self._household(record, candidate, s)
            out.append(Match(candidate, s))
        out.sort(key=lambda m: (*_rank(m.score), m.record.id))
        return out

    def decide(self, record: PersonRecord) -> Decision:
        """Link ``record`` (already stored) per the module docstring; returns what was done."""
        if record.is_master:
            return Decision("skipped")
        if self.store.masters_of([record.id]).get(record.id):
            return Decision("already-linked", self.store.masters_of([record.id])[record.id])
        matches = self.match(record, include_not=False)
        if not matches:
            return Decision("none")
        masters = self.store.masters_of([m.record.id for m in matches])
        clusters: dict[str, Match] = {}
        vetoed: set[str] = set()
        for m in matches:
            key = masters.get(m.record.id) or f"record:{m.record.id}"
            if key in vetoed or key in clusters:
                continue
            master_id = masters.get(m.record.id)
            if master_id:
                if record.id in self.store.excluded(master_id):
                    vetoed.add(key)
                    continue
                best = self._cluster_best(record, master_id, m)
                if best is None:
                    vetoed.add(key)
                    continue
                clusters[key] = best
            else:
                clusters[key] = m
        ranked = sorted(clusters.items(), key=lambda kv: _rank(kv[1].score))
        certain = [(k, m) for k, m in ranked if m.score.grade == CERTAIN]
        probable = [(k, m) for k, m in ranked if m.score.grade == PROBABLE]
        decision = Decision("none")
        if certain:
            key, best = certain[0]
            master_id = key if not key.startswith("record:") else None
            master_id = self.store.link(record, best.record, master_id, best.score)
            decision = Decision("linked", master_id, best)
            if best.score.household:
                self._join_household(best.score.household, best.score)
            to_review = probable[:1]
            for other_key, other in certain[1:]:
                # certain with two clusters: by transitivity they are one person, unless any of their
                # members are certainly not the same person (then a practitioner decides)
                if self._compatible(master_id, other_key, other):
                    if other_key.startswith("record:"):
                        self.store.link(other.record, record, master_id, other.score)
                    else:
                        self.store.merge(master_id, other_key, record, other.score)
                else:
                    to_review.append((other_key, other))
        else:
            to_review = probable[:1]
        for key, m in to_review:
            # one review per record and person: any pair with a member of that cluster counts
            others = [m.record.id] if key.startswith("record:") else [r.id for r in self.store.members(key)]
            if any(self.store.reviewed(record.id, other) for other in {m.record.id, *others}):
                continue
            self.store.request_review(record, m.record, None if key.startswith("record:") else key, m.score)
            decision.reviews.append(m)
        if decision.action == "none" and decision.reviews:
            decision.action = "review"
        return decision

    def _household(self, record: PersonRecord, candidate: PersonRecord, s: Score) -> Score:
        """``s`` made certain when another person of the household shows the same move
        (:mod:`linkage.household`); unchanged otherwise."""
        if self.store.rejected(record.id, candidate.id):
            return s
        found = household.corroborating_pair(
            self.model, record, candidate, self.store.at_postcodes(record.postcodes),
            self.store.at_postcodes(candidate.postcodes), self.score, self._same_master)
        if found is None:
            return s
        a, b, _ = found
        return replace(s, grade=CERTAIN, household=(a.id, b.id),
                       reason=f"certain: the household moved ({'/'.join(record.postcodes)} ~ "
                              f"{'/'.join(candidate.postcodes)}), as Patient/{a.id} ~ Patient/{b.id} show")

    def _same_master(self, a: PersonRecord, b: PersonRecord) -> bool:
        masters = self.store.masters_of([a.id, b.id])
        return bool(masters.get(a.id)) and masters.get(a.id) == masters.get(b.id)

    def _join_household(self, pair: tuple[str, str], via: Score) -> None:
        """Link the pair that corroborated a move (it is corroborated in turn by the pair just
        linked), unless it is already one person, a practitioner split either off, or any member of
        their clusters is certainly not the other."""
        ids = list(pair)
        records = {r.id: r for r in self.store.at_records(ids)}
        if len(records) != 2 or self.store.rejected(*ids):
            return
        a, b = records[ids[0]], records[ids[1]]
        s = self.score(a, b)
        if s.grade not in (CERTAIN, PROBABLE):
            return
        s = replace(s, grade=CERTAIN, reason=f"certain: corroborates the household's move of a linked sibling "
                                             f"({via.reason})")
        masters = self.store.masters_of(ids)
        ma, mb = masters.get(a.id), masters.get(b.id)
        if ma and ma == mb:
            return
        if ma and mb:
            if not self._compatible(ma, mb, Match(b, s)):
                return
            self.store.merge(ma, mb, a, s)
            master_id = ma
        elif ma or mb:
            master_id, joining, partner = (ma, b, a) if ma else (mb, a, b)
            if not self._compatible(master_id, f"record:{joining.id}", Match(joining, s)):
                return
            self.store.link(joining, partner, master_id, s)
        else:
            master_id = self.store.link(a, b, None, s)
        # the pair had gone to review when it arrived with nothing to support it: that is answered now
        self.store.close_reviews(a.id, b.id, master_id)

    def _compatible(self, master_id: str, other_key: str, other: Match) -> bool:
        mine = self.store.members(master_id)
        theirs = [other.record] if other_key.startswith("record:") else self.store.members(other_key)
        if other_key.startswith("record:") and other.record.id in self.store.excluded(master_id):
            return False
        return not any(certainly_not(a, b) for a in mine for b in theirs)

    def _cluster_best(self, record: PersonRecord, master_id: str, seen: Match) -> Match | None:
        """The best pair between ``record`` and any member of the master; None if any member is
        certainly not the same person."""
        best = seen
        for member in self.store.members(master_id):
            if member.id == record.id:
                continue
            s = self.score(record, member)
            if s.grade == CERTAINLY_NOT:
                return None
            if s.grade is not None and _rank(s) < _rank(best.score):
                best = Match(member, s)
        return best


def _rank(s: Score) -> tuple[int, float]:
    return GRADE_ORDER.get(s.grade or POSSIBLE, 9), -s.probability


def _looks_alike(model: Model, a: PersonRecord, b: PersonRecord) -> bool:
    """Whether a certainly-not candidate is worth showing: it would score at least "possible"."""
    from dataclasses import replace as _replace
    s = score_pair(model, _replace(a, nhs=None, identifiers=frozenset()), _replace(b, nhs=None,
                                                                                   identifiers=frozenset()))
    return s.grade is not None
