"""A GP system's export as FHIR transaction Bundles, one stream per ICB (``health/<ICB>_gp_extract_NNN.json``).

Only practices on the exporting system are included (``Practice.in_extract``). Every registered
household member is a Patient with an NHS number (primary care holds the spine demographics) and a
``generalPractitioner``; Conditions follow the family's true risk factors (a parent's depression or
alcohol dependence) and common childhood conditions; Observations carry the safeguarding codes a
practice records when social care tells it of a referral, a child protection plan or care, and a
body weight for young children.
"""
from __future__ import annotations

import datetime as dt
import random
from typing import Any

from mappings import systems

from ..calendar import Calendar
from ..households import Person
from ..story import Story
from ..world import ICBS
from .base import AgencyRef, Outputs, Writer, iso
from .fhir import FORMAT, LOINC, BundleFiles, human_name, patient, snomed

CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CHILD_CONDITIONS = (("195967001", "Asthma", 0.10), ("24079001", "Atopic dermatitis", 0.08))
ADULT_FACTOR_CONDITIONS = {"parental-mental-health": ("35489007", "Depressive disorder"),
                           "parental-alcohol": ("7200002", "Alcoholism"),
                           "parental-drugs": ("191816009", "Drug dependence")}
SAFEGUARDING_CODES = {"cin-referral": ("836881000000105", "Child is cause for safeguarding concern"),
                      "cp-plan-start": ("342191000000101", "Subject to child protection plan"),
                      "looked-after-start": ("764841000000100", "Looked after child")}
PARENT_ROLES = ("mother", "father", "stepfather", "stepmother", "mothers-partner", "fathers-partner")


def record_system(ods: str) -> str:
    """The GP system's own identifier namespace for a practice's records (not a national system)."""
    return f"https://fhir.gp-system.example/Id/{ods}/record"


