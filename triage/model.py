"""The risk model itself: a child's evidence → score, band, reasons and fired triggers. Pure.

Every number is explained by a :class:`Reason` (factor, agency, evidence resources, contribution), and
the reasons add up to the score. The arithmetic (profiles/risk/risk-model.json says the same):

* one piece of evidence contributes ``weight × 0.5 ^ (age in days / half-life)``; evidence older than
  the horizon, or with no date, is left out (an undated fact cannot be said to be recent);
* a factor keeps its ``max_occurrences`` strongest pieces of evidence (repeats count, up to a point);
* a factor reported by at least ``corroboration_agencies`` agencies is multiplied by the
  corroboration multiplier (each agency's share of the factor keeps its own line);
* an open episode (plan, looked after) counts its full weight, a sibling's open plan the sibling weight;
* a combination adds its bonus when all its factors have evidence.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from .config import RiskConfig, Trigger

MIN_CONTRIBUTION = 0.05


@dataclass(frozen=True)
class Evidence:
    """One coded fact from one resource (an Observation's code)."""

    ref: str  # "Observation/1"
    system: str
    code: str
    agency: str  # source agency code, e.g. "police/20"
    when: datetime | None


@dataclass(frozen=True)
class Episode:
    """An EpisodeOfCare reduced to what the model needs."""

    ref: str
    code: str  # episode-type code
    agency: str
    start: datetime | None
    end: datetime | None
    open: bool
    care_manager: dict[str, Any] | None = None
    display: str = ""

    def covers(self, when: datetime) -> bool:
        return (self.start is None or self.start <= when) and (self.end is None or when <= self.end)


@dataclass
class ChildInput:
    child_id: str
    birth_date: date | None = None
    evidence: list[Evidence] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)
    sibling_episodes: list[Episode] = field(default_factory=list)
    record_ids: tuple[str, ...] = ()  # the agency records of a master


@dataclass(frozen=True)
class Reason:
    kind: str  # factor | episode | sibling | combination
    factor: str
    display: str
    agency: str | None
    contribution: float
    evidence: tuple[str, ...]
    corroborated: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "factor": self.factor, "display": self.display,
                               "contribution": self.contribution, "evidence": list(self.evidence)}
        if self.agency:
            out["agency"] = self.agency
        if self.corroborated:
            out["corroborated"] = True
        return out


@dataclass(frozen=True)
class Fired:
    code: str
    display: str
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class RiskScore:
    child_id: str
    score: float
    band: str
    reasons: tuple[Reason, ...]
    fired: tuple[Fired, ...]
    lead: dict[str, Any] | None
    open_episodes: tuple[Episode, ...]
    agencies: tuple[str, ...]  # every agency contributing evidence

    @property
    def evidence(self) -> list[str]:
        return list(dict.fromkeys(ref for r in self.reasons for ref in r.evidence))


def agency_kind(agency: str | None) -> str:
    """``police/20`` → ``police`` (the kind of agency: police, health, education, local-authority)."""
    return (agency or "").split("/", 1)[0]


def decay(weight: float, when: datetime, now: datetime, half_life_days: float) -> float:
    age = max((now - when).total_seconds() / 86400.0, 0.0)
    return weight * 0.5 ** (age / half_life_days)


