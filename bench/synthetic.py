"""Deterministic synthetic FHIR R4 data for the benchmarks: never real personal data.

Every value comes from a seeded :class:`random.Random`, so the same seed gives byte-identical
resources on every machine. Identifiers are recognisably synthetic:

* NHS numbers are drawn from the 999 range that NHS England reserves for test data and carry a valid
  modulus 11 check digit (so servers that check the digit accept them);
* names are common UK given names and surnames combined at random; postcodes pair real outward codes
  with random inward codes, so an address never points at a real household;
* every Patient carries a ``meta.tag`` ``synthetic`` (a local example.org code system) so that the
  provenance of the data is explicit wherever it ends up.

Two shapes are produced from the same generator:

* :func:`transaction_bundles` — transaction Bundles of exactly ``bundle_size`` entries whose resources
  refer to each other by ``urn:uuid`` fullUrls (http.html#trules), for the HTTP ingest benchmark;
* :func:`resource_stream` — resources with concrete ids and ``Patient/<id>`` references, for loading
  through the repository directly (what the server stores after resolving the urn:uuids).

Run ``python -m bench.synthetic --count 3`` to print a sample bundle.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
SYNTHETIC_TAG = {"system": "https://example.org/fhir/CodeSystem/data-provenance", "code": "synthetic",
                 "display": "Synthetic test data"}

GIVEN_FEMALE = ["Olivia", "Amelia", "Isla", "Ava", "Ivy", "Freya", "Lily", "Florence", "Mia", "Willow",
                "Rosie", "Sophia", "Isabella", "Grace", "Daisy", "Sienna", "Poppy", "Elsie", "Emily", "Ella",
                "Evie", "Phoebe", "Sophie", "Ruby", "Harper", "Chloe", "Megan", "Niamh", "Aisha", "Zara"]
GIVEN_MALE = ["Noah", "Oliver", "George", "Arthur", "Muhammad", "Leo", "Harry", "Oscar", "Archie", "Henry",
              "Theodore", "Freddie", "Jack", "Charlie", "Theo", "Alfie", "Jacob", "Thomas", "Finley", "Arlo",
              "William", "Lucas", "Roman", "Tommy", "Isaac", "Teddy", "Alexander", "Rhys", "Callum", "Ewan"]
SURNAMES = ["Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "Johnson",
            "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes", "Green",
            "Hall", "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood", "Turner", "Martin", "Cooper",
            "Hill", "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker", "Harrison", "Morgan", "Allen",
            "James", "Scott", "Phillips", "Watson", "Davis", "Parker", "Price", "Bennett", "Young", "Griffiths",
            "Mitchell", "Kelly", "Cook", "Carter", "Richardson", "Bailey", "Collins", "Bell", "Shaw", "Murphy",
            "Khan", "Ahmed", "Ali", "Begum", "Hussain", "Singh", "Kaur", "O'Brien", "MacDonald", "Campbell"]
STREETS = ["High Street", "Station Road", "Church Lane", "Victoria Road", "Green Lane", "Manor Road",
           "Park Road", "Queens Road", "Mill Lane", "Kings Road", "New Road", "School Lane", "The Crescent",
           "Grange Road", "Springfield Road", "Richmond Road", "Albert Road", "Windsor Road", "York Road"]
# (town, district, real outward codes); inward codes are random, so no address is a real household.
TOWNS = [("Leeds", "West Yorkshire", ["LS1", "LS6", "LS8", "LS11", "LS17"]),
         ("Manchester", "Greater Manchester", ["M1", "M13", "M14", "M20", "M40"]),
         ("Birmingham", "West Midlands", ["B5", "B11", "B13", "B29", "B44"]),
         ("Bristol", "Bristol", ["BS1", "BS3", "BS5", "BS7", "BS16"]),
         ("Sheffield", "South Yorkshire", ["S1", "S2", "S6", "S10", "S11"]),
         ("Newcastle upon Tyne", "Tyne and Wear", ["NE1", "NE2", "NE4", "NE6"]),
         ("Nottingham", "Nottinghamshire", ["NG1", "NG3", "NG5", "NG7"]),
         ("Norwich", "Norfolk", ["NR1", "NR2", "NR3", "NR5"]),
         ("Cardiff", "Cardiff", ["CF10", "CF11", "CF14", "CF24"]),
         ("Exeter", "Devon", ["EX1", "EX2", "EX4"])]
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # the letters UK inward codes use (no C I K M O V)

# (LOINC code, display, UCUM unit, low, high, decimals) — vital signs and growth measurements.
VITALS = [
    ("29463-7", "Body weight", "kg", 3.0, 95.0, 1),
    ("8302-2", "Body height", "cm", 50.0, 190.0, 1),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 13.0, 35.0, 1),
    ("8867-4", "Heart rate", "/min", 55, 150, 0),
    ("9279-1", "Respiratory rate", "/min", 12, 40, 0),
    ("8310-5", "Body temperature", "Cel", 35.5, 39.5, 1),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 92, 100, 0),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 85, 150, 0),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 45, 95, 0),
    ("9843-4", "Head Occipital-frontal circumference", "cm", 33.0, 58.0, 1),
]
# SNOMED CT concepts a children's safeguarding record commonly carries.
CONDITIONS = [
    ("195967001", "Asthma"), ("24079001", "Atopic dermatitis"), ("35489007", "Depressive disorder"),
    ("197480006", "Anxiety disorder"), ("406506008", "Attention deficit hyperactivity disorder"),
    ("35919005", "Pervasive developmental disorder"), ("248290002", "Developmental delay"),
    ("238131007", "Overweight"), ("65363002", "Otitis media"), ("125605004", "Fracture of bone"),
    ("283680004", "Burn of skin"), ("444814009", "Viral sinusitis"),
]
FLAGS = [
    ("225915006", "Child protection plan"), ("395073005", "Looked after child"),
    ("713511007", "At risk of neglect"), ("160932005", "Family history of domestic violence"),
]
ENCOUNTER_CLASSES = [("AMB", "ambulatory"), ("EMER", "emergency"), ("IMP", "inpatient encounter"),
                     ("HH", "home health")]
ENCOUNTER_TYPES = [("185349003", "Encounter for check up"), ("50849002", "Emergency room admission"),
                   ("390906007", "Follow-up encounter"), ("439740005", "Postoperative follow-up visit")]

EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


def nhs_check_digit(nine_digits: str) -> int | None:
    """Modulus 11 check digit of an NHS number's first nine digits (weights 10..2); None if 10,
    which no valid NHS number can have."""
    total = sum(int(d) * w for d, w in zip(nine_digits, range(10, 1, -1)))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def is_valid_nhs_number(value: str) -> bool:
    if len(value) != 10 or not value.isdigit():
        return False
    return nhs_check_digit(value[:9]) == int(value[9])


@dataclass
class Options:
    """How many of each resource one patient's record holds (on average)."""

    observations_per_patient: int = 6
    flag_probability: float = 0.3


