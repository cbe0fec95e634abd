"""Risk over time: a family's latent risk month by month, and what the agencies see because of it.

Each family has a latent risk on the log-odds scale: a base level (from its archetype and risk
factors), an escalation or a crisis for some, month-to-month noise, and the falls that interventions
cause. Everything the agencies record is drawn from that risk with graded thresholds, so a family
whose risk rises shows school absence first, then police domestic-abuse notifications and A&E
attendances, then a referral to children's social care, a child protection plan, and care.

:func:`simulate` is pure given the pre-drawn random numbers (:class:`Draws`): every decision reads a
fixed slot, so the same family can be re-run with the intervention effects switched off (the same
interventions at the same times, doing nothing) to get its true counterfactual outcomes.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from . import interventions as iv
from .calendar import Calendar, Term, year_group
from .households import Family, Person
from .interventions import CATALOGUE, Intervention, sigmoid

ARCHETYPES = (("stable", 0.80), ("escalating", 0.10), ("chronic", 0.05), ("crisis", 0.05))
BASE = {"stable": (-4.2, 0.5), "escalating": (-3.4, 0.5), "chronic": (-1.6, 0.5), "crisis": (-3.6, 0.5)}
FACTOR_PROBABILITY = {
    "stable": {"domestic-abuse": 0.03, "parental-alcohol": 0.03, "parental-drugs": 0.02,
               "parental-mental-health": 0.10, "parental-learning-disability": 0.01, "low-income": 0.22},
    "escalating": {"domestic-abuse": 0.45, "parental-alcohol": 0.20, "parental-drugs": 0.18,
                   "parental-mental-health": 0.35, "parental-learning-disability": 0.04, "low-income": 0.45},
    "chronic": {"domestic-abuse": 0.35, "parental-alcohol": 0.30, "parental-drugs": 0.30,
                "parental-mental-health": 0.45, "parental-learning-disability": 0.10, "low-income": 0.60},
    "crisis": {"domestic-abuse": 0.25, "parental-alcohol": 0.10, "parental-drugs": 0.08,
               "parental-mental-health": 0.30, "parental-learning-disability": 0.02, "low-income": 0.35},
}
FACTOR_WEIGHT = {"domestic-abuse": 0.35, "parental-alcohol": 0.3, "parental-drugs": 0.35,
                 "parental-mental-health": 0.25, "parental-learning-disability": 0.2, "low-income": 0.15}
AR = 0.75  # month-to-month persistence of the noise
NOISE_SD = 0.25
FAMILY_SLOTS = 12
CHILD_SLOTS = 9
TERM_SLOTS = 3
MAX_INTERVENTIONS = 12
REFERRAL_SOURCES_UNPROMPTED = ("1A", "1A", "3A", "3B", "3F", "8", "9", "2A", "5D", "4")
# P(referral) that each kind of incident causes in the month it happens, and its referral source
TRIGGERS = {"da": (0.22, "6"), "ed-safeguarding": (0.5, "3E"), "missing": (0.12, "6"), "arrest": (0.10, "6"),
            "cse": (0.4, "6"), "cce": (0.4, "6"), "severe-absence": (0.12, "2A")}


@dataclass
class RiskProfile:
    archetype: str
    factors: frozenset[str]
    base: float
    onset: int | None = None  # escalating: first month of the rise
    drift: float = 0.0
    duration: int = 0
    crisis_month: int | None = None
    crisis_size: float = 0.0
    crisis_tau: float = 1.0
    perpetrator: str | None = None  # person id of the adult who is violent at home, if any
    da_from: int = 0  # month the domestic abuse can start (a new partner's arrival)

    def level(self, month: int) -> float:
        value = self.base
        if self.onset is not None and month > self.onset:
            value += self.drift * min(month - self.onset, self.duration)
        if self.crisis_month is not None and month >= self.crisis_month:
            value += self.crisis_size * math.exp(-(month - self.crisis_month) / self.crisis_tau)
        return value


def assign_profile(family: Family, months: int, rng: random.Random, add_partner: Callable[..., Person]) -> RiskProfile:
    """Archetype, risk factors and the shape of the family's risk; may add a new partner who moves
    in when an escalation starts (``add_partner(family, month, rng, resident=...)``)."""
    u, acc, archetype = rng.random(), 0.0, "stable"
    for name, p in ARCHETYPES:
        acc += p
        if u < acc:
            archetype = name
            break
    factors = frozenset(f for f, p in FACTOR_PROBABILITY[archetype].items() if rng.random() < p)
    mean, sd = BASE[archetype]
    profile = RiskProfile(archetype, factors, rng.gauss(mean, sd) + sum(FACTOR_WEIGHT[f] for f in sorted(factors)))
    if archetype == "escalating":
        profile.onset = rng.randrange(0, max(1, int(months * 0.6)))
        profile.drift = rng.uniform(0.12, 0.25)
        profile.duration = rng.randrange(8, 21)
        if rng.random() < 0.35 and any(a.role in ("mother", "father") and a.resident for a in family.adults):
            add_partner(family, profile.onset, rng)
    elif archetype == "crisis":
        profile.crisis_month = rng.randrange(0, max(1, months - 3))
        profile.crisis_size = rng.uniform(1.5, 3.0)
        profile.crisis_tau = rng.uniform(3.0, 8.0)
    if "domestic-abuse" in factors:
        males = [a for a in family.adults if a.sex == "M" and a.role in ("father", "stepfather", "mothers-partner")]
        partner = next((a for a in males if a.role == "mothers-partner"), None)
        resident = next((a for a in males if a.resident), None)
        chosen = partner or resident or (males[0] if males else None)
        if chosen is None and any(a.role == "mother" for a in family.adults):
            chosen = add_partner(family, 0, rng, resident=False)  # a boyfriend who does not live there
        if chosen is None:
            profile.factors = factors - {"domestic-abuse"}
        else:
            profile.perpetrator = chosen.pid
            profile.da_from = chosen.joined if chosen.role == "mothers-partner" else 0
    return profile


class Draws:
    """Every random number the simulation may use, drawn up front in a fixed order."""

    def __init__(self, rng: random.Random, family: Family, months: int, n_terms: int) -> None:
        rnd, gauss = rng.random, rng.gauss
        self.noise = [gauss(0.0, NOISE_SD) for _ in range(months)]
        self.family = [[rnd() for _ in range(FAMILY_SLOTS)] for _ in range(months)]
        self.child = {c.pid: [[rnd() for _ in range(CHILD_SLOTS)] for _ in range(months)] for c in family.children}
        self.term = {c.pid: [(gauss(0.0, 1.0), rnd(), rnd()) for _ in range(n_terms)] for c in family.children}
        self.effect = [gauss(0.0, 1.0) for _ in range(MAX_INTERVENTIONS)]


@dataclass
class Incident:
    """Something an agency records: a police notification, an A&E attendance, a missing episode."""

    kind: str  # da | marac | ed | missing | arrest | cse | cce
    month: int
    pid: str | None = None  # the child (None for a household incident such as domestic abuse)
    safeguarding: bool = False  # ed: a safeguarding concern recorded
    injury: bool = False  # ed
    looked_after: bool = False  # missing: from care
    children: tuple[str, ...] = ()  # da/marac: the children in the household
    # filled in when the family's records are dated
    date: object = None
    agency: str = ""  # police force code or NHS trust ODS code
    refs: dict = field(default_factory=dict)  # child person id -> police reference / attendance id


@dataclass
class TermRecord:
    pid: str
    term: Term
    la_code: str
    year_group: int
    attendance: float
    unauthorised_share: float
    suspensions: int = 0
    permanent_exclusion: bool = False
    cme: bool = False
    ehe: bool = False


@dataclass
class LacPeriod:
    pid: str
    la_code: str
    start: int
    end: int | None = None
    reason_end: str = ""  # SSDA903 REC
    placement_changes: list[int] = field(default_factory=list)
    emergency: bool = False
    dates: dict = field(default_factory=dict)  # filled in by dating: start, changes, end


@dataclass
class Episode:
    """A children's social care (CIN) episode for the children of a household, in one LA."""

    la_code: str
    referral_month: int
    source: str
    children: tuple[str, ...]
    trigger: Incident | None = None
    nfa: bool = False
    assessment_end: int | None = None
    step_down: bool = False  # closed after assessment, referred to early help (RC9)
    cin_plans: list[list] = field(default_factory=list)  # [start, end|None]
    s47: list[tuple[int, bool]] = field(default_factory=list)  # (month, initial conference held)
    cp_plans: list[list] = field(default_factory=list)  # [start, end|None, previous plans]
    closure_month: int | None = None
    closure_reason: str = ""
    dates: dict = field(default_factory=dict)  # filled in by dating

    @property
    def open(self) -> bool:
        return self.closure_month is None


