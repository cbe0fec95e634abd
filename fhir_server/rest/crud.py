"""Instance and type interactions: create, read, vread, update, patch, delete and their
conditional forms (http.html#create … #patch, #cond-update, #cdelete)."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import jsonpatch

from ..errors import BadRequest, Hidden, Issue, NotFound, PreconditionFailed, Unprocessable, UnsupportedMediaType, operation_outcome
from ..fhir.instants import parse_http_date
from ..fhir.validation import check_id, validate_resource
from ..repository.sql import UnitOfWork, WriteResult
from ..search.summary import apply_summary, load_summary_elements
from .fhirpath_patch import apply_fhirpath_patch
from .headers import prefer, stored_headers, version_from_etag, write_response
from .messages import FhirRequest, FhirResponse

CONDITIONAL_ONLY = {"_format", "_pretty"}


def create(uow: UnitOfWork, req: FhirRequest, res_type: str) -> FhirResponse:
    """http.html#create; with ``If-None-Exist`` a conditional create (http.html#ccreate)."""
    body = validate_resource(req.body, expected_type=res_type)
    condition = req.header("if-none-exist")
    if condition:
        criteria = _criteria(condition.split("?", 1)[-1], "If-None-Exist")
        ids = uow.find(res_type, criteria)
        if len(ids) > 1:
            raise PreconditionFailed(f"If-None-Exist matched {len(ids)} resources", expression="If-None-Exist")
        if ids:
            return write_response(req, uow.read(res_type, ids[0]), 200,
                                  message=f"{res_type}/{ids[0]} already exists (If-None-Exist)")
    stored = uow.create(req.ctx, body)
    return write_response(req, stored, 201, message=f"Created {stored.reference}")


