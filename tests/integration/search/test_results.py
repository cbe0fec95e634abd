"""Result shaping: _sort, paging with snapshots, _total, _summary/_elements, _include/_revinclude
(search.html#return), and find_matches for conditional interactions."""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.errors import BadRequest
from fhir_server.search.summary import SUBSETTED_SYSTEM

from .conftest import BASE_URL, Store


def query_of(url: str) -> str:
    return urlsplit(url).query


# -- _sort -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ("_sort=date", ["obs2", "obs1", "obs3", "obs4", "obs5"]),  # obs2 starts 2020-01-01; no date last
    ("_sort=-date", ["obs3", "obs2", "obs1", "obs4", "obs5"]),  # obs2 ends 2020-02-01
    ("_sort=status,-date", ["obs5", "obs3", "obs1", "obs4", "obs2"]),
    ("_sort=code", ["obs1", "obs2", "obs5", "obs3", "obs4"]),
    ("_sort=-value-quantity", ["obs2", "obs3", "obs1", "obs4", "obs5"]),
    ("_sort=_id", ["obs1", "obs2", "obs3", "obs4", "obs5"]),
    ("_sort=-_id", ["obs5", "obs4", "obs3", "obs2", "obs1"]),
    ("_sort=-_lastUpdated", ["obs5", "obs4", "obs3", "obs2", "obs1"]),
])
def test_sort(data: Store, query: str, expected: list[str]) -> None:
    assert data.ids("Observation", query) == expected


def test_sort_string_and_reference(data: Store) -> None:
    assert data.ids("Patient", "_sort=family") == ["p1", "p3", "p2"]  # chalmers, jones, muller
    assert data.ids("Patient", "_sort=-family") == ["p2", "p3", "p1"]
    assert data.ids("Observation", "_sort=subject&status=final,preliminary") == ["obs1", "obs3", "obs2", "obs4"]


def test_sort_ties_break_on_creation_order(data: Store) -> None:
    assert data.ids("Observation", "_sort=status&status=final") == ["obs1", "obs3", "obs4"]


# -- paging ------------------------------------------------------------------------------------------

def test_pages_links_and_snapshot(data: Store) -> None:
    first = data.search("Observation", "status=final,preliminary,amended&_sort=_id&_count=2")
    assert [m["id"] for m in first.matches] == ["obs1", "obs2"]
    assert first.total == 5
    assert set(first.links) == {"self", "first", "next", "last"}
    assert first.links["next"].startswith(f"{BASE_URL}/Observation?")
    params = dict(parse_qsl(query_of(first.links["next"])))
    assert params["_count"] == "2" and params["_offset"] == "2" and params["_sort"] == "_id"
    assert params["status"] == "final,preliminary,amended"
    snapshot = int(params["_snapshot"])
    # a resource created after the first page must not shift the following pages
    data.put({"resourceType": "Observation", "id": "obs0", "status": "final", "code": {"text": "new"}})
    second = data.search("Observation", query_of(first.links["next"]))
    assert [m["id"] for m in second.matches] == ["obs3", "obs4"]
    assert second.total == 5
    assert dict(parse_qsl(query_of(second.links["previous"])))["_offset"] == "0"
    last = data.search("Observation", query_of(first.links["last"]))
    assert [m["id"] for m in last.matches] == ["obs5"]
    assert "next" not in last.links
    assert int(dict(parse_qsl(query_of(last.links["self"])))["_snapshot"]) == snapshot
    fresh = data.search("Observation", "status=final,preliminary,amended&_sort=_id&_count=2")
    assert [m["id"] for m in fresh.matches] == ["obs0", "obs1"] and fresh.total == 6


def test_count_default_cap_and_zero(data: Store) -> None:
    assert len(data.search("Observation", "", default_page_size=3).matches) == 3
    assert len(data.search("Observation", "_count=500", max_page_size=4).matches) == 4
    zero = data.search("Observation", "_count=0")
    assert zero.matches == [] and zero.total == 5
    counted = data.search("Observation", "_summary=count")
    assert counted.matches == [] and counted.total == 5


def test_offset(data: Store) -> None:
    assert data.ids("Observation", "_sort=_id&_offset=3") == ["obs4", "obs5"]
    assert data.ids("Observation", "_sort=_id&_offset=30") == []


@pytest.mark.parametrize("mode,expected", [("accurate", 5), ("estimate", 5), ("none", None)])
def test_total_modes(data: Store, mode: str, expected: int | None) -> None:
    result = data.search("Observation", f"_total={mode}&_count=2")
    assert result.total == expected
    if expected is None:
        assert "last" not in result.links and "next" in result.links


