"""Binding a ``_filter`` syntax tree (search.filter) to the search parameters. Pure.

``bind_filter`` resolves every parameter name against the search registry for the searched type
(following chains and [filters] through reference parameters), checks each operator against the
parameter's type (search_filter.html#ops) and parses each value with the ordinary search value
parsers, so a bad filter is a 400 naming its position (1-based character offset) before any SQL
runs. The bound tree is turned into SQL by ``search.filter_sql``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Union

from ..errors import BadRequest
from ..fhir.resource_types import R4_RESOURCE_TYPES
from .filter import FILTER, Comparison, FilterError, Logical, Node, Not, PathStep, parse_filter
from .model import SearchParam
from .parse import (DateValue, NumberValue, QuantityValue, ReferenceValue, SearchValue, StringValue,
                    TokenValue, UriValue, normalize_string, parse_value)

# Which operators apply to which parameter type (the second table of search_filter.html#ops, with
# uri treated like a string for eq/ne/co/sw/ew and like a hierarchy for ss/sb, as :below/:above).
# On tokens, ss sb in ni are answered from the CodeSystems and ValueSets this server holds
# (search.filter_terminology).
OPERATORS_BY_TYPE: dict[str, frozenset[str]] = {
    "string": frozenset({"eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le", "pr"}),
    "token": frozenset({"eq", "ne", "pr", "ss", "sb", "in", "ni"}),
    "date": frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "po", "co", "pr"}),
    "number": frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "co", "pr"}),
    "quantity": frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "pr"}),
    "reference": frozenset({"re", "pr"}),
    "uri": frozenset({"eq", "ne", "co", "sw", "ew", "ss", "sb", "pr"}),
}
TERMINOLOGY_OPS = frozenset({"ss", "sb", "in", "ni"})

# search_filter.html#ops note: these names may stand for their code system.
SYSTEM_ALIASES = {
    "loinc": "http://loinc.org",
    "snomed": "http://snomed.info/sct",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "ucum": "http://unitsofmeasure.org",
}


class UnknownFilterParameter(Exception):
    """A parameter name the server does not know (reported, or a 400 when strict)."""

    def __init__(self, name: str, position: int, why: str) -> None:
        super().__init__(f"names parameter '{name}' at position {position}, which {why}")
        self.name, self.position = name, position


# -- bound tree ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ValueSetRef:
    """``in`` / ``ni``: a ValueSet named by ``ValueSet/id``, its URL on this server, or its canonical
    url (``|version`` optional); expanded by search.filter_terminology before SQL is built."""

    reference: str


@dataclass(frozen=True)
class ConceptRef:
    """``ss`` / ``sb``: the concept ``system|code`` whose subsumption hierarchy is consulted."""

    system: str
    code: str


@dataclass(frozen=True)
class CodeSet:
    """A resolved terminology value: a token matches when it is in ``include`` and not in
    ``exclude``; each part is (system, codes), codes None meaning every code of the system."""

    include: tuple[tuple[str, frozenset[str] | None], ...]
    exclude: tuple[tuple[str, frozenset[str] | None], ...] = ()


@dataclass(frozen=True)
class BoundTest:
    """One comparison on one parameter of the resource at hand. ``value`` is the parsed search value
    (its ``prefix`` set to the operator where it has one); for ``pr`` it is None and ``present``
    says which way. ``position`` is the value's, for errors found once the database is at hand."""

    param: SearchParam
    op: str
    value: SearchValue | ValueSetRef | ConceptRef | CodeSet | None
    present: bool = True
    position: int = 0


@dataclass(frozen=True)
class BoundReference:
    """A reference parameter followed into its targets: some reference of ``param`` points at a
    current resource of one of ``targets``' types that meets that type's condition (a chain
    ``subject.name``, a sub-filter ``subject[...]``, or both). ``ref`` additionally constrains the
    reference itself (``subject[...] re Patient/1``); ``negate`` is ``pr false``."""

    param: SearchParam
    targets: tuple[tuple[str, "Bound | None"], ...]
    ref: ReferenceValue | None = None
    negate: bool = False


@dataclass(frozen=True)
class BoundLogical:
    op: str
    left: "Bound"
    right: "Bound"


@dataclass(frozen=True)
class BoundNot:
    operand: "Bound"


