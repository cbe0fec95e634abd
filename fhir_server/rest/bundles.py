"""Batch and transaction Bundles: ``POST [base]`` (http.html#transaction).

Every entry becomes a :class:`FhirRequest` run through ``Router.dispatch``, so it behaves like the
same request sent on its own (the outer ``Prefer`` header applies to each entry).

- **transaction** (http.html#trules): one unit of work; entries run DELETE, POST, PUT/PATCH, then
  GET/HEAD. Before any body is written, POST entries get their ids, conditional creates and updates
  are resolved, and every link to an entry's fullUrl and every conditional reference is rewritten
  to ``Type/id``. The first failure rolls everything back and is the answer, its OperationOutcome
  naming ``Bundle.entry[n]``. Plain creates are written in batches (repository/bulk.py).
- **batch** (http.html#brules): the same order, each entry in its own savepoint; a failure is that
  entry's response and does not affect the others. Links between entries are left alone.
"""
from __future__ import annotations

import base64
import binascii
import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import BadRequest, Conflict, FhirError, Issue, PayloadTooLarge, PreconditionFailed, Unprocessable
from ..fhir import jsonio
from ..fhir.instants import http_date, parse_instant
from ..fhir.models import SUPPORTED_TYPES
from ..fhir.validation import check_structure
from ..repository.bulk import DeferredCreates
from ..repository.sql import UnitOfWork
from .crud import CONDITIONAL_ONLY
from .headers import prefer
from .messages import FhirRequest, FhirResponse
from .references import resolve_conditional_reference, rewrite_references

if TYPE_CHECKING:
    from .router import Router

log = logging.getLogger(__name__)

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
# http.html#trules: the order in which a transaction (and, by convention, a batch) is processed.
PHASES: tuple[tuple[str, ...], ...] = (("DELETE",), ("POST",), ("PUT", "PATCH"), ("GET", "HEAD"))
ENTRY_ELEMENTS = frozenset({"id", "extension", "modifierExtension", "link", "fullUrl", "resource", "search",
                            "request", "response"})
REQUEST_ELEMENTS = frozenset({"id", "extension", "modifierExtension", "method", "url", "ifNoneMatch",
                              "ifModifiedSince", "ifMatch", "ifNoneExist"})
# Bundle.entry.request elements → the HTTP header they stand for.
CONDITION_HEADERS = {"ifMatch": "if-match", "ifNoneMatch": "if-none-match", "ifNoneExist": "if-none-exist",
                     "ifModifiedSince": "if-modified-since"}
_HEADER_ELEMENTS = {"If-Match": "ifMatch", "If-None-Match": "ifNoneMatch", "If-None-Exist": "ifNoneExist",
                    "If-Modified-Since": "ifModifiedSince"}


@dataclass(slots=True)
class _Entry:
    """One parsed Bundle.entry. ``target`` is the resource a write entry resolves to (type, id)."""

    index: int
    method: str
    url: str
    path: str
    query: list[tuple[str, str]]
    request: dict[str, Any]
    full_url: str | None
    resource: dict[str, Any] | None
    target: tuple[str, str] | None = None
    assigned_id: str | None = None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def process_bundle(router: "Router", req: FhirRequest, *, max_entries: int | None = -1) -> FhirResponse:
    """``POST [base]`` with a Bundle of type batch or transaction (http.html#transaction).

    400 for anything else or a malformed Bundle; 413 beyond ``settings.max_bundle_entries`` entries
    (``max_entries``: another limit, or None for none — the server's own imports of agency files).
    """
    limit = router.settings.max_bundle_entries if max_entries == -1 else max_entries
    bundle = _check_bundle(req.body, limit)
    entries = bundle.get("entry") or []
    if bundle["type"] == "transaction":
        return _transaction(router, req, entries)
    return _batch(router, req, entries)


# -- transaction -----------------------------------------------------------------------------


