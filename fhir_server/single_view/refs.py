"""Small pure helpers over stored resource JSON: local references, agencies, codes and dates."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..conformance import CANONICAL_BASE
from ..search.normalize import date_range

# meta.tag naming the agency a resource came from (written by the agency mappings' loader).
AGENCY_TAG_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/source-agency"
AGENCY_SOURCE_PREFIX = f"{CANONICAL_BASE}/agency/"

_RELATIVE = re.compile(r"^([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$")


def local_ref(reference: Any, base_url: str) -> tuple[str, str] | None:
    """(type, id) of a reference to a resource on this server: ``Type/id`` (references.html#literal),
    the same with ``/_history/v``, or an absolute URL under ``base_url``; None for anything else
    (contained ``#x``, ``urn:uuid:``, other servers, canonicals)."""
    if not isinstance(reference, str):
        return None
    base = base_url.rstrip("/") + "/"
    if reference.startswith(base):
        reference = reference[len(base):]
    match = _RELATIVE.match(reference)
    return (match.group(1), match.group(2)) if match else None


# Elements that never hold a Reference (narrative, meta, identifiers, codes, names, addresses, notes),
# skipped to keep the walk short; a Provenance's ``target`` lists what it is about (a whole import file).
_NO_REFERENCES = frozenset({"text", "meta", "identifier", "coding", "name", "address", "telecom", "note",
                            "period", "effectivePeriod", "valueQuantity", "component"})


def iter_references(node: Any, *, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    """Every ``Reference.reference`` value in a resource (extensions and backbone elements included,
    contained resources too: their references point out of the container), except under the top-level
    elements named in ``skip``."""
    stack: list[Any] = [{k: v for k, v in node.items() if k not in skip} if skip and isinstance(node, dict)
                        else node]
    while stack:
        current = stack.pop()
        if type(current) is dict:
            ref = current.get("reference")
            if type(ref) is str:
                yield ref
            for key, value in current.items():
                if key not in _NO_REFERENCES and type(value) in (dict, list):
                    stack.append(value)
        elif type(current) is list:
            stack.extend(v for v in current if type(v) in (dict, list))


# Elements whose references are what a resource is about (a Provenance's targets: a whole import file;
# a List's or Group's members), not who provided care: the single view does not follow them.
NOT_FOLLOWED = {"Provenance": frozenset({"target", "entity"}), "AuditEvent": frozenset({"entity"}),
                "List": frozenset({"entry"}), "Group": frozenset({"member"})}


class ReferenceIndex:
    """The local references ``(type, id)`` of each resource, each resource walked once per request
    (collection and the document's closure both need them)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._by_key: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def of(self, content: dict[str, Any]) -> list[tuple[str, str]]:
        res_type = str(content.get("resourceType"))
        key = (res_type, str(content.get("id")))
        found = self._by_key.get(key)
        if found is None:
            found = [t for ref in iter_references(content, skip=NOT_FOLLOWED.get(res_type, frozenset()))
                     if (t := local_ref(ref, self.base_url)) is not None]
            self._by_key[key] = found
        return found


def agency_of(resource: dict[str, Any]) -> tuple[str, str] | None:
    """(code, name) of the agency a resource came from: its source-agency ``meta.tag`` (e.g.
    ``("police/20", "20 Police")``), else its ``meta.source`` when that names an agency."""
    meta = resource.get("meta") or {}
    for tag in meta.get("tag") or []:
        if isinstance(tag, dict) and tag.get("system") == AGENCY_TAG_SYSTEM and tag.get("code"):
            return str(tag["code"]), str(tag.get("display") or tag["code"])
    source = meta.get("source")
    if isinstance(source, str) and source.startswith(AGENCY_SOURCE_PREFIX):
        code = source[len(AGENCY_SOURCE_PREFIX):]
        return code, code
    return None


def codings(concept: Any) -> list[dict[str, Any]]:
    if isinstance(concept, dict):
        return [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    return []


def has_code(concept: Any, system: str, codes: frozenset[str] | None = None) -> str | None:
    """The first code of ``concept`` in ``system`` (and in ``codes`` when given), else None."""
    for c in codings(concept):
        if c.get("system") == system and isinstance(c.get("code"), str) and (codes is None or c["code"] in codes):
            return str(c["code"])
    return None


def concept_text(concept: Any, displays: dict[tuple[str, str], str] | None = None) -> str:
    """What a CodeableConcept says, for people: its text, else the first coding's display (or the
    display our CodeSystems give it), else system|code."""
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str) and concept["text"]:
        return str(concept["text"])
    for c in codings(concept):
        if c.get("display"):
            return str(c["display"])
        if displays and (c.get("system"), c.get("code")) in displays:
            return displays[(c["system"], c["code"])]
    for c in codings(concept):
        if c.get("code"):
            return str(c["code"])
    return ""


@lru_cache(maxsize=4)
def code_displays(profiles_dir: Path) -> dict[tuple[str, str], str]:
    """(system, code) → display for every concept of our CodeSystems (profiles/codesystems)."""
    out: dict[tuple[str, str], str] = {}
    folder = profiles_dir / "codesystems"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        cs = json.loads(path.read_text(encoding="utf-8"))
        stack = [(c, cs.get("url")) for c in cs.get("concept") or []]
        while stack:
            concept, url = stack.pop()
            out[(url, concept["code"])] = concept.get("display", concept["code"])
            stack.extend((c, url) for c in concept.get("concept") or [])
    return out


def human_name(resource: dict[str, Any]) -> str:
    """``Given Family`` of the first usable name (its text if it has one)."""
    for name in resource.get("name") or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("given") or []), name.get("family") or ""]
        text = " ".join(str(p) for p in parts if p)
        if text:
            return text
    return ""


def period_bounds(value: Any) -> tuple[datetime | None, datetime | None]:
    """[low, high] (naive UTC) of a date, dateTime or Period; (None, None) when there is none."""
    try:
        if isinstance(value, str):
            return date_range(value)
        if isinstance(value, dict):
            low = date_range(value["start"])[0] if isinstance(value.get("start"), str) else None
            high = date_range(value["end"])[1] if isinstance(value.get("end"), str) else None
            return low, high
    except ValueError:
        pass
    return None, None


def day(value: Any) -> str:
    """The calendar day a date/dateTime string names (``2025-03-04``), or '' when there is none."""
    return value[:10] if isinstance(value, str) else ""
