"""The append-only, hash-chained audit trail (table ``audit_event``).

Appending is one multi-row INSERT in the caller's transaction (:func:`append`): no lock, no read of
the chain, so gunicorn workers never wait for each other. The chain is built afterwards by
:func:`seal`, off every request and outbox drain path (its own periodic job, :data:`SEAL_SECONDS`,
and before an auditor reads the trail), which takes the rows not yet sealed in ``seq`` order under
one lock (a PostgreSQL transaction-level advisory lock; SQLite's ``BEGIN IMMEDIATE`` already
serialises writers) and gives
each the next ``chain_pos``, ``prev_hash`` = the hash of the row before it, and
``hash`` = SHA-256(prev_hash + "\\n" + canonical JSON of the row's AuditEvent). A row committed late
(its transaction ran long) simply joins the chain at the next seal: the chain's order is sealing
order, and it stays one straight line whatever the concurrency.

Sealing also copies each AuditEvent into ``resource`` (with its history and search index rows, and
the chain values in the :data:`~.balp.CHAIN_EXTENSION` extension), so that the standard AuditEvent
search parameters work on the trail. :func:`verify` re-computes the chain from the first row and
names the first link that does not hold: a changed row, a removed row (a gap in ``chain_pos``), a
row whose ``prev_hash`` was rewritten, or a served copy that differs from the sealed row.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, func, insert, select, text, update

from ..auth.labels import policy_columns
from ..fhir import jsonio
from ..fhir.instants import format_instant, utcnow
from ..storage import policy_version
from ..storage.tables import INDEX_TABLES, audit_event, resource, resource_history
from . import pending as compact
from .balp import CHAIN_EXTENSION

if TYPE_CHECKING:
    from ..search.indexer import Indexer

GENESIS = "0" * 64
SEAL_BATCH = 1000
# Period of the sealing job (Celery beat entry "seal-audit", or the local beat without a broker): the
# longest a committed AuditEvent waits, unsealed, before its hash is in the chain.
SEAL_SECONDS = 10.0
# pg_advisory_xact_lock key of the sealer ("audit" in ASCII).
SEAL_LOCK = 0x6175646974


def canonical(content: dict[str, Any]) -> str:
    """The text that is hashed: keys sorted, no whitespace, decimals as written."""
    return jsonio.dumps_sorted(content)


def link_hash(prev_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256(f"{prev_hash}\n{canonical(content)}".encode("utf-8")).hexdigest()


def append(conn: Connection, events: list[dict[str, Any]]) -> None:
    """Add AuditEvents to the trail in the caller's transaction: one INSERT, whatever the count."""
    if not events:
        return
    conn.execute(insert(audit_event), [
        {"event_id": e["id"], "recorded": _recorded(e), "content": e} for e in events])


# The read path's INSERT, sent through the driver directly (recorder._ReadAuditWriter).
RAW_INSERT = "INSERT INTO audit_event (event_id, recorded, content) VALUES (%s, %s, %s::json)"
# The same, only while the Consents have not changed since ``version`` (storage/policy_version.py):
# no row (nothing RETURNed) means they have, and the read must run again.
RAW_INSERT_IF_POLICY = ("INSERT INTO audit_event (event_id, recorded, content) SELECT %s, %s, %s::json "
                        f"WHERE {policy_version.CURRENT} = %s RETURNING seq")


def raw_row(event: dict[str, Any]) -> tuple[str, datetime, str]:
    return event["id"], _recorded(event), jsonio.dumps(event)


def _recorded(event: dict[str, Any]) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(event["recorded"]).replace("Z", "+00:00"))
    except ValueError:
        return utcnow()
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def seal(conn: Connection, indexer: "Indexer", *, limit: int = SEAL_BATCH, wait: bool = True) -> int:
    """Chain up to ``limit`` unsealed rows, oldest first, in the caller's transaction, and publish
    them as AuditEvent resources. Returns how many were sealed.

    Sealers are serialised by a transaction-level advisory lock on PostgreSQL, so two never give out
    the same ``chain_pos`` (and the append-only trigger refuses a second sealing of a row anyway).
    ``wait=False`` (the periodic job) takes it with ``pg_try_advisory_xact_lock``: when another
    sealer holds it, return 0 at once, that sealer or the next period seals these rows. An auditor's
    read waits (``wait=True``), so that it sees every event committed before it."""
    if conn.dialect.name == "postgresql":
        if wait:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEAL_LOCK})
        elif not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SEAL_LOCK}).scalar_one():
            return 0
    # reads' and searches' compact AuditEvents first (audit/pending.py): they join the chain here
    compact.expand(conn, limit)
    pending = conn.execute(select(audit_event.c.seq, audit_event.c.event_id, audit_event.c.content)
                           .where(audit_event.c.chain_pos.is_(None))
                           .order_by(audit_event.c.seq).limit(limit)).all()
    if not pending:
        return 0
    head = conn.execute(select(audit_event.c.chain_pos, audit_event.c.hash)
                        .where(audit_event.c.chain_pos.is_not(None))
                        .order_by(audit_event.c.chain_pos.desc()).limit(1)).first()
    pos, prev = (head.chain_pos, head.hash) if head is not None else (0, GENESIS)
    now = utcnow()
    published: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for row in pending:
        pos += 1
        digest = link_hash(prev, row.content)
        links.append({"b_seq": row.seq, "b_pos": pos, "b_prev": prev, "b_hash": digest, "b_now": now})
        published.append(served_copy(row.content, pos, prev, digest))
        prev = digest
    # one executemany, not a round trip per row: the seal holds the lock an auditor's read waits for
    conn.execute(update(audit_event).where(audit_event.c.seq == bindparam("b_seq")).values(
        chain_pos=bindparam("b_pos"), prev_hash=bindparam("b_prev"), hash=bindparam("b_hash"),
        sealed_at=bindparam("b_now")), links)
    _publish(conn, indexer, published, now)
    return len(pending)


