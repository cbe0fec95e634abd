"""The SQL repository: versioned storage of resources with history, search indexes and outbox.

One :class:`UnitOfWork` is one database transaction. Every write in it updates the current row,
appends a history row, rewrites the resource's index rows and appends an outbox row, so that a
commit makes all of them visible together and a rollback leaves nothing behind (http.html#transaction).
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..config import Settings
from ..errors import BadRequest, Conflict, Gone, MethodNotAllowed, NotFound, PreconditionFailed
from ..auth.labels import policy_columns
from ..fhir import jsonio
from ..fhir.instants import format_instant, utcnow
from ..search.engine import execute_search, find_matches
from ..search.indexer import ROW_COLUMNS, Indexer
from ..search.model import SearchResult
from ..search.registry import SearchRegistry
from ..storage.db import busy_as_unavailable
from ..storage.tables import INDEX_TABLES, outbox, resource, resource_history
from .context import RequestContext

SERVER_META = ("versionId", "lastUpdated")


@dataclass(frozen=True)
class Stored:
    """One version of one resource as stored. ``content`` is None for a deletion."""

    res_type: str
    res_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: dict[str, Any] | None
    method: str = "GET"

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def reference(self) -> str:
        return f"{self.res_type}/{self.res_id}"


@dataclass(frozen=True)
class WriteResult:
    stored: Stored
    created: bool = False  # 201 rather than 200
    changed: bool = True  # False for an update that changed nothing (no new version)


class SqlRepository:
    """Entry point for storage. ``connection`` binds every unit of work to one connection, using
    savepoints (the test suite runs each test inside a transaction that is rolled back)."""

    def __init__(self, engine: Engine, registry: SearchRegistry, settings: Settings,
                 *, connection: Connection | None = None) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings
        self.indexer = Indexer(registry)
        self._bound = connection
        self._after_commit: list[Callable[[], None]] = []
        # resource type → hooks run on every write of that type, before it is stored (see WriteHook)
        self.write_hooks: dict[str, list[WriteHook]] = {}

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after every committed write (e.g. drain the outbox, kick a worker)."""
        self._after_commit.append(callback)

    @contextmanager
    def unit_of_work(self, *, write: bool = True) -> Iterator["UnitOfWork"]:
        if self._bound is not None:
            with self._bound.begin_nested():
                uow = UnitOfWork(self._bound, self)
                yield uow
                uow.run_before_commit()
        elif write:
            with busy_as_unavailable(), self.engine.begin() as conn:
                uow = UnitOfWork(conn, self)
                yield uow
                uow.run_before_commit()
        else:
            # Reads: autocommit on PostgreSQL (no BEGIN/COMMIT round trips), a deferred BEGIN on SQLite.
            options: dict[str, Any] = {"readonly": True}
            if self.engine.dialect.name == "postgresql":
                options["isolation_level"] = "AUTOCOMMIT"
            with self.engine.connect() as raw, raw.execution_options(**options).begin():
                uow = UnitOfWork(raw, self)
                yield uow
                uow.run_before_commit()
        if write and uow.wrote:
            for callback in self._after_commit:
                callback()


# A hook sees each new version of a resource of its type before it is stored, inside the write's
# transaction: (unit of work, context, type, id, new content or None for a deletion, previous content
# or None) → the content to store. It may refuse the write by raising a FhirError (nothing is written)
# and keep state of its own in the same transaction (e.g. subscriptions/: Subscription resources).
WriteHook = Callable[["UnitOfWork", RequestContext, str, str, "dict[str, Any] | None", "dict[str, Any] | None"],
                     "dict[str, Any] | None"]