class SyntheticFhir:
    """A seeded source of patient records. Each record is a list of resources, Patient first,
    Encounter second, then resources that refer only to those two (so a record can be cut short
    from the end without leaving a dangling reference)."""

    def __init__(self, seed: int = 42, options: Options | None = None) -> None:
        self.rng = random.Random(seed)
        self.options = options or Options()

    # -- primitives ---------------------------------------------------------------------------

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def nhs_number(self) -> str:
        """999 + six digits + check digit: a valid-looking number from the reserved test range."""
        while True:
            nine = "999" + f"{self.rng.randrange(10_000_000):07d}"[:6]
            check = nhs_check_digit(nine)
            if check is not None:
                return nine + str(check)

    def postcode(self) -> tuple[str, str, str]:
        town, district, outwards = self.rng.choice(TOWNS)
        inward = f"{self.rng.randrange(10)}{self.rng.choice(INWARD_LETTERS)}{self.rng.choice(INWARD_LETTERS)}"
        return town, district, f"{self.rng.choice(outwards)} {inward}"

    def instant(self, *, days_back: int = 730) -> str:
        moment = EPOCH - timedelta(seconds=self.rng.randrange(days_back * 86_400))
        return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")

    # -- resources ----------------------------------------------------------------------------

    def patient(self) -> dict[str, Any]:
        rng = self.rng
        gender = rng.choice(["female", "male"])
        given = rng.choice(GIVEN_FEMALE if gender == "female" else GIVEN_MALE)
        middle = rng.choice(GIVEN_FEMALE if gender == "female" else GIVEN_MALE)
        family = rng.choice(SURNAMES)
        # Mostly children (safeguarding), some adults (parents and carers).
        age_days = rng.randrange(0, 18 * 365) if rng.random() < 0.8 else rng.randrange(18 * 365, 60 * 365)
        birth = date(2024, 1, 1) - timedelta(days=age_days)
        town, district, postcode = self.postcode()
        return {
            "resourceType": "Patient",
            "meta": {"tag": [SYNTHETIC_TAG]},
            "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": self.nhs_number()}],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given, middle]}],
            "telecom": [{"system": "phone", "value": f"07700 900{rng.randrange(1000):03d}", "use": "mobile"}],
            "gender": gender,
            "birthDate": birth.isoformat(),
            "address": [{"use": "home", "line": [f"{rng.randrange(1, 200)} {rng.choice(STREETS)}"],
                         "city": town, "district": district, "postalCode": postcode, "country": "GB"}],
        }

    def encounter(self, patient_ref: str) -> dict[str, Any]:
        rng = self.rng
        cls_code, cls_display = rng.choice(ENCOUNTER_CLASSES)
        type_code, type_display = rng.choice(ENCOUNTER_TYPES)
        start = self.instant()
        return {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls_code,
                      "display": cls_display},
            "type": [{"coding": [{"system": SNOMED, "code": type_code, "display": type_display}]}],
            "subject": {"reference": patient_ref},
            "period": {"start": start, "end": start},
        }

    def observation(self, patient_ref: str, encounter_ref: str | None) -> dict[str, Any]:
        rng = self.rng
        code, display, unit, low, high, decimals = rng.choice(VITALS)
        value = round(rng.uniform(low, high), decimals) if decimals else rng.randint(int(low), int(high))
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs", "display": "Vital Signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "subject": {"reference": patient_ref},
            "effectiveDateTime": self.instant(),
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        }
        if encounter_ref:
            obs["encounter"] = {"reference": encounter_ref}
        return obs

    def condition(self, patient_ref: str, encounter_ref: str | None) -> dict[str, Any]:
        code, display = self.rng.choice(CONDITIONS)
        cond: dict[str, Any] = {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
            "subject": {"reference": patient_ref},
            "onsetDateTime": self.instant(days_back=3650),
            "recordedDate": self.instant(),
        }
        if encounter_ref:
            cond["encounter"] = {"reference": encounter_ref}
        return cond

    def flag(self, patient_ref: str) -> dict[str, Any]:
        code, display = self.rng.choice(FLAGS)
        return {
            "resourceType": "Flag",
            "status": "active",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                      "code": "safety", "display": "Safety"}]}],
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
            "subject": {"reference": patient_ref},
            "period": {"start": self.instant()},
        }

    # -- records ------------------------------------------------------------------------------

    def record(self, ref_of: Any) -> list[tuple[str, dict[str, Any]]]:
        """One patient's resources as (key, resource) pairs; ``ref_of(key, type)`` makes the
        reference string another resource uses to point at ``key``."""
        patient_key, encounter_key = self.uuid(), self.uuid()
        patient = self.patient()
        p_ref = ref_of(patient_key, "Patient")
        e_ref = ref_of(encounter_key, "Encounter")
        out = [(patient_key, patient), (encounter_key, self.encounter(p_ref))]
        n_obs = max(1, int(self.rng.gauss(self.options.observations_per_patient, 2)))
        out += [(self.uuid(), self.observation(p_ref, e_ref)) for _ in range(n_obs)]
        out.append((self.uuid(), self.condition(p_ref, e_ref)))
        if self.rng.random() < self.options.flag_probability:
            out.append((self.uuid(), self.flag(p_ref)))
        return out


