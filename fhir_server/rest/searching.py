"""Search interactions (http.html#search, search.html): GET and POST ``_search`` at type and
system level, answered with a ``searchset`` Bundle."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from ..errors import UnsupportedMediaType
from ..repository.sql import UnitOfWork
from ..search.model import SearchResult
from .headers import is_strict
from .messages import FhirRequest, FhirResponse


def search(uow: UnitOfWork, req: FhirRequest, resource_types: list[str] | None) -> FhirResponse:
    params = list(req.query)
    if req.method == "POST":
        params += _form_params(req)
    result = uow.search(resource_types, params, strict=is_strict(req))
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
