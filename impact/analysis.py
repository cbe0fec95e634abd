"""The two questions: what would this intervention do for these children (estimate), and what did it do
for the children who had it (evaluate). Both compare like with like through the propensity model of
:mod:`impact.estimators` on the study of :mod:`impact.design`."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from . import design as d
from .estimators import (DiD, Effect, SelectionCheck, att, att_weights, difference_in_differences,
                         first_month_check, propensity, withheld)

BINARY = ("cp-plan", "looked-after")
CALIPER = 0.2  # comparable: within 0.2 standard deviations of the logit propensity (Austin 2011)
SEED = 20261125  # the comparison sample is random but repeatable: the same data give the same answer


@dataclass
class OutcomeResult:
    outcome: str
    effect: Effect


@dataclass
class Evaluation:
    intervention: tuple[str, ...]
    outcomes: list[OutcomeResult]
    did: DiD | None
    check: SelectionCheck | None
    treated_episodes: list[str]
    data_through: date
    data_from: date
    comparable: int | None = None  # estimate mode: treated cases comparable to the children asked about
    children: list[str] = field(default_factory=list)


def evaluate(h: d.Histories, kinds: set[str], outcomes: list[str], *, horizon: int = d.DEFAULT_HORIZON,
             provider: str | None = None, start: date | None = None, end: date | None = None) -> Evaluation:
    """Everyone whose first episode of ``kinds`` started in the period, against weighted comparisons."""
    lo = None if start is None else d.month_index(h.origin, start)
    hi = None if end is None else d.month_index(h.origin, end)
    treated = d.treated_cases(h, kinds, provider=provider, start=lo, end=hi)
    study = d.build_study(h, treated, np.random.default_rng(SEED))
    weights = _weights(study)
    check = _check(h, study, weights)
    results = [OutcomeResult(name, withheld(_effect(h, study, weights, name, horizon), check)) for name in outcomes]
    values, observed = d.trajectory(h, study.rows, study.month)
    offsets = np.arange(*d.TRAJECTORY)
    did = difference_in_differences(values, observed, offsets, study.treated, weights, h.family[study.rows], study.X,
                                    d.COVARIATES)
    did.effect = withheld(did.effect, check)
    return Evaluation(tuple(sorted(kinds)), results, did, check, study.episode_ids, _through(h), h.origin)


def estimate(h: d.Histories, kinds: set[str], rows: list[int], outcomes: list[str], *,
             horizon: int = d.DEFAULT_HORIZON) -> Evaluation:
    """For the children at ``rows`` as they are now: the effect the intervention had on past children
    with a similar profile (propensity within the caliper of any of them), against weighted comparisons."""
    study, model, ps = _population_model(h, kinds)
    if model is None:
        weights = np.ones(len(study.treated))
        keep = np.ones(len(study.treated), dtype=bool)
        comparable = 0
    else:
        now = np.full(len(rows), h.months)  # as if offered at the end of the data: what is known now
        mine = np.clip(model(d.covariates(h, np.array(rows), now)), 1e-6, 1 - 1e-6)
        logit, logit_mine = np.log(ps / (1 - ps)), np.log(mine / (1 - mine))
        width = CALIPER * logit.std()
        near = np.abs(logit[:, None] - logit_mine[None, :]).min(axis=1) <= width
        keep = (study.treated == 0) | near
        comparable = int((near & (study.treated == 1)).sum())
        weights = att_weights(study.treated, ps)
    sub = d.Study(study.rows[keep], study.month[keep], study.treated[keep], study.X[keep], [])
    check = _check(h, sub, weights[keep])
    results = [OutcomeResult(name, withheld(_effect(h, sub, weights[keep], name, horizon), check)) for name in outcomes]
    return Evaluation(tuple(sorted(kinds)), results, None, check, [], _through(h), h.origin, comparable,
                      [h.units[r] for r in rows])


def _population_model(h: d.Histories, kinds: set[str]) -> tuple[d.Study, Callable[[np.ndarray], np.ndarray] | None,
                                                                  np.ndarray]:
    """The study of everyone who ever had ``kinds`` and its propensity model, built once per
    Histories (which is rebuilt when the data change) so that each child's estimate only scores
    the child and re-weights: (study, model or None without treated cases, clipped propensities)."""
    key = ("estimate", tuple(sorted(kinds)))
    if key not in h.memo:
        treated = d.treated_cases(h, kinds)
        study = d.build_study(h, treated, np.random.default_rng(SEED))
        if not treated:
            h.memo[key] = (study, None, np.ones(len(study.treated)))
        else:
            model = propensity(study.treated, study.X)
            h.memo[key] = (study, model, np.clip(model(study.X), 1e-6, 1 - 1e-6))
    return h.memo[key]


def _weights(study: d.Study) -> np.ndarray:
    if study.treated.sum() == 0 or (study.treated == 0).sum() == 0:
        return np.ones(len(study.treated))
    return att_weights(study.treated, propensity(study.treated, study.X)(study.X))


def _check(h: d.Histories, study: d.Study, weights: np.ndarray) -> SelectionCheck:
    """The first-month check on the study's cases (estimators.first_month_check)."""
    y = d.first_month_concerns(h, study.rows, study.month)
    return first_month_check(y, study.treated, study.X, weights, h.family[study.rows], d.COVARIATES)


def _effect(h: d.Histories, study: d.Study, weights: np.ndarray, name: str, horizon: int) -> Effect:
    y, eligible = d.outcome(h, name, study.rows, study.month, horizon)
    unit = {"cp-plan": " (probability)", "looked-after": " (probability)", "referrals": " referrals a child",
            "concern-rate-6m": " concern events a month", "risk-score-6m": " risk score points"}[name]
    return att(y[eligible], study.treated[eligible], study.X[eligible], weights[eligible],
               h.family[study.rows[eligible]],
               d.COVARIATES, unit=unit, binary=name in BINARY)


def _through(h: d.Histories) -> date:
    month = h.origin.month - 1 + h.months - 1
    return date(h.origin.year + month // 12, month % 12 + 1, 1)
