"""Index rows for a resource: what each search parameter finds in it, in the shape of the index
tables (storage/tables.py). Pure: no SQL; the repository adds ``resource_pk`` and ``res_type``.

The rules are those of search.html for each parameter type:

* token (#token): Coding -> system|code (text = display); CodeableConcept -> one row per coding
  plus its text (for ``:text``); Identifier -> system|value (type.coding for ``:of-type``, type.text
  for ``:text``); ContactPoint -> use|value (the spec's system for a ContactPoint is its ``use``);
  code/id/string/uri -> code with no system; boolean -> "true"/"false".
* string (#string): every string; HumanName -> family, given, prefix, suffix, text; Address -> line,
  city, district, state, postalCode, country, text. ``value_norm`` is case- and accent-folded.
* date (#date): date/dateTime/instant, Period and Timing (outer limits) as naive-UTC ranges.
* reference (#reference): relative ``Type/id[/_history/v]``; absolute URLs kept whole (type/id
  parsed out too when RESTful); canonicals as URL (+ ``|version``); contained ``#id`` skipped.
  A Reference.identifier is also written as a token row of parameter ``<code>:identifier``
  (search.html#reference, the ``:identifier`` modifier).
* quantity / number (#quantity, #number): value with the implicit range from its precision;
  Money -> value + currency (urn:iso:std:iso:4217); Range -> its low/high.
* uri (#uri): the string (a canonical's ``|version`` also indexed without it).
* composite (#composite) rows come from search/composite.py and ``near`` (Location.position) rows
  from search/geo.py; ``_text`` and ``_content``: the words of the narrative and of the whole
  resource (search/text.py), one ``text`` row each. Other special parameters are not indexed.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..fhir.resource_types import R4_RESOURCE_TYPES
from . import composite, geo
from .extract import Extractor, compile_expression, root_keys
from .fhirpath import fhir_type_name
from .normalize import STRING_INDEX_LENGTH, date_range, normalize_string, number_range, to_decimal
from .registry import SearchRegistry
from .text import text_rows

log = logging.getLogger(__name__)

Row = dict[str, Any]
Rows = dict[str, list[Row]]
Typed = list[tuple[str | None, Any]]

# The value columns of each index table (storage.tables.INDEX_TABLES, checked by a unit test).
ROW_COLUMNS: dict[str, tuple[str, ...]] = {
    "token": ("param", "system", "code", "text", "type_system", "type_code"),
    "string": ("param", "value_norm", "value_exact"),
    "date": ("param", "low", "high"),
    "reference": ("param", "target_type", "target_id", "target_url", "target_version"),
    "quantity": ("param", "low", "value", "high", "system", "code", "unit"),
    "number": ("param", "low", "value", "high"),
    "uri": ("param", "value"),
    "text": ("param", "words"),  # _text / _content (search/text.py), not a SearchParameter type
    "composite": composite.ROW_COLUMNS,
    "geo": geo.ROW_COLUMNS,
}
INDEXED_TYPES = frozenset(ROW_COLUMNS) - {"text", "composite", "geo"}
ISO_4217 = "urn:iso:std:iso:4217"
_SHORT = 64  # String(64) columns: param, target_type, target_id, target_version
_QUANTITY_TYPES = frozenset({"Quantity", "Age", "Duration", "Count", "Distance", "SimpleQuantity", "MoneyQuantity"})
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_ID = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE_REF = re.compile(rf"([A-Z][A-Za-z]{{0,63}})/({_ID})(?:/_history/({_ID}))?")
_ABSOLUTE_REF = re.compile(rf"/([A-Z][A-Za-z]{{0,63}})/({_ID})(?:/_history/({_ID}))?$")


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: rows() de-duplicates a resource's steps
class _Step:
    code: str
    kind: str
    extract: Extractor
    targets: tuple[str, ...] = ()


@dataclass
class _Plan:
    """The parameters of one resource type: those that start from a given top-level key, and
    those that must always run (booleans such as ``deceased``, fhirpathpy fallbacks)."""

    by_key: dict[str, list[_Step]]
    always: list[_Step]


class Indexer:
    """Turns a resource into index rows using the registry's parameters for its type."""

    def __init__(self, registry: SearchRegistry) -> None:
        self.registry = registry
        self._plans: dict[str, _Plan] = {}
        self._composites = composite.CompositeIndexer(registry)
        self._positions = geo.GeoIndexer(registry)

    def _plan(self, resource_type: str) -> _Plan:
        plan = self._plans.get(resource_type)
        if plan is None:
            plan = _Plan({}, [])
            for code, p in sorted(self.registry.params_for(resource_type).items()):
                if p.type not in INDEXED_TYPES or not p.expression:
                    continue
                step = _Step(code, p.type, compile_expression(resource_type, p.expression), p.targets)
                keys = root_keys(resource_type, p.expression)
                if keys is None:
                    plan.always.append(step)
                for key in keys or ():
                    plan.by_key.setdefault(key, []).append(step)
            self._plans[resource_type] = plan
        return plan

    def rows(self, resource: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Index rows by table key (``token``, ``string``, ``date``, ``reference``, ``quantity``,
        ``number``, ``uri``); each row has exactly that table's value columns plus ``param``.

        Never raises for odd content: a value that cannot be indexed is skipped (and logged when
        an expression itself fails), so a stored resource is always indexable.
        """
        out: Rows = {key: [] for key in ROW_COLUMNS}
        resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(resource_type, str):
            return out
        plan = self._plan(resource_type)
        # Only the parameters that can find something in this resource's top-level keys run.
        steps = list(plan.always)
        by_key = plan.by_key
        for key in resource:
            found = by_key.get(key)
            if found:
                steps.extend(found)
        if len(steps) > 1:
            steps = list(dict.fromkeys(steps))
        for step in steps:
            try:
                values = step.extract(resource)
            except Exception:  # noqa: BLE001 - fallback FHIRPath on unexpected content
                log.warning("search parameter %s.%s could not be evaluated", resource_type, step.code, exc_info=True)
                continue
            if not values:
                continue
            try:
                if step.kind == "reference":
                    _emit_reference(step.code, values, out, step.targets)
                else:
                    _EMITTERS[step.kind](step.code, values, out)
            except Exception:  # noqa: BLE001 - malformed content must not block a write
                log.warning("search parameter %s.%s: value not indexable", resource_type, step.code, exc_info=True)
        for key, rows in out.items():
            if len(rows) > 1:
                out[key] = _dedupe(rows)
        out["text"] = text_rows(resource)
        out["composite"] = self._composites.rows(resource_type, resource)
        out["geo"] = self._positions.rows(resource_type, resource)
        return out


def _dedupe(rows: list[Row]) -> list[Row]:
    seen: set[tuple[Any, ...]] = set()
    unique = []
    for row in rows:
        key = tuple(row.values())
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _cut(value: Any, limit: int = STRING_INDEX_LENGTH) -> str | None:
    """A column value as text no longer than the column (String(255) unless said otherwise)."""
    if value is None or (type(value) is str and len(value) <= limit):
        return value
    text = value if isinstance(value, str) else str(value)
    return text[:limit]


def _items(value: Any) -> list[Any] | tuple[Any, ...]:
    """A repeating element's entries, tolerating a single object or garbage where a list belongs."""
    if type(value) is list:
        return value
    return (value,) if type(value) is dict else ()


def _unwrap(t: str | None, v: Any) -> tuple[str | None, Any]:
    """An Extension stands for its value[x] (``extension('url')`` expressions)."""
    if t == "Extension" and type(v) is dict:
        for key, value in v.items():
            if key.startswith("value") and len(key) > 5 and key[5].isupper():
                return fhir_type_name(key[5:]), value
        return None, None
    return t, v


# --- token ---------------------------------------------------------------------------------------

def _token_row(param: str, system: Any, code: Any, text: Any = None,
               type_system: Any = None, type_code: Any = None) -> Row:
    # _cut inlined for the three columns every row sets: this is the indexer's hottest line.
    return {"param": param,
            "system": system if system is None or (type(system) is str and len(system) <= STRING_INDEX_LENGTH) else _cut(system),
            "code": code if code is None or (type(code) is str and len(code) <= STRING_INDEX_LENGTH) else _cut(code),
            "text": text if text is None or (type(text) is str and len(text) <= STRING_INDEX_LENGTH) else _cut(text),
            "type_system": None if type_system is None else _cut(type_system),
            "type_code": None if type_code is None else _cut(type_code)}


def _infer_token_type(v: Any) -> str | None:
    if type(v) is not dict:
        return None
    if "coding" in v or set(v) <= {"text", "id", "extension"}:
        return "CodeableConcept"
    if "value" in v:
        system = v.get("system")
        if (isinstance(system, str) and system in _CONTACT_SYSTEMS) or "rank" in v:
            return "ContactPoint"
        return "Identifier"
    if "code" in v or "system" in v:
        return "Coding"
    return None


def _emit_token(param: str, values: Typed, out: Rows) -> None:
    rows = out["token"]
    for t, v in values:
        t, v = _unwrap(t, v)
        if v is None:
            continue
        if type(v) is dict:
            t = t if t in ("CodeableConcept", "Coding", "Identifier", "ContactPoint") else _infer_token_type(v)
            if t == "CodeableConcept":
                _codeable_concept(param, v, rows)
            elif t == "Coding":
                if v.get("code") is not None or v.get("system") is not None:
                    rows.append(_token_row(param, v.get("system"), v.get("code"), v.get("display")))
            elif t == "Identifier":
                _identifier(param, v, rows)
            elif t == "ContactPoint":
                if v.get("value") is not None:
                    rows.append(_token_row(param, v.get("use"), v.get("value")))
        elif type(v) is bool:
            rows.append(_token_row(param, None, "true" if v else "false"))
        elif isinstance(v, str):
            if v:
                rows.append(_token_row(param, None, v))
        elif isinstance(v, (int, Decimal)):
            rows.append(_token_row(param, None, str(v)))


def _codeable_concept(param: str, cc: dict[str, Any], rows: list[Row]) -> None:
    text = cc.get("text")
    displays = set()
    for coding in _items(cc.get("coding")):
        if type(coding) is not dict:
            continue
        if coding.get("code") is not None or coding.get("system") is not None:
            display = coding.get("display")
            shown = display if display is not None else text
            if isinstance(shown, str):
                displays.add(shown)
            rows.append(_token_row(param, coding.get("system"), coding.get("code"), shown))
        elif isinstance(coding.get("display"), str) and coding["display"] not in displays:
            displays.add(coding["display"])  # a display-only coding still serves :text
            rows.append(_token_row(param, None, None, coding["display"]))
    if isinstance(text, str) and text and text not in displays:
        rows.append(_token_row(param, None, None, text))  # CodeableConcept.text, for :text


def _identifier(param: str, ident: dict[str, Any], rows: list[Row]) -> None:
    system, value = ident.get("system"), ident.get("value")
    if system is None and value is None:
        return
    id_type = ident.get("type") if type(ident.get("type")) is dict else {}
    text = id_type.get("text")
    typed = [c for c in _items(id_type.get("coding")) if type(c) is dict and c.get("code") is not None]
    if not typed:
        rows.append(_token_row(param, system, value, text))
    for coding in typed:
        rows.append(_token_row(param, system, value, text, coding.get("system"), coding.get("code")))


# --- string ----------------------------------------------------------------------------------------

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _string_row(param: str, value: str) -> Row:
    return {"param": param, "value_norm": normalize_string(value)[:STRING_INDEX_LENGTH], "value_exact": value}


def _emit_string(param: str, values: Typed, out: Rows) -> None:
    rows = out["string"]
    for t, v in values:
        t, v = _unwrap(t, v)
        if isinstance(v, str):
            if v:
                rows.append(_string_row(param, v))
            continue
        if type(v) is not dict:
            continue
        if t is None:
            t = "HumanName" if ("family" in v or "given" in v) else (
                "Address" if any(k in v for k in ("line", "city", "postalCode", "country")) else None)
        parts = _NAME_PARTS if t == "HumanName" else _ADDRESS_PARTS if t == "Address" else ()
        for part in parts:
            got = v.get(part)
            for s in (got if type(got) is list else (got,)):
                if isinstance(s, str) and s:
                    rows.append(_string_row(param, s))


# --- date ----------------------------------------------------------------------------------------------

def _low(value: Any) -> Any:
    return date_range(value)[0] if isinstance(value, str) else None


def _high(value: Any) -> Any:
    return date_range(value)[1] if isinstance(value, str) else None


def _emit_date(param: str, values: Typed, out: Rows) -> None:
    rows = out["date"]
    for t, v in values:
        t, v = _unwrap(t, v)
        try:
            if isinstance(v, str):
                low, high = date_range(v)
            elif type(v) is dict:
                if t is None:
                    t = "Timing" if ("event" in v or "repeat" in v) else "Period"
                if t == "Timing":
                    bounds = _timing_bounds(v)
                    if bounds is None:
                        continue
                    low, high = bounds
                elif t == "Period":
                    if v.get("start") is None and v.get("end") is None:
                        continue
                    low, high = _low(v.get("start")), _high(v.get("end"))
                else:
                    continue
            else:
                continue
        except ValueError:
            continue  # not a date (malformed content): nothing to index
        rows.append({"param": param, "low": low, "high": high})


def _timing_bounds(timing: dict[str, Any]) -> tuple[Any, Any] | None:
    """search.html#date: for a Timing "only the outer limits matter": the earliest event or
    bounds start to the latest event or bounds end (open if the bounds are open)."""
    lows, highs = [], []
    events = timing.get("event")
    for event in (events if type(events) is list else (events,)):
        if isinstance(event, str):
            lo, hi = date_range(event)
            lows.append(lo)
            highs.append(hi)
    repeat = timing.get("repeat") if type(timing.get("repeat")) is dict else {}
    bounds = repeat.get("boundsPeriod")
    if type(bounds) is dict and (bounds.get("start") or bounds.get("end")):
        lows.append(_low(bounds.get("start")))
        highs.append(_high(bounds.get("end")))
    if not lows:
        return None
    low = None if any(x is None for x in lows) else min(lows)
    high = None if any(x is None for x in highs) else max(highs)
    return low, high


# --- reference -----------------------------------------------------------------------------------------

def _reference_row(param: str, target_type: Any = None, target_id: Any = None,
                   target_url: Any = None, target_version: Any = None) -> Row:
    return {"param": param, "target_type": target_type, "target_id": target_id,
            "target_url": target_url, "target_version": target_version}


def parse_reference(param: str, ref: str) -> Row | None:
    """One reference row for a Reference.reference string (None for contained ``#id``)."""
    if not ref or ref.startswith("#"):
        return None
    m = _RELATIVE_REF.fullmatch(ref)
    if m:
        return _reference_row(param, m.group(1), m.group(2), None, m.group(3))
    if ":" in ref:  # absolute (http(s):, urn:uuid:, urn:oid:)
        m = _ABSOLUTE_REF.search(ref)
        if m and m.group(1) in R4_RESOURCE_TYPES:
            return _reference_row(param, m.group(1), m.group(2), ref, m.group(3))
    return _reference_row(param, None, None, ref, None)


def _canonical_row(param: str, value: str) -> Row | None:
    """canonical/uri targets (references.html#canonical): the URL, ``|version`` split off; a
    relative ``Type/id`` (as the spec's own examples write) is also read as type and id."""
    if not value or value.startswith("#"):
        return None
    url, _, version = value.partition("|")
    m = _RELATIVE_REF.fullmatch(url)
    return _reference_row(param, m.group(1) if m else None, m.group(2) if m else None, url,
                          version if version and len(version) <= _SHORT else None)


def _emit_reference(param: str, values: Typed, out: Rows, targets: tuple[str, ...] = ()) -> None:
    rows = out["reference"]
    for t, v in values:
        t, v = _unwrap(t, v)
        row: Row | None = None
        if isinstance(v, str):
            row = _canonical_row(param, v)
        elif type(v) is dict:
            if "resourceType" in v and t != "Reference":  # a resource in place (Bundle.entry[0].resource)
                rid = v.get("id")
                if targets and v["resourceType"] not in targets:
                    continue  # Bundle.composition: only when the first entry is a Composition
                if isinstance(rid, str) and re.fullmatch(_ID, rid):
                    row = _reference_row(param, _cut(v["resourceType"], _SHORT), rid)
            else:
                ref = v.get("reference")
                if isinstance(ref, str):
                    row = parse_reference(param, ref)
                ident = v.get("identifier")
                if type(ident) is dict:
                    _identifier(f"{param}:identifier"[:_SHORT], ident, out["token"])
        if row is not None:
            rows.append(row)


# --- quantity / number ------------------------------------------------------------------------------

_BOUNDS: dict[str, tuple[float, float, float] | None] = {}  # by the number's text, which keeps its precision
_BOUNDS_KEPT = 65_536
_BOUNDS_KEY_LONGEST = 40  # longer texts (a hostile resource's huge decimals) are computed, never kept
_NUMBER_TYPES = (int, float, Decimal)


def _bounds(value: Any) -> tuple[float, float, float] | None:
    """(low, value, high) of a JSON number (search.html#number: half a unit of its last digit either
    side). Remembered by the number's text — ``str`` of an int, float or Decimal keeps exactly what
    the range depends on (``1.0`` and ``1.00`` stay apart) — since the same few values (session
    counts, percentages) recur across thousands of resources of an import. A text longer than
    ``_BOUNDS_KEY_LONGEST`` characters is not remembered: the cache counts entries, not bytes, and
    65,536 keys of huge decimal strings would pin their memory."""
    if type(value) not in _NUMBER_TYPES:
        return _compute_bounds(value)
    key = str(value)
    if len(key) > _BOUNDS_KEY_LONGEST:
        return _compute_bounds(value)
    found = _BOUNDS.get(key, _BOUNDS)
    if found is _BOUNDS:
        if len(_BOUNDS) >= _BOUNDS_KEPT:
            _BOUNDS.clear()
        found = _BOUNDS[key] = _compute_bounds(value)
    return found  # type: ignore[return-value]


def _compute_bounds(value: Any) -> tuple[float, float, float] | None:
    number = to_decimal(value)
    if number is None:
        return None
    low, high = number_range(number)
    return float(low), float(number), float(high)


def _quantity_row(param: str, q: dict[str, Any]) -> Row | None:
    bounds = _bounds(q.get("value"))
    if bounds is None:
        return None
    low, value, high = bounds
    comparator = q.get("comparator")
    if comparator in ("<", "<="):
        low = None  # type: ignore[assignment]
    elif comparator in (">", ">="):
        high = None  # type: ignore[assignment]
    return {"param": param, "low": low, "value": value, "high": high, "system": _cut(q.get("system")),
            "code": _cut(q.get("code")), "unit": _cut(q.get("unit"))}


def _range_row(param: str, r: dict[str, Any], with_units: bool) -> Row | None:
    lo = r.get("low") if type(r.get("low")) is dict else {}
    hi = r.get("high") if type(r.get("high")) is dict else {}
    lo_b, hi_b = _bounds(lo.get("value")), _bounds(hi.get("value"))
    if lo_b is None and hi_b is None:
        return None
    row: Row = {"param": param, "low": lo_b[0] if lo_b else None, "value": None, "high": hi_b[2] if hi_b else None}
    if with_units:
        unit_of = lo if lo_b else hi
        row.update(system=_cut(unit_of.get("system")), code=_cut(unit_of.get("code")), unit=_cut(unit_of.get("unit")))
    return row


def _emit_quantity(param: str, values: Typed, out: Rows) -> None:
    rows = out["quantity"]
    for t, v in values:
        t, v = _unwrap(t, v)
        row: Row | None = None
        if type(v) is dict:
            if t is None:
                t = "Range" if ("low" in v or "high" in v) else "Money" if "currency" in v else "Quantity"
            if t in _QUANTITY_TYPES:
                row = _quantity_row(param, v)
            elif t == "Money":
                row = _quantity_row(param, {"value": v.get("value"), "system": ISO_4217 if v.get("currency") else None,
                                            "code": v.get("currency")})
            elif t == "Range":
                row = _range_row(param, v, with_units=True)
        else:
            bounds = _bounds(v)
            if bounds is not None:
                row = {"param": param, "low": bounds[0], "value": bounds[1], "high": bounds[2],
                       "system": None, "code": None, "unit": None}
        if row is not None:
            rows.append(row)


def _emit_number(param: str, values: Typed, out: Rows) -> None:
    rows = out["number"]
    for t, v in values:
        t, v = _unwrap(t, v)
        row: Row | None = None
        if type(v) is dict:
            if t == "Range" or (t is None and ("low" in v or "high" in v)):
                row = _range_row(param, v, with_units=False)
            else:
                bounds = _bounds(v.get("value"))  # a Quantity searched as a number
                if bounds is not None:
                    row = {"param": param, "low": bounds[0], "value": bounds[1], "high": bounds[2]}
        else:
            bounds = _bounds(v)
            if bounds is not None:
                row = {"param": param, "low": bounds[0], "value": bounds[1], "high": bounds[2]}
        if row is not None:
            rows.append(row)


# --- uri -------------------------------------------------------------------------------------------------

def _emit_uri(param: str, values: Typed, out: Rows) -> None:
    rows = out["uri"]
    for t, v in values:
        t, v = _unwrap(t, v)
        if isinstance(v, str) and v:
            rows.append({"param": param, "value": v})
            if "|" in v:  # canonical|version: also findable by the bare canonical
                rows.append({"param": param, "value": v.split("|", 1)[0]})


# reference is called on its own: it also needs the parameter's target types.
_EMITTERS: dict[str, Callable[[str, Typed, Rows], None]] = {
    "token": _emit_token, "string": _emit_string, "date": _emit_date,
    "quantity": _emit_quantity, "number": _emit_number, "uri": _emit_uri,
}