@dataclass
class Timeline:
    risk: list[float]  # the family's latent risk per month
    incidents: list[Incident]
    terms: list[TermRecord]
    episodes: list[Episode]
    lac: list[LacPeriod]
    interventions: list[Intervention]


def _logit(u: float) -> float:
    u = min(max(u, 1e-9), 1 - 1e-9)
    return math.log(u / (1 - u))


ED_RATE = ((0, 0.06), (1, 0.035), (5, 0.02), (12, 0.025), (16, 0.035))


def _ed_rate(age: int) -> float:
    rate = ED_RATE[0][1]
    for a, r in ED_RATE:
        if age >= a:
            rate = r
    return rate


def _in_school(child: Person, term: Term) -> int | None:
    yg = year_group(child.dob, term.academic_year)
    if 0 <= yg <= 11 or (child.sixth_form and yg in (12, 13)):
        return yg
    return None


def simulate(family: Family, profile: RiskProfile, draws: Draws, cal: Calendar,
             schedule: list[Intervention] | None = None, *, effects: bool = True,
             without: frozenset[int] = frozenset()) -> Timeline:
    """Run the family through the period. With ``schedule`` given, the interventions are not
    decided but taken as they are (counterfactual runs); with ``effects=False`` they do nothing, and
    the interventions numbered in ``without`` do nothing (one episode's own counterfactual)."""
    months = cal.months
    fam_u, noise = draws.family, draws.noise
    children = family.children
    offsets = {c.pid: (0.3 if c.disability != "NONE" else 0.0) for c in children}
    terms_by_end = {}
    for t_index, term in enumerate(cal.terms):
        terms_by_end.setdefault(term.last_month, []).append((t_index, term))
    has_da = "domestic-abuse" in profile.factors
    decide = schedule is None
    interventions = [] if decide else [_copy(i) for i in schedule]

    risk: list[float] = []
    incidents: list[Incident] = []
    term_records: list[TermRecord] = []
    episodes: list[Episode] = []
    lac_periods: list[LacPeriod] = []
    open_lac: dict[str, LacPeriod] = {}
    boost = {c.pid: 0.0 for c in children}
    out_of_school: dict[str, str] = {}  # pid -> "ehe" (for good) or "cme" (for a term)
    last_term_attendance: dict[str, float] = {}
    ep: Episode | None = None
    phase = ""
    calm_months = 0
    shift = 0.0
    x = 0.0
    last_incident = -99
    last_offer_end = -99
    last_closure: tuple[int, str] | None = None
    previous_cp = 0

    def settle(episode: Episode, month: int, reason: str) -> str:
        """Close the episode, unless children are still looked after by its LA (they stay children in need)."""
        if any(p.la_code == episode.la_code for p in open_lac.values()):
            return "lac"
        _close(episode, month, reason)
        return ""

    for m in range(months):
        x = AR * x + noise[m]
        r = profile.level(m) + x - shift
        risk.append(r)
        u = fam_u[m]
        la_code = family.la_at(m)
        present = [c for c in children if c.present(m) and 0 <= c.age(m) <= 17]
        at_home = [c for c in present if c.pid not in open_lac]
        month_incidents: list[Incident] = []

        # household incidents
        if at_home:
            da_on = has_da and m >= profile.da_from
            if u[0] < sigmoid(r + (-1.5 if da_on else -5.5)):
                kids = tuple(c.pid for c in at_home)
                month_incidents.append(Incident("da", m, children=kids))
                if u[1] < 0.03 + 0.12 * sigmoid(r):
                    month_incidents.append(Incident("marac", m, children=kids))

        # each child's incidents
        for c in present:
            cu = draws.child[c.pid][m]
            rc = r + offsets[c.pid]
            age = c.age(m)
            if cu[0] < _ed_rate(age) * (1 + 3 * sigmoid(rc)):
                month_incidents.append(Incident("ed", m, c.pid, safeguarding=cu[1] < 0.5 * sigmoid(rc - 0.5),
                                                injury=cu[2] < 0.3 + 0.3 * sigmoid(rc)))
            if age >= 10:
                lac = c.pid in open_lac
                if cu[3] < sigmoid(rc + 1.2 * c.teen_risk - 4.5 + (1.5 if lac else 0.0)):
                    month_incidents.append(Incident("missing", m, c.pid, looked_after=lac))
            if age >= 12:
                if cu[4] < sigmoid(rc + c.teen_risk - 5.5):
                    month_incidents.append(Incident("arrest", m, c.pid))
                if cu[5] < sigmoid(rc + 1.3 * c.teen_risk - 6.0):
                    cse = cu[6] < (0.7 if c.sex == "F" else 0.2)
                    month_incidents.append(Incident("cse" if cse else "cce", m, c.pid))
        incidents.extend(month_incidents)
        if month_incidents:
            last_incident = m

        # school terms ending this month
        severe_absence = False
        for t_index, term in terms_by_end.get(m, ()):
            for c in children:
                if not c.present(term.months[0]) and not c.present(m):
                    continue
                yg = _in_school(c, term)
                if yg is None:
                    continue
                status = out_of_school.get(c.pid)
                if status == "ehe":
                    continue
                if status == "cme":
                    del out_of_school[c.pid]
                    continue
                tu = draws.term[c.pid][t_index]
                mean_s = sum(sigmoid(risk[k] + offsets[c.pid] + 1.2) for k in term.months) / len(term.months)
                absence = ((1 - c.attendance_base) + 0.22 * mean_s + 0.5 * mean_s ** 4 + 0.02 * tu[0]
                           + (0.03 * max(0.0, c.teen_risk) if yg >= 7 else 0.0) - boost[c.pid])
                absence = min(0.98, max(0.0, absence))
                rec = TermRecord(c.pid, term, la_code, yg, 1 - absence, min(0.95, 0.25 + 0.6 * mean_s))
                secondary = yg >= 7
                p_suspension = sigmoid(0.5 * r + 0.9 * c.teen_risk - (2.8 if secondary else 5.0))
                if yg >= 3 and tu[1] < p_suspension:
                    rec.suspensions = 2 if tu[1] < p_suspension / 3 else 1
                    rec.permanent_exclusion = tu[2] < 0.06 * sigmoid(0.5 * r + 1)
                if rec.attendance < 0.5:
                    severe_absence = True
                    if not rec.permanent_exclusion and tu[2] > 0.92:
                        if secondary and tu[2] > 0.97:
                            rec.ehe = True
                            out_of_school[c.pid] = "ehe"
                        else:
                            rec.cme = True
                            out_of_school[c.pid] = "cme"
                last_term_attendance[c.pid] = rec.attendance
                term_records.append(rec)

        # children's social care
        stepped_down = False
        if ep is not None and ep.open and ep.la_code != la_code:
            if any(p.la_code == ep.la_code for p in open_lac.values()):
                pass  # children in care stay with the LA that looks after them
            else:
                _close(ep, m, "RC5")
                last_closure = (m, "RC5")
                for plan in ep.cin_plans + ep.cp_plans:
                    if plan[1] is None:
                        plan[1] = m
        if (ep is None or not ep.open) and at_home:
            no_trigger = 1.0
            source, trigger = "", None
            best = 0.0
            for inc in month_incidents:
                key = "ed-safeguarding" if inc.kind == "ed" and inc.safeguarding else inc.kind
                if key in TRIGGERS:
                    p, src = TRIGGERS[key]
                    no_trigger *= 1 - p
                    if p > best:
                        best, source, trigger = p, src, inc
            if severe_absence:
                p, src = TRIGGERS["severe-absence"]
                no_trigger *= 1 - p
                if p > best:
                    best, source, trigger = p, src, None
            moved_in = last_closure is not None and last_closure[1] == "RC5" and m - last_closure[0] <= 2
            spontaneous = 0.12 * sigmoid(r - 0.5) + (0.6 if moved_in else 0.0)
            if u[2] < 1 - (1 - spontaneous) * no_trigger:
                if not source:
                    unprompted = REFERRAL_SOURCES_UNPROMPTED[int(u[3] * len(REFERRAL_SOURCES_UNPROMPTED))]
                    source = "5C" if moved_in else unprompted
                ep = Episode(la_code, m, source, tuple(c.pid for c in at_home), trigger)
                episodes.append(ep)
                if u[4] < 0.08:
                    ep.nfa = True
                    _close(ep, m, "RC8")
                    last_closure = (m, "RC8")
                else:
                    phase = "assessment"
                    ep.assessment_end = m + (1 if u[4] < 0.6 else 2)
        elif ep is not None and ep.open:
            if phase == "assessment" and m >= (ep.assessment_end or m):
                z = r + 0.8 * _logit(u[5])
                if z < -2.0:
                    stepped_down = u[6] < 0.5
                    ep.step_down = stepped_down
                    _close(ep, m, "RC9" if stepped_down else "RC8")
                    last_closure = (m, ep.closure_reason)
                elif z < 0.5:
                    phase = "cin"
                    ep.cin_plans.append([m, None])
                else:
                    held = u[6] < 0.8
                    ep.s47.append((m, held))
                    if held and z >= 1.3:
                        phase = "cp"
                        ep.cp_plans.append([m, None, previous_cp])
                        previous_cp += 1
                    else:
                        phase = "cin"
                        ep.cin_plans.append([m, None])
                    if z > 2.0:
                        for c in ep.children:
                            if c in {k.pid for k in at_home} and draws.child[c][m][7] < 0.5:
                                open_lac[c] = LacPeriod(c, la_code, m, emergency=True)
                                lac_periods.append(open_lac[c])
                calm_months = 0
            elif phase == "cin":
                calm_months = calm_months + 1 if r < -2.5 else 0
                if r > 0.3 and u[11] < 0.15:
                    ep.cin_plans[-1][1] = m
                    ep.s47.append((m, True))
                    ep.cp_plans.append([m, None, previous_cp])
                    previous_cp += 1
                    phase = "cp"
                    calm_months = 0
                elif calm_months >= 3 or u[6] < 0.03:
                    ep.cin_plans[-1][1] = m
                    phase = settle(ep, m, "RC7")
            elif phase == "cp":
                calm_months = calm_months + 1 if r < -1.2 else 0
                for c in at_home:
                    if c.pid in ep.children and draws.child[c.pid][m][7] < 0.15 * sigmoid(r + offsets[c.pid] - 1.5):
                        open_lac[c.pid] = LacPeriod(c.pid, ep.la_code, m)
                        lac_periods.append(open_lac[c.pid])
                still_home = [c for c in ep.children if c not in open_lac and family_member(family, c).present(m)]
                plan = ep.cp_plans[-1]
                if not still_home:
                    plan[1] = m
                    phase = "lac"
                elif (m - plan[0] >= 3 and calm_months >= 2) or (m - plan[0] >= 6 and u[6] < 0.06):
                    plan[1] = m
                    if u[11] < 0.6:
                        phase = "cin"
                        ep.cin_plans.append([m, None])
                        calm_months = 0
                    else:
                        phase = settle(ep, m, "RC7")
            elif phase == "lac":
                phase = settle(ep, m, "RC7")
            if ep.closure_month == m:
                last_closure = (m, ep.closure_reason)

        # care: placement moves and endings
        for pid, period in list(open_lac.items()):
            if m == period.start:
                continue
            cu8 = draws.child[pid][m][8]
            child = family_member(family, pid)
            if child.age(m) >= 18:
                period.end, period.reason_end = m, "E8"
                del open_lac[pid]
            elif m - period.start >= 6 and cu8 < 0.03 + 0.1 * (1 - sigmoid(r + 1)):
                period.end = m
                period.reason_end = "E4A" if cu8 < 0.03 + 0.07 * (1 - sigmoid(r + 1)) else (
                    "E45" if child.age(m) < 12 else "E41")
                del open_lac[pid]
            elif cu8 > 0.95:
                period.placement_changes.append(m)

        # interventions
        if decide and not any(i.active(m) for i in interventions) and m - last_offer_end >= iv.GAP_MONTHS \
                and len(interventions) < MAX_INTERVENTIONS and at_home:
            open_case = ep is not None and ep.open and phase in ("cin", "cp", "assessment")
            logit = iv.offer_logit(r, open_case, m - last_incident < 3, stepped_down)
            if u[7] < sigmoid(logit):
                interventions.append(_offer(family, at_home, m, months, u, fam_u, draws, len(interventions),
                                            has_da, profile, phase, last_term_attendance, incidents))
                last_offer_end = interventions[-1].end_month if interventions[-1].accepted else m
        for i in interventions:
            if i.active(m) and effects and i.number not in without:
                shift += i.effect_per_month
                boost_size = CATALOGUE[i.code].attendance_boost
                if boost_size:
                    for pid in i.targets:
                        boost[pid] += boost_size / CATALOGUE[i.code].planned_months

    return Timeline(risk, incidents, term_records, episodes, lac_periods, interventions)


