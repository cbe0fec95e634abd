"""One import transaction, written in batches: the load path of :mod:`mappings.loader`.

An import is a transaction (http.html#trules) of conditional updates, ``PUT Type?<criteria>`` (one
per mapped resource, criteria ``identifier=system|value&_tag=…``), and one conditional create, the
file's Provenance (``ifNoneExist`` on the file's hash). Sent as a Bundle to ``POST [base]`` it costs
a search and a dozen statements per entry (~7 ms a resource). This module runs the same transaction
by the same rules, with the same results — ids, versions, history, index and outbox rows, the
answer to each entry and the first error, named ``Bundle.entry[n]`` — but batched:

1. every entry's criteria are resolved up front in a few queries
   (:func:`~fhir_server.repository.bulk.find_token_matches`), the matched rows locked (PostgreSQL);
   criteria of any other form are searched one by one (``UnitOfWork.find``), as before;
2. each entry's resource is built from the stored one it matched (``PutEntry.build``: the merge),
   then links to other entries' fullUrls and conditional references are rewritten;
3. each resource is checked by the router's guards and compared with the stored one: an unchanged
   resource gets no new version (http.html#update) and is not validated again (the stored version
   was, when it was written); any other is validated as ``crud.update`` would — for a large file
   in another process, ahead of the writer (:mod:`.prevalidate`);
4. the new versions — created or updated — are written ``batch_size`` at a time by
   :func:`~fhir_server.repository.bulk.write_resources` (a few multi-row statements, COPY on
   PostgreSQL, in a background thread while the next batch is validated: ``QueuedWrites``).

5. optionally (``stale``: a full return, :mod:`.snapshot`), the stored records the file no longer
   lists are found after step 1, locked, and written after the PUTs as new versions, with one
   Provenance of their own — as ``PUT Type/id`` and ``POST Provenance`` entries would be.

All in one unit of work: the first error rolls everything back (nothing partial is written).
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest, NotFound, PreconditionFailed
from fhir_server.fhir.instants import utcnow
from fhir_server.fhir.models import SUPPORTED_TYPES
from fhir_server.fhir.validation import check_id, validate_resource
from fhir_server.repository.bulk import (Current, QueuedWrites, TokenCriteria, TokenCriteriaParser, current_rows,
                                         find_token_matches)
from fhir_server.repository.context import RequestContext
from fhir_server.repository.sql import Stored, UnitOfWork, _same_content, _with_server_meta
from fhir_server.rest.bundles import failing_at_entry
from fhir_server.rest.headers import write_response
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.rest.references import resolve_conditional_reference, rewrite_references
from fhir_server.rest.router import Router

from .prevalidate import Prevalidated

CREATED, UPDATED, UNCHANGED, RETIRED = "created", "updated", "unchanged", "retired"
DEFAULT_BATCH = 500  # resources per multi-row write
# What the import asks of every entry's answer (mappings.loader.load sent the same header).
PREFER = {"prefer": "return=OperationOutcome"}


@dataclass
class PutEntry:
    """A conditional update ``PUT res_type?criteria``. ``build`` makes the resource to write from
    the stored resource the criteria matched (None when they matched none, or several)."""

    res_type: str
    criteria: str
    full_url: str
    build: Callable[[dict[str, Any] | None], dict[str, Any]]

    @property
    def url(self) -> str:
        return f"{self.res_type}?{self.criteria}"


class StaleRecords(Protocol):
    """Stored resources a transaction also replaces, found once its PUTs' targets are known."""

    def find(self, uow: UnitOfWork, local: Mapping[str, str]) -> list[tuple[Current, dict[str, Any]]]:
        """The rows to replace (locked) and each one's next version, given the transaction's
        fullUrl → ``Type/id``."""

    def provenance(self, targets: list[str]) -> dict[str, Any]:
        """The Provenance recording the replacement of ``targets`` (versioned references)."""


@dataclass
class _Put:
    entry: PutEntry
    params: list[tuple[str, str]]
    matches: list[Current]
    resource: dict[str, Any] | None = None
    res_id: str | None = None  # None when the criteria matched several resources (412 when it runs)
    body: dict[str, Any] | None = None  # the resource with its id: what is validated and written
    unchanged: bool = False  # the body is what is stored
    check: int = -1  # its place among the Prevalidated items


