"""The Celery app and the outbox drain: the after-commit half of every write.

Every write appends an ``outbox`` row in the same transaction as the resource (repository/sql.py).
After the transaction commits, :func:`install_outbox_drain` sends :func:`drain_outbox`, which hands
the pending rows to the registered consumers (subscriptions, risk, audit fan-out: later features)
and marks them processed, all in one transaction. So an event is never lost (the row outlives a
crash or a broker outage) and never seen before its write is visible (the task runs after commit).

* ``FHIR_BROKER_URL`` set (e.g. ``redis://redis:6379/0``): tasks go to the broker and a Celery worker
  runs them (``celery -A fhir_server.worker worker``; add ``--beat`` for the periodic sweep that
  picks up rows left behind while the broker was down).
* ``FHIR_BROKER_URL`` unset (the embedded default): ``task_always_eager``, so the drain runs
  in-process right after the commit, in the web worker, on the engine that committed.

``fhir_server.build_services`` installs the drain on every repository it builds (not on one bound to a
test's connection). The worker also runs the tasks of the optional packages (``TASK_MODULES``).

The task takes no resource data, only a batch size: it re-reads the rows, so running it twice, or
concurrently, is harmless (PostgreSQL hands each pending row to one drain via ``SKIP LOCKED``;
SQLite serialises writers).
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.signals import worker_process_init
from sqlalchemy import Connection, Engine, select, tuple_, update

from .config import Settings
from .fhir.instants import utcnow
from .storage.tables import outbox

if TYPE_CHECKING:
    from .repository.sql import SqlRepository

log = logging.getLogger(__name__)

DRAIN_BATCH = 500
# Imported by a Celery worker at start-up so that it knows their tasks; the web process imports
# them itself when it first sends one.
TASK_MODULES = ["mappings.tasks", "subscriptions.tasks", "fhir_server.audit.tasks", "triage.tasks"]


@dataclass(frozen=True)
class OutboxEvent:
    """One committed change, as recorded in the outbox."""

    id: int
    created: datetime
    res_type: str
    res_id: str
    version_id: int
    event: str  # create | update | delete


# A consumer gets a batch of events and the connection of the transaction that will mark them
# processed: if it raises, nothing is marked and the batch is offered again on the next drain.
OutboxConsumer = Callable[[Connection, list[OutboxEvent]], None]
_consumers: list[OutboxConsumer] = []


def register_consumer(consumer: OutboxConsumer) -> OutboxConsumer:
    """Add a consumer of outbox events (usable as a decorator). Consumers must be idempotent."""
    if consumer not in _consumers:
        _consumers.append(consumer)
    return consumer


# Called after each drained batch has committed (e.g. to send delivery jobs for what the consumers
# stored): a job sent from inside the transaction could run before its rows are visible.
_after_drain: list[Callable[[], None]] = []


def register_after_drain(callback: Callable[[], None]) -> Callable[[], None]:
    """Add a callback run after every committed drain batch (usable as a decorator)."""
    if callback not in _after_drain:
        _after_drain.append(callback)
    return callback


def drain_batch(conn: Connection, limit: int = DRAIN_BATCH,
                consumers: list[OutboxConsumer] | None = None, deferred: list[int] | None = None) -> int:
    """Hand up to ``limit`` pending events, oldest first, to the consumers and mark them processed,
    inside the caller's transaction. Returns how many were processed. On PostgreSQL a change whose
    resource has an earlier change still pending outside this batch is left pending for a later
    batch (its id appended to ``deferred``): see :func:`_later_changes`."""
    query = (select(outbox).where(outbox.c.processed_at.is_(None))
             .order_by(outbox.c.id).limit(limit))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    events = [OutboxEvent(r.id, r.created, r.res_type, r.res_id, r.version_id, r.event)
              for r in conn.execute(query)]
    if events and conn.dialect.name == "postgresql":
        later = _later_changes(conn, events)
        if later:
            events = [e for e in events if e.id not in later]
            if deferred is not None:
                deferred.extend(sorted(later))
    if not events:
        return 0
    for consumer in _consumers if consumers is None else consumers:
        consumer(conn, events)
    conn.execute(update(outbox).where(outbox.c.id.in_([e.id for e in events]))
                 .values(processed_at=utcnow()))
    return len(events)


def _later_changes(conn: Connection, events: list[OutboxEvent]) -> set[int]:
    """Keep each resource's changes in order across concurrent drains: the ids in ``events`` of
    changes whose resource has an earlier change still pending outside this batch.

    ``SKIP LOCKED`` lets a drain pass over the rows another drain holds, so a later version of a
    resource could otherwise reach the consumers (and be numbered as a subscription event, so
    notified) before the version the other drain is still working on. Such rows are left pending,
    unprocessed, for a batch that comes after the earlier change has been processed. Not waiting for
    the other drain (a row lock) is deliberate: a drain that fails and rolls back hands its rows
    back, and row waits between drains then form cycles (PostgreSQL aborted them as deadlocks in
    the fault benchmark, and the order was lost with them)."""
    mine = {e.id for e in events}
    keys = sorted({(e.res_type, e.res_id) for e in events})
    earliest: dict[tuple[str, str], int] = {}
    for start in range(0, len(keys), 500):
        rows = conn.execute(select(outbox.c.res_type, outbox.c.res_id, outbox.c.id).where(
            outbox.c.processed_at.is_(None), outbox.c.id < max(mine), outbox.c.id.not_in(mine),
            tuple_(outbox.c.res_type, outbox.c.res_id).in_(keys[start:start + 500])))
        for res_type, res_id, row_id in rows:
            key = (res_type, res_id)
            earliest[key] = min(row_id, earliest.get(key, row_id))
    return {e.id for e in events if (e.res_type, e.res_id) in earliest and e.id > earliest[(e.res_type, e.res_id)]}


# How long a drain keeps coming back for the changes it left pending behind another drain's (see
# _later_changes) before leaving them to the next drain or the beat's outbox sweep.
DEFER_PATIENCE = 30.0


def drain(engine: Engine, limit: int = DRAIN_BATCH) -> int:
    """Drain every pending event, one transaction per batch, including the events that consumers' own
    writes add (a master Patient, a RiskAssessment): they have no commit callback of their own."""
    total = 0
    waited = 0.0
    while True:
        deferred: list[int] = []
        with engine.begin() as conn:
            done = drain_batch(conn, limit, deferred=deferred)
        if done:
            for callback in _after_drain:
                callback()
        total += done
        if deferred and waited < DEFER_PATIENCE:
            # the earlier change is another drain's: come back once it has had time to commit
            time.sleep(0.05)
            waited += 0.05
            continue
        if done == 0:
            return total


# -- Celery ----------------------------------------------------------------------------------------

def make_celery(settings: Settings) -> Celery:
    """The Celery app for ``settings``: a real broker when ``broker_url`` is set, eager otherwise."""
    eager = settings.broker_url is None
    app = Celery("fhir_server", set_as_current=False, include=TASK_MODULES)
    app.conf.update(
        broker_url=settings.broker_url or "memory://",
        task_always_eager=eager,
        task_default_queue=settings.celery_queue,
        task_eager_propagates=True,
        task_ignore_result=True,
        # a task is acknowledged when done, so a worker killed mid-drain leaves it queued
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # a worker whose broker is away keeps trying to reconnect (every 30 s at most) instead of
        # exiting after Celery's default 100 attempts (about 45 minutes): nobody may be there to
        # restart it, and every event it would deliver is waiting in the database
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        beat_schedule={"sweep-outbox": {"task": "fhir_server.drain_outbox",
                                        "schedule": settings.outbox_sweep_seconds},
                       # subscriptions/tasks.py: re-sends undelivered events, handshakes, heartbeats
                       "sweep-subscriptions": {"task": "subscriptions.sweep",
                                               "schedule": settings.subscription_sweep_seconds}},
    )
    return app


settings = Settings.from_env()
celery = make_celery(settings)

_engine_lock = threading.Lock()
_background_drains: "weakref.WeakSet[_BackgroundDrain]" = weakref.WeakSet()
_engine: Engine | None = None


def get_engine() -> Engine:
    """The engine of a Celery worker process, made on first use (after the fork)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from .storage.db import make_engine
            _engine = make_engine(settings.database_url, busy_timeout=settings.sqlite_busy_timeout)
        return _engine


