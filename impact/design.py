"""From records to a study: monthly histories per child, index months, covariates and outcomes.

Time runs in calendar months from the first month with data. For an intervention type *T*:

- a **treated** case is a child's first episode of *T*, indexed at the month it started (with at least
  ``MIN_HISTORY`` months of data before it, so that its history can be described);
- a **comparison** case is a child-month with no intervention of any type started in the six months
  before or after it ("not treated around then"), sampled at random when there are many;
- **covariates** describe the child at the index month from what was known before it: age, concern
  events in the last 3 and the 4–12 months before, by agency, open social-care episodes, a CIN episode
  closed in the last 3 months (a step-down, after which early help is often offered), a previous
  child protection plan or care episode, earlier interventions;
- **outcomes** are measured over the same time for every case, ``horizon`` months from the index
  month (12 by default; a case with less data after it is left out): a first child protection plan,
  first becoming looked after, new referrals to children's social care, and the monthly rate of
  concern events in the six months after.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from .data import AGENCY_KINDS, CIN, CIN_PLAN, CP_PLAN, LOOKED_AFTER, S47, SOCIAL_CARE, Records

MIN_HISTORY = 3  # months of data a treated case needs before its index month
CLEAN_WINDOW = 6  # a comparison month has no intervention start this many months either side
TRAJECTORY = (-6, 12)  # months before/after the index the risk trajectory covers
AFTER_MONTHS = 6  # the concern-rate outcome's window
DEFAULT_HORIZON = 12  # months over which a plan, care or referrals after the index month count
ADULT_AGE = 18
STEP_DOWN_MONTHS = 3  # a CIN episode closed this recently is a covariate (step-down to early help)

COVARIATES = ("age", "concerns-3m", "concerns-4-12m", *(f"concerns-12m-{k}" for k in AGENCY_KINDS),
              "open-cin", "cin-closed-3m", "open-cp-plan", "looked-after", "previous-cp-plan", "previous-interventions")

OUTCOMES = {
    "cp-plan": "a first child protection plan within the horizon after the start",
    "looked-after": "first becoming looked after within the horizon after the start",
    "referrals": "new referrals to children's social care within the horizon after the start",
    "concern-rate-6m": "concern events a month, across agencies, in the six months after the index month",
}


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
    open_cin: np.ndarray  # (U, M) bool: a CIN episode, CIN plan or s47 enquiry open
    closed_cin: np.ndarray  # (U, M) bool: a CIN episode closed in the 3 months before (a step-down)
    open_cp: np.ndarray  # (U, M) bool
    looked_after: np.ndarray  # (U, M) bool
    cp_start: np.ndarray  # (U,) first CP plan start month, or a large number
    lac_start: np.ndarray  # (U,) first looked-after start month
    referrals: list[list[int]]  # per unit, CIN episode start months
    interventions: list[list[tuple[int, str, str | None, str]]]  # per unit: (start month, type, provider, id)
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
    open_cin = np.zeros((n, months), dtype=bool)
    closed_cin = np.zeros((n, months), dtype=bool)
    open_cp = np.zeros((n, months), dtype=bool)
    lac = np.zeros((n, months), dtype=bool)
    cp_start = np.full(n, NEVER, dtype=np.int32)
    lac_start = np.full(n, NEVER, dtype=np.int32)
    referrals: list[list[int]] = [[] for _ in range(n)]
    interventions: list[list[tuple[int, str, str | None, str]]] = [[] for _ in range(n)]
    for e in records.episodes:
        row = row_of.get(e.unit)
        if row is None:
            continue
        start = month_index(origin, e.start)
        stop = months if e.end is None else min(months, month_index(origin, e.end) + 1)
        if e.kind in SOCIAL_CARE:
            target = {CIN: open_cin, CIN_PLAN: open_cin, S47: open_cin, CP_PLAN: open_cp, LOOKED_AFTER: lac}[e.kind]
            target[row, max(start, 0):stop] = True
            if e.kind == CP_PLAN:
                cp_start[row] = min(cp_start[row], start)
            elif e.kind == LOOKED_AFTER:
                lac_start[row] = min(lac_start[row], start)
            elif e.kind == CIN:
                referrals[row].append(start)
                if e.end is not None:  # the months after a closure: often stepped down to early help
                    closed_cin[row, min(stop, months):min(stop + STEP_DOWN_MONTHS, months)] = True
        else:
            interventions[row].append((start, e.kind, e.organization, e.resource_id))
    for lst in interventions:
        lst.sort()
    return Histories(units, row_of, origin, months, birth, concerns, open_cin, closed_cin, open_cp, lac, cp_start,
                     lac_start, referrals, interventions)


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
        for month, kind, org, episode_id in episodes:
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
    """Child-months with no intervention started within ``CLEAN_WINDOW`` months: all of them when there
    are at most ``size``, else a random sample of ``size``."""
    clean = np.zeros((len(h.units), h.months), dtype=bool)
    clean[:, months.start:months.stop] = True
    clean &= np.arange(h.months)[None, :] >= h.birth_month[:, None]
    for row, episodes in enumerate(h.interventions):
        for start, *_rest in episodes:
            clean[row, max(start - CLEAN_WINDOW, 0):max(start + CLEAN_WINDOW + 1, 0)] = False
    rows, cols = np.nonzero(clean)
    if len(rows) > size:
        picked = np.sort(rng.choice(len(rows), size=size, replace=False))
        rows, cols = rows[picked], cols[picked]
    return list(zip(rows.tolist(), cols.tolist()))


def covariates(h: Histories, rows: np.ndarray, months: np.ndarray) -> np.ndarray:
    total = h.concern_total()
    csum = np.concatenate([np.zeros((total.shape[0], 1), dtype=np.float32), np.cumsum(total, axis=1)], axis=1)
    by_kind = np.concatenate([np.zeros((total.shape[0], 1, h.concerns.shape[2]), dtype=np.float32),
                              np.cumsum(h.concerns, axis=1)], axis=1)

    def window(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # sum over [lo, hi)
        lo, hi = np.clip(lo, 0, h.months), np.clip(hi, 0, h.months)
        return cum[rows, hi] - cum[rows, lo]

    age = (months - h.birth_month[rows]) / 12.0
    last3 = window(csum, months - 3, months)
    before = window(csum, months - 12, months - 3)
    kinds = [window(by_kind[:, :, k], months - 12, months) for k in range(h.concerns.shape[2])]
    m = np.clip(months, 0, h.months - 1)
    previous = np.array([sum(1 for s, *_r in h.interventions[r] if s < mo) for r, mo in zip(rows, months)])
    cols = [age, np.log1p(last3), np.log1p(before), *(np.log1p(k) for k in kinds),
            h.open_cin[rows, m], h.closed_cin[rows, m], h.open_cp[rows, m], h.looked_after[rows, m],
            h.cp_start[rows] < months, np.log1p(previous)]
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
    raise KeyError(name)


def trajectory(h: Histories, rows: np.ndarray, months: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concern events a month at each month relative to the index (TRAJECTORY): (values, observed)."""
    offsets = np.arange(TRAJECTORY[0], TRAJECTORY[1])
    at = months[:, None] + offsets[None, :]
    observed = (at >= 0) & (at < h.months) & (at >= h.birth_month[rows][:, None])
    total = h.concern_total()
    values = np.where(observed, total[rows[:, None], np.clip(at, 0, h.months - 1)], 0.0)
    return values, observed