def _transaction(router: "Router", req: FhirRequest, raw_entries: list[Any]) -> FhirResponse:
    """http.html#trules: all or nothing, in one unit of work."""
    base = req.ctx.base_url
    entries = [_parse_entry(i, raw, base) for i, raw in enumerate(raw_entries)]
    _check_unique_full_urls(entries)
    out: list[dict[str, Any] | None] = [None] * len(entries)
    with router.repo.unit_of_work() as real, DeferredCreates(real) as uow:
        if router.access_policy is not None:  # access hook: conditional references resolve as the caller sees
            uow.access = router.access_policy(req.ctx, real.conn)
        plan = _Plan(uow, base)
        for e in _in_phase(entries, PHASES[0]):
            with _failing_at(e):
                plan.resolve_delete(e)
                out[e.index] = _run(router, uow, req, e)
        plan.resolve_writes(entries)
        for e in entries:
            if _has_links(e):
                with _failing_at(e):
                    rewrite_references(e.resource, plan.local, where=f"{e.where}.resource",
                                       conditional=plan.resolve_conditional, reject_unresolved=True)
        for phase in PHASES[1:]:
            for e in _in_phase(entries, phase):
                with _failing_at(e):
                    uow.next_id = e.assigned_id
                    out[e.index] = _run(router, uow, req, e)
                    plan.check_target(e, out[e.index])
    return FhirResponse(200, _response_bundle("transaction-response", out))


class _Plan:
    """What a transaction resolves before it writes: the server id of each entry's fullUrl
    (``local``), which entry writes which resource, and conditional references."""

    def __init__(self, uow: DeferredCreates | UnitOfWork, base_url: str) -> None:
        self.uow = uow
        self.base_url = base_url
        self.local: dict[str, str] = {}
        self._writers: dict[tuple[str, str], int] = {}
        self._conditional_creates: dict[tuple[str, frozenset[tuple[str, str]]], str] = {}
        self._conditional_refs: dict[str, str] = {}

    def resolve_delete(self, e: _Entry) -> None:
        res_type, res_id = _split_path(e.path)
        if res_id is None and e.query and res_type in SUPPORTED_TYPES:
            ids = self._find(res_type, e.query)
            res_id = ids[0] if len(ids) == 1 else None
        if res_id is not None:
            self._claim(e, (res_type, res_id))

    def resolve_writes(self, entries: list[_Entry]) -> None:
        """Ids for every POST (new, or the match of If-None-Exist) and the target of every
        PUT/PATCH, so that references can be rewritten before anything is written."""
        for e in _in_phase(entries, ("POST",)):
            with _failing_at(e):
                self._resolve_create(e)
        for e in _in_phase(entries, ("PUT", "PATCH", "GET", "HEAD")):
            # A search URL may name another entry: Observation?subject=urn:uuid:…
            e.query = [(k, self.local.get(v, v)) for k, v in e.query]
        for e in _in_phase(entries, ("PUT", "PATCH")):
            with _failing_at(e):
                self._resolve_update(e)

    def _resolve_create(self, e: _Entry) -> None:
        res_type, res_id = _split_path(e.path)
        if res_id is not None or res_type not in SUPPORTED_TYPES:
            return  # not a create (e.g. POST Patient/$validate): dispatch decides
        target: str | None
        condition = e.request.get("ifNoneExist")
        if condition:
            criteria = parse_qsl(condition.split("?", 1)[-1], keep_blank_values=True)
            key = (res_type, frozenset(criteria))
            target = self._conditional_creates.get(key)
            if target is None:
                ids = self._find(res_type, criteria) if criteria else []
                if len(ids) > 1:
                    raise PreconditionFailed(f"If-None-Exist matched {len(ids)} resources",
                                             expression="If-None-Exist")
                target = ids[0] if ids else None
            if target is None:
                target = e.assigned_id = str(uuid.uuid4())
            self._conditional_creates[key] = target
        else:
            target = e.assigned_id = str(uuid.uuid4())
        e.target = (res_type, target)
        if e.full_url:
            self.local[e.full_url] = f"{res_type}/{target}"

    def _resolve_update(self, e: _Entry) -> None:
        res_type, res_id = _split_path(e.path)
        if res_type not in SUPPORTED_TYPES:
            return
        if res_id is None and e.query:
            ids = self._find(res_type, e.query)
            if len(ids) == 1:
                res_id = ids[0]
            elif not ids and e.method == "PUT" and e.resource is not None:
                body_id = e.resource.get("id")
                res_id = body_id if isinstance(body_id, str) else None
                if res_id is None:
                    res_id = e.assigned_id = str(uuid.uuid4())
        if res_id is None:
            return  # several matches, no criteria…: dispatch answers with the right error
        self._claim(e, (res_type, res_id))
        e.target = (res_type, res_id)
        if e.full_url:
            self.local[e.full_url] = f"{res_type}/{res_id}"

    def resolve_conditional(self, value: str, where: str) -> str:
        """A conditional reference ``Type?params`` → ``Type/id`` of its one match (http.html#trules)."""
        known = self._conditional_refs.get(value)
        if known is not None:
            return known
        resolved = resolve_conditional_reference(value, where, self._find, self._conditional_creates)
        self._conditional_refs[value] = resolved
        return resolved

    def check_target(self, e: _Entry, entry: dict[str, Any] | None) -> None:
        """The entry must have written the resource its fullUrl was mapped to: an earlier entry of
        this transaction can change what a conditional create/update matches."""
        if e.target is None or entry is None:
            return
        location = entry["response"].get("location")
        if location is None:
            return
        relative = location.removeprefix(self.base_url).strip("/").split("/")
        if tuple(relative[:2]) != e.target:
            raise Conflict(f"The entry was resolved to {e.target[0]}/{e.target[1]} but, after earlier entries "
                           f"were processed, it wrote {'/'.join(relative[:2])}")

    def _claim(self, e: _Entry, identity: tuple[str, str]) -> None:
        """http.html#trules: resource identities written by DELETE, POST, PUT/PATCH may not overlap."""
        other = self._writers.setdefault(identity, e.index)
        if other != e.index:
            raise BadRequest(f"Bundle.entry[{other}] and Bundle.entry[{e.index}] both change "
                             f"{identity[0]}/{identity[1]}", expression=[f"Bundle.entry[{other}]"])

    def _find(self, res_type: str, query: list[tuple[str, str]]) -> list[str]:
        return self.uow.find(res_type, [(k, v) for k, v in query if k not in CONDITIONAL_ONLY])


