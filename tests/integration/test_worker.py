"""The outbox drain (fhir_server/worker.py): every committed write reaches the consumers once, after
its transaction commits, in eager mode (no broker) and through a real Celery worker and Redis."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, func, insert, select

from fhir_server import worker
from fhir_server.config import REPO_ROOT
from fhir_server.fhir.instants import utcnow
from fhir_server.storage.db import create_schema, make_engine
from fhir_server.storage.tables import outbox, resource
from tests.conftest import service_unavailable

REDIS_URL = os.environ.get("FHIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def add_events(conn: Connection, count: int, *, processed: bool = False) -> list[int]:
    now = utcnow()
    return [conn.execute(insert(outbox).values(
        created=now, res_type="Patient", res_id=f"p{uuid.uuid4().hex[:8]}", version_id=1, event="create",
        processed_at=now if processed else None).returning(outbox.c.id)).scalar_one() for _ in range(count)]


def pending(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(outbox).where(outbox.c.processed_at.is_(None))).scalar_one()


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    connection = engine.connect()
    outer = connection.begin()
    yield connection
    outer.rollback()
    connection.close()


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[worker.OutboxEvent]:
    """Registers one recording consumer in place of whatever the application registered."""
    events: list[worker.OutboxEvent] = []
    monkeypatch.setattr(worker, "_consumers", [])
    worker.register_consumer(lambda _conn, batch: events.extend(batch))
    return events


def test_drain_hands_pending_events_oldest_first_and_marks_them(conn: Connection, seen: list) -> None:
    add_events(conn, 1, processed=True)
    ids = add_events(conn, 3)

    assert worker.drain_batch(conn) == 3
    assert [e.id for e in seen] == ids
    assert {e.event for e in seen} == {"create"}
    assert pending(conn) == 0
    assert worker.drain_batch(conn) == 0  # idempotent: nothing is offered twice
    assert len(seen) == 3


def test_drain_takes_at_most_limit_events(conn: Connection, seen: list) -> None:
    ids = add_events(conn, 5)
    assert worker.drain_batch(conn, limit=2) == 2
    assert [e.id for e in seen] == ids[:2]
    assert pending(conn) == 3


def test_a_failing_consumer_leaves_the_batch_pending(conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    add_events(conn, 2)

    def broken(_conn: Connection, _events: list) -> None:
        raise RuntimeError("consumer down")

    monkeypatch.setattr(worker, "_consumers", [broken])
    with pytest.raises(RuntimeError):
        with conn.begin_nested():  # the drain's own transaction, in the task
            worker.drain_batch(conn)
    assert pending(conn) == 2


@pytest.fixture
def committed_outbox(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The session database with real commits; the tables touched are emptied afterwards."""
    monkeypatch.setattr(worker, "_engine", engine)
    monkeypatch.setitem(worker.celery.conf, "task_always_eager", True)
    yield engine
    with engine.begin() as connection:
        connection.execute(outbox.delete())


def test_the_task_drains_every_batch(committed_outbox: Engine, seen: list) -> None:
    with committed_outbox.begin() as connection:
        add_events(connection, 5)
    assert worker.drain_outbox.apply(kwargs={"limit": 2}).get() == 5
    assert len(seen) == 5
    with committed_outbox.connect() as connection:
        assert pending(connection) == 0


