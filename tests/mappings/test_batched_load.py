"""The batched load path (mappings/writer.py): re-imports change nothing, corrected files update only
what changed, files mixing new, changed and unchanged records, all-or-nothing on errors — and the
same database afterwards as the import sent as a transaction Bundle through ``POST [base]``."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import mappings.prevalidate
import mappings.writer
from fhir_server.errors import FhirError
from fhir_server.repository.context import RequestContext
from fhir_server.storage.tables import idx_token, outbox, resource, resource_history
from mappings.core import (Agency, MappingResult, SourceFile, Upsert, children_services, identifier_match,
                           police_force)
from mappings.formats import mapper
from mappings.loader import (ImportSummary, agency_organization, import_file, load, retirement_entries,
                             transaction_bundle, usable_upserts, with_stored)

from ..functional.test_crud import body

LA = children_services("201")
CHILD = "https://w3id.org/sg-fhir/Id/la-child-id/201"
EPISODE = "https://w3id.org/sg-fhir/Id/201/cin-episode"
TAG = "https://w3id.org/sg-fhir/CodeSystem/source-agency"


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    """Three resources per write, so that every file here spans several batches (and, on
    PostgreSQL, background writes)."""
    monkeypatch.setattr(mappings.writer, "DEFAULT_BATCH", 3)


def _child(child_id: str, family: str, *, reason: str = "N1", birth: str | None = "2014-05-02",
           agency: Agency = LA) -> list[Upsert]:
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": CHILD, "value": child_id}],
                               "name": [{"family": family}]}
    if birth:
        patient["birthDate"] = birth
    pu = Upsert(patient, identifier_match(CHILD, child_id), record=child_id, merge=True)
    episode = {"resourceType": "EpisodeOfCare", "status": "active",
               "identifier": [{"system": EPISODE, "value": f"E-{child_id}"}],
               "type": [{"text": f"CIN referral {reason}"}], "patient": {"reference": pu.full_url},
               "managingOrganization": {"reference": agency.full_url}}
    return [pu, Upsert(episode, identifier_match(EPISODE, f"E-{child_id}"), record=child_id)]


def _import(app, upserts: list[Upsert], content: bytes, agency: Agency = LA) -> ImportSummary:
    services = app.extensions["fhir"]
    ctx = RequestContext(base_url=services.settings.base_url, client_id="la-201-etl")
    result = MappingResult(upserts, records=len({u.record for u in upserts}))
    return import_file(services.router, ctx, result, agency, SourceFile("cin.xml", content), "cin-census-xml")


def _counts(summary: ImportSummary) -> tuple[int, int, int]:
    assert summary.written, summary.outcome()
    return summary.created, summary.updated, summary.unchanged


def _table_counts(app) -> dict[str, int]:
    with app.extensions["fhir"].repo.unit_of_work(write=False) as uow:
        return {t.name: len(uow.conn.execute(select(t)).all())
                for t in (resource, resource_history, outbox, idx_token)}


def _one(client, query: str) -> dict[str, Any]:
    found = body(client.get(f"/fhir/{query}"))
    assert found["total"] == 1, found
    return found["entry"][0]["resource"]


def test_importing_the_same_records_again_changes_nothing(app, client):
    upserts = [u for n in range(4) for u in _child(f"C{n}", f"Family{n}")]
    assert _counts(_import(app, upserts, b"file-1")) == (8, 0, 0)
    before = _table_counts(app)
    again = _import(app, [u for n in range(4) for u in _child(f"C{n}", f"Family{n}")], b"file-1")
    assert _counts(again) == (0, 0, 8)
    assert _table_counts(app) == before  # no version, no history, index or outbox row
    # the same records in another file: still no new version, only that file's Provenance
    copy = _import(app, [u for n in range(4) for u in _child(f"C{n}", f"Family{n}")], b"file-1, sent again")
    assert _counts(copy) == (0, 0, 8)
    after = _table_counts(app)
    assert after["resource"] == before["resource"] + 1 and after["outbox"] == before["outbox"] + 1
    assert body(client.get("/fhir/Provenance"))["total"] == 2
    patient = _one(client, f"Patient?identifier={CHILD}|C2")
    assert patient["meta"]["versionId"] == "1"
    assert body(client.get(f"/fhir/Patient/{patient['id']}/_history"))["total"] == 1


def test_a_corrected_file_updates_only_the_changed_records(app, client):
    assert _counts(_import(app, [u for n in range(3) for u in _child(f"C{n}", "Jones")], b"v1")) == (6, 0, 0)
    old = _one(client, f"Patient?identifier={CHILD}|C1")
    episode_before = _one(client, f"EpisodeOfCare?identifier={EPISODE}|E-C1")
    corrected = [*_child("C0", "Jones"), *_child("C1", "Jones-Smith", reason="N2"), *_child("C2", "Jones")]
    assert _counts(_import(app, corrected, b"v2")) == (0, 2, 4)

    patient = _one(client, f"Patient?identifier={CHILD}|C1")
    assert patient["id"] == old["id"] and patient["meta"]["versionId"] == "2"
    assert patient["name"] == [{"family": "Jones-Smith"}] and patient["birthDate"] == "2014-05-02"
    assert body(client.get(f"/fhir/Patient/{old['id']}/_history/1"))["name"] == [{"family": "Jones"}]
    history = body(client.get(f"/fhir/Patient/{old['id']}/_history"))
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "PUT"]
    # the index rows were replaced, not added to
    assert body(client.get("/fhir/Patient?family=Jones-Smith"))["total"] == 1
    assert body(client.get("/fhir/Patient?family:exact=Jones"))["total"] == 2
    episode = _one(client, f"EpisodeOfCare?identifier={EPISODE}|E-C1")
    assert episode["id"] == episode_before["id"] and episode["meta"]["versionId"] == "2"
    assert episode["patient"]["reference"] == f"Patient/{old['id']}"
    assert _one(client, f"EpisodeOfCare?identifier={EPISODE}|E-C0")["meta"]["versionId"] == "1"
    assert _one(client, f"Patient?identifier={CHILD}|C0")["meta"]["versionId"] == "1"
    with app.extensions["fhir"].repo.unit_of_work(write=False) as uow:
        events = [(r.res_type, r.version_id, r.event) for r in uow.conn.execute(
            select(outbox).where(outbox.c.res_id.in_([old["id"], episode["id"]])).order_by(outbox.c.id))]
    assert events == [("Patient", 1, "create"), ("EpisodeOfCare", 1, "create"),
                      ("Patient", 2, "update"), ("EpisodeOfCare", 2, "update")]


def test_a_file_of_new_changed_and_unchanged_records(app, client):
    assert _counts(_import(app, [*_child("C1", "Ali"), *_child("C2", "Brown")], b"v1")) == (4, 0, 0)
    brown = _one(client, f"Patient?identifier={CHILD}|C2")
    # C1 unchanged; C2's Patient is merged (no birth date in this file: the stored one is kept) and its
    # episode changes; C3 is new, in the middle of the file
    mixed = [*_child("C1", "Ali"), *_child("C3", "Chen"), *_child("C2", "Brown", reason="N4", birth=None)]
    summary = _import(app, mixed, b"v2")
    assert _counts(summary) == (2, 1, 3)
    assert _one(client, f"Patient?identifier={CHILD}|C2") == brown  # merged into itself: unchanged
    episode = _one(client, f"EpisodeOfCare?identifier={EPISODE}|E-C2")
    assert episode["type"] == [{"text": "CIN referral N4"}] and episode["meta"]["versionId"] == "2"
    assert episode["patient"]["reference"] == f"Patient/{brown['id']}"
    chen = _one(client, f"Patient?identifier={CHILD}|C3")
    assert _one(client, f"EpisodeOfCare?patient=Patient/{chen['id']}")["identifier"][0]["value"] == "E-C3"
    provenance = _one(client, f"Provenance?target=Patient/{chen['id']}")
    assert len(provenance["target"]) == 6 and f"Patient/{brown['id']}" in [t["reference"] for t in provenance["target"]]
    assert body(client.get("/fhir/Patient"))["total"] == 3 and body(client.get("/fhir/EpisodeOfCare"))["total"] == 3


def test_another_agency_with_the_same_identifier_gets_its_own_record(app, client):
    assert _counts(_import(app, _child("C1", "Ali"), b"la")) == (2, 0, 0)
    police = police_force("20")
    assert _counts(_import(app, _child("C1", "Ali", agency=police), b"police", agency=police)) == (2, 0, 0)
    found = body(client.get(f"/fhir/Patient?identifier={CHILD}|C1"))
    tags = sorted(e["resource"]["meta"]["tag"][0]["code"] for e in found["entry"])
    assert tags == ["local-authority/201", "police/20"]
    assert _counts(_import(app, _child("C1", "Ali-Khan", agency=police), b"police-2", agency=police)) == (0, 1, 1)
    assert _one(client, f"Patient?identifier={CHILD}|C1&_tag={TAG}|local-authority/201")["name"] == [{"family": "Ali"}]


@pytest.fixture
def validation_pool(monkeypatch):
    """Validate every file's resources in the pool (mappings/prevalidate.py), five per chunk."""
    monkeypatch.setattr(mappings.prevalidate, "MIN_RESOURCES", 1)
    monkeypatch.setattr(mappings.prevalidate, "CHUNK", 5)
    monkeypatch.setenv("FHIR_IMPORT_VALIDATION_PROCESSES", "1")


