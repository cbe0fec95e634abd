"""``GET [base]/metadata`` and our conformance resources, through HTTP on SQLite and PostgreSQL.

The CapabilityStatement may claim only what works: each claim is exercised here (every listed
search parameter, include and revinclude is accepted by a strict search; every operation resolves
to a readable OperationDefinition and can be invoked; each interaction flag is tried once).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import simplejson

from fhir_server.conformance import (ConformanceError, clear_cache, load_conformance_resources,
                                     read_conformance_resources, supported_base_search_parameters)
from fhir_server.fhir.models import SUPPORTED_TYPES
from fhir_server.fhir.validation import validate_resource
from fhir_server.search.registry import SearchRegistry

from ..conftest import TEST_BASE_URL

FHIR_JSON = "application/fhir+json"
STRICT = {"Prefer": "handling=strict"}
PROFILES = Path(__file__).resolve().parents[2] / "profiles"
SAMPLE_VALUES = {"token": "x", "string": "x", "date": "2020-01-01", "number": "1", "quantity": "1",
                 "reference": "x", "uri": "http://example.org/x", "special": "x"}
SPECIAL_VALUES = {"near": "51.5|-0.12|1|km",
                  "_filter": "_id pr true"}  # special parameters with a grammar of their own


def sample_value(registry: SearchRegistry, res_type: str | None, name: str, kind: str) -> str:
    """A well-formed value for a listed parameter; a composite's joins its components' with '$'."""
    if kind == "special":
        return SPECIAL_VALUES.get(name, SAMPLE_VALUES["special"])
    if kind == "composite":
        param = registry.get(res_type, name) if res_type else None
        assert param is not None
        return "$".join(SAMPLE_VALUES[registry.definition(url)["type"]] for url, _ in param.components)
    return SAMPLE_VALUES[kind]


def body(response):
    return simplejson.loads(response.data, use_decimal=True)


@pytest.fixture
def statement(client):
    res = client.get("/fhir/metadata")
    assert res.status_code == 200, res.data
    assert res.content_type.startswith(FHIR_JSON)
    return body(res)


@pytest.fixture
def loaded(app, settings):
    """Our conformance resources stored (the base SearchParameters only where a test asks)."""
    return load_conformance_resources(app.extensions["fhir"].repo, settings, base_search_parameters=False)


def _resources(statement) -> dict[str, dict]:
    return {r["type"]: r for r in statement["rest"][0]["resource"]}


# -- the statement ---------------------------------------------------------------------------------

def test_metadata_shape(statement):
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["status"] == "active" and statement["kind"] == "instance"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["format"] == ["application/fhir+json", "json"]  # no XML yet
    assert statement["patchFormat"] == ["application/json-patch+json", "application/fhir+json"]
    assert statement["implementation"]["url"] == TEST_BASE_URL
    assert statement["software"]["name"]
    rest = statement["rest"][0]
    assert rest["mode"] == "server"
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "search-system", "history-system"}
    assert {p["name"] for p in rest["searchParam"]} >= {"_id", "_lastUpdated"}
    assert set(_resources(statement)) == set(SUPPORTED_TYPES)
    validate_resource(statement)  # a valid R4 CapabilityStatement


def test_every_resource_claims_exactly_what_is_implemented(statement):
    for res_type, entry in _resources(statement).items():
        if res_type == "AuditEvent":
            continue  # server-written, read-only (tests/functional/test_audit.py)
        assert {i["code"] for i in entry["interaction"]} == {
            "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
            "search-type"}, res_type
        assert entry["versioning"] == "versioned-update"
        assert entry["readHistory"] is True and entry["updateCreate"] is True
        assert entry["conditionalCreate"] is True and entry["conditionalUpdate"] is True
        assert entry["conditionalRead"] == "full-support" and entry["conditionalDelete"] == "single"
        assert entry["referencePolicy"] == ["literal", "logical"]
        assert {p["type"] for p in entry.get("searchParam", [])} <= set(SAMPLE_VALUES) | {"composite", "special"}, \
            res_type


def test_search_params_come_from_the_registry_with_composite_and_near(statement, settings):
    registry = SearchRegistry.load(settings.profiles_dir)
    patient = _resources(statement)["Patient"]
    listed = {p["name"]: p for p in patient["searchParam"]}
    assert listed["name"] == {"name": "name", "definition": "http://hl7.org/fhir/SearchParameter/Patient-name",
                              "type": "string"}
    assert "_id" in listed
    assert listed["_text"]["definition"] == "http://hl7.org/fhir/SearchParameter/DomainResource-text"
    assert listed["_content"]["type"] == "string" and listed["_list"]["type"] == "special"
    assert "_text" not in {p["name"] for p in _resources(statement)["Bundle"]["searchParam"]}  # no narrative
    observation = {p["name"] for p in _resources(statement)["Observation"]["searchParam"]} - {
        "_text", "_content", "_list"}  # search/special.py
    assert "code-value-quantity" in observation  # composite (search/composite.py)
    assert set(registry.params_for("Observation")) == observation - {"_filter"}
    assert listed["_filter"]["type"] == "special"
    location = {p["name"]: p["type"] for p in _resources(statement)["Location"]["searchParam"]}
    assert location["near"] == "special"


def test_every_listed_search_param_include_and_revinclude_is_accepted(client, statement, settings):
    """One strict search per type with every listed parameter: an unknown one would be a 400."""
    registry = SearchRegistry.load(settings.profiles_dir)
    for res_type, entry in _resources(statement).items():
        params = [(p["name"], sample_value(registry, res_type, p["name"], p["type"]))
                  for p in entry.get("searchParam", [])]
        for key in ("searchInclude", "searchRevInclude"):
            if entry.get(key):
                params.append(("_include" if key == "searchInclude" else "_revinclude", ",".join(entry[key])))
        res = client.get(f"/fhir/{res_type}?{urlencode(params)}", headers=STRICT)
        assert res.status_code == 200, (res_type, res.data[:500])
    params = [(p["name"], sample_value(registry, None, p["name"], p["type"]))
              for p in statement["rest"][0]["searchParam"]]
    assert client.get(f"/fhir?{urlencode(params)}", headers=STRICT).status_code == 200


def test_every_listed_operation_resolves_and_is_defined(client, statement, loaded):
    listed = [(t, op) for t, entry in _resources(statement).items() for op in entry.get("operation", [])]
    assert ("Patient", {"name": "validate",
                        "definition": "https://w3id.org/sg-fhir/OperationDefinition/validate"}) in listed
    definitions = {}
    for _, op in listed:
        if op["definition"] not in definitions:
            found = body(client.get(f"/fhir/OperationDefinition?{urlencode({'url': op['definition']})}"))
            assert found["total"] == 1, op
            definitions[op["definition"]] = found["entry"][0]["resource"]
        assert definitions[op["definition"]]["code"] == op["name"]
    sample = listed[:: max(1, len(listed) // 20)]
    sample += [(t, op) for t, op in listed if not definitions[op["definition"]].get("type")]
    for res_type, op in sample:  # a sample of types, and every instance-only operation: the router finds each
        definition = definitions[op["definition"]]
        path = f"/fhir/{res_type}/${op['name']}" if definition.get("type") else \
            f"/fhir/{res_type}/no-such-id/${op['name']}"
        res = client.post(path, data=json.dumps({"resourceType": res_type}), content_type=FHIR_JSON)
        assert res.status_code != 405, (res_type, op, res.data)
        if res.status_code == 404:  # an instance operation on an unknown id: the resource, not the operation
            assert "operation" not in body(res)["issue"][0].get("expression", []), (res_type, op, res.data)


def test_mode_parameter(client, statement):
    normative = body(client.get("/fhir/metadata?mode=normative"))
    assert normative["rest"] == statement["rest"]
    res = client.get("/fhir/metadata?mode=terminology")
    assert res.status_code == 400 and body(res)["issue"][0]["code"] == "not-supported"
    assert client.get("/fhir/metadata?mode=everything").status_code == 400


def test_summary_keeps_the_mandatory_elements(client):
    res = body(client.get("/fhir/metadata?_summary=true"))
    assert res["resourceType"] == "CapabilityStatement" and res["fhirVersion"] == "4.0.1"


def test_metadata_is_built_once_and_fast(client, statement):
    start = time.perf_counter()
    for _ in range(10):
        assert client.get("/fhir/metadata").status_code == 200
    assert time.perf_counter() - start < 2.0
    assert body(client.get("/fhir/metadata"))["date"] == statement["date"]  # the cached statement


# -- the interaction claims, once each --------------------------------------------------------------

def _send(client, method, url, resource=None, **headers):
    data = json.dumps(resource) if resource is not None else None
    return client.open(f"/fhir/{url}", method=method, data=data, content_type=FHIR_JSON, headers=headers)


def test_claimed_interactions_work(client):
    sent = {"resourceType": "Patient", "id": "cap-1", "identifier": [{"system": "urn:s", "value": "cap-1"}]}
    assert _send(client, "PUT", "Patient/cap-1", sent).status_code == 201  # updateCreate
    res = _send(client, "GET", "Patient/cap-1", **{"If-None-Match": 'W/"1"'})
    assert res.status_code == 304  # conditionalRead
    sent["active"] = True
    assert _send(client, "PUT", "Patient/cap-1", sent, **{"If-Match": 'W/"1"'}).status_code == 200
    assert _send(client, "PUT", "Patient/cap-1", sent, **{"If-Match": 'W/"1"'}).status_code == 412  # versioned
    assert _send(client, "GET", "Patient/cap-1/_history/1").status_code == 200  # vread, readHistory
    assert body(_send(client, "GET", "Patient/cap-1/_history"))["total"] == 2
    assert _send(client, "POST", "Patient", {"resourceType": "Patient"},
                 **{"If-None-Exist": "identifier=urn:s|cap-1"}).status_code == 200  # conditionalCreate
    assert _send(client, "PUT", "Patient?identifier=urn:s|cap-1",
                 {**sent, "gender": "female"}).status_code == 200  # conditionalUpdate
    patch = client.patch("/fhir/Patient/cap-1", data=json.dumps([{"op": "remove", "path": "/active"}]),
                         content_type="application/json-patch+json")
    assert patch.status_code == 200
    fhirpath_patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "active"}, {"name": "value", "valueBoolean": False}]}]}
    assert _send(client, "PATCH", "Patient/cap-1", fhirpath_patch).status_code == 200
    assert body(_send(client, "GET", "Patient/cap-1"))["active"] is False
    assert _send(client, "GET", "Patient/_history").status_code == 200
    assert _send(client, "GET", "_history").status_code == 200
    assert _send(client, "GET", "?_id=cap-1").status_code == 200
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": "Patient/cap-1"}}]}
    assert _send(client, "POST", "", batch).status_code == 200
    batch["type"] = "transaction"
    assert _send(client, "POST", "", batch).status_code == 200
    assert _send(client, "DELETE", "Patient?identifier=urn:s|cap-1").status_code in (200, 204)  # single
    assert _send(client, "GET", "Patient/cap-1").status_code == 410


# -- conformance resources -----------------------------------------------------------------------------

def test_operation_definition_is_readable_and_loading_is_idempotent(client, app, settings, loaded):
    assert "OperationDefinition/validate" in loaded.created
    res = client.get("/fhir/OperationDefinition/validate")
    assert res.status_code == 200
    assert body(res)["url"] == "https://w3id.org/sg-fhir/OperationDefinition/validate"
    again = load_conformance_resources(app.extensions["fhir"].repo, settings, base_search_parameters=False)
    assert again.created == [] and again.updated == []
    assert body(client.get("/fhir/OperationDefinition/validate"))["meta"]["versionId"] == "1"


def test_base_search_parameters_are_published(client, app, settings):
    report = load_conformance_resources(app.extensions["fhir"].repo, settings)
    assert len(report.created) > 1000
    found = body(client.get("/fhir/SearchParameter?base=Patient&code=name"))
    assert [e["resource"]["id"] for e in found["entry"]] == ["Patient-name"]
    composite = body(client.get("/fhir/SearchParameter?code=code-value-quantity"))
    assert composite["total"] == 1  # searchable here (search/composite.py), so published
    again = load_conformance_resources(app.extensions["fhir"].repo, settings)
    assert again.created == [] and again.updated == [] and again.unchanged == len(report.created)


def test_published_base_search_parameters_are_valid(settings):
    registry = SearchRegistry.load(settings.profiles_dir)
    published = supported_base_search_parameters(registry)
    assert {sp["type"] for sp in published} <= set(SAMPLE_VALUES) | {"composite", "special"}
    assert "Location-near" in {sp["id"] for sp in published}
    assert "MedicinalProduct-name" not in {sp["id"] for sp in published}  # only for a refused type
    for sp in published:
        validate_resource(sp)


def test_profiles_dir_resources_are_checked(tmp_path):
    def read():
        clear_cache()
        return read_conformance_resources(tmp_path)

    (tmp_path / "operations").mkdir()
    ours = json.loads((PROFILES / "operations" / "validate.json").read_text())
    (tmp_path / "operations" / "a.json").write_text(json.dumps(ours))
    (tmp_path / "r4").mkdir()
    (tmp_path / "r4" / "table.json").write_text("{}")  # generated tables are not resources
    assert [r["id"] for r in read().resources] == ["validate"]
    (tmp_path / "operations" / "b.json").write_text(json.dumps(ours))
    with pytest.raises(ConformanceError, match="also defined"):
        read()
    (tmp_path / "operations" / "b.json").write_text(json.dumps({**ours, "id": "v2", "url": "urn:x:2",
                                                                "status": "nonsense"}))
    with pytest.raises(ConformanceError, match="invalid"):
        read()
    (tmp_path / "operations" / "b.json").write_text(json.dumps({**ours, "id": "v2"}))
    with pytest.raises(ConformanceError, match="url .* also used"):
        read()
    (tmp_path / "operations" / "b.json").write_text(json.dumps({"not": "a resource"}))
    with pytest.raises(ConformanceError, match="not a FHIR resource"):
        read()
    clear_cache()
