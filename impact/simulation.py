"""A seeded population whose true intervention effects are known, for tests and benchmarks.

Children over 36 months. Each has a latent concern level; agencies record concern events at a rate
that follows it. Who is offered an intervention depends on the concern events of the last year
(selection on what the server can see, so weighting can undo it). A first child protection plan
comes from a monthly hazard that grows with the last year's concern events; the parenting programme
cuts it to ``PARENTING_HAZARD`` of itself from its start; mentoring does nothing. Each treated
child's plan is drawn twice from the same random numbers, with and without the effect, so the true
effect on the treated (a first plan within 12 months of the start, among children with no plan
before it) is known exactly for the sample.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date

import numpy as np

from mappings import systems

RISK = systems.code_system("risk-factor")
EPISODE = systems.code_system("episode-type")
ORIGIN = date(2022, 1, 1)
MONTHS = 36
CHILDREN = 1_200
PARENTING_HAZARD = 0.3  # the programme cuts the monthly hazard of a first plan to 30%
CRISIS_SHARE, CRISIS_MONTHS, CRISIS_OFFER = 0.15, 3, 3.0  # the unrecorded crisis of population(hidden=…)


def day(month: int, of_month: int = 10) -> str:
    """The date ``of_month`` of month ``month`` of the period, ISO."""
    y, m = divmod(ORIGIN.month - 1 + month, 12)
    return date(ORIGIN.year + y, m + 1, of_month).isoformat()


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def population(children: int = CHILDREN, seed: int = 5, *, hidden: float = 0.0) -> tuple[list[dict], dict[str, float]]:
    """Transaction entries (``POST`` with ``urn:uuid`` references) and the true effect on the treated
    per intervention.

    With ``hidden`` > 0 some children (``CRISIS_SHARE``) have a crisis that starts in the month of
    their possible start and lasts ``CRISIS_MONTHS``: ``hidden`` extra concern events a month on
    average, so a higher hazard of a plan. Their workers know of it at the offer, the month before,
    when no agency has recorded anything yet, and offer help far more often (``CRISIS_OFFER`` on the
    log-odds): selection on a risk the records do not yet show, which no weighting can undo."""
    rng = np.random.default_rng(seed)
    entries: list[dict] = []
    truth: dict[str, list[float]] = {"parenting-programme": [], "mentoring": []}

    def add(resource: dict) -> str:
        full_url = f"urn:uuid:{len(entries):08d}-0000-4000-8000-000000000000"
        entries.append({"fullUrl": full_url, "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
        return full_url

    def first_plan(events: np.ndarray, draws: np.ndarray, start: int, factor: float) -> int | None:
        for month in range(1, MONTHS):
            recent = float(np.log1p(events[max(0, month - 12):month].sum()))
            hazard = 0.006 * math.exp(1.3 * recent) * (factor if month >= start else 1.0)
            if draws[month] < hazard:
                return month
        return None

    for i in range(children):
        born = date(2008 + int(rng.integers(0, 12)), int(rng.integers(1, 13)), int(rng.integers(1, 28)))
        patient = add({"resourceType": "Patient", "identifier": [{"system": "https://example.org/child", "value": str(i)}],
                       "birthDate": born.isoformat(), "gender": "female" if i % 2 else "male"})
        events = rng.poisson(0.06 * math.exp(rng.normal()), MONTHS)
        start = int(rng.integers(12, MONTHS - 12))
        draws = rng.random(MONTHS)
        crisis = hidden > 0 and rng.random() < CRISIS_SHARE  # no draw without it: the same default population
        if crisis:
            events[start:start + CRISIS_MONTHS] += rng.poisson(hidden, CRISIS_MONTHS)
        for month in np.nonzero(events)[0]:
            for _ in range(int(events[month])):
                add({"resourceType": "Observation", "status": "final",
                     "code": {"coding": [{"system": RISK, "code": "domestic-abuse-child-present"}]},
                     "subject": {"reference": patient}, "effectiveDateTime": day(int(month))})
        offered = rng.random() < sigmoid(-2.2 + 1.4 * float(np.log1p(events[start - 12:start].sum()))
                                         + CRISIS_OFFER * crisis)
        kind = ("parenting-programme" if rng.random() < 0.7 else "mentoring") if offered else None
        factor = PARENTING_HAZARD if kind == "parenting-programme" else 1.0
        plan = first_plan(events, draws, start, factor)
        if kind:
            add({"resourceType": "EpisodeOfCare", "status": "finished",
                 "type": [{"coding": [{"system": EPISODE, "code": kind}]}],
                 "patient": {"reference": patient}, "period": {"start": day(start, 2), "end": day(start + 3, 2)}})
            untreated = first_plan(events, draws, start, 1.0)
            if untreated is None or untreated >= start:  # no plan before the start: in the analysis
                within = [int(p is not None and start <= p < start + 12) for p in (plan, untreated)]
                truth[kind].append(within[0] - within[1])
        if plan is not None:
            add({"resourceType": "EpisodeOfCare", "status": "active",
                 "type": [{"coding": [{"system": EPISODE, "code": "cp-plan"}]}],
                 "patient": {"reference": patient}, "period": {"start": day(plan, 5)}})
    return entries, {k: float(np.mean(v)) for k, v in truth.items()}




def bundles(entries: list[dict], size: int = 1_000) -> Iterator[dict]:
    """Transaction Bundles of about ``size`` entries; a child's entries stay in one (urn:uuid references
    resolve within a Bundle)."""
    current: list[dict] = []
    for entry in entries:
        if entry["resource"]["resourceType"] == "Patient" and len(current) >= size - 50:
            yield {"resourceType": "Bundle", "type": "transaction", "entry": current}
            current = []
        current.append(entry)
    if current:
        yield {"resourceType": "Bundle", "type": "transaction", "entry": current}