@worker_process_init.connect
def _fresh_pool_after_fork(**_: Any) -> None:
    # a forked Celery child must not share the parent's database connections
    global _engine
    _engine = None


@celery.task(name="fhir_server.drain_outbox", bind=True, max_retries=8)
def drain_outbox(self: Any, limit: int = DRAIN_BATCH) -> int:
    """Process every pending outbox row; see the module docstring. On a Celery worker a failure
    (database restarting, a consumer's error) is retried with exponential backoff; in eager mode it
    is raised at once, since an eager retry would block the web request that sent it."""
    try:
        return drain(get_engine(), limit)
    except Exception as exc:
        if self.request.is_eager:
            raise
        raise self.retry(exc=exc, countdown=min(2 ** self.request.retries, 300)) from exc


def install_outbox_drain(repo: "SqlRepository") -> None:
    """After every committed write of ``repo``, have the outbox drained.

    With a broker, :func:`drain_outbox` is sent to the workers. Without one, the drain runs on a
    background thread of this process (at most one at a time per engine, re-run while writes keep
    arriving), so it never lengthens the request that wrote. Either way the write has committed
    first, so a failure here must not fail the request: the rows stay pending for the next drain.
    """
    if not celery.conf.task_always_eager:
        repo.on_commit(_drain_sender)
        return
    repo.on_commit(_BackgroundDrain(repo.engine).request)


