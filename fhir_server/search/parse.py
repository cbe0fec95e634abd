"""Query string → ``SearchRequest`` (R4 search.html). Pure: no SQL, no Flask, no clock.

The client's parameters arrive as ``(name, value)`` pairs. Following search.html#combining, a name
repeated is a logical AND and a comma inside one value is a logical OR; ``\\,`` ``\\|`` ``\\$`` and
``\\\\`` escape those characters (search.html#escaping). Every value is parsed here, once, into a
typed value object so that a malformed value becomes a 400 naming the parameter before any SQL runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, Sequence, Union

from ..errors import BadRequest, Issue
from ..fhir.resource_types import R4_RESOURCE_TYPES
from .model import SearchParam
from .normalize import STRING_INDEX_LENGTH, date_range, number_range
from .normalize import normalize_string as _normalize_string
from .special import SPECIAL_PARAMS, parse_special, special_applies

# Parameters defined for every resource (search.html#all); only these are allowed when searching
# several types at once (http.html#search: whole-system search).
COMMON_PARAMS: dict[str, str] = {
    "_id": "token", "_lastUpdated": "date", "_tag": "token", "_profile": "uri", "_security": "token",
    "_source": "uri",
}
# Result parameters (search.html#return) and transport parameters that are not criteria.
_IGNORED = frozenset({"_format", "_pretty"})
_UNSUPPORTED = frozenset({"_query", "_contained", "_containedType"})
SUMMARY_MODES = ("true", "text", "data", "count", "false")
TOTAL_MODES = ("none", "estimate", "accurate")
MAX_CHAIN_DEPTH = 4
# Names a chain or ``_has`` cannot end in: result and transport parameters (search.html#return) and
# ``_type``/``_query`` are not criteria on a resource, and ``_filter`` (search_filter.html) is not among
# R4's parameters for all resources but a grammar with its own chains. Refused with a 400, never ignored.
NOT_CHAINABLE = frozenset({"_sort", "_count", "_offset", "_total", "_summary", "_elements", "_include",
                           "_revinclude", "_contained", "_containedType", "_type", "_query", "_format",
                           "_pretty", "_snapshot", "_filter"})

# Modifiers this engine implements, by parameter type (search.html#modifiers). A reference parameter
# additionally accepts any resource type as modifier (``subject:Patient``).
MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains", "missing"}),
    "token": frozenset({"not", "text", "of-type", "missing", "in", "not-in", "below", "above"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "reference": frozenset({"identifier", "missing"}),
    "uri": frozenset({"below", "above", "missing"}),
}


class ParamSource(Protocol):
    """What parsing needs from ``search.registry.SearchRegistry``."""

    def params_for(self, resource_type: str) -> dict[str, SearchParam]: ...

    def get(self, resource_type: str, code: str) -> SearchParam | None: ...


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: the OR of ``values`` (search.html#combining).

    For a chained reference (search.html#chaining) ``values`` is empty and ``chain`` holds, per
    candidate target type, the criterion the referenced resource must meet (OR across types).
    """

    name: str  # the parameter name as the client wrote it, for issue.expression
    param: SearchParam
    modifier: str | None
    values: tuple[SearchValue, ...] = ()
    chain: tuple[tuple[str, "Criterion | HasCriterion"], ...] = ()


@dataclass(frozen=True)
class HasCriterion:
    """Reverse chaining ``_has:Type:reference:rest`` (search.html#has): some ``source_type``
    resource refers to the candidate through ``ref_param`` and meets ``criterion``."""

    name: str
    source_type: str
    ref_param: SearchParam
    criterion: "Criterion | HasCriterion"


@dataclass(frozen=True)
class SortKey:
    """One ``_sort`` key (search.html#sort); ``-`` before the name means descending."""

    param: SearchParam
    descending: bool = False


@dataclass(frozen=True)
class Include:
    """``_include`` / ``_revinclude`` (search.html#include).

    ``source_type`` is the type holding the reference (None for ``*``); ``param`` None means every
    reference parameter of ``source_type`` (``Type:*`` or ``*``); ``target_type`` narrows the targets.
    """

    source_type: str | None
    param: SearchParam | None
    target_type: str | None = None
    iterate: bool = False
    reverse: bool = False


