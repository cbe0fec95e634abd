"""Delivery under faults, in one process with real commits: concurrent outbox drains (as several
Celery worker threads run them) keep one resource's changes in order, and the retry schedule of a
failing endpoint is the capped exponential backoff over hours with the Backport IG's
``requested`` → ``active`` → ``error`` → ``active`` lifecycle."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from fhir_server import worker
from fhir_server.config import Settings
from fhir_server.fhir.instants import utcnow
from fhir_server.storage.tables import subscription_state
from fhir_server.worker import OutboxEvent
from subscriptions import store
from subscriptions.delivery import ERROR_AFTER, Deliverer

from .conftest import create, flag, subscription, wait_status


def focus_versions(http, sub_id: str) -> list[tuple[int, str]]:
    """(event number, focus reference) of every stored event, from ``$events``."""
    bundle = http.get(f"/fhir/Subscription/{sub_id}/$events?eventsSinceNumber=1").get_json()
    out = []
    for p in bundle["entry"][0]["resource"]["parameter"]:
        if p["name"] == "notification-event":
            parts = {q["name"]: q for q in p["part"]}
            out.append((int(parts["event-number"]["valueString"]),
                        parts["focus"]["valueReference"]["reference"].split("/fhir/", 1)[1]))
    return out


@pytest.mark.parametrize("first_drain", ["commits", "fails"])
def test_a_drain_never_numbers_a_change_before_an_earlier_change_of_the_same_resource_in_another_drain(
        http, receiver, engine, database_url: str, monkeypatch: pytest.MonkeyPatch, first_drain: str) -> None:
    """Two drains run side by side (PostgreSQL hands each its own rows with SKIP LOCKED). The first
    holds a Flag's create while the Flag is updated; the second drain gets the update. It must leave
    the update for later instead of numbering it as the Flag's first event (a subscriber would see
    the update before the create) — whether the first drain then commits, or fails and rolls back
    (handing the create back: the benchmark's deadlocked drains did)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writer at a time: drains never overlap")
    sub = wait_status(http, create(http, subscription(receiver.url, filters=("Flag?patient=Patient/order-1",)))["id"],
                      "active")
    holding, release = threading.Event(), threading.Event()

    def hold_the_create(conn, events: list[OutboxEvent]) -> None:  # runs before the subscriptions' consumer
        if not release.is_set() and any(e.res_type == "Flag" and e.event == "create" for e in events):
            holding.set()
            release.wait(timeout=10)
            if first_drain == "fails":
                raise RuntimeError("this drain fails: its transaction rolls back")

    monkeypatch.setattr(worker, "_consumers", [hold_the_create, *worker._consumers])
    created = create(http, flag("Patient/order-1"))
    assert holding.wait(timeout=20), "the background drain did not take the create"
    updated = http.put(f"/fhir/Flag/{created['id']}", json={**created, "status": "inactive"})
    assert updated.status_code == 200, updated.get_data(as_text=True)

    # a second worker's drain, while the first still holds the create
    second = threading.Thread(target=worker.drain, args=(http.application.extensions["fhir"].engine,))
    second.start()
    second.join(timeout=3)  # without the check it numbers the update now, as event 1
    release.set()
    second.join(timeout=60)
    assert not second.is_alive()
    worker.wait_for_background_drains()
    if first_drain == "fails":
        worker.drain(http.application.extensions["fhir"].engine)  # as the next drain task would

    assert focus_versions(http, sub["id"]) == [(1, f"Flag/{created['id']}/_history/1"),
                                               (2, f"Flag/{created['id']}/_history/2")]
    receiver.wait_for(lambda r: len(set(r.event_numbers(sub["id"]))) == 2)
    assert list(dict.fromkeys(receiver.event_numbers(sub["id"]))) == [1, 2]


@pytest.fixture
def production_backoff_app(engine, settings: Settings):
    """The app with the deployed backoff cap (``subscription_max_backoff``'s default) and a sweep
    that does not run during the test."""
    from .conftest import _running
    yield from _running(engine, settings, subscription_max_backoff=Settings().subscription_max_backoff,
                        subscription_sweep_seconds=3600)


def test_a_failing_endpoint_is_retried_with_exponential_backoff_capped_at_an_hour_and_the_status_follows(
        production_backoff_app, receiver) -> None:
    """Backport IG STU 1.1 "Subscription lifecycle" / R4 subscription.html#status: failed deliveries
    make the Subscription ``error`` with ``Subscription.error`` (and ``$status``'s ``error``) saying
    why; events are still recorded meanwhile; the next success makes it ``active`` again with every
    event delivered in order. The retry schedule doubles from 1 s and is capped at an hour, so the
    attempts go on for hours instead of giving up after a minute. Time is moved on by expiring the
    recorded backoff, as the clock would."""
    from subscriptions import runtime

    http = production_backoff_app.test_client()
    services = production_backoff_app.extensions["fhir"]
    sub_id = wait_status(http, create(http, subscription(receiver.url, filters=("Flag?patient=Patient/retry-1",)))["id"],
                         "active")["id"]
    receiver.failing = True
    for _ in range(2):
        create(http, flag("Patient/retry-1"))
    worker.wait_for_background_drains()

    def state() -> store.State:
        with services.engine.connect() as conn:
            found = store.get(conn, sub_id)
        assert found is not None
        return found

    # the process's own delivery thread makes the first attempt; then it is stopped, so that each
    # attempt below is one this test makes
    deadline = time.monotonic() + 30
    while state().failures == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    scheduler = runtime.dispatcher_for(services.engine).scheduler
    runtime.uninstall(services.engine)
    scheduler.join(timeout=60)
    assert state().pending == 2

    deliverer = Deliverer(services)
    assert deliverer.run(sub_id).kind == "busy"  # the backoff has not expired: no attempt
    waits = []
    first = state().failures
    for failures in range(first + 1, 17):
        with services.engine.begin() as conn:  # the wait recorded by the last failure has passed
            conn.execute(update(subscription_state).where(subscription_state.c.sub_id == sub_id)
                         .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        before = utcnow()
        outcome = deliverer.run(sub_id)
        assert outcome.kind == "failed"
        current = state()
        assert current.failures == failures
        assert outcome.retry_in == min(2 ** (failures - 1), 3600)
        assert current.next_attempt_at is not None
        assert outcome.retry_in - 1 <= (current.next_attempt_at - before).total_seconds() <= outcome.retry_in + 30
        assert "HTTP 500" in (current.last_error or "")
        waits.append(outcome.retry_in)
        if failures >= ERROR_AFTER:
            shown = http.get(f"/fhir/Subscription/{sub_id}").get_json()
            assert shown["status"] == "error"
            assert "HTTP 500" in shown["error"] and "in a row failed" in shown["error"]
        assert deliverer.run(sub_id).kind == "busy"  # and no attempt before the new wait is over
    assert waits[-4:] == [3600.0] * 4  # capped at an hour, and still retrying
    assert sum(waits) > 4 * 3600  # the attempts so far span more than four hours

    status = http.get(f"/fhir/Subscription/{sub_id}/$status").get_json()
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["status"]["valueCode"] == "error"
    assert "HTTP 500" in params["error"]["valueCodeableConcept"]["text"]
    assert params["events-since-subscription-start"]["valueString"] == "2"

    receiver.failing = False
    with services.engine.begin() as conn:
        conn.execute(update(subscription_state).where(subscription_state.c.sub_id == sub_id)
                     .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    assert deliverer.run(sub_id).kind == "sent"
    assert receiver.event_numbers(sub_id) == [1, 2]
    recovered = http.get(f"/fhir/Subscription/{sub_id}").get_json()
    assert recovered["status"] == "active" and "error" not in recovered
    assert (state().failures, state().next_attempt_at, state().pending) == (0, None, 0)
