"""Stored resources → the model's inputs (:class:`~triage.model.Evidence`, :class:`~triage.model.Episode`). Pure.

* Observation (observation.html): each coding of ``code``, and each ``component`` coded in our
  ``risk-factor`` CodeSystem whose ``valueBoolean`` is true (the school census records persistent and
  severe absence that way); dated by ``effective[x]`` (a period by its end when it has one, else its
  start), attributed to the source agency of the resource's ``meta.tag``. Observations
  ``entered-in-error`` or ``cancelled`` say nothing.
* EpisodeOfCare (episodeofcare.html): its ``episode-type`` code; open while its status is planned,
  waitlist, active or onhold and its period has not ended; ``careManager`` is the lead practitioner.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from fhir_server.conformance import CANONICAL_BASE
from fhir_server.single_view.refs import agency_of, codings, period_bounds

from .model import Episode, Evidence

RISK_FACTOR = f"{CANONICAL_BASE}/CodeSystem/risk-factor"
EPISODE_TYPE = f"{CANONICAL_BASE}/CodeSystem/episode-type"
OPEN_STATUSES = frozenset({"planned", "waitlist", "active", "onhold"})
IGNORED_STATUSES = frozenset({"entered-in-error", "cancelled"})


def agency(content: dict[str, Any]) -> str:
    found = agency_of(content)
    return found[0] if found else "unknown"


def observation_evidence(content: dict[str, Any]) -> list[Evidence]:
    if content.get("status") in IGNORED_STATUSES:
        return []
    ref = f"Observation/{content.get('id')}"
    when = _effective(content)
    source = agency(content)
    out = [Evidence(ref, str(c.get("system")), str(c["code"]), source, when)
           for c in codings(content.get("code")) if c.get("code")]
    for comp in content.get("component") or []:
        if isinstance(comp, dict) and comp.get("valueBoolean") is True:
            out += [Evidence(ref, RISK_FACTOR, str(c["code"]), source, when)
                    for c in codings(comp.get("code")) if c.get("system") == RISK_FACTOR and c.get("code")]
    return out


def episode_of(content: dict[str, Any], now: datetime) -> Episode | None:
    code = next((str(c["code"]) for t in content.get("type") or [] for c in codings(t)
                 if c.get("system") == EPISODE_TYPE and c.get("code")), None)
    if code is None:
        return None
    start, end = period_bounds(content.get("period"))
    is_open = content.get("status") in OPEN_STATUSES and (end is None or end >= now)
    managers = content.get("careManager")
    manager = managers if isinstance(managers, dict) and managers.get("reference") else None
    display = next((str(c.get("display") or code) for t in content.get("type") or [] for c in codings(t)
                    if c.get("system") == EPISODE_TYPE), code)
    return Episode(f"EpisodeOfCare/{content.get('id')}", code, agency(content), start, end, is_open,
                   {k: manager[k] for k in ("reference", "display") if k in manager} if manager else None, display)


def birth_date(content: dict[str, Any]) -> date | None:
    value = content.get("birthDate")
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def local_authority(contents: list[dict[str, Any]]) -> str | None:
    """The local authority of a child: the code of a ``local-authority/NNN`` (else ``education/NNN``)
    source agency among their records."""
    for prefix in ("local-authority/", "education/"):
        for content in contents:
            code = agency(content)
            if code.startswith(prefix):
                return code[len(prefix):]
    return None


def _effective(content: dict[str, Any]) -> datetime | None:
    if isinstance(content.get("effectiveDateTime"), str):
        return period_bounds(content["effectiveDateTime"])[0]
    if isinstance(content.get("effectivePeriod"), dict):
        start, end = period_bounds(content["effectivePeriod"])
        if end is not None:
            return period_bounds(content["effectivePeriod"]["end"])[0]
        return start
    if isinstance(content.get("effectiveInstant"), str):
        return period_bounds(content["effectiveInstant"])[0]
    if isinstance(content.get("issued"), str):
        return period_bounds(content["issued"])[0]
    return None
