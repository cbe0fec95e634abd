"""A full return that corrects a record's start date (its key) retires the record made from the old
date: one current episode, the old one entered-in-error in its history, a Provenance saying so.

Through $import-agency-data over HTTP into the real database (SQLite and PostgreSQL). The fixtures
are the synthetic CIN census and SSDA903 files of test_cin_census.py and test_ssda903.py, with a
date changed.
"""
from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest

from mappings.snapshot import Snapshot, Span, stale
from mappings.ssda903.to_fhir import collection_year

from ..functional.test_crud import body

FIXTURES = Path(__file__).parent / "fixtures"
BASE = "https://w3id.org/sg-fhir"
CIN_EPISODE = f"{BASE}/Id/202/cin-episode"
CIN_FACTOR = f"{BASE}/Id/202/cin-assessment-factor"
LA_EPISODE = f"{BASE}/Id/201/ssda903-episode"
CURRENT = "status:not=entered-in-error"


def _cin(lea: str = "202", referral: str = "2022-06-01", assessment: str = "2022-06-02") -> bytes:
    xml = (FIXTURES / "cin" / "la202_2023.xml").read_text(encoding="utf-8")
    xml = xml.replace("<LEA>202</LEA>", f"<LEA>{lea}</LEA>")
    xml = xml.replace("<CINreferralDate>2022-06-01<", f"<CINreferralDate>{referral}<")
    xml = xml.replace("<AssessmentActualStartDate>2022-06-02<", f"<AssessmentActualStartDate>{assessment}<")
    return xml.encode()


def _post_cin(client, data: bytes, name: str = "cin.xml"):
    res = client.post(f"/fhir/$import-agency-data?format=cin-census-xml&filename={name}", data=data,
                      content_type="application/xml")
    assert res.status_code == 200, res.data
    return body(res)


def _search(client, query: str) -> list[dict]:
    bundle = body(client.get(f"/fhir/{query}"))
    return [e["resource"] for e in bundle.get("entry", [])]


def _headline(outcome: dict) -> str:
    return outcome["issue"][0]["diagnostics"]


def test_a_corrected_cin_referral_date_leaves_one_current_episode(client):
    _post_cin(client, _cin(), "cin_2023.xml")
    (old,) = _search(client, f"EpisodeOfCare?identifier={CIN_EPISODE}|C001/2022-06-01")
    outcome = _post_cin(client, _cin(referral="2022-05-30"), "cin_2023_corrected.xml")
    assert "1 retired" in _headline(outcome)
    patient = old["patient"]["reference"]

    current = _search(client, f"EpisodeOfCare?patient={patient}&{CURRENT}&identifier={CIN_EPISODE}|")
    assert [e["period"]["start"] for e in current] == ["2022-05-30"]

    history = body(client.get(f"/fhir/EpisodeOfCare/{old['id']}/_history"))["entry"]
    assert [h["resource"]["status"] for h in history] == ["entered-in-error", "active"]
    assert any(old["id"] in i.get("expression", [""])[0] for i in outcome["issue"][1:])

    provenance = _search(client, f"Provenance?target=EpisodeOfCare/{old['id']}")
    nullify = [p for p in provenance if p["activity"]["coding"][0]["code"] == "NULLIFY"]
    assert len(nullify) == 1
    assert {"reference": f"EpisodeOfCare/{old['id']}/_history/2"} in nullify[0]["target"]
    assert nullify[0]["entity"][0]["what"]["display"] == "cin_2023_corrected.xml"


def test_factors_of_a_corrected_assessment_are_retired_and_the_rest_is_untouched(client):
    _post_cin(client, _cin(), "a.xml")
    factors_before = _search(client, f"Observation?identifier={CIN_FACTOR}|&_count=100")
    others = _search(client, "EpisodeOfCare?_count=100")
    outcome = _post_cin(client, _cin(assessment="2022-06-03"), "b.xml")
    assert "3 retired" in _headline(outcome)  # the three factors of the one assessment
    factors = _search(client, f"Observation?identifier={CIN_FACTOR}|&{CURRENT}&_count=100")
    assert len(factors) == len(factors_before)
    assert all("/2022-06-03/" in f["identifier"][0]["value"] for f in factors if "C001" in f["identifier"][0]["value"])
    # episodes, plans and the other child keep their versions
    assert [(e["id"], e["meta"]["versionId"]) for e in _search(client, "EpisodeOfCare?_count=100")] == \
        [(e["id"], e["meta"]["versionId"]) for e in others]


