"""``Patient/[id]/$everything`` (R4 patient-operation-everything.html) across every linked record.

``GET|POST [base]/Patient/[id]/$everything`` with ``start``, ``end``, ``_since``, ``_type``, ``_count``
(in the URL, or as a Parameters body on POST). The record is collected by
:mod:`fhir_server.single_view.record`, narrowed by the request's access filter, then paged; the
definition is profiles/operations/everything.json.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from ..errors import BadRequest, NotFound
from ..fhir.instants import parse_instant
from ..fhir.models import SUPPORTED_TYPES
from ..fhir.validation import check_id
from ..search.engine import current_snapshot
from ..search.normalize import date_range
from ..single_view.access import filter_for, keep, without_foreign_targets
from ..single_view.pages import Page, SortKey, format_cursor, page_after, parse_cursor, sort_key
from ..single_view.record import Found, RecordFilter, collect_child_record
from .registry import Handler, OperationTarget

if TYPE_CHECKING:
    from ..config import Settings
    from ..repository.sql import UnitOfWork
    from ..rest.messages import FhirRequest, FhirResponse

DEFINITION_FILE = "everything.json"
PARAMETERS = ("start", "end", "_since", "_type", "_count")
PAGING = ("_snapshot", "_cursor")  # written by this server into its own paging links
IGNORED = ("_format", "_pretty")


@dataclass(frozen=True)
class EverythingRequest:
    filter: RecordFilter
    count: int | None  # None = the whole record (up to the maximum page size)
    cursor: SortKey | None
    link_params: tuple[tuple[str, str], ...]  # the client's parameters, repeated in paging links


def make_handler(settings: "Settings") -> Handler:
    def handle(uow: "UnitOfWork", req: "FhirRequest", target: OperationTarget) -> "FhirResponse":
        return everything(uow, req, target, settings)

    return handle


def everything(uow: "UnitOfWork", req: "FhirRequest", target: OperationTarget,
               settings: "Settings") -> "FhirResponse":
    from ..rest.messages import FhirResponse

    patient_id = target.res_id or ""
    check_id(patient_id)
    asked = parse_request(req)
    patient = uow.read("Patient", patient_id).content or {}  # 404 unknown, 410 deleted
    allow = filter_for(req.ctx, uow.access)
    if not allow(patient):  # a Patient the caller may not see does not exist for them
        raise NotFound(f"Patient/{patient_id} is not known", expression="id")
    record = collect_child_record(uow.conn, settings.profiles_dir, settings.base_url, patient, asked.filter)
    found = without_foreign_targets(keep(record.all(), allow, lambda f: f.content), lambda f: f.content,
                                    lambda f, content: replace(f, content=content))
    keyed = sorted(((sort_key(f, record.patient_ids), f) for f in found), key=lambda kf: kf[0])
    count = settings.max_page_size if asked.count is None else min(asked.count, settings.max_page_size)
    page = page_after(keyed, count, asked.cursor)
    snapshot = asked.filter.snapshot
    if snapshot is None and page.has_next:
        snapshot = current_snapshot(uow.conn)
    bundle = searchset(settings.base_url, patient_id, page.entries,
                       total=sum(1 for f in found if f.mode == "match"),
                       links=_links(settings.base_url, patient_id, asked, count, snapshot, page))
    return FhirResponse(200, bundle)


def searchset(base_url: str, patient_id: str, entries: list[Found], *, total: int,
              links: dict[str, str]) -> dict[str, Any]:
    """Bundle.type searchset (search.html#return): fullUrl, resource and search.mode per entry."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total,
                              "link": [{"relation": rel, "url": url} for rel, url in links.items()]}
    if entries:
        bundle["entry"] = [{"fullUrl": f"{base_url}/{f.res_type}/{f.res_id}", "resource": f.content,
                            "search": {"mode": f.mode}} for f in entries]
    return bundle


def _links(base_url: str, patient_id: str, asked: EverythingRequest, count: int, snapshot: int | None,
           page: Page) -> dict[str, str]:
    url = f"{base_url}/Patient/{patient_id}/$everything"

    def at(cursor: SortKey | None) -> str:
        params = [*asked.link_params, ("_count", str(count))]
        if snapshot is not None:
            params.append(("_snapshot", str(snapshot)))
        if cursor is not None:
            params.append(("_cursor", format_cursor(cursor)))
        return f"{url}?{urlencode(params, quote_via=quote, safe=':,|/')}"

    links = {"self": at(asked.cursor), "first": at(None)}
    if page.has_previous:
        links["previous"] = at(page.previous_cursor)
    if page.has_next:
        links["next"] = at(page.next_cursor)
    if count > 0:
        links["last"] = at(page.last_cursor)
    return links


def parse_request(req: "FhirRequest") -> EverythingRequest:
    """The inputs from the URL and, on POST, a Parameters body (a body value wins over the URL's)."""
    values: dict[str, list[str]] = {}
    for name, value in req.query:
        if name in IGNORED:
            continue
        if name not in PARAMETERS + PAGING:
            raise BadRequest(f"Unknown $everything parameter {name!r}", expression=name)
        values.setdefault(name, []).append(value)
    if req.body is not None:
        values.update(_from_parameters(req.body))
    for name, given in values.items():
        if name != "_type" and len(given) > 1:
            raise BadRequest(f"Parameter {name!r} is given more than once (max 1)", expression=name)
    one = {name: given[0] for name, given in values.items() if name != "_type"}
    start = _date_bound(one.get("start"), "start", 0)
    end = _date_bound(one.get("end"), "end", 1)
    if start is not None and end is not None and start > end:
        raise BadRequest("start is after end", expression="start")
    types = _types(values.get("_type"))
    flt = RecordFilter(types=types, start=start, end=end,
                       since=parse_instant(one["_since"], parameter="_since") if "_since" in one else None,
                       snapshot=_integer(one.get("_snapshot"), "_snapshot"))
    cursor = parse_cursor(one["_cursor"]) if "_cursor" in one else None
    link_params = tuple((name, value) for name in PARAMETERS if name != "_count" for value in values.get(name, []))
    return EverythingRequest(flt, _integer(one.get("_count"), "_count"), cursor, link_params)


def _from_parameters(body: Any) -> dict[str, list[str]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("POST $everything takes a Parameters resource (or no body)")
    out: dict[str, list[str]] = {}
    for i, param in enumerate(body.get("parameter") or []):
        name = param.get("name") if isinstance(param, dict) else None
        if name not in PARAMETERS:
            raise BadRequest(f"Unknown $everything parameter {name!r}", expression=f"Parameters.parameter[{i}]")
        value = next((v for k, v in param.items() if k.startswith("value")), None)
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise BadRequest(f"Parameter {name!r} needs a value", expression=f"Parameters.parameter[{i}]")
        out.setdefault(name, []).append(str(value))
    return out


def _date_bound(value: str | None, name: str, side: int) -> Any:
    """The low (start) or high (end) bound of a date parameter's implicit range."""
    if value is None:
        return None
    try:
        return date_range(value)[side]
    except ValueError:
        raise BadRequest(f"Invalid date {value!r} for {name}", expression=name) from None


def _types(given: list[str] | None) -> frozenset[str] | None:
    if not given:
        return None
    types = {t.strip() for value in given for t in value.split(",") if t.strip()}
    unknown = sorted(t for t in types if t not in SUPPORTED_TYPES)
    if unknown:
        raise BadRequest(f"Unknown resource type(s) in _type: {', '.join(unknown)}", expression="_type")
    return frozenset(types)


def _integer(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, not {value!r}", expression=name)
    return int(value)
