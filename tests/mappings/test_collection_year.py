"""The collection year of an SSDA903 return (issue 3): stated with ``collection-year`` it bounds
what the full return retires; absent, it is inferred from the latest date in the files and the
import says so; an implausible value, or one for a format without a collection year, is a 400 and
nothing is written.

Through $import-agency-data over HTTP into the real database (SQLite and PostgreSQL), with the
SSDA903 fixtures of test_ssda903.py (collection year 2024: their latest date is 14 February 2024).
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from fhir_server import create_app
from fhir_server.cli import main
from fhir_server.config import REPO_ROOT, Settings
from mappings.dates import today_uk

from ..functional.test_cli import migrated_database_url  # noqa: F401 - fixture
from ..functional.test_crud import body
from ..integration.test_migrations import empty_database_url, scratch_postgres_url  # noqa: F401 - fixtures
from .test_corrected_returns import LA_EPISODE, MISSING_C1003, _current_keys, _headline, _rows, _search, _started_before

FIXTURES = Path(__file__).parent / "fixtures"
TABLES = ("201_header.csv", "201_episodes.csv", "201_missing.csv")
# C1003's records, all begun in collection year 2024 (June 2023 onwards)
C1003 = {("ssda903-episode", "C1003/2023-06-01"), ("ssda903-episode", "C1003/2023-06-09"),
         ("ssda903-episode", "C1003/2023-12-01"), ("ssda903-looked-after-flag", "C1003"), MISSING_C1003}
INFERRED = "no collection-year was given: inferred"


def _post(client, tables: dict[str, bytes] | None = None, *, query: str = "", form: dict[str, str] | None = None,
          fmt: str = "ssda903-csv"):
    files = {n: (FIXTURES / "ssda903" / n).read_bytes() for n in TABLES}
    files.update(tables or {})
    data: dict = {"file": [(io.BytesIO(content), n) for n, content in files.items()], **(form or {})}
    return client.post(f"/fhir/$import-agency-data?format={fmt}{query}", data=data, content_type="multipart/form-data")


def _imported(client, tables: dict[str, bytes] | None = None, **kwargs) -> dict:
    res = _post(client, tables, **kwargs)
    assert res.status_code == 200, res.data
    return body(res)


def _information(outcome: dict) -> list[str]:
    return [i["diagnostics"] for i in outcome["issue"] if i["severity"] == "information"]


def _without_c1003() -> dict[str, bytes]:
    """The return still naming C1003 in its Header but with none of its rows: the latest date left
    is 20 December 2022, so the year inferred would be 2023."""
    return {n: _rows(n, lambda r: not r.startswith("C1003")) for n in ("201_episodes.csv", "201_missing.csv")}


def test_without_a_year_the_inferred_one_is_reported_as_information(client):
    outcome = _imported(client)
    (note,) = [d for d in _information(outcome) if INFERRED in d]
    assert "inferred 2024 (1 April 2023 to 31 March 2024)" in note and "2024-02-14" in note
    assert outcome["issue"][0]["severity"] == "information"  # the headline stays first
    stated = _imported(client, query="&collection-year=2024")
    assert not [d for d in _information(stated) if INFERRED in d]


def test_a_stated_year_bounds_what_the_return_retires_where_inference_would_pick_another(client):
    """The same files retire nothing with the year inferred from them (2023: C1003's records began
    after it) and all of C1003's records with the year stated (2024, here as a form field)."""
    _imported(client)
    before = _current_keys(client)
    assert C1003 <= before
    inferred = _imported(client, _without_c1003())
    assert any("inferred 2023 (1 April 2022 to 31 March 2023)" in d for d in _information(inferred))
    assert _current_keys(client) == before
    assert "0 retired" in _headline(inferred)

    stated = _imported(client, _without_c1003(), form={"collection-year": "2024"})
    assert "5 retired" in _headline(stated)
    assert before - _current_keys(client) == C1003


def test_an_earlier_years_return_with_its_year_stated_retires_nothing_of_the_later_year(client):
    """The 2023 return sent after the 2024 one, late enough to list an end date after 31 March 2023
    (C1001's placement ended 30 April 2023): stated as 2023 it retires nothing begun in 2024 (and
    updates the episode it ends); inferred from that end date it would be taken for 2024's and
    retire all of C1003's records, which it does not list."""
    _imported(client)
    before = _current_keys(client)
    late = _started_before("201_episodes.csv", "2023-04-01").replace(
        b"C1001,15/09/2022,P,C2,N1,K2,PR4,,,,", b"C1001,15/09/2022,P,C2,N1,K2,PR4,30/04/2023,E4A,,")
    earlier = {"201_episodes.csv": late, "201_missing.csv": _started_before("201_missing.csv", "2023-04-01")}

    stated = _imported(client, earlier, query="&collection-year=2023")
    assert "0 retired" in _headline(stated), _headline(stated)
    assert _current_keys(client) == before
    (ended,) = _search(client, f"EpisodeOfCare?identifier={LA_EPISODE}|C1001/2022-09-15")
    assert (ended["status"], ended["period"]["end"]) == ("finished", "2023-04-30")

    inferred = _imported(client, earlier)
    assert any("inferred 2024" in d for d in _information(inferred))
    assert before - _current_keys(client) == C1003


def _next_year() -> str:
    return str(today_uk().year + 2)


