"""Terminology for ``_filter`` on tokens (search_filter.html#ops): ``in``/``ni`` (a ValueSet) and
``ss``/``sb`` (subsumption), answered by :mod:`.terminology` — the same expansion and hierarchy
code that serves the ``:in``/``:not-in``/``:below``/``:above`` modifiers, with its cache.

``resolve_filter_terminology`` runs once per search, before SQL is built: it replaces every
``ValueSetRef`` and ``ConceptRef`` of a bound filter by the concrete ``CodeSet`` it stands for.
``ss`` ("the value subsumes a concept in the set") matches the concept and its descendants; ``sb``
the concept and its ancestors. Anything that cannot be answered exactly (an unknown ValueSet or
CodeSystem, a CodeSystem not held in full, an unsupported filter) is a 400 naming the value's
position in the expression, never a silent guess.
"""
from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Connection

from .filter import FilterError
from .filter_bind import (Bound, BoundLogical, BoundNot, BoundReference, BoundTest, CodeSet, ConceptRef,
                          FilterCriterion, ValueSetRef)
from .parse import SearchRequest
from .terminology import Codes, Terminology, Unexpandable, store_for


def resolve_filter_terminology(conn: Connection, req: SearchRequest, base_url: str | None) -> SearchRequest:
    """``req`` with every terminology value of its ``_filter`` criteria resolved (see module doc)."""
    if not any(isinstance(c, FilterCriterion) and _needs(c.node) for c in req.criteria):
        return req
    terminology = Terminology(conn, base_url, store_for(conn))
    criteria = tuple(replace(c, node=_node(terminology, c.node)) if isinstance(c, FilterCriterion) else c
                     for c in req.criteria)
    return replace(req, criteria=criteria)


def _needs(node: Bound | None) -> bool:
    if isinstance(node, BoundLogical):
        return _needs(node.left) or _needs(node.right)
    if isinstance(node, BoundNot):
        return _needs(node.operand)
    if isinstance(node, BoundReference):
        return any(_needs(inner) for _, inner in node.targets)
    return isinstance(node, BoundTest) and isinstance(node.value, (ValueSetRef, ConceptRef))


def _node(terminology: Terminology, node: Bound) -> Bound:
    if isinstance(node, BoundLogical):
        return replace(node, left=_node(terminology, node.left), right=_node(terminology, node.right))
    if isinstance(node, BoundNot):
        return replace(node, operand=_node(terminology, node.operand))
    if isinstance(node, BoundReference):
        return replace(node, targets=tuple((t, None if inner is None else _node(terminology, inner))
                                           for t, inner in node.targets))
    if not isinstance(node, BoundTest) or not isinstance(node.value, (ValueSetRef, ConceptRef)):
        return node
    try:
        if isinstance(node.value, ValueSetRef):
            codes = terminology.expand(node.value.reference)
        else:
            direction = "below" if node.op == "ss" else "above"
            codes = terminology.subsumption(node.value.system, node.value.code, direction)
    except Unexpandable as exc:
        raise FilterError(str(exc), node.position) from None
    return replace(node, value=_code_set(codes))


def _code_set(codes: Codes) -> CodeSet:
    by_system: dict[str, set[str]] = {}
    whole = {system for system, code in codes if code is None}
    for system, code in codes:
        if code is not None and system not in whole:
            by_system.setdefault(system, set()).add(code)
    parts = [(s, frozenset(c)) for s, c in by_system.items()] + [(s, None) for s in whole]
    return CodeSet(tuple(sorted(parts, key=lambda p: p[0])))
