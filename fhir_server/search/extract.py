"""SearchParameter expressions compiled to plain-Python extractors (fhirpath.html, search.html).

The R4 base expressions use a small part of FHIRPath: paths, ``|``, ``as``/``ofType``, choice
elements (``Observation.effective`` meaning ``effectiveDateTime``/``effectivePeriod``/…),
``where(resolve() is Patient)``, ``where(system='phone')``, ``extension('url')``, ``exists()``,
``and`` and ``!=``. That subset is compiled once into closures over the JSON dicts, with the
element types worked out at compile time from the R4 model bundled with fhirpathpy (so choice
elements become direct key look-ups and every value leaves tagged with its FHIR type). Anything
outside the subset falls back to fhirpathpy (compiled once, cached), whose values carry no type.

``compile_expression(resource_type, expression)`` returns ``extract(resource) -> [(type, value)]``
where ``type`` is a FHIR type name (``"CodeableConcept"``, ``"dateTime"``, ``"Reference"``…) or
None when unknown (fallback, or an element the model does not know).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from .fhirpath import (MODEL, RESOURCE_SUPERTYPES, Node, Unsupported, child_types, fhir_type_name, is_subtype,
                       parse)

__all__ = ["Extractor", "Typed", "Unsupported", "compile_expression", "compile_typed", "fallback_extractor",
           "fhir_type_name", "is_compiled", "reference_type", "root_keys"]

log = logging.getLogger(__name__)

Values = list[Any]
Fn = Callable[[Values], Values]
Branch = tuple[Fn, "str | None"]
Typed = list[tuple[str | None, Any]]
Extractor = Callable[[dict[str, Any]], Typed]

_REF_TYPE_RE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


# --- compiler ------------------------------------------------------------------------------------


def _identity(xs: Values) -> Values:
    return xs


def _get(src: Fn, key: str) -> Fn:
    """Navigate to ``key`` in every dict of ``src``'s output, flattening JSON arrays."""
    def get(xs: Values) -> Values:
        out: Values = []
        for x in xs if src is _identity else src(xs):
            if type(x) is dict:
                v = x.get(key)
                if v is not None:
                    if type(v) is list:
                        out.extend(v)
                    else:
                        out.append(v)
        return out
    return get


def reference_type(ref: Any) -> str | None:
    """The resource type a Reference points at: from ``reference`` (relative or RESTful absolute
    URL) or else ``Reference.type``; None for contained (``#id``) and unknown references."""
    if type(ref) is not dict:
        return None
    target = ref.get("reference")
    if isinstance(target, str):
        if target.startswith("#"):
            return None
        m = _REF_TYPE_RE.search(target)
        if m:
            return m.group(1)
    t = ref.get("type")
    if isinstance(t, str) and "/" not in t:
        return t
    if isinstance(t, str):  # R4 allows a URL; the type is its last segment
        return t.rsplit("/", 1)[-1]
    return None


