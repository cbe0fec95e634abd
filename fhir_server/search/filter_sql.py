"""A bound ``_filter`` (search.filter) → one SQLAlchemy condition on a resource row.

Each comparison becomes the same ``pk IN (subquery over one index table)`` criterion the ordinary
parameters use (search.query._exists), so ``and``/``or``/``not`` are plain AND/OR/NOT of those and
``_filter`` composes with every other parameter, ``_sort``, paging, ``_include`` and ``_total``.

Operators follow search_filter.html#ops: each compares one item of the parameter's set of values
("an item in the set has an equal value"), so ``ne`` matches a resource with some unequal value;
``not(x eq y)`` is "no value equal". Values are not case sensitive (search_filter.html: "Values are
never case sensitive"): strings compare on the indexed lower-case, accent-free form; tokens and
uris compare lower-cased, which the code index still serves exactly when the value has no letters.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ColumnElement, FromClause, String, and_, exists, false, func, literal, not_, or_, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from ..errors import BadRequest
from ..storage.tables import INDEX_TABLES, idx_reference, resource
from .filter_bind import Bound, BoundLogical, BoundNot, BoundReference, BoundTest, CodeSet, FilterCriterion
from .parse import DateValue, NumberValue, QuantityValue, ReferenceValue, StringValue, TokenValue, UriValue
from .query import _exists, _quantity, _reference, date_condition, number_condition, uri_ancestors

Cond = ColumnElement[bool]


def filter_clause(res: FromClause, rtype: str | None, crit: FilterCriterion, now: datetime,
                  access: Any = None) -> Cond:
    """The condition that resource row ``res`` (of type ``rtype``; None = any) meets ``crit``;
    ``access`` (SearchRequest.access) limits the targets chains and [filters] look into."""
    return _node(res, rtype, crit.node, now, access)


def _node(res: FromClause, rtype: str | None, node: Bound, now: datetime, access: Any = None) -> Cond:
    if isinstance(node, BoundLogical):
        combine = and_ if node.op == "and" else or_
        return combine(_node(res, rtype, node.left, now, access), _node(res, rtype, node.right, now, access))
    if isinstance(node, BoundNot):
        return not_(_node(res, rtype, node.operand, now, access))
    if isinstance(node, BoundReference):
        return _follow(res, rtype, node, now, access)
    return _test(res, rtype, node, now)


def _follow(res: FromClause, rtype: str | None, node: BoundReference, now: datetime, access: Any = None) -> Cond:
    """search.html#chaining, generalised: a reference of ``res`` points at a current target that
    meets the target type's condition (chain and/or [filter])."""
    alternatives = []
    for target, inner in node.targets:
        r = idx_reference.alias()
        t = resource.alias()
        where = [r.c.resource_pk == res.c.pk, r.c.res_type == (literal(rtype) if rtype else res.c.res_type),
                 r.c.param == node.param.code, r.c.target_type == target,
                 t.c.res_type == target, t.c.res_id == r.c.target_id, t.c.deleted == false()]
        if access is not None:  # a target the caller may not see does not exist for them
            where.append(access.clause(t))
        if inner is not None:
            where.append(_node(t, target, inner, now, access))
        if node.ref is not None:
            where.append(_reference(r, node.param, None, node.ref, now))
        alternatives.append(exists().where(*where))
    found = or_(*alternatives)
    return not_(found) if node.negate else found


def _test(res: FromClause, rtype: str | None, node: BoundTest, now: datetime) -> Cond:
    param = node.param
    if param.code == "_id":
        return _id(res, node)
    if param.code == "_lastUpdated":
        if node.op == "pr":
            return true() if node.present else false()
        col = res.c.last_updated
        return _date(node, col, col, now)
    table = INDEX_TABLES[param.type]
    if node.op == "pr":  # search_filter.html: "the set is empty or not"
        present = _exists(res, rtype, table, param.code, None)
        return present if node.present else not_(present)
    t = table.alias()
    matched = _exists(res, rtype, table, param.code, _CONDITIONS[param.type](t, node, now), alias=t)
    return not_(matched) if node.op == "ni" else matched  # ni: "none of the concepts are in the value set"


def _id(res: FromClause, node: BoundTest) -> Cond:
    if node.op == "pr":
        return true() if node.present else false()
    value = node.value
    assert isinstance(value, TokenValue)
    # Exact: this server keeps ids case-sensitively (Patient/abc and Patient/ABC are two resources,
    # see the unique index on resource), and the comparison keeps that index usable.
    same = res.c.res_id == (value.code or "")
    return same if node.op == "eq" else not_(same)


def _token(t: Any, node: BoundTest, _now: datetime) -> Cond:
    """search_filter.html#ops, token eq: "Token is the same, including namespace if specified (case
    insensitive)"; the value is ``system|code``, ``|code``, ``system|`` or ``code`` (search.html#token)."""
    v = node.value
    if isinstance(v, CodeSet):  # in / ni / ss / sb, resolved by search.filter_terminology
        return _in_code_set(t, v)
    if not isinstance(v, TokenValue):
        raise BadRequest(f"_filter: the terminology operator '{node.op}' was not resolved", expression="_filter")
    conds = []
    if v.code is not None:
        conds.append(_same_text(t.c.code, v.code))
    if v.system == "":
        conds.append(t.c.system.is_(None))
    elif v.system is not None:
        conds.append(_same_text(t.c.system, v.system))
    same = and_(*conds)
    return same if node.op == "eq" else not_(func.coalesce(same, false(), type_=Boolean))


