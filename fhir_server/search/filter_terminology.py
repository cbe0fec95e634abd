"""Terminology for ``_filter`` on tokens (search_filter.html#ops): ``in``/``ni`` (a ValueSet) and
``ss``/``sb`` (subsumption), answered from the ValueSets and CodeSystems this server holds
(profiles/ is loaded into the database at start-up, and clients may create more).

``resolve_terminology`` runs once per search, before SQL is built: it replaces every
``ValueSetRef`` and ``ConceptRef`` of a bound filter by the concrete ``CodeSet`` it stands for.

* A ValueSet is expanded from ``compose`` (include/exclude of concept lists, whole systems,
  ``valueSet`` imports, and the ``concept`` filters ``is-a``, ``descendent-of``, ``=`` and ``in``
  on a held CodeSystem) or, without ``compose``, from ``expansion.contains``.
* Subsumption follows a held CodeSystem's hierarchy: nested ``concept`` and the ``parent`` /
  ``child`` properties (codesystem.html#hierarchy). ``ss`` ("the value subsumes a concept in the
  set") matches the concept and its descendants; ``sb`` the concept and its ancestors.

Anything that cannot be answered exactly (an unknown ValueSet or CodeSystem, a CodeSystem not held
in full, another filter operator) is a 400 naming the value's position, never a silent guess.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, false, select

from ..storage.tables import idx_uri, resource
from .filter import FilterError
from .filter_bind import (Bound, BoundLogical, BoundNot, BoundReference, BoundTest, CodeSet, ConceptRef,
                          FilterCriterion, ValueSetRef)
from .parse import SearchRequest

MAX_IMPORT_DEPTH = 8


def resolve_terminology(conn: Connection, req: SearchRequest, base_url: str | None) -> SearchRequest:
    """``req`` with every terminology value of its ``_filter`` criteria resolved (see module doc)."""
    if not any(isinstance(c, FilterCriterion) and _needs(c.node) for c in req.criteria):
        return req
    resolver = _Resolver(conn, (base_url or "").rstrip("/"))
    criteria = tuple(replace(c, node=resolver.node(c.node)) if isinstance(c, FilterCriterion) else c
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


Part = tuple[str, "frozenset[str] | None"]


@dataclass
class _Resolver:
    conn: Connection
    base_url: str
    _cache: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)

    def node(self, node: Bound) -> Bound:
        if isinstance(node, BoundLogical):
            return replace(node, left=self.node(node.left), right=self.node(node.right))
        if isinstance(node, BoundNot):
            return replace(node, operand=self.node(node.operand))
        if isinstance(node, BoundReference):
            return replace(node, targets=tuple((t, None if inner is None else self.node(inner))
                                               for t, inner in node.targets))
        if isinstance(node.value, ValueSetRef):
            return replace(node, value=self._value_set(node.value.reference, node.position))
        if isinstance(node.value, ConceptRef):
            return replace(node, value=self._subsumption(node.op, node.value, node.position))
        return node

    # -- ValueSet --------------------------------------------------------------------------------

    def _value_set(self, reference: str, position: int, depth: int = 0) -> CodeSet:
        if depth > MAX_IMPORT_DEPTH:
            raise FilterError(f"ValueSet imports nest deeper than {MAX_IMPORT_DEPTH}", position)
        vs = self._find("ValueSet", reference)
        if vs is None:
            raise FilterError(f"ValueSet '{reference}' is not held by this server", position)
        compose = vs.get("compose")
        if compose:
            include = tuple(p for inc in compose.get("include") or []
                            for p in self._component(inc, reference, position, depth))
            exclude = tuple(p for exc in compose.get("exclude") or []
                            for p in self._component(exc, reference, position, depth))
            return CodeSet(include, exclude)
        contains = (vs.get("expansion") or {}).get("contains")
        if contains:
            return CodeSet(_group(_flatten_contains(contains)))
        raise FilterError(f"ValueSet '{reference}' has neither compose nor expansion", position)

    def _component(self, comp: dict[str, Any], vs: str, position: int, depth: int) -> list[Part]:
        system = comp.get("system")
        imports = comp.get("valueSet") or []
        if imports:
            if system or len(imports) > 1:
                raise FilterError(f"ValueSet '{vs}' intersects value sets, which this server cannot expand",
                                  position)
            inner = self._value_set(imports[0], position, depth + 1)
            if inner.exclude:
                raise FilterError(f"ValueSet '{vs}' imports a value set with exclusions", position)
            return list(inner.include)
        if not isinstance(system, str) or not system:
            raise FilterError(f"ValueSet '{vs}' has a component without a system", position)
        if comp.get("concept"):
            return [(system, frozenset(str(c["code"]) for c in comp["concept"] if "code" in c))]
        filters = comp.get("filter") or []
        if not filters:
            return [(system, None)]
        codes: set[str] | None = None
        for f in filters:
            found = self._filter_codes(system, f, vs, position)
            codes = found if codes is None else codes & found
        return [(system, frozenset(codes or ()))]

    def _filter_codes(self, system: str, f: dict[str, Any], vs: str, position: int) -> set[str]:
        """valueset-filter-operator codes on the ``concept`` property of a held CodeSystem."""
        op, value = f.get("op"), str(f.get("value", ""))
        if f.get("property") != "concept" or op not in ("is-a", "descendent-of", "=", "in"):
            raise FilterError(f"ValueSet '{vs}' filters on {f.get('property')} {op}, which this server "
                              "cannot expand (it supports concept is-a, descendent-of, = and in)", position)
        if op in ("=", "in"):
            return {c.strip() for c in value.split(",") if c.strip()} if op == "in" else {value}
        tree = self._hierarchy(system, position)
        below = tree.descendants(value)
        return below | {value} if op == "is-a" else below

    # -- subsumption -----------------------------------------------------------------------------

    def _subsumption(self, op: str, concept: ConceptRef, position: int) -> CodeSet:
        tree = self._hierarchy(concept.system, position)
        if concept.code not in tree.parents:
            raise FilterError(f"code '{concept.code}' is not in CodeSystem {concept.system}", position)
        related = tree.descendants(concept.code) if op == "ss" else tree.ancestors(concept.code)
        return CodeSet(((concept.system, frozenset(related | {concept.code})),))

    def _hierarchy(self, system: str, position: int) -> "_Hierarchy":
        cs = self._find("CodeSystem", system)
        if cs is None:
            raise FilterError(f"CodeSystem {system} is not held by this server, so its hierarchy is unknown",
                              position)
        if cs.get("content") != "complete":
            raise FilterError(f"CodeSystem {system} is not held in full (content {cs.get('content')})", position)
        return _Hierarchy.of(cs)

    # -- reading ---------------------------------------------------------------------------------

    def _find(self, res_type: str, reference: str) -> dict[str, Any] | None:
        """A current ``res_type`` by ``Type/id``, by its URL on this server, or by canonical url."""
        key = (res_type, reference)
        if key not in self._cache:
            self._cache[key] = self._read(res_type, reference)
        return self._cache[key]

    def _read(self, res_type: str, reference: str) -> dict[str, Any] | None:
        local = reference
        if self.base_url and local.startswith(self.base_url + "/"):
            local = local[len(self.base_url) + 1:]
        parts = local.split("/")
        if len(parts) == 2 and parts[0] == res_type:
            row = self.conn.execute(select(resource.c.content).where(
                resource.c.res_type == res_type, resource.c.res_id == parts[1],
                resource.c.deleted == false())).first()
            return row.content if row is not None else None
        url, _, version = reference.partition("|")
        u = idx_uri.alias()
        rows = self.conn.execute(
            select(resource.c.content).where(
                resource.c.res_type == res_type, resource.c.deleted == false(),
                resource.c.pk.in_(select(u.c.resource_pk).where(u.c.res_type == res_type, u.c.param == "url",
                                                                 u.c.value == url)))
            .order_by(resource.c.last_updated.desc())).all()
        for row in rows:
            if not version or row.content.get("version") == version:
                return dict(row.content)
        return None


@dataclass
class _Hierarchy:
    """A CodeSystem's is-a graph: code → its parents (nested concepts, ``parent``/``child``)."""

    parents: dict[str, set[str]]

    @classmethod
    def of(cls, cs: dict[str, Any]) -> "_Hierarchy":
        parents: dict[str, set[str]] = {}
        stack: list[tuple[dict[str, Any], str | None]] = [(c, None) for c in cs.get("concept") or []]
        while stack:
            concept, parent = stack.pop()
            code = str(concept.get("code", ""))
            mine = parents.setdefault(code, set())
            if parent is not None:
                mine.add(parent)
            for prop in concept.get("property") or []:
                if prop.get("code") == "parent" and "valueCode" in prop:
                    mine.add(str(prop["valueCode"]))
                elif prop.get("code") == "child" and "valueCode" in prop:
                    parents.setdefault(str(prop["valueCode"]), set()).add(code)
            stack += [(child, code) for child in concept.get("concept") or []]
        return cls(parents)

    def ancestors(self, code: str) -> set[str]:
        return _closure(code, self.parents)

    def descendants(self, code: str) -> set[str]:
        children: dict[str, set[str]] = {}
        for child, ps in self.parents.items():
            for p in ps:
                children.setdefault(p, set()).add(child)
        return _closure(code, children)


def _closure(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(edges.get(start, ()))
    while stack:
        code = stack.pop()
        if code not in seen:
            seen.add(code)
            stack += edges.get(code, ())
    seen.discard(start)
    return seen


def _flatten_contains(contains: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out, stack = [], list(contains)
    while stack:
        item = stack.pop()
        if item.get("system") and item.get("code"):
            out.append((str(item["system"]), str(item["code"])))
        stack += item.get("contains") or []
    return out


def _group(pairs: list[tuple[str, str]]) -> tuple[Part, ...]:
    by_system: dict[str, set[str]] = {}
    for system, code in pairs:
        by_system.setdefault(system, set()).add(code)
    return tuple((s, frozenset(codes)) for s, codes in sorted(by_system.items()))
