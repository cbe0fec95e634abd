"""Token search against the terminology this server holds (search.html#token):

* ``:in`` / ``:not-in`` — the coding is (not) in the ValueSet named by the value: a canonical URL
  (``ValueSet.url``, optionally ``|version``) or a literal reference (``ValueSet/id`` or the
  absolute URL of one on this server);
* ``:below`` / ``:above`` — ``system|code``: the coding is subsumed by (is-a, the code itself
  included) / subsumes the code, following the CodeSystem's concept hierarchy.

The terminology is what the database holds: the conformance resources loaded from profiles/ at
migrate time and the ValueSets and CodeSystems clients stored. Expansion follows
valueset.html#compose: the union of ``compose.include`` minus ``compose.exclude``; an include is
listed concepts, a whole CodeSystem (content ``complete``), filters over a CodeSystem (``is-a``,
``descendent-of``, ``is-not-a``, ``generalizes``, ``in``, ``not-in``, ``=``, ``regex``,
``exists``), and/or other ValueSets (intersected). A ValueSet without ``compose`` is used through
its ``expansion.contains``. The hierarchy (codesystem.html#hierarchy) comes from nested concepts
(unless ``hierarchyMeaning`` says they are not is-a) and the ``parent``/``child`` concept
properties (http://hl7.org/fhir/concept-properties).

A ValueSet or CodeSystem that is unknown or cannot be expanded is a 400 naming the parameter, never
an empty result. :func:`resolve_terminology` turns these values into :class:`CodeSetValue` before
the SQL is built (search.query), so the SQL stays a plain ``(system, code) IN …``.

Expansions are cached per process, keyed by the database and a fingerprint of every ValueSet and
CodeSystem version in it (count and latest ``lastUpdated`` of their history, one index-only query
per search that uses terminology): a change by any worker, or a rolled-back one, changes the
fingerprint, so a stale expansion is never used.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, and_, false, func, select

from ..errors import BadRequest, Issue
from ..storage.tables import idx_uri, resource, resource_history
from .parse import Criterion, HasCriterion, SearchRequest, TokenValue, UriValue

TERMINOLOGY_MODIFIERS = frozenset({"in", "not-in", "below", "above"})
# An expansion larger than this is refused (it would become an IN list of that many codes).
MAX_EXPANSION = 10_000
_PARENT = "http://hl7.org/fhir/concept-properties#parent"
_CHILD = "http://hl7.org/fhir/concept-properties#child"
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
Codes = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class CodeSetValue:
    """A token value resolved against the terminology: the coding is one of ``codes``."""

    codes: Codes
    source: str  # what the client wrote, for messages


class Unexpandable(Exception):
    """A ValueSet or CodeSystem this server cannot use (becomes a 400 naming the parameter)."""

    def __init__(self, message: str, code: str = "not-supported") -> None:
        super().__init__(message)
        self.code = code


# -- CodeSystem hierarchy -----------------------------------------------------------------------

@dataclass
class CodeSystemIndex:
    """One CodeSystem's concepts and is-a hierarchy (codesystem.html#hierarchy)."""

    url: str
    version: str | None
    content: str
    concepts: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    parents: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, cs: dict[str, Any]) -> "CodeSystemIndex":
        index = cls(str(cs.get("url") or ""), cs.get("version"), str(cs.get("content") or "complete"))
        declared = {p.get("code"): p.get("uri") for p in cs.get("property") or () if isinstance(p, dict)}
        parent_props = {"parent"} | {c for c, uri in declared.items() if uri == _PARENT}
        child_props = {"child"} | {c for c, uri in declared.items() if uri == _CHILD}
        nesting_is_a = cs.get("hierarchyMeaning") in (None, "is-a")

        def walk(concepts: Any, parent: str | None) -> None:
            for concept in concepts or ():
                code = concept.get("code") if isinstance(concept, dict) else None
                if not isinstance(code, str):
                    continue
                index.concepts[code] = concept
                if parent is not None and nesting_is_a:
                    index._edge(parent, code)
                for prop in concept.get("property") or ():
                    value = _property_value(prop)
                    if prop.get("code") in parent_props and value:
                        index._edge(value, code)
                    elif prop.get("code") in child_props and value:
                        index._edge(code, value)
                walk(concept.get("concept"), code)

        walk(cs.get("concept"), None)
        return index

    def _edge(self, parent: str, child: str) -> None:
        self.children.setdefault(parent, set()).add(child)
        self.parents.setdefault(child, set()).add(parent)

    def descendants(self, code: str) -> set[str]:
        return _closure(code, self.children)

    def ancestors(self, code: str) -> set[str]:
        return _closure(code, self.parents)

    def require(self, code: str) -> None:
        if code not in self.concepts:
            raise Unexpandable(f"Code '{code}' is not in CodeSystem {self.url}", "code-invalid")


