"""Households: who lives with whom, their names, dates of birth, identifiers and addresses over time.

Months are indices into the simulated period (0 = the month of the start date). A person is in the
household from ``joined`` (inclusive) to ``left`` (exclusive); children born during the period join
in their birth month. A non-resident birth father (``resident=False``) still exists: he can appear
in police notifications as an ex-partner.
"""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from . import names
from .config import SynthConfig, add_months
from .identifiers import NhsNumbers, Upns, postcode
from .world import LocalAuthority, Practice, School, World

HOUSEHOLD_TYPES = (("couple", 0.46), ("lone-mother", 0.24), ("mother-stepfather", 0.13), ("lone-father", 0.03),
                   ("father-stepmother", 0.03), ("multigenerational", 0.08), ("kinship", 0.03))
CHILD_COUNTS = ((1, 0.35), (2, 0.37), (3, 0.17), (4, 0.08), (5, 0.03))
DISABILITIES = (("NONE", 0.93), ("LD", 0.015), ("AUT", 0.015), ("COMM", 0.01), ("BEH", 0.01), ("HEAR", 0.004),
                ("VIS", 0.003), ("MOB", 0.003))


@dataclass
class Person:
    pid: str
    role: str  # child, mother, father, stepfather, mothers-partner, stepmother, grandmother, grandfather
    sex: str  # M | F
    given: str
    middle: str
    surname: str
    dob: dt.date
    heritage: str
    ethnicity: str
    nhs: str
    joined: int = 0
    left: int | None = None
    resident: bool = True
    birth_month: int = 0  # month index of birth (negative: before the period)
    # children only
    upn: str = ""
    disability: str = "NONE"
    teen_risk: float = 0.0  # adolescent propensity to go missing, be arrested or exploited
    attendance_base: float = 0.95
    sixth_form: bool = False
    own_postcode: str = ""  # where a non-resident parent or partner lives
    schools: dict[str, dict[str, School]] = field(default_factory=dict)  # LA code -> phase -> school

    @property
    def is_child(self) -> bool:
        return self.role == "child"

    def age(self, month: int) -> int:
        return (month - self.birth_month) // 12

    def present(self, month: int) -> bool:
        return self.resident and self.joined <= month and (self.left is None or month < self.left)


@dataclass
class Address:
    postcode: str
    la_code: str
    from_month: int


@dataclass
class Family:
    fid: str
    index: int
    kind: str
    people: list[Person]
    addresses: list[Address]
    practice: Practice
    partner_joins: int | None = None  # month a new partner moved in (he is the DA perpetrator, if any)
    parent_leaves: int | None = None

    @property
    def children(self) -> list[Person]:
        return [p for p in self.people if p.is_child]

    @property
    def adults(self) -> list[Person]:
        return [p for p in self.people if not p.is_child]

    def address_at(self, month: int) -> Address:
        current = self.addresses[0]
        for a in self.addresses[1:]:
            if a.from_month <= month:
                current = a
        return current

    def previous_address(self, month: int) -> Address:
        """The address before the latest move on or before ``month`` (or the first one)."""
        prev = current = self.addresses[0]
        for a in self.addresses[1:]:
            if a.from_month <= month:
                prev, current = current, a
        return prev

    def la_at(self, month: int) -> str:
        return self.address_at(month).la_code

    def children_at(self, month: int, *, max_age: int = 17) -> list[Person]:
        return [c for c in self.children if c.present(month) and 0 <= c.age(month) <= max_age]

    def carers_at(self, month: int) -> list[Person]:
        return [a for a in self.adults if a.present(month)]


def _pick(rng: random.Random, table: tuple[tuple[Any, float], ...]) -> Any:
    u, acc = rng.random(), 0.0
    for value, p in table:
        acc += p
        if u < acc:
            return value
    return table[-1][0]


def birth_month_index(dob: dt.date, start: dt.date) -> int:
    return (dob.year - start.year) * 12 + dob.month - start.month


def _dob(rng: random.Random, start: dt.date, age_months: int) -> dt.date:
    """A date of birth making someone ``age_months`` old (to the month) at the start date."""
    first = add_months(start.replace(day=1), -age_months)
    return first + dt.timedelta(days=rng.randrange(28))


