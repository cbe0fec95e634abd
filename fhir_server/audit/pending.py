"""Reads and searches that write their own AuditEvent, in their own statement (PostgreSQL).

An audited read used to be two round trips: the SELECT, then the AuditEvent INSERT. Here the
read's statement appends a *compact* AuditEvent itself, in a data-modifying CTE::

    WITH audit AS (INSERT INTO audit_pending (event_id, recorded, head, returned)
                   SELECT :id, :recorded, :head, json_build_array('Type/id/_history/v')
                   FROM resource WHERE <the same row> AND NOT deleted AND <access clause>
                                       [AND <policy_version> = :consent_version]
                   RETURNING seq)
    SELECT resource.*, (SELECT count(*) FROM audit) AS audited,
           [<policy_version> = :consent_version] AS policy_ok,
           set_config('synchronous_commit', 'off', true)
    FROM resource WHERE res_type = :type AND res_id = :id

(a search wraps its page query the same way, listing the page's rows in their order). ``head`` is
the BALP AuditEvent as known before the statement runs (who, why, what was asked, the request id:
:class:`Stamp`); ``returned`` is what the statement disclosed. The row is written by the statement
that reads, so the answer and its record succeed or fail together: a read whose statement fails
is not answered (fail closed), and one whose INSERT found the Consents changed (``policy_ok``
false) runs again with fresh Consents (errors.RunAgain), as with the separate INSERT before. Callers
with Consent deny rules do not come here (recorder.AuditRecorder.prepare: the SQL and Python rules
see different references), and an attempt that answers nothing after its statement wrote the row
is corrected by a failure event naming it (balp.not_answered).

``synchronous_commit`` is off for that one statement (``set_config(..., true)``: the transaction
of an autocommit read is the statement): like the separate INSERT it replaces, a PostgreSQL crash
can lose the last fraction of a second of *read* AuditEvents (docs/security.md).

The sealer (chain.seal, every SEAL_SECONDS and before any read of the trail) expands each pending
row into the full AuditEvent — the patients involved, from the versions returned
(:func:`balp.with_disclosed`) — appends it to ``audit_event`` and removes the pending row, in one
transaction under the sealer's lock; a trigger refuses any other change to ``audit_pending``.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Integer, bindparam, String, Select, cast, delete, func, insert, literal, \
    literal_column, select, true, tuple_
from sqlalchemy.dialects.postgresql import aggregate_order_by

from sqlalchemy.exc import SQLAlchemyError

from ..errors import FhirError, RunAgain
from ..storage import policy_version
from ..storage.tables import audit_event, audit_pending, resource, resource_history
from . import balp

log = logging.getLogger(__name__)
COLUMNS = ["event_id", "recorded", "head", "returned"]
# (evaluated per statement: the autocommit read's transaction is that statement)
_SYNC_OFF = func.set_config("synchronous_commit", "off", True)


class AuditUnavailable(FhirError):
    """The audit trail could not be written: the request is not answered (fail closed)."""

    status, code = 503, "transient"


def execute(conn: Connection, statement: Select[Any], params: dict[str, Any] | None = None) -> list[Any]:
    """Run a statement that writes its request's AuditEvent: any failure fails the request closed."""
    try:
        return list(conn.execute(statement, params or {}))
    except SQLAlchemyError as exc:
        log.exception("A read's statement with its AuditEvent failed")
        raise AuditUnavailable("The audit trail could not be written, so this request was not carried out "
                               "(audited access fails closed)") from exc


