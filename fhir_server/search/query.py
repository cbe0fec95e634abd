"""``SearchRequest`` → SQLAlchemy Core (search.html), one dialect-neutral query for PostgreSQL and SQLite.

Every criterion becomes an ``EXISTS`` over one index table keyed by ``resource_pk`` (and, when the
type is known, the literal ``res_type``/``param`` so the composite indexes of storage/tables.py apply),
so criteria compose by AND without joins multiplying rows. Values ORed by commas sit inside one
EXISTS. ``_id`` and ``_lastUpdated`` are answered from the ``resource`` columns themselves.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable

from sqlalchemy import (ColumnElement, FromClause, Select, and_, exists, false, func, literal, not_,
                        or_, select, true)

from ..storage.tables import INDEX_TABLES, idx_reference, idx_token, resource
from .filter_bind import FilterCriterion
from .model import SearchParam
from .special import SpecialCriterion, special_clause
from .terminology import TERMINOLOGY_MODIFIERS, CodeSetValue, codes_condition
from .parse import (Criterion, DateValue, HasCriterion, MissingValue, NumberValue, QuantityValue,
                    ReferenceValue, SearchRequest, SearchValue, SortKey, StringValue, TextValue, TokenValue,
                    TypedIdentifierValue, UriValue)

Cond = ColumnElement[bool]


def base_filter(req: SearchRequest, *, now: datetime, snapshot: int | None = None) -> list[Cond]:
    """WHERE clauses on ``resource`` selecting the current (not deleted) matches of ``req``."""
    clauses: list[Cond] = [resource.c.deleted == false()]
    if len(req.resource_types) == 1:
        clauses.append(resource.c.res_type == req.resource_types[0])
    elif req.resource_types:
        clauses.append(resource.c.res_type.in_(req.resource_types))
    if snapshot is not None:
        clauses.append(resource.c.pk <= snapshot)
    if req.compartment is not None:
        clauses.append(or_(*[and_(resource.c.res_type == t, req.compartment.clause(t))
                             for t in req.resource_types]) if len(req.resource_types) > 1
                       else req.compartment.clause(req.resource_types[0]))
    single = req.resource_types[0] if len(req.resource_types) == 1 else None
    clauses.extend(criterion_clause(resource, single, c, now, access=req.access) for c in req.criteria)
    if req.access is not None:  # access hook: resources the caller may not see do not exist for them
        clauses.append(req.access.clause(resource))
    return clauses


def select_matches(req: SearchRequest, *, now: datetime, snapshot: int | None, limit: int | None,
                   offset: int = 0, numbered: bool = False) -> Select[Any]:
    """The page query: (pk, res_type, res_id, content) ordered by ``_sort`` then pk (search.html#sort).
    ``numbered``: also ``version_id`` and ``audit_rn``, each row's place in that order counted from
    the first match (before the offset), for the page's own AuditEvent (audit/pending.py)."""
    keys = order_by(req.sort, req.resource_types)
    columns = [resource.c.pk, resource.c.res_type, resource.c.res_id, resource.c.content]
    if numbered:
        columns += [resource.c.version_id, func.row_number().over(order_by=keys).label("audit_rn")]
    stmt = select(*columns).where(*base_filter(req, now=now, snapshot=snapshot)).order_by(*keys)
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return stmt


def count_matches(req: SearchRequest, *, now: datetime, snapshot: int | None) -> Select[Any]:
    """``SELECT count(*)`` of the matches, for Bundle.total (search.html#total)."""
    return select(func.count()).select_from(resource).where(*base_filter(req, now=now, snapshot=snapshot))


def select_match_keys(req: SearchRequest, *, now: datetime) -> Select[Any]:
    """(pk, res_id) of every current match, in pk order (conditional interactions, http.html#ccreate)."""
    return select(resource.c.pk, resource.c.res_id).where(*base_filter(req, now=now)).order_by(resource.c.pk)


# -- criteria -------------------------------------------------------------------------------------

def criterion_clause(res: FromClause, rtype: str | None, crit: Criterion | HasCriterion,
                     now: datetime, *, access: Any = None) -> Cond:
    """The condition that resource row ``res`` (of type ``rtype``, None = any) meets ``crit``;
    ``access`` (SearchRequest.access) also limits the resources chains and ``_has`` look into."""
    if isinstance(crit, HasCriterion):
        return _has_clause(res, crit, now, access)
    if isinstance(crit, SpecialCriterion):
        return special_clause(res, rtype, crit, access)
    if isinstance(crit, FilterCriterion):
        from .filter_sql import filter_clause  # filter_sql builds on this module
        return filter_clause(res, rtype, crit, now, access)
    param = crit.param
    if param.code == "_id":
        return _id_clause(res, crit)
    if param.code == "_lastUpdated":
        return _last_updated_clause(res, crit, now)
    if crit.chain:
        return or_(*(_chain_clause(res, rtype, crit, target, inner, now, access) for target, inner in crit.chain))
    if param.type == "composite":
        from .composite import composite_clause
        return composite_clause(res, rtype, crit, now)
    if param.type == "special":
        from .geo import near_clause
        return near_clause(res, rtype, crit)
    code = param.code
    table = INDEX_TABLES[param.type]
    if param.type == "reference" and crit.modifier == "identifier":
        table, code = idx_token, f"{param.code}:identifier"
    if crit.modifier == "missing":
        present = _exists(res, rtype, table, code, None)
        return ~present if _missing(crit) else present
    if (crit.modifier in TERMINOLOGY_MODIFIERS and param.type == "token"
            and not all(isinstance(v, CodeSetValue) for v in crit.values)):
        raise TypeError(f"{crit.name}: resolve the terminology first (search.terminology)")
    t = table.alias()
    conditions = [_value_condition(t, param, crit.modifier, v, now) for v in crit.values]
    matched = _exists(res, rtype, table, code, or_(*conditions), alias=t)
    return ~matched if crit.modifier in ("not", "not-in") else matched


def _exists(res: FromClause, rtype: str | None, table: Any, code: str, cond: Cond | None,
            alias: Any = None) -> Cond:
    """Some index row of ``code`` for this resource meets ``cond``.

    With the type known this is ``pk IN (uncorrelated subquery)``: SQLite then drives the search
    from the value index instead of probing every resource of the type (PostgreSQL plans both as
    the same semi-join); whole-system searches keep a correlated EXISTS."""
    t = alias if alias is not None else table.alias()
    where = [t.c.param == code]
    if cond is not None:
        where.append(cond)
    if rtype:
        return res.c.pk.in_(select(t.c.resource_pk).where(t.c.res_type == literal(rtype), *where))
    return exists().where(t.c.resource_pk == res.c.pk, t.c.res_type == res.c.res_type, *where)


def _missing(crit: Criterion) -> bool:
    value = crit.values[0]
    assert isinstance(value, MissingValue)
    return value.missing


def _id_clause(res: FromClause, crit: Criterion) -> Cond:
    if crit.modifier == "missing":
        return false() if _missing(crit) else true()
    ids = [v.code for v in crit.values if isinstance(v, TokenValue) and v.code is not None]
    cond = res.c.res_id.in_(ids)
    return ~cond if crit.modifier == "not" else cond


def _last_updated_clause(res: FromClause, crit: Criterion, now: datetime) -> Cond:
    if crit.modifier == "missing":
        return false() if _missing(crit) else true()
    col = res.c.last_updated
    return or_(*(date_condition(v, col, col, now) for v in crit.values if isinstance(v, DateValue)))


def _chain_clause(res: FromClause, rtype: str | None, crit: Criterion, target: str,
                  inner: Criterion | HasCriterion, now: datetime, access: Any = None) -> Cond:
    """search.html#chaining: a reference of ``res`` points at a current ``target`` meeting ``inner``."""
    r = idx_reference.alias()
    t = resource.alias()
    return exists().where(*_visible(access, t),
        r.c.resource_pk == res.c.pk,
        r.c.res_type == (literal(rtype) if rtype else res.c.res_type),
        r.c.param == crit.param.code, r.c.target_type == target,
        t.c.res_type == target, t.c.res_id == r.c.target_id, t.c.deleted == false(),
        criterion_clause(t, target, inner, now, access=access))


def _has_clause(res: FromClause, crit: HasCriterion, now: datetime, access: Any = None) -> Cond:
    """search.html#has: some current ``source_type`` resource refers to ``res`` and meets the rest."""
    r = idx_reference.alias()
    s = resource.alias()
    return exists().where(*_visible(access, s),
        r.c.res_type == crit.source_type, r.c.param == crit.ref_param.code,
        r.c.target_type == res.c.res_type, r.c.target_id == res.c.res_id,
        s.c.pk == r.c.resource_pk, s.c.res_type == crit.source_type, s.c.deleted == false(),
        criterion_clause(s, crit.source_type, crit.criterion, now, access=access))


def _visible(access: Any, res: FromClause) -> list[Cond]:
    return [] if access is None else [access.clause(res)]


def _value_condition(t: Any, param: SearchParam, mod: str | None, v: SearchValue, now: datetime) -> Cond:
    handler = _HANDLERS.get(type(v))
    if handler is None:  # pragma: no cover - parse never produces anything else
        raise TypeError(f"no SQL for {type(v).__name__}")
    return handler(t, param, mod, v, now)


def _token(t: Any, _p: SearchParam, _m: str | None, v: TokenValue, _now: datetime) -> Cond:
    conds = []
    if v.code is not None:
        conds.append(t.c.code == v.code)
    if v.system == "":
        conds.append(t.c.system.is_(None))
    elif v.system is not None:
        conds.append(t.c.system == v.system)
    return and_(*conds)


def _typed_identifier(t: Any, _p: SearchParam, _m: str | None, v: TypedIdentifierValue,
                      _now: datetime) -> Cond:
    return and_(t.c.type_system == v.type_system, t.c.type_code == v.type_code, t.c.code == v.value)


def _text(t: Any, _p: SearchParam, _m: str | None, v: TextValue, _now: datetime) -> Cond:
    # idx_token.text is stored as written (not accent-folded): try the folded and the plain form.
    lowered = func.lower(t.c.text)
    forms = {v.norm, v.lower or v.norm}
    return or_(*(lowered.like(_like_prefix(f), escape="\\") for f in sorted(forms)))


def _string(t: Any, _p: SearchParam, mod: str | None, v: StringValue, _now: datetime) -> Cond:
    if mod == "exact":
        return t.c.value_exact == v.value
    if mod == "contains":
        return t.c.value_norm.like("%" + _like_escape(v.norm) + "%", escape="\\")
    return t.c.value_norm.like(_like_prefix(v.norm), escape="\\")


def _date(t: Any, _p: SearchParam, _m: str | None, v: DateValue, now: datetime) -> Cond:
    return date_condition(v, t.c.low, t.c.high, now)


def _number(t: Any, _p: SearchParam, _m: str | None, v: NumberValue, _now: datetime) -> Cond:
    return number_condition(v.prefix, v.value, v.low, v.high, t.c.value)


def _quantity(t: Any, _p: SearchParam, _m: str | None, v: QuantityValue, _now: datetime) -> Cond:
    conds = [number_condition(v.prefix, v.value, v.low, v.high, t.c.value)]
    if v.system is not None:
        conds.append(t.c.system == v.system)
    if v.code is not None:
        conds.append(or_(t.c.code == v.code, t.c.unit == v.code) if v.code_or_unit else t.c.code == v.code)
    return and_(*conds)


def _reference(t: Any, _p: SearchParam, _m: str | None, v: ReferenceValue, _now: datetime) -> Cond:
    conds = []
    if v.url is not None:
        conds.append(t.c.target_url == v.url)
    if v.id is not None:
        conds.append(t.c.target_id == v.id)
    if v.type is not None:
        conds.append(t.c.target_type == v.type)
    if v.version is not None:
        conds.append(t.c.target_version == v.version)
    return and_(*conds)


def _uri(t: Any, _p: SearchParam, mod: str | None, v: UriValue, _now: datetime) -> Cond:
    if mod == "below":
        # LIKE for the index, substr for case-sensitivity (SQLite's LIKE ignores ASCII case).
        return and_(t.c.value.like(_like_prefix(v.value), escape="\\"),
                    func.substr(t.c.value, 1, len(v.value)) == v.value)
    if mod == "above":
        return t.c.value.in_(uri_ancestors(v.value))
    return t.c.value == v.value


def _codes(t: Any, _p: SearchParam, _m: str | None, v: CodeSetValue, _now: datetime) -> Cond:
    return codes_condition(t.c.system, t.c.code, v)


_HANDLERS: dict[type, Callable[..., Cond]] = {
    TokenValue: _token, TypedIdentifierValue: _typed_identifier, TextValue: _text, StringValue: _string,
    DateValue: _date, NumberValue: _number, QuantityValue: _quantity, ReferenceValue: _reference,
    UriValue: _uri, CodeSetValue: _codes,
}


def date_condition(v: DateValue, low: Any, high: Any, now: datetime) -> Cond:
    """search.html#prefix for ranges: the target [low, high] (NULL = unbounded) against the search
    value's range [s_low, s_high]; e.g. ``eq`` = the search range contains the target range,
    ``gt`` = the range above the search value overlaps the target, ``sa`` = the target starts after."""
    s_low, s_high = v.low, v.high
    contained = and_(low.is_not(None), high.is_not(None), *_bounded(low >= s_low, s_low),
                     *_bounded(high <= s_high, s_high))
    above = or_(high.is_(None), high > s_high) if s_high is not None else false()
    below = or_(low.is_(None), low < s_low) if s_low is not None else false()
    if v.prefix == "eq":
        return contained
    if v.prefix == "ne":
        return not_(contained)
    if v.prefix == "gt":
        return above
    if v.prefix == "lt":
        return below
    if v.prefix == "ge":
        return or_(above, contained)
    if v.prefix == "le":
        return or_(below, contained)
    if v.prefix == "sa":
        return and_(low.is_not(None), low > s_high) if s_high is not None else false()
    if v.prefix == "eb":
        return and_(high.is_not(None), high < s_low) if s_low is not None else false()
    # ap: overlap with the search range widened by 10% of its distance from now (search.html#prefix).
    anchor = s_low or s_high or now
    slack = max(abs(now - anchor) / 10, timedelta(days=1))
    conds = []
    if s_high is not None:
        conds.append(or_(low.is_(None), low <= s_high + slack))
    if s_low is not None:
        conds.append(or_(high.is_(None), high >= s_low - slack))
    return and_(*conds)


def _bounded(cond: Cond, bound: Any) -> list[Cond]:
    return [] if bound is None else [cond]


def number_condition(prefix: str, value: Decimal, low: Decimal, high: Decimal, col: Any) -> Cond:
    """search.html#number: ``eq``/``ne`` use the implicit range of the search value's precision
    ([99.5, 100.5) for 100); ``gt``/``lt``/``ge``/``le`` (and ``sa``/``eb``) compare with the exact
    value; ``ap`` allows 10% either side."""
    v, lo, hi = float(value), float(low), float(high)
    if prefix == "eq":
        return and_(col >= lo, col < hi)
    if prefix == "ne":
        return or_(col.is_(None), col < lo, col >= hi)
    if prefix in ("gt", "sa"):
        return col > v
    if prefix in ("lt", "eb"):
        return col < v
    if prefix == "ge":
        return col >= v
    if prefix == "le":
        return col <= v
    slack = max(abs(v) / 10, hi - v)
    return and_(col >= v - slack, col <= v + slack)


def uri_ancestors(value: str) -> list[str]:
    """search.html#uri ``:above``: the value and every path prefix of it (with and without the
    trailing slash), e.g. http://acme.org/fhir/ValueSet/123 → http://acme.org/fhir/ValueSet, …"""
    out = {value}
    scheme_end = value.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    for i, ch in enumerate(value):
        if ch == "/" and i >= start:
            out.add(value[:i])
            out.add(value[:i + 1])
    return sorted(out)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_prefix(text: str) -> str:
    return _like_escape(text) + "%"


# -- sorting --------------------------------------------------------------------------------------

_SORT_COLUMN = {"string": "value_norm", "token": "code", "number": "value", "quantity": "value",
                "reference": "target_id", "uri": "value"}


def order_by(keys: tuple[SortKey, ...], resource_types: tuple[str, ...]) -> list[Any]:
    """search.html#sort: each key in turn, resources without a value last, then pk so paging is stable.
    A date sorts on the start of its range ascending and on its end descending."""
    out: list[Any] = []
    rtype = resource_types[0] if len(resource_types) == 1 else None
    for key in keys:
        expr = sort_value(key, rtype)
        # NULLS LAST (PostgreSQL; SQLite >= 3.30) evaluates the correlated sort value only once per row.
        out.append((expr.desc() if key.descending else expr.asc()).nulls_last())
    out.append(resource.c.pk.asc())
    return out


def sort_value(key: SortKey, rtype: str | None) -> Any:
    """The value ``resource`` sorts on for ``key``: a column or a correlated scalar subquery."""
    param = key.param
    if param.code == "_id":
        return resource.c.res_id
    if param.code == "_lastUpdated":
        return resource.c.last_updated
    t = INDEX_TABLES[param.type].alias()
    if param.type == "date":
        agg = func.max(t.c.high) if key.descending else func.min(t.c.low)
    else:
        col = t.c[_SORT_COLUMN[param.type]]
        agg = func.max(col) if key.descending else func.min(col)
    return (select(agg).where(t.c.resource_pk == resource.c.pk, t.c.param == param.code,
                              t.c.res_type == (literal(rtype) if rtype else resource.c.res_type))
            .scalar_subquery())
