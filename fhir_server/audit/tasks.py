"""Celery task sealing the audit trail on a schedule (``celery -A fhir_server.worker worker --beat``).

Sealing is not done by the outbox drain (it would serialise the drains behind its lock and delay
every notification): this beat entry runs it every :data:`~.chain.SEAL_SECONDS`, so a row waits at
most about that long before its hash is in the chain. Without a broker the local beat runs the same
job (:func:`fhir_server.audit.install`). An auditor's read of the trail seals first anyway.
"""
from __future__ import annotations

from typing import Any

from ..worker import celery
from .chain import SEAL_SECONDS

_recorder: Any = None

celery.conf.beat_schedule["seal-audit"] = {"task": "fhir_server.seal_audit", "schedule": SEAL_SECONDS}


@celery.task(name="fhir_server.seal_audit")
def seal_audit() -> int:
    """Seal every committed, unsealed AuditEvent. Idempotent and safe to run on several workers at
    once: a run that finds another sealer holding the lock returns 0 instead of waiting."""
    global _recorder
    if _recorder is None:
        from .. import build_services
        _recorder = build_services().audit
    return _recorder.seal_pending(wait=False) if _recorder is not None else 0
