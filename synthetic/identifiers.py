"""Identifiers every agency mints: NHS numbers, UPNs, local ids, postcodes — synthetic but well-formed.

Allocators are sequential (the generator processes families in order), so identifiers are unique and
the same seed gives the same identifiers. NHS numbers come from the range NHS England reserves for
testing (999 000 0000 – 999 999 9999), so no synthetic number can be a real person's.
"""
from __future__ import annotations

import random

NHS_TEST_PREFIX = "999"
_NHS_BASES = 1_000_000  # six free digits after the prefix, then the check digit
_NHS_STEP = 387_433  # coprime with 10**6: walks every base once, in a scattered order

UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"  # DfE check letters: no I, O or S
POSTCODE_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # Royal Mail: inward letters never C I K M O V


class IdentifierExhausted(RuntimeError):
    """More people than a synthetic identifier range can hold."""


def nhs_check_digit(nine: str) -> int | None:
    """Modulus-11 check digit of the first nine digits (NHS Data Dictionary); None when it would be 10."""
    total = sum(int(d) * (10 - i) for i, d in enumerate(nine))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


class NhsNumbers:
    """Valid NHS numbers from the test range, each once, in a scattered order (about 909,000 of them)."""

    def __init__(self, seed: int) -> None:
        self._next = 0
        self._offset = random.Random(f"nhs/{seed}").randrange(_NHS_BASES)

    def allocate(self) -> str:
        while self._next < _NHS_BASES:
            base = (self._offset + self._next * _NHS_STEP) % _NHS_BASES
            self._next += 1
            nine = f"{NHS_TEST_PREFIX}{base:06d}"
            check = nhs_check_digit(nine)
            if check is not None:
                return f"{nine}{check}"
        raise IdentifierExhausted("the NHS test number range (999xxxxxxx) is used up: generate fewer families")


def upn_check_letter(twelve: str) -> str:
    """DfE UPN check letter for characters 2–13: sum of each digit times its position (2–13), mod 23."""
    total = sum(int(ch) * pos for pos, ch in enumerate(twelve, start=2))
    return UPN_LETTERS[total % 23]


def upn_is_valid(upn: str) -> bool:
    return (len(upn) == 13 and upn[1:].isdigit() and upn[0] == upn_check_letter(upn[1:]))


class Upns:
    """UPNs: check letter, LA code, DfE establishment number, two-digit year of allocation, serial.

    A serial runs 001–999 per school and year; when a large school uses them up, the next free
    establishment number is borrowed so that the UPN stays unique.
    """

    def __init__(self) -> None:
        self._serials: dict[tuple[str, int, int], int] = {}

    def allocate(self, la_code: str, establishment: int, year: int) -> str:
        yy = year % 100
        for estab in range(establishment, establishment + 10_000):
            key = (la_code, estab % 10_000, yy)
            serial = self._serials.get(key, 0) + 1
            if serial <= 999:
                self._serials[key] = serial
                twelve = f"{la_code}{estab % 10_000:04d}{yy:02d}{serial:03d}"
                return upn_check_letter(twelve) + twelve
        raise IdentifierExhausted(f"no UPN left for LA {la_code} in {year}")


class Counter:
    """Sequential numbers per key (an LA's child ids, a force's references, a trust's patients)."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    def next(self, key: str) -> int:
        value = self._values.get(key, 0) + 1
        self._values[key] = value
        return value


def postcode(rng: random.Random, districts: tuple[str, ...]) -> str:
    """A well-formed postcode in one of ``districts``: outward code, space, digit and two letters."""
    return f"{rng.choice(districts)} {rng.randrange(10)}{rng.choice(POSTCODE_INWARD_LETTERS)}" \
           f"{rng.choice(POSTCODE_INWARD_LETTERS)}"


def partial_postcode(full: str) -> str:
    """SSDA903 HOME_POST/PL_POST: the outward code and the first character of the inward code."""
    outward, inward = full.split(" ")
    return f"{outward} {inward[0]}"