# -- batch -------------------------------------------------------------------------------------


def _batch(router: "Router", req: FhirRequest, raw_entries: list[Any]) -> FhirResponse:
    """http.html#brules: each entry on its own; a failure is that entry's response."""
    base = req.ctx.base_url
    out: list[dict[str, Any] | None] = [None] * len(raw_entries)
    entries: list[_Entry] = []
    for i, raw in enumerate(raw_entries):
        try:
            entries.append(_parse_entry(i, raw, base))
        except FhirError as exc:
            out[i] = _error_entry(exc)
    with router.repo.unit_of_work() as uow:
        for phase in PHASES:
            for e in _in_phase(entries, phase):
                out[e.index] = _batch_entry(router, uow, req, e)
    return FhirResponse(200, _response_bundle("batch-response", out))


def _batch_entry(router: "Router", uow: UnitOfWork, req: FhirRequest, e: _Entry) -> dict[str, Any]:
    try:
        with uow.conn.begin_nested(), _failing_at(e):
            if _has_links(e):
                plan = _Plan(uow, req.ctx.base_url)
                rewrite_references(e.resource, {}, where=f"{e.where}.resource",
                                   conditional=plan.resolve_conditional)
            return _run(router, uow, req, e)
    except FhirError as exc:
        return _error_entry(exc)
    except Exception:  # noqa: BLE001 - one broken entry must not take the batch down; never leak internals
        log.exception("Unhandled error in %s of a batch", e.where)
        return _error_entry(FhirError("Internal server error; this entry was not completed",
                                      severity="fatal"))


# -- one entry ---------------------------------------------------------------------------------


def _run(router: "Router", uow: Any, outer: FhirRequest, e: _Entry) -> dict[str, Any]:
    req = _entry_request(outer, e)
    return _response_entry(req, e, router.dispatch(uow, req))


def _entry_request(outer: FhirRequest, e: _Entry) -> FhirRequest:
    """The request an entry stands for (http.html#transaction: Bundle.entry.request)."""
    headers: dict[str, str] = {}
    outer_prefer = outer.header("prefer")
    if outer_prefer:
        headers["prefer"] = outer_prefer
    for element, header in CONDITION_HEADERS.items():
        value = e.request.get(element)
        if value:
            headers[header] = value
    if "if-modified-since" in headers:  # an instant in the Bundle, an HTTP-date on the wire
        headers["if-modified-since"] = http_date(parse_instant(
            headers["if-modified-since"], parameter=f"{e.where}.request.ifModifiedSince"))
    body: Any = e.resource
    path, query = e.path, list(e.query)
    if e.method == "PUT" and e.query and e.target is not None and isinstance(body, dict) \
            and body.get("id") in (None, e.target[1]):
        # A conditional update the first pass already resolved (one match, or a new id for none):
        # write by id rather than search again — same outcome, one query less per entry.
        path, query = f"{e.target[0]}/{e.target[1]}", []
        body = {**body, "id": e.target[1]}
    content_type = "application/fhir+json" if body is not None else None
    if e.method == "PATCH":
        body, content_type = _patch_document(e)
    return FhirRequest("GET" if e.method == "HEAD" else e.method, path, outer.ctx, query, headers,
                       body, content_type)


