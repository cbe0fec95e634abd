"""The answers, kept apart from the agency files (``OUT/ground_truth/``), for evaluating record
linkage, alerts and intervention-impact estimates. All CSV, streamed family by family:

- ``persons.csv`` — every person with their true details; ``households.csv`` — each family's make-up,
  archetype and true risk factors; ``addresses.csv`` — where each family lived from when;
- ``records.csv`` — every agency record (format, file, agency, key field and value) → true person id,
  with the errors that agency's record carries; this is the linkage answer key;
- ``events.csv`` — dated escalation events (police notifications, A&E, absence, referrals, plans,
  care, interventions) with the file and reference of the record that shows them;
- ``interventions.csv`` — every offer (declined ones too) with its true effect;
- ``outcomes.csv`` — per child: referrals, re-referral within 12 months, child protection plan, looked
  after, and the same outcomes in the counterfactual run without intervention effects;
- ``episode_outcomes.csv`` — per accepted episode and child it was for: the child's first plan and
  care in the run where only that episode does nothing (its own effect, the rest of the schedule and
  its effects unchanged);
- ``risk.csv`` — each family's latent monthly risk (and the counterfactual path for treated families);
- ``effects.json`` — the intervention catalogue's true effects and the selection model.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import interventions as iv
from .calendar import Calendar
from .config import SynthConfig
from .trajectories import Timeline

if TYPE_CHECKING:
    from .errors import View
    from .households import Person
    from .story import Story

FILES = {
    "persons": ("person_id", "family_id", "role", "resident", "sex", "given_name", "middle_name", "surname", "dob",
                "nhs_number", "upn", "ethnicity", "disability", "joined_month", "left_month"),
    "households": ("family_id", "household_type", "la_code", "archetype", "risk_factors", "perpetrator_id",
                   "practice_ods", "in_gp_extract", "children", "adults", "onset_month", "crisis_month",
                   "base_risk"),
    "addresses": ("family_id", "postcode", "la_code", "from_month", "from_date"),
    "records": ("format", "file", "agency_kind", "agency_code", "key_field", "key", "person_id", "family_id",
                "errors", "duplicate_of"),
    "events": ("date", "family_id", "person_id", "event", "agency_kind", "agency_code", "file", "ref", "detail"),
    "interventions": ("intervention_id", "family_id", "type", "offered_month", "offered_date", "accepted",
                      "start_month", "start_date", "end_month", "end_date", "planned_months", "months_attended",
                      "completed", "effect_per_month", "total_effect", "attendance_boost", "targets",
                      "episode_keys"),
    "outcomes": ("person_id", "family_id", "treated", "intervention_types", "referrals", "first_referral_month",
                 "re_referral_12m", "cp_plan", "first_cp_plan_month", "looked_after", "first_looked_after_month",
                 "cf_referrals", "cf_re_referral_12m", "cf_cp_plan", "cf_looked_after", "end_risk", "cf_end_risk",
                 "cf_first_cp_plan_month", "cf_first_looked_after_month"),
    "episode_outcomes": ("intervention_id", "person_id", "type", "start_month", "first_cp_plan_month",
                         "first_looked_after_month", "cf_first_cp_plan_month", "cf_first_looked_after_month"),
}


class GroundTruth:
    def __init__(self, directory: Path, cfg: SynthConfig, cal: Calendar) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir, self.cfg, self.cal = directory, cfg, cal
        self._handles: dict[str, Any] = {}
        self.writers: dict[str, Any] = {}
        self.rows: dict[str, int] = {}
        for name, header in FILES.items():
            self._open(name, header)
        self._open("risk", ("family_id", "world", *(f"m{m:03d}" for m in range(cal.months))))
        (directory / "effects.json").write_text(json.dumps(effects_document(), indent=2) + "\n", encoding="utf-8")

    def _open(self, name: str, header: tuple[str, ...]) -> None:
        handle = (self.dir / f"{name}.csv").open("w", encoding="utf-8", newline="")
        self._handles[name] = handle
        self.writers[name] = csv.writer(handle, lineterminator="\n")
        self.writers[name].writerow(header)
        self.rows[name] = 0

    def _row(self, name: str, values: list[Any] | tuple[Any, ...]) -> None:
        self.writers[name].writerow(values)
        self.rows[name] += 1

    def record(self, fmt: str, file: str, kind: str, code: str, key_field: str, view: "View", person: "Person",
               family_id: str) -> None:
        self._row("records", (fmt, file, kind, code, key_field, view.key, person.pid, family_id,
                              ";".join(view.errors), view.duplicate_of))

    def event(self, day: dt.date | None, family_id: str, person_id: str, event: str, kind: str, code: str,
              file: str, ref: str, detail: str) -> None:
        self._row("events", (day.isoformat() if day else "", family_id, person_id, event, kind, code, file, ref,
                             detail))

    def family(self, story: "Story", counterfactual: Timeline | None,
               without_episode: dict[int, Timeline] | None = None) -> None:
        fam, profile, tl, cal = story.family, story.profile, story.timeline, self.cal
        for p in fam.people:
            self._row("persons", (p.pid, fam.fid, p.role, int(p.resident), p.sex, p.given, p.middle, p.surname,
                                  p.dob.isoformat(), p.nhs, p.upn, p.ethnicity, p.disability if p.is_child else "",
                                  p.joined, "" if p.left is None else p.left))
        self._row("households", (fam.fid, fam.kind, fam.addresses[0].la_code, profile.archetype,
                                 ";".join(sorted(profile.factors)), profile.perpetrator or "", fam.practice.ods,
                                 int(fam.practice.in_extract), len(fam.children), len(fam.adults),
                                 "" if profile.onset is None else profile.onset,
                                 "" if profile.crisis_month is None else profile.crisis_month,
                                 f"{profile.base:.3f}"))
        for a in fam.addresses:
            self._row("addresses", (fam.fid, a.postcode, a.la_code, a.from_month, cal.first_day(a.from_month)))
        for i in tl.interventions:
            kind = iv.CATALOGUE[i.code]
            attended = i.months_attended(cal.months)
            self._row("interventions", (
                f"{fam.fid}-I{i.number:02d}", fam.fid, i.code, i.offered_month, _iso(i.offered_date), int(i.accepted),
                i.start_month if i.accepted else "", _iso(i.start_date), i.end_month if i.accepted else "",
                _iso(i.end_date), kind.planned_months, attended, int(i.completed), f"{i.effect_per_month:.4f}",
                f"{i.effect_per_month * attended:.4f}", kind.attendance_boost, ";".join(i.targets),
                ";".join(f"{pid}={key}" for pid, key in i.keys.items())))
        treated_types: dict[str, set[str]] = {}
        for i in tl.interventions:
            if i.accepted and i.start_month < cal.months:
                for pid in i.targets:
                    treated_types.setdefault(pid, set()).add(i.code)
        cf = counterfactual or tl
        for c in fam.children:
            if c.birth_month > cal.months - 1:
                continue
            fact, alt = child_outcomes(tl, c.pid), child_outcomes(cf, c.pid)
            self._row("outcomes", (c.pid, fam.fid, int(c.pid in treated_types),
                                   ";".join(sorted(treated_types.get(c.pid, ()))), fact["referrals"],
                                   fact["first_referral"], int(fact["re_referral"]), int(fact["cp"]), fact["first_cp"],
                                   int(fact["lac"]), fact["first_lac"], alt["referrals"], int(alt["re_referral"]),
                                   int(alt["cp"]), int(alt["lac"]), f"{tl.risk[-1]:.4f}", f"{cf.risk[-1]:.4f}",
                                   alt["first_cp"], alt["first_lac"]))
        for i in tl.interventions:
            alt_run = (without_episode or {}).get(i.number)
            if alt_run is None:
                continue
            for pid in i.targets:
                fact, alt = child_outcomes(tl, pid), child_outcomes(alt_run, pid)
                self._row("episode_outcomes", (f"{fam.fid}-I{i.number:02d}", pid, i.code, i.start_month,
                                               fact["first_cp"], fact["first_lac"], alt["first_cp"], alt["first_lac"]))
        self._row("risk", (fam.fid, "factual", *(f"{r:.3f}" for r in tl.risk)))
        if counterfactual is not None:
            self._row("risk", (fam.fid, "counterfactual", *(f"{r:.3f}" for r in counterfactual.risk)))

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()


def child_outcomes(tl: Timeline, pid: str) -> dict[str, Any]:
    """A child's social-care outcomes in one run (months are indices into the period)."""
    referrals = sorted(ep.referral_month for ep in tl.episodes if pid in ep.children)
    own = sorted(ep.referral_month for ep in tl.episodes if pid in ep.children and ep.source != "5C")
    cp = sorted(plan[0] for ep in tl.episodes if pid in ep.children for plan in ep.cp_plans)
    lac = sorted(p.start for p in tl.lac if p.pid == pid)
    return {"referrals": len(referrals), "first_referral": referrals[0] if referrals else "",
            "re_referral": any(b - a <= 12 for a, b in zip(own, own[1:])),
            "cp": bool(cp), "first_cp": cp[0] if cp else "", "lac": bool(lac), "first_lac": lac[0] if lac else ""}