@pytest.mark.parametrize("where", ["in-process", "pool"])
def test_an_error_in_any_entry_writes_nothing(app, client, request, where):
    if where == "pool":
        request.getfixturevalue("validation_pool")
    assert _counts(_import(app, [u for n in range(3) for u in _child(f"C{n}", "Patel")], b"v1")) == (6, 0, 0)
    before = _table_counts(app)
    bad = [*_child("C0", "Patel-Changed"), *_child("C9", "New"), *_child("C8", "Newer")]
    bad[3].resource["status"] = "not-a-status"  # the new episode: a required binding
    bad[4].resource["birthDate"] = "not-a-date"  # a later error: the first one is the answer
    failed = _import(app, bad, b"v2")
    assert not failed.written
    issue = failed.outcome()["issue"][-1]
    assert issue["diagnostics"].startswith("Bundle.entry[4] (PUT EpisodeOfCare?identifier=")
    assert issue["expression"][0] == "Bundle.entry[4]" and "not-a-status" in issue["diagnostics"]
    assert where == "in-process" or mappings.prevalidate._pool is not None
    assert _table_counts(app) == before
    assert _one(client, f"Patient?identifier={CHILD}|C0")["name"] == [{"family": "Patel"}]


def test_criteria_that_match_several_resources_reject_the_file(app, client):
    tagged = {"resourceType": "Patient", "identifier": [{"system": CHILD, "value": "C1"}],
              "meta": {"tag": [{"system": TAG, "code": "local-authority/201"}]}}
    for _ in range(2):
        assert client.post("/fhir/Patient", json=tagged, content_type="application/fhir+json").status_code == 201
    provenances_before = body(client.get("/fhir/Provenance"))["total"]  # one per write (the audit trail)
    services = app.extensions["fhir"]
    ctx = RequestContext(base_url=services.settings.base_url, client_id="la-201-etl")
    source = SourceFile("cin.xml", b"v1")
    # as a transaction Bundle, the entries that refer to the ambiguous Patient fail first (its fullUrl
    # cannot be resolved), then the Patient itself: the Provenance refers to it, so it fails either way
    child = _child("C1", "Ali")
    reference = operation_error(lambda: load(services.router, ctx, transaction_bundle(
        child, LA, source, client_id="la-201-etl")))
    failed = _import(app, child, b"v1")
    assert not failed.written
    assert failed.issues == reference
    assert reference[0].diagnostics.startswith("Bundle.entry[2] (PUT EpisodeOfCare?identifier=")
    assert "is not the fullUrl of any entry in this transaction" in reference[0].diagnostics
    assert body(client.get("/fhir/EpisodeOfCare"))["total"] == 0
    assert body(client.get("/fhir/Provenance"))["total"] == provenances_before  # not the import's


