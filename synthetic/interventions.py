"""Interventions: what each one truly does, who gets offered it, and the episodes a family receives.

The true effect is a fall in the family's latent risk (log-odds) for every month the family attends;
the fall stays after the intervention ends. Mentoring has no effect at all, so that an evaluation can
be checked for false positives. Offers are made with a *selection bias* that any evaluation has to
undo: riskier families, families with an open social-care case and families with a recent incident
are much more likely to be offered something (see :func:`offer_logit`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class InterventionType:
    code: str  # the episode-type CodeSystem code (profiles/codesystems/episode-type.json)
    effect_per_month: float  # true fall in latent risk (log-odds) per month attended
    planned_months: int
    attendance_boost: float = 0.0  # extra school attendance (fraction of sessions) for target children


CATALOGUE: dict[str, InterventionType] = {t.code: t for t in (
    InterventionType("early-help", 0.06, 6),
    InterventionType("family-support", 0.04, 6),
    InterventionType("parenting-programme", 0.09, 3),
    InterventionType("substance-misuse-service", 0.10, 6),
    InterventionType("domestic-abuse-service", 0.12, 4),
    InterventionType("family-group-conference", 0.25, 2),
    InterventionType("school-attendance-support", 0.03, 3, attendance_boost=0.04),
    InterventionType("mentoring", 0.0, 6),  # no true effect
)}
ZERO_EFFECT = "mentoring"

# Selection model: logit P(offer this month) for a family with no intervention in the last 3 months.
OFFER_INTERCEPT = -3.3
OFFER_PER_RISK = 0.9  # per unit of latent risk (log-odds)
OFFER_OPEN_CASE = 1.2  # an open CIN/CP case
OFFER_RECENT_INCIDENT = 0.8  # any agency incident in the last 3 months
OFFER_AFTER_ASSESSMENT_STEP_DOWN = 3.0  # assessment closed with a referral to early help (RC9)
ACCEPT_PROBABILITY = 0.8
DROPOUT_PER_MONTH = 0.06
EFFECT_SPREAD = 0.3  # per-episode effect = type effect x max(0, 1 + 0.3 N(0,1))
GAP_MONTHS = 3  # no new offer within 3 months of the last one ending


def offer_logit(risk: float, open_case: bool, recent_incident: bool, stepped_down: bool) -> float:
    return (OFFER_INTERCEPT + OFFER_PER_RISK * risk + OFFER_OPEN_CASE * open_case
            + OFFER_RECENT_INCIDENT * recent_incident + OFFER_AFTER_ASSESSMENT_STEP_DOWN * stepped_down)


def sigmoid(x: float) -> float:
    if x < -30:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class Intervention:
    """One offer to a family and, if accepted, the episode: months are indices into the period."""

    number: int  # 1, 2… within the family
    code: str
    offered_month: int
    accepted: bool
    start_month: int
    end_month: int  # exclusive: the first month no longer attended (may be past the period)
    planned_end_month: int
    completed: bool
    effect_per_month: float  # this episode's true effect (type effect with spread)
    targets: tuple[str, ...] = ()  # person ids of the children it is for
    # dates and record keys, filled in when the family's records are dated
    offered_date: object = None
    start_date: object = None
    end_date: object = None
    keys: dict[str, str] = field(default_factory=dict)  # child person id -> EpisodeOfCare identifier

    def active(self, month: int) -> bool:
        return self.accepted and self.start_month <= month < self.end_month

    def months_attended(self, horizon: int) -> int:
        return max(0, min(self.end_month, horizon) - self.start_month) if self.accepted else 0


def type_weights(*, substance: bool, domestic_abuse: bool, young_child: bool, absent_child: bool, teen: bool,
                 teen_incident: bool, open_plan: bool) -> dict[str, float]:
    """Which intervention a family is offered depends on what the agencies have seen."""
    weights = {"early-help": 3.0, "family-support": 2.0}
    if young_child:
        weights["parenting-programme"] = 2.0
    if substance:
        weights["substance-misuse-service"] = 4.0
    if domestic_abuse:
        weights["domestic-abuse-service"] = 4.0
    if absent_child:
        weights["school-attendance-support"] = 3.0
    if teen:
        weights["mentoring"] = 5.0 if teen_incident else 1.5
    if open_plan:
        weights["family-group-conference"] = 3.0
    return weights


def choose(weights: dict[str, float], u: float) -> str:
    total = sum(weights.values())
    acc = 0.0
    for code in sorted(weights):
        acc += weights[code] / total
        if u < acc:
            return code
    return sorted(weights)[-1]