def effects_document() -> dict[str, Any]:
    return {
        "effect_scale": "fall in the family's latent risk (log-odds) per month attended; the fall persists after "
                        "the intervention ends",
        "interventions": {code: {"effect_per_month": t.effect_per_month, "planned_months": t.planned_months,
                                 "total_effect_if_completed": round(t.effect_per_month * t.planned_months, 4),
                                 "attendance_boost": t.attendance_boost}
                          for code, t in iv.CATALOGUE.items()},
        "zero_effect": iv.ZERO_EFFECT,
        "episode_effect_spread": f"type effect x max(0, 1 + {iv.EFFECT_SPREAD} N(0,1))",
        "selection_model": {"logit": "intercept + per_risk*risk + open_case + recent_incident + step_down",
                            "intercept": iv.OFFER_INTERCEPT, "per_risk": iv.OFFER_PER_RISK,
                            "open_case": iv.OFFER_OPEN_CASE, "recent_incident": iv.OFFER_RECENT_INCIDENT,
                            "step_down": iv.OFFER_AFTER_ASSESSMENT_STEP_DOWN, "accept": iv.ACCEPT_PROBABILITY,
                            "dropout_per_month": iv.DROPOUT_PER_MONTH, "gap_months": iv.GAP_MONTHS},
        "counterfactual": "outcomes.csv cf_* columns and risk.csv 'counterfactual' rows: the same family, the same "
                          "random numbers and the same interventions at the same times, with no effect",
    }


def _iso(day: Any) -> str:
    return day.isoformat() if day is not None else ""