def write_transaction(router: Router, ctx: RequestContext, puts: list[PutEntry], create: dict[str, Any],
                      *, batch_size: int | None = None, stale: StaleRecords | None = None) -> list[str]:
    """Run ``puts`` (``Bundle.entry[0…n-1]``) and the conditional create ``create`` (a Bundle entry:
    fullUrl, resource, request with ``ifNoneExist``; ``Bundle.entry[n]``) as one transaction, and
    replace the ``stale`` records. Returns what each PUT did: ``created``, ``updated`` or
    ``unchanged``, then ``retired`` once per stale record replaced. Raises the FhirError of the first
    entry that fails, nothing written."""
    with router.repo.unit_of_work() as uow, QueuedWrites(uow, batch_size=batch_size or DEFAULT_BATCH) as writes:
        return _Transaction(router, ctx, uow, writes).run(puts, create, stale)


class _Transaction:
    def __init__(self, router: Router, ctx: RequestContext, uow: UnitOfWork, writes: QueuedWrites) -> None:
        self.router = router
        self.ctx = ctx
        self.uow = uow
        self.writes = writes  # written in batches, on PostgreSQL while the next batch is prepared
        self.local: dict[str, str] = {}  # fullUrl → Type/id (http.html#trules)
        self._creates: dict[tuple[str, frozenset[tuple[str, str]]], str] = {}
        self._conditional_refs: dict[str, str] = {}

    def run(self, puts: list[PutEntry], create: dict[str, Any], stale: StaleRecords | None = None) -> list[str]:
        # The order of a transaction's processing (http.html#trules), as rest/bundles.py does it:
        # resolve the POST and every PUT, rewrite references, then run the POST, then the PUTs.
        create_id, existing = self._resolve_create(len(puts), create)
        planned = self._resolve_puts(puts)
        targets = {(p.entry.res_type, p.res_id) for p in planned}
        replaced = [(row, body) for row, body in (stale.find(self.uow, self.local) if stale else [])
                    if (row.res_type, row.res_id) not in targets]
        for n, put in enumerate(planned):
            with failing_at_entry(n, "PUT", put.entry.url, put.entry.res_type):
                rewrite_references(cast(dict[str, Any], put.resource), self.local,
                                   where=f"Bundle.entry[{n}].resource",
                                   conditional=self._resolve_conditional, reject_unresolved=True)
        checks = self._prevalidate(planned)  # the PUTs' bodies are final: start validating them
        try:
            with failing_at_entry(len(puts), "POST", create["request"]["url"], create["resource"]["resourceType"]):
                rewrite_references(create["resource"], self.local, where=f"Bundle.entry[{len(puts)}].resource",
                                   conditional=self._resolve_conditional, reject_unresolved=True)
                self._run_create(create, create_id, existing)
            outcomes = []
            for n, put in enumerate(planned):
                with failing_at_entry(n, "PUT", put.entry.url, put.entry.res_type):
                    outcomes.append(self._run_put(put, checks))
        finally:
            checks.close()
        if replaced and stale is not None:
            self._replace(len(puts) + 1, replaced, stale)
        return outcomes + [RETIRED] * len(replaced)

    # -- resolving ---------------------------------------------------------------------------

    def _resolve_create(self, index: int, create: dict[str, Any]) -> tuple[str, str | None]:
        """The conditional create's id: its match (If-None-Exist, http.html#ccreate) or a new one."""
        res_type = create["resource"]["resourceType"]
        with failing_at_entry(index, "POST", create["request"]["url"], res_type):
            criteria = parse_qsl(create["request"]["ifNoneExist"].split("?", 1)[-1], keep_blank_values=True)
            ids = self.uow.find(res_type, criteria) if criteria else []
            if len(ids) > 1:
                raise PreconditionFailed(f"If-None-Exist matched {len(ids)} resources", expression="If-None-Exist")
        existing = ids[0] if ids else None
        target = existing or str(uuid.uuid4())
        self._creates[(res_type, frozenset(criteria))] = target
        if create.get("fullUrl"):
            self.local[create["fullUrl"]] = f"{res_type}/{target}"
        return target, existing

    def _resolve_puts(self, puts: list[PutEntry]) -> list[_Put]:
        """Every PUT's match, in a few queries; then its target id and its resource."""
        planned: list[_Put] = []
        tokens: list[tuple[int, TokenCriteria]] = []
        parse = TokenCriteriaParser(self.router.repo.registry)
        for n, entry in enumerate(puts):
            with failing_at_entry(n, "PUT", entry.url, entry.res_type):
                if entry.res_type not in SUPPORTED_TYPES:
                    raise NotFound(f"Unknown or unsupported resource type {entry.res_type!r}", expression="type")
                # A search URL may name another entry: Observation?subject=urn:uuid:…
                params = [(k, self.local.get(v, v)) for k, v in parse_qsl(entry.criteria, keep_blank_values=True)]
                if not params:
                    raise PreconditionFailed("A conditional interaction needs search criteria in the URL")
                key = parse(entry.res_type, params)
                matches: list[Current] = []
                if key is None:
                    ids = self.uow.find(entry.res_type, params)
                    matches = current_rows(self.uow, entry.res_type, ids, lock=True)
                else:
                    tokens.append((n, key))
            planned.append(_Put(entry, params, matches))
        found = find_token_matches(self.uow, [key for _n, key in tokens], lock=True)
        for (n, _key), rows in zip(tokens, found):
            planned[n].matches = rows
        writers: dict[tuple[str, str], int] = {}
        for n, put in enumerate(planned):
            with failing_at_entry(n, "PUT", put.entry.url, put.entry.res_type):
                self._target(n, put, writers)
        return planned

    def _target(self, n: int, put: _Put, writers: dict[tuple[str, str], int]) -> None:
        """One match: that resource; none: a new id (or the body's); several: left for the PUT to refuse."""
        one = put.matches[0] if len(put.matches) == 1 else None
        put.resource = put.entry.build(one.content if one else None)
        if one is not None:
            put.res_id = one.res_id
        elif not put.matches:
            body_id = put.resource.get("id")
            put.res_id = body_id if isinstance(body_id, str) else str(uuid.uuid4())
        if put.res_id is None:
            return
        identity = (put.entry.res_type, put.res_id)
        other = writers.setdefault(identity, n)
        if other != n:
            raise BadRequest(f"Bundle.entry[{other}] and Bundle.entry[{n}] both change {identity[0]}/{identity[1]}",
                             expression=[f"Bundle.entry[{other}]"])
        if put.entry.full_url:
            self.local[put.entry.full_url] = f"{identity[0]}/{identity[1]}"

    def _resolve_conditional(self, value: str, where: str) -> str:
        """A conditional reference ``Type?params`` → ``Type/id`` of its one match (http.html#trules)."""
        known = self._conditional_refs.get(value)
        if known is not None:
            return known
        resolved = resolve_conditional_reference(value, where, self.uow.find, self._creates)
        self._conditional_refs[value] = resolved
        return resolved

    # -- running -----------------------------------------------------------------------------

    def _prevalidate(self, planned: list[_Put]) -> Prevalidated:
        """Each PUT's final body; those that differ from the stored resource are validated ahead
        (in another process for a large file: mappings/prevalidate.py)."""
        items: list[tuple[dict[str, Any], str, str | None]] = []
        for put in planned:
            if put.res_id is None:
                continue
            resource = cast(dict[str, Any], put.resource)
            put.body = {**resource, "id": put.res_id}
            row = put.matches[0] if put.matches else None
            put.unchanged = row is not None and resource.get("id") in (None, put.res_id) \
                and _same_content(row.content, put.body)
            if not put.unchanged:
                put.check = len(items)
                items.append((put.body, put.entry.res_type, put.res_id))
        return Prevalidated(items)

    def _run_create(self, create: dict[str, Any], res_id: str, existing: str | None) -> None:
        """crud.create with If-None-Exist: the match is the answer (200), else a new resource (201)."""
        res_type = create["resource"]["resourceType"]
        req = FhirRequest("POST", res_type, self.ctx, [], {**PREFER, "if-none-exist": create["request"]["ifNoneExist"]},
                          create["resource"], "application/fhir+json")
        self._guard_before(req)
        body = validate_resource(req.body, expected_type=res_type)
        if existing is not None:
            self.writes.wait()
            stored = self.uow.read(res_type, existing)
            self._guard_after(req, stored, 200, f"{res_type}/{existing} already exists (If-None-Exist)")
            return
        body = self._checked(self.ctx, None, body)
        now = utcnow()
        stored = Stored(res_type, res_id, 1, now, False, _with_server_meta(body, res_id, 1, now), "POST")
        self.writes.add(None, stored)
        self._guard_after(req, stored, 201, f"Created {stored.reference}")

    def _run_put(self, put: _Put, checks: Prevalidated) -> str:
        """crud.update of the resolved target (update-as-create when new), or crud.conditional_update's
        412 when the criteria matched several resources."""
        res_type, resource = put.entry.res_type, cast(dict[str, Any], put.resource)
        if put.res_id is None:
            req = FhirRequest("PUT", res_type, self.ctx, put.params, dict(PREFER), resource, "application/fhir+json")
            self._guard_before(req)
            validate_resource(resource, expected_type=res_type)
            raise PreconditionFailed(f"The criteria matched {len(put.matches)} resources; refine them")
        res_id = put.res_id
        req = FhirRequest("PUT", f"{res_type}/{res_id}", self.ctx, [], dict(PREFER), put.body, "application/fhir+json")
        self._guard_before(req)
        check_id(res_id)
        row = put.matches[0] if put.matches else None
        if row is not None and put.unchanged:
            # What is stored already (and was validated when it was written): no new version
            # (http.html#update), and nothing to validate again — most of a re-sent extract.
            stored = Stored(res_type, res_id, row.version_id, row.last_updated, False, row.content)
            self._guard_after(req, stored, 200, f"No change {stored.reference}")
            return UNCHANGED
        body = checks.result(put.check)  # validate_resource(put.body, expected_type/id), maybe done ahead
        if row is None:
            self.writes.wait()  # the connection is the background write's until it is done
            if resource.get("id") is not None and current_rows(self.uow, res_type, [res_id]):
                raise BadRequest(f"{res_type}/{res_id} exists but does not match the criteria",
                                 expression=f"{res_type}.id")
            body = self._checked(self.ctx, None, body)
            now = utcnow()
            stored = Stored(res_type, res_id, 1, now, False, _with_server_meta(body, res_id, 1, now), "PUT")
            self.writes.add(None, stored)
            self._guard_after(req, stored, 201, f"Created {stored.reference}")
            return CREATED
        if resource.get("id") not in (None, res_id):
            raise BadRequest(f"Body id {resource['id']!r} differs from the matched resource {res_id!r}",
                             expression=f"{res_type}.id")
        body = self._checked(self.ctx, row.content, body)
        now = max(utcnow(), row.last_updated)
        version = row.version_id + 1
        stored = Stored(res_type, res_id, version, now, False, _with_server_meta(body, res_id, version, now), "PUT")
        self.writes.add(row.pk, stored)
        self._guard_after(req, stored, 200, f"Updated {stored.reference}")
        return UPDATED

    def _replace(self, index: int, replaced: list[tuple[Current, dict[str, Any]]], stale: StaleRecords) -> None:
        """``PUT Type/id`` of each stale record's next version (``Bundle.entry[index…]``), then
        ``POST Provenance`` naming the versions written."""
        targets: list[str] = []
        for n, (row, next_version) in enumerate(replaced, start=index):
            url = f"{row.res_type}/{row.res_id}"
            with failing_at_entry(n, "PUT", url, row.res_type):
                body = {**next_version, "id": row.res_id}
                req = FhirRequest("PUT", url, self.ctx, [], dict(PREFER), body, "application/fhir+json")
                self._guard_before(req)
                body = self._checked(self.ctx, row.content,
                                     validate_resource(body, expected_type=row.res_type, expected_id=row.res_id))
                now = max(utcnow(), row.last_updated)
                version = row.version_id + 1
                stored = Stored(row.res_type, row.res_id, version, now, False,
                                _with_server_meta(body, row.res_id, version, now), "PUT")
                self.writes.add(row.pk, stored)
                self._guard_after(req, stored, 200, f"Updated {stored.reference}")
                targets.append(f"{url}/_history/{version}")
        provenance = stale.provenance(targets)
        with failing_at_entry(index + len(replaced), "POST", "Provenance", "Provenance"):
            rewrite_references(provenance, self.local, where=f"Bundle.entry[{index + len(replaced)}].resource",
                               conditional=self._resolve_conditional, reject_unresolved=True)
            req = FhirRequest("POST", "Provenance", self.ctx, [], dict(PREFER), provenance, "application/fhir+json")
            self._guard_before(req)
            body = self._checked(self.ctx, None, validate_resource(provenance, expected_type="Provenance"))
            res_id, now = str(uuid.uuid4()), utcnow()
            stored = Stored("Provenance", res_id, 1, now, False, _with_server_meta(body, res_id, 1, now), "POST")
            self.writes.add(None, stored)
            self._guard_after(req, stored, 201, f"Created {stored.reference}")

    def _guard_before(self, req: FhirRequest) -> None:
        # What Router.dispatch does around every entry: the authorisation guards, then the access
        # policy of the request's context for this unit of work (fhir_server/auth).
        for guard in self.router.guards:
            guard.before(req)
        self.router.bind_access(self.uow, req)

    def _checked(self, ctx: RequestContext, previous: dict[str, Any] | None, body: dict[str, Any]) -> dict[str, Any]:
        """The write policy's verdict on a new version (an agency writes only its own records), as
        the repository applies it to every other write; raises Forbidden."""
        check = self.uow.write_check
        return body if check is None else check(ctx, previous, body) or body

    def _guard_after(self, req: FhirRequest, stored: Stored, status: int, message: str) -> None:
        if self.router.guards or self.router.recorders:
            response: FhirResponse = write_response(req, stored, status, message=message)
            for guard in self.router.guards:
                guard.after(req, response)
            self.router.record(self.uow, req, response)  # the audit trail: one AuditEvent for the file


