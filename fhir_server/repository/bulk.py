"""Batched writes of new resources, for large transaction Bundles (http.html#transaction).

:class:`DeferredCreates` wraps a :class:`~.sql.UnitOfWork`. Its ``create`` answers at once with the
:class:`~.sql.Stored` version the resource will have, and queues the rows; the queue is written in a
handful of multi-row statements when it is full, and before *any* other use of the unit of work
(a read, search, update or delete), so nothing can observe the difference. The rows written are
exactly those of ``UnitOfWork._insert_new``: the resource row (version 1), a history row with
method ``POST``, the search index rows and an ``outbox`` row with event ``create``.
"""
from __future__ import annotations

import threading
import uuid
from operator import itemgetter
from typing import Any

import simplejson
from sqlalchemy import insert, literal, select
from sqlalchemy.exc import DBAPIError

from ..fhir.instants import utcnow
from ..search.indexer import ROW_COLUMNS
from ..storage.tables import INDEX_TABLES, outbox, resource, resource_history
from .context import RequestContext
from .sql import Stored, UnitOfWork, _with_server_meta

DEFAULT_BATCH = 500


class DeferredCreates:
    """A UnitOfWork whose plain creates are written in batches; every other call goes straight
    through (after writing the queue). ``next_id`` lets the caller choose the id of the next
    create — transaction processing assigns ids before it rewrites references (http.html#trules).

    On PostgreSQL a full queue is written by a background thread while the caller goes on
    validating the next entries, so the database works while Python does: the connection is used
    by one thread at a time, because every other call waits for that write first. Use it as a
    context manager inside the unit of work, so no write is still running when it commits or
    rolls back.
    """

    def __init__(self, uow: UnitOfWork, *, batch_size: int = DEFAULT_BATCH, background: bool | None = None) -> None:
        self._uow = uow
        self._batch_size = batch_size
        self._background = uow.conn.dialect.name == "postgresql" if background is None else background
        self._pending: list[Stored] = []
        self._writer: _Writer | None = None
        self.next_id: str | None = None

    def create(self, ctx: RequestContext, content: dict[str, Any], *, res_id: str | None = None) -> Stored:
        """http.html#create, same contract as :meth:`UnitOfWork.create`; the write is deferred."""
        if self._uow.write_check is not None:  # access hook: the write policy sees every create
            content = self._uow.write_check(ctx, None, content) or content
        res_id = res_id or self.next_id or str(uuid.uuid4())
        self.next_id = None
        now = utcnow()
        stored = Stored(content["resourceType"], res_id, 1, now, False,
                        _with_server_meta(content, res_id, 1, now), "POST")
        self._pending.append(stored)
        if len(self._pending) >= self._batch_size:
            self._write_queue(wait=not self._background)
        return stored

    def flush(self) -> None:
        """Write everything queued and wait for it (errors of a background write surface here)."""
        self._write_queue(wait=True)

    def _write_queue(self, *, wait: bool) -> None:
        self._join()
        if self._pending:
            pending, self._pending = self._pending, []
            if wait:
                insert_new_resources(self._uow, pending)
            else:
                self._writer = _Writer(self._uow, pending)
        if wait:
            self._join()

    def _join(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.result()

    def __enter__(self) -> "DeferredCreates":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.flush()
            return
        # Failing anyway: wait for a running write so the rollback finds the connection idle.
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.wait()

    # The access hook (fhir_server/auth/policy.py) lives on the wrapped unit of work, whose reads use it.
    @property
    def access(self) -> Any:
        return self._uow.access

    @access.setter
    def access(self, value: Any) -> None:
        self._uow.access = value

    @property
    def write_check(self) -> Any:
        return self._uow.write_check

    @write_check.setter
    def write_check(self, value: Any) -> None:
        self._uow.write_check = value

    def __getattr__(self, name: str) -> Any:
        # Anything but ``create`` may read what the queue would have written: write it first.
        self.flush()
        return getattr(self._uow, name)


class _Writer:
    """``insert_new_resources`` on a thread; :meth:`result` waits and re-raises its error."""

    def __init__(self, uow: UnitOfWork, created: list[Stored]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(uow, created), name="fhir-bulk-write", daemon=True)
        self._thread.start()

    def _run(self, uow: UnitOfWork, created: list[Stored]) -> None:
        try:
            insert_new_resources(uow, created)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by result()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def insert_new_resources(uow: UnitOfWork, created: list[Stored]) -> None:
    """Write version 1 of many new resources in a few statements.

    The rows are those of ``UnitOfWork._insert_new``: resource (version 1), history (method POST),
    index rows, outbox (event create). Ids must be new: a clash raises IntegrityError, as
    ``_insert_new`` would. On PostgreSQL the rows are streamed with ``COPY`` (ids drawn from the
    resource sequence first); elsewhere multi-row INSERT and executemany are used.
    """
    if not created:
        return
    uow.wrote = True
    if uow.conn.dialect.name == "postgresql":
        dbapi_error = uow.conn.dialect.loaded_dbapi.Error
        try:
            _copy_postgres(uow, created)
        except dbapi_error as exc:
            # the driver's error, as SQLAlchemy would raise it (IntegrityError for a duplicate id …)
            raise DBAPIError.instance("COPY (bulk create)", None, exc, dbapi_error) from None
    else:
        _insert_portable(uow, created)


def _index_rows(uow: UnitOfWork, pks: list[int], created: list[Stored]) -> dict[str, list[dict[str, Any]]]:
    indexer = uow.repo.indexer
    out: dict[str, list[dict[str, Any]]] = {}
    for pk, stored in zip(pks, created):
        for key, rows in indexer.rows(stored.content).items():
            if rows:
                for row in rows:
                    row["resource_pk"] = pk
                    row["res_type"] = stored.res_type
                out.setdefault(key, []).extend(rows)
    return out


def _insert_portable(uow: UnitOfWork, created: list[Stored]) -> None:
    conn = uow.conn
    pks = conn.execute(
        insert(resource).returning(resource.c.pk, sort_by_parameter_order=True),
        [{"res_type": s.res_type, "res_id": s.res_id, "version_id": 1, "last_updated": s.last_updated,
          "deleted": False, "content": s.content} for s in created],
    ).scalars().all()
    # History rows are copied server-side, so each JSON document is sent once.
    conn.execute(insert(resource_history).from_select(
        ["resource_pk", "version_id", "res_type", "res_id", "last_updated", "method", "deleted", "content"],
        select(resource.c.pk, resource.c.version_id, resource.c.res_type, resource.c.res_id,
               resource.c.last_updated, literal("POST"), resource.c.deleted, resource.c.content)
        .where(resource.c.pk.in_(pks))))
    for key, rows in _index_rows(uow, list(pks), created).items():
        conn.execute(insert(INDEX_TABLES[key]), rows)
    conn.execute(insert(outbox), [
        {"created": s.last_updated, "res_type": s.res_type, "res_id": s.res_id, "version_id": 1,
         "event": "create"} for s in created])


def _copy_postgres(uow: UnitOfWork, created: list[Stored]) -> None:
    """COPY is several times faster than INSERT for thousands of rows. It runs on the unit of
    work's own connection, so it is inside the same transaction (and savepoint) as everything else."""
    raw = uow.conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute("SELECT nextval(pg_get_serial_sequence('resource', 'pk')) FROM generate_series(1, %s)",
                    (len(created),))
        pks = [row[0] for row in cur.fetchall()]
        with cur.copy("COPY resource (pk, res_type, res_id, version_id, last_updated, deleted, content) "
                      "FROM STDIN") as copy:
            for pk, s in zip(pks, created):
                copy.write_row((pk, s.res_type, s.res_id, 1, s.last_updated, False, _jsonb_text(s.content)))
        cur.execute("INSERT INTO resource_history (resource_pk, version_id, res_type, res_id, last_updated, "
                    "method, deleted, content) SELECT pk, version_id, res_type, res_id, last_updated, 'POST', "
                    "deleted, content FROM resource WHERE pk = ANY(%s)", (pks,))
        for key, rows in _index_rows(uow, pks, created).items():
            columns = ("resource_pk", "res_type", *ROW_COLUMNS[key])
            values = itemgetter(*columns)  # the indexer gives every row exactly these columns
            with cur.copy(f"COPY {INDEX_TABLES[key].name} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(values(row))
        with cur.copy("COPY outbox (created, res_type, res_id, version_id, event) FROM STDIN") as copy:
            for s in created:
                copy.write_row((s.last_updated, s.res_type, s.res_id, 1, "create"))


def _jsonb_text(content: dict[str, Any] | None) -> str:
    """JSON text for a jsonb column. Decimals keep their digits as in ``jsonio.dumps``; non-ASCII is
    written as \\u escapes, which jsonb decodes to the same value, because simplejson's C encoder
    escapes ASCII-only output several times faster than it copies unicode through."""
    return simplejson.dumps(content, use_decimal=True, separators=(",", ":"))
