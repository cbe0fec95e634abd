"""One family's simulated period turned into dated, referenced facts that the writers render.

:class:`Story` dates every incident, social-care step, care episode and intervention (a trigger comes
before the referral it causes), allocates each agency's references (police references, attendance
ids, local child ids), keeps each agency's :class:`~synthetic.errors.View` of each person, and tells
the ground truth which record belongs to whom.
"""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .calendar import Calendar
from .errors import View, make_view
from .households import Family, Person
from .identifiers import Counter
from .trajectories import Episode, RiskProfile, Timeline, family_member
from .world import World

if TYPE_CHECKING:
    from .config import SynthConfig
    from .ground_truth import GroundTruth


@dataclass
class Ids:
    """Sequential allocators shared by all families."""

    counters: Counter = field(default_factory=Counter)

    def next(self, key: str) -> int:
        return self.counters.next(key)


class Story:
    def __init__(self, cfg: "SynthConfig", world: World, cal: Calendar, family: Family, profile: RiskProfile,
                 timeline: Timeline, rng: random.Random, ids: Ids, truth: "GroundTruth") -> None:
        self.cfg, self.world, self.cal, self.family, self.profile = cfg, world, cal, family, profile
        self.timeline, self.rng, self.ids, self.truth = timeline, rng, ids, truth
        self._views: dict[tuple[str, str, str], View] = {}
        self._recorded: set[tuple[str, str]] = set()
        self.person = {p.pid: p for p in family.people}
        self.scratch: dict[str, Any] = {}  # per-family notes shared by writers (rows already written)
        self._date_everything()

    # -- people as each agency holds them ---------------------------------------------------------

    def view(self, kind: str, code: str, person: Person, month: int = 0) -> View:
        """This agency's record of ``person`` (drawn on first use), as used in ``month``."""
        key = (kind, code, person.pid)
        view = self._views.get(key)
        if view is None:
            rates = self.cfg.errors[kind]
            holds_nhs = kind in ("local-authority", "emergency-department", "gp") or (
                kind == "police" and person.is_child)
            view = make_view(person, self.family, rates, self.rng, self._local_id(kind, code, person),
                             holds_nhs=holds_nhs, period_start=self.cal.start)
            if rates.duplicate and self.rng.random() < rates.duplicate:
                second = make_view(person, self.family, rates, self.rng, self._local_id(kind, code, person),
                                   holds_nhs=holds_nhs, period_start=self.cal.start)
                second.errors = second.errors + ("duplicate-record",)
                second.duplicate_of = view.key
                view.second, view.switch_month = second, self.rng.randrange(0, self.cal.months)
            self._views[key] = view
        return view.at(month)

    def _local_id(self, kind: str, code: str, person: Person) -> str:
        if kind == "local-authority":
            return self.world.la(code).child_id(self.ids.next(f"la/{code}"))
        if kind == "police":
            force = self.world.force_for_code(code)
            return f"{force.nominal_prefix}{self.ids.next(f'nominal/{code}'):08d}"
        if kind == "emergency-department":
            trust = self.world.trust(code)
            return trust.hospital_number_style.format(n=self.ids.next(f"hospital/{code}"))
        if kind == "education":
            return person.upn
        return person.nhs  # gp: the NHS number is the key

    def record(self, fmt: str, file: str, kind: str, code: str, key_field: str, view: View, person: Person) -> None:
        """Tell the ground truth that ``file`` holds a record of ``person`` under ``view.key``."""
        key = (file, view.key)
        if key in self._recorded:
            return
        self._recorded.add(key)
        self.truth.record(fmt, file, kind, code, key_field, view, person, self.family.fid)

    # -- dates --------------------------------------------------------------------------------------

    def day(self, month: int) -> dt.date:
        return self.cal.day(month, self.rng.randrange(31))

    def after(self, earlier: dt.date | None, month: int, *, min_gap: int = 0, max_gap: int | None = None) -> dt.date:
        """A day in ``month``, but not before ``earlier + min_gap`` (nor after the period)."""
        day = self.day(month) if month < self.cal.months else self.cal.end
        if earlier is not None:
            floor = earlier + dt.timedelta(days=min_gap)
            if max_gap is not None:
                day = min(day, earlier + dt.timedelta(days=max_gap))
            day = max(day, floor)
        return min(day, self.cal.end)

    def _date_everything(self) -> None:
        fam, cal, rng, world = self.family, self.cal, self.rng, self.world
        for inc in self.timeline.incidents:
            # a baby's first month: nothing happens to them before the day they are born
            inc.date = max(self.day(inc.month), self._born(inc.children or (inc.pid,)))
            la = fam.la_at(inc.month)
            yy = inc.date.year % 100
            if inc.kind == "ed":
                trust = world.trust_for(la)
                if rng.random() < 0.1:
                    trust = world.neighbour_trust(la, rng)
                inc.agency = trust.ods
                inc.refs[inc.pid] = f"{trust.ods}{yy:02d}{self.ids.next(f'attendance/{trust.ods}'):07d}"
            else:
                force = world.force_for(la)
                inc.agency = force.code
                # one incident number; each child's notification is (reference, child) — Operation Encompass
                ref = f"{force.reference_prefix}/{yy:02d}/{self.ids.next(f'ref/{force.code}'):07d}"
                for pid in (inc.children or (inc.pid,)):
                    inc.refs[pid] = ref
        for ep in self.timeline.episodes:
            self._date_episode(ep)
        for period in self.timeline.lac:
            period_dates = {"start": max(self.day(period.start), self._born((period.pid,)))}
            ep = next((e for e in self.timeline.episodes if period.pid in e.children and e.la_code == period.la_code
                       and e.referral_month <= period.start), None)
            if ep is not None and period.emergency:
                period_dates["start"] = self.after(ep.dates.get("referral"), period.start, min_gap=1)
            changes = []
            last = period_dates["start"]
            for m in period.placement_changes:
                last = self.after(last, m, min_gap=1)
                changes.append(last)
            period_dates["changes"] = changes
            if period.end is not None:
                period_dates["end"] = self.after(last, period.end, min_gap=1)
            period.dates = period_dates
        for i in self.timeline.interventions:
            i.offered_date = self.day(i.offered_month)
            if i.accepted and i.start_month < cal.months:
                i.start_date = self.after(max(i.offered_date, self._born(i.targets)), i.start_month, min_gap=7)
                if i.end_month < cal.months:
                    i.end_date = self.after(i.start_date, i.end_month, min_gap=14)
                la = fam.la_at(i.start_month)
                for pid in i.targets:
                    i.keys[pid] = f"EH{la}-{self.ids.next(f'episode/{la}'):07d}"

    def _date_episode(self, ep: Episode) -> None:
        d = ep.dates
        trigger = ep.trigger.date if ep.trigger is not None else None
        d["referral"] = self.after(trigger, ep.referral_month, min_gap=0, max_gap=6) if trigger else \
            self.day(ep.referral_month)
        d["referral"] = max(d["referral"], self._born(ep.children))
        last = d["referral"]
        if ep.assessment_end is not None and not ep.nfa:
            d["assessment_start"] = self.after(last, ep.referral_month, min_gap=0, max_gap=5)
            last = d["assessment_start"]
            if ep.assessment_end < self.cal.months:
                d["assessment_end"] = self.after(last, ep.assessment_end, min_gap=7, max_gap=60)
        s47, conference_by_month = [], {}
        for month, held in ep.s47:
            start = self.after(max(last, d.get("assessment_start", last)), month, min_gap=1)
            icpc = start + dt.timedelta(days=self.rng.randrange(8, 21)) if held else None
            if icpc is not None and icpc > self.cal.end:
                icpc = None
            s47.append((start, start + dt.timedelta(days=21), icpc))
            conference_by_month[month] = icpc
            last = icpc or start
        d["s47"] = s47
        cp = []
        last = d["referral"]
        for start_m, end_m, previous in ep.cp_plans:
            # a plan starts at the initial conference of the enquiry that led to it
            icpc = conference_by_month.get(start_m)
            start = icpc if icpc is not None else self.after(last, start_m, min_gap=1)
            end = self.after(start, end_m, min_gap=30) if end_m is not None and end_m < self.cal.months else None
            cp.append((start, end, previous))
            last = end or start
        d["cp"] = cp
        cin = []
        for start_m, end_m in ep.cin_plans:
            start = self.after(d.get("assessment_end", last), start_m, min_gap=0)
            end = self.after(start, end_m, min_gap=14) if end_m is not None and end_m < self.cal.months else None
            cin.append((start, end))
        d["cin"] = cin
        if ep.closure_month is not None:
            ends = [x for x in [d.get("assessment_end"), *(e for _, e, _ in cp), *(e for _, e in cin),
                                *(s[0] for s in s47)] if x is not None]
            latest = max([d["referral"], *ends])
            d["closure"] = d["referral"] if ep.nfa else self.after(latest, ep.closure_month, min_gap=0)

    def _born(self, pids: tuple[str, ...]) -> dt.date:
        """The latest birth date among ``pids`` (the floor for anything that involves them all)."""
        return max((self.person[p].dob for p in pids if p), default=self.cal.start)

    # -- helpers for writers -----------------------------------------------------------------------

    def member(self, pid: str) -> Person:
        return family_member(self.family, pid)

    def age_on(self, person: Person, day: dt.date) -> int:
        b = person.dob
        return day.year - b.year - ((day.month, day.day) < (b.month, b.day))
