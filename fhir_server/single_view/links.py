"""Which Patient records describe the same child: ``Patient.link`` followed both ways.

Record linkage keeps one golden ("master") Patient per child, identified under
``https://w3id.org/sg-fhir/Id/master-person``, whose ``Patient.link`` (type ``seealso``) points at each
agency's Patient record of the child; agency records may point back (``seealso`` or ``refer``). Every
R4 link type (patient.html#links: replaced-by, replaces, refer, seealso) says that both records are
about the same person, so the closure follows all of them, from the master to agency records and back,
whichever record the client started from.

The closure is bounded (:data:`MAX_HOPS`, :data:`MAX_RECORDS`): one child has a handful of records, and
a component much larger than that means a linkage fault, which must not pull other children in.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, false, select, union

from ..storage.tables import idx_reference, resource
from .refs import local_ref

MASTER_PERSON_SYSTEM = "https://w3id.org/sg-fhir/Id/master-person"
MAX_HOPS = 4
MAX_RECORDS = 64


def link_targets(patient: dict[str, Any], base_url: str) -> list[str]:
    """Ids of the Patients that ``patient.link.other`` points at (patient.html#links)."""
    out = []
    for link in patient.get("link") or []:
        other = link.get("other") if isinstance(link, dict) else None
        found = local_ref(other.get("reference"), base_url) if isinstance(other, dict) else None
        if found and found[0] == "Patient":
            out.append(found[1])
    return out


def is_master(patient: dict[str, Any]) -> bool:
    return any(isinstance(i, dict) and i.get("system") == MASTER_PERSON_SYSTEM for i in patient.get("identifier") or [])


def link_groups(patients: dict[str, dict[str, Any]], base_url: str) -> list[set[str]]:
    """Partition ``patients`` (id → content) into people: records joined by a link either way.
    Pure union-find; links to records outside ``patients`` are ignored."""
    parent = {pid: pid for pid in patients}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for pid, content in patients.items():
        for other in link_targets(content, base_url):
            if other in parent:
                a, b = find(pid), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[str, set[str]] = {}
    for pid in patients:
        groups.setdefault(find(pid), set()).add(pid)
    return sorted(groups.values(), key=lambda g: min(g))


def linked_patients(conn: Connection, start_ids: Iterable[str], base_url: str, *,
                    known: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every current Patient record linked, directly or through others, to one of ``start_ids``
    (id → content; the start records themselves included when they exist).

    One query per hop reads the frontier's content (for its outgoing links) together with every
    Patient whose ``link`` points into the frontier (search parameter Patient-link, so the reverse
    direction is an index lookup). ``known`` holds start records already read (not read again).
    """
    found: dict[str, dict[str, Any]] = dict(known or {})
    frontier = set(start_ids)
    searched: set[str] = set()
    for _hop in range(MAX_HOPS):
        if not frontier or len(found) >= MAX_RECORDS:
            break
        # pk IN (a UNION b), never "a OR b": an OR across two indexes makes PostgreSQL scan every Patient
        wanted: Any = select(idx_reference.c.resource_pk.label("pk")).where(
            idx_reference.c.res_type == "Patient", idx_reference.c.param == "link",
            idx_reference.c.target_type == "Patient", idx_reference.c.target_id.in_(sorted(frontier)))
        need_content = sorted(frontier - set(found))
        if need_content:
            wanted = union(wanted, select(resource.c.pk.label("pk")).where(
                resource.c.res_type == "Patient", resource.c.res_id.in_(need_content)))
        new: set[str] = set()
        for res_id, content in conn.execute(select(resource.c.res_id, resource.c.content).where(
                resource.c.pk.in_(wanted), resource.c.res_type == "Patient", resource.c.deleted == false())):
            if res_id not in found:
                found[res_id] = content
                new.add(res_id)
        searched |= frontier
        following = set(new)
        for pid in frontier:
            if pid in found:
                following.update(link_targets(found[pid], base_url))
        frontier = following - searched
    return found
