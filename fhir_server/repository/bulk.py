"""Batched writes, for large transaction Bundles and agency imports (http.html#transaction).

:class:`DeferredCreates` wraps a :class:`~.sql.UnitOfWork`. Its ``create`` answers at once with the
:class:`~.sql.Stored` version the resource will have, and queues the rows; the queue is written in a
handful of multi-row statements when it is full, and before *any* other use of the unit of work
(a read, search, update or delete), so nothing can observe the difference. The rows written are
exactly those of ``UnitOfWork._insert_new``: the resource row (version 1), a history row with
method ``POST``, the search index rows and an ``outbox`` row with event ``create``.

:func:`write_resources` writes new versions of existing resources as well as new ones, with the rows
of ``UnitOfWork._write_version`` for an update (resource row updated, history row, index rows
replaced, outbox ``update``). :func:`find_token_matches` resolves many conditional-update criteria
(``identifier=system|value&_tag=system|code``) in a few queries instead of one search each.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import and_, bindparam, delete, exists, false, insert, literal, or_, select, update
from sqlalchemy.exc import DBAPIError

from ..auth.labels import policy_columns
from ..fhir import jsonio
from ..fhir.instants import utcnow
from ..search.parse import Criterion, ParamSource, TokenValue, parse_search
from ..storage.tables import INDEX_TABLES, idx_reference, idx_token, outbox, resource, resource_history
from .context import RequestContext
from .sql import Stored, UnitOfWork, _with_server_meta, insert_index_rows

DEFAULT_BATCH = 500
# Token parameters the search answers from the resource row, not idx_token (search/query.py).
_NOT_INDEXED = frozenset({"_id", "_lastUpdated"})


def _forwarded(name: str) -> Any:
    """A property that reads and writes attribute ``name`` of the wrapped unit of work (``_uow``)."""
    return property(lambda self: getattr(self._uow, name), lambda self, value: setattr(self._uow, name, value))


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
        self._queue = QueuedWrites(uow, batch_size=batch_size, background=background)
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
        self._queue.add(None, stored)
        return stored

    def flush(self) -> None:
        """Write everything queued and wait for it (errors of a background write surface here)."""
        self._queue.flush()

    def __enter__(self) -> "DeferredCreates":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._queue.__exit__(exc_type, exc, tb)

    # The access hooks (fhir_server/auth/policy.py) live on the wrapped unit of work, whose reads and
    # writes use them: set through this wrapper, they are set there.
    access = _forwarded("access")
    write_check = _forwarded("write_check")
    hidden_write = _forwarded("hidden_write")
    update_create = _forwarded("update_create")

    def __getattr__(self, name: str) -> Any:
        # Anything but ``create`` may read what the queue would have written: write it first.
        self.flush()
        return getattr(self._uow, name)


class _Writer:
    """``write_resources`` on a thread; :meth:`result` waits and re-raises its error."""

    def __init__(self, uow: UnitOfWork, writes: "list[Write]") -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(uow, writes), name="fhir-bulk-write", daemon=True)
        self._thread.start()

    def _run(self, uow: UnitOfWork, writes: "list[Write]") -> None:
        try:
            write_resources(uow, writes)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by result()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


class QueuedWrites:
    """New versions (:data:`Write`) queued and written by :func:`write_resources` ``batch_size`` at
    a time (the queue under :class:`DeferredCreates` too). On PostgreSQL a full batch is written by a
    background thread while the caller prepares the next: call :meth:`wait` before any other use of the unit
    of work's connection, and use it as a context manager inside the unit of work, so that no write
    is still running when it commits or rolls back."""

    def __init__(self, uow: UnitOfWork, *, batch_size: int = DEFAULT_BATCH, background: bool | None = None) -> None:
        self._uow = uow
        self._batch_size = batch_size
        self._background = uow.conn.dialect.name == "postgresql" if background is None else background
        self._pending: list[Write] = []
        self._writer: _Writer | None = None

    def add(self, pk: int | None, stored: Stored) -> None:
        self._pending.append((pk, stored))
        if len(self._pending) >= self._batch_size:
            self._write(wait=not self._background)

    def flush(self) -> None:
        """Write everything queued and wait for it (errors of a background write surface here)."""
        self._write(wait=True)

    def wait(self) -> None:
        """Wait for a background write (and raise its error)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.result()

    def _write(self, *, wait: bool) -> None:
        self.wait()
        pending, self._pending = self._pending, []
        if pending and wait:
            write_resources(self._uow, pending)
        elif pending:
            self._writer = _Writer(self._uow, pending)

    def __enter__(self) -> "QueuedWrites":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.flush()
            return
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.wait()  # failing anyway: let the rollback find the connection idle