def _closure(start: str, edges: dict[str, set[str]]) -> set[str]:
    """Every code reachable from ``start`` (not ``start`` itself unless on a cycle)."""
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        code = todo.pop()
        if code not in seen:
            seen.add(code)
            todo.extend(edges.get(code, ()))
    seen.discard(start)
    return seen


def _property_value(prop: Any) -> str | None:
    if not isinstance(prop, dict):
        return None
    for key, value in prop.items():
        if key.startswith("value"):
            if isinstance(value, dict):  # valueCoding
                return value.get("code")
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(value)
    return None


# -- expansion ----------------------------------------------------------------------------------

class Terminology:
    """The ValueSets and CodeSystems held in the database ``conn`` sees, with expansion and
    subsumption. ``store`` memoises results valid for one fingerprint (see :func:`_store_for`)."""

    def __init__(self, conn: Connection, base_url: str | None, store: dict[Any, Any]) -> None:
        self.conn = conn
        self.base_url = (base_url or "").rstrip("/")
        self.store = store

    # lookups

    def _current(self, res_type: str, url: str) -> list[dict[str, Any]]:
        u = idx_uri.alias()
        rows = self.conn.execute(
            select(resource.c.content).join(u, u.c.resource_pk == resource.c.pk)
            .where(u.c.res_type == res_type, u.c.param == "url", u.c.value == url,
                   resource.c.res_type == res_type, resource.c.deleted == false())
            .order_by(resource.c.last_updated.desc(), resource.c.pk.desc()))
        return [r.content for r in rows if r.content is not None and r.content.get("url") == url]

    def _by_id(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(select(resource.c.content).where(
            resource.c.res_type == res_type, resource.c.res_id == res_id, resource.c.deleted == false())).first()
        return None if row is None else row.content

    def value_set(self, ref: str) -> dict[str, Any]:
        """search.html#token ``:in``: a literal reference (``ValueSet/id``, or its absolute URL
        on this server) or a canonical ``url[|version]``."""
        literal = ref[len(self.base_url) + 1:] if self.base_url and ref.startswith(self.base_url + "/") else ref
        parts = literal.split("/")
        if len(parts) == 2 and parts[0] == "ValueSet" and _ID.fullmatch(parts[1]):
            found = self._by_id("ValueSet", parts[1])
            if found is not None:
                return found  # else it may still be some ValueSet's canonical url
        url, _, version = ref.partition("|")
        candidates = self._current("ValueSet", url)
        if version:
            candidates = [c for c in candidates if c.get("version") == version]
        if not candidates:
            raise Unexpandable(f"No ValueSet {ref} (by url, or by id for ValueSet/[id]) is on this server",
                               "not-found")
        return candidates[0]

    def code_system(self, url: str, version: str | None = None) -> CodeSystemIndex:
        key = ("CodeSystem", url, version)
        if key not in self.store:
            candidates = self._current("CodeSystem", url)
            if version:
                candidates = [c for c in candidates if c.get("version") == version]
            if not candidates:
                what = f"{url}|{version}" if version else url
                raise Unexpandable(f"CodeSystem {what} is not on this server", "not-found")
            self.store[key] = CodeSystemIndex.build(candidates[0])
        index = self.store[key]
        assert isinstance(index, CodeSystemIndex)
        return index

    # expansion (valueset.html#compose)

    def expand(self, ref: str, seen: tuple[str, ...] = ()) -> Codes:
        key = ("ValueSet", ref)
        if key in self.store:
            return self.store[key]  # type: ignore[no-any-return]
        if ref in seen:
            raise Unexpandable(f"ValueSet {ref} includes itself", "processing")
        vs = self.value_set(ref)
        codes = self._expand_resource(vs, seen + (ref,))
        if len(codes) > MAX_EXPANSION:
            raise Unexpandable(f"ValueSet {ref} has {len(codes)} codes, more than the {MAX_EXPANSION} "
                               f"this server searches with", "too-costly")
        self.store[key] = codes
        return codes

    def _expand_resource(self, vs: dict[str, Any], seen: tuple[str, ...]) -> Codes:
        compose = vs.get("compose")
        if isinstance(compose, dict):
            try:
                included: set[tuple[str, str]] = set()
                for inc in compose.get("include") or ():
                    included |= self._part(inc, seen)
                for exc in compose.get("exclude") or ():
                    included -= self._part(exc, seen)
                return frozenset(included)
            except Unexpandable:
                if not _contains(vs):
                    raise
        if _contains(vs):
            return frozenset(_expansion_codes(vs["expansion"]["contains"]))
        raise Unexpandable(f"ValueSet {vs.get('url') or vs.get('id')} has neither compose nor expansion",
                           "processing")

    def _part(self, inc: dict[str, Any], seen: tuple[str, ...]) -> set[tuple[str, str]]:
        """One ``compose.include`` (or exclude): its system part intersected with its value sets."""
        system, version = inc.get("system"), inc.get("version")
        result: set[tuple[str, str]] | None = None
        if system:
            if inc.get("concept") and inc.get("filter"):
                raise Unexpandable(f"An include of {system} has both concept and filter (vsd-3)", "invalid")
            if inc.get("concept"):
                result = {(system, c["code"]) for c in inc["concept"] if isinstance(c.get("code"), str)}
            else:
                cs = self.code_system(system, version)
                if inc.get("filter"):
                    codes: set[str] | None = None
                    for flt in inc["filter"]:
                        found = _apply_filter(cs, flt)
                        codes = found if codes is None else codes & found
                    result = {(system, c) for c in codes or ()}
                else:
                    if cs.content != "complete":
                        raise Unexpandable(f"CodeSystem {system} has content '{cs.content}': its codes cannot "
                                           f"all be listed", "not-supported")
                    result = {(system, c) for c in cs.concepts}
        for other in inc.get("valueSet") or ():
            codes_of_other = set(self.expand(other, seen))
            result = codes_of_other if result is None else result & codes_of_other
        if result is None:
            raise Unexpandable("A compose include names neither a system nor a valueSet", "invalid")
        return result

    def subsumption(self, system: str, code: str, direction: str) -> Codes:
        """``:below`` (the code and what it subsumes) or ``:above`` (the code and its ancestors)."""
        cs = self.code_system(system)
        cs.require(code)
        related = cs.descendants(code) if direction == "below" else cs.ancestors(code)
        if len(related) >= MAX_EXPANSION:
            raise Unexpandable(f"{system}|{code} has more than the {MAX_EXPANSION} related codes this server "
                               f"searches with", "too-costly")
        return frozenset((system, c) for c in related | {code})


def _contains(vs: dict[str, Any]) -> bool:
    expansion = vs.get("expansion")
    return isinstance(expansion, dict) and bool(expansion.get("contains"))


def _expansion_codes(contains: Iterable[Any]) -> Iterable[tuple[str, str]]:
    for item in contains:
        if isinstance(item, dict):
            if isinstance(item.get("system"), str) and isinstance(item.get("code"), str):
                yield item["system"], item["code"]
            yield from _expansion_codes(item.get("contains") or ())


def _apply_filter(cs: CodeSystemIndex, flt: dict[str, Any]) -> set[str]:
    """valueset.html#filters over one CodeSystem (filter-operator codes)."""
    prop, op, value = flt.get("property"), flt.get("op"), str(flt.get("value", ""))
    by_code = prop in ("concept", "code")
    if op in ("is-a", "descendent-of", "is-not-a", "generalizes") and not by_code:
        raise Unexpandable(f"Filter '{prop} {op}' is not supported (only on concept)", "not-supported")
    if op == "is-a":
        cs.require(value)
        return cs.descendants(value) | {value}
    if op == "descendent-of":
        cs.require(value)
        return cs.descendants(value)
    if op == "is-not-a":
        cs.require(value)
        return set(cs.concepts) - cs.descendants(value) - {value}
    if op == "generalizes":
        cs.require(value)
        return cs.ancestors(value) | {value}
    values_of = (lambda c: {c}) if by_code else (lambda c: _concept_values(cs.concepts[c], str(prop)))
    if op in ("=", "in", "not-in"):
        wanted = {value} if op == "=" else {v.strip() for v in value.split(",")}
        hits = {c for c in cs.concepts if values_of(c) & wanted}
        return set(cs.concepts) - hits if op == "not-in" else hits
    if op == "regex":
        try:
            pattern = re.compile(value)
        except re.error:
            raise Unexpandable(f"Filter regex '{value}' is not a valid regular expression", "invalid") from None
        return {c for c in cs.concepts if any(pattern.fullmatch(v) for v in values_of(c))}
    if op == "exists" and not by_code:
        has = {c for c in cs.concepts if values_of(c)}
        return has if value == "true" else set(cs.concepts) - has
    raise Unexpandable(f"Filter operator '{op}' on '{prop}' is not supported", "not-supported")


def _concept_values(concept: dict[str, Any], prop: str) -> set[str]:
    if prop == "display":
        return {concept["display"]} if isinstance(concept.get("display"), str) else set()
    return {v for p in concept.get("property") or () if isinstance(p, dict) and p.get("code") == prop
            for v in [_property_value(p)] if v is not None}


# -- the process-wide cache, checked against the database ------------------------------------------

_STORES: "OrderedDict[tuple[str, Any], dict[Any, Any]]" = OrderedDict()
_STORES_LOCK = threading.Lock()
_MAX_STORES = 8


def _fingerprint(conn: Connection) -> Any:
    """Changes whenever a ValueSet or CodeSystem version is written (or one is rolled back and
    another written): history is append-only and stamped to the microsecond."""
    h = resource_history
    row = conn.execute(select(func.count(), func.max(h.c.last_updated))
                       .where(h.c.res_type.in_(("CodeSystem", "ValueSet")))).one()
    return tuple(row)


def _store_for(conn: Connection) -> dict[Any, Any]:
    key = (str(conn.engine.url), _fingerprint(conn))
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = {}
            while len(_STORES) > _MAX_STORES:
                _STORES.popitem(last=False)
        else:
            _STORES.move_to_end(key)
        return store


# -- search integration ---------------------------------------------------------------------------

def uses_terminology(req: SearchRequest) -> bool:
    return any(_needs(c) for c in req.criteria)


def _needs(crit: Any) -> bool:
    if isinstance(crit, HasCriterion):
        return _needs(crit.criterion)
    if isinstance(crit, Criterion):
        return _is_terminology(crit) or any(_needs(inner) for _t, inner in crit.chain)
    return False


def _is_terminology(crit: Criterion) -> bool:
    """A token criterion with a terminology modifier (uri parameters have their own :below/:above)."""
    return crit.modifier in TERMINOLOGY_MODIFIERS and crit.param.type == "token"


def resolve_terminology(conn: Connection, req: SearchRequest, base_url: str | None) -> SearchRequest:
    """``req`` with every ``:in``/``:not-in``/``:below``/``:above`` token value replaced by the
    :class:`CodeSetValue` it stands for; BadRequest (400) naming the parameter when a ValueSet or
    CodeSystem is unknown or cannot be expanded."""
    if not uses_terminology(req):
        return req
    terminology = Terminology(conn, base_url, _store_for(conn))
    return replace(req, criteria=tuple(_resolve(terminology, c) for c in req.criteria))


def _resolve(terminology: Terminology, crit: Any) -> Any:
    if isinstance(crit, HasCriterion):
        return replace(crit, criterion=_resolve(terminology, crit.criterion))
    if not isinstance(crit, Criterion):
        return crit
    if crit.chain:
        return replace(crit, chain=tuple((t, _resolve(terminology, inner)) for t, inner in crit.chain))
    if not _is_terminology(crit):
        return crit
    try:
        values = tuple(_resolve_value(terminology, crit.name, crit.modifier, v) for v in crit.values)
    except Unexpandable as exc:
        raise BadRequest(issues=[Issue("error", exc.code, f"{crit.name}: {exc}", (crit.name,))]) from None
    return replace(crit, values=values)


def _resolve_value(terminology: Terminology, name: str, modifier: str, value: Any) -> CodeSetValue:
    if modifier in ("in", "not-in"):
        assert isinstance(value, UriValue)
        if not value.value:
            raise BadRequest(f"'{name}' needs a ValueSet URL or ValueSet/id", expression=name)
        return CodeSetValue(terminology.expand(value.value), value.value)
    assert isinstance(value, TokenValue)
    if not value.system or not value.code:
        raise BadRequest(f"':{modifier}' needs system|code (the CodeSystem whose hierarchy to follow)",
                         expression=name)
    return CodeSetValue(terminology.subsumption(value.system, value.code, modifier),
                        f"{value.system}|{value.code}")


def codes_condition(system_col: Any, code_col: Any, value: CodeSetValue) -> Any:
    """SQL: (system, code) is one of ``value.codes``, grouped by system so each is one IN list."""
    from sqlalchemy import or_

    by_system: dict[str, list[str]] = {}
    for system, code in value.codes:
        by_system.setdefault(system, []).append(code)
    if not by_system:
        return false()
    return or_(*(and_(system_col == s, code_col.in_(sorted(codes))) for s, codes in sorted(by_system.items())))
