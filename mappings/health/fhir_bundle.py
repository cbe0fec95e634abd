"""``fhir-bundle``: FHIR R4 transaction or collection Bundles sent by health systems, loaded as sent.

Each resource is validated exactly as a create would be (:func:`validate_resource`: structure and
required bindings), then becomes a conditional update on a business identifier so that re-sending
the Bundle changes nothing (http.html#cond-update):

- a Patient on its NHS number when it has one, otherwise on its first identifier;
- an Organization with an ODS code on that code (organisations are shared reference data);
- any other resource on its first identifier (``system`` and ``value`` both present).

A resource without such an identifier is an error: a content hash would change with every correction
and turn a corrected resource into a duplicate. The loader scopes every match to the sending agency
(``_tag``), so a trust's Patient never overwrites another agency's record that happens to carry the
same NHS number; ODS-coded Organizations are the exception (``shared`` reference data).

References between entries (the entry's ``fullUrl``, or ``Type/id`` relative to the sender's base)
are rewritten to the new entries' ``urn:uuid`` fullUrls, which the transaction resolves. A relative
reference to a resource that is not in the Bundle cannot be resolved here: it is reported and
replaced by its ``display`` (the reference text when there is none).

The agency (docs/formats/fhir-bundle.md): the Bundle's ``meta.tag`` in our source-agency system
(``health/<ODS>``), else its ``meta.source`` in our agency form (``…/agency/health/<ODS>``), else
the only Organization in the Bundle with an ODS code.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.fhir import jsonio
from fhir_server.fhir.validation import validate_resource

from .. import systems
from ..core import (Agency, MappingResult, SourceFile, SourceIssue, Upsert, health_organisation, identifier_match,
                    reject_dependents)

ACCEPTED_TYPES = ("transaction", "collection")
AGENCY_SOURCE_PREFIX = f"{systems.CANONICAL_BASE}/agency/health/"
# Elements the server owns: the sender's id and version mean nothing here.
SERVER_META = ("versionId", "lastUpdated", "source")


@dataclass
class _Entry:
    index: int
    resource: dict[str, Any]
    record: str
    full_url: str | None
    upsert: Upsert | None = None
    keys: list[str] = field(default_factory=list)  # how other entries may refer to it

    @property
    def pointer(self) -> str:
        return f"/entry/{self.index}/resource"


def map_files(files: list[SourceFile]) -> tuple[Agency | None, MappingResult]:
    """One Bundle per file; several files must come from one agency (one transaction, one Provenance)."""
    combined = MappingResult()
    agency: Agency | None = None
    for source in files:
        file_agency, result = map_bundle(source)
        combined.upserts += result.upserts
        combined.issues += result.issues
        combined.records += result.records
        combined.rejected_records += result.rejected_records
        if file_agency is None:
            continue
        if agency is not None and file_agency.code != agency.code:
            combined.issues.append(SourceIssue(
                "error", source.name, "/", "meta",
                f"comes from {file_agency.code} but an earlier file from {agency.code}: send them separately"))
            continue
        agency = agency or file_agency
    return agency, combined


def map_bundle(source: SourceFile) -> tuple[Agency | None, MappingResult]:
    """Map one Bundle (bundle.html, http.html#transaction) to upserts and issues; never raises."""
    result = MappingResult()

    def issue(severity: str, location: str, fld: str, message: str, record: str = "", code: str = "value") -> None:
        result.issues.append(SourceIssue(severity, source.name, location, fld, message, code=code, record=record))

    bundle = _parse(source, issue)
    if bundle is None:
        return None, result
    raw_entries = bundle.get("entry") or []
    result.records = len(raw_entries)
    entries = _entries(bundle, raw_entries, issue)
    agency = _agency(bundle, entries, issue)
    if agency is None:
        return None, result

    keyed: dict[str, _Entry] = {}
    seen_matches: dict[tuple[str, str], int] = {}
    for entry in entries:
        _validate(entry, issue)
        match = _match(entry, agency, issue)
        if match == "agency":
            entry.upsert = None  # the loader writes the agency Organization itself
            for key in entry.keys:
                keyed[key] = entry
            issue("information", entry.pointer, "identifier",
                  "the sending organisation: merged with the agency Organization the import writes",
                  entry.record, code="informational")
            continue
        if match is not None:
            other = seen_matches.setdefault((entry.resource["resourceType"], match), entry.index)
            if other != entry.index:
                issue("error", entry.pointer, "identifier",
                      f"has the same business identifier as entry {other}: one resource per identifier",
                      entry.record, code="duplicate")
        # Patients and ODS-coded Organizations are written by other imports too: merged, not replaced
        shared = entry.resource["resourceType"] == "Organization" and _ods(entry.resource) is not None
        merge = shared or entry.resource["resourceType"] == "Patient"
        entry.upsert = Upsert(entry.resource, match or "", record=entry.record, merge=merge, shared=shared)
        for key in entry.keys:
            keyed[key] = entry
    for entry in entries:
        _rewrite_references(entry, keyed, agency, issue)
    result.upserts = [e.upsert for e in entries if e.upsert is not None]
    reject_dependents(result, source.name)
    result.count_rejected()
    return agency, result


def _parse(source: SourceFile, issue: Any) -> dict[str, Any] | None:
    try:
        bundle = jsonio.loads(source.content)
    except FhirError as exc:
        issue("fatal", "/", "", exc.diagnostics, code="structure")
        return None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        issue("fatal", "/", "resourceType", "is not a FHIR Bundle", code="structure")
        return None
    if bundle.get("type") not in ACCEPTED_TYPES:
        issue("fatal", "/", "type", f"Bundle type {bundle.get('type')!r} is not accepted: send a transaction or "
                                    "a collection", code="not-supported")
        return None
    if not isinstance(bundle.get("entry", []), list):
        issue("fatal", "/", "entry", "must be an array", code="structure")
        return None
    return bundle


def _entries(bundle: dict[str, Any], raw_entries: list[Any], issue: Any) -> list[_Entry]:
    out: list[_Entry] = []
    for index, raw in enumerate(raw_entries):
        record = f"entry {index}"
        if not isinstance(raw, dict) or not isinstance(raw.get("resource"), dict):
            issue("error", f"/entry/{index}", "resource", "the entry has no resource", record, code="required")
            continue
        method = (raw.get("request") or {}).get("method") if isinstance(raw.get("request"), dict) else None
        if bundle["type"] == "transaction" and method in ("GET", "HEAD"):
            issue("warning", f"/entry/{index}/request", "method", f"{method} entries are ignored", record,
                  code="informational")
            continue
        if bundle["type"] == "transaction" and method in ("DELETE", "PATCH"):
            issue("error", f"/entry/{index}/request", "method",
                  f"{method} is not imported: send the whole resource (POST or PUT)", record, code="not-supported")
            continue
        resource = copy.deepcopy(raw["resource"])
        full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
        entry = _Entry(index, resource, record, full_url)
        entry.keys = _keys(resource, full_url)
        out.append(entry)
    return out


def _keys(resource: dict[str, Any], full_url: str | None) -> list[str]:
    """The ways an entry can be referenced: its fullUrl, and ``Type/id`` (relative to the sender's
    base) when the resource has an id (references.html#literal, bundle.html#references)."""
    keys: list[str] = []
    if full_url:
        keys.append(full_url)
    res_type, res_id = resource.get("resourceType"), resource.get("id")
    if isinstance(res_type, str) and isinstance(res_id, str):
        keys.append(f"{res_type}/{res_id}")
        if full_url and full_url.endswith(f"/{res_type}/{res_id}"):
            keys.append(full_url)
    return keys


def _agency(bundle: dict[str, Any], entries: list[_Entry], issue: Any) -> Agency | None:
    """meta.tag, then meta.source, then the one ODS-coded Organization (docs/formats/fhir-bundle.md)."""
    meta = bundle.get("meta") if isinstance(bundle.get("meta"), dict) else {}
    orgs = {_ods(e.resource): e.resource for e in entries if e.resource.get("resourceType") == "Organization"}
    orgs.pop(None, None)
    code: str | None = None
    for tag in meta.get("tag") or []:
        if isinstance(tag, dict) and tag.get("system") == systems.AGENCY_TAG_SYSTEM:
            kind, _, value = str(tag.get("code", "")).partition("/")
            if kind != "health" or not value:
                issue("fatal", "/meta/tag", "code", f"{tag.get('code')!r} is not a health agency (health/<ODS code>)")
                return None
            code = value
    source = meta.get("source")
    if code is None and isinstance(source, str) and source.startswith(AGENCY_SOURCE_PREFIX):
        code = source.removeprefix(AGENCY_SOURCE_PREFIX).strip("/") or None
    if code is None and len(orgs) == 1:
        code = next(iter(orgs))
    if code is None:
        found = f"{len(orgs)} Organizations with ODS codes" if orgs else "no Organization with an ODS code"
        issue("fatal", "/meta", "tag",
              f"cannot tell which NHS organisation sent the Bundle ({found}): add meta.tag "
              f"{{system: {systems.AGENCY_TAG_SYSTEM}, code: health/<ODS code>}}", code="required")
        return None
    org = orgs.get(code)
    return health_organisation(code, org["name"] if org and isinstance(org.get("name"), str) else None)


def _ods(resource: dict[str, Any]) -> str | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == systems.ODS_CODE and ident.get("value"):
            return str(ident["value"])
    return None


def _validate(entry: _Entry, issue: Any) -> None:
    """The server's own validation of a create (validation.html): every problem is an error issue
    naming the entry and the element (the validator's FHIRPath expression)."""
    resource = entry.resource
    try:
        validate_resource(resource)
    except FhirError as exc:
        for problem in exc.issues:
            where = ", ".join(problem.expression) or str(resource.get("resourceType", "resource"))
            issue("error", entry.pointer, where, problem.diagnostics, entry.record, code=problem.code)
    resource.pop("id", None)  # the server assigns ids; the sender's would clash with other agencies'
    meta = resource.get("meta")
    if isinstance(meta, dict):
        for name in SERVER_META:
            meta.pop(name, None)
        if isinstance(meta.get("tag"), list):  # the loader tags the source agency: a sender cannot
            meta["tag"] = [t for t in meta["tag"]
                           if not (isinstance(t, dict) and t.get("system") == systems.AGENCY_TAG_SYSTEM)]
            if not meta["tag"]:
                meta.pop("tag")
        if not meta:
            resource.pop("meta")


def _match(entry: _Entry, agency: Agency, issue: Any) -> str | None:
    """The conditional-update criterion of one resource, ``"agency"`` for the sender's own
    Organization, or None (with an error issue) when there is no usable identifier."""
    resource = entry.resource
    res_type = resource.get("resourceType")
    identifiers = [i for i in resource.get("identifier") or [] if isinstance(i, dict)] \
        if isinstance(resource.get("identifier"), list) else []
    if res_type == "Organization":
        ods = _ods(resource)
        if ods == agency.code:
            return "agency"
        if ods:
            return identifier_match(systems.ODS_CODE, ods)
    if res_type == "Patient":
        for n, ident in enumerate(identifiers):
            if ident.get("system") == systems.NHS_NUMBER:
                value = str(ident.get("value", ""))
                if not systems.nhs_number_is_valid(value):
                    issue("error", entry.pointer, f"identifier[{n}].value",
                          f"{value!r} is not a valid NHS number (10 digits, modulus-11 check digit)", entry.record)
                    return None
                return identifier_match(systems.NHS_NUMBER, value.replace(" ", ""))
    for ident in identifiers:
        if ident.get("system") and ident.get("value"):
            return identifier_match(str(ident["system"]), str(ident["value"]))
    issue("error", entry.pointer, "identifier",
          f"a {res_type} needs an identifier (system and value) so that sending it again updates it instead of "
          "creating a duplicate", entry.record, code="required")
    return None


def _rewrite_references(entry: _Entry, keyed: dict[str, _Entry], agency: Agency, issue: Any) -> None:
    """Point references to other entries at their new fullUrls (references.html#literal)."""

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for n, item in enumerate(node):
                walk(item, f"{path}/{n}")
            return
        if not isinstance(node, dict):
            return
        ref = node.get("reference")
        if isinstance(ref, str) and not ref.startswith("#"):
            target = keyed.get(ref)
            if target is not None:
                node["reference"] = target.upsert.full_url if target.upsert is not None else agency.full_url
            elif _is_local(ref):
                issue("warning", f"{entry.pointer}{path}", "reference",
                      f"{ref!r} is not in the Bundle, so it cannot be linked here: kept as display text",
                      entry.record, code="not-found")
                node.pop("reference")
                node.setdefault("display", ref)
        for key, value in node.items():
            if key != "contained" and isinstance(value, (dict, list)):
                walk(value, f"{path}/{key}")

    walk(entry.resource, "")


def _is_local(ref: str) -> bool:
    """A relative literal reference (``Type/id``) or a bundle-local placeholder: both mean something
    only on the sender's side. Absolute URLs to other servers and conditional references stay."""
    if ref.startswith(("urn:uuid:", "urn:oid:")):
        return True
    return "://" not in ref and "?" not in ref
