"""Composite search parameters (search.html#composite): definition, index rows, parsing and SQL.

A composite parameter such as Observation ``component-code-value-quantity`` names an element
(``Observation.component``) and, per component, another SearchParameter plus an expression relative
to that element (``code``, ``value.as(Quantity)``). A resource matches when ONE element instance meets
every component: the code of one component and the value of another do not make a match.

Index: every component value of every instance is a row of ``idx_composite`` with ``param`` =
``<code>$<component index>`` and ``grp`` = the instance's number within the resource (rows of one
instance share it); an instance missing a component has no rows, since it can never match. When the
first component is a token (every R4 composite but DocumentReference ``relationship``), its
system/code is written on each row of the other components as ``anchor_system``/``anchor_code``
(one row per pair) instead of rows of its own, so ``code-value-quantity=…|8480-6$gt100`` is one
range scan of (param, anchor_code, anchor_system, value).
Search: the value is split at unescaped ``$`` and each part parsed as its component's type (so
prefixes apply where that type has them); components beyond the second (and all of them when the
first is not a token) are joined on (resource_pk, grp). Commas OR, repetition ANDs, ``:missing``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, literal, null, or_, select

from ..errors import BadRequest
from ..storage.tables import idx_composite
from .extract import Unsupported, compile_typed
from .fhirpath import parse
from .model import SearchParam
from .sequence_coordinates import COORDINATE_COMPOSITES, shifted, start_shift

log = logging.getLogger(__name__)

Row = dict[str, Any]
Cond = ColumnElement[bool]
Values = list[Any]

# Component types that can be indexed (search.html#ptypes, less composite and special).
COMPONENT_TYPES = frozenset({"token", "string", "date", "number", "quantity", "reference", "uri"})
ROW_COLUMNS: tuple[str, ...] = tuple(c.name for c in idx_composite.columns if c.name not in ("resource_pk", "res_type"))
_EMPTY_ROW: Row = dict.fromkeys(ROW_COLUMNS)
_PARAM_LENGTH = 64

# R4 4.0.1 errata: DocumentReference-relationship gives each component the other's expression (the
# reference component ``relatesto`` reads ``code``); R5 corrected it to these.
_ERRATA: dict[str, dict[str, str]] = {
    "http://hl7.org/fhir/SearchParameter/DocumentReference-relationship": {
        "http://hl7.org/fhir/SearchParameter/DocumentReference-relatesto": "target",
        "http://hl7.org/fhir/SearchParameter/DocumentReference-relation": "code",
    },
}


@dataclass(frozen=True)
class Component:
    """One component: its own parameter (type, code) and how to read it from an instance."""

    param: SearchParam
    expression: str
    from_resource: bool  # ``%resource.…``: read from the resource, whatever the instance


@dataclass(frozen=True)
class CompositeDef:
    param: SearchParam
    components: tuple[Component, ...]
    # per instance branch: (select instances from the resource, type, per-component extractors)
    branches: tuple[tuple[Callable[[Values], Values], str | None, tuple[Callable[..., Any], ...]], ...]
    names: tuple[str, ...]  # the ``param`` of each component's rows: "<code>$<index>"
    anchored: bool  # a token first component is stored as ``anchor_*`` on the other components' rows
    # Worked out once for composite_rows: the components' types and memo keys, last component first
    # (``(type, expression)``: the same expression of the same type on the same element gives the same
    # rows, whichever composite asks), and whether this is a MolecularSequence coordinate composite.
    kinds: tuple[str, ...] = ()
    keys: tuple[tuple[str, str], ...] = ()
    coordinates: bool = False


def anchored(param: SearchParam, first_type: str) -> bool:
    return first_type == "token" and len(param.components) > 1


@dataclass(frozen=True)
class CompositeValue:
    """One comma-separated value of a composite parameter: a value per component, in order."""

    components: tuple[tuple[SearchParam, Any], ...]


# -- definition ------------------------------------------------------------------------------------

def composite_def(registry: Any, param: SearchParam) -> CompositeDef | None:
    """The compiled definition of composite ``param``, or None when this server cannot evaluate it
    (a component definition unknown or of an unindexable type, or an expression outside the
    compiled FHIRPath subset). Unsupported composites stay out of the CapabilityStatement and are
    reported as unknown parameters."""
    if param.type != "composite" or not param.components:
        return None
    definition = getattr(registry, "definition", None)
    if definition is None:
        return None
    return _composite_def(definition, param)


@lru_cache(maxsize=None)
def _composite_def(definition: Callable[[str], dict[str, Any] | None], param: SearchParam) -> CompositeDef | None:
    if len(param.code) + 3 > _PARAM_LENGTH:
        return None
    errata = _ERRATA.get(param.url, {})
    components: list[Component] = []
    for url, expression in param.components:
        sp = definition(url)
        if sp is None or sp.get("type") not in COMPONENT_TYPES:
            log.info("composite %s.%s: component %s unknown or not indexable", param.resource_type, param.code, url)
            return None
        expression = errata.get(url, expression)
        comp = SearchParam(code=sp["code"], type=sp["type"], resource_type=param.resource_type,
                           expression=expression, url=url, targets=tuple(sp.get("target") or ()))
        from_resource = expression.startswith("%resource.")
        components.append(Component(comp, expression, from_resource))
    try:
        from .extract import _Compiler  # the typed compiler: instance branches keep their element type

        instance_branches = _Compiler(param.resource_type).compile(parse(param.expression), param.resource_type, True)
        branches = []
        for fn, element_type in instance_branches:
            extractors = tuple(_component_extractor(param.resource_type, element_type, c) for c in components)
            branches.append((fn, element_type, extractors))
    except Unsupported as exc:
        log.info("composite %s.%s not supported: %s", param.resource_type, param.code, exc)
        return None
    backwards = components[::-1]
    return CompositeDef(param, tuple(components), tuple(branches),
                        tuple(f"{param.code}${i}" for i in range(len(components))),
                        anchored(param, components[0].param.type),
                        tuple(c.param.type for c in backwards),
                        tuple((c.param.type, c.expression) for c in backwards),
                        param.url in COORDINATE_COMPOSITES)


def _component_extractor(resource_type: str, element_type: str | None, comp: Component) -> Callable[..., Any]:
    """``extract(resource, element) -> [(type, value)]`` for one component on one instance type."""
    if comp.from_resource:
        whole = compile_typed(resource_type, resource_type + comp.expression[len("%resource"):])
        return lambda resource, element: whole(resource)
    if element_type is None:
        raise Unsupported("instance type unknown")
    from .extract import _Compiler

    branches = _Compiler(resource_type).compile(parse(comp.expression), element_type, True)

    def extract(resource: dict[str, Any], element: Any) -> list[tuple[str | None, Any]]:
        xs = [element]
        return [(t, v) for fn, t in branches for v in fn(xs)]
    return extract


def is_supported(registry: Any, param: SearchParam) -> bool:
    return composite_def(registry, param) is not None


# -- index rows --------------------------------------------------------------------------------------

class CompositeIndexer:
    """``rows(resource)``: the ``idx_composite`` rows of every composite parameter of its type."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self._defs: dict[str, tuple[CompositeDef, ...]] = {}

    def _for_type(self, resource_type: str) -> tuple[CompositeDef, ...]:
        found = self._defs.get(resource_type)
        if found is None:
            defs = (composite_def(self.registry, p) for _, p in sorted(self.registry.params_for(resource_type).items())
                    if p.type == "composite")
            found = self._defs[resource_type] = tuple(d for d in defs if d is not None)
        return found

    def rows(self, resource_type: str, resource: dict[str, Any]) -> list[Row]:
        out: list[Row] = []
        memo: dict[Any, list[Row]] = {}  # shared by the type's composites (combo-… and component-… read alike)
        for definition in self._for_type(resource_type):
            try:
                out.extend(composite_rows(definition, resource, memo))
            except Exception:  # noqa: BLE001 - odd content must not block a write
                log.warning("composite %s.%s: value not indexable", resource_type, definition.param.code,
                            exc_info=True)
        return out