# (pk, version): pk None for a new resource (``version.version_id`` 1), else the current row's pk.
Write = tuple[int | None, Stored]


def write_resources(uow: UnitOfWork, writes: list[Write]) -> None:
    """Write many new versions in a few statements, with the rows one write at a time would have
    (http.html#create, #update): for a new resource those of ``UnitOfWork._insert_new``; for a new
    version of a current, not deleted one (``pk`` of its row, locked by the caller) those of
    ``UnitOfWork._write_version``: the resource row updated, a history row with ``Stored.method``,
    its index rows replaced, an outbox row ``update``. Outbox rows keep the order of ``writes``."""
    if not writes:
        return
    uow.wrote = True
    if uow.conn.dialect.name == "postgresql":
        dbapi_error = uow.conn.dialect.loaded_dbapi.Error
        try:
            _write_postgres(uow, writes)
        except dbapi_error as exc:
            # the driver's error, as SQLAlchemy would raise it (IntegrityError for a duplicate id …)
            raise DBAPIError.instance("COPY (bulk write)", None, exc, dbapi_error) from None
    else:
        _write_portable(uow, writes)


def _index_rows(uow: UnitOfWork, pks: list[int], written: list[Stored]) -> dict[str, list[dict[str, Any]]]:
    indexer = uow.repo.indexer
    out: dict[str, list[dict[str, Any]]] = {}
    for pk, stored in zip(pks, written):
        for key, rows in indexer.rows(stored.content).items():
            if rows:
                for row in rows:
                    row["resource_pk"] = pk
                    row["res_type"] = stored.res_type
                out.setdefault(key, []).extend(rows)
    return out


def _event(pk: int | None) -> str:
    return "create" if pk is None else "update"


def _write_portable(uow: UnitOfWork, writes: list[Write]) -> None:
    conn = uow.conn
    created = [s for pk, s in writes if pk is None]
    new_pks = iter(conn.execute(
        insert(resource).returning(resource.c.pk, sort_by_parameter_order=True),
        [{"res_type": s.res_type, "res_id": s.res_id, "version_id": 1, "last_updated": s.last_updated,
          "deleted": False, "content": s.content, **policy_columns(s.content)} for s in created],
    ).scalars().all() if created else [])
    pks = [pk if pk is not None else next(new_pks) for pk, _s in writes]
    updated = [(pk, s) for pk, s in writes if pk is not None]
    if updated:
        conn.execute(update(resource).where(resource.c.pk == bindparam("b_pk")).values(
            version_id=bindparam("b_version"), last_updated=bindparam("b_updated"), deleted=False,
            content=bindparam("b_content"), sensitivity=bindparam("b_sensitivity"), agencies=bindparam("b_agencies"),
            owners=bindparam("b_owners")),
            [{"b_pk": pk, "b_version": s.version_id, "b_updated": s.last_updated, "b_content": s.content,
              **{f"b_{k}": v for k, v in policy_columns(s.content).items()}} for pk, s in updated])
        for table in INDEX_TABLES.values():
            conn.execute(delete(table).where(table.c.resource_pk.in_([pk for pk, _s in updated])))
    # History rows are copied server-side, so each JSON document is sent once.
    for method in dict.fromkeys(s.method for _pk, s in writes):
        conn.execute(insert(resource_history).from_select(
            ["resource_pk", "version_id", "res_type", "res_id", "last_updated", "method", "deleted", "content"],
            select(resource.c.pk, resource.c.version_id, resource.c.res_type, resource.c.res_id,
                   resource.c.last_updated, literal(method), resource.c.deleted, resource.c.content)
            .where(resource.c.pk.in_([pk for pk, (_p, s) in zip(pks, writes) if s.method == method]))))
    for key, rows in _index_rows(uow, pks, [s for _pk, s in writes]).items():
        insert_index_rows(conn, key, rows)
    conn.execute(insert(outbox), [
        {"created": s.last_updated, "res_type": s.res_type, "res_id": s.res_id, "version_id": s.version_id,
         "event": _event(pk)} for pk, s in writes])


