"""The one error family. Domain code raises these; exactly one place (api/errors.py) turns them
into an HTTP status and an OperationOutcome. Nothing here knows about Flask.

Issue codes come from http://hl7.org/fhir/R4/valueset-issue-type.html.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # IssueType code: invalid, structure, required, value, not-found, conflict, ...
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_fhir(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


def operation_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    """An OperationOutcome resource holding ``issues`` (R4 operationoutcome.html)."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


class RunAgain(Exception):
    """Not an error of the request: something it relied on changed while it ran (a cached Consent,
    audit/recorder.py). Nothing was answered or written; the Router runs the request once more."""


class FhirError(Exception):
    """Base of the family. ``status`` is read only by the API error handler."""

    status = 500
    code = "exception"

    def __init__(self, diagnostics: str = "", *, expression: str | list[str] | tuple[str, ...] = (),
                 issues: list[Issue] | None = None, severity: str = "error") -> None:
        super().__init__(diagnostics or self.__class__.__name__)
        if issues:
            self.issues = list(issues)
        else:
            expr = (expression,) if isinstance(expression, str) else tuple(expression)
            self.issues = [Issue(severity, self.code, diagnostics, expr)]

    @property
    def diagnostics(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


class BadRequest(FhirError):
    status, code = 400, "invalid"


class Unauthorized(FhirError):
    status, code = 401, "login"


class Forbidden(FhirError):
    status, code = 403, "forbidden"


class NotFound(FhirError):
    status, code = 404, "not-found"


class Hidden(NotFound):
    """A resource the caller may not see, refused exactly as if it did not exist (a read or update
    answers 404; a delete answers as the delete of something absent does)."""


class MethodNotAllowed(FhirError):
    status, code = 405, "not-supported"


class NotAcceptable(FhirError):
    status, code = 406, "not-supported"


class Conflict(FhirError):
    status, code = 409, "conflict"


class Gone(FhirError):
    status, code = 410, "deleted"


class PreconditionFailed(FhirError):
    status, code = 412, "conflict"


class PayloadTooLarge(FhirError):
    status, code = 413, "too-costly"


class UnsupportedMediaType(FhirError):
    status, code = 415, "not-supported"


class Unprocessable(FhirError):
    """Well-formed but invalid content (FHIR validation failure, business rule)."""

    status, code = 422, "processing"


class NotImplementedFeature(FhirError):
    status, code = 501, "not-supported"


class ServiceUnavailable(FhirError):
    """A transient condition (e.g. the Consents kept changing while a request ran): the client may
    try again after ``retry_after`` seconds (RFC 9110 §15.6.4)."""

    status, code = 503, "transient"
    retry_after = 1


class DatabaseBusy(ServiceUnavailable):
    """The embedded (SQLite) database stayed locked by another writer past the busy timeout; the
    transaction was rolled back and may be run again whole (``storage.db.retry_when_busy``)."""