def composite_rows(definition: CompositeDef, resource: dict[str, Any],
                   memo: dict[Any, list[Row]] | None = None) -> list[Row]:
    """The rows of one composite for one resource: per instance, per component, per value.

    ``memo`` (optional, one per resource) keeps each component's rows by (type, expression, element
    instance), so Observation's ``combo-code-value-quantity`` and ``component-code-value-quantity``
    read each component's code and value once; the rows kept are never changed (rows written are
    copies)."""
    out: list[Row] = []
    grp = 0
    names, anchor = definition.names, definition.anchored
    if memo is None:
        memo = {}
    if definition.coordinates:
        # MolecularSequence coordinate composites compare in 1-based coordinates (sequence_coordinates.py)
        shifts = [start_shift(definition.param.url, c.param.url, resource) for c in reversed(definition.components)]
    else:
        shifts = [0] * len(definition.kinds)
    kinds, keys = definition.kinds, definition.keys
    for select_instances, element_type, extractors in definition.branches:
        backwards = extractors[::-1]
        for element in select_instances([resource]):
            # Last component first: it is usually the value (``value.as(Quantity)``), the one most
            # often absent, so most instances are rejected after one cheap look-up.
            per_component: list[list[Row]] = []
            element_id = id(element)
            for kind, key, extract, shift in zip(kinds, keys, backwards, shifts):
                if shift:
                    rows = shifted(component_rows(kind, extract(resource, element)), shift)
                else:
                    memo_key = (key, element_type, element_id)
                    rows = memo.get(memo_key)  # type: ignore[assignment]
                    if rows is None:
                        rows = memo[memo_key] = component_rows(kind, extract(resource, element))
                if not rows:
                    break
                per_component.append(rows)
            else:
                per_component.reverse()
                if anchor:
                    first = per_component[0]
                    for name, rows in zip(names[1:], per_component[1:]):
                        for token in first:
                            anchor_system, anchor_code = token["system"], token["code"]
                            for row in rows:
                                out.append({**row, "param": name, "grp": grp, "anchor_system": anchor_system,
                                            "anchor_code": anchor_code})
                else:
                    for name, rows in zip(names, per_component):
                        for row in rows:
                            out.append({**row, "param": name, "grp": grp})
                grp += 1
    return out