@dataclass(frozen=True)
class SearchRequest:
    """A parsed search: criteria are ANDed; everything else controls the result (search.html#return)."""

    resource_types: tuple[str, ...]  # empty = every type (whole-system search)
    criteria: tuple[Criterion | HasCriterion, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int | None = None  # None = server default
    offset: int = 0
    total: str | None = None  # none | estimate | accurate; None = server default
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    includes: tuple[Include, ...] = ()
    snapshot: int | None = None  # paging: only resources with pk <= snapshot (engine-specific)
    unknown: tuple[str, ...] = ()
    warnings: tuple[Issue, ...] = ()
    # The client's own parameters (criteria and _sort/_include/…), kept to build paging links.
    link_params: tuple[tuple[str, str], ...] = ()
    # Compartment search (Patient/[id]/[type]): a search.compartment.Compartment, or None.
    compartment: Any = None
    # Access hook: what the request context may see (fhir_server.auth.policy.Visibility: its
    # ``clause(resource_table)`` is ANDed into the matches, the count, chains, _has and includes).
    access: Any = None


def parse_search(params: Sequence[tuple[str, str]], registry: ParamSource,
                 resource_types: Sequence[str] | None, *, strict: bool = False,
                 base_url: str | None = None) -> SearchRequest:
    """Parse ``params`` for a search of ``resource_types`` (None or several = whole-system search).

    Unknown or unsupported parameters are ignored with a warning, or rejected when ``strict``
    (search.html#errors, ``Prefer: handling=strict``); unsupported modifiers and malformed values are
    always rejected with BadRequest naming the parameter. ``base_url`` lets absolute references to
    this server match by type/id (search.html#reference).
    """
    types = _initial_types(resource_types)
    for name, value in params:  # _type narrows a whole-system search (search.html#type)
        if name == "_type" and value:
            types = _parse_type_param(value, types, resource_types)
    state = _State(registry, types, strict, base_url)
    for name, value in params:
        state.take(name, value)
    return state.build()


def _initial_types(resource_types: Sequence[str] | None) -> tuple[str, ...]:
    types = tuple(resource_types or ())
    for t in types:
        if t not in R4_RESOURCE_TYPES:
            raise BadRequest(f"Unknown resource type '{t}'", expression="type")
    return types


def _parse_type_param(value: str, current: tuple[str, ...],
                      requested: Sequence[str] | None) -> tuple[str, ...]:
    wanted = tuple(v.strip() for v in value.split(",") if v.strip())
    for t in wanted:
        if t not in R4_RESOURCE_TYPES:
            raise BadRequest(f"Unknown resource type '{t}' in _type", expression="_type")
    if requested:  # a type-level search cannot be widened by _type
        wanted = tuple(t for t in wanted if t in current)
        if not wanted:
            raise BadRequest("_type names none of the searched types", expression="_type")
    return wanted


@dataclass
class _State:
    registry: ParamSource
    types: tuple[str, ...]
    strict: bool
    base_url: str | None
    criteria: list[Criterion | HasCriterion] = field(default_factory=list)
    sort: tuple[SortKey, ...] = ()
    count: int | None = None
    offset: int = 0
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    includes: list[Include] = field(default_factory=list)
    snapshot: int | None = None
    unknown: list[tuple[str, str]] = field(default_factory=list)
    link_params: list[tuple[str, str]] = field(default_factory=list)

    def take(self, name: str, value: str) -> None:
        if name in _IGNORED or name == "_type":
            if name == "_type":
                self.link_params.append((name, value))
            return
        if name in ("_count", "_offset", "_snapshot"):
            setattr(self, name[1:], _non_negative_int(name, value))
            return
        self.link_params.append((name, value))
        if name == "_filter":  # search_filter.html: search/filter.py, filter_bind.py
            self._take_filter(value)
            return
        if name == "_sort":
            self.sort = self._parse_sort(value)
        elif name == "_total":
            self.total = _one_of(name, value, TOTAL_MODES)
        elif name == "_summary":
            self.summary = _one_of(name, value, SUMMARY_MODES)
        elif name == "_elements":
            self.elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif name.split(":", 1)[0] in ("_include", "_revinclude"):
            self.includes.extend(self._parse_include(name, value))
        elif name.split(":", 1)[0] in _UNSUPPORTED:
            self._unknown(name, "is not supported")
        elif value == "":
            return  # search.html#search: parameters with an empty value are ignored
        else:
            crit = self._criterion(name, value)
            if crit is not None:
                self.criteria.append(crit)

    def build(self) -> SearchRequest:
        if self.summary not in (None, "false") and self.elements is not None:
            raise BadRequest("_summary and _elements cannot be combined", expression="_elements")
        warnings = tuple(Issue("warning", "not-supported", f"Search parameter '{n}' {why}; it was ignored",
                               (n,)) for n, why in self.unknown)
        return SearchRequest(
            resource_types=self.types, criteria=tuple(self.criteria), sort=self.sort, count=self.count,
            offset=self.offset, total=self.total, summary=self.summary, elements=self.elements,
            includes=tuple(self.includes), snapshot=self.snapshot,
            unknown=tuple(n for n, _ in self.unknown), warnings=warnings, link_params=tuple(self.link_params))

    # -- helpers -------------------------------------------------------------------------------

    def _unknown(self, name: str, why: str) -> None:
        if self.strict:
            raise BadRequest(f"Search parameter '{name}' {why}", expression=name)
        self.unknown.append((name, why))

    def _lookup(self, resource_type: str | None, code: str) -> SearchParam | None:
        if resource_type is None:  # several types: only the parameters every resource has
            if code not in COMMON_PARAMS:
                return None
            first = self.types[0] if self.types else "Resource"
            found = self.registry.get(first, code)
            return found or SearchParam(code=code, type=COMMON_PARAMS[code], resource_type="Resource",
                                        expression="", url=f"http://hl7.org/fhir/SearchParameter/Resource-{code[1:]}")
        return self.registry.get(resource_type, code)

    @property
    def _single_type(self) -> str | None:
        return self.types[0] if len(self.types) == 1 else None

    def _criterion(self, name: str, value: str) -> Criterion | HasCriterion | None:
        try:
            return _build(self, name, name, self._single_type, value, 0)
        except _Unknown as exc:
            self._unknown(name, str(exc))
            return None

    def _take_filter(self, value: str) -> None:
        from .filter_bind import UnknownFilterParameter, filter_criterion  # it builds on this module
        if value == "":  # search.html#search: parameters with an empty value are ignored
            return
        try:
            self.criteria.append(filter_criterion(value, self._lookup, self._single_type,  # type: ignore[arg-type]
                                                  base_url=self.base_url))
        except UnknownFilterParameter as exc:
            self._unknown("_filter", str(exc))

    def _parse_sort(self, value: str) -> tuple[SortKey, ...]:
        keys = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            desc = part.startswith("-")
            code = part[1:] if desc else part
            param = self._lookup(self._single_type, code)
            if param is None or param.type in ("composite", "special"):
                raise BadRequest(f"Cannot sort on '{code}'", expression="_sort")
            keys.append(SortKey(param, desc))
        return tuple(keys)

    def _parse_include(self, name: str, value: str) -> list[Include]:
        base, _, mod = name.partition(":")
        if mod not in ("", "iterate", "recurse"):
            raise BadRequest(f"Unknown modifier ':{mod}' on {base}", expression=name)
        reverse, iterate = base == "_revinclude", mod != ""
        out = []
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            if item == "*":
                out.append(Include(None, None, None, iterate, reverse))
                continue
            parts = item.split(":")
            if len(parts) not in (2, 3) or parts[0] not in R4_RESOURCE_TYPES:
                raise BadRequest(f"Invalid {base} value '{item}' (expected Type:param[:targetType])",
                                 expression=name)
            target = parts[2] if len(parts) == 3 else None
            if target is not None and target not in R4_RESOURCE_TYPES:
                raise BadRequest(f"Unknown target type '{target}' in {base}", expression=name)
            if parts[1] == "*":
                out.append(Include(parts[0], None, target, iterate, reverse))
                continue
            param = self.registry.get(parts[0], parts[1])
            if param is None or param.type != "reference":
                raise BadRequest(f"'{parts[1]}' is not a reference search parameter of {parts[0]}",
                                 expression=name)
            out.append(Include(parts[0], param, target, iterate, reverse))
        return out


class _Unknown(Exception):
    """A parameter this server does not know (reported, or a 400 when strict)."""


def _build(state: _State, full: str, name: str, rtype: str | None, value: str,
           depth: int) -> Criterion | HasCriterion:
    """Parse parameter ``name`` (possibly chained / _has) relative to ``rtype`` with ``value``."""
    if depth > MAX_CHAIN_DEPTH:
        raise BadRequest(f"Chain in '{full}' is deeper than {MAX_CHAIN_DEPTH}", expression=full)
    if name.startswith("_has:"):
        return _build_has(state, full, name, rtype, value, depth)
    head, dot, rest = name.partition(".")
    code, colon, modifier = head.partition(":")
    if depth > 0 and code in NOT_CHAINABLE:
        raise BadRequest(_not_chainable(code, full), expression=full)
    if code in SPECIAL_PARAMS:  # _text, _content, _list (search.html#all): search/special.py
        if dot:
            raise BadRequest(f"'{code}' is not a reference parameter and cannot be chained", expression=full)
        if rtype is not None and not special_applies(code, rtype):
            raise _Unknown(f"is not known for {rtype}")
        return parse_special(head, value, split_unescaped, unescape, expression=full)
    param = state._lookup(rtype, code)
    if param is None:
        raise _Unknown("is not known" + (f" for {rtype}" if rtype else " for a search across types"))
    if param.type in ("composite", "special") and not _special_supported(state.registry, param):
        raise _Unknown(f"has type {param.type}, which is not supported")
    if colon and not modifier:
        raise BadRequest(f"Empty modifier in '{full}'", expression=full)
    mod = modifier or None
    if dot:
        return _build_chain(state, full, param, mod, rest, value, depth)
    if param.type in ("composite", "special"):
        return _build_special(state, full, param, mod, value)
    _check_modifier(full, param, mod)
    if mod == "missing":
        return Criterion(full, param, mod, (_parse_missing(full, value),))
    pieces = split_unescaped(value, ",")  # each piece keeps its escapes for the type's own parser
    values = tuple(parse_value(full, param, mod, p, state.base_url) for p in pieces if p != "")
    if not values:
        raise BadRequest(f"No value for '{full}'", expression=full)
    return Criterion(full, param, mod, values)


def _special_supported(registry: ParamSource, param: SearchParam) -> bool:
    """Composite parameters this server can evaluate (search/composite.py) and ``near`` (search/geo.py)."""
    from . import composite, geo

    return composite.is_supported(registry, param) if param.type == "composite" else geo.is_supported(param)


def _build_special(state: _State, full: str, param: SearchParam, mod: str | None, value: str) -> Criterion:
    from . import composite, geo

    if param.type == "composite":
        return composite.parse_composite(state.registry, full, param, mod, value, state.base_url)  # type: ignore[no-any-return]
    return geo.parse_near(full, param, mod, value)  # type: ignore[no-any-return]


def _check_modifier(full: str, param: SearchParam, mod: str | None) -> None:
    if mod is None:
        return
    if param.code == "_id" and mod not in ("not", "missing"):
        raise BadRequest(f"Modifier ':{mod}' is not supported on _id", expression=full)
    if param.code == "_lastUpdated" and mod != "missing":
        raise BadRequest(f"Modifier ':{mod}' is not supported on _lastUpdated", expression=full)
    allowed = MODIFIERS.get(param.type, frozenset())
    if mod in allowed:
        return
    if param.type == "reference" and mod in R4_RESOURCE_TYPES:
        if param.targets and mod not in param.targets:
            raise BadRequest(f"'{param.code}' cannot refer to {mod}", expression=full)
        return
    raise BadRequest(f"Modifier ':{mod}' is not supported for {param.type} parameter '{param.code}'",
                     expression=full)


def _parse_missing(full: str, value: str) -> MissingValue:
    if value not in ("true", "false"):
        raise BadRequest(f"':missing' takes true or false, not '{value}'", expression=full)
    return MissingValue(value == "true")


def _build_chain(state: _State, full: str, param: SearchParam, mod: str | None, rest: str, value: str,
                 depth: int) -> Criterion:
    """search.html#chaining: ``subject:Patient.name=x`` or, when unambiguous, ``subject.name=x``."""
    if param.type != "reference":
        raise BadRequest(f"'{param.code}' is not a reference parameter and cannot be chained",
                         expression=full)
    if mod is not None and mod not in R4_RESOURCE_TYPES:
        raise BadRequest(f"Modifier ':{mod}' cannot be used in a chain", expression=full)
    next_code = rest.split(".", 1)[0].split(":", 1)[0]
    if next_code in NOT_CHAINABLE:
        raise BadRequest(_not_chainable(next_code, full), expression=full)
    if mod is not None:
        if param.targets and mod not in param.targets:
            raise BadRequest(f"'{param.code}' cannot refer to {mod}", expression=full)
        candidates: tuple[str, ...] = (mod,)
    else:
        targets = param.targets or tuple(sorted(R4_RESOURCE_TYPES))
        candidates = tuple(t for t in targets if _applies(state, t, rest))
        if not candidates:
            raise BadRequest(f"No target of '{param.code}' has a search parameter '{next_code}'",
                             expression=full)
        if len(candidates) > 1 and not param.targets:
            raise BadRequest(f"Chain '{full}' is ambiguous: name the target type, e.g. "
                             f"'{param.code}:{candidates[0]}.{rest}'", expression=full)
    chain = []
    for target in candidates:
        try:
            chain.append((target, _build(state, full, rest, target, value, depth + 1)))
        except _Unknown:
            if mod is not None:
                raise
    if not chain:
        raise _Unknown("is not known for any target type")
    return Criterion(full, param, mod, (), tuple(chain))


def _applies(state: _State, target: str, rest: str) -> bool:
    """Whether the rest of an unqualified chain can be asked of ``target``: it has the next parameter
    (``_text`` only where there is a narrative), or the next ``_has`` reference can point at it."""
    if rest.startswith("_has:"):
        parts = rest.split(":", 3)
        ref = state.registry.get(parts[1], parts[2]) if len(parts) == 4 else None
        return ref is None or not ref.targets or target in ref.targets  # a malformed _has is reported later
    code = rest.split(".", 1)[0].split(":", 1)[0]
    if code in SPECIAL_PARAMS:
        return special_applies(code, target)
    return state._lookup(target, code) is not None


def _not_chainable(code: str, full: str) -> str:
    if code == "_filter":
        return (f"'{full}': _filter cannot be chained or used in _has; write the chain inside the filter "
                f"expression instead (search_filter.html), e.g. _filter=subject[name eq x]")
    return f"'{full}': {code} is not a search criterion, so a chain or _has cannot end in it"


def _build_has(state: _State, full: str, name: str, rtype: str | None, value: str,
               depth: int) -> HasCriterion:
    """search.html#has: ``_has:Observation:subject:code=1234-5`` (nestable)."""
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise BadRequest(f"Invalid _has parameter '{full}' (expected _has:Type:reference:param)",
                         expression=full)
    _, source, ref_code, rest = parts
    if source not in R4_RESOURCE_TYPES:
        raise BadRequest(f"Unknown resource type '{source}' in _has", expression=full)
    ref = state.registry.get(source, ref_code)
    if ref is None or ref.type != "reference":
        raise BadRequest(f"'{ref_code}' is not a reference parameter of {source}", expression=full)
    if rtype is not None and ref.targets and rtype not in ref.targets:
        raise BadRequest(f"{source}.{ref_code} cannot refer to {rtype}", expression=full)
    inner = _build(state, full, rest, source, value, depth + 1)
    return HasCriterion(full, source, ref, inner)


def _non_negative_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a non-negative integer, not '{value}'", expression=name) from None
    if number < 0:
        raise BadRequest(f"{name} must be a non-negative integer, not '{value}'", expression=name)
    return number


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}, not '{value}'", expression=name)
    return value