def test_the_same_corrected_file_again_changes_nothing(client):
    _post_cin(client, _cin(), "a.xml")
    _post_cin(client, _cin(referral="2022-05-30"), "b.xml")
    provenances = body(client.get("/fhir/Provenance?_summary=count"))["total"]
    again = _post_cin(client, _cin(referral="2022-05-30"), "b.xml")
    assert ": 0 created, 0 updated" in _headline(again) and "0 retired" in _headline(again)
    assert body(client.get("/fhir/Provenance?_summary=count"))["total"] == provenances


def test_another_agencys_episode_with_the_same_child_id_is_never_touched(client):
    _post_cin(client, _cin(lea="203"), "la203.xml")
    _post_cin(client, _cin(), "a.xml")
    _post_cin(client, _cin(referral="2022-05-30"), "b.xml")
    (theirs,) = _search(client, f"EpisodeOfCare?identifier={BASE}/Id/203/cin-episode|C001/2022-06-01")
    assert theirs["status"] == "active" and theirs["meta"]["versionId"] == "1"


def test_a_file_rejected_for_errors_retires_nothing(client):
    _post_cin(client, _cin(), "a.xml")
    bad = _cin(referral="2022-05-30").replace(b"<PersonBirthDate>2012-04-17", b"<PersonBirthDate>2012-13-45")
    res = client.post("/fhir/$import-agency-data?format=cin-census-xml", data=bad, content_type="application/xml")
    assert res.status_code == 422
    assert not _search(client, "EpisodeOfCare?status=entered-in-error")


def _ssda903(client, episodes: bytes, name: str = "201_episodes.csv"):
    files = [(n, (FIXTURES / "ssda903" / n).read_bytes()) for n in ("201_header.csv", "201_missing.csv")]
    files.append((name, episodes))
    data = {"file": [(io.BytesIO(content), n) for n, content in files]}
    res = client.post("/fhir/$import-agency-data?format=ssda903-csv", data=data, content_type="multipart/form-data")
    assert res.status_code == 200, res.data
    return body(res)


def test_a_corrected_ssda903_start_date_retires_the_old_episode_and_keeps_history(client):
    episodes = (FIXTURES / "ssda903" / "201_episodes.csv").read_bytes()
    _ssda903(client, episodes)
    (old,) = _search(client, f"EpisodeOfCare?identifier={LA_EPISODE}|C1002/2021-01-10")
    outcome = _ssda903(client, episodes.replace(b"C1002,10/01/2021", b"C1002,11/01/2021"))
    assert "1 retired" in _headline(outcome)
    current = _search(client, f"EpisodeOfCare?patient={old['patient']['reference']}&{CURRENT}")
    assert [e["period"]["start"] for e in current] == ["2021-01-11"]
    assert _search(client, f"EpisodeOfCare/{old['id']}/_history")[0]["status"] == "entered-in-error"
    # C1001's two episodes, one ending the day the next began, are both current and unchanged
    c1001 = _search(client, f"EpisodeOfCare?identifier={LA_EPISODE}|C1001/2022-04-01,{LA_EPISODE}|C1001/2022-09-15")
    assert [(e["status"], e["meta"]["versionId"]) for e in c1001] == [("finished", "1"), ("active", "1")]


# -- the rule, pure --------------------------------------------------------------------------------

class _Row:
    def __init__(self, res_id: str, content: dict) -> None:
        self.res_id, self.res_type, self.content = res_id, "EpisodeOfCare", content


def _episode(start: str, end: str | None = None, patient: str = "Patient/p1", status: str = "active") -> dict:
    return {"status": status, "patient": {"reference": patient},
            "period": {"start": start, **({"end": end} if end else {})}}


