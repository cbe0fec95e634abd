"""The ground truth accounts for every agency record and agrees with the files and with itself."""
from __future__ import annotations

import json
from collections import defaultdict

from lxml import etree

from synthetic.calendar import Calendar
from synthetic.config import SynthConfig
from synthetic.interventions import CATALOGUE, ZERO_EFFECT

from .conftest import FAMILIES, SEED, Dataset, read_csv


def _keys_in_files(dataset: Dataset) -> set[tuple[str, str]]:
    """(file, person key) for every person record in every agency file, read from the files."""
    keys: set[tuple[str, str]] = set()
    for path in dataset.paths("cin-census-xml"):
        rel = str(path.relative_to(dataset.root))
        for child in etree.parse(str(path)).getroot().iterfind("Children/Child"):
            keys.add((rel, child.findtext("ChildIdentifiers/LAchildID")))
    for entry in dataset.entries("ssda903-csv"):
        for rel in entry["paths"]:
            for row in read_csv(dataset.root / rel)[1]:
                keys.add((entry["paths"][0], row["CHILD"]))  # recorded against the Header table
    for path in dataset.paths("police-notifications-csv"):
        rel = str(path.relative_to(dataset.root))
        for row in read_csv(path)[1]:
            keys.add((rel, row["child_person_id"]))
            if row["adult_person_id"]:
                keys.add((rel, row["adult_person_id"]))
    for path in dataset.paths("police-notifications-json"):
        rel = str(path.relative_to(dataset.root))
        for item in json.loads(path.read_text()):
            keys.add((rel, item["child"]["person_id"]))
            keys.update((rel, a["person_id"]) for a in item["adults"])
    for fmt, column in (("school-census-csv", "upn"), ("ed-attendances-csv", "hospital_number"),
                        ("interventions-csv", "child_id")):
        for path in dataset.paths(fmt):
            rel = str(path.relative_to(dataset.root))
            keys.update((rel, row[column]) for row in read_csv(path)[1])
    for path in dataset.paths("fhir-bundle"):
        rel = str(path.relative_to(dataset.root))
        for entry in json.loads(path.read_text())["entry"]:
            if entry["resource"]["resourceType"] == "Patient":
                keys.add((rel, entry["resource"]["identifier"][0]["value"]))
    return keys


def test_every_agency_record_is_in_the_ground_truth_and_nothing_else(dataset: Dataset) -> None:
    in_files = _keys_in_files(dataset)
    records = dataset.truth("records")
    in_truth = {(r["file"], r["key"]) for r in records}
    assert in_files == in_truth
    # one key is one person within a file (a duplicate record is a second key, never a shared one)
    people = defaultdict(set)
    for r in records:
        people[(r["file"], r["key"])].add(r["person_id"])
    assert all(len(p) == 1 for p in people.values())


def test_records_point_at_real_people_of_their_family(dataset: Dataset) -> None:
    persons = {p["person_id"]: p for p in dataset.truth("persons")}
    for r in dataset.truth("records"):
        assert persons[r["person_id"]]["family_id"] == r["family_id"]
        if r["duplicate_of"]:
            assert "duplicate-record" in r["errors"]


def test_households_and_people_are_consistent(dataset: Dataset) -> None:
    households = dataset.truth("households")
    persons = dataset.truth("persons")
    assert len(households) == FAMILIES
    by_family = defaultdict(list)
    for p in persons:
        by_family[p["family_id"]].append(p)
    roles = set()
    for h in households:
        members = by_family[h["family_id"]]
        assert sum(p["role"] == "child" for p in members) == int(h["children"]) >= 1
        roles.update(p["role"] for p in members)
        if h["perpetrator_id"]:
            assert "domestic-abuse" in h["risk_factors"]
            assert any(p["person_id"] == h["perpetrator_id"] for p in members)
    assert {"child", "mother", "father", "stepfather", "grandmother"} <= roles
    assert len({p["nhs_number"] for p in persons}) == len(persons)
    upns = [p["upn"] for p in persons if p["upn"]]
    assert len(set(upns)) == len(upns)