# -- values (search.html#ptypes) -------------------------------------------------------------------

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True)
class TokenValue:
    """search.html#token: ``system|code``, ``|code`` (system ""), ``system|`` (code None), ``code``."""

    system: str | None  # None = any system; "" = the value has no system
    code: str | None  # None = any code


@dataclass(frozen=True)
class TypedIdentifierValue:
    """``identifier:of-type=type_system|type_code|value`` (search.html#token)."""

    type_system: str
    type_code: str
    value: str


@dataclass(frozen=True)
class TextValue:
    """``:text`` on a token: string match on the display/text (search.html#token). The indexer keeps
    that text as written, so both the folded form and the plain lower-case form are tried."""

    norm: str
    lower: str = ""


@dataclass(frozen=True)
class StringValue:
    """search.html#string; ``norm`` is lower-cased and accent-stripped like ``idx_string.value_norm``."""

    value: str
    norm: str


@dataclass(frozen=True)
class DateValue:
    """search.html#date: the value is the implicit range [low, high] at its precision."""

    prefix: str
    low: datetime | None
    high: datetime | None
    raw: str


@dataclass(frozen=True)
class NumberValue:
    """search.html#number: [low, high) is the implicit range given by the value's precision."""

    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal


@dataclass(frozen=True)
class QuantityValue:
    """search.html#quantity: ``[prefix]value|system|code`` or ``value||code`` (code or unit)."""

    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None = None
    code: str | None = None
    code_or_unit: bool = False  # `value||code`: compare against code or the human unit