def test_only_records_of_named_children_in_the_span_and_not_kept_are_stale():
    snap = Snapshot("EpisodeOfCare", "sys", "patient", {"urn:uuid:1": Span(date(2022, 3, 31), date(2023, 3, 31))})
    rows = [("k-kept", _Row("kept", _episode("2022-06-01"))),
            ("k-moved", _Row("moved", _episode("2022-06-01"))),
            ("k-closed-before", _Row("old", _episode("2021-01-01", "2022-03-31"))),  # closed before the year
            ("k-later", _Row("later", _episode("2023-04-01"))),  # started after the reference date
            ("k-other-child", _Row("other", _episode("2022-06-01", patient="Patient/p2"))),
            ("k-retired", _Row("retired", _episode("2022-06-01", status="entered-in-error")))]
    found = stale(snap, rows, {"k-kept"}, {"urn:uuid:1": "Patient/p1", "urn:uuid:2": "Patient/p2"})  # type: ignore
    assert [r.res_id for r in found] == ["moved"]


def test_a_span_from_the_earliest_listed_start_keeps_the_episode_that_ended_that_day():
    span = Span(date(2022, 4, 1))
    assert not span.covers(date(2021, 1, 1), date(2022, 4, 1))
    assert span.covers(date(2021, 1, 1), date(2022, 4, 2)) and span.covers(date(2021, 1, 1), None)


# -- a child whose rows are gone, a table with no rows: every table of both returns ------------------

def _without(xml: bytes, element: str, nth: int = 0) -> bytes:
    """The census with the ``nth`` ``element`` (and all it holds) removed."""
    text = xml.decode()
    start = -1
    for _ in range(nth + 1):
        start = text.index(f"<{element}>", start + 1)
    end = text.index(f"</{element}>", start) + len(f"</{element}>")
    return (text[:start] + text[end:]).encode()


@pytest.mark.parametrize("element, nth, kinds", [
    ("Section47", 0, {"s47-enquiry"}),
    ("ChildProtectionPlans", 0, {"cp-plan", "cp-plan-flag"}),
    ("FactorsIdentifiedAtAssessment", 0, {"cin-assessment-factor"}),
    ("CINPlanDates", 0, {"cin-plan"}),
    ("CINdetails", 0, {"cin-episode", "s47-enquiry", "cp-plan", "cp-plan-flag", "cin-assessment-factor"}),
])
def test_a_census_child_without_records_of_a_kind_retires_them(client, element, nth, kinds):
    _post_cin(client, _cin(), "a.xml")
    before = _current_keys(client)
    outcome = _post_cin(client, _without(_cin(), element, nth), "b.xml")
    after = _current_keys(client)
    gone = before - after
    assert gone and {kind for kind, _key in gone} == kinds
    assert f"{len(gone)} retired" in _headline(outcome)
    assert not after - before  # nothing new, and the rest untouched


def _current_keys(client) -> set[tuple[str, str]]:
    """(kind, key) of every record of LA 202 and 201 not entered-in-error (the kind from the identifier
    system; Flag has no status search parameter, so the status is read)."""
    out = set()
    for res_type in ("EpisodeOfCare", "Observation", "Flag"):
        for r in _search(client, f"{res_type}?_count=200"):
            if r.get("status") == "entered-in-error":
                continue
            ident = (r.get("identifier") or [{}])[0]
            if not str(ident.get("system")).startswith((f"{BASE}/Id/201/", f"{BASE}/Id/202/")):
                continue  # not from a return (the server's own risk assessments)
            out.add((ident["system"].rsplit("/", 1)[1], ident["value"]))
    return out


def _ssda903_tables(client, tables: dict[str, bytes | None]):
    """The return with ``tables`` (name → content) in place of the fixtures'; None leaves one out."""
    files = {n: (FIXTURES / "ssda903" / n).read_bytes() for n in ("201_header.csv", "201_episodes.csv",
                                                                  "201_missing.csv")}
    files.update(tables)
    data = {"file": [(io.BytesIO(content), n) for n, content in files.items() if content is not None]}
    res = client.post("/fhir/$import-agency-data?format=ssda903-csv", data=data, content_type="multipart/form-data")
    assert res.status_code == 200, res.data
    return body(res)


def _rows(name: str, keep) -> bytes:
    """The fixture table ``name`` with only its header and the rows ``keep`` accepts."""
    header, *rows = (FIXTURES / "ssda903" / name).read_text().splitlines()
    return ("\n".join([header, *[r for r in rows if keep(r)]]) + "\n").encode()