def served_copy(content: dict[str, Any], pos: int, prev: str, digest: str) -> dict[str, Any]:
    """The AuditEvent as served: the sealed content plus its chain values in an extension."""
    body = dict(content)
    body["extension"] = [*(content.get("extension") or []), {
        "url": CHAIN_EXTENSION,
        "extension": [
            {"url": "sequence", "valueInteger": pos} if pos < 2**31 else {"url": "sequence", "valueString": str(pos)},
            {"url": "previousHash", "valueString": prev},
            {"url": "hash", "valueString": digest},
        ],
    }]
    return body


def _publish(conn: Connection, indexer: "Indexer", bodies: list[dict[str, Any]], now: datetime) -> None:
    """Write sealed AuditEvents as version 1 of an ``AuditEvent`` resource (no outbox row: the
    trail is not a change to anyone's record)."""
    for body in bodies:
        body["meta"] = {**(body.get("meta") or {}), "versionId": "1", "lastUpdated": format_instant(now)}
    pks = conn.execute(insert(resource).returning(resource.c.pk, sort_by_parameter_order=True), [
        {"res_type": "AuditEvent", "res_id": b["id"], "version_id": 1, "last_updated": now, "deleted": False,
         "content": b, **policy_columns(b)} for b in bodies]).scalars().all()
    conn.execute(insert(resource_history), [
        {"resource_pk": pk, "version_id": 1, "res_type": "AuditEvent", "res_id": b["id"], "last_updated": now,
         "method": "POST", "deleted": False, "content": b} for pk, b in zip(pks, bodies)])
    pending: dict[str, list[dict[str, Any]]] = {}
    for pk, body in zip(pks, bodies):
        for key, rows in indexer.rows(body).items():
            for r in rows:
                r["resource_pk"] = pk
                r["res_type"] = "AuditEvent"
            pending.setdefault(key, []).extend(rows)
    for key, rows in pending.items():
        if rows:
            conn.execute(insert(INDEX_TABLES[key]), rows)


@dataclass
class Verification:
    """What :func:`verify` found."""

    sealed: int = 0
    pending: int = 0  # recorded but not yet sealed: not covered by this verification
    oldest_pending: datetime | None = None  # when the oldest of them was recorded
    head_hash: str = GENESIS
    broken_at: int | None = None  # chain_pos of the first link that does not hold
    broken_event: str | None = None  # its AuditEvent id
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_at is None

    def pending_note(self) -> str | None:
        """Says plainly what the verification does not cover: the tail not yet sealed."""
        if not self.pending:
            return None
        since = f", the oldest recorded {format_instant(self.oldest_pending)}" if self.oldest_pending else ""
        return (f"{self.pending} AuditEvent(s) recorded but not yet sealed{since}: they are not covered by this "
                f"verification nor by headHash; the sealing job chains them within {SEAL_SECONDS:.0f} s")


def verify(conn: Connection, *, batch: int = 5000) -> Verification:
    """Recompute the chain from its first link (see the module docstring)."""
    result = Verification()
    result.pending, result.oldest_pending = conn.execute(
        select(func.count(), func.min(audit_event.c.recorded)).where(audit_event.c.chain_pos.is_(None))).one()
    waiting, oldest = compact.waiting(conn)  # reads' compact AuditEvents, not yet expanded
    result.pending += waiting
    if oldest is not None and (result.oldest_pending is None or oldest < result.oldest_pending):
        result.oldest_pending = oldest
    prev, expected_pos = GENESIS, 1
    last = 0
    while True:
        rows = conn.execute(
            select(audit_event.c.chain_pos, audit_event.c.event_id, audit_event.c.content,
                   audit_event.c.prev_hash, audit_event.c.hash, resource.c.content.label("served"))
            .select_from(audit_event.outerjoin(resource, (resource.c.res_type == "AuditEvent")
                                               & (resource.c.res_id == audit_event.c.event_id)))
            .where(audit_event.c.chain_pos > last).order_by(audit_event.c.chain_pos).limit(batch)).all()
        for row in rows:
            problem = _check(row, prev, expected_pos)
            if problem is not None:
                result.broken_at, result.broken_event, result.problem = expected_pos, row.event_id, problem
                return result
            result.sealed += 1
            prev, expected_pos = row.hash, expected_pos + 1
        if len(rows) < batch:
            break
        last = rows[-1].chain_pos
    result.head_hash = prev
    return result


def _check(row: Any, prev: str, expected_pos: int) -> str | None:
    if row.chain_pos != expected_pos:
        return f"link {expected_pos} is missing (the next sealed link is {row.chain_pos}): a row was removed"
    if row.prev_hash != prev:
        return f"previousHash {row.prev_hash} does not match the hash of link {expected_pos - 1} ({prev})"
    if link_hash(prev, row.content) != row.hash:
        return "the AuditEvent's content does not match its sealed hash: the row was altered"
    if row.served is None:
        return "the sealed AuditEvent is missing from the searchable store"
    expected = served_copy(row.content, row.chain_pos, row.prev_hash, row.hash)
    if canonical(_without_server_meta(row.served)) != canonical(_without_server_meta(expected)):
        return "the AuditEvent served to searches differs from the sealed row"
    return None


def _without_server_meta(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out
