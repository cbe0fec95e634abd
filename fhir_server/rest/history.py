"""History interactions at instance, type and system level (http.html#history)."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from ..errors import BadRequest, NotFound
from ..fhir.instants import format_instant, parse_instant, utcnow
from ..fhir.validation import check_id
from ..repository.sql import Stored, UnitOfWork
from .messages import FhirRequest, FhirResponse

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def history(uow: UnitOfWork, req: FhirRequest, res_type: str | None = None,
            res_id: str | None = None) -> FhirResponse:
    """A ``history`` Bundle, newest version first, with ``_since``, ``_at``, ``_count`` and paging.

    Paging links carry ``_snapshot`` (the instant of the first page), so versions written while a
    client pages through do not shift the pages.
    """
    if res_id is not None:
        check_id(res_id)
        if not _ever_existed(uow, res_type, res_id):
            raise NotFound(f"{res_type}/{res_id} is not known", expression="id")
    settings = uow.repo.settings
    since = _instant(req, "_since")
    at = _instant(req, "_at")
    snapshot = _instant(req, "_snapshot") or utcnow()
    count = _int(req, "_count", settings.default_page_size, settings.max_page_size)
    offset = _int(req, "_offset", 0, None)
    page, total = uow.history(res_type=res_type, res_id=res_id, since=since, at=at,
                              offset=offset, count=count, snapshot=snapshot)
    base = req.ctx.base_url
    path = "/".join(p for p in (res_type, res_id, "_history") if p)
    keep = [(k, v) for k, v in req.query if k not in ("_offset", "_snapshot", "_count")]

    def link(relation: str, at_offset: int) -> dict[str, str]:
        query = keep + [("_count", str(count)), ("_offset", str(at_offset)),
                        ("_snapshot", format_instant(snapshot))]
        return {"relation": relation, "url": f"{base}/{path}?{urlencode(query)}"}

    links = [link("self", offset), link("first", 0)]
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    if offset + count < total:
        links.append(link("next", offset + count))
    if total:
        links.append(link("last", ((total - 1) // count) * count))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle", "type": "history", "total": total, "link": links,
        "entry": [_entry(base, s) for s in page],
    }
    return FhirResponse(200, bundle)


def _entry(base: str, stored: Stored) -> dict[str, Any]:
    url = stored.res_type if stored.method == "POST" else stored.reference
    entry: dict[str, Any] = {"fullUrl": f"{base}/{stored.reference}"}
    if stored.content is not None:
        entry["resource"] = stored.content
    entry["request"] = {"method": stored.method, "url": url}
    entry["response"] = {"status": _STATUS.get(stored.method, "200 OK"), "etag": stored.etag,
                         "lastModified": format_instant(stored.last_updated)}
    return entry


def _ever_existed(uow: UnitOfWork, res_type: str | None, res_id: str) -> bool:
    _page, total = uow.history(res_type=res_type, res_id=res_id, count=1)
    return total > 0


def _instant(req: FhirRequest, name: str):
    value = req.param(name)
    return parse_instant(value, parameter=name) if value else None


def _int(req: FhirRequest, name: str, default: int, cap: int | None) -> int:
    value = req.param(name)
    if value is None:
        return default
    if not value.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer", expression=name)
    return min(int(value), cap) if cap else int(value)