@dataclass(frozen=True)
class ReferenceValue:
    """search.html#reference: local ``Type/id[/_history/v]`` or bare ``id``, or any other URL."""

    type: str | None = None
    id: str | None = None
    version: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class UriValue:
    value: str


@dataclass(frozen=True)
class MissingValue:
    """``:missing=true|false`` (search.html#missing)."""

    missing: bool


SearchValue = Union[TokenValue, TypedIdentifierValue, TextValue, StringValue, DateValue, NumberValue,
                    QuantityValue, ReferenceValue, UriValue, MissingValue]


def split_unescaped(value: str, sep: str) -> list[str]:
    """Split on ``sep`` except where escaped with a backslash (search.html#escaping).
    Escapes are kept so that a later split on another separator still sees them."""
    parts, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i:i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def unescape(value: str) -> str:
    """Remove search escapes: ``\\,`` ``\\|`` ``\\$`` ``\\\\`` become the bare character."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] in ",|$\\":
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def normalize_string(value: str) -> str:
    """search.html#string: the case- and accent-insensitive form, cut to the indexed length exactly
    as the indexer writes ``idx_string.value_norm`` (so a long prefix still matches)."""
    return _normalize_string(value)[:STRING_INDEX_LENGTH]


def parse_value(full: str, param: SearchParam, mod: str | None, raw: str,
                base_url: str | None) -> SearchValue:
    """Parse one (already comma-split) value of parameter ``full`` according to its type and modifier."""
    kind = param.type
    if param.code == "_lastUpdated":
        kind = "date"
    if kind == "token" or (kind == "reference" and mod == "identifier"):
        return _parse_token(full, mod, raw)
    if kind == "string":
        text = unescape(raw)
        return StringValue(text, normalize_string(text))
    if kind == "date":
        return _parse_date(full, unescape(raw))
    if kind == "number":
        prefix, number = _split_prefix(unescape(raw))
        value, low, high = _parse_decimal(full, number)
        return NumberValue(prefix, value, low, high)
    if kind == "quantity":
        return _parse_quantity(full, raw)
    if kind == "reference":
        return _parse_reference(full, param, mod, unescape(raw), base_url)
    if kind == "uri":
        return UriValue(unescape(raw))
    raise BadRequest(f"Parameters of type {kind} are not supported", expression=full)


def _parse_token(full: str, mod: str | None, raw: str) -> SearchValue:
    if mod == "text":
        text = unescape(raw)
        return TextValue(normalize_string(text), text.lower()[:STRING_INDEX_LENGTH])
    if mod in ("in", "not-in"):  # a ValueSet, expanded by search/terminology.py
        return UriValue(unescape(raw))
    parts = split_unescaped(raw, "|")
    if mod == "of-type":
        if len(parts) != 3 or not all(parts):
            raise BadRequest(f"':of-type' needs type_system|type_code|value, not '{raw}'", expression=full)
        return TypedIdentifierValue(*(unescape(p) for p in parts))
    if len(parts) == 1:
        return TokenValue(None, unescape(parts[0]))
    if len(parts) != 2:
        raise BadRequest(f"Invalid token '{raw}' (more than one unescaped '|')", expression=full)
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise BadRequest("Token '|' names neither system nor code", expression=full)
    return TokenValue(system, code or None)


def _split_prefix(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in PREFIXES and (raw[2].isdigit() or raw[2] in "-+."):
        return raw[:2], raw[2:]
    return "eq", raw


def _parse_date(full: str, raw: str) -> DateValue:
    prefix, text = _split_prefix(raw)
    try:
        low, high = date_range(text)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"Invalid date '{raw}' for '{full}': {exc}", expression=full) from None
    return DateValue(prefix, low, high, text)


def _parse_decimal(full: str, text: str) -> tuple[Decimal, Decimal, Decimal]:
    """search.html#number: ``100`` means [99.5, 100.5); ``1e2`` one significant figure."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BadRequest(f"Invalid number '{text}' for '{full}'", expression=full) from None
    if not value.is_finite():
        raise BadRequest(f"Invalid number '{text}' for '{full}'", expression=full)
    low, high = number_range(value)  # the indexer's own notion of a number's precision
    return value, low, high


