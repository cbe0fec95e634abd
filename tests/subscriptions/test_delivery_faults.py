"""Delivery under faults, in one process with real commits: concurrent outbox drains (as several
Celery worker threads run them) keep one resource's changes in order, and the retry schedule of a
failing endpoint is the capped exponential backoff over hours with the Backport IG's
``requested`` → ``active`` → ``error`` → ``active`` lifecycle."""
from __future__ import annotations

import threading
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


def test_a_drain_never_numbers_a_change_before_an_earlier_change_of_the_same_resource_in_another_drain(
        http, receiver, engine, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two drains run side by side (PostgreSQL hands each its own rows with SKIP LOCKED). The first
    holds a Flag's create while the Flag is updated; the second drain gets the update. It must wait
    for the first instead of numbering the update as the Flag's first event: a subscriber would see
    the update before the create."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writer at a time: drains never overlap")
    sub = wait_status(http, create(http, subscription(receiver.url, filters=("Flag?patient=Patient/order-1",)))["id"],
                      "active")
    holding, release = threading.Event(), threading.Event()

    def hold_the_create(conn, events: list[OutboxEvent]) -> None:  # runs before the subscriptions' consumer
        if any(e.res_type == "Flag" and e.event == "create" for e in events):
            holding.set()
            release.wait(timeout=10)

    monkeypatch.setattr(worker, "_consumers", [hold_the_create, *worker._consumers])
    created = create(http, flag("Patient/order-1"))
    assert holding.wait(timeout=20), "the background drain did not take the create"
    updated = http.put(f"/fhir/Flag/{created['id']}", json={**created, "status": "inactive"})
    assert updated.status_code == 200, updated.get_data(as_text=True)

    # a second worker's drain, while the first still holds the create
    second = threading.Thread(target=worker.drain, args=(http.application.extensions["fhir"].engine,))
    second.start()
    second.join(timeout=3)  # without the wait it numbers the update now, as event 1
    release.set()
    second.join(timeout=30)
    assert not second.is_alive()
    worker.wait_for_background_drains()

    assert focus_versions(http, sub["id"]) == [(1, f"Flag/{created['id']}/_history/1"),
                                               (2, f"Flag/{created['id']}/_history/2")]
    receiver.wait_for(lambda r: len(set(r.event_numbers(sub["id"]))) == 2)
    assert list(dict.fromkeys(receiver.event_numbers(sub["id"]))) == [1, 2]
