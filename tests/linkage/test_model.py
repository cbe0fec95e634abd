"""Fellegi–Sunter model: EM on a toy set, weights, grades and the wrong-merge guards."""
from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import pytest

from linkage import household
from linkage.model import (BY_NAME, CERTAIN, CERTAINLY_NOT, COMPARISONS, PROBABLE, Model, expectation_maximisation,
                           score_pair, train)
from linkage.record import PersonRecord

NHS = "https://fhir.nhs.uk/Id/nhs-number"
LA330 = "https://w3id.org/sg-fhir/Id/la-child-id/330"


def person(rid: str, given: str = "Amara", family: str = "Okafor", dob: str = "2015-03-04", *,
           gender: str = "female", postcode: str | None = "M40 6WP", nhs: str | None = None,
           ids: tuple[tuple[str, str], ...] = ()) -> PersonRecord:
    return PersonRecord(id=rid, given=(given,) if given else (), family=family, birth_date=dt.date.fromisoformat(dob),
                        gender=gender, postcodes=(postcode,) if postcode else (), nhs=nhs, nhs_valid=bool(nhs),
                        identifiers=frozenset(ids))


def test_em_recovers_m_on_a_toy_mixture():
    """Vectors drawn from a known two-class mixture: EM with u fixed converges to the true m and λ."""
    rng = random.Random(5)
    active = ["forename", "surname", "dob"]
    true_m = {"forename": {"exact": 0.85, "different": 0.15}, "surname": {"exact": 0.9, "different": 0.1},
              "dob": {"exact": 0.95, "different": 0.05}}
    u = {c.name: {lvl: (0.02 if lvl == "exact" else 0.98 if lvl == "different" else 1e-6) for lvl in c.levels}
         for c in COMPARISONS}
    for name in u:  # normalise the toy u over each comparison's levels
        total = sum(u[name].values())
        u[name] = {k: v / total for k, v in u[name].items()}
    vectors: Counter = Counter()
    for _ in range(20_000):
        match = rng.random() < 0.3
        vector = []
        for comp in COMPARISONS:
            if comp.name not in active:
                vector.append(None)
                continue
            p_exact = true_m[comp.name]["exact"] if match else u[comp.name]["exact"]
            vector.append("exact" if rng.random() < p_exact else "different")
        vectors[tuple(vector)] += 1
    result = expectation_maximisation(vectors, u, active=active)
    assert result.converged and result.iterations < 100
    assert result.lam == pytest.approx(0.3, abs=0.02)
    for name in active:
        assert result.m[name]["exact"] == pytest.approx(true_m[name]["exact"], abs=0.03)


def _model() -> Model:
    return Model.load()


def test_shipped_model_is_sane():
    model = _model()
    for comp in COMPARISONS:
        assert set(model.m[comp.name]) == set(comp.levels) == set(model.u[comp.name])
        assert sum(model.m[comp.name].values()) == pytest.approx(1.0, abs=1e-6)
    assert model.weight("nhs", "exact") > 8 > model.weight("forename", "exact") > 0 > model.weight("forename", "different")
    assert BY_NAME["dob"].levels[0] == "exact"


def test_same_name_and_birthday_at_different_addresses_stay_apart():
    """Issue 5's wrong-merge guard: two children, same name and date of birth, different addresses,
    no shared identifier — never certain, whatever the name frequencies."""
    model = _model().for_population(500_000)
    a = person("a", postcode="M40 6WP")
    b = person("b", postcode="B8 5BA")
    s = score_pair(model, a, b, tf=lambda field, value: 1e-7)  # the rarest names there are
    assert s.grade != CERTAIN
    assert "corroborates" in s.reason or s.grade != PROBABLE


def test_twins_are_not_linked():
    model = _model().for_population(100_000)
    s = score_pair(model, person("a", "Amara"), person("b", "Chidi", gender="male"))
    assert s.grade not in (CERTAIN, PROBABLE)
    s = score_pair(model, person("a", "Amara"), person("b", "Adaeze"))
    assert s.grade != CERTAIN
    # names one replaced letter apart are two real names, not a keying slip (compare.keying_slips)
    s = score_pair(model, person("a", "Ava"), person("b", "Eva"))
    assert s.grade != CERTAIN


def test_a_swapped_letter_in_a_short_forename_is_a_typo_sent_to_review():
    """Zeo ~ Zoe reads close (a keying slip), which lifts the pair to review; it is not made certain
    (a slip also makes Amy of May: twins' names), and a shared identifier still links it."""
    model = _model().for_population(100_000)
    s = score_pair(model, person("a", "Zoe", "Jones"), person("b", "Zeo", "Jones"))
    assert dict(zip((c.name for c in COMPARISONS), s.vector))["forename"] == "close"
    assert s.forename_slip and s.grade == PROBABLE and "corroborates" in s.reason
    s = score_pair(model, person("a", "Zoe", "Jones", nhs="9434765919"), person("b", "Zeo", "Jones", nhs="9434765919"))
    assert s.grade == CERTAIN


