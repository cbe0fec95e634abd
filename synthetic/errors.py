"""Each agency's own record of a person, with the mistakes that agency makes.

A :class:`View` is drawn once per (agency, person) and reused on every row, as a real system keeps one
record per person: a nickname typed into the police nominal record stays on every notification.
``View.errors`` names what was changed, for the ground truth and for checking the rates.
"""
from __future__ import annotations

import datetime as dt
import random
import unicodedata
from dataclasses import dataclass

from linkage.compare import swapped as swap_day_month

from . import names
from .config import ErrorRates
from .households import Family, Person

VOWELS = "aeiou"


@dataclass
class View:
    key: str  # the agency's local id for this person ("" where the agency keys on a national id)
    forename: str
    surname: str
    dob: dt.date
    sex: str
    nhs: str  # "" when the agency does not hold it
    stale_postcode: bool
    postcode_typo: bool
    errors: tuple[str, ...]
    duplicate_of: str = ""  # the person's other local id, when this is a duplicate record
    switch_month: int | None = None  # for a person with two records: month the second starts being used
    second: "View | None" = None

    def at(self, month: int) -> "View":
        if self.second is not None and self.switch_month is not None and month >= self.switch_month:
            return self.second
        return self

    def postcode(self, family: Family, month: int) -> str:
        code = (family.previous_address(month) if self.stale_postcode else family.address_at(month)).postcode
        return typo_postcode(code) if self.postcode_typo else code


def strip_accents(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)) \
        .replace("ł", "l").replace("Ł", "L")


def has_variant(name: str) -> bool:
    return name in names.VARIANTS or strip_accents(name) != name


def typo(name: str, rng: random.Random) -> str:
    """One keying error: a letter dropped, doubled, two swapped, or a vowel replaced."""
    if len(name) < 3:
        return name + name[-1]
    for _ in range(6):
        i = rng.randrange(1, len(name))
        kind = rng.randrange(4)
        if kind == 0:
            out = name[:i] + name[i + 1:]
        elif kind == 1:
            out = name[:i] + name[i] + name[i:]
        elif kind == 2 and i < len(name) - 1:
            out = name[:i] + name[i + 1] + name[i] + name[i + 2:]
        else:
            ch = name[i]
            if ch.lower() not in VOWELS:
                continue
            out = name[:i] + rng.choice([v for v in VOWELS if v != ch.lower()]) + name[i + 1:]
        if out != name and out.strip("-' "):
            return out
    return name[:-1] if len(name) > 3 else name + "e"


def typo_postcode(code: str) -> str:
    """A mistyped inward digit: still a well-formed postcode, but the wrong one."""
    outward, inward = code.split(" ")
    return f"{outward} {(int(inward[0]) + 1) % 10}{inward[1:]}"


def transpose_digits(nhs: str, rng: random.Random) -> str:
    for _ in range(10):
        i = rng.randrange(0, 9)
        if nhs[i] != nhs[i + 1]:
            return nhs[:i] + nhs[i + 1] + nhs[i] + nhs[i + 2:]
    return nhs


def make_view(person: Person, family: Family, rates: ErrorRates, rng: random.Random, key: str, *,
              holds_nhs: bool, period_start: dt.date) -> View:
    """The agency's record of ``person``: the true details with this agency's errors applied.

    A wrong date of birth is never later than both the true one and the start of the period, so it
    cannot fall after anything the agency records about the person (an attendance, an episode)."""
    errors: list[str] = []
    forename = person.given
    if forename in names.NICKNAMES and rng.random() < rates.nickname:
        forename = rng.choice(names.NICKNAMES[forename])
        errors.append("nickname")
    elif has_variant(forename) and rng.random() < rates.forename_variant:
        forename = rng.choice(names.VARIANTS[forename]) if forename in names.VARIANTS else strip_accents(forename)
        errors.append("forename-variant")
    if rng.random() < rates.forename_typo:
        forename = typo(forename, rng)
        errors.append("forename-typo")

    surname = person.surname
    if rng.random() < rates.surname_change:
        changed = _other_surname(person, family, rng)
        if changed and changed != surname:
            surname = changed
            errors.append("surname-change")
    elif surname in names.VARIANTS and rng.random() < rates.forename_variant:
        surname = rng.choice(names.VARIANTS[surname])
        errors.append("surname-variant")
    if rng.random() < rates.surname_typo:
        surname = typo(surname, rng)
        errors.append("surname-typo")

    dob = person.dob
    latest = max(person.dob, period_start)
    if rng.random() < rates.dob_swapped:
        swapped = swap_day_month(dob)
        if swapped is not None and swapped <= latest:
            dob = swapped
            errors.append("dob-swapped")
    elif rng.random() < rates.dob_typo:
        wrong = _dob_typo(dob, rng)
        if wrong <= latest:
            dob = wrong
            errors.append("dob-typo")

    nhs = ""
    if holds_nhs:
        if rng.random() < rates.nhs_missing:
            errors.append("nhs-missing")
        else:
            nhs = person.nhs
            if rng.random() < rates.nhs_typo:
                nhs = transpose_digits(nhs, rng)
                errors.append("nhs-typo")
    stale = len(family.addresses) > 1 and rng.random() < rates.postcode_stale
    if stale:
        errors.append("postcode-stale")
    pc_typo = rng.random() < rates.postcode_typo
    if pc_typo:
        errors.append("postcode-typo")
    return View(key, forename, surname, dob, person.sex, nhs, stale, pc_typo, tuple(errors))


def _other_surname(person: Person, family: Family, rng: random.Random) -> str | None:
    if "-" in person.surname:  # a double-barrelled name cut to one half
        return rng.choice(person.surname.split("-"))
    if not person.is_child:
        partner = next((a for a in family.adults if a is not person and a.role in
                        ("father", "mother", "stepfather", "stepmother", "mothers-partner", "fathers-partner")
                        and a.surname != person.surname), None)
        return partner.surname if partner else None
    others = [a.surname for a in family.adults if a.surname != person.surname and a.role in
              ("mother", "father", "stepfather", "mothers-partner")]
    if not others:
        return None
    other = rng.choice(others)
    return f"{person.surname}-{other}" if rng.random() < 0.4 else other


def _dob_typo(dob: dt.date, rng: random.Random) -> dt.date:
    if rng.random() < 0.5:
        return dob.replace(year=dob.year + rng.choice((-1, 1))) if not (dob.month == 2 and dob.day == 29) \
            else dob + dt.timedelta(days=1)
    return dob + dt.timedelta(days=rng.choice((-1, 1)))
