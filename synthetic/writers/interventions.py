"""``interventions-csv``: the interventions a local authority's early help system records, one file
per LA (``la/<LA>_interventions.csv``), one row per child and intervention episode (docs/synthetic-data.md).

The child is named by the LA's own child id (the ``LAchildID`` of its CIN census and the ``CHILD`` of
its SSDA903 return), so a mapper can meet the LA's other records of the child within the agency; the
NHS number is there for two thirds of children, the UPN where the LA knows it. Declined offers are
not recorded (they are in the ground truth).
"""
from __future__ import annotations

import random

from .. import names
from ..story import Story
from ..world import PROVIDERS
from .base import AgencyRef, Writer, iso

FORMAT = "interventions-csv"
HEADER = ("la_code", "episode_id", "child_id", "upn", "nhs_number", "forename", "surname", "dob", "gender",
          "postcode", "intervention_type", "provider", "lead_professional_id", "lead_professional",
          "referral_date", "start_date", "end_date", "end_reason")
STAFF_PER_LA = 25
# what some systems export instead of the code: mappers keep it as text and warn
LEGACY_TYPES = {"early-help": "Early Help Assessment", "family-support": "Family Support Work",
                "parenting-programme": "Parenting course", "mentoring": "Youth mentoring"}


class InterventionsWriter(Writer):
    def write(self, story: Story) -> None:
        fam, rng = story.family, story.rng
        for i in story.timeline.interventions:
            if not i.accepted or i.start_date is None:
                continue
            la = story.world.la(fam.la_at(i.start_month))
            rel = f"la/{la.code}_interventions.csv"
            out = self.out.csv(rel, HEADER, FORMAT, AgencyRef("local-authority", la.code,
                                                              f"{la.name} Children's Services"))
            staff = rng.randrange(STAFF_PER_LA)
            kind = i.code
            if kind in LEGACY_TYPES and rng.random() < story.cfg.unknown_code_rate:
                kind = LEGACY_TYPES[kind]
            end_reason = ("completed" if i.completed else "disengaged") if i.end_date is not None else ""
            for pid in i.targets:
                child = story.member(pid)
                view = story.view("local-authority", la.code, child, i.start_month)
                story.record(FORMAT, rel, "local-authority", la.code, "child_id", view, child)
                upn = child.upn if child.upn and rng.random() < 0.8 else ""
                out.row([la.code, i.keys[pid], view.key, upn, view.nhs, view.forename, view.surname, iso(view.dob),
                         view.sex, view.postcode(fam, i.start_month), kind, f"{la.name} {PROVIDERS[i.code]}",
                         f"{la.code}-EH{staff:03d}", _lead_professional(la.code, staff), iso(i.offered_date),
                         iso(i.start_date), iso(i.end_date), end_reason])
                self.out.count(rel)
                story.truth.event(i.start_date, fam.fid, pid, "intervention-start", "local-authority", la.code, rel,
                                  i.keys[pid], i.code)
                if i.end_date is not None:
                    story.truth.event(i.end_date, fam.fid, pid, "intervention-end", "local-authority", la.code,
                                      rel, i.keys[pid], end_reason)


def _lead_professional(la_code: str, n: int) -> str:
    """A made-up name for the LA's n-th early help worker, the same in every run."""
    rng = random.Random(f"staff/{la_code}/{n}")
    heritage = rng.choice(names.HERITAGES[:3] + names.HERITAGES[4:9])
    given = rng.choice(heritage.female if rng.random() < 0.8 else heritage.male)
    return f"{given} {rng.choice(heritage.surnames)}"