@pytest.mark.parametrize("query, form, fmt", [
    ("&collection-year=24", None, "ssda903-csv"),
    ("&collection-year=20245", None, "ssda903-csv"),
    ("&collection-year=202x", None, "ssda903-csv"),
    ("&collection-year=-202", None, "ssda903-csv"),
    ("&collection-year=1999", None, "ssda903-csv"),
    ("&collection-year=" + _next_year(), None, "ssda903-csv"),
    ("&collection-year=", None, "ssda903-csv"),
    ("", {"collection-year": "2O24"}, "ssda903-csv"),
    ("&collection-year=2024", None, "cin-census-xml"),
    ("&collection-year=2024", None, "police-notifications-csv"),
])
def test_a_bad_collection_year_is_a_400_naming_it_and_nothing_is_written(client, query, form, fmt):
    res = _post(client, query=query, form=form, fmt=fmt)
    assert res.status_code == 400, res.data
    outcome = body(res)
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = outcome["issue"]
    assert issue["severity"] == "error" and issue["expression"] == ["collection-year"]
    assert "collection-year" in issue["diagnostics"]
    for res_type in ("Patient", "EpisodeOfCare", "Provenance", "Organization"):
        assert _search(client, res_type) == [], res_type


def test_a_census_is_told_its_year_is_its_own(client):
    res = _post(client, query="&collection-year=2024", fmt="cin-census-xml")
    assert "states its year in its header" in body(res)["issue"][0]["diagnostics"]


# fhir-server import: the same rules from the command line and from a manifest (as `fhir-server synth` writes)

def _cli_client(url: str):
    settings = Settings(database_url=url, base_url="http://localhost/fhir", profiles_dir=REPO_ROOT / "profiles",
                        auth_enabled=False)
    return create_app(settings).test_client()


def _table_files(tmp_path: Path, tables: dict[str, bytes] | None = None) -> list[str]:
    files = {n: (FIXTURES / "ssda903" / n).read_bytes() for n in TABLES}
    files.update(tables or {})
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return list(files)


def _manifest(tmp_path: Path, names: list[str], year) -> str:
    entry = {"format": "ssda903-csv", "paths": names, "records": 3, "collection_year": year}
    (tmp_path / "manifest.json").write_text(json.dumps({"files": [entry]}))
    return str(tmp_path / "manifest.json")


def test_the_cli_takes_a_collection_year_and_a_manifest_gives_one_per_entry(
        migrated_database_url: str,  # noqa: F811
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / "full"
    full.mkdir()
    names = _table_files(full)
    args = ["--format", "ssda903-csv", "--collection-year", "2024", *(str(full / n) for n in names)]
    assert main(["import", *args]) == 0
    assert INFERRED not in capsys.readouterr().err
    client = _cli_client(migrated_database_url)
    before = _current_keys(client)
    assert C1003 <= before

    later = tmp_path / "later"
    later.mkdir()
    names = _table_files(later, _without_c1003())
    assert main(["import", "--manifest", _manifest(later, names, 2024)]) == 0
    assert INFERRED not in capsys.readouterr().err
    assert before - _current_keys(client) == C1003

    assert main(["import", "--format", "ssda903-csv", *(str(later / n) for n in names)]) == 0
    assert "collection-year: no collection-year was given: inferred 2023" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--format", "ssda903-csv", "--collection-year", "99"], "--collection-year: collection-year must be a year"),
    (["--format", "ssda903-csv", "--collection-year", "1999"], "1999 is not a plausible collection year"),
    (["--format", "cin-census-xml", "--collection-year", "2024"], "states its year in its header"),
    (["--manifest"], "collection_year of ssda903-csv 201_header.csv: collection-year must be a year of four"),
])
def test_the_cli_refuses_a_bad_collection_year_before_writing_anything(
        migrated_database_url: str,  # noqa: F811
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args, message) -> None:
    names = _table_files(tmp_path)
    if args == ["--manifest"]:
        args = ["--manifest", _manifest(tmp_path, names, "2024x")]
    else:
        args = [*args, *(str(tmp_path / n) for n in names)]
    assert main(["import", *args]) == 1
    assert message in capsys.readouterr().err
    client = _cli_client(migrated_database_url)
    for res_type in ("Patient", "EpisodeOfCare", "Provenance"):
        assert _search(client, res_type) == [], res_type


def test_an_async_import_keeps_the_stated_year(committing_app):
    """With Prefer: respond-async the year is stored with the job and used when it runs."""
    client = committing_app.test_client()
    _imported(client)
    before = _current_keys(client)
    files = {n: (FIXTURES / "ssda903" / n).read_bytes() for n in TABLES} | _without_c1003()
    kickoff = client.post("/fhir/$import-agency-data?format=ssda903-csv", headers={"Prefer": "respond-async"},
                          data={"file": [(io.BytesIO(c), n) for n, c in files.items()], "collection-year": "2024"},
                          content_type="multipart/form-data")
    assert kickoff.status_code == 202, kickoff.data
    status_url = kickoff.headers["Content-Location"].replace("http://localhost", "")
    deadline = time.monotonic() + 60
    while (polled := client.get(status_url)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert polled.status_code == 200, polled.data
    outcome = body(polled)["entry"][0]["response"]["outcome"]
    assert "5 retired" in _headline(outcome) and not [d for d in _information(outcome) if INFERRED in d]
    assert before - _current_keys(client) == C1003