Bound = Union[BoundTest, BoundReference, BoundLogical, BoundNot]


@dataclass(frozen=True)
class FilterCriterion:
    """A ``_filter`` parameter among the search criteria (ANDed with the others)."""

    name: str
    node: Bound

    def target_types(self) -> set[str]:
        """The resource types this filter reads through references (for access checks)."""
        found: set[str] = set()
        stack: list[Bound | None] = [self.node]
        while stack:
            node = stack.pop()
            if isinstance(node, BoundLogical):
                stack += [node.left, node.right]
            elif isinstance(node, BoundNot):
                stack.append(node.operand)
            elif isinstance(node, BoundReference):
                for target, inner in node.targets:
                    found.add(target)
                    stack.append(inner)
        return found


Lookup = Callable[[str | None, str], "SearchParam | None"]


class _Skip(Exception):
    """Internal: a candidate target type lacks a parameter the rest of the path names."""

    def __init__(self, unknown: UnknownFilterParameter | None = None) -> None:
        super().__init__()
        self.unknown = unknown


def bind_filter(node: Node, lookup: Lookup, resource_type: str | None, *,
                base_url: str | None = None) -> Bound:
    """Resolve ``node`` for a search of ``resource_type`` (None = several types: only the common
    parameters). ``lookup(type, code)`` is the search's parameter lookup. Raises FilterError for an
    operator that does not apply or a bad value, UnknownFilterParameter for an unknown name."""
    return _Binder(lookup, base_url).bind(node, resource_type)


