"""What each collected resource says, as facts the family summary can group and print. Pure.

A fact is one line of the summary: a risk factor, an episode of involvement, a flag, an event. It keeps
the resource it came from (the Composition's ``section.entry``), its dates, the agency that recorded it
(the resource's source-agency ``meta.tag``, else ``meta.source``) and the person it is about.

Codes come from our CodeSystems (profiles/codesystems): ``risk-factor`` (police, school, ED, looked-after
notifications), ``cin-assessment-factor`` (factors identified at a children's social care assessment,
whose letter says who they concern: A the child, B a parent or carer, C another household member),
``episode-type`` (statutory involvement and interventions) and ``safeguarding-flag``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..conformance import CANONICAL_BASE
from .refs import agency_of, concept_text, has_code, local_ref, period_bounds

RISK_FACTOR = f"{CANONICAL_BASE}/CodeSystem/risk-factor"
CIN_FACTOR = f"{CANONICAL_BASE}/CodeSystem/cin-assessment-factor"
EPISODE_TYPE = f"{CANONICAL_BASE}/CodeSystem/episode-type"
INVOLVED_ADULT = f"{CANONICAL_BASE}/StructureDefinition/involved-adult"
# risk-factor codes that record an event or a measure rather than a concern in themselves
EVENT_CODES = frozenset({"ed-attendance", "school-attendance"})
ABSENCE_CODES = frozenset({"persistent-absence", "severe-absence"})
NO_FACTORS = "21"  # cin-assessment-factor: no factors identified
# episode-type codes for support offered rather than statutory involvement (profiles/codesystems/episode-type.json)
INTERVENTION_CODES = frozenset({"early-help", "family-group-conference", "parenting-programme",
                                "substance-misuse-service", "domestic-abuse-service", "mentoring",
                                "school-attendance-support", "family-support"})
OPEN_EPISODE = frozenset({"planned", "waitlist", "active", "onhold"})
PARENT_OR_CARER = "parent-or-carer"  # about-keys for CIN factors that name no one
HOUSEHOLD_MEMBER = "household-member"


@dataclass(frozen=True)
class Fact:
    """One line of the summary about one resource (``ref``)."""

    ref: str
    category: str  # risk | episode | flag | event | condition
    label: str
    about: str  # a person key of the family graph, or PARENT_OR_CARER / HOUSEHOLD_MEMBER
    start: datetime | None = None
    end: datetime | None = None
    agency: str = ""  # agency code, e.g. police/20
    agency_name: str = ""
    detail: str = ""
    status: str = ""
    active: bool = False  # an open episode, an active flag
    intervention: bool = False
    lead: str = ""  # lead practitioner (EpisodeOfCare.careManager)
    involved: tuple[tuple[str, str], ...] = ()  # (person key, role) of adults the resource involves
    derived: bool = False  # a copy of the resource's main fact, about one of the adults it involves
    extra_refs: tuple[str, ...] = field(default_factory=tuple)  # practitioners etc. the line names

    @property
    def when(self) -> str:
        """The date (or period) for people: ``2025-03-04``, ``2025-01-10 to 2025-06-30``, ``since …``."""
        start = self.start.date().isoformat() if self.start else ""
        end = self.end.date().isoformat() if self.end else ""
        if self.category in ("episode", "flag") or (start and end and start != end):
            if start and end:
                return f"{start} to {end}"
            return f"since {start}" if start else (f"until {end}" if end else "")
        return start or end


@dataclass(frozen=True)
class FactContext:
    """What classification needs besides the resource: how to name people and practitioners."""

    base_url: str
    now: datetime
    displays: dict[tuple[str, str], str]
    about: Callable[[str], str | None]  # record reference → person key
    names: dict[str, str]  # "Practitioner/1" → "Priya Shah"

    def text(self, concept: Any) -> str:
        return concept_text(concept, self.displays)


def facts_of(resource: dict[str, Any], ctx: FactContext) -> list[Fact]:
    """The facts one resource contributes (none for resources that are not facts: a Patient, an
    Organization). An Observation about a child with adults involved (police ``involved-adult``, or
    ``focus``) also yields a fact about each adult."""
    kind = resource.get("resourceType")
    handler = _HANDLERS.get(str(kind))
    return handler(resource, ctx) if handler else []


def _base(resource: dict[str, Any], ctx: FactContext, subject_element: str) -> dict[str, Any]:
    ref = f"{resource['resourceType']}/{resource['id']}"
    found = agency_of(resource)
    subject = local_ref((resource.get(subject_element) or {}).get("reference"), ctx.base_url)
    about = ctx.about(f"{subject[0]}/{subject[1]}") if subject else None
    return {"ref": ref, "agency": found[0] if found else "", "agency_name": found[1] if found else "",
            "about": about or "", "status": str(resource.get("status") or "")}


def _observation(obs: dict[str, Any], ctx: FactContext) -> list[Fact]:
    base = _base(obs, ctx, "subject")
    start, end = _effective(obs)
    code = obs.get("code")
    label = ctx.text(code) or "Observation"
    detail = _value(obs, ctx)
    risk = has_code(code, RISK_FACTOR)
    factor = has_code(code, CIN_FACTOR)
    category = "event"
    if risk is not None:
        category = "event" if risk in EVENT_CODES else "risk"
        absence = [c for c in obs.get("component") or [] if has_code(c.get("code"), RISK_FACTOR, ABSENCE_CODES)
                   and c.get("valueBoolean") is True]
        if risk == "school-attendance" and absence:
            category = "risk"
            label = "; ".join(ctx.text(c.get("code")) for c in absence)
    elif factor is not None and factor != NO_FACTORS:
        category = "risk"
        if factor.endswith("B"):
            base["about"] = PARENT_OR_CARER
        elif factor.endswith("C"):
            base["about"] = HOUSEHOLD_MEMBER
    if obs.get("status") in ("entered-in-error", "cancelled"):
        return []
    notes = [str(n.get("text")) for n in obs.get("note") or [] if isinstance(n, dict) and n.get("text")]
    detail = "; ".join(p for p in (detail, *notes[:1]) if p)
    involved = tuple(_involved(obs, ctx))
    out = [Fact(category=category, label=label, start=start, end=end, detail=detail, involved=involved, **base)]
    for adult, role in involved:
        out.append(Fact(category="risk", label=f"{role}: {label}", start=start, end=end, derived=True,
                        **{**base, "about": adult}))
    return out


def _involved(obs: dict[str, Any], ctx: FactContext) -> list[tuple[str, str]]:
    """(person key, role in words) of the adults an Observation involves: the police involved-adult
    extension (role and person), and ``focus`` (an observation about them, e.g. a MARAC referral)."""
    out: list[tuple[str, str]] = []
    for ext in obs.get("extension") or []:
        if not isinstance(ext, dict) or ext.get("url") != INVOLVED_ADULT:
            continue
        parts = {e.get("url"): e for e in ext.get("extension") or [] if isinstance(e, dict)}
        person = local_ref(((parts.get("person") or {}).get("valueReference") or {}).get("reference"), ctx.base_url)
        key = ctx.about(f"{person[0]}/{person[1]}") if person else None
        if key:
            role = ctx.text((parts.get("role") or {}).get("valueCodeableConcept")) or "involved"
            out.append((key, role.replace("-", " ").capitalize()))
    for focus in obs.get("focus") or []:
        found = local_ref(focus.get("reference") if isinstance(focus, dict) else None, ctx.base_url)
        key = ctx.about(f"{found[0]}/{found[1]}") if found else None
        if key and all(k != key for k, _r in out):
            out.append((key, "About them"))
    return out


def _effective(obs: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    for key in ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"):
        if obs.get(key):
            low, high = period_bounds(obs[key])
            return low, (high if key == "effectivePeriod" else None)
    return None, None


def _value(obs: dict[str, Any], ctx: FactContext) -> str:
    if isinstance(obs.get("valueString"), str):
        return str(obs["valueString"])
    if isinstance(obs.get("valueCodeableConcept"), dict):
        return ctx.text(obs["valueCodeableConcept"])
    quantity = obs.get("valueQuantity")
    if isinstance(quantity, dict) and quantity.get("value") is not None:
        return f"{quantity['value']}{quantity.get('unit') or ''}"
    if isinstance(obs.get("valueInteger"), int):
        return str(obs["valueInteger"])
    return ""


def _episode(eoc: dict[str, Any], ctx: FactContext) -> list[Fact]:
    base = _base(eoc, ctx, "patient")
    start, end = period_bounds(eoc.get("period"))
    types = [t for t in eoc.get("type") or [] if isinstance(t, dict)]
    ordered = sorted(types, key=lambda t: has_code(t, EPISODE_TYPE) is None)  # the episode type first
    label = "; ".join(dict.fromkeys(x for t in ordered if (x := ctx.text(t)))) or "Episode of care"
    codes = {c for t in types if (c := has_code(t, EPISODE_TYPE))}
    active = eoc.get("status") in OPEN_EPISODE and (end is None or end >= ctx.now)
    manager = local_ref((eoc.get("careManager") or {}).get("reference"), ctx.base_url)
    manager_ref = f"{manager[0]}/{manager[1]}" if manager else ""
    lead = ctx.names.get(manager_ref) or str((eoc.get("careManager") or {}).get("display") or "")
    return [Fact(category="episode", label=label, start=start, end=end, active=active,
                 intervention=bool(codes & INTERVENTION_CODES), lead=lead,
                 extra_refs=(manager_ref,) if manager_ref else (), **base)]


def _flag(flag: dict[str, Any], ctx: FactContext) -> list[Fact]:
    base = _base(flag, ctx, "subject")
    start, end = period_bounds(flag.get("period"))
    active = flag.get("status") == "active" and (end is None or end >= ctx.now)
    category = "; ".join(x for c in flag.get("category") or [] if (x := ctx.text(c)))
    return [Fact(category="flag", label=ctx.text(flag.get("code")) or "Flag", start=start, end=end,
                 active=active, detail=category, **base)]


def _condition(cond: dict[str, Any], ctx: FactContext) -> list[Fact]:
    base = _base(cond, ctx, "subject")
    start, end = (None, None)
    for key in ("onsetDateTime", "onsetPeriod", "recordedDate"):
        if cond.get(key):
            start, end = period_bounds(cond[key])
            end = end if key == "onsetPeriod" else None
            break
    clinical = ctx.text(cond.get("clinicalStatus"))
    return [Fact(category="condition", label=ctx.text(cond.get("code")) or "Condition", start=start, end=end,
                 detail=clinical, active=clinical.lower() in ("active", "recurrence", "relapse"), **base)]


def _encounter(enc: dict[str, Any], ctx: FactContext) -> list[Fact]:
    base = _base(enc, ctx, "subject")
    start, end = period_bounds(enc.get("period"))
    label = "; ".join(x for t in enc.get("type") or [] if (x := ctx.text(t))) or "Encounter"
    reasons = "; ".join(x for r in enc.get("reasonCode") or [] if (x := ctx.text(r)))
    return [Fact(category="event", label=label, start=start, end=end, detail=reasons, **base)]


_HANDLERS: dict[str, Callable[[dict[str, Any], FactContext], list[Fact]]] = {
    "Observation": _observation, "EpisodeOfCare": _episode, "Flag": _flag, "Condition": _condition,
    "Encounter": _encounter,
}
