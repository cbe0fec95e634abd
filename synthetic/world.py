"""The organisations of the synthetic area: local authorities, police forces, NHS trusts, GP
practices, schools and intervention providers.

Local authority (DfE LEA), police force (Home Office) and NHS trust / ICB (ODS) codes are public
reference codes for real organisations, so files look like the ones a partnership receives; the
postcodes within them, schools and GP practices are made up (well-formed, not looked up). Schools and
practices scale with the number of families so that a school has a few hundred pupils.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

SCHOOL_PLACES = ("Oakfield Ashgrove Brookside Hillcrest Meadowbank Fairfield Riverside Westbrook Highfield Elmwood "
                 "Thornbury Greenacres Springfield Woodlands Beechwood Parkside Northgate Southfield Lakeside "
                 "Moorside Hollybank Kingsmead Queensbury Redhill Stonebridge Willowdale Foxhill Larkrise Millbrook "
                 "Heathfield Birchfield Cedarwood Ashfield Brambleside Clayhill Deanfield Eastfield Fernhill "
                 "Glebelands Hawthorn").split()
SAINTS = "Aidan Anne Bede Chad Columba Edmund Francis Hilda Joseph Mary Michael Patrick Peter Teresa Wilfrid".split()


@dataclass(frozen=True)
class School:
    urn: str  # DfE unique reference number, six digits
    establishment: int  # DfE establishment number (2xxx primary, 4xxx secondary), used in UPNs
    name: str
    phase: str  # primary | secondary
    la_code: str


@dataclass(frozen=True)
class Practice:
    ods: str
    name: str
    la_code: str
    icb: str  # the ICB whose GP system export carries this practice
    in_extract: bool  # practices on the system that sends FHIR bundles


@dataclass
class LocalAuthority:
    code: str
    name: str
    force: str
    trust: str
    icb: str
    districts: tuple[str, ...]
    weight: float
    child_id_style: str  # how this LA's case-management system prints a child id
    gender_element: str  # "GenderCurrent" or "Sex" in its CIN census file
    primaries: list[School] = field(default_factory=list)
    secondaries: list[School] = field(default_factory=list)
    practices: list[Practice] = field(default_factory=list)

    def child_id(self, n: int) -> str:
        return self.child_id_style.format(n=n)


@dataclass(frozen=True)
class Force:
    code: str
    name: str
    reference_prefix: str
    nominal_prefix: str
    file_format: str  # csv | json
    uk_dates: bool  # writes dates of birth DD/MM/YYYY


@dataclass(frozen=True)
class Trust:
    ods: str
    name: str
    hospital_number_style: str
    uk_dates: bool


@dataclass(frozen=True)
class Icb:
    ods: str
    name: str


@dataclass(frozen=True)
class Provider:
    key: str
    name: str


LOCAL_AUTHORITIES: tuple[tuple, ...] = (
    # code, name, force, trust, icb, postcode districts, weight, child id style, gender element
    ("330", "Birmingham", "20", "RRK", "QHL",
     tuple(f"B{n}" for n in (5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17, 20, 21, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                              32, 33, 34, 35, 36, 42, 44)), 0.24, "{n:07d}", "Sex"),
    ("333", "Sandwell", "20", "RXK", "QUA", tuple(f"B{n}" for n in (64, 65, 66, 67, 68, 69, 70, 71)), 0.07,
     "SAN{n:06d}", "GenderCurrent"),
    ("335", "Walsall", "20", "RXK", "QUA", tuple(f"WS{n}" for n in (1, 2, 3, 4, 5, 8, 9)), 0.06,
     "W{n:06d}", "GenderCurrent"),
    ("352", "Manchester", "06", "R0A", "QOP",
     tuple(f"M{n}" for n in (4, 8, 9, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22, 23, 40)), 0.17, "{n:06d}", "Sex"),
    ("355", "Salford", "06", "RM3", "QOP", tuple(f"M{n}" for n in (5, 6, 7, 27, 28, 30, 38, 44)), 0.06,
     "SC{n:06d}", "GenderCurrent"),
    ("353", "Oldham", "06", "RM3", "QOP", tuple(f"OL{n}" for n in (1, 2, 4, 8, 9)), 0.06, "OLD{n:05d}",
     "GenderCurrent"),
    ("383", "Leeds", "13", "RR8", "QWO", tuple(f"LS{n}" for n in (6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 25, 27,
                                                                     28)), 0.16, "{n:06d}", "Sex"),
    ("380", "Bradford", "13", "RAE", "QWO", tuple(f"BD{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 18)), 0.11,
     "BFD-{n:06d}", "GenderCurrent"),
    ("926", "Norfolk", "36", "RM1", "QMM", tuple(f"NR{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 17, 18, 19, 20,
                                                                      30, 31, 32, 33)), 0.07, "NF{n:07d}", "Sex"),
)
FORCES = {f.code: f for f in (
    Force("20", "West Midlands Police", "20WM", "WMP", "csv", False),
    Force("06", "Greater Manchester Police", "06GM", "GMP", "csv", True),
    Force("13", "West Yorkshire Police", "13WY", "WYP", "csv", False),
    Force("36", "Norfolk Constabulary", "36NC", "NOR", "json", False),
)}
TRUSTS = {t.ods: t for t in (
    Trust("RRK", "University Hospitals Birmingham NHS Foundation Trust", "RRK{n:07d}", False),
    Trust("RXK", "Sandwell and West Birmingham Hospitals NHS Trust", "K{n:07d}", True),
    Trust("R0A", "Manchester University NHS Foundation Trust", "M{n:08d}", False),
    Trust("RM3", "Northern Care Alliance NHS Foundation Trust", "S{n:07d}", True),
    Trust("RR8", "Leeds Teaching Hospitals NHS Trust", "L{n:07d}", False),
    Trust("RAE", "Bradford Teaching Hospitals NHS Foundation Trust", "BD{n:07d}", True),
    Trust("RM1", "Norfolk and Norwich University Hospitals NHS Foundation Trust", "N{n:07d}", False),
)}
ICBS = {i.ods: i for i in (
    Icb("QHL", "NHS Birmingham and Solihull ICB"), Icb("QUA", "NHS Black Country ICB"),
    Icb("QOP", "NHS Greater Manchester ICB"), Icb("QWO", "NHS West Yorkshire ICB"),
    Icb("QMM", "NHS Norfolk and Waveney ICB"),
)}
PROVIDERS = {
    "early-help": "Early Help Family Hub", "family-support": "Family Support Service",
    "parenting-programme": "Parenting Together Programme", "substance-misuse-service": "Brightpath Recovery Service",
    "domestic-abuse-service": "Safe Haven Domestic Abuse Service", "mentoring": "Step Up Youth Mentoring",
    "school-attendance-support": "Attendance and Inclusion Team",
    "family-group-conference": "Family Group Conference Service",
}
PUPILS_PER_PRIMARY = 300
PUPILS_PER_SECONDARY = 1000
PATIENTS_PER_PRACTICE = 3000  # children and parents of our families per practice


class World:
    """All organisations, built deterministically from the number of families (not the seed), so
    that two datasets of the same size share their schools and practices."""

    def __init__(self, families: int, *, gp_extract_share: float = 0.35) -> None:
        rng = random.Random(f"world/{families}")
        self.las: dict[str, LocalAuthority] = {}
        used_urns: set[int] = set()
        used_practices: set[str] = set()
        total_weight = sum(row[6] for row in LOCAL_AUTHORITIES)
        for code, name, force, trust, icb, districts, weight, style, gender in LOCAL_AUTHORITIES:
            la = LocalAuthority(code, name, force, trust, icb, districts, weight / total_weight, style, gender)
            fams = max(1.0, families * la.weight)
            # ~2 children per family, 7 primary and 5 secondary year groups out of 18 ages
            n_primary = max(3, round(fams * 2 * 7 / 18 / PUPILS_PER_PRIMARY))
            n_secondary = max(2, round(fams * 2 * 5 / 18 / PUPILS_PER_SECONDARY))
            places = rng.sample(SCHOOL_PLACES, len(SCHOOL_PLACES))
            for i in range(n_primary):
                place = places[i % len(places)]
                suffix = "" if i < len(places) else f" {1 + i // len(places)}"
                kind = rng.choice(("Primary School", "Primary School", "Primary Academy", "Junior and Infant School"))
                school_name = (f"St {rng.choice(SAINTS)}'s Catholic Primary School{suffix}" if rng.random() < 0.15
                               else f"{place} {kind}{suffix}")
                la.primaries.append(School(_urn(rng, used_urns), 2000 + i, school_name, "primary", code))
            for i in range(n_secondary):
                place = places[-1 - (i % len(places))]
                kind = rng.choice(("Academy", "High School", "School", "Community College"))
                la.secondaries.append(School(_urn(rng, used_urns), 4000 + i, f"{place} {kind}", "secondary", code))
            n_practices = max(2, round(fams * 3.5 / PATIENTS_PER_PRACTICE))
            prefix = rng.choice("BCDMNPY")
            for i in range(n_practices):
                ods = f"{prefix}{rng.randrange(80, 90)}{rng.randrange(1000):03d}"
                while ods in used_practices:
                    ods = f"{prefix}{rng.randrange(80, 90)}{rng.randrange(1000):03d}"
                used_practices.add(ods)
                kind = rng.choice(("Medical Centre", "Surgery", "Health Centre", "Family Practice"))
                la.practices.append(Practice(ods, f"{rng.choice(SCHOOL_PLACES)} {kind}", code, icb,
                                             rng.random() < gp_extract_share))
            self.las[code] = la
        self.la_codes = tuple(self.las)
        self.la_weights = tuple(self.las[c].weight for c in self.la_codes)

    def la(self, code: str) -> LocalAuthority:
        return self.las[code]

    def force_for(self, la_code: str) -> Force:
        return FORCES[self.las[la_code].force]

    def trust_for(self, la_code: str) -> Trust:
        return TRUSTS[self.las[la_code].trust]

    def force_for_code(self, code: str) -> Force:
        return FORCES[code]

    def trust(self, ods: str) -> Trust:
        return TRUSTS[ods]

    def neighbour_trust(self, la_code: str, rng: random.Random) -> Trust:
        """Another trust in the same police force area (children are taken to the nearest A&E)."""
        force = self.las[la_code].force
        others = sorted({la.trust for la in self.las.values() if la.force == force} - {self.las[la_code].trust})
        return TRUSTS[rng.choice(others)] if others else self.trust_for(la_code)


def _urn(rng: random.Random, used: set[int]) -> str:
    while True:
        urn = rng.randrange(100_000, 150_000)
        if urn not in used:
            used.add(urn)
            return f"{urn:06d}"
