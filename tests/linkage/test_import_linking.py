"""End to end: the synthetic generator's agency files imported by the loader, linked on write, and
checked against the generator's ground truth (no master may hold two people)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from linkage.evaluate import generate, load_dataset
from mappings.core import SourceFile
from mappings.formats import mapper
from mappings.loader import import_file
from fhir_server.repository.context import RequestContext

from tests.functional.test_crud import body

MASTER_TAG = "https://w3id.org/sg-fhir/CodeSystem/linkage|master"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate(12, 3, tmp_path_factory.mktemp("synthetic"))


def test_imported_agency_records_link_to_masters_without_false_merges(app, client, drain, dataset):
    services = app.extensions["fhir"]
    ctx = RequestContext(base_url=services.settings.base_url, client_id="etl")
    manifest = json.loads((dataset / "manifest.json").read_text())
    for entry in manifest["files"]:
        sources = [SourceFile(p, (dataset / p).read_bytes()) for p in entry["paths"]]
        agency, result = mapper(entry["format"])(sources)
        assert agency is not None
        summary = import_file(services.router, ctx, result, agency,
                              SourceFile(entry["paths"][0], b"".join(s.content for s in sources)), entry["format"],
                              lenient=True)
        assert summary.written, summary.outcome()
    drain()

    # the ground truth, keyed the way the evaluation keys agency Patients (their conditional-update match)
    truth = load_dataset(dataset)
    person_of_identifier: dict[tuple[str, str], str] = {}
    for record in truth.records:
        for system, value in record.identifiers | ({("nhs", record.nhs)} if record.nhs else set()):
            person_of_identifier.setdefault((system, value), truth.person[record.id])

    masters = [e["resource"] for e in body(client.get(f"/fhir/Patient?_tag={MASTER_TAG}&_count=500")).get("entry", [])]
    assert masters, "some children are known to several agencies: masters are expected"
    linked = 0
    for master in masters:
        people: set[str] = set()
        refs = [link["other"]["reference"] for link in master["link"]]
        for ref in refs:
            patient = body(client.get(f"/fhir/{ref}"))
            keys = defaultdict(set)
            for ident in patient.get("identifier", []):
                system = "nhs" if ident["system"].endswith("/nhs-number") else ident["system"]
                if (system, ident["value"]) in person_of_identifier:
                    keys[person_of_identifier[(system, ident["value"])]].add(ident["value"])
            people.update(keys)
        linked += len(refs)
        assert len(people) <= 1, f"master {master['id']} holds records of {people}"
    assert linked >= 2 * len(masters)
    provenance = body(client.get("/fhir/Provenance?_count=1000"))
    auto = [e for e in provenance.get("entry", [])
            if e["resource"].get("activity", {}).get("coding", [{}])[0].get("code") == "auto-link"]
    assert len(auto) >= len(masters)  # at least one automatic decision (with its score) per master