def _write_postgres(uow: UnitOfWork, writes: list[Write]) -> None:
    """COPY is several times faster than INSERT for thousands of rows. It runs on the unit of
    work's own connection, so it is inside the same transaction (and savepoint) as everything else."""
    raw = uow.conn.connection.driver_connection
    created = [s for pk, s in writes if pk is None]
    updated = [(pk, s) for pk, s in writes if pk is not None]
    with raw.cursor() as cur:
        new_pks: list[int] = []
        if created:
            cur.execute("SELECT nextval(pg_get_serial_sequence('resource', 'pk')) FROM generate_series(1, %s)",
                        (len(created),))
            new_pks = [row[0] for row in cur.fetchall()]
            with cur.copy("COPY resource (pk, res_type, res_id, version_id, last_updated, deleted, content, "
                          "sensitivity, agencies, owners) FROM STDIN") as copy:
                for pk, s in zip(new_pks, created):
                    access = policy_columns(s.content)
                    copy.write_row((pk, s.res_type, s.res_id, 1, s.last_updated, False, jsonio.dumps(s.content),
                                    access["sensitivity"], access["agencies"], access["owners"]))
        if updated:
            updated_pks = [pk for pk, _s in updated]
            access = [policy_columns(s.content) for _pk, s in updated]
            cur.execute("UPDATE resource AS r SET version_id = u.version_id, last_updated = u.last_updated, "
                        "deleted = false, content = u.content::json, sensitivity = u.sensitivity, "
                        "agencies = u.agencies, owners = u.owners "
                        "FROM unnest(%s::bigint[], %s::integer[], %s::timestamp[], %s::text[], %s::integer[], "
                        "%s::text[], %s::text[]) "
                        "AS u (pk, version_id, last_updated, content, sensitivity, agencies, owners) WHERE r.pk = u.pk",
                        (updated_pks, [s.version_id for _pk, s in updated], [s.last_updated for _pk, s in updated],
                         [jsonio.dumps(s.content) for _pk, s in updated], [a["sensitivity"] for a in access],
                         [a["agencies"] for a in access], [a["owners"] for a in access]))
            for table in INDEX_TABLES.values():
                cur.execute(f"DELETE FROM {table.name} WHERE resource_pk = ANY(%s)", (updated_pks,))
        fresh = iter(new_pks)
        pks = [pk if pk is not None else next(fresh) for pk, _s in writes]
        methods = [s.method for _pk, s in writes]
        # History rows are copied server-side, so each JSON document is sent once.
        if len(set(methods)) == 1:
            cur.execute("INSERT INTO resource_history (resource_pk, version_id, res_type, res_id, last_updated, "
                        "method, deleted, content) SELECT pk, version_id, res_type, res_id, last_updated, %s, "
                        "deleted, content FROM resource WHERE pk = ANY(%s)", (methods[0], pks))
        else:
            cur.execute("INSERT INTO resource_history (resource_pk, version_id, res_type, res_id, last_updated, "
                        "method, deleted, content) SELECT r.pk, r.version_id, r.res_type, r.res_id, "
                        "r.last_updated, u.method, r.deleted, r.content "
                        "FROM unnest(%s::bigint[], %s::text[]) AS u (pk, method) JOIN resource r ON r.pk = u.pk",
                        (pks, methods))
        for key, rows in _index_rows(uow, pks, [s for _pk, s in writes]).items():
            insert_index_rows(uow.conn, key, rows)
        with cur.copy("COPY outbox (created, res_type, res_id, version_id, event) FROM STDIN") as copy:
            for pk, s in writes:
                copy.write_row((s.last_updated, s.res_type, s.res_id, s.version_id, _event(pk)))


# -- conditional matches, many at once ------------------------------------------------------------


@dataclass(frozen=True)
class TokenCriteria:
    """Conditional criteria made only of ``param=system|code`` tokens (search.html#token), e.g.
    ``identifier=…|…&_tag=…|…``: the first token drives the search, the others are filters."""

    res_type: str
    param: str
    system: str
    code: str
    filters: tuple[tuple[str, str, str], ...] = ()  # (param, system, code), ANDed


@dataclass(frozen=True)
class Current:
    """The current (not deleted) row of a resource that conditional criteria matched."""

    pk: int
    res_type: str
    res_id: str
    version_id: int
    last_updated: datetime
    content: dict[str, Any]


def token_criteria(registry: ParamSource, res_type: str, params: list[tuple[str, str]]) -> TokenCriteria | None:
    """``params`` as :class:`TokenCriteria` when every parameter is a token with one value naming
    both system and code, and no modifier; None when they are anything else (search those with
    ``UnitOfWork.find``). Parsed by the search parser itself, strictly, so a bad criterion raises the
    same BadRequest as the search would, and a match here is a match there."""
    req = parse_search(params, registry, [res_type], strict=True)
    tokens: list[tuple[str, str, str]] = []
    for crit in req.criteria:
        if not isinstance(crit, Criterion) or crit.param.type != "token" or crit.modifier or crit.chain \
                or crit.param.code in _NOT_INDEXED or len(crit.values) != 1:
            return None
        value = crit.values[0]
        if not isinstance(value, TokenValue) or not value.system or value.code is None:
            return None
        tokens.append((crit.param.code, value.system, value.code))
    if not tokens or len(tokens) != len(params):
        return None
    (param, system, code), *filters = tokens
    return TokenCriteria(res_type, param, system, code, tuple(filters))