def transaction_bundles(total: int, bundle_size: int = 1000, seed: int = 42,
                        options: Options | None = None) -> Iterator[dict[str, Any]]:
    """Transaction Bundles holding ``total`` resources, ``bundle_size`` per Bundle (the last may be
    smaller). Entries are ``POST <type>`` with ``urn:uuid`` fullUrls that other entries reference."""
    gen = SyntheticFhir(seed, options)
    remaining = total
    while remaining > 0:
        size = min(bundle_size, remaining)
        entries: list[dict[str, Any]] = []
        while len(entries) < size:
            for key, res in gen.record(lambda k, _t: f"urn:uuid:{k}")[: size - len(entries)]:
                entries.append({"fullUrl": f"urn:uuid:{key}", "resource": res,
                                "request": {"method": "POST", "url": res["resourceType"]}})
        remaining -= size
        yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def resource_stream(total: int, seed: int = 42, options: Options | None = None) -> Iterator[dict[str, Any]]:
    """``total`` resources with ids set and literal ``Type/id`` references, Patient before the
    resources that refer to it (the shape the server stores once a transaction resolved its urn:uuids)."""
    gen = SyntheticFhir(seed, options)
    produced = 0
    while produced < total:
        for key, res in gen.record(lambda k, t: f"{t}/{k}"):
            if produced >= total:
                return
            res["id"] = key
            produced += 1
            yield res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20, help="resources in the sample (default 20)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--stream", action="store_true", help="print resources with ids, not a Bundle")
    args = parser.parse_args(argv)
    if args.stream:
        for res in resource_stream(args.count, args.seed):
            print(json.dumps(res))
    else:
        json.dump(next(transaction_bundles(args.count, args.count, args.seed)), sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
