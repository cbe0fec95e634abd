"""SQL on the subscription tables (fhir_server/storage/tables.py): state, numbered events, the
delivery lease and cursor. Every function takes the caller's connection (its transaction)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select, update

from fhir_server.fhir.instants import utcnow
from fhir_server.storage.tables import resource_history, subscription_event, subscription_state

from .spec import SubscriptionSpec

LIVE = ("requested", "active", "error")  # statuses whose events are numbered and delivered


@dataclass(frozen=True)
class State:
    sub_id: str
    status: str
    spec: SubscriptionSpec
    secret: str
    event_count: int
    delivered_through: int
    handshake_due: bool
    failures: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_sent_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    access: dict[str, Any] | None = None  # its owner's access context (subscriptions/access.py)

    @property
    def pending(self) -> int:
        return self.event_count - self.delivered_through


@dataclass(frozen=True)
class Event:
    number: int
    outbox_id: int
    created: datetime
    res_type: str
    res_id: str
    version_id: int
    interaction: str


def _state(row: Any) -> State:
    return State(row.sub_id, row.status, SubscriptionSpec.from_json(row.spec), row.secret, row.event_count,
                 row.delivered_through, row.handshake_due, row.failures, row.next_attempt_at, row.last_error,
                 row.last_sent_at, row.lease_owner, row.lease_until, row.access)


def get(conn: Connection, sub_id: str, *, lock: bool = False) -> State | None:
    query = select(subscription_state).where(subscription_state.c.sub_id == sub_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    return _state(row) if row is not None else None


def live(conn: Connection) -> list[State]:
    """Subscriptions whose events are recorded (requested, active or error)."""
    rows = conn.execute(select(subscription_state).where(subscription_state.c.status.in_(LIVE)))
    return [_state(r) for r in rows]


def save(conn: Connection, sub_id: str, *, status: str, spec: SubscriptionSpec, secret: str,
         handshake_due: bool, reset_failures: bool, access: dict[str, Any] | None) -> None:
    """Insert or update the state of ``sub_id`` (counters and cursor are kept on update); ``access``
    is the access context of the client write (subscriptions/access.py)."""
    now = utcnow()
    values: dict[str, Any] = {"status": status, "topic": spec.topic, "spec": spec.to_json(), "secret": secret,
                              "handshake_due": handshake_due, "updated": now, "access": access}
    if reset_failures:
        values.update(failures=0, next_attempt_at=None, last_error=None)
    done = conn.execute(update(subscription_state).where(subscription_state.c.sub_id == sub_id).values(**values))
    if done.rowcount == 0:
        conn.execute(insert(subscription_state).values(
            **{"sub_id": sub_id, "event_count": 0, "delivered_through": 0, "failures": 0, **values}))


def set_status(conn: Connection, sub_id: str, status: str) -> None:
    conn.execute(update(subscription_state).where(subscription_state.c.sub_id == sub_id)
                 .values(status=status, updated=utcnow()))


def add_events(conn: Connection, sub_id: str, events: list[dict[str, Any]]) -> list[int]:
    """Number ``events`` (dicts with outbox_id, created, res_type, res_id, version_id, interaction)
    after the subscription's last event and store them; an outbox row already numbered for this
    subscription (a drain run twice) is skipped. Returns the new numbers."""
    state = conn.execute(select(subscription_state.c.event_count).where(subscription_state.c.sub_id == sub_id)
                         .with_for_update() if conn.dialect.name == "postgresql" else
                         select(subscription_state.c.event_count).where(subscription_state.c.sub_id == sub_id)).first()
    if state is None:
        return []
    seen = set(conn.execute(select(subscription_event.c.outbox_id).where(
        subscription_event.c.sub_id == sub_id,
        subscription_event.c.outbox_id.in_([e["outbox_id"] for e in events]))).scalars())
    rows = []
    number = state.event_count
    for event in events:
        if event["outbox_id"] in seen:
            continue
        number += 1
        rows.append({**event, "sub_id": sub_id, "number": number})
    if rows:
        conn.execute(insert(subscription_event), rows)
        conn.execute(update(subscription_state).where(subscription_state.c.sub_id == sub_id)
                     .values(event_count=number))
    return [r["number"] for r in rows]


def events(conn: Connection, sub_id: str, *, after: int, until: int | None = None, limit: int) -> list[Event]:
    """Events numbered after ``after`` (and at most ``until``), oldest first."""
    query = select(subscription_event).where(subscription_event.c.sub_id == sub_id,
                                             subscription_event.c.number > after)
    if until is not None:
        query = query.where(subscription_event.c.number <= until)
    rows = conn.execute(query.order_by(subscription_event.c.number).limit(limit))
    return [Event(r.number, r.outbox_id, r.created, r.res_type, r.res_id, r.version_id, r.interaction) for r in rows]


def claim(conn: Connection, sub_id: str, owner: str, seconds: float) -> bool:
    """Take the delivery lease of ``sub_id`` (one deliverer at a time keeps events in order) unless
    another holds it or the backoff has not expired. A conditional UPDATE: atomic on both stores."""
    now = utcnow()
    done = conn.execute(update(subscription_state).where(
        subscription_state.c.sub_id == sub_id,
        subscription_state.c.status.in_(LIVE),
        or_(subscription_state.c.lease_until.is_(None), subscription_state.c.lease_until < now),
        or_(subscription_state.c.next_attempt_at.is_(None), subscription_state.c.next_attempt_at <= now),
    ).values(lease_owner=owner, lease_until=now + timedelta(seconds=seconds)))
    return done.rowcount == 1


def delivered(conn: Connection, sub_id: str, owner: str, *, through: int | None, handshake: bool) -> None:
    """A notification reached the endpoint: move the cursor, clear failures, release the lease."""
    values: dict[str, Any] = {"failures": 0, "next_attempt_at": None, "last_error": None,
                              "last_sent_at": utcnow(), "lease_owner": None, "lease_until": None}
    if through is not None:
        values["delivered_through"] = func.max(subscription_state.c.delivered_through, through) \
            if conn.dialect.name == "sqlite" else func.greatest(subscription_state.c.delivered_through, through)
    if handshake:
        values["handshake_due"] = False
    conn.execute(update(subscription_state).where(subscription_state.c.sub_id == sub_id,
                                                  subscription_state.c.lease_owner == owner).values(**values))


def failed(conn: Connection, sub_id: str, owner: str, error: str, max_backoff: int) -> tuple[int, float]:
    """A delivery failed: count it, back off exponentially (1 s, 2 s, 4 s … capped at
    ``max_backoff``), release the lease. Returns (consecutive failures, seconds to wait)."""
    row = conn.execute(select(subscription_state.c.failures).where(subscription_state.c.sub_id == sub_id)).first()
    failures = (row.failures if row else 0) + 1
    wait = float(min(2 ** (failures - 1), max_backoff))
    conn.execute(update(subscription_state).where(subscription_state.c.sub_id == sub_id,
                                                  subscription_state.c.lease_owner == owner).values(
        failures=failures, next_attempt_at=utcnow() + timedelta(seconds=wait), last_error=error[:2000],
        lease_owner=None, lease_until=None))
    return failures, wait


def release(conn: Connection, sub_id: str, owner: str) -> None:
    conn.execute(update(subscription_state).where(subscription_state.c.sub_id == sub_id,
                                                  subscription_state.c.lease_owner == owner)
                 .values(lease_owner=None, lease_until=None))


def due(conn: Connection) -> list[State]:
    """Live subscriptions with work (events not delivered, a handshake, a heartbeat) whose lease is
    free and backoff expired: what the sweep re-sends."""
    now = utcnow()
    rows = conn.execute(select(subscription_state).where(
        subscription_state.c.status.in_(LIVE),
        or_(subscription_state.c.lease_until.is_(None), subscription_state.c.lease_until < now),
        or_(subscription_state.c.next_attempt_at.is_(None), subscription_state.c.next_attempt_at <= now)))
    out = []
    for row in rows:
        state = _state(row)
        heartbeat_due = state.status == "active" and state.spec.heartbeat is not None and (
            state.last_sent_at is None or state.last_sent_at + timedelta(seconds=state.spec.heartbeat) <= now)
        if state.access is None:  # before migration 0019: one job sets it to error (delivery.py), then none
            if state.status != "error":
                out.append(state)
        elif state.pending > 0 or state.handshake_due or heartbeat_due or state.spec.ended(now):
            out.append(state)
    return out


def versions(conn: Connection, events: list[Event]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The exact versions that raised ``events`` (a deletion's is the one before it)."""
    found = contents_at(conn, {(e.res_type, e.res_id, e.version_id - 1 if e.interaction == "delete" else e.version_id)
                               for e in events})
    for e in events:  # a deletion is shown with the content it deleted, under its own version
        if e.interaction == "delete" and (e.res_type, e.res_id, e.version_id - 1) in found:
            found[(e.res_type, e.res_id, e.version_id)] = found[(e.res_type, e.res_id, e.version_id - 1)]
    return found


def contents_at(conn: Connection, wanted: set[tuple[str, str, int]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(type, id, version) → the stored content of that version, one query per resource type (per
    chunk of ids), whatever the number of versions asked."""
    found: dict[tuple[str, str, int], dict[str, Any]] = {}
    by_type: dict[str, set[str]] = {}
    for res_type, res_id, _ in wanted:
        by_type.setdefault(res_type, set()).add(res_id)
    for res_type, ids in by_type.items():
        numbers = sorted({v for t, _, v in wanted if t == res_type})
        ordered = sorted(ids)
        for start in range(0, len(ordered), 1000):
            rows = conn.execute(select(resource_history.c.res_id, resource_history.c.version_id,
                                       resource_history.c.content).where(
                resource_history.c.res_type == res_type, resource_history.c.res_id.in_(ordered[start:start + 1000]),
                resource_history.c.version_id.in_(numbers)))
            for res_id, version, content in rows:
                if (res_type, res_id, version) in wanted and content is not None:
                    found[(res_type, res_id, version)] = content
    return found


__all__ = ["State", "Event", "get", "live", "save", "set_status", "add_events", "events", "claim", "delivered",
           "failed", "release", "due", "versions", "contents_at"]