def family_member(family: Family, pid: str) -> Person:
    for p in family.people:
        if p.pid == pid:
            return p
    raise KeyError(pid)


def _close(ep: Episode, month: int, reason: str) -> None:
    ep.closure_month, ep.closure_reason = month, reason


def _copy(i: Intervention) -> Intervention:
    return Intervention(i.number, i.code, i.offered_month, i.accepted, i.start_month, i.end_month,
                        i.planned_end_month, i.completed, i.effect_per_month, i.targets)


def _offer(family: Family, at_home: list[Person], m: int, months: int, u: list[float], fam_u: list[list[float]],
           draws: Draws, n: int, has_da: bool, profile: RiskProfile, phase: str,
           last_attendance: dict[str, float], incidents: list[Incident]) -> Intervention:
    teens = [c for c in at_home if c.age(m) >= 11]
    absent = [c for c in at_home if last_attendance.get(c.pid, 1.0) < 0.9]
    teen_ids = {c.pid for c in teens}
    teen_incident = any(i.pid in teen_ids and i.month >= m - 6 for i in incidents if i.pid)
    weights = iv.type_weights(substance=bool(profile.factors & {"parental-alcohol", "parental-drugs"}),
                              domestic_abuse=has_da, young_child=any(c.age(m) < 12 for c in at_home),
                              absent_child=bool(absent), teen=bool(teens), teen_incident=teen_incident,
                              open_plan=phase in ("cin", "cp"))
    code = iv.choose(weights, u[8])
    kind = CATALOGUE[code]
    accepted = u[9] < iv.ACCEPT_PROBABILITY
    start = m + 1
    planned_end = start + kind.planned_months
    end, completed = planned_end, True
    for k in range(start, min(planned_end, months)):
        if k > start and fam_u[k][10] < iv.DROPOUT_PER_MONTH:
            end, completed = k, False
            break
    effect = kind.effect_per_month * max(0.0, 1 + iv.EFFECT_SPREAD * draws.effect[n])
    targets = teens if code == "mentoring" else absent if code == "school-attendance-support" else at_home
    return Intervention(n + 1, code, m, accepted, start, end if accepted else start, planned_end,
                        completed and accepted, effect, tuple(c.pid for c in targets))
