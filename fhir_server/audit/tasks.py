"""Celery task sealing the audit trail on a schedule (``celery -A fhir_server.worker worker --beat``).

Reads write no outbox row, so a server answering only reads would otherwise seal its AuditEvents
only when an auditor asks (an AuditEvent search seals first). The beat runs this every
:data:`SEAL_SECONDS`, so a row waits at most that long before its hash is in the chain.
"""
from __future__ import annotations

from typing import Any

from ..worker import celery

SEAL_SECONDS = 10.0
_recorder: Any = None

celery.conf.beat_schedule["seal-audit"] = {"task": "fhir_server.seal_audit", "schedule": SEAL_SECONDS}


@celery.task(name="fhir_server.seal_audit")
def seal_audit() -> int:
    """Seal every committed, unsealed AuditEvent (idempotent: sealing is serialised by a lock)."""
    global _recorder
    if _recorder is None:
        from .. import build_services
        _recorder = build_services().audit
    return _recorder.seal_pending() if _recorder is not None else 0