class DrainSender:
    """Sends :func:`drain_outbox` after a commit, and stops trying for ``pause`` seconds once a send
    has failed (the broker is down).

    A failed send costs the request that committed about 0.6 s (the Redis client's connection retries,
    more if the host does not answer at all), so under load every write would slow down for as long
    as the broker is away. Skipping sends loses nothing: the rows stay pending, and any drain takes
    every pending row — the first send after the pause, or the beat's outbox sweep."""

    def __init__(self, send: Callable[[], Any], pause: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self.pause = pause
        self._clock = clock
        self._paused_until = 0.0

    def __call__(self) -> None:
        if self._clock() < self._paused_until:
            return
        try:
            self._send()
        except Exception:  # noqa: BLE001 - see install_outbox_drain
            self._paused_until = self._clock() + self.pause
            log.exception("Outbox drain not sent; pending rows wait for the next drain (no send tried for %.0f s)",
                          self.pause)


_drain_sender = DrainSender(lambda: drain_outbox.delay())


def wait_for_background_drains(timeout: float = 30.0) -> None:
    """Wait until no in-process drain thread is running (a test empties the tables afterwards;
    a drain still writing — linking, rescoring — would race it)."""
    deadline = time.monotonic() + timeout
    while any(d._running for d in list(_background_drains)) and time.monotonic() < deadline:
        time.sleep(0.01)


class _BackgroundDrain:
    """Coalesces drain requests: one thread drains until no request arrived during its run."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._running = False
        self._again = False
        _background_drains.add(self)

    def request(self) -> None:
        with self._lock:
            if self._running:
                self._again = True
                return
            self._running = True
        threading.Thread(target=self._run, name="outbox-drain", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                drain(self.engine)
            except Exception:  # noqa: BLE001 - rows stay pending; the next write retries
                log.exception("Outbox drain failed; pending rows wait for the next drain")
            with self._lock:
                if not self._again:
                    self._running = False
                    return
                self._again = False
