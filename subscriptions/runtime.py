"""The dispatcher and deliverer of this process, and how a drain finds them.

A drain hands the consumer a connection: the dispatcher registered for that connection's engine
serves it (the web process without a broker drains on the engine ``build_services`` made). A Celery
worker drains on its own engine, so it falls back to a dispatcher over services built for the
worker process itself (as mappings/tasks.py does).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine

from fhir_server.worker import OutboxEvent

if TYPE_CHECKING:
    from fhir_server import Services

    from .delivery import Deliverer
    from .dispatch import Dispatcher

_lock = threading.Lock()
_by_engine: dict[Engine, "Dispatcher"] = {}
_process: "Dispatcher | None" = None


def install(services: "Services") -> "Dispatcher":
    """Make the dispatcher for ``services`` (Celery jobs with a broker, a local thread without)."""
    from fhir_server.worker import celery

    from .delivery import Deliverer
    from .dispatch import CeleryScheduler, Dispatcher, LocalScheduler

    if celery.conf.task_always_eager:
        from fhir_server.periodic import local_beat

        dispatcher = Dispatcher(services, LocalScheduler(lambda: Deliverer(services)))
        # the same period as the Celery beat entry "sweep-subscriptions" (fhir_server/worker.py)
        local_beat.every(_sweep_job(services.engine), services.settings.subscription_sweep_seconds, dispatcher.sweep,
                         owner=services.engine)
    else:
        dispatcher = Dispatcher(services, CeleryScheduler())
    with _lock:
        _by_engine[services.engine] = dispatcher
    return dispatcher


def _sweep_job(engine: Engine) -> str:
    return f"subscriptions-sweep-{id(engine):x}"


def dispatcher_for(engine: Engine) -> "Dispatcher | None":
    """The dispatcher serving drains on ``engine``: the one installed for it; in a Celery worker
    (broker configured) the worker's own; otherwise none (a drain this process's server did not
    start, e.g. a benchmark's, has no subscriptions to serve)."""
    from fhir_server.worker import celery

    with _lock:
        found = _by_engine.get(engine)
    if found is not None or celery.conf.task_always_eager:
        return found
    return dispatcher()


def dispatcher() -> "Dispatcher":
    """This process's own dispatcher (a Celery worker's), built on first use."""
    global _process
    with _lock:
        if _process is not None:
            return _process
    from fhir_server import build_services
    services = build_services()
    made = dispatcher_for_services(services)
    with _lock:
        _process = made
    return made


def dispatcher_for_services(services: "Services") -> "Dispatcher":
    with _lock:
        found = _by_engine.get(services.engine)
    return found if found is not None else install(services)


def deliverer() -> "Deliverer":
    from .delivery import Deliverer
    return Deliverer(dispatcher().services)


# -- the outbox hooks (registered once per process) -----------------------------------------------

_touched = threading.local()


def consume(conn: Connection, events: list[OutboxEvent]) -> None:
    target = dispatcher_for(conn.engine)
    if target is None:
        return
    target.consume(conn, events)
    touched = getattr(_touched, "set", None)
    if touched is None:
        touched = _touched.set = set()
    touched.add(target)


def after_drain() -> None:
    for target in getattr(_touched, "set", None) or ():
        target.after_drain()
    _touched.set = set()


def uninstall(engine: Engine) -> None:
    """Stop the dispatcher serving ``engine`` (its local delivery thread, if any)."""
    from fhir_server.periodic import local_beat

    local_beat.cancel(_sweep_job(engine))
    with _lock:
        found = _by_engine.pop(engine, None)
    stop = getattr(found.scheduler, "stop", None) if found is not None else None
    if stop is not None:
        stop()