def test_whole_system_links(data: Store) -> None:
    result = data.search(None, "_id=p1,obs1&_count=1")
    assert result.links["self"].startswith(f"{BASE_URL}?")
    assert result.links["next"].startswith(f"{BASE_URL}?")


# -- _summary / _elements ----------------------------------------------------------------------------

def _subsetted(resource: dict) -> bool:
    return any(t["system"] == SUBSETTED_SYSTEM and t["code"] == "SUBSETTED"
               for t in resource.get("meta", {}).get("tag", []))


def test_summary_true_and_elements(data: Store) -> None:
    data.put({"resourceType": "Patient", "id": "withtext", "gender": "male",
              "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
              "contact": [{"name": {"family": "Mum"}}], "maritalStatus": {"text": "single"}})
    summary = data.search("Patient", "_id=withtext&_summary=true").matches[0]
    assert "contact" not in summary and "maritalStatus" not in summary and "text" not in summary
    assert summary["gender"] == "male" and _subsetted(summary)
    text = data.search("Patient", "_id=withtext&_summary=text").matches[0]
    assert set(text) == {"resourceType", "id", "meta", "text"} and _subsetted(text)
    data_only = data.search("Patient", "_id=withtext&_summary=data").matches[0]
    assert "text" not in data_only and "contact" in data_only and _subsetted(data_only)
    full = data.search("Patient", "_id=withtext&_summary=false").matches[0]
    assert "text" in full and not _subsetted(full)
    elements = data.search("Patient", "_id=withtext&_elements=gender").matches[0]
    assert set(elements) == {"resourceType", "id", "meta", "gender"} and _subsetted(elements)


def test_elements_choice_types_and_mandatory(data: Store) -> None:
    obs = data.search("Observation", "_id=obs1&_elements=value").matches[0]
    # status and code are mandatory (min 1) so they stay
    assert set(obs) == {"resourceType", "id", "meta", "valueQuantity", "status", "code"}


# -- _include / _revinclude ----------------------------------------------------------------------------

def inc_ids(store: Store, rtype: str, query: str) -> tuple[list[str], list[str]]:
    result = store.search(rtype, query)
    return ([m["id"] for m in result.matches],
            sorted(f"{i['resourceType']}/{i['id']}" for i in result.includes))


def test_include(data: Store) -> None:
    assert inc_ids(data, "Observation", "code=1234-5&_include=Observation:subject") == (
        ["obs1", "obs2"], ["Patient/p1", "Patient/p2"])
    assert inc_ids(data, "Observation", "code=1234-5&_include=Observation:subject:Group") == (
        ["obs1", "obs2"], [])
    assert inc_ids(data, "Patient", "_id=p1,p2&_include=Patient:organization&_include=Patient:general-practitioner") == (
        ["p1", "p2"], ["Organization/o1", "Practitioner/pr1"])
    assert inc_ids(data, "Patient", "_id=p1&_include=*") == (["p1"], ["Organization/o1"])


def test_include_never_duplicates_matches(data: Store) -> None:
    assert inc_ids(data, "Organization", "_include=Organization:partof") == (["o1", "o0"], [])


def test_include_iterate(data: Store) -> None:
    assert inc_ids(data, "Observation", "_id=obs1&_include=Observation:subject&_include=Patient:organization") == (
        ["obs1"], ["Patient/p1"])
    assert inc_ids(data, "Observation", "_id=obs1&_include=Observation:subject"
                                        "&_include:iterate=Patient:organization"
                                        "&_include:iterate=Organization:partof") == (
        ["obs1"], ["Organization/o0", "Organization/o1", "Patient/p1"])


def test_revinclude(data: Store) -> None:
    assert inc_ids(data, "Observation", "_id=obs1,obs2&_revinclude=Provenance:target") == (
        ["obs1", "obs2"], ["Provenance/prov1"])
    assert inc_ids(data, "Patient", "_id=p1&_revinclude=Observation:subject&_revinclude:iterate=Provenance:target") == (
        ["p1"], ["Observation/obs1", "Observation/obs3", "Provenance/prov1"])


def test_include_errors(data: Store) -> None:
    with pytest.raises(BadRequest):
        data.search("Observation", "_include=Observation:code")


# -- find_matches --------------------------------------------------------------------------------------

def test_find_matches_for_conditional_interactions(data: Store) -> None:
    assert [i for _, i in data.matches("Patient", "identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919")] == ["p1"]
    assert [i for _, i in data.matches("Patient", "family=chalmers&_count=1&_sort=_id")] == ["p1"]
    assert data.matches("Patient", "family=nobody") == []
    assert len(data.matches("Observation", "status=final")) == 3
    with pytest.raises(BadRequest):  # an unknown parameter must never widen the match to everything
        data.matches("Patient", "nonsense=1")