class UnitOfWork:
    """All reads and writes of one transaction. Methods implement http.html interactions."""

    def __init__(self, conn: Connection, repo: SqlRepository) -> None:
        self.conn = conn
        self.repo = repo
        self.wrote = False
        # Access hook (fhir_server.auth.policy): set by the Router from the request context. Reads,
        # searches and history show only what ``access`` (a Visibility) allows; ``write_check``
        # (ctx, old content, new content) → content to store, or raises Forbidden.
        self.access: Any = None
        self.write_check: Callable[[RequestContext, dict[str, Any] | None, dict[str, Any] | None],
                                   dict[str, Any] | None] | None = None
        # ``hidden_write`` (ctx, current content, refusal_answers=) → True when the current row is, for
        # this writer, not there (recorded as a refusal); ``update_create`` (ctx, type) → whether a PUT
        # may create that type with a client-chosen id (fhir_server.auth.policy).
        self.hidden_write: Callable[..., bool] | None = None
        self.update_create: Callable[[RequestContext, str], bool] | None = None
        self._is_postgres = conn.dialect.name == "postgresql"
        self._before_commit: list[Callable[[], None]] = []
        # Audit hook (audit/pending.py Stamp): the AuditEvent of this read or search, which the
        # statement that discloses (``read``/``search`` with ``disclose``) writes itself.
        self.audit_stamp: Any = None

    def before_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` at the end of this unit of work, inside its transaction, only if the
        work succeeded (the audit trail writes its row here: the same transaction as the write)."""
        self._before_commit.append(callback)

    def run_before_commit(self) -> None:
        callbacks, self._before_commit = self._before_commit, []
        for callback in callbacks:
            callback()

    # -- reads -------------------------------------------------------------------------------

    def _current_row(self, res_type: str, res_id: str, *, lock: bool = False) -> Any:
        query = select(resource).where(resource.c.res_type == res_type, resource.c.res_id == res_id)
        if lock and self._is_postgres:
            query = query.with_for_update()
        return self.conn.execute(query).first()

    def read(self, res_type: str, res_id: str, *, disclose: bool = False) -> Stored:
        """http.html#read: 404 if never known, 410 if the current version is a deletion.
        ``disclose``: what is read is the answer (a read interaction): its statement also writes the
        request's AuditEvent when the audit trail asked for that (:attr:`audit_stamp`)."""
        stamp = self.audit_stamp if disclose else None
        if stamp is not None and stamp.claim():
            row = stamp.read(self.conn, res_type, res_id, self.access)
            if row is not None and not row.deleted:
                shown = self.access is None or self.access.allows(row.content)
                stamp.settle(row.audited, [f"{res_type}/{res_id}/_history/{row.version_id}"] if shown else [],
                             bool(row.policy_ok))
        else:
            row = self._current_row(res_type, res_id)
        if row is None or (row.deleted and self.access is not None and not self.access.allows_deleted(self.conn, row)):
            raise NotFound(f"{res_type}/{res_id} is not known", expression="id")
        if row.deleted:
            raise Gone(f"{res_type}/{res_id} was deleted (version {row.version_id})")
        self._check_visible(row)
        return self._redacted(_stored(row))

    def _redacted(self, stored: Stored) -> Stored:
        """A Provenance shows only the targets the caller may see, and a share set aside from a
        Consent refusal is recorded (fhir_server.auth.policy.Visibility.redact)."""
        if self.access is None or stored.content is None:
            return stored
        return self.access.redact(self.conn, [stored])[0]

    def _check_visible(self, row: Any) -> None:
        """A resource the caller may not see does not exist for them (404, as unknown)."""
        if self.access is not None and not self.access.allows(row.content):
            raise NotFound(f"{row.res_type}/{row.res_id} is not known", expression="id")

    def read_many(self, references: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """Current contents of many resources at once (missing and deleted ones are left out)."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        by_type: dict[str, set[str]] = {}
        for res_type, res_id in references:
            by_type.setdefault(res_type, set()).add(res_id)
        for res_type, ids in by_type.items():
            rows = self.conn.execute(select(resource.c.res_id, resource.c.content).where(
                resource.c.res_type == res_type, resource.c.res_id.in_(sorted(ids)),
                resource.c.deleted.is_(False)))
            for res_id, content in rows:
                found[(res_type, res_id)] = content
        return found

    def vread(self, res_type: str, res_id: str, version_id: str) -> Stored:
        """http.html#vread: a deleted version answers 410, an unknown one 404."""
        if not version_id.isdigit():
            raise NotFound(f"{res_type}/{res_id} has no version {version_id!r}", expression="vid")
        row = self.conn.execute(select(resource_history).where(
            resource_history.c.res_type == res_type, resource_history.c.res_id == res_id,
            resource_history.c.version_id == int(version_id))).first()
        if row is None:
            raise NotFound(f"{res_type}/{res_id} has no version {version_id}", expression="vid")
        if row.deleted:
            # the caller is told a version was a deletion only if it may see the resource now: its
            # current version when live (re-created since, perhaps with a label it is not cleared
            # for), else whose it was (the columns the deletion kept, Visibility.allows_deleted)
            if self.access is not None:
                current = self._current_row(res_type, res_id)
                shown = current is not None and (self.access.allows_deleted(self.conn, current) if current.deleted
                                                 else self.access.allows(current.content))
                if not shown:
                    raise NotFound(f"{res_type}/{res_id} has no version {version_id}", expression="vid")
            raise Gone(f"Version {version_id} of {res_type}/{res_id} is a deletion")
        if self.access is not None:
            # hidden (this version, or the resource now): answered as a version that does not exist
            current = self._current_row(res_type, res_id)
            if current is None or current.deleted or not self.access.allows(row.content) \
                    or not self.access.allows(current.content):
                raise NotFound(f"{res_type}/{res_id} has no version {version_id}", expression="vid")
        return self._redacted(_stored(row))

    def exists(self, res_type: str, res_id: str) -> bool:
        """Whether a current (not deleted) version exists that the caller may see: one it may not see
        does not exist for it, as for :meth:`read`."""
        row = self._current_row(res_type, res_id)
        return row is not None and not row.deleted and (self.access is None or self.access.allows(row.content))

    def _writable_row(self, ctx: RequestContext, row: Any, *, refusal_answers: bool) -> Any:
        """The current row a write targets, or None when it is, for this writer, not there (another
        client's Subscription): checked straight after reading it, before If-Match and existence
        checks, so that every answer is the one for an id that does not exist. A deleted one is not
        there either for a writer who may not be told it was deleted (another client's deleted
        Subscription, policy.Visibility.allows_deleted): a DELETE with If-Match then answers the 412
        of an unknown id, not the 204 that would confirm its existence and version. The same holds for
        any deleted resource whose last version the writer could not see (a withheld label, a hidden
        source agency)."""
        if row is not None and row.deleted:
            return None if self.access is not None and not self.access.allows_deleted(self.conn, row) else row
        if row is None or self.hidden_write is None:
            return row
        return None if self.hidden_write(ctx, row.content, refusal_answers=refusal_answers) else row

    def history(self, *, res_type: str | None = None, res_id: str | None = None,
                since: datetime | None = None, at: datetime | None = None,
                offset: int = 0, count: int = 20,
                snapshot: datetime | None = None) -> tuple[list[Stored], int]:
        """http.html#history: versions newest first; returns (page, total)."""
        query = select(resource_history)
        if res_type:
            query = query.where(resource_history.c.res_type == res_type)
        if res_id:
            query = query.where(resource_history.c.res_id == res_id)
        if self.access is not None:
            # history of what the caller may see now (the current version decides; the history of a
            # deleted resource is not shown to a restricted caller: its labels are no longer indexed)
            query = query.where(resource_history.c.resource_pk.in_(select(resource.c.pk).where(
                resource.c.deleted.is_(False), self.access.clause(resource))))
        if since is not None:
            query = query.where(resource_history.c.last_updated >= since)
        if snapshot is not None:
            query = query.where(resource_history.c.last_updated <= snapshot)
        if at is not None:
            # the version current at `at`: latest version per resource not newer than `at`
            latest = (select(resource_history.c.resource_pk,
                             func.max(resource_history.c.version_id).label("v"))
                      .where(resource_history.c.last_updated <= at)
                      .group_by(resource_history.c.resource_pk).subquery())
            query = query.join(latest, (latest.c.resource_pk == resource_history.c.resource_pk)
                               & (latest.c.v == resource_history.c.version_id))
        total = self.conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = self.conn.execute(query.order_by(resource_history.c.last_updated.desc(),
                                                resource_history.c.version_id.desc())
                                 .offset(offset).limit(count))
        page = [_stored(r) for r in rows]
        if self.access is not None:  # an older version may carry a label the current one dropped
            page = [self._redacted(s) for s in page if s.content is None or self.access.allows(s.content)]
        return page, total

    def search(self, resource_types: list[str] | None, params: list[tuple[str, str]],
               *, strict: bool = False, compartment: Any = None, disclose: bool = False) -> SearchResult:
        """``disclose``: the page is the answer (a search interaction), see :meth:`read`."""
        return execute_search(self.conn, self.repo.registry, resource_types, params,
                              settings=self.repo.settings, strict=strict, compartment=compartment,
                              access=self.access, audit=self.audit_stamp if disclose else None)

    def find(self, res_type: str, params: list[tuple[str, str]]) -> list[str]:
        """Ids of the current resources matching ``params`` (conditional interactions)."""
        return [res_id for _pk, res_id in find_matches(self.conn, self.repo.registry, res_type, params,
                                                       access=self.access)]

    # -- writes ------------------------------------------------------------------------------

    def create(self, ctx: RequestContext, content: dict[str, Any], *, res_id: str | None = None) -> Stored:
        """http.html#create: the server assigns the id (any id in the body is ignored)."""
        res_type = content["resourceType"]
        return self._insert_new(ctx, res_type, res_id or str(uuid.uuid4()), content, "POST")

    def update(self, ctx: RequestContext, res_type: str, res_id: str, content: dict[str, Any],
               *, if_match: int | None = None, method: str = "PUT", create_only: bool = False) -> WriteResult:
        """http.html#update, including update-as-create with a client-chosen id and version-aware
        updates (``If-Match`` → 412 when stale). An update that changes nothing keeps the version.
        A type the caller may not create with its own id (``update_create``) answers 405 for an id
        that is unknown, deleted or hidden from it alike (http.html#update: a server that does not
        allow client-defined ids). ``create_only`` (conditional update with a body id): an existing
        row is not updated (400)."""
        row = self._writable_row(ctx, self._current_row(res_type, res_id, lock=True), refusal_answers=True)
        if (row is None or row.deleted) and self.update_create is not None \
                and not self.update_create(ctx, res_type):
            raise MethodNotAllowed(f"{res_type}/{res_id} is not known, and a {res_type} is not created with a "
                                   f"client-chosen id: create it with POST (the server assigns its id)",
                                   expression="id")
        if create_only and row is not None and not row.deleted:
            raise BadRequest(f"{res_type}/{res_id} exists but does not match the criteria", expression=f"{res_type}.id")
        if row is None:
            if if_match is not None:
                raise PreconditionFailed(f"{res_type}/{res_id} does not exist; If-Match cannot match")
            try:
                with self.conn.begin_nested():
                    return WriteResult(self._insert_new(ctx, res_type, res_id, content, method), created=True)
            except IntegrityError:
                # a concurrent writer created it first: update what they wrote instead
                row = self._current_row(res_type, res_id, lock=True)
                if row is None:
                    raise Conflict(f"Concurrent creation of {res_type}/{res_id}") from None
        if if_match is not None and row.version_id != if_match:
            raise PreconditionFailed(
                f"{res_type}/{res_id} is at version {row.version_id}, not {if_match}", expression="If-Match")
        if self.write_check is not None and not row.deleted:
            # an update that would change nothing is still refused to a caller who may not write it
            content = self.write_check(ctx, row.content, content) or content
        if not row.deleted and _same_content(row.content, content):
            return WriteResult(_stored(row), created=False, changed=False)
        stored = self._write_version(ctx, row, content, method, checked=not row.deleted)
        return WriteResult(stored, created=row.deleted)

    def delete(self, ctx: RequestContext, res_type: str, res_id: str,
               *, if_match: int | None = None) -> Stored | None:
        """http.html#delete: soft delete, a new version that is a deletion; history is kept.
        Deleting something unknown or already deleted is not an error (returns None); one hidden from
        the caller is deleted as an unknown one is, If-Match included (412 whatever the version)."""
        row = self._writable_row(ctx, self._current_row(res_type, res_id, lock=True), refusal_answers=False)
        if if_match is not None and (row is None or row.version_id != if_match):
            raise PreconditionFailed(f"{res_type}/{res_id} is not at version {if_match}", expression="If-Match")
        if row is None or row.deleted:
            return None
        return self._write_version(ctx, row, None, "DELETE")

    def _insert_new(self, ctx: RequestContext, res_type: str, res_id: str,
                    content: dict[str, Any], method: str) -> Stored:
        if self.write_check is not None:
            content = self.write_check(ctx, None, content) or content
        content = self._hooked(ctx, res_type, res_id, content, None)  # type: ignore[assignment]
        now = utcnow()
        body = _with_server_meta(content, res_id, 1, now)
        pk = self.conn.execute(insert(resource).values(
            res_type=res_type, res_id=res_id, version_id=1, last_updated=now, deleted=False, content=body,
            **policy_columns(body)).returning(resource.c.pk)).scalar_one()
        stored = Stored(res_type, res_id, 1, now, False, body, method)
        self._after_write(pk, stored, "create")
        return stored

    def _write_version(self, ctx: RequestContext, row: Any, content: dict[str, Any] | None,
                       method: str, *, checked: bool = False) -> Stored:
        """``checked``: ``update`` has already put ``content`` through ``write_check``."""
        if self.write_check is not None and not checked:
            content = self.write_check(ctx, None if row.deleted else row.content, content)
        content = self._hooked(ctx, row.res_type, row.res_id, content, None if row.deleted else row.content)
        now = max(utcnow(), row.last_updated)
        version = row.version_id + 1
        body = None if content is None else _with_server_meta(content, row.res_id, version, now)
        # (a deletion keeps the policy columns of the version it deletes: whose an owner-only
        # resource was still decides who is told it was deleted, policy.Visibility.allows_deleted)
        self.conn.execute(update(resource).where(resource.c.pk == row.pk).values(
            version_id=version, last_updated=now, deleted=content is None, content=body,
            **(policy_columns(body) if body is not None else {})))
        for table in INDEX_TABLES.values():
            self.conn.execute(delete(table).where(table.c.resource_pk == row.pk))
        stored = Stored(row.res_type, row.res_id, version, now, content is None, body, method)
        self._after_write(row.pk, stored, "delete" if content is None else ("create" if row.deleted else "update"))
        return stored

    def _hooked(self, ctx: RequestContext, res_type: str, res_id: str, content: dict[str, Any] | None,
                previous: dict[str, Any] | None) -> dict[str, Any] | None:
        for hook in self.repo.write_hooks.get(res_type, ()):
            content = hook(self, ctx, res_type, res_id, content, previous)
        return content

    def _after_write(self, pk: int, stored: Stored, event: str) -> None:
        self.wrote = True
        self.conn.execute(insert(resource_history).values(
            resource_pk=pk, version_id=stored.version_id, res_type=stored.res_type, res_id=stored.res_id,
            last_updated=stored.last_updated, method=stored.method, deleted=stored.deleted,
            content=stored.content))
        if stored.content is not None:
            for key, rows in self.repo.indexer.rows(stored.content).items():
                if rows:
                    for r in rows:
                        r["resource_pk"] = pk
                        r["res_type"] = stored.res_type
                    insert_index_rows(self.conn, key, rows)
        self.conn.execute(insert(outbox).values(
            created=stored.last_updated, res_type=stored.res_type, res_id=stored.res_id,
            version_id=stored.version_id, event=event))

    def reindex(self, res_type: str | None = None, *, batch: int = 1000) -> int:
        """Rebuild index rows from stored content (after a SearchParameter changes)."""
        query = select(resource.c.pk, resource.c.res_type, resource.c.content).where(
            resource.c.deleted.is_(False)).order_by(resource.c.pk)
        if res_type:
            query = query.where(resource.c.res_type == res_type)
        done = 0
        last_pk = 0
        while True:
            rows = self.conn.execute(query.where(resource.c.pk > last_pk).limit(batch)).all()
            if not rows:
                return done
            pks = [r.pk for r in rows]
            for table in INDEX_TABLES.values():
                self.conn.execute(delete(table).where(table.c.resource_pk.in_(pks)))
            pending: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                for key, index_rows in self.repo.indexer.rows(r.content).items():
                    for ir in index_rows:
                        ir["resource_pk"] = r.pk
                        ir["res_type"] = r.res_type
                    pending.setdefault(key, []).extend(index_rows)
            for key, index_rows in pending.items():
                if index_rows:
                    self.conn.execute(insert(INDEX_TABLES[key]), index_rows)
            done += len(rows)
            last_pk = pks[-1]


def _stored(row: Any) -> Stored:
    method = getattr(row, "method", "GET")
    return Stored(row.res_type, row.res_id, row.version_id, row.last_updated, row.deleted, row.content, method)


def _with_server_meta(content: dict[str, Any], res_id: str, version: int, now: datetime) -> dict[str, Any]:
    """The client's JSON with the server-owned ``id`` and ``meta.versionId``/``lastUpdated`` set
    (resource.html#Meta); every other meta element (profile, tag, security, source) is kept."""
    body = dict(content)
    body["id"] = res_id
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(now)
    body["meta"] = meta
    return body


def _comparable(content: dict[str, Any] | None) -> str:
    if content is None:
        return ""
    body = deepcopy(content)
    body.pop("id", None)
    meta = body.get("meta")
    if isinstance(meta, dict):
        for key in SERVER_META:
            meta.pop(key, None)
        if not meta:
            body.pop("meta")
    return jsonio.dumps_sorted(body)


def _same_content(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    return _comparable(old) == _comparable(new)


# Below this many rows an executemany INSERT is as quick as COPY's extra round trips.
_COPY_FROM_ROWS = 100


def insert_index_rows(conn: Connection, key: str, rows: list[dict[str, Any]]) -> None:
    """Insert one index table's rows (each with ``resource_pk``, ``res_type`` and that table's
    columns). On PostgreSQL many rows go by COPY — a Provenance naming the thousand resources of a
    transaction has a thousand ``target`` rows — on the connection's own transaction."""
    if len(rows) < _COPY_FROM_ROWS or conn.dialect.name != "postgresql":
        conn.execute(insert(INDEX_TABLES[key]), rows)
        return
    columns = ("resource_pk", "res_type", *ROW_COLUMNS[key])
    values = itemgetter(*columns)  # the indexer gives every row exactly these columns
    with conn.connection.driver_connection.cursor() as cur:
        with cur.copy(f"COPY {INDEX_TABLES[key].name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(values(row))
