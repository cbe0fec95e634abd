"""A return that is the whole account of a child's records of one kind: retire what it no longer lists.

The CIN census and the SSDA903 return carry no id for an episode: the conditional-update key is the
child's id and the date the record starts (``LAchildID/2023-01-10``). When a local authority corrects
that date in a later return, the key changes, the import creates a new resource, and the one made
from the wrong date would stay, a duplicate episode. Both returns are complete accounts, not
messages of changes (AGENCY_FORMATS.md §1–2; DfE guidance: every CIN episode, plan, enquiry and
assessment open at any time in the collection year; every care episode and missing episode of a
child looked after in the year). So a return says, for each child it names and for the span of time
it covers, "these are all the records of this kind". A stored record of this agency, of that kind,
for that child, in that span, whose key the return no longer has, was wrong: it is retired.

Retired means a new version with ``status = entered-in-error`` (EpisodeOfCare, Flag and Observation
all have it: "this should never have existed"), never a delete, so history keeps what was believed
and when; and one Provenance per import that retires anything (activity NULLIFY, target each
retired version, entity the return's file).

What is never touched: another agency's records (matched on the agency's own identifier system and
its source tag), children the return does not name (a child absent from a return may simply have
left the service), records outside the span (an episode closed before the collection year is not in
this year's census), and records already entered-in-error.

The span: :class:`Span` covers a record that was open at some moment after ``after`` and had
started by ``until``. The CIN census covers its collection year (``after`` = the day before it
starts, ``until`` = the reference date), for every child it names and every kind, so a child
whose plan (or factors…) is gone from a later census retires it. An SSDA903 return covers, for each
table it has, every child its Header names over its collection year, and a child's earlier records
from the start of the earliest of that kind it lists: an earlier episode that ended the day the
first listed one began is history, not in this return, and is kept.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from fhir_server.repository.bulk import TARGET_CHUNK, Current, current_rows, find_token_keys
from fhir_server.repository.sql import UnitOfWork

from . import systems

RETIRED_STATUS = "entered-in-error"
NULLIFY = {"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "NULLIFY",
           "display": "nullify"}


@dataclass(frozen=True)
class Span:
    """The time a return accounts for: records open at some moment after ``after`` (ended later,
    or not ended) that started on or before ``until`` (no limit when None)."""

    after: date
    until: date | None = None

    def covers(self, start: date | None, end: date | None) -> bool:
        if start is None:  # a record whose dates cannot be read is left alone
            return False
        return (end is None or end > self.after) and (self.until is None or start <= self.until)

    def union(self, other: Span) -> Span:
        until = None if self.until is None or other.until is None else max(self.until, other.until)
        return Span(min(self.after, other.after), until)


@dataclass
class Snapshot:
    """A return's full account of the records of one kind (``resource_type`` identified under
    ``system``, the agency's identifier system for that kind) for each child it names: the child's
    Patient fullUrl in the import → the span. ``reference`` is the element naming the child."""

    resource_type: str
    system: str
    reference: str  # "patient" (EpisodeOfCare) or "subject" (Flag, Observation)
    spans: dict[str, Span] = field(default_factory=dict)

    def cover(self, patient_url: str, span: Span) -> None:
        known = self.spans.get(patient_url)
        self.spans[patient_url] = span if known is None else known.union(span)


def record_span(resource: Mapping[str, Any]) -> tuple[date | None, date | None]:
    """When a stored record starts and ends: ``period`` (EpisodeOfCare, Flag), ``effectivePeriod``
    or ``effectiveDateTime`` (Observation, a moment: start = end)."""
    found = resource.get("period") or resource.get("effectivePeriod")
    if isinstance(found, dict):
        return _day(found.get("start")), _day(found.get("end"))
    moment = _day(resource.get("effectiveDateTime"))
    return moment, moment


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(value[:10]) if isinstance(value, str) else None
    except ValueError:
        return None


def stale(snapshot: Snapshot, rows: list[tuple[str, Current]], kept: set[str],
          patients: Mapping[str, str]) -> list[Current]:
    """The stored records (``rows``: each with its key in ``snapshot.system``) that the return
    no longer lists: key not ``kept``, for a child it names (``patients``: fullUrl → ``Patient/id``),
    within that child's span, not already retired. Pure."""
    spans = {patients[url]: span for url, span in snapshot.spans.items() if url in patients}
    out: dict[str, Current] = {}
    for key, row in rows:
        content = row.content
        if key in kept or content.get("status") == RETIRED_STATUS:
            continue
        span = spans.get(str((content.get(snapshot.reference) or {}).get("reference")))
        if span is not None and span.covers(*record_span(content)):
            out[row.res_id] = row
    return list(out.values())


