"""The official R4 examples (hl7.fhir.r4.examples 4.0.1) through HTTP, on SQLite and PostgreSQL.

Every example instance of a non-conformance resource type is PUT at its id (POSTed when it has
none): a supported type must be accepted (200/201) and read back equal to what was sent, apart from
``id`` and ``meta.versionId``/``meta.lastUpdated``, with decimals compared as written (``1.00`` is
not ``1.0``). An unsupported type (fhir/models.py UNSUPPORTED_TYPES) must be refused with an
OperationOutcome and 404, which R4 prescribes for "resource type not supported" on create and update
(http.html#create, http.html#update).

Not sent: the conformance resources (StructureDefinition, ValueSet, … the spec's own definitions)
and the collection Bundles that merely package them (Bundle-resources.json alone is 35 MB); those
are definitions rather than examples and cost minutes to validate. ``FHIR_R4_EXAMPLES_ALL=1`` sends
those Bundles too.

Each known exception below names its cause. The test fails if an exception stops happening, so the
list cannot go stale.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import simplejson

from fhir_server.fhir.jsonio import dumps_sorted
from fhir_server.fhir.models import SUPPORTED_TYPES

from ..conftest import service_unavailable

FHIR_JSON = "application/fhir+json"
CONFORMANCE_TYPES = frozenset({
    "StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "ConceptMap", "OperationDefinition",
    "CapabilityStatement", "CompartmentDefinition", "ImplementationGuide"})
DEFINITION_ENTRY_TYPES = CONFORMANCE_TYPES | {"NamingSystem"}
INCLUDE_DEFINITION_BUNDLES = os.environ.get("FHIR_R4_EXAMPLES_ALL") == "1"


@dataclass(frozen=True)
class Known:
    """An example that does not round-trip, and why. ``outcome``: the status it gets, or
    "changed" when it is stored but read back different; ``databases``: where it happens."""

    outcome: int | str
    reason: str
    databases: frozenset[str] = frozenset({"sqlite", "postgresql"})
    definition_bundle: bool = False  # sent only with FHIR_R4_EXAMPLES_ALL=1


KNOWN: dict[str, Known] = {
    "Questionnaire-qs1.json": Known(
        422, "Defect in the example: 32 display items have no linkId, which R4 requires (Questionnaire.item.linkId "
             "1..1); the server is right to refuse it. See test_questionnaire_qs1_is_refused_for_its_missing_linkids."),
    "Subscription-example-error.json": Known(
        "changed", "Accepted (a classic R4 Subscription, subscriptions/criteria.py) but stored as 'requested' without "
                   "its 'error': status active/error and Subscription.error are the server's to set "
                   "(subscription.html; codesystem subscription-status: error = 'the server has an error "
                   "executing the notification'), so a client's 'error' asks for the Subscription afresh."),
}


@dataclass(frozen=True)
class Example:
    name: str
    resource_type: str
    res_id: str | None
    raw: str
    content: dict[str, Any]


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    found = []
    for path in sorted(_package().glob("*.json")):
        if path.name == "package.json" or path.name.split("-", 1)[0] in CONFORMANCE_TYPES:
            continue  # files are named [type]-[id].json: skip the definitions without reading them
        raw = path.read_text(encoding="utf-8")
        content = simplejson.loads(raw, use_decimal=True)
        res_type = content.get("resourceType")
        if res_type in CONFORMANCE_TYPES or (_definition_bundle(content) and not INCLUDE_DEFINITION_BUNDLES):
            continue
        found.append(Example(path.name, res_type, content.get("id"), raw, content))
    return found


def _definition_bundle(content: dict[str, Any]) -> bool:
    entries = content.get("entry") or []
    return content.get("resourceType") == "Bundle" and bool(entries) and all(
        (e.get("resource") or {}).get("resourceType") in DEFINITION_ENTRY_TYPES for e in entries)


def _comparable(content: dict[str, Any]) -> str:
    """The resource without the server-owned id and meta.versionId/lastUpdated, decimals as written."""
    body = {k: v for k, v in content.items() if k != "id"}
    meta = {k: v for k, v in (body.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    return dumps_sorted(body)


def _send(client, example: Example) -> tuple[int | str, str]:
    """(outcome, detail): the status of a refused write, "changed", or 200/201 when it round-trips."""
    if example.res_id is not None:
        res = client.put(f"/fhir/{example.resource_type}/{example.res_id}", data=example.raw, content_type=FHIR_JSON)
    else:
        res = client.post(f"/fhir/{example.resource_type}", data=example.raw, content_type=FHIR_JSON)
    answer = simplejson.loads(res.data, use_decimal=True) if res.data else {}
    if res.status_code not in (200, 201):
        issues = answer.get("issue") or [{}]
        return res.status_code, f"{issues[0].get('diagnostics')} at {issues[0].get('expression')}"
    stored_id = answer["id"]
    back = simplejson.loads(client.get(f"/fhir/{example.resource_type}/{stored_id}").data, use_decimal=True)
    if _comparable(back) != _comparable(example.content):
        return "changed", f"read back differs from what was sent ({example.resource_type}/{stored_id})"
    return res.status_code, ""


def test_r4_examples_round_trip(client, examples, database_url) -> None:
    database = "postgresql" if database_url.startswith("postgres") else "sqlite"
    assert len(examples) > 700 if INCLUDE_DEFINITION_BUNDLES else len(examples) > 690
    unexpected: list[str] = []
    seen_known: set[str] = set()
    counts = {"stored": 0, "refused-unsupported": 0, "known": 0}
    for example in examples:
        outcome, detail = _send(client, example)
        known = KNOWN.get(example.name)
        if known is not None and database in known.databases:
            seen_known.add(example.name)
            if outcome != known.outcome:
                unexpected.append(f"{example.name}: listed as {known.outcome!r} ({known.reason}) but got {outcome!r}")
            counts["known"] += 1
        elif example.resource_type not in SUPPORTED_TYPES:
            if outcome != 404 or "supported" not in detail:
                unexpected.append(f"{example.name}: unsupported type answered {outcome!r}: {detail}")
            counts["refused-unsupported"] += 1
        elif example.resource_type == "AuditEvent":
            # the audit trail is server-written and append-only (fhir_server/audit): 405 for any write
            if outcome != 405:
                unexpected.append(f"{example.name}: an AuditEvent write answered {outcome!r}, not 405")
            counts["refused-server-written"] = counts.get("refused-server-written", 0) + 1
        elif outcome in (200, 201):
            counts["stored"] += 1
        else:
            unexpected.append(f"{example.name}: {outcome!r}: {detail[:300]}")
    for name, known in KNOWN.items():
        expected_here = database in known.databases and (INCLUDE_DEFINITION_BUNDLES or not known.definition_bundle)
        if expected_here and name not in seen_known:
            unexpected.append(f"{name} is listed as a known exception but is not among the examples")
    summary = f"{database}: {len(examples)} examples, {counts}"
    assert not unexpected, summary + "\n" + "\n".join(unexpected)
    assert counts["stored"] > 650, summary


def test_the_definition_bundles_are_only_definitions(examples) -> None:
    """The skipped Bundles hold nothing but conformance resources (a rule, not a hand-made list)."""
    sent_bundles = [e.name for e in examples if e.resource_type == "Bundle"]
    assert "Bundle-bundle-transaction.json" in sent_bundles and "Bundle-father.json" in sent_bundles
    if not INCLUDE_DEFINITION_BUNDLES:
        assert "Bundle-resources.json" not in sent_bundles


def _package() -> Path:
    """The unpacked hl7.fhir.r4.examples package (fetched once into .cache/)."""
    from scripts.fetch_r4_package import PackageError, ensure_package

    try:
        return Path(ensure_package())
    except PackageError as exc:
        service_unavailable(f"The R4 examples package is not available: {exc}")
        raise  # not reached: service_unavailable skips or fails


def _items_without_linkid(items: list[dict[str, Any]], path: str) -> list[str]:
    missing: list[str] = []
    for i, item in enumerate(items):
        if "linkId" not in item:
            missing.append(f"{path}.item[{i}].linkId")
        missing += _items_without_linkid(item.get("item") or [], f"{path}.item[{i}]")
    return missing


def test_questionnaire_qs1_is_refused_for_its_missing_linkids(client) -> None:
    """Questionnaire-qs1.json breaks R4: Questionnaire.item.linkId has cardinality 1..1 (questionnaire.html,
    and the package's own StructureDefinition-Questionnaire.json), and 32 of its display items have none.
    The server refuses it with one issue per missing linkId and nothing else; with linkIds added, the
    same Questionnaire is accepted and reads back equal."""
    package = _package()
    definition = simplejson.loads((package / "StructureDefinition-Questionnaire.json").read_text(encoding="utf-8"))
    link_id = next(e for e in definition["snapshot"]["element"] if e["id"] == "Questionnaire.item.linkId")
    assert (link_id["min"], link_id["max"]) == (1, "1")
    raw = (package / "Questionnaire-qs1.json").read_text(encoding="utf-8")
    content = simplejson.loads(raw, use_decimal=True)
    missing = _items_without_linkid(content["item"], "Questionnaire")
    assert len(missing) == 32
    res = client.put("/fhir/Questionnaire/qs1", data=raw, content_type=FHIR_JSON)
    assert res.status_code == 422
    issues = simplejson.loads(res.data)["issue"]
    assert sorted(e for i in issues for e in i["expression"]) == sorted(missing)
    assert all("linkId" in i["diagnostics"] and "required" in i["diagnostics"] for i in issues)

    def fill(items: list[dict[str, Any]], prefix: str) -> None:
        for i, item in enumerate(items):
            item.setdefault("linkId", f"{prefix}.{i}")
            fill(item.get("item") or [], f"{prefix}.{i}")

    fill(content["item"], "added")
    fixed = simplejson.dumps(content, use_decimal=True)
    outcome, detail = _send(client, Example("Questionnaire-qs1.json", "Questionnaire", "qs1", fixed, content))
    assert outcome == 201, detail  # created: the refused PUT wrote nothing


def test_definitions_with_primitive_extensions_on_extension_values_round_trip(client) -> None:
    """json.html#primitive: an Extension's primitive value may carry its own id/extensions
    (``"_valueString": {"extension": [...]}``). The examples that do are the v2 CodeSystems (and the
    Bundle-v2-valuesets.json that packages them, sent with FHIR_R4_EXAMPLES_ALL=1): each is accepted
    and reads back equal (fhir/extension_primitives.py)."""
    package = _package()
    paths = [p for p in sorted(package.glob("CodeSystem-*.json")) if '"_value' in p.read_text(encoding="utf-8")]
    assert len(paths) > 40
    for path in paths:
        raw = path.read_text(encoding="utf-8")
        content = simplejson.loads(raw, use_decimal=True)
        outcome, detail = _send(client, Example(path.name, "CodeSystem", content["id"], raw, content))
        assert outcome in (200, 201), f"{path.name}: {outcome} {detail}"
