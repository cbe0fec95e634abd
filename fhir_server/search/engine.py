"""Search execution (http.html#search, search.html): parse → SQL → page, total, includes, links.

This is the one entry point the repository calls; it knows nothing of HTTP.
"""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Sequence

from sqlalchemy import Connection, func, select

from ..config import Settings
from ..errors import operation_outcome
from ..storage.tables import resource
from .filter_terminology import resolve_filter_terminology
from .includes import Found, resolve_includes
from .model import SearchResult
from .paging import Page, page_links
from .parse import ParamSource, SearchRequest, parse_search
from .query import count_matches, select_match_keys, select_matches
from .summary import apply_summary, load_summary_elements
from .terminology import resolve_terminology

# Below this many estimated rows an exact count is as cheap as the estimate (``_total=estimate``).
_ESTIMATE_EXACT_BELOW = 10_000
_INCLUDE_ROUNDS = 4


def execute_search(conn: Connection, registry: ParamSource, resource_types: list[str] | None,
                   params: Sequence[tuple[str, str]], *, settings: Settings, strict: bool = False,
                   now: datetime | None = None, compartment: Any = None, access: Any = None,
                   audit: Any = None) -> SearchResult:
    """Run a type search (one type) or a whole-system search (None or several types) and return one
    page of matches with its includes, total and links (search.html#return, http.html#paging).

    ``_count`` defaults to ``settings.default_page_size`` and is capped at ``settings.max_page_size``;
    ``_count=0`` and ``_summary=count`` return only the total; ``_total`` is none | estimate |
    accurate (default accurate). Unknown parameters are ignored with a warning in ``outcome`` unless
    ``strict``, when they raise BadRequest.

    ``audit`` (the audit hook, audit/pending.py Stamp): runs the page query so that the same
    statement writes the search's AuditEvent, listing the page, when the page is all the search
    discloses (no ``_include``/``_revinclude``).
    """
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    req = parse_search(params, registry, resource_types, strict=strict, base_url=settings.base_url)
    req = resolve_terminology(conn, req, settings.base_url)  # :in/:not-in/:below/:above → codes
    req = resolve_filter_terminology(conn, req, settings.base_url)  # _filter in/ni/ss/sb
    if compartment is not None:
        req = replace(req, compartment=compartment)
    if access is not None:  # access hook: fhir_server.auth.policy.Visibility of the request context
        req = replace(req, access=access)
    count = settings.default_page_size if req.count is None else min(req.count, settings.max_page_size)
    if req.summary == "count":
        count = 0
    # The first page runs without a horizon; only when there is a next page is the horizon fixed
    # (after the query, so it covers every row this page saw) for the links to carry.
    snapshot = req.snapshot
    result = SearchResult()
    if req.warnings:
        result.outcome = operation_outcome(list(req.warnings))

    rows: list[Any] = []
    if count > 0 and audit is not None and not req.includes and audit.claim():
        page = select_matches(req, now=now, snapshot=snapshot, limit=count + 1, offset=req.offset, numbered=True)
        rows = audit.page(conn, page, req.offset + count)
    elif count > 0:
        stmt = select_matches(req, now=now, snapshot=snapshot, limit=count + 1, offset=req.offset)
        rows = list(conn.execute(stmt))
    has_next = len(rows) > count
    rows = rows[:count]
    if snapshot is None and has_next:
        snapshot = current_snapshot(conn)
    result.total = _total(conn, req, now=now, snapshot=snapshot, count=count, rows=len(rows),
                          has_next=has_next)
    matches = [Found(r.pk, r.res_type, r.res_id, r.content) for r in rows]
    included = resolve_includes(conn, req.includes, matches, max_rounds=_INCLUDE_ROUNDS,
                                limit=settings.max_page_size, access=access) if req.includes else []
    if access is not None:
        matches, included = access.redact(conn, matches), access.redact(conn, included)

    table = load_summary_elements(settings.profiles_dir) if req.summary or req.elements else {}
    elements = list(req.elements) if req.elements is not None else None
    result.matches = [apply_summary(m.content, req.summary, elements, table) for m in matches]
    result.includes = [apply_summary(i.content, req.summary, _elements_for(i.res_type, elements), table)
                       for i in included]
    url = None
    if compartment is not None:
        target = req.resource_types[0] if len(req.resource_types) == 1 else "*"
        url = f"{settings.base_url}/{compartment.compartment_type}/{compartment.compartment_id}/{target}"
    result.links = page_links(settings.base_url, req.resource_types, req.link_params,
                              Page(count, req.offset, snapshot, has_next, result.total), url=url)
    return result


def find_matches(conn: Connection, registry: ParamSource, resource_type: str,
                 params: Sequence[tuple[str, str]], *, now: datetime | None = None,
                 base_url: str | None = None, access: Any = None) -> list[tuple[int, str]]:
    """(pk, id) of every current ``resource_type`` matching ``params``, for conditional create /
    update / delete (http.html#ccreate, #cond-update, #3.1.0.7.1). Parsing is strict: an unknown
    parameter must not silently widen the match to every resource. Result parameters are ignored."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    criteria = [(n, v) for n, v in params if not _is_result_param(n)]
    req = parse_search(criteria, registry, [resource_type], strict=True, base_url=base_url)
    req = resolve_filter_terminology(conn, resolve_terminology(conn, req, base_url), base_url)
    if access is not None:
        req = replace(req, access=access)
    return [(int(r.pk), str(r.res_id)) for r in conn.execute(select_match_keys(req, now=now))]


def current_snapshot(conn: Connection) -> int:
    """The largest ``resource.pk`` now: the horizon of a paged search (see search.paging)."""
    return int(conn.execute(select(func.max(resource.c.pk))).scalar() or 0)


def _total(conn: Connection, req: SearchRequest, *, now: datetime, snapshot: int, count: int, rows: int,
           has_next: bool) -> int | None:
    """Bundle.total per ``_total`` (search.html#total). A page that is not full already tells the total."""
    mode = "accurate" if req.summary == "count" else (req.total or "accurate")
    if count > 0 and not has_next and (rows > 0 or req.offset == 0):
        return req.offset + rows
    if mode == "none":
        return None
    if mode == "estimate" and conn.dialect.name == "postgresql":
        estimate = _planner_estimate(conn, req, now=now, snapshot=snapshot)
        if estimate is not None and estimate >= _ESTIMATE_EXACT_BELOW:
            return estimate
    return int(conn.execute(count_matches(req, now=now, snapshot=snapshot)).scalar_one())


def _planner_estimate(conn: Connection, req: SearchRequest, *, now: datetime, snapshot: int) -> int | None:
    """PostgreSQL's row estimate for the match query (EXPLAIN, no execution)."""
    stmt = select_matches(req, now=now, snapshot=snapshot, limit=None)
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    try:
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        return int(plan[0]["Plan"]["Plan Rows"])
    except Exception:  # noqa: BLE001 - an estimate is optional; fall back to counting
        return None


def _elements_for(res_type: str, elements: list[str] | None) -> list[str] | None:
    """An included resource follows only the ``Type.element`` entries of ``_elements`` naming its
    type (bare names are the matches' elements); without any it is returned whole."""
    if elements is None:
        return None
    return [e for e in elements if e.startswith(res_type + ".")] or None


_RESULT_PARAMS = frozenset({"_sort", "_count", "_offset", "_total", "_summary", "_elements", "_include",
                            "_revinclude", "_snapshot", "_format", "_pretty"})


def _is_result_param(name: str) -> bool:
    return name.split(":", 1)[0] in _RESULT_PARAMS