# -- the same database as the transaction Bundle -----------------------------------------------------


def operation_error(run) -> list:
    try:
        run()
    except FhirError as exc:
        return exc.issues
    raise AssertionError("expected a FhirError")


def _reference_import(app, result: MappingResult, agency: Agency, source: SourceFile) -> tuple[int, int, int]:
    """The import as it was before the batched path: merges read first, then the file's transaction
    Bundle through ``POST [base]`` (mappings.loader.transaction_bundle and load)."""
    services = app.extensions["fhir"]
    ctx = RequestContext.system(services.settings.base_url, client_id="etl")
    upserts = usable_upserts(result, lenient=True)
    org, *upserts = with_stored(services.router, [agency_organization(agency), *upserts], agency)
    response = load(services.router, ctx, transaction_bundle(upserts, agency, source, client_id="etl", org=org))
    statuses = Counter()
    for entry in response["entry"][1:1 + len(upserts)]:
        said = " ".join(i.get("diagnostics", "") for i in entry["response"].get("outcome", {}).get("issue", []))
        statuses["created" if entry["response"]["status"].startswith("201")
                 else "unchanged" if said.startswith("No change") else "updated"] += 1
    return statuses["created"], statuses["updated"], statuses["unchanged"]


def _batched_import(app, result: MappingResult, agency: Agency, source: SourceFile) -> tuple[int, int, int]:
    services = app.extensions["fhir"]
    ctx = RequestContext.system(services.settings.base_url, client_id="etl")
    return _counts(import_file(services.router, ctx, result, agency, source, "any", lenient=True))


