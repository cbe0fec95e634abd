"""Every extension the mappers write is defined (profiles/extensions/), readable through the API, and
the ones a user searches by have SearchParameters (profiles/search-parameters/) that are indexed on
write, answer through HTTP search and appear in the CapabilityStatement.

The extensions are collected from what the mappers really emit for the test fixtures of each format.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from fhir_server.conformance import load_conformance_resources
from mappings.core import SourceFile
from mappings.formats import mapper

from ..functional.test_crud import body

FIXTURES = Path(__file__).parent / "fixtures"
PROFILES = Path(__file__).resolve().parents[2] / "profiles"
BASE = "https://w3id.org/sg-fhir"
EXT = f"{BASE}/StructureDefinition"
SOURCES = {
    "cin-census-xml": ["cin/la202_2023.xml", "cin/bad_values.xml"],
    "ssda903-csv": ["ssda903/201_header.csv", "ssda903/201_episodes.csv", "ssda903/201_missing.csv"],
    "police-notifications-csv": ["police/notifications.csv"],
    "police-notifications-json": ["police/notifications.json"],
    "school-census-csv": ["education/school_census_201.csv"],
    "ed-attendances-csv": ["health/ed_attendances.csv"],
    "interventions-csv": ["interventions/202_interventions.csv"],
}


def _extensions(node: Any, owner: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(resource type, extension) for every top-level extension of our own, anywhere."""
    if isinstance(node, dict):
        for ext in node.get("extension", []):
            if str(ext.get("url", "")).startswith(EXT):
                yield owner, ext
        for key, value in node.items():
            if key != "extension":
                yield from _extensions(value, owner)
    elif isinstance(node, list):
        for value in node:
            yield from _extensions(value, owner)


def _emitted() -> dict[str, tuple[set[str], set[str]]]:
    """Extension URL → (resource types it was on, value[x] types it had) across every format."""
    out: dict[str, tuple[set[str], set[str]]] = {}
    for fmt, names in SOURCES.items():
        _agency, result = mapper(fmt)([SourceFile(Path(n).name, (FIXTURES / n).read_bytes()) for n in names])
        for upsert in result.upserts:
            for owner, ext in _extensions(upsert.resource, upsert.resource_type):
                contexts, types = out.setdefault(ext["url"], (set(), set()))
                contexts.add(owner)
                types.update(k[len("value"):] for k in ext if k.startswith("value"))
    return out


def _definitions() -> dict[str, dict[str, Any]]:
    defs = [json.loads(p.read_text()) for p in sorted((PROFILES / "extensions").glob("*.json"))]
    return {d["url"]: d for d in defs}


def test_every_extension_the_mappers_emit_is_defined_with_its_context_and_value_type():
    emitted, defined = _emitted(), _definitions()
    assert len(emitted) >= 15  # the fixtures exercise most of them
    for url, (contexts, types) in emitted.items():
        assert url in defined, f"no StructureDefinition for {url}"
        sd = defined[url]
        assert contexts <= {c["expression"] for c in sd["context"]}, url
        value = next(e for e in sd["differential"]["element"] if e["id"] == "Extension.value[x]")
        allowed = {t["code"][0].upper() + t["code"][1:] for t in value.get("type", [])}
        assert types <= allowed, (url, types, allowed)


def test_every_defined_extension_is_one_a_mapper_writes():
    """No definition for an extension nobody writes: each URL appears in the mappers' source."""
    source = "\n".join(p.read_text() for p in Path(PROFILES.parent / "mappings").rglob("*.py"))
    for url in _definitions():
        assert f'/{url.rsplit("/", 1)[1]}"' in source, url


@pytest.fixture
def loaded(app, settings):
    return load_conformance_resources(app.extensions["fhir"].repo, settings, base_search_parameters=False)


def test_definitions_are_readable_by_url(client, loaded):
    for url in (f"{EXT}/ethnic-category", f"{EXT}/involved-adult", f"{EXT}/ssda903-placement-urn"):
        bundle = body(client.get(f"/fhir/StructureDefinition?url={url}"))
        assert bundle["total"] == 1, url
        assert bundle["entry"][0]["resource"]["type"] == "Extension"
    sp = body(client.get(f"/fhir/SearchParameter?url={BASE}/SearchParameter/patient-ethnic-category"))
    assert sp["entry"][0]["resource"]["code"] == "ethnic-category"


def _post(client, fmt: str, names: list[str]) -> None:
    data = {"file": [(io.BytesIO((FIXTURES / n).read_bytes()), Path(n).name) for n in names]}
    res = client.post(f"/fhir/$import-agency-data?format={fmt}", data=data, content_type="multipart/form-data")
    assert res.status_code == 200, res.data


def _ids(client, query: str) -> list[str]:
    bundle = body(client.get(f"/fhir/{query}"))
    assert "entry" in bundle or bundle.get("total") == 0, bundle
    return [e["resource"]["identifier"][0]["value"] for e in bundle.get("entry", [])]


def test_a_child_is_found_by_ethnicity_and_disability(client):
    _post(client, "cin-census-xml", ["cin/la202_2023.xml"])
    assert _ids(client, f"Patient?ethnic-category={BASE}/CodeSystem/cin-ethnicity|AIND") == ["C001"]
    assert _ids(client, "Patient?ethnic-category=NOBT") == ["C002"]
    assert _ids(client, "Patient?disability=AUT") == ["C001"]
    assert _ids(client, "Patient?disability=HAND") == []


def test_episodes_are_found_by_reason_ceased_and_referral_date(client):
    _post(client, "ssda903-csv", SOURCES["ssda903-csv"])
    assert _ids(client, "EpisodeOfCare?reason-episode-ceased=E4A") == ["C1002/2021-01-10"]
    _post(client, "interventions-csv", SOURCES["interventions-csv"])
    found = _ids(client, "EpisodeOfCare?referral-date=2022-01-10")
    assert found == ["EH202-0001"]
    assert "EH202-0001" not in _ids(client, "EpisodeOfCare?referral-date=ge2023-01-01&_count=100")


def test_police_notifications_are_found_by_the_childs_school(client):
    _post(client, "police-notifications-csv", SOURCES["police-notifications-csv"])
    found = body(client.get(f"/fhir/Observation?school={BASE}/Id/school-urn|107812"))
    assert found["total"] >= 1
    assert all(any(e.get("valueIdentifier", {}).get("value") == "107812" for e in r["resource"]["extension"])
               for r in found["entry"])


def test_the_capability_statement_lists_the_search_parameters(client):
    statement = body(client.get("/fhir/metadata"))
    listed = {(r["type"], p["name"]): p.get("definition") for r in statement["rest"][0]["resource"]
              for p in r.get("searchParam", [])}
    for res_type, code, sp_id in (("Patient", "ethnic-category", "patient-ethnic-category"),
                                  ("Patient", "disability", "patient-disability"),
                                  ("EpisodeOfCare", "reason-episode-ceased", "episodeofcare-reason-episode-ceased"),
                                  ("EpisodeOfCare", "referral-date", "episodeofcare-referral-date"),
                                  ("Observation", "school", "observation-school")):
        assert listed[(res_type, code)] == f"{BASE}/SearchParameter/{sp_id}"