class GpExtractWriter(Writer):
    def __init__(self, out: Outputs, bundles: BundleFiles) -> None:
        super().__init__(out)
        self.bundles = bundles

    def write(self, story: Story) -> None:
        fam, cal = story.family, story.cal
        practice = fam.practice
        if not practice.in_extract:
            return
        icb = ICBS[practice.icb]
        chunk = self.bundles.chunk(f"health/{icb.ods}_gp_extract", AgencyRef("health", icb.ods, icb.name),
                                   systems.AGENCY_TAG_SYSTEM)
        org_id = {"system": systems.ODS_CODE, "value": practice.ods}
        org_url = self.bundles.add(chunk, {"resourceType": "Organization", "identifier": [org_id],
                                           "name": practice.name, "active": True}, org_id, f"org/{practice.ods}")
        records = self._records(story)
        last = cal.months - 1
        for person in fam.people:
            if not person.resident or person.joined >= cal.months or person.birth_month > last:
                continue
            view = story.view("gp", icb.ods, person, last)
            story.record(FORMAT, chunk.rel, "health", icb.ods, "nhs-number", view, person)
            nhs = {"system": systems.NHS_NUMBER, "value": view.nhs}
            month = person.left - 1 if person.left is not None else last
            resource = patient([nhs], human_name(view.forename, person.middle, view.surname), view.sex, view.dob,
                               view.postcode(fam, month), generalPractitioner=[{"reference": org_url}])
            patient_url = self.bundles.add(chunk, resource, nhs, f"gp/{person.pid}")
            chunk.patients += 1
            for kind, code, display, day, extra in self._facts(story, person, records):
                ident = {"system": record_system(practice.ods),
                         "value": f"{practice.ods}-{story.ids.next(f'gp/{practice.ods}'):08d}"}
                if kind == "Condition":
                    res: dict[str, Any] = {
                        "resourceType": "Condition", "identifier": [ident],
                        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
                        "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
                        "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item"}]}],
                        "code": snomed(code, display), "subject": {"reference": patient_url},
                        "onsetDateTime": iso(day), "recordedDate": iso(day)}
                else:
                    res = {"resourceType": "Observation", "identifier": [ident], "status": "final",
                           "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": extra.get(
                               "category", "social-history")}]}],
                           "code": extra.get("code") or snomed(code, display), "subject": {"reference": patient_url},
                           "effectiveDateTime": iso(day), "performer": [{"reference": org_url}]}
                    if "value" in extra:
                        res["valueQuantity"] = extra["value"]
                    story.truth.event(day, fam.fid, person.pid, "gp-" + extra.get("event", "observation"), "health",
                                      icb.ods, chunk.rel, ident["value"], code)
                self.bundles.add(chunk, res, ident, f"gp-record/{ident['value']}")

    def _records(self, story: Story) -> dict[str, list[tuple[str, dt.date]]]:
        """What social care told the practice about each child, with the date it was coded."""
        out: dict[str, list[tuple[str, dt.date]]] = {}
        for ep in story.timeline.episodes:
            for pid in ep.children:
                out.setdefault(pid, []).append(("cin-referral", ep.dates["referral"]))
                for start, _, _ in ep.dates["cp"]:
                    out[pid].append(("cp-plan-start", start))
        for period in story.timeline.lac:
            out.setdefault(period.pid, []).append(("looked-after-start", period.dates["start"]))
        return out

    def _facts(self, story: Story, person: Person, records: dict[str, list[tuple[str, dt.date]]]
               ) -> list[tuple[str, str, str, dt.date, dict[str, Any]]]:
        rng, cal, profile = story.rng, story.cal, story.profile
        facts: list[tuple[str, str, str, dt.date, dict[str, Any]]] = []
        if person.is_child:
            for code, display, p in CHILD_CONDITIONS:
                if rng.random() < p:
                    facts.append(("Condition", code, display, _onset(person, cal, rng), {}))
            if person.disability == "AUT":
                facts.append(("Condition", "408856003", "Autistic disorder", _onset(person, cal, rng), {}))
            if person.disability == "BEH" or rng.random() < 0.02:
                facts.append(("Condition", "406506008", "Attention deficit hyperactivity disorder",
                              _onset(person, cal, rng), {}))
            for what, day in records.get(person.pid, ()):
                coded = day + dt.timedelta(days=rng.randrange(3, 30))
                if coded <= cal.end and rng.random() < 0.8:  # practices are not always told, or do not code it
                    code, display = SAFEGUARDING_CODES[what]
                    facts.append(("Observation", code, display, coded, {"event": "safeguarding-code"}))
            age = story.age_on(person, cal.end)
            if age < 5:
                kg = round(3.4 + 2.4 * age + rng.gauss(0, 0.8), 1)
                day = cal.end - dt.timedelta(days=rng.randrange(0, 180))
                if day >= person.dob:
                    facts.append(("Observation", "27113001", "Body weight", day, {
                        "category": "vital-signs",
                        "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"},
                                            {"system": "http://snomed.info/sct", "code": "27113001",
                                             "display": "Body weight"}]},
                        "value": {"value": max(kg, 2.0), "unit": "kg", "system": "http://unitsofmeasure.org",
                                  "code": "kg"}, "event": "body-weight"}))
        elif person.role in PARENT_ROLES:
            main = person.role in ("mother", "father") or person.pid == profile.perpetrator
            for factor, (code, display) in ADULT_FACTOR_CONDITIONS.items():
                if factor in profile.factors and main and rng.random() < (0.75 if person.sex == "F" else 0.5):
                    facts.append(("Condition", code, display, _onset(person, cal, rng), {}))
            if rng.random() < 0.06:
                facts.append(("Condition", "197480006", "Anxiety disorder", _onset(person, cal, rng), {}))
        return facts


def _onset(person: Person, cal: Calendar, rng: random.Random) -> dt.date:
    earliest = max(person.dob + dt.timedelta(days=180), cal.start - dt.timedelta(days=3650))
    span = (cal.end - earliest).days
    return earliest + dt.timedelta(days=rng.randrange(max(1, span)))