def _snapshot(app) -> dict[str, Any]:
    """Everything the import wrote, with server ids replaced by the resource's business identity
    and without timestamps, so that two runs can be compared."""
    with app.extensions["fhir"].repo.unit_of_work(write=False) as uow:
        rows = uow.conn.execute(select(resource).order_by(resource.c.pk)).all()
        history = uow.conn.execute(select(resource_history.c.res_id, resource_history.c.version_id,
                                          resource_history.c.method)).all()
        events = uow.conn.execute(select(outbox.c.res_id, outbox.c.version_id, outbox.c.event)
                                  .order_by(outbox.c.id)).all()
    label: dict[str, str] = {}
    for row in rows:
        content = row.content
        keys = content.get("identifier") or [e["what"]["identifier"] for e in content.get("entity", [])]
        label[row.res_id] = json.dumps([row.res_type, content["meta"].get("source"),
                                        sorted((k.get("system"), k.get("value")) for k in keys)])
    assert len(set(label.values())) == len(label), "every resource has its own business identity"
    ids = re.compile("|".join(re.escape(i) for i in label)) if label else None

    def named(value: Any) -> Any:
        text = json.dumps(value, sort_keys=True, default=str)
        return json.loads(ids.sub(lambda m: label[m.group(0)].replace('"', "'"), text)) if ids else value

    resources = {}
    for row in rows:
        content = dict(row.content)
        content.pop("recorded", None)  # Provenance.recorded: when the import ran
        content["meta"] = {k: v for k, v in content["meta"].items() if k != "lastUpdated"}
        resources[label[row.res_id]] = (row.version_id, row.deleted, named(content))
    return {"resources": resources,
            "history": sorted((label[h.res_id], h.version_id, h.method) for h in history),
            "outbox": [(label[e.res_id], e.version_id, e.event) for e in events]}


def _dataset(months: int, out: Path) -> tuple[Path, list[dict[str, Any]]]:
    from synthetic.config import SynthConfig
    from synthetic.generator import generate

    generate(SynthConfig(families=10, seed=7, months=months, counterfactual=False), out, progress=False,
             overwrite=True)
    return out, json.loads((out / "manifest.json").read_text())["files"]


def test_the_batched_path_writes_what_the_transaction_bundle_writes(app, tmp_path_factory, validation_pool):
    # The same ten families over 30 months, then over 36 (more events, episodes closed: a corrected
    # file for most formats), then the 36 months again (nothing changes).
    rounds = [_dataset(30, tmp_path_factory.mktemp("m30")), _dataset(36, tmp_path_factory.mktemp("m36"))]
    rounds.append(rounds[1])

    def run(do_import) -> tuple[list[list[tuple[int, int, int]]], dict[str, Any]]:
        counts = []
        for data, files in rounds:
            counts.append([])
            for entry in files:
                sources = [SourceFile(p, (data / p).read_bytes()) for p in entry["paths"]]
                agency, result = mapper(entry["format"])(sources)
                assert agency is not None
                source = SourceFile(entry["paths"][0], b"".join(s.content for s in sources))
                counts[-1].append(do_import(app, result, agency, source))
        return counts, _snapshot(app)

    conn = app.extensions["fhir"].repo._bound
    savepoint = conn.begin_nested()
    reference_counts, reference = run(_reference_import)
    savepoint.rollback()
    assert body(app.test_client().get("/fhir/Patient"))["total"] == 0
    counts, batched = run(_batched_import)

    assert counts == reference_counts
    first, corrected, again = ([sum(c[k] for c in r) for k in range(3)] for r in counts)
    assert first[0] > 200 and first[1] > 0  # created; updated: merged Patients, shared schools
    assert corrected[0] > 0 and corrected[1] > 0 and corrected[2] > 0
    assert again[0] == again[1] == 0 and again[2] > 200
    assert batched["resources"] == reference["resources"]
    assert batched["history"] == reference["history"]
    assert batched["outbox"] == reference["outbox"]


