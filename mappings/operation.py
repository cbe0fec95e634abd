"""``POST [base]/$import-agency-data``: an agency's export file(s) in, FHIR out.

Parameters (URL or multipart form fields): ``format`` (required; see mappings/formats.py),
``lenient`` (``true``: load the valid records and report the rest; default: any error rejects the
whole file and nothing is written), ``collection-year`` (``ssda903-csv`` only: the year to 31 March
the return is for, e.g. ``2024``; without it the year is inferred from the files' latest date and an
``information`` issue says so; :mod:`mappings.collection_year`). The files come as multipart/form-data
parts or as a raw body (``text/csv``, ``application/xml``, ``application/octet-stream``; a FHIR Bundle as
``application/fhir+json``).

Without ``Prefer: respond-async`` the import runs in the request and the answer is an
OperationOutcome summarising it (200; 422 when the file was rejected). With it, the request is
stored as a job and answered 202 with a status URL (async.html); a Celery worker runs it when a
broker is configured, otherwise a thread of this process.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_server import jobs
from fhir_server.errors import BadRequest, Unprocessable
from fhir_server.fhir import jsonio
from fhir_server.operations.registry import OperationTarget
from fhir_server.repository.context import RequestContext
from fhir_server.rest.headers import prefer
from fhir_server.rest.messages import FhirRequest, FhirResponse

from . import collection_year as years
from .core import SourceFile
from .dates import today_uk
from .formats import available, mapper
from .loader import ImportSummary, import_file

if TYPE_CHECKING:
    from fhir_server import Services

DEFINITION = "import-agency-data.json"
JOB_KIND = "import-agency-data"


def register_import_operation(services: "Services") -> None:
    path = services.settings.profiles_dir / "operations" / DEFINITION
    definition = json.loads(Path(path).read_text(encoding="utf-8"))
    services.router.operations.register(definition, make_handler(services), own_transaction=True)


def make_handler(services: "Services"):
    def handle(_uow: Any, req: FhirRequest, _target: OperationTarget) -> FhirResponse:
        if req.method != "POST":
            raise BadRequest("$import-agency-data is invoked with POST")
        fmt, lenient, year = _parameters(req)
        files = _files(req)
        if prefer(req, "respond-async") is not None or "respond-async" in (req.header("prefer") or ""):
            with services.engine.begin() as conn:
                job_id = jobs.create_job(conn, JOB_KIND, {"format": fmt, "lenient": lenient, "collection_year": year},
                                         files, client_id=req.ctx.client_id)
            dispatch(services, job_id)
            return jobs.kickoff_response(req.ctx.base_url, job_id)
        return run_import(services, req.ctx, fmt, files, lenient=lenient, collection_year=year)

    return handle


def run_import(services: "Services", ctx: RequestContext, fmt: str, files: list[tuple[str, bytes]],
               *, lenient: bool, collection_year: int | None = None, progress: Any = None) -> FhirResponse:
    """Map and load; 200 with the summary, or 422 when the file was rejected (nothing written)."""
    summaries = import_files(services, ctx, fmt, files, lenient=lenient, collection_year=collection_year,
                             progress=progress)
    issues = [issue for s in summaries for issue in s.outcome()["issue"]]
    outcome = {"resourceType": "OperationOutcome", "issue": issues}
    return FhirResponse(200 if all(s.written for s in summaries) else 422, outcome)


def import_files(services: "Services", ctx: RequestContext, fmt: str, files: list[tuple[str, bytes]],
                 *, lenient: bool, collection_year: int | None = None,
                 progress: Any = None) -> list[ImportSummary]:
    """``collection_year``: checked by the caller (:func:`mappings.collection_year.parse`,
    ``check_format``); only a format that takes one is given it."""
    sources = [SourceFile(name, content) for name, content in files]
    if progress:
        progress(f"mapping {len(sources)} file(s)")
    stated = {} if collection_year is None else {"collection_year": collection_year}
    agency, result = mapper(fmt)(sources, **stated)
    name = ", ".join(s.name for s in sources)
    if agency is None:
        summary = ImportSummary(name, fmt, result.records, result.records, 0,
                                issues=[i.to_issue() for i in result.issues])
        return [summary]
    if progress:
        progress(f"loading {len(result.upserts)} resources from {result.records} records")
    combined = SourceFile(name, b"".join(s.content for s in sources))
    return [import_file(services.router, ctx, result, agency, combined, fmt, lenient=lenient)]


def dispatch(services: "Services", job_id: str) -> None:
    """Hand a committed job to a Celery worker, or to a thread when no broker is configured."""
    if services.settings.broker_url:
        from .tasks import import_agency_data
        import_agency_data.delay(job_id)
    else:
        jobs.run_in_background(services.engine, job_id, job_runner(services))


def job_runner(services: "Services"):
    def work(job: jobs.Job, files: list[tuple[str, bytes]]) -> FhirResponse:
        # The client was authorised when it started the job; the job runs on its behalf.
        ctx = RequestContext.system(services.settings.base_url, client_id=job.client_id or "system")
        return run_import(services, ctx, job.request["format"], files, lenient=bool(job.request.get("lenient")),
                          collection_year=job.request.get("collection_year"),
                          progress=lambda text: jobs.set_progress(services.engine, job.id, text))

    return work


def _parameters(req: FhirRequest) -> tuple[str, bool, int | None]:
    fmt = req.param("format")
    if isinstance(req.body, dict) and req.body.get("resourceType") == "Parameters":
        for p in req.body.get("parameter", []):
            if p.get("name") == "format":
                fmt = p.get("valueCode") or p.get("valueString")
    if not fmt:
        raise BadRequest(f"The format parameter is required; one of {', '.join(available())}",
                         expression="format")
    if fmt not in available():
        raise BadRequest(f"Unknown format {fmt!r}; one of {', '.join(available())}", expression="format")
    lenient = (req.param("lenient") or "false").lower()
    if lenient not in ("true", "false"):
        raise BadRequest("lenient must be true or false", expression="lenient")
    return fmt, lenient == "true", _collection_year(req, fmt)


def _collection_year(req: FhirRequest, fmt: str) -> int | None:
    """The ``collection-year`` parameter: None when absent; 400 (nothing read or written) when it is
    not a plausible year or the format has none a caller may state."""
    try:
        return years.stated(fmt, req.param(years.PARAMETER), today_uk())
    except ValueError as exc:
        raise BadRequest(str(exc), expression=years.PARAMETER) from None


def _files(req: FhirRequest) -> list[tuple[str, bytes]]:
    if req.files:
        return req.files
    if isinstance(req.body, dict) and req.body.get("resourceType") == "Bundle":
        return [(req.param("filename") or "bundle.json", jsonio.dumps(req.body).encode())]
    raise Unprocessable("No file was sent: attach the agency file(s) as multipart/form-data parts or as the "
                        "request body (text/csv, application/xml, application/octet-stream)")
