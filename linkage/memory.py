"""An in-memory :class:`~linkage.linker.LinkStore`: the evaluation's store and the router-free twin
of :mod:`linkage.store` (the same blocking keys, clusters instead of master Patients)."""
from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence

from .blocking import BlockingQuery, query_keys, stored_keys
from .model import Score, tf_key
from .record import PersonRecord


class MemoryStore:
    def __init__(self, records: Iterable[PersonRecord] = ()) -> None:
        self.records: dict[str, PersonRecord] = {}
        self._index: dict[str, set[str]] = {}
        self._tf: dict[str, Counter[str]] = {"forename": Counter(), "surname": Counter()}
        self._postcodes: dict[str, set[str]] = {}
        self.master_of: dict[str, str] = {}
        self.clusters: dict[str, set[str]] = {}
        self.split: dict[str, set[str]] = {}
        self.reviews: dict[frozenset[str], Score] = {}
        self.not_same: set[frozenset[str]] = set()  # reviews answered "not the same person"
        self.closed_reviews: set[frozenset[str]] = set()  # reviews answered by a later automatic link
        self.links: list[tuple[str, str, Score]] = []
        self._masters = itertools.count(1)
        for record in records:
            self.add(record)

    def add(self, record: PersonRecord) -> None:
        if record.id in self.records:
            self.remove(record.id)
        self.records[record.id] = record
        for key in stored_keys(record):
            self._index.setdefault(key, set()).add(record.id)
        for postcode in record.postcodes:
            self._postcodes.setdefault(postcode, set()).add(record.id)
        for name in self._tf:
            if key := tf_key(record, name):
                self._tf[name][key] += 1

    def remove(self, record_id: str) -> None:
        record = self.records.pop(record_id)
        for key in stored_keys(record):
            self._index.get(key, set()).discard(record_id)
        for postcode in record.postcodes:
            self._postcodes.get(postcode, set()).discard(record_id)
        for name in self._tf:
            if key := tf_key(record, name):
                self._tf[name][key] -= 1

    # -- LinkStore ------------------------------------------------------------------------------------

    def candidates(self, query: BlockingQuery, *, exclude: str | None = None) -> list[PersonRecord]:
        ids: set[str] = set()
        for key in query_keys(query):
            ids.update(self._index.get(key, ()))
        ids.discard(exclude or "")
        return [self.records[i] for i in sorted(ids)]

    def term_frequency(self, field: str, value: str) -> float | None:
        total = len(self.records)
        if not total or not value:
            return None
        return max(self._tf[field][value], 1) / total

    def population(self) -> int:
        return max(len(self.records), 2)

    def masters_of(self, record_ids: Sequence[str]) -> dict[str, str]:
        return {i: self.master_of[i] for i in record_ids if i in self.master_of}

    def members(self, master_id: str) -> list[PersonRecord]:
        return [self.records[i] for i in sorted(self.clusters.get(master_id, ())) if i in self.records]

    def excluded(self, master_id: str) -> set[str]:
        return self.split.get(master_id, set())

    def reviewed(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.reviews

    def close_reviews(self, a: str, b: str, master_id: str) -> None:
        self.closed_reviews.add(frozenset((a, b)))

    def rejected(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.not_same

    def at_postcodes(self, postcodes: Sequence[str]) -> list[PersonRecord]:
        ids = set().union(*(self._postcodes.get(p, ()) for p in postcodes)) if postcodes else set()
        return [self.records[i] for i in sorted(ids)]

    def at_records(self, record_ids: Sequence[str]) -> list[PersonRecord]:
        return [self.records[i] for i in record_ids if i in self.records]

    def link(self, record: PersonRecord, partner: PersonRecord, master_id: str | None, score: Score) -> str:
        if master_id is None:
            master_id = f"M{next(self._masters)}"
            self.clusters[master_id] = {partner.id}
            self.master_of[partner.id] = master_id
        self.clusters[master_id].add(record.id)
        self.master_of[record.id] = master_id
        self.links.append((record.id, partner.id, score))
        return master_id

    def request_review(self, record: PersonRecord, candidate: PersonRecord, master_id: str | None,
                       score: Score) -> None:
        self.reviews[frozenset((record.id, candidate.id))] = score

    def merge(self, into: str, other: str, via: PersonRecord, score: Score) -> None:
        for record_id in self.clusters.pop(other, set()):
            self.clusters[into].add(record_id)
            self.master_of[record_id] = into
        self.split.setdefault(into, set()).update(self.split.pop(other, set()))

    def unlink(self, record_id: str) -> None:
        master_id = self.master_of.pop(record_id)
        self.clusters[master_id].discard(record_id)
        self.split.setdefault(master_id, set()).add(record_id)
