"""The FHIR asynchronous request pattern (async.html, rfc 7240 ``Prefer: respond-async``).

A long request is stored as an ``async_job`` row (with its input files) and answered ``202 Accepted``
with ``Content-Location: [base]/_async/[id]``. Polling that URL answers 202 (with ``X-Progress``) while
the job runs, and once it has finished, 200 with a ``batch-response`` Bundle holding the operation's
own response (the shape R5 gave the pattern). ``DELETE`` on it cancels a job that has not started.

The job row is the source of truth, so any process may run it: a Celery worker when a broker is
configured, otherwise a thread of the web process (``run_in_background``).
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, delete, insert, select, update

from .errors import FhirError, Gone, Issue, NotFound, operation_outcome
from .fhir.instants import utcnow
from .rest.messages import FhirRequest, FhirResponse
from .storage.db import write_retrying
from .storage.tables import async_job, async_job_input

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCK_WAIT = 30 * 60.0  # seconds a job's state update waits, in all, for SQLite's write lock

STATUS_LINE = {200: "200 OK", 201: "201 Created", 400: "400 Bad Request", 422: "422 Unprocessable Entity",
               500: "500 Internal Server Error"}


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    status: str
    request: dict[str, Any]
    client_id: str | None
    progress: str | None
    result_status: int | None
    result: dict[str, Any] | None


def create_job(conn: Connection, kind: str, request: dict[str, Any], files: list[tuple[str, bytes]],
               *, client_id: str | None) -> str:
    job_id = uuid.uuid4().hex
    now = utcnow()
    conn.execute(insert(async_job).values(id=job_id, kind=kind, status="accepted", created=now, updated=now,
                                          client_id=client_id, request=request))
    if files:
        conn.execute(insert(async_job_input), [
            {"job_id": job_id, "ordinal": i, "name": name, "content": content}
            for i, (name, content) in enumerate(files)])
    return job_id


def get_job(conn: Connection, job_id: str) -> Job | None:
    row = conn.execute(select(async_job).where(async_job.c.id == job_id)).first()
    if row is None:
        return None
    return Job(row.id, row.kind, row.status, row.request, row.client_id, row.progress, row.result_status,
               row.result)


def job_inputs(conn: Connection, job_id: str) -> list[tuple[str, bytes]]:
    rows = conn.execute(select(async_job_input.c.name, async_job_input.c.content)
                        .where(async_job_input.c.job_id == job_id).order_by(async_job_input.c.ordinal))
    return [(name, bytes(content)) for name, content in rows]


def _write(engine: Engine, work: Callable[[Connection], T]) -> T:
    """One short write of the job's state, which must not be lost because another writer (an import)
    holds the embedded database's lock: run again, whole, until it gets its turn (storage/db.py)."""
    return write_retrying(engine, work, within=LOCK_WAIT)


def claim(engine: Engine, job_id: str) -> Job | None:
    """Move an accepted job to in-progress; None if another runner has it or it was cancelled."""
    def work(conn: Connection) -> Job | None:
        done = conn.execute(update(async_job).where(async_job.c.id == job_id, async_job.c.status == "accepted")
                            .values(status="in-progress", updated=utcnow()))
        return get_job(conn, job_id) if done.rowcount == 1 else None

    return _write(engine, work)


def set_progress(engine: Engine, job_id: str, progress: str) -> None:
    _write(engine, lambda conn: conn.execute(update(async_job).where(async_job.c.id == job_id)
                                             .values(progress=progress[:255], updated=utcnow())))


def finish(engine: Engine, job_id: str, status: int, body: dict[str, Any]) -> None:
    """Record the response; the inputs are no longer needed and are dropped."""
    def work(conn: Connection) -> None:
        conn.execute(update(async_job).where(async_job.c.id == job_id).values(
            status="completed" if status < 400 else "failed", result_status=status, result=body,
            updated=utcnow()))
        conn.execute(delete(async_job_input).where(async_job_input.c.job_id == job_id))

    _write(engine, work)


def run(engine: Engine, job_id: str, work: Callable[[Job, list[tuple[str, bytes]]], FhirResponse]) -> None:
    """Claim and run one job, recording its response, whatever happens."""
    job = claim(engine, job_id)
    if job is None:
        return
    with engine.connect() as conn:
        files = job_inputs(conn, job_id)
    try:
        response = work(job, files)
        finish(engine, job_id, response.status, response.resource or {})
    except FhirError as exc:
        finish(engine, job_id, exc.status, exc.outcome())
    except Exception:  # noqa: BLE001 - a job must end in a recorded state
        log.exception("Async job %s failed", job_id)
        finish(engine, job_id, 500, operation_outcome(
            [Issue("fatal", "exception", "Internal error; the job did not complete")]))


def run_in_background(engine: Engine, job_id: str,
                      work: Callable[[Job, list[tuple[str, bytes]]], FhirResponse]) -> None:
    """No broker configured: run the job in a thread of this process."""
    threading.Thread(target=run, args=(engine, job_id, work), name=f"job-{job_id}", daemon=True).start()


def kickoff_response(base_url: str, job_id: str) -> FhirResponse:
    """202 Accepted with the status URL (async.html#kickoff)."""
    location = f"{base_url}/_async/{job_id}"
    return FhirResponse(202, operation_outcome([Issue("information", "informational",
                                                       f"Accepted; poll {location} for the result")]),
                        {"Content-Location": location})


def status(conn: Connection, req: FhirRequest, job_id: str) -> FhirResponse:
    """GET polls (async.html#status); DELETE cancels (async.html#delete)."""
    job = get_job(conn, job_id)
    # Only the client that started a job may see or cancel it; to anyone else it does not exist.
    if job is None or (req.ctx.authenticated and job.client_id not in (None, req.ctx.client_id)):
        raise NotFound(f"No asynchronous request {job_id}")
    if req.method == "DELETE":
        if job.status in ("accepted", "in-progress"):
            conn.execute(update(async_job).where(async_job.c.id == job_id, async_job.c.status == "accepted")
                         .values(status="cancelled", updated=utcnow()))
        return FhirResponse(202, None)
    if job.status == "cancelled":
        raise Gone(f"Asynchronous request {job_id} was cancelled")
    if job.status in ("accepted", "in-progress"):
        return FhirResponse(202, None, {"X-Progress": job.progress or job.status, "Retry-After": "2"})
    assert job.result_status is not None
    entry = {"response": {"status": STATUS_LINE.get(job.result_status, str(job.result_status))}}
    if job.result and job.result.get("resourceType") == "OperationOutcome":
        entry["response"]["outcome"] = job.result
    elif job.result:
        entry["resource"] = job.result
    return FhirResponse(200, {"resourceType": "Bundle", "type": "batch-response", "entry": [entry]})
