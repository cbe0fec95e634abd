"""The search parameters this server supports, per resource type (search.html, searchparameter.html).

Loaded from ``profiles/r4/search-parameters.json`` (the R4 base definitions, see profiles/r4/README.md)
plus any SearchParameter (or Bundle of them) found elsewhere under the profiles directory, e.g.
``profiles/search-parameters/*.json``; our own definitions replace a base one with the same
(base, code). The base definitions join several types' paths in one expression
(``AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | …``);
each :class:`SearchParam` carries only the part for its own resource type.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..fhir.resource_types import R4_RESOURCE_TYPES
from .model import SearchParam

BASE_FILE = Path("r4") / "search-parameters.json"
# search.html#all: parameters for all resources (Resource-level) and all domain resources.
ABSTRACT_BASES = ("Resource", "DomainResource")
NOT_DOMAIN_RESOURCES = frozenset({"Bundle", "Binary", "Parameters"})


def split_expression(expression: str, bases: Iterable[str]) -> dict[str, str]:
    """The part of a multi-type expression that applies to each base type.

    ``"Patient.name | Person.name"`` over bases (Patient, Person) -> {Patient: "Patient.name",
    Person: "Person.name"}. A part that does not start with a type name (``name | alias``) or
    starts with an abstract type (``Resource.id``) applies to every base. Parts are split at
    top-level ``|`` only (not inside parentheses or string literals).
    """
    bases = list(bases)
    out: dict[str, list[str]] = {b: [] for b in bases}
    for part in _top_level_split(expression, "|"):
        head = _leading_identifier(part)
        if head in out:
            out[head].append(part)
        elif head in ABSTRACT_BASES or not head[:1].isupper():
            for b in bases:
                out[b].append(part)
        # else: a path for a type that is not among the bases (definition error): dropped
    return {b: " | ".join(parts) for b, parts in out.items() if parts}


def _top_level_split(text: str, sep: str) -> list[str]:
    parts, depth, quote, start = [], 0, False, 0
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == "'":
                quote = False
        elif c == "'":
            quote = True
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _leading_identifier(part: str) -> str:
    stripped = part.lstrip("( ")
    end = 0
    while end < len(stripped) and (stripped[end].isalnum() or stripped[end] == "_"):
        end += 1
    return stripped[:end]


def _search_parameters(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        return []
    if data.get("resourceType") == "SearchParameter":
        return [data]
    if data.get("resourceType") == "Bundle":
        return [e["resource"] for e in data.get("entry", [])
                if isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "SearchParameter"]
    return []


class SearchRegistry:
    """Search parameters by resource type and code. Immutable once built; safe to share."""

    _cache: dict[Path, "SearchRegistry"] = {}
    _lock = threading.Lock()

    def __init__(self, base: list[dict[str, Any]], own: list[dict[str, Any]] | None = None) -> None:
        self._definitions: list[dict[str, Any]] = list(base) + list(own or [])
        # (type or abstract base, code) -> SearchParam; later definitions (ours) win.
        by_base: dict[str, dict[str, SearchParam]] = {}
        for sp in self._definitions:
            for base_type, expression in split_expression(sp.get("expression") or "", sp.get("base") or []).items():
                by_base.setdefault(base_type, {})[sp["code"]] = _search_param(sp, base_type, expression)
        types = (set(R4_RESOURCE_TYPES) | set(by_base)) - set(ABSTRACT_BASES)
        self._types = tuple(sorted(types))
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        for rt in self._types:
            merged: dict[str, SearchParam] = {}
            for layer in ("Resource", "DomainResource", rt):
                if layer == "DomainResource" and rt in NOT_DOMAIN_RESOURCES:
                    continue
                for code, param in by_base.get(layer, {}).items():
                    merged[code] = param if layer == rt else _retarget(param, rt)
            self._by_type[rt] = merged
        self._by_url = {sp["url"]: sp for sp in self._definitions if "url" in sp}

    @classmethod
    def load(cls, profiles_dir: Path) -> "SearchRegistry":
        """Load (once per process and directory) the base definitions and our own.

        Raises ``FileNotFoundError`` if the base file is missing and ``ValueError`` naming the
        file if one of our JSON files does not parse.
        """
        key = Path(profiles_dir).resolve()
        with cls._lock:
            cached = cls._cache.get(key)
            if cached is None:
                cached = cls._cache[key] = cls._read(key)
            return cached

    @classmethod
    def clear_cache(cls) -> None:
        with cls._lock:
            cls._cache.clear()

    @classmethod
    def _read(cls, profiles_dir: Path) -> "SearchRegistry":
        base_path = profiles_dir / BASE_FILE
        base = _search_parameters(json.loads(base_path.read_text(encoding="utf-8")))
        own: list[dict[str, Any]] = []
        for path in sorted(profiles_dir.rglob("*.json")):
            if path.is_relative_to(profiles_dir / "r4"):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from None
            own.extend(_search_parameters(data))
        return cls(base, own)

    def params_for(self, resource_type: str) -> dict[str, SearchParam]:
        """Every parameter searchable on ``resource_type`` by code, the Resource-level ones
        (``_id``, ``_lastUpdated``, ``_tag``, ``_profile``, ``_security``, ``_source``) included.

        Parameters without an expression (``_text``, ``_content``, ``_query``, ``_filter``) are
        not listed: nothing can be indexed for them (they remain in :meth:`definitions`).
        """
        return dict(self._by_type.get(resource_type, ()))

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self._by_type.get(resource_type, {}).get(code)

    def resource_types(self) -> tuple[str, ...]:
        """Every concrete resource type known (R4 plus any our own definitions name), sorted."""
        return self._types

    def definitions(self) -> list[dict[str, Any]]:
        """The SearchParameter resources as loaded (base first, then ours), for the API."""
        return list(self._definitions)

    def definition(self, url: str) -> dict[str, Any] | None:
        """A SearchParameter resource by canonical URL (composite components name theirs)."""
        return self._by_url.get(url)


def _search_param(sp: dict[str, Any], base_type: str, expression: str) -> SearchParam:
    return SearchParam(
        code=sp["code"],
        type=sp["type"],
        resource_type=base_type,
        expression=expression,
        url=sp.get("url", ""),
        targets=tuple(sp.get("target") or ()),
        modifiers=tuple(sp.get("modifier") or ()),
        components=tuple((c.get("definition", ""), c.get("expression", "")) for c in sp.get("component") or ()),
        description=_description_for(sp.get("description") or "", base_type),
    )


def _description_for(description: str, resource_type: str) -> str:
    """The line for ``resource_type`` of a "Multiple Resources:" description, else the text."""
    if description.startswith("Multiple Resources"):
        prefix = f"* {resource_type}: "
        for line in description.splitlines():
            if line.startswith(prefix):
                return line[len(prefix):].strip()
    return description


def _retarget(param: SearchParam, resource_type: str) -> SearchParam:
    from dataclasses import replace

    return replace(param, resource_type=resource_type)
