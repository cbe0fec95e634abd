"""``_summary`` and ``_elements`` applied to one returned resource (search.html#summary,
search.html#elements). Pure, apart from reading the summary-element table once.

A subsetted resource is marked with the ``SUBSETTED`` tag in ``meta.tag`` (search.html#summary: the
server SHOULD mark resources it returns incomplete) and always keeps ``resourceType``, ``id``,
``meta`` and its top-level mandatory elements.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SUBSETTED_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
SUBSETTED = {"system": SUBSETTED_SYSTEM, "code": "SUBSETTED", "display": "Resource encoded in summary mode"}
_ALWAYS = ("resourceType", "id", "meta")

SummaryTable = dict[str, dict[str, list[str]]]


def load_summary_elements(profiles_dir: Path) -> SummaryTable:
    """``profiles/r4/summary-elements.json``: {type: {"summary": [...], "mandatory": [...]}}.
    A missing or unreadable file gives an empty table (then ``_summary=true`` keeps all but text)."""
    path = Path(profiles_dir) / "r4" / "summary-elements.json"
    try:
        stat = path.stat()
    except OSError:
        return {}
    return _load(str(path), stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _load(path: str, _mtime: int) -> SummaryTable:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    table: SummaryTable = {}
    for rtype, entry in raw.items():
        if isinstance(entry, dict):
            table[rtype] = {k: [str(e) for e in entry.get(k) or [] if isinstance(e, str)]
                            for k in ("summary", "mandatory")}
        elif isinstance(entry, list):  # tolerate a bare list of summary elements
            table[rtype] = {"summary": [str(e) for e in entry], "mandatory": []}
    return table


def apply_summary(resource: dict[str, Any], mode: str | None, elements: list[str] | None,
                  summary_elements: SummaryTable) -> dict[str, Any]:
    """Return ``resource`` reduced per ``_summary`` (true | text | data | false) or ``_elements``.

    ``true``: summary and mandatory elements (elements marked isSummary in the StructureDefinition);
    ``text``: text, id, meta and mandatory elements; ``data``: everything but ``text``; ``_elements``:
    the listed top-level elements plus mandatory ones. The input is not modified.
    """
    if mode in (None, "false", "count") and elements is None:
        return resource
    rtype = str(resource.get("resourceType", ""))
    entry = summary_elements.get(rtype, {})
    mandatory = _top_level(entry.get("mandatory", []), rtype)
    if mode == "data":
        if "text" not in resource:
            return resource
        kept = {k: v for k, v in resource.items() if k != "text"}
    elif mode == "text":
        kept = _keep(resource, ["text", *mandatory])
    elif mode == "true":
        if not entry:  # nothing known about this type: the safe subset is "all but the narrative"
            kept = {k: v for k, v in resource.items() if k != "text"}
        else:
            kept = _keep(resource, [*_top_level(entry.get("summary", []), rtype), *mandatory])
    else:
        kept = _keep(resource, [*_top_level(elements or [], rtype), *mandatory])
    return _tag_subsetted(kept)


def _top_level(names: list[str], rtype: str) -> list[str]:
    """Element names as written in the table or by the client: ``name``, ``Patient.name``,
    ``value[x]``; deeper paths keep their top-level element."""
    out = []
    for name in names:
        if rtype and name.startswith(rtype + "."):
            name = name[len(rtype) + 1:]
        elif "." in name and name[:1].isupper():
            continue  # another type's element (``Observation.code`` while encoding a Patient)
        out.append(name.split(".", 1)[0])
    return out


def _keep(resource: dict[str, Any], names: list[str]) -> dict[str, Any]:
    wanted = {n.removesuffix("[x]") for n in names if n}
    return {k: v for k, v in resource.items() if k in _ALWAYS or _wanted(k, wanted)}


def _wanted(key: str, wanted: set[str]) -> bool:
    """``value`` (or ``value[x]``) selects ``valueQuantity`` etc.; ``_birthDate`` follows ``birthDate``."""
    bare = key[1:] if key.startswith("_") else key
    if bare in wanted:
        return True
    return any(bare.startswith(w) and bare[len(w):] in _CHOICE_TYPES for w in wanted)


# The data types a choice element ``name[x]`` can take (datatypes.html#open), as name suffixes.
_CHOICE_TYPES = frozenset({
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id", "Instant", "Integer",
    "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt", "Uri", "Url", "Uuid", "Address", "Age",
    "Annotation", "Attachment", "CodeableConcept", "Coding", "ContactPoint", "Count", "Distance", "Duration",
    "HumanName", "Identifier", "Money", "Period", "Quantity", "Range", "Ratio", "Reference", "SampledData",
    "Signature", "Timing", "ContactDetail", "Contributor", "DataRequirement", "Expression",
    "ParameterDefinition", "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage", "Meta",
})


def _tag_subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("system") == SUBSETTED_SYSTEM and t.get("code") == "SUBSETTED" for t in tags):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    out = dict(resource)
    out["meta"] = meta
    # keep the usual key order: resourceType, id, meta first
    return {**{k: out[k] for k in _ALWAYS if k in out}, **{k: v for k, v in out.items() if k not in _ALWAYS}}
