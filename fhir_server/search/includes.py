"""``_include`` and ``_revinclude`` (search.html#include): resources related to the page's matches,
returned with ``search.mode = include``.

Forward includes follow ``idx_reference`` rows of the matches to current target resources; reverse
includes find current resources whose ``idx_reference`` rows point at the matches. ``:iterate``
includes are applied again to what the previous round brought in, for at most ``max_rounds`` rounds
and ``limit`` resources in all. A resource already among the matches is never repeated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from sqlalchemy import Connection, Select, false, select

from ..storage.tables import idx_reference, resource
from .parse import Include

_CHUNK = 500  # keeps IN lists well inside every driver's parameter limit


@dataclass(frozen=True)
class Found:
    """A current resource row: what includes start from and what they return."""

    pk: int
    res_type: str
    res_id: str
    content: dict[str, Any]


def resolve_includes(conn: Connection, includes: Iterable[Include], matches: list[Found], *,
                     max_rounds: int = 4, limit: int = 1000, access: Any = None) -> list[Found]:
    """The resources that ``includes`` bring in for ``matches``, in discovery order, without duplicates
    of each other or of the matches. Non-iterating includes apply to the matches only
    (search.html#include); ``:iterate`` ones also to the included resources, round after round."""
    includes = list(includes)
    if not includes or not matches:
        return []
    seen = {(m.res_type, m.res_id) for m in matches}
    found: list[Found] = []
    frontier, rounds = matches, 0
    while frontier and rounds < max_rounds and len(found) < limit:
        active = includes if rounds == 0 else [i for i in includes if i.iterate]
        if not active:
            break
        new: list[Found] = []
        for inc in active:
            rows = _reverse(conn, inc, frontier, access) if inc.reverse else _forward(conn, inc, frontier, access)
            for row in rows:
                key = (row.res_type, row.res_id)
                if key in seen:
                    continue
                seen.add(key)
                new.append(row)
                if len(found) + len(new) >= limit:
                    break
        found.extend(new)
        frontier, rounds = new, rounds + 1
    return found[:limit]


def _forward(conn: Connection, inc: Include, sources: list[Found], access: Any = None) -> Iterator[Found]:
    """``_include=Source:param[:Target]``: the current resources the sources' references point at."""
    pks = [s.pk for s in sources if inc.source_type is None or s.res_type == inc.source_type]
    r, t = idx_reference.alias(), resource.alias()
    for chunk in _chunks(pks):
        hits = (select(t.c.pk)
                .select_from(r.join(t, (t.c.res_type == r.c.target_type) & (t.c.res_id == r.c.target_id)))
                .where(r.c.resource_pk.in_(chunk), t.c.deleted == false()))
        if access is not None:  # access hook (SearchRequest.access): hidden resources are never included
            hits = hits.where(access.clause(t))
        if inc.source_type is not None:
            hits = hits.where(r.c.res_type == inc.source_type)
        if inc.param is not None:
            hits = hits.where(r.c.param == inc.param.code)
        if inc.target_type is not None:
            hits = hits.where(r.c.target_type == inc.target_type)
        yield from _load(conn, hits)


def _reverse(conn: Connection, inc: Include, targets: list[Found], access: Any = None) -> Iterator[Found]:
    """``_revinclude=Source:param[:Target]``: current ``Source`` resources referring to the targets."""
    by_type: dict[str, list[str]] = {}
    for tgt in targets:
        if inc.target_type is None or tgt.res_type == inc.target_type:
            by_type.setdefault(tgt.res_type, []).append(tgt.res_id)
    r, s = idx_reference.alias(), resource.alias()
    for target_type, ids in by_type.items():
        for chunk in _chunks(ids):
            hits = (select(s.c.pk).select_from(r.join(s, s.c.pk == r.c.resource_pk))
                    .where(r.c.target_type == target_type, r.c.target_id.in_(chunk), s.c.deleted == false()))
            if access is not None:
                hits = hits.where(access.clause(s))
            if inc.source_type is not None:
                hits = hits.where(r.c.res_type == inc.source_type, s.c.res_type == inc.source_type)
            if inc.param is not None:
                hits = hits.where(r.c.param == inc.param.code)
            yield from _load(conn, hits)


def _load(conn: Connection, pks: Select[Any]) -> Iterator[Found]:
    stmt = (select(resource.c.pk, resource.c.res_type, resource.c.res_id, resource.c.content)
            .where(resource.c.pk.in_(pks)).order_by(resource.c.pk))
    for row in conn.execute(stmt):
        yield Found(row.pk, row.res_type, row.res_id, row.content)


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]
