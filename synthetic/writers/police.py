"""``police-notifications-csv`` / ``-json``: one file per force (docs/formats/README.md).

One notification per child and incident (Operation Encompass notifies each child's school); a CSV
row per notification and adult involved, or one row with empty adult columns when none is named.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from ..households import Person
from ..story import Story
from ..trajectories import Incident
from .base import AgencyRef, Outputs, Writer, iso, uk

CSV_FORMAT = "police-notifications-csv"
JSON_FORMAT = "police-notifications-json"
HEADER = ("force_code", "police_reference", "notification_type", "incident_start", "incident_end",
          "child_person_id", "child_forename", "child_surname", "child_dob", "child_gender", "child_nhs_number",
          "child_postcode", "school_urn", "child_present", "child_location", "adult_person_id", "adult_forename",
          "adult_surname", "adult_dob", "adult_gender", "adult_role", "adult_relationship", "adult_postcode",
          "offence", "circumstances", "child_voice")
TYPES = {"da": "DA", "marac": "MARAC", "missing": "MISSING", "arrest": "ARREST", "cse": "CSE", "cce": "CCE"}
RELATIONSHIP = {"mother": "mother", "father": "father", "stepfather": "stepfather", "stepmother": "stepmother",
                "mothers-partner": "mothers-partner", "fathers-partner": "fathers-partner",
                "grandmother": "grandparent", "grandfather": "grandparent"}
DA_OFFENCES = ("Common assault", "Assault occasioning actual bodily harm", "Criminal damage",
               "Controlling or coercive behaviour", "Harassment", "Threats to kill", "Breach of non-molestation order",
               "Verbal argument - no offences disclosed")
ARREST_OFFENCES = ("Theft from shop", "Possession of cannabis", "Common assault", "Criminal damage", "Robbery",
                   "Possession of a bladed article", "Public order offence", "Burglary dwelling")
LOCATIONS_PRESENT = ("in the room", "in the same room", "upstairs", "in the next room", "in the hallway")
LOCATIONS_ABSENT = ("at school", "staying with grandparent", "at a friend's house")
VOICES = ("Child said they were scared when mum and dad shout", "Child did not want to speak to officers",
          "Child said this happens a lot", "Child said they hid in their bedroom", "Child was crying and upset",
          "Child said they were fine", "")
DA_CIRCUMSTANCES = ("Verbal argument escalated; {p} pushed {v} against a wall", "{v} called police reporting {p} "
                    "was drunk and shouting", "Neighbour reported screaming; {p} had left on arrival",
                    "{p} damaged property and threatened {v}", "Ongoing dispute over contact; {p} attended address",
                    "{v} reported {p} had taken her phone and would not let her leave")
MISSING_CIRCUMSTANCES = ("Reported missing by {c} after not returning home", "Left the address after an argument",
                         "Failed to return to placement by curfew", "Found by officers in the town centre",
                         "Returned of own accord, would not say where they had been")


class PoliceWriter(Writer):
    def __init__(self, out: Outputs, *, json_forces: set[str]) -> None:
        super().__init__(out)
        self.json_forces = json_forces

    def write(self, story: Story) -> None:
        for inc in story.timeline.incidents:
            if inc.kind in TYPES:
                for pid in (inc.children or (inc.pid,)):
                    self._notification(story, inc, story.member(pid))

    def _incident_details(self, story: Story, inc: Incident) -> dict[str, Any]:
        """What every notification of one incident shares: when, the offence, what happened."""
        cache = story.scratch.setdefault("police-incidents", {})
        if id(inc) not in cache:
            rng = story.rng
            hour = rng.choice((7, 8, 16, 17, 18, 19, 20, 21, 22, 23, 23, 0, 1, 2))
            start = dt.datetime.combine(inc.date, dt.time(hour, rng.randrange(0, 60, 5)))
            cache[id(inc)] = {
                "start": start,
                "end": start + dt.timedelta(hours=rng.randrange(2, 40)) if inc.kind == "missing" else None,
                "offence": rng.choice(DA_OFFENCES), "circumstances": rng.choice(DA_CIRCUMSTANCES)}
        return cache[id(inc)]

    def _notification(self, story: Story, inc: Incident, child: Person) -> None:
        fam, world, rng = story.family, story.world, story.rng
        force = world.force_for_code(inc.agency)
        agency = AgencyRef("police", force.code, force.name)
        as_json = force.code in self.json_forces
        rel = f"police/{force.code}_notifications.{'json' if as_json else 'csv'}"
        fmt = JSON_FORMAT if as_json else CSV_FORMAT
        date_fmt = uk if force.uk_dates else iso
        m = inc.month
        cview = story.view("police", force.code, child, m)
        story.record(fmt, rel, "police", force.code, "child_person_id", cview, child)
        shared = self._incident_details(story, inc)
        start, end = shared["start"], shared["end"]
        age = story.age_on(child, inc.date)
        school = ""
        if 4 <= age <= 16:
            phase = "primary" if age <= 10 else "secondary"
            school = child.schools.get(fam.la_at(m), {}).get(phase)
            school = school.urn if school else ""
        present, location, voice, offence, circumstances = "", "", "", "", ""
        adults: list[tuple[Person, str]] = []
        carers = [a for a in fam.carers_at(m)]
        perp = story.person.get(story.profile.perpetrator or "")
        if inc.kind in ("da", "marac"):
            present = rng.choice("YYYYYYNNNU")
            places = LOCATIONS_PRESENT if present == "Y" else LOCATIONS_ABSENT if present == "N" else ("",)
            location = rng.choice(places)
            voice = rng.choice(VOICES) if present == "Y" and age >= 4 else ""
            victim = next((a for a in carers if a is not perp and a.sex != (perp.sex if perp else "M")), None) \
                or next((a for a in carers if a is not perp), None)
            if perp is not None:
                adults.append((perp, "alleged-perpetrator"))
            if victim is not None:
                adults.append((victim, "victim"))
            if inc.kind == "da":
                offence = shared["offence"]
                circumstances = shared["circumstances"].format(p=_label(perp), v=_label(victim))
            else:
                offence = ""
                circumstances = "High-risk domestic abuse case referred to MARAC following DASH risk assessment"
        elif inc.kind == "missing":
            reporter = carers[0] if carers and not inc.looked_after else None
            if reporter is not None:
                adults.append((reporter, "other"))
            circumstances = rng.choice(MISSING_CIRCUMSTANCES).format(c=_label(reporter) if reporter else "carer")
        elif inc.kind == "arrest":
            offence = rng.choice(ARREST_OFFENCES)
            if carers and rng.random() < 0.7:
                adults.append((carers[0], "other"))
            circumstances = "Child arrested and interviewed with an appropriate adult; released under investigation"
        else:
            circumstances = ("Intelligence indicates child is associating with older males and receiving gifts"
                             if inc.kind == "cse" else
                             "Intelligence indicates child is being used to carry drugs between areas (county lines)")
        child_cols = {"person_id": cview.key, "forename": cview.forename, "surname": cview.surname,
                      "dob": date_fmt(cview.dob), "gender": cview.sex, "nhs_number": cview.nhs,
                      "postcode": cview.postcode(fam, m), "school_urn": school, "present": present,
                      "location": location}
        adult_cols = []
        for adult, role in adults:
            aview = story.view("police", force.code, adult, m)
            story.record(fmt, rel, "police", force.code, "adult_person_id", aview, adult)
            adult_cols.append({"person_id": aview.key, "forename": aview.forename, "surname": aview.surname,
                               "dob": date_fmt(aview.dob), "gender": aview.sex, "role": role,
                               "relationship": RELATIONSHIP.get(adult.role, "other"),
                               "postcode": aview.postcode(fam, m) if adult.resident else adult.own_postcode})
        ref = inc.refs[child.pid]
        started = start.isoformat(timespec="minutes")
        ended = end.isoformat(timespec="minutes") if end else ""
        if as_json:
            item = {"force_code": force.code, "police_reference": ref, "notification_type": TYPES[inc.kind],
                    "incident_start": started, "incident_end": ended or None,
                    "child": {k: v or None for k, v in child_cols.items()}, "adults": adult_cols,
                    "offence": offence or None, "circumstances": circumstances,
                    "child_voice": voice or None}
            sink = self.out.text(rel, fmt, agency, opening="[\n", closing="\n]\n", separator=",\n")
            sink.write_item(json.dumps(item, ensure_ascii=False))
        else:
            out = self.out.csv(rel, HEADER, fmt, agency)
            head = [force.code, ref, TYPES[inc.kind], started, ended, child_cols["person_id"], child_cols["forename"],
                    child_cols["surname"], child_cols["dob"], child_cols["gender"], child_cols["nhs_number"],
                    child_cols["postcode"], school, present, location]
            tail = [offence, circumstances, voice]
            for a in adult_cols or [None]:
                adult_part = ["", "", "", "", "", "", "", ""] if a is None else [
                    a["person_id"], a["forename"], a["surname"], a["dob"], a["gender"], a["role"],
                    a["relationship"], a["postcode"]]
                out.row(head + adult_part + tail)
        self.out.count(rel)
        event = {"da": "police-domestic-abuse", "marac": "police-marac", "missing": "police-missing",
                 "arrest": "police-arrest", "cse": "police-cse", "cce": "police-cce"}[inc.kind]
        if inc.kind == "missing" and inc.looked_after:
            event = "police-missing-from-care"
        story.truth.event(inc.date, fam.fid, child.pid, event, "police", force.code, rel, ref, present)


def _label(person: Person | None) -> str:
    if person is None:
        return "the other adult"
    return {"mother": "mother", "father": "father", "stepfather": "stepfather", "stepmother": "stepmother",
            "mothers-partner": "mother's partner", "fathers-partner": "father's partner",
            "grandmother": "grandmother", "grandfather": "grandfather"}.get(person.role, "adult")