@dataclass
class _Binder:
    lookup: Lookup
    base_url: str | None

    def bind(self, node: Node, rtype: str | None) -> Bound:
        if isinstance(node, Logical):
            return BoundLogical(node.op, self.bind(node.left, rtype), self.bind(node.right, rtype))
        if isinstance(node, Not):
            return BoundNot(self.bind(node.operand, rtype))
        return self._path(node, node.path, rtype)

    def _param(self, step: PathStep, rtype: str | None) -> SearchParam:
        param = self.lookup(rtype, step.name)
        where = f"for {rtype}" if rtype else "for a search across types"
        if param is None:
            raise UnknownFilterParameter(step.name, step.position, f"is not known {where}")
        if param.type not in OPERATORS_BY_TYPE:
            raise UnknownFilterParameter(step.name, step.position,
                                         f"has type {param.type}, which _filter does not support")
        return param

    def _path(self, cmp: Comparison, path: tuple[PathStep, ...], rtype: str | None) -> Bound:
        step, rest = path[0], path[1:]
        param = self._param(step, rtype)
        if not rest and step.filter is None:
            return self._test(cmp, param)
        if param.type != "reference":
            what = "followed by '.'" if rest else "given a [filter]"
            raise FilterError(f"'{step.name}' is a {param.type} parameter and cannot be {what}; only "
                              "reference parameters can", step.position)
        ref: ReferenceValue | None = None
        negate = False
        if not rest:  # name[filter] op value: the operator applies to the reference itself
            test = self._test(cmp, param)
            ref = test.value if isinstance(test.value, ReferenceValue) else None
            negate = test.op == "pr" and not test.present
        targets = []
        unknown: UnknownFilterParameter | None = None  # kept to name it if no target has it
        for target in self._candidates(step, param, rest):
            try:
                targets.append((target, self._target_condition(cmp, step, rest, target)))
            except _Skip as skip:
                unknown = skip.unknown or unknown
            except UnknownFilterParameter as exc:
                if len(param.targets) == 1:
                    raise
                unknown = exc
        if not targets:
            if unknown is not None:
                raise unknown
            raise UnknownFilterParameter(rest[0].name, rest[0].position,
                                         f"is not a parameter of any target of '{step.name}'")
        return BoundReference(param, tuple(targets), ref, negate)

    def _candidates(self, step: PathStep, param: SearchParam, rest: tuple[PathStep, ...]) -> list[str]:
        """The target types of ``param`` to follow (search.html#chaining): its declared targets, or,
        for a reference to any type, the one type that has the next parameter (else ambiguous)."""
        if param.targets:
            return list(param.targets)
        if not rest:
            raise FilterError(f"'{step.name}' may refer to any type, so its [filter] is ambiguous; "
                              "use a chain that names a parameter of the target", step.position)
        found = [t for t in sorted(R4_RESOURCE_TYPES) if self.lookup(t, rest[0].name) is not None]
        if len(found) > 1:
            raise FilterError(f"chain '{step.name}.{rest[0].name}' is ambiguous: '{step.name}' may refer to "
                              f"any of {', '.join(found[:5])}{'…' if len(found) > 5 else ''}", step.position)
        return found

    def _target_condition(self, cmp: Comparison, step: PathStep, rest: tuple[PathStep, ...],
                          target: str) -> Bound | None:
        parts: list[Bound] = []
        if step.filter is not None:
            try:
                parts.append(self.bind(step.filter, target))
            except UnknownFilterParameter as exc:
                raise _Skip(exc) from exc
        if rest:
            if self.lookup(target, rest[0].name) is None:
                raise _Skip()
            parts.append(self._path(cmp, rest, target))
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = BoundLogical("and", out, p)
        return out

    def _test(self, cmp: Comparison, param: SearchParam) -> BoundTest:
        kind = "date" if param.code == "_lastUpdated" else param.type
        allowed = OPERATORS_BY_TYPE[kind]
        if cmp.op not in allowed:
            raise FilterError(f"operator '{cmp.op}' does not apply to {kind} parameter '{param.code}' "
                              f"(allowed: {', '.join(sorted(allowed))})", cmp.op_position)
        if cmp.op == "pr":
            flag = cmp.value.lower()
            if flag not in ("true", "false"):
                raise FilterError(f"'pr' takes true or false, not '{cmp.value}'", cmp.value_position)
            return BoundTest(param, "pr", None, flag == "true")
        if kind == "token" and cmp.op in TERMINOLOGY_OPS:
            return BoundTest(param, cmp.op, self._terminology_value(cmp, param), position=cmp.value_position)
        return BoundTest(param, cmp.op, self._value(cmp, param, kind))

    def _terminology_value(self, cmp: Comparison, param: SearchParam) -> ValueSetRef | ConceptRef:
        if param.code == "_id":
            raise FilterError(f"'{cmp.op}' needs a coded parameter, not _id", cmp.op_position)
        if cmp.op in ("in", "ni"):  # "the nominated value set by URI, either a relative, literal or logical vs"
            return ValueSetRef(cmp.value)
        system, bar, code = cmp.value.partition("|")
        if not bar or not system or not code:
            raise FilterError(f"'{cmp.op}' needs system|code (subsumption is defined within a code system), "
                              f"not '{cmp.value}'", cmp.value_position)
        return ConceptRef(SYSTEM_ALIASES.get(system, system), code)

    def _value(self, cmp: Comparison, param: SearchParam, kind: str) -> SearchValue:
        raw = cmp.value
        if kind == "string":
            return StringValue(raw, normalize_string(raw))
        if kind == "uri":
            return UriValue(raw)
        if kind in ("date", "number", "quantity") and not raw[:1].isdigit() and raw[:1] not in "-+.":
            raise FilterError(f"'{raw}' is not a {kind} value for '{param.code}'", cmp.value_position)
        if kind == "quantity":
            raw = _quantity_aliases(raw)
        try:
            value = parse_value(param.code, param, None, raw, self.base_url)
        except BadRequest as exc:
            raise FilterError(exc.diagnostics, cmp.value_position) from None
        if isinstance(value, (DateValue, NumberValue, QuantityValue)):  # the operator is the prefix
            return replace(value, prefix=cmp.op)
        if isinstance(value, TokenValue) and value.system:
            return replace(value, system=SYSTEM_ALIASES.get(value.system, value.system))
        return value


def _quantity_aliases(raw: str) -> str:
    parts = raw.split("|")
    if len(parts) == 3 and parts[1] in SYSTEM_ALIASES:
        parts[1] = SYSTEM_ALIASES[parts[1]]
    return "|".join(parts)


def filter_criterion(value: str, lookup: Lookup, resource_type: str | None, *,
                     base_url: str | None = None) -> FilterCriterion:
    """Parse and bind one ``_filter`` value (search_filter.html) into a search criterion."""
    return FilterCriterion(FILTER, bind_filter(parse_filter(value), lookup, resource_type, base_url=base_url))