def test_events_are_dated_within_the_period_and_name_their_records(dataset: Dataset) -> None:
    cal = Calendar(SynthConfig().start_date, SynthConfig().months)
    events = dataset.truth("events")
    kinds = {e["event"] for e in events}
    assert {"persistent-absence", "police-domestic-abuse", "ed-attendance", "cin-referral", "cp-plan-start",
            "intervention-start"} <= kinds
    for e in events:
        assert cal.start.isoformat() <= e["date"] <= cal.end.isoformat(), e
        if e["event"].startswith(("police-", "ed-", "intervention-")):
            assert e["file"] and e["ref"]
    police_refs = {row["police_reference"] for p in dataset.paths("police-notifications-csv")
                   for row in read_csv(p)[1]}
    assert police_refs <= {e["ref"] for e in events if e["event"].startswith("police-")}


def test_interventions_in_the_la_files_match_the_ground_truth(dataset: Dataset) -> None:
    rows = {row["episode_id"]: row for p in dataset.paths("interventions-csv") for row in read_csv(p)[1]}
    truth = dataset.truth("interventions")
    expected = {}
    for i in truth:
        if i["accepted"] == "1" and i["start_date"]:
            for pair in filter(None, i["episode_keys"].split(";")):
                expected[pair.split("=")[1]] = i
    assert set(rows) == set(expected)
    for key, row in rows.items():
        assert row["start_date"] == expected[key]["start_date"]
        assert row["end_date"] == expected[key]["end_date"]
    assert all(i["accepted"] in "01" for i in truth) and any(i["accepted"] == "0" for i in truth)


def test_true_effects_are_published_and_mentoring_does_nothing(dataset: Dataset) -> None:
    effects = json.loads((dataset.root / "ground_truth/effects.json").read_text())
    assert effects["zero_effect"] == ZERO_EFFECT == "mentoring"
    assert effects["interventions"]["mentoring"]["effect_per_month"] == 0
    assert set(effects["interventions"]) == set(CATALOGUE)
    for i in dataset.truth("interventions"):
        if i["type"] == ZERO_EFFECT:
            assert float(i["total_effect"]) == 0


def test_counterfactual_risk_is_never_below_the_factual(dataset: Dataset) -> None:
    """Effects only lower risk, and the counterfactual run shares every random number."""
    header, rows = read_csv(dataset.root / "ground_truth/risk.csv")
    factual = {r["family_id"]: r for r in rows if r["world"] == "factual"}
    counterfactual = {r["family_id"]: r for r in rows if r["world"] == "counterfactual"}
    assert counterfactual
    months = [h for h in header if h.startswith("m")]
    lowered = 0
    for fid, cf in counterfactual.items():
        diffs = [float(cf[m]) - float(factual[fid][m]) for m in months]
        assert min(diffs) >= -0.0011  # rounding to 3 decimals
        lowered += diffs[-1] > 0.01
    assert lowered > len(counterfactual) / 2
    treated = {i["family_id"] for i in dataset.truth("interventions") if i["accepted"] == "1"}
    assert set(counterfactual) == treated


def test_outcomes_cover_every_child_once(dataset: Dataset) -> None:
    outcomes = dataset.truth("outcomes")
    ids = [o["person_id"] for o in outcomes]
    assert len(ids) == len(set(ids))
    children = {p["person_id"] for p in dataset.truth("persons") if p["role"] == "child"}
    assert set(ids) <= children
    referred = {e["person_id"] for e in dataset.truth("events") if e["event"] == "cin-referral"}
    assert {o["person_id"] for o in outcomes if int(o["referrals"]) > 0} == referred
    assert sum(int(o["cp_plan"]) for o in outcomes) > 0
    untreated = [o for o in outcomes if o["treated"] == "0" and o["family_id"] not in
                 {i["family_id"] for i in dataset.truth("interventions") if i["accepted"] == "1"}]
    assert all(o["cp_plan"] == o["cf_cp_plan"] and o["end_risk"] == o["cf_end_risk"] for o in untreated)
    assert SEED  # the dataset fixture's seed, for anyone reproducing a failure
