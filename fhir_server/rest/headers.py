"""Parsing of the HTTP headers FHIR gives meaning to (http.html#concurrency, #cond-read, Prefer)."""
from __future__ import annotations

import re
from typing import Any

from ..errors import BadRequest, operation_outcome, Issue
from ..fhir.instants import format_instant, http_date
from ..repository.sql import Stored
from .messages import FhirRequest, FhirResponse

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]+)"?\s*$')


def version_from_etag(value: str | None, header: str = "If-Match") -> int | None:
    """``W/"3"`` → 3. A malformed value is a client error, not a silent mismatch."""
    if value is None or value.strip() == "":
        return None
    match = _ETAG.match(value)
    if not match:
        raise BadRequest(f"{header} must be a weak ETag such as W/\"3\", not {value!r}", expression=header)
    return int(match.group(1))


def prefer(req: FhirRequest, key: str) -> str | None:
    """A token of the ``Prefer`` header (RFC 7240): ``return=minimal`` → prefer(req, "return")."""
    raw = req.header("prefer")
    if not raw:
        return None
    for part in re.split(r"[,;]", raw):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == key:
            return value.strip().strip('"')
    return None


def is_strict(req: FhirRequest) -> bool:
    return prefer(req, "handling") == "strict"


def stored_headers(stored: Stored) -> dict[str, str]:
    return {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated)}


def write_response(req: FhirRequest, stored: Stored, status: int, *, message: str) -> FhirResponse:
    """The answer to a create/update/patch (http.html#ops): Location, ETag, Last-Modified and a
    body chosen by ``Prefer: return=minimal|representation|OperationOutcome``."""
    location = f"{req.ctx.base_url}/{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"
    headers = stored_headers(stored)
    headers["Location"] = location
    wanted = prefer(req, "return") or "representation"
    body: dict[str, Any] | None
    if wanted == "minimal":
        body = None
    elif wanted == "OperationOutcome":
        body = operation_outcome([Issue("information", "informational", message)])
    else:
        body = stored.content
    return FhirResponse(status=status, resource=body, headers=headers, location=location,
                        etag=stored.etag, last_modified=format_instant(stored.last_updated))
