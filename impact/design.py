"""From records to a study: monthly histories per child, index months, covariates and outcomes.

Time runs in calendar months from the first month with data. For an intervention type *T* the study
emulates the decision made each month ("offer *T* now, or not"), so that both groups start the clock
at the same point (no immortal time) and nothing after that point decides who is compared:

- a **treated** case is a child's first episode of *T*, indexed at the month it started (with at least
  ``MIN_HISTORY`` months of data before it, so that its history can be described); the decision was
  made in the month before, the *offer month*;
- a **comparison** case is a child-month when the child could have been offered help and did not
  start any: living at home (not looked after), no intervention open in the ``GAP_MONTHS`` before,
  none starting that month. What happens *later* does not matter: a child offered something six months
  on is still a fair comparison for today (excluding such months would pick comparisons whose risk
  did not rise, and make any intervention look harmful). Sampled at random when there are many;
- **covariates** describe the child at the end of the offer month from what was known by then: age,
  concern events in that month, the last 3 and the 4–12 months before, by agency, A&E attendances,
  the last term's school attendance (with whether there is one: under-fives and leavers have none),
  any incident in the last 3 months, open social-care episodes, a CIN episode closed in the last 3
  months and one closed that month with a referral to early help (a step-down, RC9), referrals in the
  last year, a previous child protection plan or care episode, earlier interventions;
- **outcomes** are measured over the same time for every case, ``horizon`` months from the index
  month (12 by default; a case with less data after it is left out): a first child protection plan,
  first becoming looked after, new referrals to children's social care, the monthly rate of concern
  events in the six months after, and the child's risk score (triage/) in force at the end of the
  sixth month after the start — only for children the server was already scoring by the offer month,
  so that the score is what triage said at the time, not a later rescoring of old records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from .data import AGENCY_KINDS, CIN, CIN_PLAN, CP_PLAN, LOOKED_AFTER, S47, SOCIAL_CARE, STEP_DOWN, Records

MIN_HISTORY = 3  # months of data a treated case needs before its index month
GAP_MONTHS = 3  # a comparison month has no intervention open in the months before (none is offered then)
TRAJECTORY = (-6, 12)  # months before/after the index the risk trajectory covers
AFTER_MONTHS = 6  # the concern-rate outcome's window
DEFAULT_HORIZON = 12  # months over which a plan, care or referrals after the index month count
ADULT_AGE = 18
STEP_DOWN_MONTHS = 3  # a CIN episode closed this recently is a covariate (step-down to early help)

COVARIATES = ("age", "concerns-1m", "concerns-3m", "concerns-4-12m", *(f"concerns-12m-{k}" for k in AGENCY_KINDS),
              "ed-3m", "ed-12m", "any-incident-3m", "school-absence", "no-school-record", "open-cin", "cin-closed-3m",
              "stepped-down", "referrals-12m",
              "open-cp-plan", "looked-after", "previous-cp-plan", "previous-interventions")

OUTCOMES = {
    "cp-plan": "a first child protection plan within the horizon after the start",
    "looked-after": "first becoming looked after within the horizon after the start",
    "referrals": "new referrals to children's social care within the horizon after the start",
    "concern-rate-6m": "concern events a month, across agencies, in the six months after the index month",
    "risk-score-6m": "the child's risk score (triage) in force at the end of the sixth month after the start",
}
SCORE_MONTHS = 6


def month_index(origin: date, day: date) -> int:
    return (day.year - origin.year) * 12 + day.month - origin.month


@dataclass
class Histories:
    """Monthly arrays, one row per child unit."""

    units: list[str]
    row_of: dict[str, int]
    origin: date
    months: int
    birth_month: np.ndarray  # (U,) month index of birth (may be negative)
    concerns: np.ndarray  # (U, M, A) concern events per agency kind
    ed: np.ndarray  # (U, M) A&E attendances
    absence: np.ndarray  # (U, M) share of sessions missed in the last term known by the month's end; NaN: none
    open_cin: np.ndarray  # (U, M) bool: a CIN episode, CIN plan or s47 enquiry open at the end of the month
    closed_cin: np.ndarray  # (U, M) bool: a CIN episode closed in this month or the 2 before
    stepped_down: np.ndarray  # (U, M) bool: a CIN episode closed this month with a referral to early help
    open_cp: np.ndarray  # (U, M) bool, at the end of the month
    looked_after: np.ndarray  # (U, M) bool, at the end of the month
    score: np.ndarray  # (U, M) risk score in force at the end of the month (risk_score_history); NaN: not scored
    family: np.ndarray  # (U,) a family number: siblings share it (the clusters of the standard errors)
    cp_start: np.ndarray  # (U,) first CP plan start month, or a large number
    lac_start: np.ndarray  # (U,) first looked-after start month
    referrals: list[list[int]]  # per unit, CIN episode start months
    # per unit: (start month, type, provider, id, end month or None while open)
    interventions: list[list[tuple[int, str, str | None, str, int | None]]]
    # what analyses derived from these arrays and may reuse (a fitted propensity model per type)
    memo: dict[Any, Any] = field(default_factory=dict)

    def concern_total(self) -> np.ndarray:
        return self.concerns.sum(axis=2)


NEVER = 10_000


def build_histories(records: Records, today: date | None = None) -> Histories:
    first, last = records.first_date, records.last_date
    if first is None or last is None:
        raise EmptyData("There are no concern events or episodes to learn from")
    origin = date(first.year, first.month, 1)
    months = month_index(origin, last) + 1
    end = last
    units = sorted(u for u, born in records.birth.items()
                   if _age_years(born, origin) < ADULT_AGE and born <= end)
    row_of = {u: i for i, u in enumerate(units)}
    n = len(units)
    birth = np.array([month_index(origin, records.birth[u]) for u in units], dtype=np.int32)
    concerns = np.zeros((n, months, len(AGENCY_KINDS)), dtype=np.float32)
    for unit, day, kind in records.events:
        row = row_of.get(unit)
        if row is not None:
            concerns[row, min(month_index(origin, day), months - 1), kind] += 1
    ed = np.zeros((n, months), dtype=np.float32)
    for unit, day in records.ed_visits:
        row = row_of.get(unit)
        if row is not None and day >= origin:
            ed[row, min(month_index(origin, day), months - 1)] += 1
    absence = _latest_absence(records, row_of, origin, n, months)
    score = _scores(records, row_of, origin, n, months)
    open_cin = np.zeros((n, months), dtype=bool)
    closed_cin = np.zeros((n, months), dtype=bool)
    stepped_down = np.zeros((n, months), dtype=bool)
    open_cp = np.zeros((n, months), dtype=bool)
    lac = np.zeros((n, months), dtype=bool)
    cp_start = np.full(n, NEVER, dtype=np.int32)
    lac_start = np.full(n, NEVER, dtype=np.int32)
    referrals: list[list[int]] = [[] for _ in range(n)]
    interventions: list[list[tuple[int, str, str | None, str, int | None]]] = [[] for _ in range(n)]
    for e in records.episodes:
        row = row_of.get(e.unit)
        if row is None:
            continue
        start = month_index(origin, e.start)
        if e.kind in SOCIAL_CARE:
            # open at the end of a month: the month an episode closes, it is no longer open
            ended = None if e.end is None else month_index(origin, e.end)
            stop = months if ended is None else min(months, max(ended, start + 1))
            target = {CIN: open_cin, CIN_PLAN: open_cin, S47: open_cin, CP_PLAN: open_cp, LOOKED_AFTER: lac}[e.kind]
            target[row, max(start, 0):stop] = True
            if e.kind == CP_PLAN:
                cp_start[row] = min(cp_start[row], start)
            elif e.kind == LOOKED_AFTER:
                lac_start[row] = min(lac_start[row], start)
            elif e.kind == CIN:
                referrals[row].append(start)
                if ended is not None and 0 <= ended < months:  # a closure: often stepped down to early help
                    closed_cin[row, ended:min(ended + STEP_DOWN_MONTHS, months)] = True
                    stepped_down[row, ended] |= e.closure_reason == STEP_DOWN
        else:
            ended = None if e.end is None else month_index(origin, e.end)
            interventions[row].append((start, e.kind, e.organization, e.resource_id, ended))
    for lst in interventions:
        lst.sort(key=lambda e: (e[0], e[1], e[3]))  # start, type, id: the provider or end may be None
    return Histories(units, row_of, origin, months, birth, concerns, ed, absence, open_cin, closed_cin, stepped_down,
                     open_cp, lac, score, _families(records, row_of), cp_start, lac_start, referrals, interventions)


def _latest_absence(records: Records, row_of: dict[str, int], origin: date, n: int, months: int) -> np.ndarray:
    """The share of sessions missed in the latest term whose figure was known by the end of each month."""
    known = np.full((n, months), np.nan, dtype=np.float32)
    dated: list[tuple[int, int, float]] = []
    for unit, day, percent in sorted(records.attendance, key=lambda a: a[1]):
        row = row_of.get(unit)
        if row is not None and day >= origin:
            dated.append((row, min(month_index(origin, day), months - 1), 1.0 - percent / 100.0))
    for row, month, missed in dated:  # in date order: a later term overwrites from its month on
        known[row, month:] = missed
    return known


def _families(records: Records, row_of: dict[str, int]) -> np.ndarray:
    """Union-find over the sibling pairs: each child's family number (its own row when it has no
    known sibling)."""
    parent = list(range(len(row_of)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in records.siblings:
        ra, rb = row_of.get(a), row_of.get(b)
        if ra is not None and rb is not None:
            parent[root(ra)] = root(rb)
    return np.array([root(i) for i in range(len(parent))], dtype=np.int64)


def _scores(records: Records, row_of: dict[str, int], origin: date, n: int, months: int) -> np.ndarray:
    """The score in force at the end of each month: the latest change scored by then. Scores stamped
    outside the months the data cover are left out (a rescoring today of last year's records says
    nothing about what the score was last year)."""
    score = np.full((n, months), np.nan, dtype=np.float32)
    for unit, day, value in records.scores:  # in scoring order: a later change overwrites from its month on
        row = row_of.get(unit)
        if row is not None and origin <= day:
            month = month_index(origin, day)
            if month < months:
                score[row, month:] = value
    return score


class EmptyData(ValueError):
    pass


def _age_years(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


# -- study rows --------------------------------------------------------------------------------------------

@dataclass
class Study:
    """Index cases for one intervention type: treated first, then comparison child-months."""

    rows: np.ndarray  # (N,) unit row
    month: np.ndarray  # (N,) index month
    treated: np.ndarray  # (N,) 0/1
    X: np.ndarray  # (N, len(COVARIATES))
    episode_ids: list[str]  # the treated cases' EpisodeOfCare ids


def treated_cases(h: Histories, kinds: set[str], *, provider: str | None = None, start: int | None = None,
                  end: int | None = None) -> list[tuple[int, int, str]]:
    """(unit row, index month, episode id) of each child's first episode of any of ``kinds``."""
    out = []
    for row, episodes in enumerate(h.interventions):
        for month, kind, org, episode_id, _end in episodes:
            if kind not in kinds:
                continue
            if provider is not None and org != provider:
                continue
            if (start is not None and month < start) or (end is not None and month > end):
                continue
            if MIN_HISTORY <= month < h.months:
                out.append((row, month, episode_id))
            break  # the first episode only: a second one is not a fresh start
    return out


