"""Celery side of triage: imported by a worker at start-up (``fhir_server.worker.TASK_MODULES``).

* The outbox consumers (record linkage, then rescoring on write) are registered by ``build_services``,
  which a worker would otherwise only call when it first runs an import job — so a worker started
  before any import would drain the outbox without rescoring.
* ``triage.recompute``: the periodic recompute (``FHIR_RISK_RECOMPUTE_SECONDS``, daily by default),
  an entry of the Celery beat schedule as the audit trail's sealing is (fhir_server/audit/tasks.py).
  Without a broker the web process's local beat runs the same function (``register_triage``).
"""
from __future__ import annotations

from typing import Any

from celery.signals import worker_init

from fhir_server.worker import celery, settings

_services: Any = None

if settings.risk_recompute_seconds > 0:
    celery.conf.beat_schedule["risk-recompute"] = {"task": "triage.recompute",
                                                   "schedule": settings.risk_recompute_seconds}


def _built() -> Any:
    global _services
    if _services is None:
        from fhir_server import build_services
        _services = build_services()
    return _services


@worker_init.connect
def _register_consumers(**_: Any) -> None:
    # in the parent, before the pool forks: the children inherit the registered consumers
    _built()


@celery.task(name="triage.recompute", acks_late=True)
def recompute() -> int:
    """Rescore every child (idempotent; see triage.recompute.scheduled_recompute). Returns how many changed."""
    from .recompute import scheduled_recompute

    stats = scheduled_recompute(_built().repo)
    return stats.changed if stats is not None else 0
