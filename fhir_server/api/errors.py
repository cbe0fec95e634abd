"""The one place that maps exceptions to HTTP statuses and OperationOutcomes."""
from __future__ import annotations

import logging

from flask import Flask, Response
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from ..errors import FhirError, Issue, operation_outcome
from ..fhir import jsonio
from .negotiation import FHIR_JSON

log = logging.getLogger(__name__)

# SQLSTATEs of a database that cannot take the request now, though nothing is wrong with it: too many
# connections, starting up or shutting down, and the connection exception class (08…).
UNAVAILABLE_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006"})
UNAVAILABLE_RETRY_AFTER = 5


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (refused, full, restarting) rather
    than that the request or the code was wrong: a transient 503, not a 500."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", "")
    # psycopg: a connection attempt that failed before the server answered has no SQLSTATE
    return sqlstate in UNAVAILABLE_SQLSTATES or (sqlstate is None and type(orig).__name__ == "OperationalError")


def outcome_response(status: int, outcome: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonio.dumps(outcome), status=status, headers=headers, content_type=FHIR_JSON)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(FhirError)
    def _fhir_error(exc: FhirError) -> Response:
        retry_after = getattr(exc, "retry_after", None)
        return outcome_response(exc.status, exc.outcome(),
                                {"Retry-After": str(retry_after)} if retry_after is not None else None)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported", 413: "too-costly"}.get(exc.code or 500, "processing")
        return outcome_response(exc.code or 500, operation_outcome(
            [Issue("error", code, exc.description or exc.name)]))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if database_unavailable(exc):
            log.warning("The database is unavailable: %s", exc)
            return outcome_response(503, operation_outcome(
                [Issue("error", "transient", "The database is unavailable; try again shortly")]),
                {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})
        log.exception("Unhandled error")
        return outcome_response(500, operation_outcome(
            [Issue("fatal", "exception", "Internal server error; the request was not completed")]))
