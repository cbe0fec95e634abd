"""Imported by a Celery worker at start-up (``fhir_server.worker.TASK_MODULES``): the outbox consumers
(record linkage, then rescoring on write) are registered by ``build_services``, which a worker would
otherwise only call when it first runs an import job — so a worker started before any import would
drain the outbox without rescoring."""
from __future__ import annotations

from typing import Any

from celery.signals import worker_init


@worker_init.connect
def _register_consumers(**_: Any) -> None:
    # in the parent, before the pool forks: the children inherit the registered consumers
    from fhir_server import build_services

    build_services()