class _Compiler:
    def __init__(self, resource_type: str) -> None:
        self.resource_type = resource_type

    def compile(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        method = getattr(self, "c_" + node.kind)
        return method(node, ctx, top)

    def c_root(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        return [(_identity, ctx)]

    def c_var(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        if node.args[0] == "$this" or top:
            return [(_identity, ctx)]
        raise Unsupported("%resource inside a function argument")

    def c_literal(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        value, t = node.args
        return [(lambda xs, v=value: [v], t)]

    def c_member(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        src, name = node.args
        if src.kind == "root" and name[:1].isupper():
            # A leading type name filters the focus by type (Observation.code, Resource.id).
            if ctx is not None and (name == ctx or is_subtype(ctx, name)):
                return [(_identity, ctx)]
            if ctx in RESOURCE_SUPERTYPES or ctx is None:
                return [(lambda xs, n=name: [x for x in xs if type(x) is dict and x.get("resourceType") == n], name)]
            return []
        out: list[Branch] = []
        for fn, t in self.compile(src, ctx, top):
            if t == "Resource" or t == "DomainResource":
                out.append((_get(fn, name), None))
                continue
            for key, child in child_types(t, name):
                out.append((_get(fn, key), child))
        return out

    def c_index(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        src, n = node.args
        branches = self.compile(src, ctx, top)
        if len(branches) != 1:
            raise Unsupported("index over a choice")
        fn, t = branches[0]
        return [(lambda xs: fn(xs)[n:n + 1], t)]

    def c_union(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        return self.compile(node.args[0], ctx, top) + self.compile(node.args[1], ctx, top)

    def c_as(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        return self._of_type(self.compile(node.args[0], ctx, top), node.args[1])

    def _of_type(self, branches: list[Branch], wanted: str) -> list[Branch]:
        out: list[Branch] = []
        for fn, t in branches:
            if t in (None, "Resource", "DomainResource"):
                # Only resources carry their type at run time.
                out.append((lambda xs, f=fn: [x for x in f(xs) if type(x) is dict and x.get("resourceType") == wanted],
                            wanted))
            elif is_subtype(t, wanted):
                out.append((fn, t))
        return out

    def c_is(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        src, wanted = node.args
        if src.kind == "call" and src.args[1] == "resolve":
            raise Unsupported("resolve() outside where()")
        branches = self.compile(src, ctx, top)

        def is_(xs: Values) -> Values:
            hits = [(t, v) for fn, t in branches for v in fn(xs)]
            if len(hits) != 1:
                return []
            t, v = hits[0]
            if t in (None, "Resource", "DomainResource"):
                return [type(v) is dict and v.get("resourceType") == wanted]
            return [is_subtype(t, wanted)]
        return [(is_, "boolean")]

    def _flat(self, node: Node, ctx: str | None, top: bool) -> Fn:
        branches = self.compile(node, ctx, top)
        if len(branches) == 1:
            return branches[0][0]
        if not branches:
            return lambda xs: []
        return lambda xs: [v for fn, _ in branches for v in fn(xs)]

    def c_eq(self, node: Node, ctx: str | None, top: bool, negate: bool = False) -> list[Branch]:
        left, right = self._flat(node.args[0], ctx, top), self._flat(node.args[1], ctx, top)

        def eq(xs: Values) -> Values:
            a, b = left(xs), right(xs)
            if not a or not b:
                return []
            same = len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
            return [same != negate]
        return [(eq, "boolean")]

    def c_ne(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        return self.c_eq(node, ctx, top, negate=True)

    def c_and(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        left, right = self._flat(node.args[0], ctx, top), self._flat(node.args[1], ctx, top)

        def and_(xs: Values) -> Values:  # three-valued logic (fhirpath.html#boolean-logic)
            a, b = _truth(left(xs)), _truth(right(xs))
            if a is False or b is False:
                return [False]
            if a is None or b is None:
                return []
            return [True]
        return [(and_, "boolean")]

    def c_or(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        left, right = self._flat(node.args[0], ctx, top), self._flat(node.args[1], ctx, top)

        def or_(xs: Values) -> Values:
            a, b = _truth(left(xs)), _truth(right(xs))
            if a is True or b is True:
                return [True]
            if a is None or b is None:
                return []
            return [False]
        return [(or_, "boolean")]

    def c_call(self, node: Node, ctx: str | None, top: bool) -> list[Branch]:
        src, name, args = node.args
        if name in ("as", "ofType"):
            return self._of_type(self.compile(src, ctx, top), args[0])
        if name == "is":
            return self.c_is(Node("is", (src, args[0])), ctx, top)
        if name == "where":
            return self._where(src, args, ctx, top)
        if name in ("exists", "empty"):
            inner = self._where(src, args, ctx, top) if args else self.compile(src, ctx, top)
            want = name == "exists"

            def exists(xs: Values) -> Values:
                found = any(fn(xs) for fn, _ in inner)
                return [found if want else not found]
            return [(exists, "boolean")]
        if name == "not" and not args:
            inner_fn = self._flat(src, ctx, top)

            def not_(xs: Values) -> Values:
                t = _truth(inner_fn(xs))
                return [] if t is None else [not t]
            return [(not_, "boolean")]
        if name in ("first", "last") and not args:
            branches = self.compile(src, ctx, top)
            if len(branches) > 1:
                raise Unsupported(f"{name}() over a choice")
            return [((lambda xs, f=fn: f(xs)[:1]) if name == "first" else (lambda xs, f=fn: f(xs)[-1:]), t)
                    for fn, t in branches]
        if name == "extension" and len(args) == 1 and args[0].kind == "literal":
            url = args[0].args[0]
            return [(_extension(fn, url), "Extension") for fn, _ in self.compile(src, ctx, top)]
        if name == "hasValue" and not args:
            inner = self.compile(src, ctx, top)
            return [(lambda xs: [any(not isinstance(v, (dict, list)) for fn, _ in inner for v in fn(xs))], "boolean")]
        raise Unsupported(f"function {name}()")

    def _where(self, src: Node, args: tuple[Any, ...], ctx: str | None, top: bool) -> list[Branch]:
        if len(args) != 1:
            raise Unsupported("where() takes one argument")
        cond: Node = args[0]
        out: list[Branch] = []
        for fn, t in self.compile(src, ctx, top):
            target = _resolve_is(cond)
            if target is not None:
                # where(resolve() is Patient): a filter on the reference's target type (no resolution).
                out.append((lambda xs, f=fn, tt=target: [x for x in f(xs) if reference_type(x) == tt], t))
                continue
            pred = self._flat(cond, t, False)

            def where(xs: Values, f: Fn = fn, p: Fn = pred) -> Values:
                return [x for x in f(xs) if p([x]) == [True]]
            out.append((where, t))
        return out


def _resolve_is(cond: Node) -> str | None:
    """``resolve() is T`` (or ``resolve().is(T)``) -> ``T``; anything else -> None."""
    if cond.kind == "is":
        src, wanted = cond.args
    elif cond.kind == "call" and cond.args[1] == "is":
        src, wanted = cond.args[0], cond.args[2][0]
    else:
        return None
    if src.kind == "call" and src.args[1] == "resolve" and src.args[0].kind == "root":
        return str(wanted)
    return None


def _extension(src: Fn, url: str) -> Fn:
    def ext(xs: Values) -> Values:
        return [e for x in src(xs) if type(x) is dict and type(x.get("extension")) is list
                for e in x["extension"] if type(e) is dict and e.get("url") == url]
    return ext


def _truth(values: Values) -> bool | None:
    """Singleton evaluation of collections (fhirpath.html#singleton-evaluation-of-collections)."""
    if not values:
        return None
    if len(values) == 1 and isinstance(values[0], bool):
        return values[0]
    return True


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) != isinstance(b, str):
        return False
    return bool(a == b)


# --- public API ----------------------------------------------------------------------------------

def compile_typed(resource_type: str, expression: str) -> Extractor:
    """Compile to the fast path; raises :class:`Unsupported` outside the subset."""
    branches = _Compiler(resource_type).compile(parse(expression), resource_type, True)
    if len(branches) == 1:
        fn, t = branches[0]

        def extract_one(resource: dict[str, Any]) -> Typed:
            return [(t, v) for v in fn([resource])]
        return extract_one

    def extract(resource: dict[str, Any]) -> Typed:
        xs = [resource]
        return [(t, v) for fn, t in branches for v in fn(xs)]
    return extract


_PATH_FUNCTIONS = frozenset({"as", "ofType", "where", "first", "last", "extension"})


def _root_member(node: Node) -> str | None:
    """``name`` for ``name`` / ``Type.name`` read straight off the resource, else None."""
    if node.kind != "member":
        return None
    src, name = node.args
    if src.kind == "member" and src.args[0].kind == "root" and src.args[1][:1].isupper():
        src = src.args[0]  # Observation.code: the leading type filter is the resource itself
    return name if src.kind == "root" and not name[:1].isupper() else None


def _is_resource_itself(node: Node) -> bool:
    return node.kind == "root" or (node.kind == "member" and node.args[0].kind == "root" and node.args[1][:1].isupper())


def _root_keys(node: Node, resource_type: str) -> frozenset[str] | None:
    """JSON keys of the resource one of which must be present for ``node`` to yield anything;
    None when that cannot be said (booleans such as ``exists()`` yield ``false`` from nothing)."""
    kind = node.kind
    if kind == "union":
        left, right = _root_keys(node.args[0], resource_type), _root_keys(node.args[1], resource_type)
        return None if left is None or right is None else left | right
    wanted = node.args[1] if kind == "as" else (
        node.args[2][0] if kind == "call" and node.args[1] in ("as", "ofType") else None)
    if wanted is not None:
        name = _root_member(node.args[0])
        if name is not None:  # (Observation.value as Quantity) reads only valueQuantity
            return frozenset(key for key, t in child_types(resource_type, name) if t is None or is_subtype(t, wanted))
    if kind == "call" and node.args[1] == "extension" and _is_resource_itself(node.args[0]):
        return frozenset({"extension"})
    if kind == "index" or kind == "as" or (kind == "call" and node.args[1] in _PATH_FUNCTIONS):
        return _root_keys(node.args[0], resource_type)
    if kind == "member":
        name = _root_member(node)
        if name is not None:
            return frozenset(key for key, _ in child_types(resource_type, name))
        if node.args[0].kind == "root":
            return None  # a bare type name
        return _root_keys(node.args[0], resource_type)
    return None


def root_keys(resource_type: str, expression: str) -> frozenset[str] | None:
    """The top-level JSON keys ``expression`` starts from, so callers can skip it cheaply when a
    resource has none of them; None when unknown (the expression must always be evaluated)."""
    try:
        return _root_keys(parse(expression), resource_type)
    except Unsupported:
        return None


@lru_cache(maxsize=None)
def _fhirpathpy(expression: str) -> Callable[[dict[str, Any]], list[Any]]:
    import fhirpathpy

    return fhirpathpy.compile(expression, MODEL)  # type: ignore[no-any-return]


def _nothing(resource: dict[str, Any]) -> Typed:
    return []


def fallback_extractor(expression: str) -> Extractor:
    """fhirpathpy, compiled once; its values carry no FHIR type (the indexer infers by shape).

    An expression fhirpathpy cannot compile either (a broken custom SearchParameter) is logged
    and extracts nothing, rather than making every write of that resource type fail.
    """
    try:
        compiled = _fhirpathpy(expression)
    except Exception:  # noqa: BLE001 - the ANTLR parser raises assorted errors
        log.error("search parameter expression cannot be compiled, nothing will be indexed: %s", expression,
                  exc_info=True)
        return _nothing

    def extract(resource: dict[str, Any]) -> Typed:
        return [(None, v) for v in compiled(resource)]
    return extract


@lru_cache(maxsize=None)
def compile_expression(resource_type: str, expression: str) -> Extractor:
    """An extractor for ``expression`` (the part of a SearchParameter.expression applying to
    ``resource_type``): fast compiled path where possible, fhirpathpy otherwise. Cached."""
    try:
        return compile_typed(resource_type, expression)
    except Unsupported as exc:
        log.debug("fhirpathpy fallback for %s: %s (%s)", resource_type, expression, exc)
        return fallback_extractor(expression)


def is_compiled(resource_type: str, expression: str) -> bool:
    """True when ``expression`` takes the fast path (used by tests and start-up diagnostics)."""
    try:
        compile_typed(resource_type, expression)
    except Unsupported:
        return False
    return True
