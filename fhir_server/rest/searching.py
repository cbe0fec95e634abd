"""Search interactions (http.html#search, search.html): GET and POST ``_search`` at type and
system level, answered with a ``searchset`` Bundle."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from ..errors import BadRequest, UnsupportedMediaType
from ..fhir.validation import check_id
from ..search.compartment import patient_compartment
from ..repository.sql import UnitOfWork
from ..search.model import SearchResult
from .headers import is_strict
from .messages import FhirRequest, FhirResponse


def search(uow: UnitOfWork, req: FhirRequest, resource_types: list[str] | None) -> FhirResponse:
    params = list(req.query)
    if req.method == "POST":
        params += _form_params(req)
    result = uow.search(resource_types, params, strict=is_strict(req), disclose=True)
    return FhirResponse(200, searchset(req.ctx.base_url, result))


def compartment_search(uow: UnitOfWork, req: FhirRequest, patient_id: str, res_type: str) -> FhirResponse:
    """``GET [base]/Patient/[id]/[type]`` (http.html#search, compartmentdefinition.html): a search of
    ``[type]`` (``*`` = every member type) within the patient's compartment. 404 if the patient is
    unknown, so the compartment of a nonexistent patient is never an empty success."""
    check_id(patient_id)
    uow.read("Patient", patient_id)
    compartment = patient_compartment(uow.repo.settings.profiles_dir, patient_id)
    types = sorted({*compartment.params, "Patient"}) if res_type == "*" else [res_type]
    if res_type not in compartment.params and res_type not in ("*", "Patient"):
        raise BadRequest(f"{res_type} is not in the Patient compartment", expression="type")
    params = list(req.query) + (_form_params(req) if req.method == "POST" else [])
    result = uow.search(types, params, strict=is_strict(req), compartment=compartment)
    return FhirResponse(200, searchset(req.ctx.base_url, result))


def searchset(base_url: str, result: SearchResult) -> dict[str, Any]:
    """Bundle.type searchset: matches then includes, each with ``search.mode`` (search.html#return)."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = [{"relation": rel, "url": url} for rel, url in result.links.items()]
    entries = [_entry(base_url, r, "match") for r in result.matches]
    entries += [_entry(base_url, r, "include") for r in result.includes]
    if result.outcome:
        entries.append({"resource": result.outcome, "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def _entry(base_url: str, content: dict[str, Any], mode: str) -> dict[str, Any]:
    return {"fullUrl": f"{base_url}/{content['resourceType']}/{content['id']}", "resource": content,
            "search": {"mode": mode}}


def _form_params(req: FhirRequest) -> list[tuple[str, str]]:
    """POST [base]/[type]/_search carries the parameters as application/x-www-form-urlencoded."""
    if req.body in (None, "", b""):
        return []
    if req.content_type != "application/x-www-form-urlencoded" or not isinstance(req.body, (str, bytes)):
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters",
                                   expression="Content-Type")
    text = req.body.decode() if isinstance(req.body, bytes) else req.body
    return parse_qsl(text, keep_blank_values=True)
