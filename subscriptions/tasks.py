"""Celery tasks of subscription delivery (used when ``FHIR_BROKER_URL`` is set).

``subscriptions.deliver`` carries only (subscription id, event number) and re-reads everything; the
job that attempted a delivery and failed retries itself after the backoff the database recorded
(capped exponential, over hours), the others return. ``subscriptions.sweep`` (Celery beat) re-sends
a job for every subscription with work left, which covers jobs lost with a killed worker or a broker
that was down.
"""
from __future__ import annotations

from typing import Any

from fhir_server.worker import celery

from . import runtime


@celery.task(name="subscriptions.deliver", bind=True, acks_late=True, max_retries=None)
def deliver(self: Any, sub_id: str, number: int | None = None) -> str:
    outcome = runtime.deliverer().run(sub_id)
    if outcome.kind == "failed" and outcome.retry_in is not None and not self.request.is_eager:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.kind


@celery.task(name="subscriptions.sweep", acks_late=True)
def sweep() -> int:
    return runtime.dispatcher().sweep()


def _register_outbox_hooks() -> None:
    # A worker drains the outbox without ever calling build_services: register here, at import
    # (the worker imports every module of fhir_server.worker.TASK_MODULES at start-up).
    from fhir_server.worker import register_after_drain, register_consumer

    register_consumer(runtime.consume)
    register_after_drain(runtime.after_drain)


_register_outbox_hooks()
