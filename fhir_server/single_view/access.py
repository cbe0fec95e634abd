"""The one place where what the single view collected is narrowed before it is shown.

Collection (:mod:`.record`, :mod:`.family_loader`) gathers everything; rendering (``$everything``'s
searchset, the family summary document) shows whatever it is given. Between the two, every resource
passes through one :data:`ResourceFilter`. Today that filter allows everything; access control and
consent (the governance issue) plug in here, deciding per resource from the RequestContext (agency,
role, purpose of use) and the resource's ``meta.security`` labels and source agency.

What is enforced already: with a verified token, only resource types the token's SMART scopes grant
``read`` on are shown. The router's scope guard checks only ``read`` on Patient for
``Patient/[id]/$everything``; without this filter a ``system/Patient.rs`` token would read every
Observation, Flag and RelatedPerson of the child through it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..repository.context import RequestContext
from .family_loader import FamilyRecord
from .record import ChildRecord

ResourceFilter = Callable[[dict[str, Any]], bool]
T = TypeVar("T")


def allow_all(_resource: dict[str, Any]) -> bool:
    return True


def filter_for(ctx: RequestContext, access: Any = None) -> ResourceFilter:
    """The filter for one request: without a verified token (authentication off) everything; with
    one, the types its scopes grant ``read`` on (SMART scopes-and-launch-context.html), and what the
    access policy (``access``: the unit of work's fhir_server.auth.policy.Visibility — role, source
    agency, security labels, consent) lets the caller see."""
    if not ctx.authenticated:
        return allow_all
    from ..auth.scopes import READ, scope_set

    granted = scope_set(ctx.scopes)
    if access is not None:
        by_scope = filter_for(ctx)

        def allow_visible(resource: dict[str, Any]) -> bool:
            shown = by_scope(resource) and access.allows(resource)
            if shown:
                access.disclosed([resource])
            return shown

        return allow_visible
    if granted.allows(READ, "*"):
        return allow_all
    readable: dict[str, bool] = {}

    def allow(resource: dict[str, Any]) -> bool:
        res_type = str(resource.get("resourceType"))
        if res_type not in readable:
            readable[res_type] = granted.allows(READ, res_type)
        return readable[res_type]

    return allow


def keep(items: list[T], allow: ResourceFilter, content: Callable[[T], dict[str, Any]]) -> list[T]:
    """``items`` whose resource ``allow`` accepts, in order."""
    if allow is allow_all:
        return items
    return [item for item in items if allow(content(item))]


def filter_family(record: FamilyRecord, allow: ResourceFilter) -> FamilyRecord:
    """``record`` with every resource ``allow`` refuses left out (the child's record, the relatives'
    Patients, RelatedPersons and facts, and the import sources of what was left out)."""
    if allow is allow_all:
        return record
    content = lambda f: f.content  # noqa: E731
    child = ChildRecord(record.child.patient_id, record.child.patient_ids,
                        keep(record.child.matches, allow, content), keep(record.child.includes, allow, content))
    kept = FamilyRecord(child,
                        patients={k: v for k, v in record.patients.items() if allow(v)},
                        related={k: v for k, v in record.related.items() if allow(v)},
                        relatives=keep(record.relatives, allow, content),
                        referenced=keep(record.referenced, allow, content))
    visible = {f"{f.res_type}/{f.res_id}" for f in kept.resources()}
    visible |= {f"Patient/{k}" for k in kept.patients} | {f"RelatedPerson/{k}" for k in kept.related}
    kept.sources = {ref: s for ref, s in record.sources.items() if ref in visible}
    return kept


SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def without_foreign_targets(found: list[T], content: Callable[[T], dict[str, Any]],
                            with_content: Callable[[T, dict[str, Any]], T]) -> list[T]:
    """A Provenance in a child's record (one import of a whole agency file) names every resource it
    covers, most of them other children's. Show only its targets that are in this record, tagged
    SUBSETTED (resource.html#tag), and leave out a Provenance with none left."""
    members = {f"{c['resourceType']}/{c['id']}" for c in map(content, found)}
    out: list[T] = []
    for item in found:
        resource = content(item)
        if resource.get("resourceType") != "Provenance":
            out.append(item)
            continue
        targets = resource.get("target") or []
        mine = [t for t in targets if isinstance(t, dict) and t.get("reference") in members]
        if len(mine) == len(targets):
            out.append(item)
        elif mine:
            meta = dict(resource.get("meta") or {})
            meta["tag"] = [*meta.get("tag", []), SUBSETTED]
            out.append(with_content(item, {**resource, "target": mine, "meta": meta}))
    return out

