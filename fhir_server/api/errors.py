"""The one place that maps exceptions to HTTP statuses and OperationOutcomes."""
from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from ..errors import FhirError, Issue, operation_outcome
from ..fhir import jsonio
from .negotiation import FHIR_JSON

log = logging.getLogger(__name__)


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
        log.exception("Unhandled error")
        return outcome_response(500, operation_outcome(
            [Issue("fatal", "exception", "Internal server error; the request was not completed")]))
