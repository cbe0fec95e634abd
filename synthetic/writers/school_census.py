"""``school-census-csv``: one file per local authority, rows per pupil and term (docs/formats/README.md)."""
from __future__ import annotations

import datetime as dt

from ..story import Story
from ..world import School
from .base import AgencyRef, Writer, iso

FORMAT = "school-census-csv"
HEADER = ("la_code", "school_urn", "school_name", "upn", "forename", "surname", "dob", "gender", "postcode",
          "record_type", "term", "period_start", "period_end", "possible_sessions", "attended_sessions",
          "authorised_absence_sessions", "unauthorised_absence_sessions", "event_date", "exclusion_category",
          "exclusion_reason", "sessions")
# DfE suspension and exclusion reasons, most common first (persistent disruptive behaviour dominates)
REASONS = ("PD", "PD", "PD", "VA", "PA", "PP", "VP", "BW", "DM", "BU", "DA", "MT", "TH", "SA", "RA", "OT")
LEGACY_REASON = "SM"  # a pre-2020 code some systems still export: mappers keep it and warn


class SchoolCensusWriter(Writer):
    def write(self, story: Story) -> None:
        fam, world = story.family, story.world
        moved_school: dict[tuple[str, str, str], School] = {}  # after a permanent exclusion
        for rec in story.timeline.terms:
            child = story.member(rec.pid)
            if not child.upn:
                continue
            la = world.la(rec.la_code)
            phase = "primary" if rec.year_group <= 6 else "secondary"
            school = moved_school.get((rec.pid, la.code, phase)) or child.schools[rec.la_code][phase]
            rel = f"education/{la.code}_school_census.csv"
            out = self.out.csv(rel, HEADER, FORMAT, AgencyRef("education", la.code, f"{la.name} schools"))
            view = story.view("education", la.code, child, rec.term.last_month)
            story.record(FORMAT, rel, "education", la.code, "upn", view, child)
            term = rec.term
            common = [la.code, school.urn, school.name, child.upn, view.forename, view.surname, iso(view.dob),
                      view.sex, view.postcode(fam, term.last_month)]
            possible = term.possible_sessions
            attended = round(possible * rec.attendance)
            absent = possible - attended
            unauthorised = round(absent * rec.unauthorised_share)
            out.row(common + ["ATTENDANCE", term.key, iso(term.start), iso(term.end), possible, attended,
                              absent - unauthorised, unauthorised, "", "", "", ""])
            self.out.count(rel)
            pct = attended / possible
            if pct < 0.9:
                story.truth.event(term.end, fam.fid, child.pid, "severe-absence" if pct < 0.5 else
                                  "persistent-absence", "education", la.code, rel, f"{child.upn}/{term.key}",
                                  f"{pct:.3f}")
            span = (term.end - term.start).days
            for offset in sorted(story.rng.sample(range(span), rec.suspensions)):
                day = term.start + dt.timedelta(days=offset)
                reason = LEGACY_REASON if story.rng.random() < story.cfg.unknown_code_rate else \
                    story.rng.choice(REASONS)
                out.row(common + ["SUSPENSION", term.key, "", "", "", "", "", "", iso(day), "FIXD", reason,
                                  story.rng.choice((1, 1, 2, 2, 3, 4, 5, 10))])
                self.out.count(rel)
                story.truth.event(day, fam.fid, child.pid, "suspension", "education", la.code, rel,
                                  f"{child.upn}/{iso(day)}", reason)
            if rec.permanent_exclusion:
                day = term.end - dt.timedelta(days=story.rng.randrange(1, 20))
                out.row(common + ["PERMANENT_EXCLUSION", term.key, "", "", "", "", "", "", iso(day), "PERM",
                                  story.rng.choice(REASONS[3:]), ""])
                self.out.count(rel)
                story.truth.event(day, fam.fid, child.pid, "permanent-exclusion", "education", la.code, rel,
                                  f"{child.upn}/{iso(day)}", "")
                others = [s for s in (la.secondaries if phase == "secondary" else la.primaries) if s != school]
                if others:
                    moved_school[(rec.pid, la.code, phase)] = story.rng.choice(others)
            for flag, record_type, event in ((rec.cme, "CME", "child-missing-education"),
                                             (rec.ehe, "EHE", "elective-home-education")):
                if flag:
                    day = min(term.end + dt.timedelta(days=story.rng.randrange(14, 40)), story.cal.end)
                    out.row(common + [record_type, term.key, "", "", "", "", "", "", iso(day), "", "", ""])
                    self.out.count(rel)
                    story.truth.event(day, fam.fid, child.pid, event, "education", la.code, rel,
                                      f"{child.upn}/{record_type}", "")