def component_rows(kind: str, values: list[tuple[str | None, Any]]) -> list[Row]:
    """Rows for a component's values, read as the parameter type reads them (search/indexer.py)."""
    if not values:
        return []
    indexer = _indexer()
    scratch: dict[str, list[Row]] = {kind: [], "token": []}
    if kind == "reference":
        indexer._emit_reference("", values, scratch)
    else:
        indexer._EMITTERS[kind]("", values, scratch)
    found = scratch[kind]
    convert = _CONVERTERS[kind]
    if len(found) == 1:  # the usual case: one value, nothing to de-duplicate
        row = convert(found[0])
        return [] if row is None else [row]
    out: list[Row] = []
    seen: set[tuple[Any, ...]] = set()
    for src in found:
        row = convert(src)
        if row is None:
            continue
        key = tuple(row.values())
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


@lru_cache(maxsize=1)
def _indexer() -> Any:
    from . import indexer  # imports this module: resolved once, at first use

    return indexer


def _token(src: Row) -> Row | None:
    if src["code"] is None and src["system"] is None:
        return None  # text-only (for :text, which components do not take)
    return {**_EMPTY_ROW, "system": src["system"], "code": src["code"]}


def _string(src: Row) -> Row:
    return {**_EMPTY_ROW, "value_norm": src["value_norm"], "value_exact": src["value_exact"]}


def _date(src: Row) -> Row:
    return {**_EMPTY_ROW, "date_low": src["low"], "date_high": src["high"]}


def _number(src: Row) -> Row:
    return {**_EMPTY_ROW, "low": src["low"], "value": src["value"], "high": src["high"]}


def _quantity(src: Row) -> Row:
    return {**_EMPTY_ROW, "low": src["low"], "value": src["value"], "high": src["high"], "system": src["system"],
            "code": src["code"], "unit": src["unit"]}


def _reference(src: Row) -> Row:
    return {**_EMPTY_ROW, "target_type": src["target_type"], "target_id": src["target_id"],
            "target_url": src["target_url"]}


def _uri(src: Row) -> Row:
    return {**_EMPTY_ROW, "value_exact": src["value"]}


# An index row of the component's own type (search/indexer.py) as an idx_composite row.
_CONVERTERS: dict[str, Callable[[Row], Row | None]] = {
    "token": _token, "string": _string, "date": _date, "number": _number, "quantity": _quantity,
    "reference": _reference, "uri": _uri,
}


# -- parsing ---------------------------------------------------------------------------------------