def _patch_document(e: _Entry) -> tuple[Any, str]:
    """A PATCH entry carries its JSON Patch as a Binary (http.html#patch, "Patch in transactions")."""
    res = cast(dict[str, Any], e.resource)
    if res.get("resourceType") != "Binary":
        return res, "application/fhir+json"  # e.g. FHIRPath Patch Parameters: the handler refuses it
    if res.get("contentType") != "application/json-patch+json":
        raise BadRequest("A PATCH entry's Binary must have contentType application/json-patch+json",
                         expression=f"{e.where}.resource.contentType")
    try:
        raw = base64.b64decode(res.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Binary.data is not base64", expression=f"{e.where}.resource.data") from None
    return jsonio.loads(raw), "application/json-patch+json"


def _response_entry(req: FhirRequest, e: _Entry, resp: FhirResponse) -> dict[str, Any]:
    """Bundle.entry.response (http.html#transaction-response): status, location, etag,
    lastModified, and the body as ``resource`` — or as ``outcome`` under Prefer: return=OperationOutcome."""
    response: dict[str, Any] = {"status": _status_line(resp.status)}
    body = resp.resource
    location = resp.location or resp.headers.get("Location")
    if location:
        response["location"] = location
    etag = resp.etag or resp.headers.get("ETag")
    if etag:
        response["etag"] = etag
    last_modified = resp.last_modified or _last_updated(body)
    if last_modified:
        response["lastModified"] = last_modified
    entry: dict[str, Any] = {}
    if body is not None and e.method != "HEAD":
        if body.get("resourceType") == "OperationOutcome" and prefer(req, "return") == "OperationOutcome":
            response["outcome"] = body
        else:
            if body.get("id") and body.get("resourceType"):
                entry["fullUrl"] = f"{req.ctx.base_url}/{body['resourceType']}/{body['id']}"
            entry["resource"] = body
    entry["response"] = response
    return entry


def _response_bundle(kind: str, entries: list[dict[str, Any] | None]) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": kind}
    if entries:  # FHIR JSON has no empty arrays
        bundle["entry"] = entries
    return bundle


def _error_entry(exc: FhirError) -> dict[str, Any]:
    return {"response": {"status": _status_line(exc.status), "outcome": exc.outcome()}}


@contextmanager
def _failing_at(e: _Entry) -> Iterator[None]:
    res_type = (e.resource or {}).get("resourceType") or e.path.split("/", 1)[0]
    with failing_at_entry(e.index, e.method, e.url, res_type):
        yield


@contextmanager
def failing_at_entry(index: int, method: str, url: str, res_type: str) -> Iterator[None]:
    """Name the entry in the issues of an error raised while processing it: ``issue.expression``
    gets ``Bundle.entry[n]`` first, and element paths are made relative to the Bundle (used by
    transaction/batch Bundles and by the agency importer, which runs a file as one transaction)."""
    try:
        yield
    except FhirError as exc:
        if not getattr(exc, "_bundle_entry", False):
            exc.issues = [_at_entry(issue, index, method, url, res_type) for issue in exc.issues]
            exc._bundle_entry = True  # type: ignore[attr-defined]
        raise


def _at_entry(issue: Issue, index: int, method: str, url: str, res_type: str) -> Issue:
    where = f"Bundle.entry[{index}]"
    expressions = [where]
    for expr in issue.expression:
        if expr.startswith("Bundle."):
            pass
        elif expr in _HEADER_ELEMENTS:
            expr = f"{where}.request.{_HEADER_ELEMENTS[expr]}"
        elif expr == res_type or expr.startswith(f"{res_type}.") or expr.startswith(f"{res_type}["):
            expr = f"{where}.resource{expr[len(res_type):]}"
        if expr not in expressions:
            expressions.append(expr)
    return replace(issue, diagnostics=f"{where} ({method} {url}): {issue.diagnostics}",
                   expression=tuple(expressions))


# -- parsing -----------------------------------------------------------------------------------


def _check_bundle(body: Any, max_entries: int | None) -> dict[str, Any]:
    """The envelope: a Bundle of type batch or transaction, structurally valid (bundle.html)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise BadRequest("POST to the base takes a Bundle of type batch or transaction", expression="Bundle")
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(f"Bundle.type must be batch or transaction, not {kind!r}", expression="Bundle.type")
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be an array", expression="Bundle.entry")
    if max_entries is not None and len(entries) > max_entries:
        raise PayloadTooLarge(f"The Bundle has {len(entries)} entries; this server takes at most {max_entries}",
                              expression="Bundle.entry")
    # Entries are checked one by one (_parse_entry) and their resources by the handlers; validating
    # the whole Bundle at once would hold a model of every entry in memory.
    try:
        check_structure({k: v for k, v in body.items() if k != "entry"})
    except Unprocessable as exc:
        raise BadRequest(issues=exc.issues) from None
    return body


def _parse_entry(index: int, raw: Any, base_url: str) -> _Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest("A Bundle entry must be a JSON object", expression=where)
    _no_unknown(raw, ENTRY_ELEMENTS, where)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise BadRequest("Each entry of a batch or transaction needs a request", expression=f"{where}.request")
    _no_unknown(request, REQUEST_ELEMENTS, f"{where}.request")
    method = request.get("method")
    if method not in METHODS:
        raise BadRequest(f"request.method must be one of {', '.join(METHODS)}, not {method!r}",
                         expression=f"{where}.request.method")
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise BadRequest("request.url is required", expression=f"{where}.request.url")
    for element in CONDITION_HEADERS:
        if element in request and not isinstance(request[element], str):
            raise BadRequest(f"request.{element} must be a string", expression=f"{where}.request.{element}")
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise BadRequest("fullUrl must be a string", expression=f"{where}.fullUrl")
    resource = raw.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise BadRequest("entry.resource must be a resource (a JSON object)", expression=f"{where}.resource")
    if resource is None and method in ("POST", "PUT", "PATCH"):
        raise BadRequest(f"A {method} entry needs a resource", expression=f"{where}.resource")
    path, query = _split_url(url, base_url, f"{where}.request.url")
    return _Entry(index, method, url, path, query, request, full_url, resource)


def _split_url(url: str, base_url: str, where: str) -> tuple[str, list[tuple[str, str]]]:
    """request.url is relative to the base (``Patient?identifier=…``); an absolute URL is accepted
    only when it is on this server's base."""
    parts = urlsplit(url.strip())
    path = parts.path
    if parts.scheme or parts.netloc:
        base = urlsplit(base_url)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc) or not path.startswith(base.path):
            raise BadRequest(f"request.url {url!r} is not on this server ({base_url})", expression=where)
        path = path[len(base.path):]
    return unquote(path).strip("/"), parse_qsl(parts.query, keep_blank_values=True)