@dataclass
class Stamp:
    """The AuditEvent of one read or search as known before its statement runs (``head``), and
    what became of it: ``returned`` is set once a statement wrote the compact row (the references
    it disclosed); None means the statement did not write it, and the recorder writes the event."""

    head: dict[str, Any]
    recorded: datetime
    consent_version: int | None = None
    invalidate: Callable[[int | None], None] | None = None
    used: bool = False
    returned: list[str] | None = None

    def claim(self) -> bool:
        """True for the first statement that asks: only one statement carries the event."""
        if self.used:
            return False
        self.used = True
        return True

    def read(self, conn: Connection, res_type: str, res_id: str, access: Any) -> Any:
        """The current row of ``res_type/res_id`` (or None), read by the statement that also writes
        this AuditEvent (:func:`read_statement`); its ``audited`` says whether it did."""
        return next(iter(execute(conn, *read_statement(self, res_type, res_id, access))), None)

    def page(self, conn: Connection, page: Select[Any], shown: int) -> list[Any]:
        """The rows of a search's ``page`` (select_matches ``numbered``), read by the statement that
        also writes this AuditEvent listing the first ``shown`` (:func:`search_statement`); then
        settled. The search engine calls this without knowing of the audit trail."""
        params = {"a_version": self.consent_version} if self.consent_version is not None else {}
        answered = execute(conn, search_statement(self, page, shown), params)
        rows = [r for r in answered if r.pk is not None]
        self.settle(answered[0].audited, [reference(r.res_type, r.res_id, r.version_id)
                                          for r in rows if r.audit_rn <= shown], bool(answered[0].policy_ok))
        return rows

    def settle(self, audited: int, disclosed: list[str], policy_ok: bool = True) -> None:
        """After the statement: ``audited`` rows written, ``disclosed`` what will be answered,
        ``policy_ok`` whether the cached Consents' version was still current (the statement's own
        column: the INSERT's WHERE alone cannot say which of its conditions refused)."""
        if audited:
            self.returned = disclosed
            return
        if not disclosed:  # (a read of something hidden: its refusal is audited, and checked, as one)
            return
        if not policy_ok:
            # the cached Consents are stale: nothing is answered, the request runs again afresh
            if self.invalidate is not None:
                self.invalidate(self.consent_version)
            raise RunAgain("The Consents changed while the request ran")
        # the SQL access rule refused what the Python rule shows: the recorder writes the full event
        # (with its own Consent version check) after the answer
        log.warning("A read's statement did not record %s (its SQL access rule refused it); "
                    "writing its AuditEvent separately", disclosed)


def _policy_ok(check: bool) -> Any:
    """SQL: the Consents' policy_version is still the one the cached copy was read at (bind
    ``a_version``); always true without a cached copy (the Consents were read for this request)."""
    if not check:
        return true()
    return literal_column(policy_version.CURRENT, Integer) == bindparam("a_version", type_=Integer)


def _values(stamp: Stamp) -> list[Any]:
    return [literal(stamp.head["id"], String), literal(stamp.recorded, DateTime), literal(stamp.head, audit_pending.c.head.type)]


def _ref(res: Any) -> Any:
    return res.c.res_type + "/" + res.c.res_id + "/_history/" + cast(res.c.version_id, String)


def read_statement(stamp: Stamp, res_type: str, res_id: str, access: Any) -> tuple[Select[Any], dict[str, Any]]:
    """The current row of ``res_type/res_id`` with ``audited``: whether the compact AuditEvent of
    its disclosure was written (only when it exists, is not deleted and ``access`` lets it be seen);
    and the statement's parameters.

    The statement is the same for every read under the same access policy, so it is built once per
    policy (:data:`_READS`): building the policy's SQL and its cache key cost more than the round
    trip saved (~10 ms under load, measured with cProfile), while a reused statement keeps both."""
    key = (access, stamp.consent_version is not None)
    with _READS_LOCK:
        stmt = _READS.get(key)
        if stmt is not None:
            _READS.move_to_end(key)
    if stmt is None:
        stmt = _build_read(access, stamp.consent_version is not None)
        with _READS_LOCK:
            _READS[key] = stmt
            while len(_READS) > _READS_SIZE:
                _READS.popitem(last=False)
    params = {"a_type": res_type, "a_id": res_id, "a_event": stamp.head["id"], "a_recorded": stamp.recorded,
              "a_head": stamp.head, "a_version": stamp.consent_version}
    return stmt, params


_READS: "OrderedDict[Any, Select[Any]]" = OrderedDict()
_READS_LOCK = threading.Lock()
_READS_SIZE = 512