class TokenCriteriaParser:
    """:func:`token_criteria` for many criteria of the same shape (a file's ``identifier=…&_tag=…``),
    parsed in full once per resource type and parameter names. After that, a value with no escape
    and no comma and one ``|`` between a non-empty system and code is split here, which is what the
    parser makes of it (search.html#token, #escaping); anything else is parsed in full."""

    def __init__(self, registry: ParamSource) -> None:
        self.registry = registry
        self._shapes: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}

    def __call__(self, res_type: str, params: list[tuple[str, str]]) -> TokenCriteria | None:
        shape = (res_type, tuple(name for name, _value in params))
        codes = self._shapes.get(shape)
        if codes is not None:
            tokens = [_plain_token(value) for _name, value in params]
            if all(tokens):
                (system, code), *rest = cast(list[tuple[str, str]], tokens)
                return TokenCriteria(res_type, codes[0], system, code,
                                     tuple((c, s, v) for c, (s, v) in zip(codes[1:], rest)))
        found = token_criteria(self.registry, res_type, params)
        if found is not None:
            self._shapes[shape] = (found.param, *(f[0] for f in found.filters))
        return found


def _plain_token(value: str) -> tuple[str, str] | None:
    if "\\" in value or "," in value or value.count("|") != 1:
        return None
    system, code = value.split("|")
    return (system, code) if system and code else None


def find_token_matches(uow: UnitOfWork, criteria: list[TokenCriteria], *, lock: bool = False,
                       chunk: int = 1000) -> list[list[Current]]:
    """The current resources each of ``criteria`` matches (in pk order, as ``UnitOfWork.find``),
    in one query per group of criteria that differ only in the driving code (a file's identifiers of
    one system and agency), ``chunk`` codes at a time. ``lock``: the rows are locked for update
    (PostgreSQL), as ``UnitOfWork.update`` locks the row it replaces."""
    groups: dict[tuple[str, str, str, tuple[tuple[str, str, str], ...]], dict[str, list[int]]] = {}
    for n, c in enumerate(criteria):
        groups.setdefault((c.res_type, c.param, c.system, c.filters), {}).setdefault(c.code, []).append(n)
    out: list[list[Current]] = [[] for _ in criteria]
    for (res_type, param, system, filters), by_code in groups.items():
        codes = list(by_code)
        for start in range(0, len(codes), chunk):
            found: dict[str, dict[int, Current]] = {}
            for row in uow.conn.execute(_match_query(uow, res_type, param, system, filters,
                                                     codes[start:start + chunk], lock=lock)):
                found.setdefault(row.code, {})[row.pk] = Current(row.pk, res_type, row.res_id, row.version_id,
                                                                 row.last_updated, row.content)
            for code, rows in found.items():
                matched = [rows[pk] for pk in sorted(rows)]
                for n in by_code.get(code, ()):
                    out[n] = matched
    return out


def current_rows(uow: UnitOfWork, res_type: str, ids: list[str], *, lock: bool = False) -> list[Current]:
    """The current rows of ``ids`` (deleted ones left out), in pk order; locked as in :func:`find_token_matches`."""
    if not ids:
        return []
    query = (select(resource.c.pk, resource.c.res_id, resource.c.version_id, resource.c.last_updated,
                    resource.c.content)
             .where(resource.c.res_type == res_type, resource.c.res_id.in_(ids), resource.c.deleted == false())
             .order_by(resource.c.pk))
    if lock and uow.conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return [Current(r.pk, res_type, r.res_id, r.version_id, r.last_updated, r.content)
            for r in uow.conn.execute(query)]


@dataclass(frozen=True)
class TokenKey:
    """A current resource's id and one code it has in a token system: no content."""

    res_type: str
    res_id: str
    system: str
    code: str


TARGET_CHUNK = 5000  # referenced ids per statement (SQLite allows 32,766 bound values)


