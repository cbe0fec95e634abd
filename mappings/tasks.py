"""Celery task running ``$import-agency-data`` jobs on a worker (broker configured)."""
from __future__ import annotations

from typing import Any

from fhir_server import jobs
from fhir_server.worker import celery

_services: Any = None


def _get_services() -> Any:
    global _services
    if _services is None:
        from fhir_server import build_services
        _services = build_services()
    return _services


@celery.task(name="mappings.import_agency_data", acks_late=True)
def import_agency_data(job_id: str) -> None:
    """Takes only the job id: the job row holds the request and the files; claiming it is atomic,
    so a redelivered task does nothing."""
    from .operation import job_runner
    services = _get_services()
    jobs.run(services.engine, job_id, job_runner(services))