MISSING_C1003 = ("ssda903-missing", "C1003/2024-02-14/M")
MISSING_C1001 = {("ssda903-missing", "C1001/2022-11-03/M"), ("ssda903-missing", "C1001/2022-12-20/A")}


@pytest.mark.parametrize("tables, gone", [
    # C1003's only missing episode is no longer listed: retired (the issue's case)
    ({"201_missing.csv": _rows("201_missing.csv", lambda r: not r.startswith("C1003"))}, {MISSING_C1003}),
    # the Missing table with no rows: every listed child's missing episodes of the collection year
    # (April 2023 to March 2024, the year of the latest date) are retired; C1001's of 2022 are history
    ({"201_missing.csv": _rows("201_missing.csv", lambda r: False)}, {MISSING_C1003}),
    # C1003's rows gone from Episodes: its three episodes and its looked-after Flag
    ({"201_episodes.csv": _rows("201_episodes.csv", lambda r: not r.startswith("C1003"))},
     {("ssda903-episode", "C1003/2023-06-01"), ("ssda903-episode", "C1003/2023-06-09"),
      ("ssda903-episode", "C1003/2023-12-01"), ("ssda903-looked-after-flag", "C1003")}),
    # the Episodes table with no rows: the episodes open in the year and the Flags of open care;
    # C1001's first episode and C1002's (closed before the year) and C1002's closed Flag are kept
    ({"201_episodes.csv": _rows("201_episodes.csv", lambda r: False)},
     {("ssda903-episode", "C1001/2022-09-15"), ("ssda903-episode", "C1003/2023-06-01"),
      ("ssda903-episode", "C1003/2023-06-09"), ("ssda903-episode", "C1003/2023-12-01"),
      ("ssda903-looked-after-flag", "C1001"), ("ssda903-looked-after-flag", "C1003")}),
    # a return without the Missing table says nothing of missing episodes: nothing retired
    ({"201_missing.csv": None}, set()),
    ({"201_episodes.csv": None}, set()),
])
def test_an_ssda903_child_without_rows_or_an_empty_table_retires_what_it_no_longer_lists(client, tables, gone):
    _ssda903_tables(client, {})
    before = _current_keys(client)
    assert MISSING_C1001 | {MISSING_C1003} <= before
    outcome = _ssda903_tables(client, tables)
    after = _current_keys(client)
    assert before - after == gone
    assert f"{len(gone)} retired" in _headline(outcome)
    assert not after - before
    if gone:
        nullify = [p for p in _search(client, "Provenance?_count=50")
                   if p["activity"]["coding"][0]["code"] == "NULLIFY"]
        assert len(nullify) == 1 and len(nullify[0]["target"]) == len(gone)


def test_the_ssda903_collection_year_is_the_one_of_the_latest_date():
    assert collection_year([]) is None
    assert collection_year([date(2022, 6, 1), date(2024, 2, 14)]) == Span(date(2023, 3, 31), date(2024, 3, 31))
    assert collection_year([date(2024, 3, 31)]) == Span(date(2023, 3, 31), date(2024, 3, 31))
    assert collection_year([date(2024, 4, 1)]) == Span(date(2024, 3, 31), date(2025, 3, 31))


def _started_before(name: str, day: str) -> bytes:
    """The fixture table ``name`` with only the rows whose dates (dd/mm/yyyy) all fall before ``day``."""
    def early(row: str) -> bool:
        found = [f"{d[6:10]}-{d[3:5]}-{d[0:2]}" for d in row.split(",") if len(d) == 10 and d[2] == d[5] == "/"]
        return all(iso < day for iso in found)
    return _rows(name, early)


def test_an_earlier_years_return_imported_later_never_retires_the_later_years_records(client):
    """The 2022-23 return sent after the 2023-24 one (late, or corrected): it accounts for its own
    year only, so the episodes, Flag and missing episodes that began after 31 March 2023 stay."""
    _ssda903_tables(client, {})
    before = _current_keys(client)
    outcome = _ssda903_tables(client, {"201_episodes.csv": _started_before("201_episodes.csv", "2023-04-01"),
                                       "201_missing.csv": _started_before("201_missing.csv", "2023-04-01")})
    after = _current_keys(client)
    assert before - after == set(), _headline(outcome)
    assert {("ssda903-episode", "C1003/2023-06-01"), MISSING_C1003} <= after
