"""``ed-attendances-csv``: one file per NHS trust, a row per emergency department attendance."""
from __future__ import annotations

import datetime as dt

from ..story import Story
from .base import AgencyRef, Writer, iso, uk

FORMAT = "ed-attendances-csv"
HEADER = ("ods_code", "attendance_id", "arrival", "hospital_number", "nhs_number", "forename", "surname", "dob",
          "gender", "postcode", "chief_complaint_snomed", "diagnosis_snomed", "injury", "injury_mechanism",
          "safeguarding_concern_snomed", "safeguarding_concern_text", "discharge_destination")
# (chief complaint, diagnosis, mechanism) — SNOMED CT concept ids (Verhoeff-checked in the tests)
INJURIES = (("82271004", "82271004", "fall from height"), ("1912002", "125605004", "fall on the same level"),
            ("1912002", "125667009", "fall on the same level"), ("312608009", "312608009", "struck by object"),
            ("125666000", "125666000", "burn or scald"), ("44465007", "44465007", "sports injury"),
            ("82271004", "125667009", "struck by person"), ("125605004", "125605004", "fall from height"))
ILLNESSES = (("386661006", "386661006"), ("267036007", "195967001"), ("21522001", "21522001"),
             ("271807003", "271807003"), ("422400008", "62315008"), ("267036007", "50043002"))
TEEN_RISK = (("248062006", "248062006"), ("75478009", "55680006"), ("25702006", "25702006"))
SAFEGUARDING = (("836881000000105", "Child is cause for safeguarding concern"),
                ("1064961000000107", "Child in family is safeguarding concern"))
CONCERN_TEXT = ("Injury inconsistent with history given", "Delay in presentation", "Parent intoxicated on arrival",
                "Disclosure of domestic abuse at home", "Frequent attender, concerns re supervision",
                "Child disclosed being hit", "Known to social care", "")
DISCHARGE = ("306689006", "306689006", "306689006", "306689006", "306706006")
UNKNOWN_DISCHARGE = "HOME"  # text where a code belongs: mappers keep it as text and warn


class EdAttendancesWriter(Writer):
    def write(self, story: Story) -> None:
        fam, world, rng = story.family, story.world, story.rng
        for inc in story.timeline.incidents:
            if inc.kind != "ed":
                continue
            child = story.member(inc.pid)
            trust = world.trust(inc.agency)
            rel = f"health/{trust.ods}_ed_attendances.csv"
            out = self.out.csv(rel, HEADER, FORMAT, AgencyRef("health", trust.ods, trust.name))
            view = story.view("emergency-department", trust.ods, child, inc.month)
            story.record(FORMAT, rel, "health", trust.ods, "hospital_number", view, child)
            arrival = dt.datetime.combine(inc.date, dt.time(rng.randrange(24), rng.randrange(60)))
            age = story.age_on(child, inc.date)
            mechanism = ""
            if inc.injury:
                complaint, diagnosis, mechanism = rng.choice(INJURIES)
            elif age >= 12 and rng.random() < 0.25 * (1 + inc.safeguarding):
                complaint, diagnosis = rng.choice(TEEN_RISK)
            else:
                complaint, diagnosis = rng.choice(ILLNESSES)
            concern, text = ("", "")
            if inc.safeguarding:
                concern, _ = rng.choice(SAFEGUARDING)
                text = rng.choice(CONCERN_TEXT)
            discharge = UNKNOWN_DISCHARGE if rng.random() < story.cfg.unknown_code_rate else rng.choice(DISCHARGE)
            dob = uk(view.dob) if trust.uk_dates else iso(view.dob)
            ref = inc.refs[child.pid]
            out.row([trust.ods, ref, arrival.isoformat(timespec="minutes"), view.key, view.nhs, view.forename,
                     view.surname, dob, {"M": "1", "F": "2"}[view.sex], view.postcode(fam, inc.month), complaint,
                     diagnosis, "Y" if inc.injury else "N", mechanism, concern, text, discharge])
            self.out.count(rel)
            story.truth.event(inc.date, fam.fid, child.pid, "ed-safeguarding-concern" if inc.safeguarding else
                              "ed-injury" if inc.injury else "ed-attendance", "health", trust.ods, rel, ref, diagnosis)