def test_writes_are_drained_after_their_commit(committing_app, engine: Engine, seen: list,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app installs the drain; without a broker it runs on a thread right after each commit."""
    monkeypatch.setitem(worker.celery.conf, "task_always_eager", True)
    visible_at_drain: list[bool] = []

    def check_committed(conn: Connection, batch: list[worker.OutboxEvent]) -> None:
        # the drain runs on its own connection: it sees the resource only if the write committed
        for event in batch:
            found = conn.execute(select(resource.c.pk).where(
                resource.c.res_type == event.res_type, resource.c.res_id == event.res_id)).first()
            visible_at_drain.append(found is not None)

    worker.register_consumer(check_committed)
    client = committing_app.test_client()

    created = client.post("/fhir/Patient", json={"resourceType": "Patient", "active": True})
    assert created.status_code == 201, created.get_data(as_text=True)
    patient_id = created.get_json()["id"]
    updated = client.put(f"/fhir/Patient/{patient_id}",
                         json={"resourceType": "Patient", "id": patient_id, "active": False})
    assert updated.status_code == 200, updated.get_data(as_text=True)

    deadline = time.monotonic() + 10  # the drain runs on a background thread after each commit
    def drained() -> bool:
        with engine.connect() as connection:
            return len(seen) >= 2 and pending(connection) == 0

    while not drained() and time.monotonic() < deadline:
        time.sleep(0.02)
    # (each write also created its Provenance: fhir_server/audit/provenance.py)
    assert [(e.res_id, e.version_id, e.event) for e in seen if e.res_type == "Patient"] == [
        (patient_id, 1, "create"), (patient_id, 2, "update")]
    assert len(visible_at_drain) == len(seen) and all(visible_at_drain)
    with engine.connect() as connection:
        assert pending(connection) == 0


def test_the_worker_knows_every_task() -> None:
    worker.celery.loader.import_default_modules()
    assert {"fhir_server.drain_outbox", "mappings.import_agency_data"} <= set(worker.celery.tasks)


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no Redis here"
        service_unavailable(f"Redis is not reachable at {REDIS_URL}: {exc.__class__.__name__}")


def test_a_celery_worker_drains_the_outbox_through_redis(tmp_path: Path) -> None:
    """End to end: broker, a real ``celery -A fhir_server.worker worker`` process, SQLite file."""
    _redis_or_skip()
    import redis
    from celery import Celery

    database_url = f"sqlite:///{tmp_path / 'worker.db'}"
    engine = make_engine(database_url)
    create_schema(engine)
    with engine.begin() as connection:
        add_events(connection, 3)

    queue = f"fhir-test-{uuid.uuid4().hex[:8]}"  # parallel runs must not take each other's tasks
    env = {**os.environ, "FHIR_BROKER_URL": REDIS_URL, "FHIR_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "fhir_server.worker", "worker", "--pool", "solo", "-Q", queue,
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sender = Celery(broker=REDIS_URL, set_as_current=False)
    try:
        sender.send_task("fhir_server.drain_outbox", queue=queue)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            with engine.connect() as connection:
                if pending(connection) == 0:
                    break
            time.sleep(0.2)
        with engine.connect() as connection:
            left = pending(connection)
    finally:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        sender.close()
        redis.Redis.from_url(REDIS_URL).delete(queue)
        engine.dispose()
    assert left == 0, f"the worker left {left} events pending; its output:\n{output}"


def test_after_a_failed_send_writes_stop_waiting_on_the_broker_for_a_while() -> None:
    """A send to a dead broker costs the committing request ~0.6 s; after one fails, the next sends
    within ``pause`` are skipped (the rows stay pending: any later drain takes them all), then tried again."""
    now = [100.0]
    tried: list[float] = []
    broker_up = [False]

    def send() -> None:
        tried.append(now[0])
        if not broker_up[0]:
            raise ConnectionRefusedError("broker down")

    sender = worker.DrainSender(send, pause=5.0, clock=lambda: now[0])
    sender()  # fails: the request that committed does not see it
    for step in (1.0, 2.0, 4.9):
        now[0] = 100.0 + step
        sender()
    assert tried == [100.0]
    now[0] = 105.0
    sender()  # tried again after the pause; still down: another pause
    now[0] = 106.0
    broker_up[0] = True
    sender()
    assert tried == [100.0, 105.0]
    now[0] = 110.0
    sender()
    sender()  # the broker is back: every commit sends again
    assert tried == [100.0, 105.0, 110.0, 110.0]


def test_a_worker_reconnects_to_its_broker_for_as_long_as_it_is_away() -> None:
    """Celery's default gives up after 100 reconnection attempts (about 45 minutes) and the worker
    exits, leaving every event undelivered until someone restarts it; ours retries forever. And the
    beat's outbox sweep period is the setting's."""
    from fhir_server.config import Settings

    app = worker.make_celery(Settings(broker_url="redis://127.0.0.1:1/0", outbox_sweep_seconds=7.0))
    assert app.conf.broker_connection_max_retries is None
    assert app.conf.beat_schedule["sweep-outbox"]["schedule"] == 7.0