def read(uow: UnitOfWork, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    """http.html#read with conditional read (``If-None-Match``, ``If-Modified-Since`` → 304)."""
    check_id(res_id)
    wanted = req.header("if-none-match")
    # (a conditional read may answer 304 without the resource: then it has not disclosed it)
    stored = uow.read(res_type, res_id, disclose=not (wanted or req.header("if-modified-since")))
    headers = stored_headers(stored)
    if wanted and version_from_etag(wanted, "If-None-Match") == stored.version_id:
        return FhirResponse(304, None, headers)
    since = parse_http_date(req.header("if-modified-since") or "")
    if since is not None and stored.last_updated.replace(microsecond=0) <= since:
        return FhirResponse(304, None, headers)
    return FhirResponse(200, _summarised(uow, req, stored.content), headers)


def vread(uow: UnitOfWork, req: FhirRequest, res_type: str, res_id: str, version: str) -> FhirResponse:
    check_id(res_id)
    stored = uow.vread(res_type, res_id, version)
    return FhirResponse(200, _summarised(uow, req, stored.content), stored_headers(stored))


def update(uow: UnitOfWork, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    """http.html#update (update-as-create when the id is new; ``If-Match`` → 412 when stale)."""
    check_id(res_id)
    body = validate_resource(req.body, expected_type=res_type, expected_id=res_id)
    result = uow.update(req.ctx, res_type, res_id, body, if_match=version_from_etag(req.header("if-match")))
    return write_response(req, result.stored, 201 if result.created else 200,
                          message=f"{_verb(result)} {result.stored.reference}")


def conditional_update(uow: UnitOfWork, req: FhirRequest, res_type: str) -> FhirResponse:
    """http.html#cond-update: no match → create; one match → update it; several → 412."""
    criteria = _criteria_from_query(req)
    body = validate_resource(req.body, expected_type=res_type)
    ids = uow.find(res_type, criteria)
    if len(ids) > 1:
        raise PreconditionFailed(f"The criteria matched {len(ids)} resources; refine them")
    if not ids:
        if body.get("id") is not None:
            check_id(body["id"])
            if uow.exists(res_type, body["id"]):
                raise BadRequest(f"{res_type}/{body['id']} exists but does not match the criteria",
                                 expression=f"{res_type}.id")
            # one the caller may not see is not updated either: the repository answers as for an unknown id
            result = uow.update(req.ctx, res_type, body["id"], body, create_only=True)
            return write_response(req, result.stored, 201, message=f"Created {result.stored.reference}")
        stored = uow.create(req.ctx, body)
        return write_response(req, stored, 201, message=f"Created {stored.reference}")
    target = ids[0]
    if body.get("id") not in (None, target):
        raise BadRequest(f"Body id {body['id']!r} differs from the matched resource {target!r}",
                         expression=f"{res_type}.id")
    body = {**body, "id": target}
    result = uow.update(req.ctx, res_type, target, body, if_match=version_from_etag(req.header("if-match")))
    return write_response(req, result.stored, 200, message=f"{_verb(result)} {result.stored.reference}")


def delete(uow: UnitOfWork, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    """http.html#delete: 204; deleting something absent or already deleted is also 204."""
    check_id(res_id)
    try:
        stored = uow.delete(req.ctx, res_type, res_id, if_match=version_from_etag(req.header("if-match")))
    except Hidden:  # not the caller's to see (nothing was written): as the delete of something absent
        stored = None
    return _deleted(req, stored.etag if stored else None, f"{res_type}/{res_id}")


def conditional_delete(uow: UnitOfWork, req: FhirRequest, res_type: str) -> FhirResponse:
    """http.html#cdelete (single): zero matches → 204, one → deleted, several → 412."""
    criteria = _criteria_from_query(req)
    ids = uow.find(res_type, criteria)
    if len(ids) > 1:
        raise PreconditionFailed(f"The criteria matched {len(ids)} resources; this server deletes one at a time")
    if not ids:
        return _deleted(req, None, res_type)
    stored = uow.delete(req.ctx, res_type, ids[0])
    return _deleted(req, stored.etag if stored else None, f"{res_type}/{ids[0]}")


def patch(uow: UnitOfWork, req: FhirRequest, res_type: str, res_id: str) -> FhirResponse:
    """http.html#patch with JSON Patch (RFC 6902, ``application/json-patch+json``) or FHIRPath
    Patch (fhirpatch.html, a Parameters resource in ``application/fhir+json``)."""
    check_id(res_id)
    current = uow.read(res_type, res_id)
    if_match = version_from_etag(req.header("if-match"))
    if if_match is not None and if_match != current.version_id:
        raise PreconditionFailed(f"{res_type}/{res_id} is at version {current.version_id}, not {if_match}",
                                 expression="If-Match")
    patched = _patched(req, current.content)
    if not isinstance(patched, dict) or patched.get("resourceType") != res_type or patched.get("id") != res_id:
        raise Unprocessable("A patch may not change resourceType or id")
    body = validate_resource(patched, expected_type=res_type, expected_id=res_id)
    result = uow.update(req.ctx, res_type, res_id, body, if_match=current.version_id, method="PATCH")
    return write_response(req, result.stored, 200, message=f"Patched {result.stored.reference}")


def _patched(req: FhirRequest, content: dict[str, Any] | None) -> Any:
    if req.content_type == "application/json-patch+json":
        if not isinstance(req.body, list):
            raise BadRequest("A JSON Patch document is a JSON array of operations")
        try:
            return jsonpatch.JsonPatch(req.body).apply(content)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
            raise Unprocessable(f"The patch cannot be applied: {exc}") from None
    if req.content_type == "application/fhir+json":
        return apply_fhirpath_patch(content or {}, req.body)
    raise UnsupportedMediaType("PATCH takes application/json-patch+json (JSON Patch) or "
                               "application/fhir+json (FHIRPath Patch Parameters)", expression="Content-Type")


def conditional_patch(uow: UnitOfWork, req: FhirRequest, res_type: str) -> FhirResponse:
    ids = uow.find(res_type, _criteria_from_query(req))
    if not ids:
        raise NotFound("No resource matches the conditional patch criteria")
    if len(ids) > 1:
        raise PreconditionFailed(f"The criteria matched {len(ids)} resources")
    return patch(uow, req, res_type, ids[0])


def _verb(result: WriteResult) -> str:
    return "Created" if result.created else ("Updated" if result.changed else "No change")


def _deleted(req: FhirRequest, etag: str | None, what: str) -> FhirResponse:
    headers = {"ETag": etag} if etag else {}
    if prefer(req, "return") == "OperationOutcome":
        return FhirResponse(200, operation_outcome([Issue("information", "informational", f"Deleted {what}")]),
                            headers)
    return FhirResponse(204, None, headers)


def _summarised(uow: UnitOfWork, req: FhirRequest, content: dict[str, Any] | None) -> dict[str, Any] | None:
    summary = req.param("_summary")
    elements = req.param("_elements")
    if content is None or (summary is None and elements is None):
        return content
    table = load_summary_elements(uow.repo.settings.profiles_dir)
    return apply_summary(content, summary, elements.split(",") if elements else None, table)


def _criteria_from_query(req: FhirRequest) -> list[tuple[str, str]]:
    criteria = [(k, v) for k, v in req.query if k not in CONDITIONAL_ONLY]
    if not criteria:
        raise PreconditionFailed("A conditional interaction needs search criteria in the URL")
    return criteria


def _criteria(query: str, header: str) -> list[tuple[str, str]]:
    criteria = parse_qsl(query, keep_blank_values=True)
    if not criteria:
        raise BadRequest(f"{header} must hold search parameters such as identifier=system|value",
                         expression=header)
    return criteria
