"""One mapped file → one transaction Bundle → written atomically (http.html#transaction).

Every resource becomes a conditional update on its business identifier (``PUT Patient?identifier=…``),
so importing the same file twice changes nothing and a corrected file updates only what changed. The
agency's Organization is upserted the same way. One Provenance per file records the agency and the
client as agents, the file's SHA-256 as the source entity, the lawful basis as policy, and every
resource as a target; it is a conditional create keyed on the file hash, so a re-import adds none.

Every conditional update is scoped to the importing agency's resources (``&_tag=`` its
source-agency tag), except ``shared`` reference data and the agency Organization itself: an
agency's import never overwrites another agency's record with the same identifier.

Upserts in ``merge`` mode are first combined with the resource they will update (:mod:`.merge`):
so two formats of one agency writing the same Patient complete it instead of taking turns to
replace it.

:func:`import_file` writes the file's transaction through :mod:`.writer`, which batches what a
transaction Bundle does entry by entry (the matches, and the history, index and outbox rows) with
the same rules and results, and reads the resources to merge inside the transaction, locked.
:func:`transaction_bundle` and :func:`load` are the same import as a Bundle through ``POST
[base]``, the reference the batched path is tested against (tests/mappings/test_batched_load.py);
for a full return the Bundle says what it retires (:func:`retirement_entries`), as a transaction
Bundle does nothing it does not say.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.collector import fewer_collections
from fhir_server.errors import DatabaseBusy, FhirError, Issue, Unprocessable, operation_outcome
from fhir_server.repository.context import RequestContext
from fhir_server.rest.bundles import process_bundle
from fhir_server.rest.messages import FhirRequest
from fhir_server.rest.router import Router
from fhir_server.storage.db import retry_when_busy

from . import systems
from .core import Agency, MappingResult, SourceFile, Upsert, agency_scope, identifier_match
from .merge import merge_resource, union
from .snapshot import Retirement, kept_keys
from .writer import CREATED, RETIRED, UNCHANGED, UPDATED, PutEntry, write_transaction

PROVENANCE_ACTIVITY = {"system": "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle",
                       "code": "transform", "display": "Transform/Translate Record Lifecycle Event"}
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
# How long an import waits, in all, for the embedded database's write lock held by another writer
# (another import holds it for its whole transaction: up to the minutes of a large file).
LOCK_WAIT = 30 * 60.0


@dataclass
class ImportSummary:
    """What an import did, for the operation's answer and the CLI's summary line."""

    file: str
    format: str
    records: int
    rejected_records: int
    resources: int
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    retired: int = 0  # stored records a full return no longer lists, now entered-in-error
    issues: list[Issue] = field(default_factory=list)
    written: bool = False

    def outcome(self) -> dict[str, Any]:
        headline = Issue("information", "informational",
                         f"{self.file} ({self.format}): {self.records} records, {self.rejected_records} rejected; "
                         f"{self.resources} resources: {self.created} created, {self.updated} updated, "
                         f"{self.unchanged} unchanged, {self.retired} retired"
                         + ("" if self.written else "; nothing written"))
        return operation_outcome([headline, *self.issues])


def usable_upserts(result: MappingResult, *, lenient: bool) -> list[Upsert]:
    """Default mode: any error rejects the whole file (returns []); lenient mode drops the records
    that have errors and keeps the rest."""
    if not result.has_errors:
        return list(result.upserts)
    bad = result.error_records()
    if not lenient or "" in bad:  # "": a file-level error, nothing can be trusted
        return []
    return [u for u in result.upserts if u.record not in bad]


def agency_organization(agency: Agency) -> Upsert:
    """The agency's Organization, matched on its identifier alone (``shared``: it is the agency
    itself, which another agency's file may also name); merged, so that what another import adds
    to it (a health system's Bundle describing the trust) is kept."""
    return Upsert({"resourceType": "Organization", "identifier": [agency.identifier], "active": True,
                   "name": agency.name},
                  identifier_match(agency.identifier["system"], agency.identifier["value"]),
                  full_url=agency.full_url, merge=True, shared=True)


def criteria(upsert: Upsert, agency: Agency) -> str:
    """The search of the upsert's conditional update (``Type?<criteria>``): its match among the
    importing agency's resources only, unless the upsert is ``shared`` reference data."""
    return upsert.match if upsert.shared else f"{upsert.match}&{agency_scope(agency)}"


def transaction_bundle(upserts: list[Upsert], agency: Agency, source: SourceFile, *,
                       client_id: str | None, recorded: datetime | None = None,
                       org: Upsert | None = None, retirements: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The transaction Bundle for one file: the agency Organization (``org``, default
    :func:`agency_organization`), every upsert, one Provenance; then, for a full return, the
    ``retirements`` (:func:`retirement_entries`). A transaction Bundle does what its entries say
    and nothing else (http.html#transaction): it is a full return's retirement only if it says so."""
    org = org or agency_organization(agency)
    entries = [_entry(org, agency)]
    entries += [_entry(u, agency) for u in upserts]
    entries.append(_provenance_entry(upserts, org, agency, source, client_id, recorded))
    entries += retirements or []
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def retirement_entries(router: Router, result: MappingResult, upserts: list[Upsert], agency: Agency,
                       source: SourceFile, client_id: str | None) -> list[dict[str, Any]]:
    """A full return's retirement (:mod:`.snapshot`) as transaction entries, for the import sent as
    a Bundle (:func:`transaction_bundle`): ``PUT Type/id`` of each stale record's entered-in-error
    version with ``ifMatch`` its current version (http.html#concurrency: the Bundle fails, nothing
    written, if the record changed since it was read), then ``POST Provenance`` (NULLIFY) naming
    the versions those PUTs make — what :func:`import_file` writes inside its own transaction.
    Read now, in a read-only unit of work; none for a format that is not a full return."""
    retirement = _retirement(result, upserts, agency, source, client_id)
    if retirement is None:
        return []
    children = {url for snap in retirement.snapshots for url in snap.spans}
    with router.repo.unit_of_work(write=False) as uow:
        local = {}
        for u in upserts:
            if u.full_url in children:
                ids = uow.find(u.resource_type, parse_qsl(criteria(u, agency), keep_blank_values=True))
                if len(ids) == 1:
                    local[u.full_url] = f"{u.resource_type}/{ids[0]}"
        found = retirement.find(uow, local, lock=False)
    if not found:
        return []
    entries = [{"resource": {**body, "id": row.res_id},
                "request": {"method": "PUT", "url": f"{row.res_type}/{row.res_id}",
                            "ifMatch": f'W/"{row.version_id}"'}} for row, body in found]
    targets = [f"{row.res_type}/{row.res_id}/_history/{row.version_id + 1}" for row, _body in found]
    entries.append({"resource": retirement.provenance(targets), "request": {"method": "POST", "url": "Provenance"}})
    return entries


def with_stored(router: Router, upserts: list[Upsert], agency: Agency) -> list[Upsert]:
    """``upserts`` with each one in ``merge`` mode combined with the stored resource it will update
    (:func:`merge.merge_resource`). Read before the transaction, in a read-only unit of work: one
    search per merging upsert, one read for all of them. No match, or several (the transaction
    then fails on them), leaves the upsert as it is. The read is not locked: an import that changes
    the same resource between this read and the transaction's write loses what it added to it to
    this one (docs/formats/README.md), so one agency's imports are best run one after another."""
    wanted = [(n, u) for n, u in enumerate(upserts) if u.merge]
    if not wanted:
        return upserts
    targets: dict[int, tuple[str, str]] = {}
    with router.repo.unit_of_work(write=False) as uow:
        for n, upsert in wanted:
            ids = uow.find(upsert.resource_type, parse_qsl(criteria(upsert, agency), keep_blank_values=True))
            if len(ids) == 1:
                targets[n] = (upsert.resource_type, ids[0])
        stored = uow.read_many(list(targets.values())) if targets else {}
    out = list(upserts)
    for n, target in targets.items():
        if target in stored:
            out[n] = replace(upserts[n], resource=merge_resource(stored[target], upserts[n].resource))
    return out


def load(router: Router, ctx: RequestContext, bundle: dict[str, Any]) -> dict[str, Any]:
    """Write the bundle as one transaction through the same path as ``POST [base]``; returns the
    transaction-response Bundle. Raises a FhirError (nothing written) if any entry fails."""
    request = FhirRequest("POST", "", ctx, headers={"prefer": "return=OperationOutcome"}, body=bundle,
                          content_type="application/fhir+json")
    # One file is one transaction however large: the HTTP limit on Bundle entries is for clients.
    response = process_bundle(router, request, max_entries=None)
    if response.status >= 400 or response.resource is None:
        raise Unprocessable("The import transaction failed")
    return response.resource


def import_file(router: Router, ctx: RequestContext, result: MappingResult, agency: Agency,
                source: SourceFile, fmt: str, *, lenient: bool = False) -> ImportSummary:
    """Map-then-load for one file, with the all-or-nothing rule for errors (unless ``lenient``)."""
    upserts = usable_upserts(result, lenient=lenient)
    summary = ImportSummary(source.name, fmt, result.records,
                            result.records if not upserts and result.has_errors else result.rejected_records,
                            len(upserts), issues=[i.to_issue() for i in result.issues])
    if not upserts:
        return summary
    retirement = _retirement(result, upserts, agency, source, ctx.client_id)
    try:
        with fewer_collections():  # fhir_server/collector.py: ~13 % of an import's CPU was collections
            outcomes = retry_when_busy(lambda: write_file(router, ctx, upserts, agency, source,
                                                          retirement=retirement), within=LOCK_WAIT)
    except DatabaseBusy:
        raise  # still locked after LOCK_WAIT: a 503 (try again), not a rejected file
    except FhirError as exc:
        summary.issues += exc.issues
        return summary
    summary.written = True
    summary.created = outcomes.count(CREATED)
    summary.updated = outcomes.count(UPDATED)
    summary.unchanged = outcomes.count(UNCHANGED)
    summary.retired = outcomes.count(RETIRED)
    summary.issues += [Issue("information", "informational",
                             f"{reference} ({key}) is no longer in this full return: now entered-in-error",
                             (reference,)) for reference, key in (retirement.retired if retirement else [])]
    return summary


def _retirement(result: MappingResult, upserts: list[Upsert], agency: Agency, source: SourceFile,
                client_id: str | None) -> Retirement | None:
    """The retirement step of a full return (:mod:`.snapshot`), for the children still loaded
    (lenient mode leaves out a child with errors: nothing of theirs is retired)."""
    if not result.snapshots:
        return None
    loaded = {u.full_url for u in upserts}
    for snap in result.snapshots:
        snap.spans = {url: span for url, span in snap.spans.items() if url in loaded}
    kept = kept_keys([u.resource for u in upserts], {s.system for s in result.snapshots})
    provenance = _provenance_entry([], agency_organization(agency), agency, source, client_id, None)
    return Retirement(result.snapshots, kept, agency.tag, provenance, source.name)


def write_file(router: Router, ctx: RequestContext, upserts: list[Upsert], agency: Agency, source: SourceFile,
               *, recorded: datetime | None = None, org: Upsert | None = None,
               retirement: Retirement | None = None) -> list[str]:
    """The transaction of :func:`transaction_bundle` (the agency Organization, every upsert, one
    Provenance), written batched by :func:`.writer.write_transaction`; each merging upsert combined
    with the stored resource it matched; for a full return, the ``retirement`` of what it no
    longer lists. Returns what happened to each upsert (created, updated, unchanged), then
    ``retired`` for each record retired. Raises a FhirError (nothing written) if any entry fails."""
    org = org or agency_organization(agency)
    puts = [_put(u, agency) for u in (org, *upserts)]
    provenance = _provenance_entry(upserts, org, agency, source, ctx.client_id, recorded)
    return write_transaction(router, ctx, puts, provenance, stale=retirement)[1:]


def _put(upsert: Upsert, agency: Agency) -> PutEntry:
    def build(stored: dict[str, Any] | None) -> dict[str, Any]:
        if upsert.merge and stored is not None:
            return _entry(replace(upsert, resource=merge_resource(stored, upsert.resource)), agency)["resource"]
        return _entry(upsert, agency)["resource"]

    return PutEntry(upsert.resource_type, criteria(upsert, agency), upsert.full_url, build)


def _entry(upsert: Upsert, agency: Agency) -> dict[str, Any]:
    """The PUT entry; the resource says which agency it comes from (meta.source, meta.tag). The
    agency's tag takes the place of a tag it had already (a merged resource keeps its order).

    Shared reference data carries the tag of every agency that wrote it (kept by the merge) and
    keeps the meta.source of the first: otherwise two agencies naming one school would take turns
    to rewrite it."""
    resource = dict(upsert.resource)
    meta = dict(resource.get("meta") or {})
    if not (upsert.shared and meta.get("source")):
        meta["source"] = agency.meta_source
    tags = [t for t in meta.get("tag", []) if upsert.shared or t.get("system") != systems.AGENCY_TAG_SYSTEM
            or t.get("code") == agency.tag["code"]]
    meta["tag"] = union(tags, [agency.tag], ("system", "code"))
    resource["meta"] = meta
    return {"fullUrl": upsert.full_url, "resource": resource,
            "request": {"method": "PUT", "url": f"{upsert.resource_type}?{criteria(upsert, agency)}"}}


def _provenance_entry(upserts: list[Upsert], org: Upsert, agency: Agency, source: SourceFile,
                      client_id: str | None, recorded: datetime | None) -> dict[str, Any]:
    file_id = {"system": systems.IMPORT_FILE, "value": f"urn:sha256:{source.sha256}"}
    agents: list[dict[str, Any]] = [{
        "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "custodian"}]},
        "who": {"reference": org.full_url, "display": agency.name},
    }]
    if client_id:
        agents.append({"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "performer"}]},
                       "who": {"identifier": {"system": f"{systems.CANONICAL_BASE}/Id/client", "value": client_id}},
                       "onBehalfOf": {"reference": org.full_url}})
    when = (recorded or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": u.full_url} for u in upserts],
        "recorded": when,
        "policy": agency.lawful_basis,
        "activity": {"coding": [PROVENANCE_ACTIVITY]},
        "agent": agents,
        "entity": [{"role": "source", "what": {"identifier": file_id, "display": source.name}}],
    }
    return {"fullUrl": f"urn:uuid:{source.sha256[:8]}-{source.sha256[8:12]}-{source.sha256[12:16]}-"
                       f"{source.sha256[16:20]}-{source.sha256[20:32]}",
            "resource": provenance,
            "request": {"method": "POST", "url": "Provenance",
                        "ifNoneExist": f"entity:identifier={file_id['system']}|{file_id['value']}"}}
