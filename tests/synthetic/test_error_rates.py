"""Injected errors happen at roughly the configured rates, and the files really carry them."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from synthetic import ErrorRates, SynthConfig, generate
from synthetic.config import DEFAULT_ERRORS
from synthetic.errors import has_variant, swap_day_month
from synthetic.names import NICKNAMES

from .conftest import Dataset, read_csv

RATES = ErrorRates(nickname=0.3, forename_variant=0.3, forename_typo=0.2, surname_typo=0.1, dob_swapped=0.3,
                   nhs_missing=0.5, nhs_typo=0.1, postcode_typo=0.2, duplicate=0.1)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("noisy") / "out"
    errors = dict(DEFAULT_ERRORS, police=RATES)
    generate(SynthConfig(families=2500, seed=5, errors=errors), root, progress=False)
    return root


def _csv(path: Path) -> list[dict[str, str]]:
    return read_csv(path)[1]


def _police_child_records(root: Path) -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    persons = {p["person_id"]: p for p in _csv(root / "ground_truth/persons.csv")}
    records = [r for r in _csv(root / "ground_truth/records.csv")
               if r["agency_kind"] == "police" and r["key_field"] == "child_person_id"
               and "duplicate-record" not in r["errors"]]
    return records, persons


def _rate(records: list[dict[str, str]], error: str, eligible) -> tuple[float, int]:
    pool = [r for r in records if eligible(r)]
    return sum(error in r["errors"].split(";") for r in pool) / len(pool), len(pool)


def test_rates_match_the_configuration(noisy: Path) -> None:
    records, persons = _police_child_records(noisy)
    assert len(records) > 300
    given = {pid: p["given_name"] for pid, p in persons.items()}
    start = SynthConfig().start_date

    def swappable(r: dict[str, str]) -> bool:
        dob = dt.date.fromisoformat(persons[r["person_id"]]["dob"])
        swapped = swap_day_month(dob)
        return swapped is not None and swapped <= max(dob, start)

    checks = {
        "nickname": (RATES.nickname, lambda r: given[r["person_id"]] in NICKNAMES),
        "forename-variant": (RATES.forename_variant, lambda r: has_variant(given[r["person_id"]])
                             and "nickname" not in r["errors"]),
        "forename-typo": (RATES.forename_typo, lambda r: True),
        "surname-typo": (RATES.surname_typo, lambda r: True),
        "dob-swapped": (RATES.dob_swapped, swappable),
        "nhs-missing": (RATES.nhs_missing, lambda r: True),
        "postcode-typo": (RATES.postcode_typo, lambda r: True),
    }
    for error, (configured, eligible) in checks.items():
        measured, n = _rate(records, error, eligible)
        tolerance = max(0.06, 3 * (configured * (1 - configured) / n) ** 0.5)
        assert abs(measured - configured) < tolerance, (error, measured, configured, n)
    all_police = [r for r in _csv(noisy / "ground_truth/records.csv") if r["agency_kind"] == "police"]
    duplicated = {r["duplicate_of"] for r in all_police if r["duplicate_of"]}
    firsts = [r for r in all_police if "duplicate-record" not in r["errors"]]
    # a duplicate only shows when the person appears again after the switch: at most the configured rate
    assert 0 < len(duplicated) / len(firsts) <= RATES.duplicate + 0.03


def test_the_files_carry_the_errors_the_ground_truth_records(noisy: Path) -> None:
    records, persons = _police_child_records(noisy)
    by_key = {(r["file"], r["key"]): r for r in records}
    seen = defaultdict(int)
    for path in sorted((noisy / "police").glob("*.csv")):
        rel = f"police/{path.name}"
        for row in _csv(path):
            r = by_key.get((rel, row["child_person_id"]))
            if r is None:
                continue  # a duplicate record
            truth = persons[r["person_id"]]
            errors = set(r["errors"].split(";"))
            if not errors & {"nickname", "forename-variant", "forename-typo"}:
                assert row["child_forename"] == truth["given_name"]
                seen["clean"] += 1
            elif errors == {"nickname"} | (errors - {"nickname", "forename-variant", "forename-typo"}):
                assert row["child_forename"] in NICKNAMES[truth["given_name"]]
                seen["nickname"] += 1
            if "nhs-missing" in errors:
                assert row["child_nhs_number"] == ""
            elif "nhs-typo" not in errors:
                assert row["child_nhs_number"] == truth["nhs_number"]
            if "dob-swapped" not in errors and "dob-typo" not in errors:
                day = row["child_dob"]
                iso = day if "-" in day else f"{day[6:]}-{day[3:5]}-{day[:2]}"
                assert iso == truth["dob"]
    assert seen["clean"] and seen["nickname"]


def test_a_third_of_police_children_lack_the_nhs_number_by_default(dataset: Dataset) -> None:
    """The brief's default: a third of non-health records lack the NHS number, where the format has one."""
    held: dict[str, bool] = {}
    for path in dataset.paths("police-notifications-csv"):
        for row in read_csv(path)[1]:
            held[row["child_person_id"]] = bool(row["child_nhs_number"])
    for path in dataset.paths("interventions-csv"):
        for row in read_csv(path)[1]:
            held["la/" + row["child_id"]] = bool(row["nhs_number"])
    missing = sum(not v for v in held.values()) / len(held)
    assert len(held) > 100
    assert abs(missing - 1 / 3) < 0.1, (missing, len(held))


def test_defaults_hold_a_spread_of_errors_in_every_agency(dataset: Dataset) -> None:
    by_agency: dict[str, set[str]] = defaultdict(set)
    for r in dataset.truth("records"):
        by_agency[r["agency_kind"]].update(e for e in r["errors"].split(";") if e)
    assert {"nickname", "forename-typo", "nhs-missing", "dob-swapped"} <= by_agency["police"]
    assert {"nickname", "surname-change"} <= by_agency["education"]
    assert "nhs-missing" not in by_agency["education"]  # the school census has no NHS number
    assert by_agency["local-authority"] and by_agency["health"]


def test_error_rates_can_be_switched_off(tmp_path: Path) -> None:
    clean = {kind: ErrorRates() for kind in DEFAULT_ERRORS}
    generate(replace(SynthConfig(families=60, seed=8), errors=clean), tmp_path / "clean", progress=False)
    assert all(r["errors"] == "" for r in _csv(tmp_path / "clean/ground_truth/records.csv"))