def _ssda903_return(missing_c1003: bool = True, c1002_start: str = "10/01/2021") -> tuple[Agency, MappingResult,
                                                                                         SourceFile]:
    fixtures = Path(__file__).parent / "fixtures" / "ssda903"
    header, episodes, missing = ((fixtures / n).read_bytes() for n in ("201_header.csv", "201_episodes.csv",
                                                                       "201_missing.csv"))
    episodes = episodes.replace(b"C1002,10/01/2021", f"C1002,{c1002_start}".encode())
    if not missing_c1003:
        missing = b"\n".join(line for line in missing.split(b"\n") if not line.startswith(b"C1003"))
    sources = [SourceFile("201_header.csv", header), SourceFile("201_episodes.csv", episodes),
               SourceFile("201_missing.csv", missing)]
    agency, result = mapper("ssda903-csv")(sources)
    assert agency is not None
    return agency, result, SourceFile("201 return", b"".join(s.content for s in sources))


def _records(app) -> tuple[list[tuple[str, str, str, int]], list[list[str]]]:
    """Each record of the return (kind, key, status, version), and each NULLIFY Provenance's
    targets as (key, version)."""
    with app.extensions["fhir"].repo.unit_of_work(write=False) as uow:
        rows = uow.conn.execute(select(resource.c.res_type, resource.c.res_id, resource.c.version_id,
                                       resource.c.content)).all()
    keys = {f"{r.res_type}/{r.res_id}": r.content["identifier"][0]["value"]
            for r in rows if r.res_type in ("EpisodeOfCare", "Observation", "Flag")}
    records = sorted((r.res_type, keys[f"{r.res_type}/{r.res_id}"], r.content["status"], r.version_id)
                     for r in rows if f"{r.res_type}/{r.res_id}" in keys)
    nullify = [sorted(f"{keys['/'.join(t['reference'].split('/')[:2])]}@{t['reference'].rsplit('/', 1)[1]}"
                      for t in r.content["target"])
               for r in rows if r.res_type == "Provenance"
               and r.content.get("activity", {}).get("coding", [{}])[0].get("code") == "NULLIFY"]
    return records, nullify


def test_a_full_return_sent_as_a_transaction_bundle_retires_what_the_import_retires(app):
    # The import as a Bundle carries the retirement as entries of its own (PUT with ifMatch, and a
    # NULLIFY Provenance): the database afterwards is the import's.
    services = app.extensions["fhir"]
    ctx = RequestContext.system(services.settings.base_url, client_id="etl")
    # mapped afresh for each path: a transaction rewrites the references of the resources it is given
    returns = (lambda: _ssda903_return(), lambda: _ssda903_return(missing_c1003=False, c1002_start="11/01/2021"))

    def reference(agency: Agency, result: MappingResult, source: SourceFile) -> None:
        upserts = usable_upserts(result, lenient=False)
        org, *upserts = with_stored(services.router, [agency_organization(agency), *upserts], agency)
        retirements = retirement_entries(services.router, result, upserts, agency, source, "etl")
        load(services.router, ctx, transaction_bundle(upserts, agency, source, client_id="etl", org=org,
                                                      retirements=retirements))

    def batched(agency: Agency, result: MappingResult, source: SourceFile) -> None:
        assert import_file(services.router, ctx, result, agency, source, "ssda903-csv").written

    conn = services.repo._bound
    savepoint = conn.begin_nested()
    for mapped in returns:
        reference(*mapped())
    by_bundle = _records(app)
    savepoint.rollback()
    for mapped in returns:
        batched(*mapped())
    by_import = _records(app)

    assert by_bundle == by_import
    records, nullify = by_import
    retired = {(kind, key) for kind, key, status, _v in records if status == "entered-in-error"}
    assert retired == {("EpisodeOfCare", "C1002/2021-01-10"), ("Observation", "C1003/2024-02-14/M")}
    assert nullify == [["C1002/2021-01-10@2", "C1003/2024-02-14/M@2"]]


def test_a_bundle_whose_retired_record_changed_since_it_was_read_fails_whole(app):
    # Its retirement entries name the version they replace (ifMatch): a record changed in between
    # fails the Bundle and nothing is written.
    services = app.extensions["fhir"]
    ctx = RequestContext.system(services.settings.base_url, client_id="etl")
    agency, result, source = _ssda903_return()
    assert import_file(services.router, ctx, result, agency, source, "ssda903-csv").written
    agency, result, source = _ssda903_return(missing_c1003=False)
    upserts = usable_upserts(result, lenient=False)
    retirements = retirement_entries(services.router, result, upserts, agency, source, "etl")
    assert [e["request"]["method"] for e in retirements] == ["PUT", "POST"]
    assert import_file(services.router, ctx, result, agency, source, "ssda903-csv").written  # retired meanwhile
    before = _records(app)
    with pytest.raises(FhirError):
        load(services.router, ctx, transaction_bundle(upserts, agency, source, client_id="etl",
                                                      retirements=retirements))
    assert _records(app) == before