TWINS = [  # (first, second, first's sex, second's sex): real names one keying slip or one letter apart
    ("Amy", "May", "female", "female"),
    ("Kai", "Kia", "male", "female"),
    ("Amelia", "May", "female", "female"),  # May → Amy, a nickname of Amelia
    ("Daniel", "Daniela", "male", "female"),  # Jaro–Winkler close, the sexes apart
    ("Nina", "Inna", "female", "female"),
    ("Lisa", "Ilsa", "female", "female"),
]


@pytest.mark.parametrize(("first", "second", "first_sex", "second_sex"), TWINS)
def test_twins_one_slip_apart_at_one_address_are_never_certain(first, second, first_sex, second_sex):
    """The wrong-merge guard for twins: same address, surname and birth date, no shared identifier,
    forenames a keying slip (or, for a boy and a girl, a letter) apart — never certain, however rare
    the surname, and not a moved pair the household rule could promote."""
    model = _model().for_population(500_000)
    a = person("a", first, "Postlethwaite", gender=first_sex)
    b = person("b", second, "Postlethwaite", gender=second_sex)
    for tf in (None, lambda field, value: 1e-7):
        s = score_pair(model, a, b, tf=tf)
        assert s.grade != CERTAIN, s.explain()
        assert score_pair(model, b, a, tf=tf).grade != CERTAIN
    moved = person("c", second, "Postlethwaite", gender=second_sex, postcode="B8 5BA")
    assert not household.moved_pair(model, score_pair(model, a, moved, tf=lambda field, value: 1e-7))


def test_close_forenames_still_link_when_the_sexes_agree_or_one_is_unrecorded():
    """The sex rule blocks only male against female: Jayden ~ Jaydon (Jaro–Winkler close, no slip)
    is certain at one address with the same sex or with one sex missing; an exact name with the sexes
    apart (a keying error in the sex) is certain too."""
    model = _model().for_population(100_000)
    a = person("a", "Jayden", "Jones", gender="male")
    for gender in ("male", None):
        s = score_pair(model, a, person("b", "Jaydon", "Jones", gender=gender))
        assert not s.forename_slip and s.grade == CERTAIN, s.explain()
    assert score_pair(model, a, person("b", "Jaydon", "Jones", gender="female")).grade != CERTAIN
    assert score_pair(model, a, person("b", "Jayden", "Jones", gender="female")).grade == CERTAIN


def test_certainly_not():
    model = _model()
    s = score_pair(model, person("a", nhs="9434765919"), person("b", nhs="9434765870"))
    assert s.grade == CERTAINLY_NOT and s.probability == 0.0
    s = score_pair(model, person("a", ids=((LA330, "0001"),)), person("b", ids=((LA330, "0002"),)))
    assert s.grade == CERTAINLY_NOT
    # a mistyped (invalid) NHS number is not a conflict
    s = score_pair(model, person("a", nhs="9434765919"), person("b", nhs="9434769519").__class__(
        **{**person("b").__dict__, "nhs": "9434769519", "nhs_valid": False}))
    assert s.grade == CERTAIN


def test_errors_agencies_make_still_match():
    model = _model().for_population(100_000)
    base = person("a", "Elizabeth", "Wiśniewska", "2015-03-04", nhs="9434765919")
    nickname_swapped_date = person("b", "Liz", "Wisniewska", "2015-04-03", postcode="M40 6WP")
    assert score_pair(model, base, nickname_swapped_date).grade == CERTAIN
    moved_with_nhs = person("c", "Beth", "Wisniewska", "2015-03-05", postcode="B8 5BA", nhs="9434765919")
    assert score_pair(model, base, moved_with_nhs).grade == CERTAIN


def test_train_on_records_estimates_a_prior():
    rng = random.Random(3)
    records = []
    for i in range(300):
        dob = dt.date(2010, 1, 1) + dt.timedelta(days=rng.randrange(3000))
        given, family = rng.choice(["Amara", "Oliver", "Ava", "Leo"]), rng.choice(["Smith", "Okafor", "Khan", "Nowak"])
        postcode = f"M{rng.randrange(1, 40)} {rng.randrange(10)}AB"
        for copy in range(2):
            records.append(person(f"{i}-{copy}", given, family, dob.isoformat(), postcode=postcode,
                                  nhs=None if copy else None))
    model = train(records, u_pairs=20_000)
    assert 0.5 < model.matches_per_record < 2.0
    assert model.m["dob"]["exact"] > 0.9 and model.m["forename"]["exact"] > 0.9


def test_siblings_with_the_same_name_at_one_address_are_not_certain():
    """Two children of one household given the same name (born a year or more apart): name and
    address agree, the birth date does not — never linked without a shared identifier."""
    model = _model().for_population(100_000)
    s = score_pair(model, person("a", "Ishaan", "Nair", "2013-08-23"), person("b", "Ishaan", "Nair", "2014-10-11"),
                   tf=lambda field, value: 1e-5)
    assert s.grade != CERTAIN
