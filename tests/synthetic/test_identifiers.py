"""Identifiers are well-formed: NHS numbers pass modulus 11 (and come from the test range), UPNs carry
the DfE check letter, postcodes have a valid outward and inward code."""
from __future__ import annotations

import datetime as dt
import random
import re

from mappings.systems import nhs_number_is_valid
from synthetic.errors import swap_day_month, transpose_digits, typo, typo_postcode
from synthetic.identifiers import NhsNumbers, Upns, postcode, upn_check_letter, upn_is_valid
from synthetic.world import World

POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][ABD-HJLNP-UW-Z]{2}$")


def test_nhs_numbers_are_valid_unique_and_from_the_test_range() -> None:
    numbers = NhsNumbers(seed=3)
    allocated = [numbers.allocate() for _ in range(20_000)]
    assert len(set(allocated)) == len(allocated)
    assert all(n.startswith("999") and nhs_number_is_valid(n) for n in allocated)
    # scattered, not sequential: linkage must not be able to lean on neighbouring numbers
    assert sorted(allocated) != allocated


def test_a_transposed_nhs_number_usually_fails_the_check() -> None:
    rng = random.Random(1)
    numbers = NhsNumbers(seed=1)
    broken = [transpose_digits(numbers.allocate(), rng) for _ in range(2_000)]
    assert sum(not nhs_number_is_valid(n) for n in broken) / len(broken) > 0.85


def _dfe_check_letter(upn_body: str) -> str:
    """The DfE algorithm as its guidance states it: digits 2–13 weighted 2–13, sum mod 23, letter
    from A–Z without I, O and S."""
    letters = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in "IOS"]
    return letters[sum(int(d) * w for d, w in zip(upn_body, range(2, 14))) % 23]


def test_upns_carry_the_dfe_check_letter_and_are_unique() -> None:
    upns = Upns()
    made = [upns.allocate("330", 2000 + i % 7, 2015 + i % 9) for i in range(5_000)]
    assert len(set(made)) == len(made)
    for upn in made:
        assert len(upn) == 13 and upn[0] not in "IOS"
        assert upn[0] == _dfe_check_letter(upn[1:]) == upn_check_letter(upn[1:])
        assert upn_is_valid(upn)
        assert upn[1:4] == "330"


def test_a_mistyped_upn_digit_is_always_caught() -> None:
    upn = Upns().allocate("383", 2004, 2019)
    for i in range(1, 13):
        for d in "0123456789":
            if d != upn[i]:
                assert not upn_is_valid(upn[:i] + d + upn[i + 1:])


def test_upn_serials_overflow_into_the_next_establishment_number() -> None:
    upns = Upns()
    made = [upns.allocate("926", 2001, 2020) for _ in range(1_500)]
    assert len(set(made)) == 1_500
    assert {u[4:8] for u in made} == {"2001", "2002"}


def test_postcodes_are_well_formed_and_in_the_la_districts() -> None:
    world = World(1_000)
    rng = random.Random(2)
    for la in world.las.values():
        for _ in range(200):
            code = postcode(rng, la.districts)
            assert POSTCODE.match(code), code
            assert code.split(" ")[0] in la.districts
            assert POSTCODE.match(typo_postcode(code))


def test_world_codes_have_the_national_shapes() -> None:
    world = World(5_000)
    urns = [s.urn for la in world.las.values() for s in la.primaries + la.secondaries]
    assert len(set(urns)) == len(urns) and all(re.fullmatch(r"\d{6}", u) for u in urns)
    assert all(re.fullmatch(r"\d{3}", code) for code in world.las)
    practices = [p.ods for la in world.las.values() for p in la.practices]
    assert len(set(practices)) == len(practices) and all(re.fullmatch(r"[A-Z]\d{5}", p) for p in practices)


def test_day_month_swaps_only_make_real_dates() -> None:
    assert swap_day_month(dt.date(2015, 3, 7)) == dt.date(2015, 7, 3)
    assert swap_day_month(dt.date(2015, 3, 13)) is None  # no 13th month
    assert swap_day_month(dt.date(2015, 4, 4)) is None  # nothing changes


def test_typos_change_a_name_but_keep_it_a_name() -> None:
    rng = random.Random(5)
    for name in ("Elizabeth", "Mohammed", "Li", "Oluwaseun", "O'Brien", "Smith-Khan"):
        for _ in range(50):
            wrong = typo(name, rng)
            assert wrong != name and wrong.strip("-' ")
