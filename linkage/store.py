"""The :class:`~linkage.linker.LinkStore` on the FHIR database, inside one unit of work.

Blocking reads the search index tables every Patient already has (no table of our own): token
``identifier``, date ``birthdate``, string ``family``, ``given`` and ``address-postalcode``, and the
``link`` reference of master Patients. Everything linkage writes is an ordinary FHIR resource
through the unit of work — master Patients, review Tasks and Provenance — so it is versioned,
searchable, audited and seen by the outbox like any other write.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import and_, func, or_, select, union

from fhir_server.repository.context import RequestContext
from fhir_server.repository.sql import UnitOfWork
from fhir_server.storage.tables import idx_date, idx_reference, idx_string, idx_token, resource

from . import golden
from .blocking import BlockingQuery, index_form
from .model import Score
from .record import PersonRecord, from_patient, is_master

PATIENT = "Patient"
MAX_CANDIDATES = 1000
MAX_HOUSEHOLD = 200
_CACHE_SECONDS = 300.0


class _Cache:
    """Process-wide cache of counts (population, name frequencies): exact enough for a prior, and a
    count per request would cost more than the match itself on a large database."""

    def __init__(self, size: int = 50_000) -> None:
        self._lock = threading.Lock()
        self._data: dict[Any, tuple[float, Any]] = {}
        self.size = size

    def get(self, key: Any, compute: Any) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            if hit and now - hit[0] < _CACHE_SECONDS:
                return hit[1]
        value = compute()
        with self._lock:
            if len(self._data) >= self.size:
                self._data.clear()
            self._data[key] = (now, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


CACHE = _Cache()


@contextmanager
def _unprepared(conn: Any) -> Iterator[None]:
    """Run a statement without a server-side prepared statement on PostgreSQL. psycopg prepares a
    query after a few executions and PostgreSQL may then settle on a generic plan; for the blocking
    union (value lists of varying selectivity) the generic plan hashes every birth in the year range,
    and $match p95 went from 36 ms to over 300 ms at 240,000 Patients. A custom plan per call costs
    under a millisecond of planning."""
    raw = getattr(getattr(conn, "connection", None), "driver_connection", None)
    if getattr(getattr(conn, "dialect", None), "name", None) != "postgresql" or not hasattr(raw, "prepare_threshold"):
        yield
        return
    previous = raw.prepare_threshold
    raw.prepare_threshold = None
    try:
        yield
    finally:
        raw.prepare_threshold = previous


class SqlLinkStore:
    """Linkage storage for one unit of work; ``ctx`` is who the writes are made for."""

    def __init__(self, uow: UnitOfWork, ctx: RequestContext) -> None:
        self.uow = uow
        self.conn = uow.conn
        self.ctx = ctx
        self._cache_scope = str(self.conn.engine.url)
        self.contents: dict[str, dict[str, Any]] = {}  # candidates read so far (reused by $match)

    # -- reads ----------------------------------------------------------------------------------------

    def candidates(self, query: BlockingQuery, *, exclude: str | None = None) -> list[PersonRecord]:
        """Agency Patients sharing a blocking key with ``query`` (see :mod:`linkage.blocking`)."""
        parts = []
        if query.identifiers:
            parts.append(select(idx_token.c.resource_pk).where(
                idx_token.c.res_type == PATIENT, idx_token.c.param == "identifier",
                or_(*(and_(idx_token.c.code == value, idx_token.c.system == system)
                      for system, value in sorted(query.identifiers)))))
        if query.birth_dates:
            born_on = select(idx_date.c.resource_pk).where(
                idx_date.c.res_type == PATIENT, idx_date.c.param == "birthdate",
                idx_date.c.low.in_([dt.datetime(d.year, d.month, d.day) for d in sorted(query.birth_dates)]))
            if query.gender:
                born_on = born_on.join(idx_token, and_(
                    idx_token.c.resource_pk == idx_date.c.resource_pk, idx_token.c.res_type == PATIENT,
                    idx_token.c.param == "gender", idx_token.c.code.in_((query.gender, "unknown", "other"))))
            parts.append(born_on)
        if query.years:
            low = dt.datetime(query.years[0], 1, 1)
            high = dt.datetime(query.years[1] + 1, 1, 1)
            born = and_(idx_date.c.res_type == PATIENT, idx_date.c.param == "birthdate",
                        idx_date.c.low >= low, idx_date.c.low < high)
            if query.surnames and query.forenames:
                given = idx_string.alias("given")
                parts.append(
                    select(idx_string.c.resource_pk)
                    .join(given, and_(given.c.resource_pk == idx_string.c.resource_pk, given.c.res_type == PATIENT,
                                      given.c.param == "given", given.c.value_norm.in_(sorted(query.forenames))))
                    .join(idx_date, and_(idx_date.c.resource_pk == idx_string.c.resource_pk, born))
                    .where(idx_string.c.res_type == PATIENT, idx_string.c.param == "family",
                           idx_string.c.value_norm.in_(sorted(query.surnames))))
            if query.postcodes:
                parts.append(
                    select(idx_string.c.resource_pk)
                    .join(idx_date, and_(idx_date.c.resource_pk == idx_string.c.resource_pk, born))
                    .where(idx_string.c.res_type == PATIENT, idx_string.c.param == "address-postalcode",
                           idx_string.c.value_norm.in_(sorted(query.postcodes))))
        if not parts:
            return []
        pks = union(*parts).subquery()
        with _unprepared(self.conn):
            rows = self.conn.execute(
                select(resource.c.res_id, resource.c.content)
                .where(resource.c.pk.in_(select(pks.c.resource_pk)), resource.c.res_type == PATIENT,
                       resource.c.deleted.is_(False))
                .limit(MAX_CANDIDATES)).all()
        found = [(res_id, content) for res_id, content in rows
                 if res_id != exclude and content is not None and not is_master(content)]
        self.contents.update(found)
        return [from_patient(content, res_id) for res_id, content in found]

    def term_frequency(self, field: str, value: str) -> float | None:
        if not value:
            return None
        param = "given" if field == "forename" else "family"

        def count() -> int:
            return int(self.conn.execute(
                select(func.count(func.distinct(idx_string.c.resource_pk))).where(
                    idx_string.c.res_type == PATIENT, idx_string.c.param == param,
                    idx_string.c.value_norm == value)).scalar_one())

        found = CACHE.get((self._cache_scope, param, value), count)
        return max(found, 1) / self.population()

    def population(self) -> int:
        def count() -> int:
            return int(self.conn.execute(select(func.count()).select_from(resource).where(
                resource.c.res_type == PATIENT, resource.c.deleted.is_(False))).scalar_one())

        return max(CACHE.get((self._cache_scope, "population"), count), 2)

    def masters_of(self, record_ids: Sequence[str]) -> dict[str, str]:
        """The master each record is linked to (a master's ``link`` reference rows)."""
        if not record_ids:
            return {}
        rows = self.conn.execute(
            select(idx_reference.c.target_id, resource.c.res_id, resource.c.content)
            .join(resource, resource.c.pk == idx_reference.c.resource_pk)
            .where(idx_reference.c.res_type == PATIENT, idx_reference.c.param == "link",
                   idx_reference.c.target_type == PATIENT, idx_reference.c.target_id.in_(sorted(set(record_ids))),
                   resource.c.deleted.is_(False)))
        out: dict[str, str] = {}
        for target, master_id, content in rows:
            if content and is_master(content) and content.get("active", True) and \
                    target in golden.links_of(content):
                out.setdefault(target, master_id)
        return out

    def master(self, master_id: str) -> dict[str, Any]:
        return dict(self.uow.read(PATIENT, master_id).content or {})

    def members(self, master_id: str) -> list[PersonRecord]:
        ids = golden.links_of(self.master(master_id))
        found = self.uow.read_many([(PATIENT, i) for i in ids])
        return [from_patient(found[(PATIENT, i)], i) for i in ids if (PATIENT, i) in found]

    def excluded(self, master_id: str) -> set[str]:
        return golden.excluded_of(self.master(master_id))

    def reviewed(self, a: str, b: str) -> bool:
        return bool(self.review_tasks(a, b))

    def review_tasks(self, a: str, b: str) -> list[str]:
        return self.uow.find("Task", [("identifier", f"{golden.REVIEW_SYSTEM}|{golden.pair_key(a, b)}")])

    def rejected(self, a: str, b: str) -> bool:
        """A review of the pair that a practitioner completed as "not the same person" ($unlink)."""
        ids = self.review_tasks(a, b)
        found = self.uow.read_many([("Task", i) for i in ids])
        return any((task.get("businessStatus") or {}).get("text") == "not-linked" for task in found.values())

    def close_reviews(self, a: str, b: str, master_id: str) -> None:
        """Complete the open review Tasks of a pair this system has just linked (businessStatus linked)."""
        for task_id in self.review_tasks(a, b):
            task = dict(self.uow.read("Task", task_id).content or {})
            if task.get("status") not in ("completed", "cancelled"):
                self.uow.update(self.ctx, "Task", task_id, golden.completed_task(task, "linked", master_id, None))

    def at_postcodes(self, postcodes: Sequence[str]) -> list[PersonRecord]:
        """Agency Patients with an address at any of ``postcodes`` (index ``address-postalcode``);
        at most :data:`MAX_HOUSEHOLD` of them (a postcode covers about 15 addresses)."""
        if not postcodes:
            return []
        at = select(idx_string.c.resource_pk).where(
            idx_string.c.res_type == PATIENT, idx_string.c.param == "address-postalcode",
            idx_string.c.value_norm.in_(sorted({index_form(p) for p in postcodes})))
        rows = self.conn.execute(
            select(resource.c.res_id, resource.c.content)
            .where(resource.c.pk.in_(at), resource.c.res_type == PATIENT, resource.c.deleted.is_(False))
            .limit(MAX_HOUSEHOLD)).all()
        found = [(res_id, content) for res_id, content in rows if content is not None and not is_master(content)]
        self.contents.update(found)
        return [from_patient(content, res_id) for res_id, content in found]

    def at_records(self, record_ids: Sequence[str]) -> list[PersonRecord]:
        found = self.uow.read_many([(PATIENT, i) for i in record_ids])
        return [from_patient(found[(PATIENT, i)], i) for i in record_ids if (PATIENT, i) in found]

    # -- writes ---------------------------------------------------------------------------------------

    def link(self, record: PersonRecord, partner: PersonRecord, master_id: str | None, score: Score,
             *, who: dict[str, Any] | None = None, reason: str | None = None) -> str:
        """Link ``record`` to ``master_id`` (or to a new master with ``partner``); one Provenance."""
        who = who or golden.LINKAGE_AGENT
        activity = "auto-link" if who is golden.LINKAGE_AGENT else "link"
        if master_id is None:
            members = self._contents([partner.id, record.id])
            master = golden.build_master(members, identifier=golden.new_master_identifier())
            master_id = self.uow.create(self.ctx, master).res_id
        else:
            current = self.master(master_id)
            ids = [*golden.links_of(current), record.id]
            excluded = golden.excluded_of(current) - {record.id}
            master = golden.build_master(self._contents(ids), identifier=golden.master_identifier(current)
                                         or golden.new_master_identifier(), excluded=excluded)
            self.uow.update(self.ctx, PATIENT, master_id, {**master, "id": master_id})
        self.uow.create(self.ctx, golden.provenance(
            activity, [f"Patient/{master_id}", f"Patient/{record.id}"], who=who,
            reason=reason or f"Linked to the master record: {score.explain()}", score=score,
            entities=[f"Patient/{partner.id}"]))
        return master_id

    def merge(self, into: str, other: str, via: PersonRecord, score: Score) -> None:
        """Fold master ``other`` into ``into`` (a record was certain with both): ``other`` becomes
        inactive with a ``replaced-by`` link, ``into`` takes its records."""
        keep, gone = self.master(into), self.master(other)
        ids = sorted(set(golden.links_of(keep)) | set(golden.links_of(gone)))
        merged = golden.build_master(self._contents(ids), identifier=golden.master_identifier(keep) or "",
                                     excluded=golden.excluded_of(keep) | golden.excluded_of(gone))
        self.uow.update(self.ctx, PATIENT, into, {**merged, "id": into})
        retired = {**gone, "active": False, "link": [{"other": {"reference": f"Patient/{into}"},
                                                      "type": "replaced-by"}]}
        self.uow.update(self.ctx, PATIENT, other, retired)
        self.uow.create(self.ctx, golden.provenance(
            "merge", [f"Patient/{into}", f"Patient/{other}"], who=golden.LINKAGE_AGENT,
            reason=f"Patient/{via.id} is certainly the same person as records of both masters: {score.explain()}",
            score=score, entities=[f"Patient/{via.id}"]))

    def unlink(self, record_id: str, master_id: str, *, who: dict[str, Any], reason: str) -> None:
        """Split a record off its master; linking on write will not put it back."""
        current = self.master(master_id)
        ids = [i for i in golden.links_of(current) if i != record_id]
        master = golden.build_master(self._contents(ids), identifier=golden.master_identifier(current) or "",
                                     excluded=golden.excluded_of(current) | {record_id}, active=bool(ids))
        self.uow.update(self.ctx, PATIENT, master_id, {**master, "id": master_id})
        self.uow.create(self.ctx, golden.provenance(
            "unlink", [f"Patient/{master_id}", f"Patient/{record_id}"], who=who, reason=reason))

    def request_review(self, record: PersonRecord, candidate: PersonRecord, master_id: str | None,
                       score: Score) -> None:
        task = self.uow.create(self.ctx, golden.review_task(record.id, candidate.id, master_id, score))
        self.uow.create(self.ctx, golden.provenance(
            "review-requested", [f"Task/{task.res_id}"], who=golden.LINKAGE_AGENT,
            reason=f"Possible match put to a practitioner: {score.explain()}", score=score,
            entities=[f"Patient/{record.id}", f"Patient/{candidate.id}"]))

    def _contents(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found = self.uow.read_many([(PATIENT, i) for i in ids])
        return {i: found[(PATIENT, i)] for i in ids if (PATIENT, i) in found}