def retired(content: dict[str, Any]) -> dict[str, Any]:
    """The next version of a record the return no longer lists: the same, entered-in-error."""
    body = {k: v for k, v in content.items() if k != "meta"}
    meta = {k: v for k, v in (content.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    body["status"] = RETIRED_STATUS
    return body


class Retirement:
    """The retirement step of one import (``mappings.writer.StaleRecords``): finds, inside the
    import's transaction, the stored records its snapshots no longer list, and makes the Provenance
    that records their retirement. ``retired`` lists them afterwards (``Type/id``, key)."""

    def __init__(self, snapshots: list[Snapshot], kept: dict[str, set[str]], agency_tag: dict[str, str],
                 provenance: dict[str, Any], file_name: str) -> None:
        self.snapshots = snapshots
        self.kept = kept  # identifier system → the keys the import writes
        self.agency_tag = agency_tag
        self._provenance = provenance  # the import's own Provenance entry (fullUrl, resource)
        self.file_name = file_name
        self.retired: list[tuple[str, str]] = []

    def find(self, uow: UnitOfWork, local: Mapping[str, str], *, lock: bool = True
             ) -> list[tuple[Current, dict[str, Any]]]:
        """One narrow query for the whole file (ids and keys of this agency's records of the
        snapshots' kinds for the children the file names, from the reference index); then only the
        records whose key the file no longer has are read, locked, and judged by :func:`stale`.
        A re-sent or corrected return reads a handful of resources, not every one of the agency.
        ``lock``: the rows found are locked (PostgreSQL), as the import's own transaction needs."""
        self.retired = []  # a transaction run again (retry_when_busy) finds them again
        snaps = [s for s in self.snapshots if any(url in local for url in s.spans)]
        children = sorted({local[url].split("/", 1)[1] for s in snaps for url in s.spans if url in local})
        only_this_agency = (("_tag", systems.AGENCY_TAG_SYSTEM, self.agency_tag["code"]),)
        keys = find_token_keys(uow, "identifier", [(s.resource_type, s.system, s.reference) for s in snaps],
                               "Patient", children, only_this_agency)
        candidates: dict[tuple[str, str], str] = {}  # (system, res_id) → key, not among those the file writes
        for k in keys:
            if k.code not in self.kept.get(k.system, set()):
                candidates[(k.system, k.res_id)] = k.code
        out: list[tuple[Current, dict[str, Any]]] = []
        for snap in snaps:
            ids = [res_id for (system, res_id) in candidates if system == snap.system]
            rows = [(candidates[(snap.system, row.res_id)], row)
                    for start in range(0, len(ids), TARGET_CHUNK)
                    for row in current_rows(uow, snap.resource_type, ids[start:start + TARGET_CHUNK], lock=lock)]
            for row in stale(snap, rows, self.kept.get(snap.system, set()), local):
                out.append((row, retired(row.content)))
                self.retired.append((f"{row.res_type}/{row.res_id}", candidates[(snap.system, row.res_id)]))
        return out

    def provenance(self, targets: list[str]) -> dict[str, Any]:
        """One Provenance for the retirements (provenance.html): NULLIFY, each retired version; its
        source is the import's own Provenance (which names the file by its hash: naming it here too
        would make the import's conditional create on that hash match two)."""
        imported = self._provenance["resource"]
        return {
            "resourceType": "Provenance",
            "target": [{"reference": t} for t in targets],
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "policy": imported["policy"],
            "reason": [{"text": f"No longer in {self.file_name}, a full return for these children: "
                                "entered in error (a record removed, or a corrected start date, which is a new "
                                "record)"}],
            "activity": {"coding": [NULLIFY]},
            "agent": imported["agent"],
            "entity": [{"role": "source", "what": {"reference": self._provenance["fullUrl"],
                                                   "display": self.file_name}}],
        }


def kept_keys(resources: list[dict[str, Any]], wanted: set[str]) -> dict[str, set[str]]:
    """Identifier system → the values the import writes under it, for the ``wanted`` systems."""
    out: dict[str, set[str]] = {system: set() for system in wanted}
    for resource in resources:
        for ident in resource.get("identifier", []):
            if ident.get("system") in out:
                out[ident["system"]].add(ident.get("value", ""))
    return out