def _parse_quantity(full: str, raw: str) -> QuantityValue:
    parts = split_unescaped(raw, "|")
    if len(parts) not in (1, 3):
        raise BadRequest(f"Invalid quantity '{raw}' (expected value|system|code)", expression=full)
    prefix, number = _split_prefix(unescape(parts[0]))
    value, low, high = _parse_decimal(full, number)
    if len(parts) == 1:
        return QuantityValue(prefix, value, low, high)
    system, code = unescape(parts[1]) or None, unescape(parts[2]) or None
    return QuantityValue(prefix, value, low, high, system, code, code_or_unit=system is None)


def _parse_reference(full: str, param: SearchParam, mod: str | None, raw: str,
                     base_url: str | None) -> ReferenceValue:
    value = raw
    if base_url and value.startswith(base_url.rstrip("/") + "/"):
        value = value[len(base_url.rstrip("/")) + 1:]
    elif "://" in value or value.startswith("urn:"):
        url, _, version = value.partition("|")  # canonical url|version
        return ReferenceValue(url=url, version=version or None)
    parts = value.split("/")
    if len(parts) == 1:
        if not parts[0]:
            raise BadRequest("Empty reference", expression=full)
        return ReferenceValue(type=mod, id=parts[0])
    if len(parts) in (2, 4) and (len(parts) == 2 or parts[2] == "_history") and all(parts):
        rtype = parts[0]
        if rtype not in R4_RESOURCE_TYPES:
            raise BadRequest(f"Unknown resource type '{rtype}' in reference '{raw}'", expression=full)
        if mod is not None and mod != rtype:
            raise BadRequest(f"Reference '{raw}' contradicts the modifier ':{mod}'", expression=full)
        return ReferenceValue(type=rtype, id=parts[1], version=parts[3] if len(parts) == 4 else None)
    raise BadRequest(f"Invalid reference '{raw}' for '{full}'", expression=full)
