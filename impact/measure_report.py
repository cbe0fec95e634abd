"""``$intervention-impact`` as a FHIR MeasureReport (``output=measure-report``).

R4 MeasureReport (https://hl7.org/fhir/R4/measurereport.html) is built for a measure's score over a
population and period: here one *group* per intervention and outcome, whose ``measureScore`` is the
estimated effect on the treated (a difference in probability or in events a child) and whose
populations count the cases (``initial-population``: treated and comparison cases together; then each
group on its own, named in ``code.text``). What the base resource has no element for — the 95%
interval, the p-value, the effective comparison size, the plain statement, the covariate balance and
the trajectory chart — travels in extensions of ours (``…/StructureDefinition/impact-*``), the chart as
an ``image/svg+xml`` Attachment. A result too thin to give a number has a group with its counts and
statement and no ``measureScore`` (the element is optional; a missing score is not a zero).

The report is checked against the R4 structure (``fhir.resources`` R4B models) before it is returned,
so a mistake here is a 500 in our tests, never a malformed resource sent to a client.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fhir_server.fhir.models import validate_structure
from mappings import systems
from mappings.fhir_shapes import EXTENSION

from . import design as d
from .analysis import Evaluation
from .chart import trajectory_attachment
from .data import EPISODE_TYPE
from .estimators import Effect

MEASURE = f"{systems.CANONICAL_BASE}/Measure/intervention-impact"
OUTCOME_SYSTEM = systems.code_system("intervention-impact-outcome")
MEASURE_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
EXT_EFFECT = f"{EXTENSION}/impact-effect"  # complex: interval, p-value, sizes, statement
EXT_BALANCE = f"{EXTENSION}/impact-balance"  # complex: covariate, smd-before, smd-after
EXT_INTERVENTION = f"{EXTENSION}/impact-intervention"  # the group's intervention type (Coding)
EXT_CHART = f"{EXTENSION}/impact-trajectory-chart"  # Attachment, image/svg+xml
EXT_PRE_TREND = f"{EXTENSION}/impact-pre-trend"  # string: the pre-trend check in words
EXT_TEXT = f"{EXTENSION}/impact-caution"  # string: the method and the caution
EXT_CHECK = f"{EXTENSION}/impact-first-month-check"  # string: the first-month check in words
FIRST_MONTH = "first-month-check"
FIRST_MONTH_TEXT = ("Concern events in the month the intervention started, against the weighted comparison group: a "
                    "difference there is selection on a risk the records did not show, not an effect")
TRAJECTORY = "concern-trajectory-did"
TRAJECTORY_TEXT = ("Difference-in-differences on concern events a month, from 6 months before the start to 12 "
                   "after, against the weighted comparison group")


def measure_report(mode: str, results: list[Evaluation], *, method: str, caution: str,
                   now: datetime | None = None) -> dict[str, Any]:
    """One summary MeasureReport for every intervention and outcome asked about (MeasureReport.type
    ``summary``: the score is about a population, never about one child)."""
    now = now or datetime.now(timezone.utc)
    groups: list[dict[str, Any]] = []
    for ev in results:
        coding = {"system": EPISODE_TYPE, "code": ev.intervention[0]}
        for o in ev.outcomes:
            groups.append(_group(coding, o.outcome, d.OUTCOMES[o.outcome], o.effect))
        if ev.check is not None:
            group = _group(coding, FIRST_MONTH, FIRST_MONTH_TEXT, ev.check.effect)
            group["extension"].append({"url": EXT_CHECK, "valueString": ev.check.statement})
            groups.append(group)
        if ev.did is not None:
            group = _group(coding, TRAJECTORY, TRAJECTORY_TEXT, ev.did.effect)
            group["extension"].append({"url": EXT_PRE_TREND, "valueString": ev.did.pre_trend_statement})
            group["extension"].append({"url": EXT_CHART, "valueAttachment": trajectory_attachment(
                ev.intervention[0], ev.did.offsets, ev.did.treated_means, ev.did.comparison_means)})
            groups.append(group)
    through = results[0].data_through if results else now.date()
    start = results[0].data_from if results else through
    report: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "extension": [{"url": EXT_TEXT, "valueString": f"{method} {caution}"}],
        "status": "complete",
        "type": "summary",
        "measure": MEASURE,
        "date": now.isoformat(timespec="seconds"),
        "period": {"start": start.isoformat(), "end": through.isoformat()},
        "improvementNotation": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/measure-improvement-notation", "code": "decrease"}]},
        "group": groups,
    }
    if mode == "estimate" and results:
        report["subject"] = {"reference": f"Patient/{results[0].children[0]}"} if len(results[0].children) == 1 \
            else {"display": f"a cohort of {len(results[0].children)} children"}
    validate_structure(report)
    return report


def _group(intervention: dict[str, str], code: str, text: str, e: Effect) -> dict[str, Any]:
    group: dict[str, Any] = {
        "extension": [{"url": EXT_INTERVENTION, "valueCoding": intervention}, _effect_extension(e),
                      *(_balance_extension(b.covariate, b.before, b.after) for b in e.balance)],
        "code": {"coding": [{"system": OUTCOME_SYSTEM, "code": code}], "text": text},
        "population": [
            {"code": {"coding": [{"system": MEASURE_POPULATION, "code": "initial-population"}]},
             "count": e.treated + e.comparison},
            {"code": {"text": "treated"}, "count": e.treated},
            {"code": {"text": "comparison"}, "count": e.comparison},
        ],
    }
    if e.reported:
        group["measureScore"] = {"value": round(e.estimate, 4)}
    return group


def _effect_extension(e: Effect) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": name, "valueDecimal": value} for name, value in e.interval_figures()]
    parts += [{"url": "effective-comparison", "valueDecimal": round(e.effective_comparison, 1)},
              {"url": "statement", "valueString": e.statement}]
    return {"url": EXT_EFFECT, "extension": parts}


def _balance_extension(covariate: str, before: float, after: float) -> dict[str, Any]:
    return {"url": EXT_BALANCE, "extension": [{"url": "covariate", "valueString": covariate},
                                              {"url": "smd-before", "valueDecimal": round(before, 3)},
                                              {"url": "smd-after", "valueDecimal": round(after, 3)}]}