def score_child(child: ChildInput, config: RiskConfig, now: datetime) -> RiskScore:
    """Score one child (see the module docstring)."""
    horizon = now - timedelta(days=config.horizon_days)
    # factor → agency → [(contribution, ref)]
    found: dict[str, dict[str, list[tuple[float, str]]]] = defaultdict(lambda: defaultdict(list))
    matched: list[tuple[Evidence, str]] = []
    for ev in child.evidence:
        factor = config.by_code.get((ev.system, ev.code))
        if factor is None or ev.when is None or ev.when < horizon:
            continue
        matched.append((ev, factor.code))
        value = decay(factor.weights[(ev.system, ev.code)], ev.when, now, factor.half_life_days)
        found[factor.code][ev.agency].append((value, ev.ref))
    reasons: list[Reason] = []
    for factor in config.factors:
        per_agency = found.get(factor.code)
        if not per_agency:
            continue
        strongest = sorted(((v, ref, agency) for agency, items in per_agency.items() for v, ref in items),
                           key=lambda t: (-t[0], t[1]))[:config.max_occurrences]
        kinds = {agency_kind(a) for a in per_agency}
        corroborated = len(kinds) >= config.corroboration_agencies
        multiplier = config.corroboration_multiplier if corroborated else 1.0
        kept: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for value, ref, agency in strongest:
            kept[agency].append((value, ref))
        for agency in sorted(kept):
            contribution = round(sum(v for v, _ in kept[agency]) * multiplier, 2)
            if contribution < MIN_CONTRIBUTION:  # decayed to nothing: not a reason any more
                continue
            reasons.append(Reason("factor", factor.code, factor.display, agency, contribution,
                                  tuple(ref for _, ref in kept[agency]), corroborated))
    open_episodes = tuple(e for e in child.episodes if e.open)
    episode_weights = {e.code: e for e in config.episodes}
    for code, weighted in episode_weights.items():
        eps = [e for e in open_episodes if e.code == code]
        if eps and weighted.weight:
            reasons.append(Reason("episode", code, weighted.display, eps[0].agency, weighted.weight,
                                  tuple(e.ref for e in eps)))
    sib = [e for e in child.sibling_episodes if e.open and e.code in config.sibling_episodes]
    if sib and config.sibling.weight:
        reasons.append(Reason("sibling", config.sibling.code, config.sibling.display, sib[0].agency,
                              config.sibling.weight, tuple(sorted({e.ref for e in sib}))))
    present = {r.factor for r in reasons if r.kind == "factor"}
    for combo in config.combinations:
        if all(f in present for f in combo.factors):
            refs = tuple(ref for r in reasons if r.kind == "factor" and r.factor in combo.factors for ref in r.evidence)
            reasons.append(Reason("combination", combo.code, combo.display, None, combo.bonus,
                                  tuple(dict.fromkeys(refs))))
    total = round(sum(r.contribution for r in reasons), 1)
    fired = tuple(f for t in config.triggers if (f := _fire(t, child, matched, now)) is not None)
    agencies = tuple(sorted({r.agency for r in reasons if r.agency}))
    return RiskScore(child.child_id, total, config.band_of(total).code, tuple(reasons), fired,
                     lead_practitioner(open_episodes, config.lead_order), open_episodes, agencies)


def lead_practitioner(episodes: tuple[Episode, ...], order: tuple[str, ...]) -> dict[str, Any] | None:
    """The ``careManager`` of the child's open EpisodeOfCare, the most statutory one first
    (``leadEpisodeOrder``), then the most recent."""
    def rank(e: Episode) -> tuple[int, float]:
        return (order.index(e.code) if e.code in order else len(order),
                -(e.start.timestamp() if e.start else 0.0))

    for e in sorted(episodes, key=rank):
        if e.care_manager:
            return e.care_manager
    return None


def _fire(trigger: Trigger, child: ChildInput, matched: list[tuple[Evidence, str]], now: datetime) -> Fired | None:
    """A trigger is active while its newest qualifying event is under ``active_days`` old."""
    since = now - timedelta(days=trigger.active_days)
    events = sorted((ev for ev, factor in matched if factor == trigger.factor and ev.when is not None
                     and (not trigger.codes or ev.code in trigger.codes)
                     and (not trigger.agencies or agency_kind(ev.agency) in trigger.agencies)),
                    key=lambda ev: ev.when)  # type: ignore[arg-type,return-value]
    if trigger.kind == "repeat":
        window = timedelta(days=trigger.within_days)
        for i in range(len(events) - 1, trigger.count - 2, -1):
            last = events[i]
            first = events[i - trigger.count + 1]
            if last.when >= since and last.when - first.when <= window:  # type: ignore[operator]
                return Fired(trigger.code, trigger.display, tuple(e.ref for e in events[i - trigger.count + 1:i + 1]))
        return None
    for ev in reversed(events):
        if ev.when < since:  # type: ignore[operator]
            break
        episodes = [e for e in child.episodes if e.code in trigger.episodes and e.covers(ev.when)]  # type: ignore[arg-type]
        if not episodes:
            continue
        if trigger.kind == "event-while-known" and trigger.max_age_years is not None:
            if child.birth_date is None or _age_years(child.birth_date, ev.when.date()) >= trigger.max_age_years:  # type: ignore[union-attr]
                continue
        return Fired(trigger.code, trigger.display, (ev.ref, *(e.ref for e in episodes)))
    return None


def _age_years(born: date, on: date) -> float:
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return float(years)