def comparison_cases(h: Histories, rng: np.random.Generator, size: int, months: range) -> list[tuple[int, int]]:
    """Child-months (row, index month) when the child could have started an intervention and did not:
    born, at home at the end of the offer month, no intervention open in the ``GAP_MONTHS`` before the
    index month, none starting in it. All of them when there are at most ``size``, else a random
    sample of ``size``. Nothing after the index month is looked at (no selection on the future)."""
    eligible = np.zeros((len(h.units), h.months), dtype=bool)
    eligible[:, months.start:months.stop] = True
    eligible &= np.arange(h.months)[None, :] > h.birth_month[:, None]
    eligible[:, 1:] &= ~h.looked_after[:, :-1]
    for row, episodes in enumerate(h.interventions):
        for start, *_rest, end in episodes:
            # open from its start to its end (to the end of the data while open), then the gap
            last = h.months if end is None else end
            eligible[row, max(start, 0):max(min(last + GAP_MONTHS + 1, h.months), 0)] = False
    rows, cols = np.nonzero(eligible)
    if len(rows) > size:
        picked = np.sort(rng.choice(len(rows), size=size, replace=False))
        rows, cols = rows[picked], cols[picked]
    return list(zip(rows.tolist(), cols.tolist()))


def covariates(h: Histories, rows: np.ndarray, months: np.ndarray) -> np.ndarray:
    """The COVARIATES of each case, from what was known by the end of the offer month (the month
    before the index month): never anything from the index month on."""
    total = h.concern_total()
    zero = np.zeros((total.shape[0], 1), dtype=np.float32)
    csum = np.concatenate([zero, np.cumsum(total, axis=1)], axis=1)
    ed_sum = np.concatenate([zero, np.cumsum(h.ed, axis=1)], axis=1)
    by_kind = np.concatenate([np.zeros((total.shape[0], 1, h.concerns.shape[2]), dtype=np.float32),
                              np.cumsum(h.concerns, axis=1)], axis=1)

    def window(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # sum over [lo, hi)
        lo, hi = np.clip(lo, 0, h.months), np.clip(hi, 0, h.months)
        return cum[rows, hi] - cum[rows, lo]

    age = (months - h.birth_month[rows]) / 12.0
    last1 = window(csum, months - 1, months)
    last3 = window(csum, months - 3, months)
    before = window(csum, months - 12, months - 3)
    kinds = [window(by_kind[:, :, k], months - 12, months) for k in range(h.concerns.shape[2])]
    ed3, ed12 = window(ed_sum, months - 3, months), window(ed_sum, months - 12, months)
    offer = np.clip(months - 1, 0, h.months - 1)  # the offer month: its end is what the decision saw
    absence = h.absence[rows, offer]
    unknown = np.isnan(absence)
    referred = np.array([sum(1 for s in h.referrals[r] if t - 12 <= s < t) for r, t in zip(rows, months)])
    previous = np.array([sum(1 for s, *_r in h.interventions[r] if s < mo) for r, mo in zip(rows, months)])
    cols = [age, np.log1p(last1), np.log1p(last3), np.log1p(before), *(np.log1p(k) for k in kinds),
            np.log1p(ed3), np.log1p(ed12), (last3 + ed3) > 0, np.where(unknown, 0.0, absence), unknown,
            h.open_cin[rows, offer], h.closed_cin[rows, offer], h.stepped_down[rows, offer], np.log1p(referred),
            h.open_cp[rows, offer], h.looked_after[rows, offer], h.cp_start[rows] < months, np.log1p(previous)]
    return np.column_stack(cols).astype(np.float64)


def build_study(h: Histories, treated: list[tuple[int, int, str]], rng: np.random.Generator,
                max_controls: int = 40_000) -> Study:
    months = range(MIN_HISTORY, h.months)
    control = comparison_cases(h, rng, max_controls, months)
    rows = np.array([r for r, _m, _e in treated] + [r for r, _m in control], dtype=np.int64)
    index = np.array([m for _r, m, _e in treated] + [m for _r, m in control], dtype=np.int64)
    flag = np.concatenate([np.ones(len(treated)), np.zeros(len(control))])
    return Study(rows, index, flag, covariates(h, rows, index), [e for _r, _m, e in treated])


def outcome(h: Histories, name: str, rows: np.ndarray, months: np.ndarray,
            horizon: int = DEFAULT_HORIZON) -> tuple[np.ndarray, np.ndarray]:
    """(values, eligible) of an outcome for index cases, over ``horizon`` months from the index month.
    ``eligible`` is False where the outcome cannot be measured: fewer than ``horizon`` months of data
    after the index month (every case is followed for the same time), or a CP plan or care episode
    before it (the outcome is a *first* one)."""
    stop = months + horizon
    followed = stop <= h.months
    if name == "cp-plan":
        first = h.cp_start[rows]
        return ((first >= months) & (first < stop)).astype(float), followed & (first >= months)
    if name == "looked-after":
        first = h.lac_start[rows]
        return ((first >= months) & (first < stop)).astype(float), followed & (first >= months)
    if name == "referrals":
        counts = np.zeros((len(h.units), h.months + 1), dtype=np.int32)
        for row, starts in enumerate(h.referrals):
            for start in starts:
                if 0 <= start < h.months:
                    counts[row, start + 1] += 1
        cum = np.cumsum(counts, axis=1)  # cum[:, m] = referrals started before month m
        values = cum[rows, np.clip(stop, 0, h.months)] - cum[rows, np.clip(months + 1, 0, h.months)]
        return values.astype(float), followed
    if name == "concern-rate-6m":
        total = h.concern_total()
        cum = np.concatenate([np.zeros((len(h.units), 1)), np.cumsum(total, axis=1)], axis=1)
        eligible = months + AFTER_MONTHS <= h.months
        end = np.clip(months + AFTER_MONTHS, 0, h.months)
        values = (cum[rows, end] - cum[rows, np.clip(months, 0, h.months)]) / AFTER_MONTHS
        return np.where(eligible, values, 0.0), eligible
    if name == "risk-score-6m":
        at = months + SCORE_MONTHS
        offer = np.clip(months - 1, 0, h.months - 1)
        eligible = (at < h.months) & ~np.isnan(h.score[rows, offer])  # scored by the offer month
        values = h.score[rows, np.clip(at, 0, h.months - 1)].astype(float)
        return np.where(eligible, values, 0.0), eligible
    raise KeyError(name)


def first_month_concerns(h: Histories, rows: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Concern events in the index month itself (the first month of the intervention): the
    first-month check's negative-control outcome."""
    return h.concern_total()[rows, np.clip(months, 0, h.months - 1)].astype(float)


def trajectory(h: Histories, rows: np.ndarray, months: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concern events a month at each month relative to the index (TRAJECTORY): (values, observed)."""
    offsets = np.arange(TRAJECTORY[0], TRAJECTORY[1])
    at = months[:, None] + offsets[None, :]
    observed = (at >= 0) & (at < h.months) & (at >= h.birth_month[rows][:, None])
    total = h.concern_total()
    values = np.where(observed, total[rows[:, None], np.clip(at, 0, h.months - 1)], 0.0)
    return values, observed