def find_token_keys(uow: UnitOfWork, param: str, kinds: list[tuple[str, str, str]], target_type: str,
                    target_ids: list[str], filters: tuple[tuple[str, str, str], ...] = ()) -> list[TokenKey]:
    """The ids and codes of every current resource of each kind — ``(res_type, system, reference
    parameter)``: a ``param`` token in ``system`` (``param=system|``, search.html#token) and the
    reference parameter pointing to one of ``target_ids`` of ``target_type`` — that also has each
    of the ``filters`` tokens. One narrow, unlocked query (per ``TARGET_CHUNK`` targets) that
    starts from the reference index (the few resources of these targets, not every resource with
    a code in the system) and reads no content: the candidates of a search whose few matches are
    then read, locked, by :func:`current_rows`."""
    if not kinds or not target_ids:
        return []
    ref, tok = idx_reference.alias("r"), idx_token.alias("t")
    # The identifier rows are found by resource (no res_type on them: see _has_token).
    query = (select(ref.c.res_type, resource.c.res_id, tok.c.system, tok.c.code)
             .join_from(ref, tok, tok.c.resource_pk == ref.c.resource_pk)
             .join(resource, resource.c.pk == ref.c.resource_pk)
             .where(or_(*[and_(ref.c.res_type == res_type, ref.c.param == reference, tok.c.system == system)
                          for res_type, system, reference in kinds]),
                    tok.c.param == param, ref.c.target_type == target_type,
                    ref.c.target_id.in_(bindparam("targets", expanding=True)), resource.c.deleted == false()))
    for f_param, f_system, f_code in filters:
        query = query.where(_has_token(ref.c.resource_pk, f_param, f_system, f_code))
    unique = sorted(set(target_ids))
    out: set[TokenKey] = set()
    for start in range(0, len(unique), TARGET_CHUNK):
        rows = uow.conn.execute(query, {"targets": unique[start:start + TARGET_CHUNK]})
        out.update(TokenKey(r.res_type, r.res_id, r.system, r.code) for r in rows)
    return sorted(out, key=lambda k: (k.res_type, k.res_id, k.system, k.code))


def find_token_system(uow: UnitOfWork, res_type: str, param: str, system: str,
                      filters: tuple[tuple[str, str, str], ...] = (),
                      *, lock: bool = False) -> list[tuple[str, Current]]:
    """Every current resource with a ``param`` token in ``system`` (any code: ``param=system|``,
    search.html#token) that also has each of the ``filters`` tokens, with the code it has; locked
    as in :func:`find_token_matches`. A resource with two codes in the system comes twice."""
    rows = uow.conn.execute(_match_query(uow, res_type, param, system, filters, None, lock=lock))
    return [(row.code, Current(row.pk, res_type, row.res_id, row.version_id, row.last_updated, row.content))
            for row in rows]


def _has_token(pk: Any, param: str, system: str, code: str) -> Any:
    """EXISTS a ``param`` token ``system|code`` of the resource ``pk``. Deliberately without the
    resource type (``pk`` is unique across types): the probe can then only go by resource
    (``ix_idx_token_resource``, the resource's few tokens), never along the (type, param, code,
    system) index, which during a bulk load — statistics stale, every estimate one row — the planner
    may otherwise take and walk through every resource of the agency for each row matched."""
    f = idx_token.alias()
    return exists().where(f.c.resource_pk == pk, f.c.param == param, f.c.system == system, f.c.code == code)


def _match_query(uow: UnitOfWork, res_type: str, param: str, system: str,
                 filters: tuple[tuple[str, str, str], ...], codes: list[str] | None, *, lock: bool) -> Any:
    # The same conditions as the search's token clause (search/query.py ``_token``) on the same rows.
    # The identifier matches come first, in a materialised CTE on PostgreSQL: during a bulk load the
    # statistics lag, and the planner would otherwise start from the filter (every resource of the
    # agency) and probe the identifiers for each one — 20 s a query at 100,000 children.
    postgres = uow.conn.dialect.name == "postgresql"
    tokens = (select(idx_token.c.code, idx_token.c.resource_pk)
              .where(idx_token.c.res_type == res_type, idx_token.c.param == param, idx_token.c.system == system))
    if codes is not None:
        tokens = tokens.where(idx_token.c.code.in_(codes))
    m = tokens.cte("m")
    if postgres:
        m = m.prefix_with("MATERIALIZED")
    query = (select(m.c.code, resource.c.pk, resource.c.res_id, resource.c.version_id, resource.c.last_updated,
                    resource.c.content)
             .join_from(m, resource, resource.c.pk == m.c.resource_pk)
             .where(resource.c.res_type == res_type, resource.c.deleted == false()))
    for f_param, f_system, f_code in filters:
        query = query.where(_has_token(resource.c.pk, f_param, f_system, f_code))
    if lock and postgres:
        query = query.with_for_update(of=resource)
    return query
