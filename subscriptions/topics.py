"""Our SubscriptionTopics and the pure test of whether an event matches a subscription's filters.

On the R4 wire a SubscriptionTopic is a ``Basic`` resource (code ``SubscriptionTopic``) carrying the
R5 cross-version extensions (``http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.*``),
as the Subscriptions R5 Backport IG does for R4 (STU 1.1, "Topics in R4"). The files live in
``profiles/subscriptions/``; the server stores them like every conformance resource, so they are read
at ``GET [base]/Basic/escalation-flag``. This module reads the same files: a topic's triggers
(resource type, create/update/delete) and the filters it can be narrowed by (``canFilterBy``).

:func:`matches` is pure: it takes what is known about one event (:class:`EventFacts`) and a
subscription's filters. Filters are ANDed; a filter's comma-separated values are ORed (backport
filter-criteria, search.html#combining).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

TOPIC_EXT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic"
TOPICS_DIR = "subscriptions"
ESCALATION_FLAG = "https://w3id.org/sg-fhir/SubscriptionTopic/escalation-flag"
CHILD_AGENCY_DATA = "https://w3id.org/sg-fhir/SubscriptionTopic/child-agency-data"
# Filters whose value is a reference: "Patient/1", or a bare id taken as that type.
REFERENCE_FILTERS = {"patient": "Patient", "author": None, "lead-practitioner": "Practitioner",
                     "organization": "Organization"}
# Filters a topic's definition may declare, per topic: the code below knows how to evaluate these.
KNOWN_FILTERS = {
    ESCALATION_FLAG: {"patient", "author", "lead-practitioner", "organization", "band", "code"},
    CHILD_AGENCY_DATA: {"patient", "_type"},
}
REQUIRED_FILTERS = {CHILD_AGENCY_DATA: {"patient"}}


@dataclass(frozen=True)
class Topic:
    url: str
    title: str
    resource_types: frozenset[str]  # empty: any resource type (checked by the topic's own rule)
    interactions: frozenset[str]  # create | update | delete
    filters: frozenset[str]

    def triggered_by(self, res_type: str, interaction: str) -> bool:
        if interaction not in self.interactions:
            return False
        return not self.resource_types or res_type in self.resource_types


@lru_cache(maxsize=4)
def load_topics(profiles_dir: Path) -> dict[str, Topic]:
    """Every topic in ``profiles/subscriptions/`` by canonical URL. A topic naming a filter this
    module cannot evaluate is a start-up error, not a silently ignored filter."""
    topics: dict[str, Topic] = {}
    for path in sorted((profiles_dir / TOPICS_DIR).glob("*.json")):
        topic = _topic(json.loads(path.read_text(encoding="utf-8")))
        unknown = topic.filters - KNOWN_FILTERS.get(topic.url, set())
        if unknown:
            raise ValueError(f"{path}: no evaluator for filter(s) {sorted(unknown)} of {topic.url}")
        topics[topic.url] = topic
    return topics


def _topic(basic: dict[str, Any]) -> Topic:
    exts = {e["url"].removeprefix(TOPIC_EXT + "."): e for e in basic.get("extension", [])}
    url = exts["url"]["valueUri"]
    types: set[str] = set()
    interactions: set[str] = set()
    filters: set[str] = set()
    for ext in basic.get("extension", []):
        name = ext["url"].removeprefix(TOPIC_EXT + ".")
        parts = ext.get("extension", [])
        if name == "resourceTrigger":
            for part in parts:
                if part["url"] == "resource":
                    rtype = part["valueUri"].rsplit("/", 1)[-1]
                    if rtype != "Resource":
                        types.add(rtype)
                elif part["url"] == "supportedInteraction":
                    interactions.add(part["valueCode"])
        elif name == "canFilterBy":
            filters.update(p["valueString"] for p in parts if p["url"] == "filterParameter")
    title = exts.get("title", {}).get("valueString", url)
    return Topic(url, title, frozenset(types), frozenset(interactions), frozenset(filters))


@dataclass
class EventFacts:
    """What is known about one event when its subscriptions are matched. The two sets that need
    queries (lead practitioners, organisations) are filled only when a filter asks for them."""

    res_type: str
    res_id: str
    interaction: str
    content: dict[str, Any] | None  # the version written (the last one before, for a deletion)
    patients: frozenset[str] = frozenset()  # "Patient/1": the compartment(s) the resource is in
    lead_practitioners: frozenset[str] | None = None
    organizations: frozenset[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def matches(topic_url: str, filters: list[tuple[str, list[str]]], facts: EventFacts) -> bool:
    """True when ``facts`` passes every filter of a subscription to ``topic_url``."""
    if topic_url == ESCALATION_FLAG and not is_safeguarding_flag(facts.content):
        return False
    if topic_url == CHILD_AGENCY_DATA and not facts.patients:
        return False
    return all(_passes(name, values, facts) for name, values in filters)


def _passes(name: str, values: list[str], facts: EventFacts) -> bool:
    content = facts.content or {}
    if name == "patient":
        return bool(facts.patients & set(values))
    if name == "author":
        return _ref(content.get("author")) in values
    if name == "lead-practitioner":
        return bool((facts.lead_practitioners or frozenset()) & set(values))
    if name == "organization":
        author = _ref(content.get("author"))
        return author in values or bool((facts.organizations or frozenset()) & set(values))
    if name == "band":
        return bool(flag_bands(content) & {v.lower() for v in values})
    if name == "code":
        codes = _codes(content.get("code"))
        return any(v in codes for v in values)
    if name == "_type":
        return facts.res_type in values
    return False


def needs(filters: list[tuple[str, list[str]]]) -> set[str]:
    """Which queried facts the filters need: ``lead-practitioner`` and/or ``organization``."""
    return {name for name, _ in filters if name in ("lead-practitioner", "organization")}


SAFEGUARDING_CATEGORY = "safeguarding"
FLAG_CODE_SYSTEM = "https://w3id.org/sg-fhir/CodeSystem/safeguarding-flag"


def is_safeguarding_flag(content: dict[str, Any] | None) -> bool:
    """A Flag of category ``safeguarding`` (any system) or coded from our safeguarding-flag CodeSystem."""
    if not content or content.get("resourceType") != "Flag":
        return False
    categories = {c for cc in content.get("category", []) or [] for c in _codes(cc)}
    if any(c.rsplit("|", 1)[-1] == SAFEGUARDING_CATEGORY for c in categories):
        return True
    return any(c.startswith(FLAG_CODE_SYSTEM + "|") for c in _codes(content.get("code")))


def flag_bands(content: dict[str, Any]) -> set[str]:
    """Bands a Flag carries: codes red/amber/green in Flag.code, or any extension (at any depth)
    whose url ends in ``band`` with a code, string or Coding value."""
    bands = {c.rsplit("|", 1)[-1].lower() for c in _codes(content.get("code"))} & {"red", "amber", "green"}

    def walk(exts: Any) -> None:
        for ext in exts or []:
            if not isinstance(ext, dict):
                continue
            url = str(ext.get("url", ""))
            if url.rsplit("/", 1)[-1].lower().endswith("band"):
                value = ext.get("valueCode") or ext.get("valueString") or (ext.get("valueCoding") or {}).get("code")
                if isinstance(value, str):
                    bands.add(value.lower())
                for coding in (ext.get("valueCodeableConcept") or {}).get("coding", []):
                    if isinstance(coding.get("code"), str):
                        bands.add(coding["code"].lower())
            walk(ext.get("extension"))

    walk(content.get("extension"))
    return bands


def _ref(value: Any) -> str | None:
    return value.get("reference") if isinstance(value, dict) else None


def _codes(concept: Any) -> set[str]:
    """"system|code" and bare "code" for every coding of a CodeableConcept."""
    out: set[str] = set()
    if isinstance(concept, dict):
        for coding in concept.get("coding", []) or []:
            code = coding.get("code")
            if isinstance(code, str):
                out.add(code)
                if coding.get("system"):
                    out.add(f"{coding['system']}|{code}")
    return out