def _in_code_set(t: Any, codes: CodeSet) -> Cond:
    def part(system: str, values: frozenset[str] | None) -> Cond:
        conds = [_same_text(t.c.system, system)]
        if values is not None:
            if not values:
                return false()
            if all(c.lower() == c.upper() for c in values):
                conds.append(t.c.code.in_(sorted(values)))
            else:
                conds.append(func.lower(t.c.code).in_(sorted({c.lower() for c in values})))
        return and_(*conds)

    included = or_(*(part(*p) for p in codes.include)) if codes.include else false()
    if not codes.exclude:
        return included
    return and_(included, not_(or_(*(part(*p) for p in codes.exclude))))


def _same_text(col: Any, value: str) -> Cond:
    """Case-insensitive equality. A value without letters compares exactly, so the index on
    ``col`` still serves it (codes such as LOINC's, NHS numbers, ids)."""
    if value.lower() == value.upper():
        return col == value
    return func.lower(col) == value.lower()


def _string(t: Any, node: BoundTest, _now: datetime) -> Cond:
    """search_filter.html#ops, string: eq/ne the same character sequence, co/sw/ew somewhere / at
    the start / at the end, gt/lt/ge/le by code points; all case- and accent-insensitive."""
    v = node.value
    assert isinstance(v, StringValue)
    col, norm = t.c.value_norm, v.norm
    op = node.op
    if op == "eq":
        return col == norm
    if op == "ne":
        return col != norm
    if op in ("co", "sw", "ew"):
        pattern = ("%" if op != "sw" else "") + _like_escape(norm) + ("%" if op != "ew" else "")
        return col.like(pattern, escape="\\")
    ordered = code_point_order(col)
    return {"gt": ordered > norm, "lt": ordered < norm, "ge": ordered >= norm, "le": ordered <= norm}[op]


def _date(node: BoundTest, low: Any, high: Any, now: datetime) -> Cond:
    """search.html#prefix for eq ne gt lt ge le sa eb ap; search_filter.html#ops adds po (the
    target period overlaps the value's) and co (the target period includes the value's)."""
    v = node.value
    assert isinstance(v, DateValue)
    if node.op == "po":
        conds = []
        if v.high is not None:
            conds.append(or_(low.is_(None), low <= v.high))
        if v.low is not None:
            conds.append(or_(high.is_(None), high >= v.low))
        return and_(*conds)
    if node.op == "co":
        conds = []
        if v.low is not None:
            conds.append(or_(low.is_(None), low <= v.low))
        if v.high is not None:
            conds.append(or_(high.is_(None), high >= v.high))
        return and_(*conds)
    return date_condition(v, low, high, now)


def _date_row(t: Any, node: BoundTest, now: datetime) -> Cond:
    return _date(node, t.c.low, t.c.high, now)


def _number(t: Any, node: BoundTest, _now: datetime) -> Cond:
    """search.html#number; co (search_filter.html#ops): the item's implicit range includes the value."""
    v = node.value
    assert isinstance(v, NumberValue)
    if node.op == "co":
        value = float(v.value)
        return and_(t.c.low <= value, t.c.high >= value)
    return number_condition(v.prefix, v.value, v.low, v.high, t.c.value)


def _quantity_row(t: Any, node: BoundTest, now: datetime) -> Cond:
    v = node.value
    assert isinstance(v, QuantityValue)
    return _quantity(t, node.param, None, v, now)


def _reference_row(t: Any, node: BoundTest, now: datetime) -> Cond:
    """re: "one of the references in the set points to the given URL" (relative or absolute)."""
    v = node.value
    assert isinstance(v, ReferenceValue)
    return _reference(t, node.param, None, v, now)


def _uri(t: Any, node: BoundTest, _now: datetime) -> Cond:
    """eq ne co sw ew as for strings (case-insensitive); ss: the value subsumes the item (the item
    is at or below it, as :below); sb: the value is subsumed by the item (as :above)."""
    v = node.value
    assert isinstance(v, UriValue)
    col, value = func.lower(t.c.value), v.value.lower()
    op = node.op
    if op == "eq":
        return col == value
    if op == "ne":
        return col != value
    if op == "sb":
        return col.in_([a.lower() for a in uri_ancestors(v.value)])
    if op == "ss":
        return func.substr(col, 1, len(value)) == value
    pattern = ("%" if op != "sw" else "") + _like_escape(value) + ("%" if op != "ew" else "")
    return col.like(pattern, escape="\\")


_CONDITIONS = {"token": _token, "string": _string, "date": _date_row, "number": _number,
               "quantity": _quantity_row, "reference": _reference_row, "uri": _uri}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class code_point_order(FunctionElement[str]):
    """``col`` compared by Unicode code points (search_filter.html#ops, string gt/lt): PostgreSQL
    needs the "C" collation for that; SQLite's default BINARY collation already is."""

    type = String()
    inherit_cache = True


@compiles(code_point_order)
def _code_point_order_default(element: code_point_order, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(code_point_order, "postgresql")
def _code_point_order_postgresql(element: code_point_order, compiler: Any, **kw: Any) -> str:
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'