def _no_unknown(element: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(element) - allowed)
    if unknown:
        raise BadRequest(f"Unknown element(s): {', '.join(unknown)}", expression=[f"{where}.{u}" for u in unknown])


def _check_unique_full_urls(entries: list[_Entry]) -> None:
    """A fullUrl identifies one entry (bundle.html bdl-7); two entries with one fullUrl are ambiguous."""
    seen: dict[str, int] = {}
    for e in entries:
        if e.full_url:
            first = seen.setdefault(e.full_url, e.index)
            if first != e.index:
                raise BadRequest(f"Bundle.entry[{first}] and Bundle.entry[{e.index}] have the same fullUrl "
                                 f"{e.full_url}", expression=[f"{e.where}.fullUrl", f"Bundle.entry[{first}].fullUrl"])


def _in_phase(entries: Iterable[_Entry], methods: tuple[str, ...]) -> Iterator[_Entry]:
    return (e for e in entries if e.method in methods)


def _has_links(e: _Entry) -> bool:
    """Bodies whose references are resolved: resources to create or update, and FHIRPath Patch
    Parameters (a JSON Patch travels base64-encoded in a Binary and is left as sent)."""
    if e.resource is None:
        return False
    return e.method in ("POST", "PUT") or (e.method == "PATCH" and e.resource.get("resourceType") == "Parameters")


def _split_path(path: str) -> tuple[str, str | None]:
    """``Patient/1`` → (Patient, 1); ``Patient`` → (Patient, None); anything longer: not an instance."""
    segments = path.split("/")
    if len(segments) == 1:
        return segments[0], None
    if len(segments) == 2 and not segments[1].startswith(("$", "_")):
        return segments[0], segments[1]
    return "", None


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _last_updated(body: dict[str, Any] | None) -> str | None:
    meta = body.get("meta") if body else None
    return meta.get("lastUpdated") if isinstance(meta, dict) else None