def parse_composite(registry: Any, full: str, param: SearchParam, mod: str | None, value: str,
                    base_url: str | None) -> Any:
    """``name[:missing]=c1$c2[$c3],…`` → Criterion (search.html#composite). Each ``$`` part is parsed
    by its component's type, with that type's prefixes (``gt100`` for a quantity); ``\\$`` ``\\,``
    ``\\|`` are escapes. Only ``:missing`` is accepted as a modifier; a part count other than the
    number of components, an empty part or a malformed part is a 400."""
    from .parse import Criterion, _parse_missing, parse_value, split_unescaped

    definition = composite_def(registry, param)
    assert definition is not None, "caller checks is_supported"
    if mod == "missing":
        return Criterion(full, param, mod, (_parse_missing(full, value),))
    if mod is not None:
        raise BadRequest(f"Modifier ':{mod}' is not supported for composite parameter '{param.code}' "
                         "(only :missing)", expression=full)
    names = "$".join(c.param.code for c in definition.components)
    values = []
    for piece in split_unescaped(value, ","):
        if piece == "":
            continue
        parts = split_unescaped(piece, "$")
        if len(parts) != len(definition.components) or any(p == "" for p in parts):
            raise BadRequest(f"'{full}' takes {len(definition.components)} values separated by '$' ({names}), "
                             f"not '{piece}'", expression=full)
        values.append(CompositeValue(tuple((c.param, parse_value(full, c.param, None, raw, base_url))
                                           for c, raw in zip(definition.components, parts))))
    if not values:
        raise BadRequest(f"No value for '{full}'", expression=full)
    return Criterion(full, param, None, tuple(values))


# -- SQL ---------------------------------------------------------------------------------------------

def composite_clause(res: Any, rtype: str | None, crit: Any, now: datetime) -> Cond:
    """The resource row ``res`` has one element instance whose components meet one of the values.

    ``pk IN (SELECT c0.resource_pk FROM idx_composite c0 JOIN idx_composite c1 ON same resource and
    grp …)``: the first component drives from its value index, the others join on
    ix_idx_composite_resource (resource_pk, param, grp)."""
    code = crit.param.code
    first = idx_composite.alias()
    if crit.modifier == "missing":  # every instance indexed has rows for its last component
        present = _in(res, rtype, first, [first.c.param == f"{code}${len(crit.param.components) - 1}"])
        return ~present if crit.values[0].missing else present
    width = len(crit.values[0].components)
    is_anchored = anchored(crit.param, crit.values[0].components[0][0].type)
    start = 1 if is_anchored else 0
    aliases: list[Any] = [None] * start + [first] + [idx_composite.alias() for _ in range(start + 1, width)]
    where: list[Cond] = [first.c.param == f"{code}${start}"]
    for i in range(start + 1, width):
        alias = aliases[i]
        where += [alias.c.resource_pk == first.c.resource_pk, alias.c.grp == first.c.grp,
                  alias.c.param == f"{code}${i}"]
    anchor = SimpleNamespace(c=SimpleNamespace(system=first.c.anchor_system, code=first.c.anchor_code))
    matches = []
    for value in crit.values:
        conds = [_component_condition(anchor if i == 0 and is_anchored else aliases[i], p, v, now)
                 for i, (p, v) in enumerate(value.components)]
        matches.append(and_(*conds))
    where.append(or_(*matches))
    return _in(res, rtype, first, where)


def _in(res: Any, rtype: str | None, first: Any, where: list[Cond]) -> Cond:
    if rtype:
        return res.c.pk.in_(select(first.c.resource_pk).where(first.c.res_type == literal(rtype), *where))
    return exists().where(first.c.resource_pk == res.c.pk, first.c.res_type == res.c.res_type, *where)


def _component_condition(t: Any, param: SearchParam, value: Any, now: datetime) -> Cond:
    """The component's own type's condition (search/query.py), on the composite table's columns."""
    from .query import _value_condition

    c = t.c
    if param.type == "date":
        cols: Any = SimpleNamespace(c=SimpleNamespace(low=c.date_low, high=c.date_high))
    elif param.type == "uri":
        cols = SimpleNamespace(c=SimpleNamespace(value=c.value_exact))
    elif param.type == "reference":
        cols = SimpleNamespace(c=SimpleNamespace(target_type=c.target_type, target_id=c.target_id,
                                                 target_url=c.target_url, target_version=null()))
    else:
        cols = t
    return _value_condition(cols, param, None, value, now)


__all__ = ["CompositeDef", "CompositeIndexer", "CompositeValue", "ROW_COLUMNS", "composite_clause",
           "composite_def", "composite_rows", "is_supported", "parse_composite"]