def _build_read(access: Any, check_policy: bool) -> Select[Any]:
    where = [resource.c.res_type == bindparam("a_type", type_=String),
             resource.c.res_id == bindparam("a_id", type_=String)]
    shown = [*where, resource.c.deleted.is_(False)]
    policy_ok = _policy_ok(check_policy)
    shown.append(policy_ok)
    if access is not None:
        shown.append(access.clause(resource))
    values = [bindparam("a_event", type_=String), bindparam("a_recorded", type_=DateTime),
              bindparam("a_head", type_=audit_pending.c.head.type)]
    written = insert(audit_pending).from_select(
        COLUMNS, select(*values, func.json_build_array(_ref(resource))).where(*shown)
    ).returning(audit_pending.c.seq).cte("audit")
    audited = select(func.count()).select_from(written).scalar_subquery()
    # (the same snapshot as the CTE's: one statement)
    return select(resource, audited.label("audited"), policy_ok.label("policy_ok"),
                  _SYNC_OFF.label("audit_sync")).where(*where)


def search_statement(stamp: Stamp, page: Select[Any], shown: int) -> Select[Any]:
    """``page`` (select_matches with ``numbered``: an ``audit_rn`` column in page order) with its
    compact AuditEvent listing its first ``shown`` rows (the page; one more row only says that a
    next page exists). Always one row at least: ``audited``, and the page's columns NULL when it is
    empty."""
    p = page.cte("page")
    policy_ok = _policy_ok(stamp.consent_version is not None)
    refs = select(func.coalesce(func.json_agg(aggregate_order_by(_ref(p), p.c.audit_rn)),
                                func.json_build_array())).where(p.c.audit_rn <= shown).scalar_subquery()
    written = insert(audit_pending).from_select(
        COLUMNS, select(*_values(stamp), refs).where(policy_ok)
    ).returning(audit_pending.c.seq).cte("audit")
    n = select(func.count().label("audited"), policy_ok.label("policy_ok"),
               _SYNC_OFF.label("audit_sync")).select_from(written).subquery("n")
    return select(n.c.audited, n.c.policy_ok, *(c for c in p.c)).select_from(n.outerjoin(p, true())) \
        .order_by(p.c.audit_rn)


def reference(res_type: str, res_id: str, version_id: int) -> str:
    return f"{res_type}/{res_id}/_history/{version_id}"


# -- the sealer's side ----------------------------------------------------------------------------

def expand(conn: Connection, limit: int) -> int:
    """Turn up to ``limit`` pending compact AuditEvents into full ones in ``audit_event`` and remove
    them (the caller holds the sealer's lock). Returns how many."""
    rows = conn.execute(select(audit_pending).order_by(audit_pending.c.seq).limit(limit)).all()
    if not rows:
        return 0
    wanted = sorted({_key(ref) for row in rows for ref in row.returned if _key(ref) is not None})  # type: ignore[misc]
    contents: dict[tuple[str, str, int], dict[str, Any]] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i:i + 500]
        for r in conn.execute(select(resource_history.c.res_type, resource_history.c.res_id,
                                     resource_history.c.version_id, resource_history.c.content).where(
                tuple_(resource_history.c.res_type, resource_history.c.res_id,
                       resource_history.c.version_id).in_(chunk))):
            if r.content is not None:
                contents[(r.res_type, r.res_id, r.version_id)] = r.content
    events = []
    for row in rows:
        disclosed = [(ref, contents.get(_key(ref))) for ref in row.returned]  # type: ignore[arg-type]
        events.append({"event_id": row.event_id, "recorded": row.recorded,
                       "content": balp.with_disclosed(row.head, disclosed)})
    conn.execute(insert(audit_event), events)
    conn.execute(delete(audit_pending).where(audit_pending.c.seq.in_([row.seq for row in rows])))
    return len(rows)


def waiting(conn: Connection) -> tuple[int, datetime | None]:
    """How many compact AuditEvents wait to be expanded, and when the oldest was recorded."""
    n, oldest = conn.execute(select(func.count(), func.min(audit_pending.c.recorded))).one()
    return int(n), oldest


def _key(ref: str) -> tuple[str, str, int] | None:
    parts = ref.split("/")
    if len(parts) != 4 or parts[2] != "_history" or not parts[3].isdigit():
        return None
    return parts[0], parts[1], int(parts[3])