class HouseholdBuilder:
    """Builds family number ``index``; identifiers come from shared, sequential allocators."""

    def __init__(self, cfg: SynthConfig, world: World, nhs: NhsNumbers, upns: Upns) -> None:
        self.cfg, self.world, self.nhs, self.upns = cfg, world, nhs, upns
        self._heritages = tuple((h.key, h.share) for h in names.HERITAGES)
        total = sum(s for _, s in self._heritages)
        self._heritages = tuple((k, s / total) for k, s in self._heritages)

    def build(self, index: int, rng: random.Random) -> Family:
        cfg = self.cfg
        fid = f"F{index:07d}"
        la_code = rng.choices(self.world.la_codes, self.world.la_weights)[0]
        kind = _pick(rng, HOUSEHOLD_TYPES)
        mother_h = _pick(rng, self._heritages)
        father_h = mother_h if rng.random() < 0.85 else _pick(rng, self._heritages)
        people: list[Person] = []
        seq = iter(range(1, 100))

        def person(role: str, sex: str, heritage: str, dob: dt.date, surname: str, **kw) -> Person:
            h = names.BY_KEY[heritage]
            pool = h.male if sex == "M" else h.female
            given = rng.choice(pool)
            middle = rng.choice(pool) if rng.random() < 0.55 else ""
            if middle == given:
                middle = ""
            p = Person(f"{fid}-P{next(seq):02d}", role, sex, given, middle, surname, dob, heritage,
                       names.BY_KEY[heritage].ethnicity, self.nhs.allocate(),
                       birth_month=birth_month_index(dob, cfg.start_date), **kw)
            people.append(p)
            return p

        # children's ages (months at the start date); a negative age is a birth during the period
        n_children = _pick(rng, CHILD_COUNTS)
        ages = [rng.randrange(0, 18 * 12)]
        for _ in range(n_children - 1):
            nxt = ages[-1] - rng.randrange(12, 60)
            if nxt < -cfg.months + 1:
                break
            ages.append(nxt)
        oldest = ages[0]
        mother_age = oldest + rng.randrange(17 * 12, 38 * 12)
        father_age = max(oldest + 17 * 12, mother_age + int(rng.gauss(30, 48)))
        mother_surname = rng.choice(names.BY_KEY[mother_h].surnames)
        father_surname = rng.choice(names.BY_KEY[father_h].surnames)
        mother_dob = _dob(rng, cfg.start_date, mother_age)
        father_dob = _dob(rng, cfg.start_date, father_age)

        mother = father = None
        if kind in ("couple", "lone-mother", "mother-stepfather", "multigenerational", "kinship"):
            mother = person("mother", "F", mother_h, mother_dob, father_surname if kind == "couple"
                            and rng.random() < 0.6 else mother_surname)
        if kind in ("couple", "lone-father", "father-stepmother", "multigenerational", "kinship") or rng.random() < 0.7:
            father = person("father", "M", father_h, father_dob, father_surname)
            if kind in ("lone-mother", "mother-stepfather"):
                father.resident = False
        if kind == "multigenerational" and father is not None and rng.random() < 0.4:
            father.resident = False  # mother and children living with her parents
        if kind == "kinship":
            for p in (mother, father):
                if p is not None:
                    p.resident = False

        step_surname = None
        if kind == "mother-stepfather":
            sh = mother_h if rng.random() < 0.8 else _pick(rng, self._heritages)
            step_surname = rng.choice(names.BY_KEY[sh].surnames)
            person("stepfather", "M", sh, _dob(rng, cfg.start_date, mother_age + int(rng.gauss(24, 48))),
                   step_surname)
        if kind == "father-stepmother":
            sh = father_h if rng.random() < 0.8 else _pick(rng, self._heritages)
            person("stepmother", "F", sh, _dob(rng, cfg.start_date, father_age - int(abs(rng.gauss(24, 48)))),
                   rng.choice(names.BY_KEY[sh].surnames))
        if kind in ("multigenerational", "kinship"):
            gage = mother_age + rng.randrange(20 * 12, 32 * 12)
            person("grandmother", "F", mother_h, _dob(rng, cfg.start_date, gage), mother_surname)
            if rng.random() < (0.5 if kind == "multigenerational" else 0.7):
                person("grandfather", "M", mother_h, _dob(rng, cfg.start_date, gage + rng.randrange(0, 72)),
                       mother_surname)

        # children: the younger ones of a stepfamily are the stepfather's
        hyphenated = rng.random() < 0.07
        for i, age in enumerate(ages):
            sex = "M" if rng.random() < 0.512 else "F"
            half = step_surname is not None and i >= max(1, len(ages) // 2) and rng.random() < 0.7
            if half:
                surname = step_surname
            elif hyphenated and father_surname != mother_surname:
                surname = f"{mother_surname}-{father_surname}"
            elif kind in ("lone-mother", "mother-stepfather") and rng.random() < 0.35:
                surname = mother_surname
            else:
                surname = father_surname
            heritage = mother_h if rng.random() < 0.5 else father_h
            dob = _dob(rng, cfg.start_date, age)
            child = person("child", sex, heritage, dob, surname,
                           disability=_pick(rng, DISABILITIES), teen_risk=rng.gauss(0, 1),
                           attendance_base=min(0.995, max(0.86, rng.gauss(0.962, 0.022))),
                           sixth_form=rng.random() < 0.45)
            child.ethnicity = names.child_ethnicity(mother_h, father_h) if rng.random() < 0.9 else \
                names.BY_KEY[heritage].ethnicity
            if age < 0:
                child.joined = child.birth_month

        # addresses and moves (a quarter of moves cross into another local authority)
        addresses = [Address(postcode(rng, self.world.la(la_code).districts), la_code, 0)]
        moves = 2 if rng.random() < 0.03 else 1 if rng.random() < 0.12 else 0
        if cfg.months > 2:
            for m in sorted(rng.sample(range(1, cfg.months), min(moves, cfg.months - 1))):
                new_la = addresses[-1].la_code
                if rng.random() < 0.25:
                    new_la = rng.choices(self.world.la_codes, self.world.la_weights)[0]
                addresses.append(Address(postcode(rng, self.world.la(new_la).districts), new_la, m))

        for p in people:
            if not p.resident:
                p.own_postcode = postcode(rng, self.world.la(la_code).districts)
        # schools and practices come from their own stream: how many there are depends on the run's
        # size, and the people and their risks must not
        places = random.Random(f"{cfg.seed}/places/{index}")
        practice = places.choice(self.world.la(la_code).practices)
        family = Family(fid, index, kind, people, addresses, practice)
        self._schools_and_upns(family, places)
        return family

    def _schools_and_upns(self, family: Family, rng: random.Random) -> None:
        """Each child's schools in every LA the family lives in; a UPN for every child who is of
        school age at some point of the period, allocated by the first school in their reception year."""
        las = list(dict.fromkeys(a.la_code for a in family.addresses))
        end_month = self.cfg.months - 1
        for child in family.children:
            for code in las:
                la: LocalAuthority = self.world.la(code)
                child.schools[code] = {"primary": rng.choice(la.primaries), "secondary": rng.choice(la.secondaries)}
            reception_year = child.dob.year + 4 + (1 if child.dob.month >= 9 else 0)
            # in school by the end of the period: 4 on the 31 August before the last month
            last = add_months(self.cfg.start_date, end_month)
            if reception_year > last.year - (1 if last.month < 9 else 0):
                continue
            first_la = family.addresses[0].la_code
            school = child.schools[first_la]["primary"]
            child.upn = self.upns.allocate(first_la, school.establishment, reception_year)

    def add_partner(self, family: Family, month: int, rng: random.Random, *, resident: bool = True) -> Person:
        """A new partner of the mother (or father) moves in at ``month`` (or visits, if not resident)."""
        mother = next((p for p in family.adults if p.role == "mother" and p.resident), None)
        role, sex = ("mothers-partner", "M") if mother is not None else ("fathers-partner", "F")
        anchor = mother or next(p for p in family.adults if p.resident)
        heritage = anchor.heritage if rng.random() < 0.8 else _pick(rng, self._heritages)
        h = names.BY_KEY[heritage]
        given = rng.choice(h.male if sex == "M" else h.female)
        age_months = (month - anchor.birth_month) + int(rng.gauss(12, 60))
        dob = _dob(rng, self.cfg.start_date, max(18 * 12, age_months) - month)
        partner = Person(f"{family.fid}-P{len(family.people) + 1:02d}", role, sex, given, "", rng.choice(h.surnames),
                         dob, heritage, h.ethnicity, self.nhs.allocate(), joined=month, resident=resident,
                         birth_month=birth_month_index(dob, self.cfg.start_date))
        if not resident:
            partner.own_postcode = postcode(rng, self.world.la(family.address_at(month).la_code).districts)
        family.people.append(partner)
        if resident:
            family.partner_joins = month
        return partner
