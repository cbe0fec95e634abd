"""Collect what the family summary needs, in a fixed number of queries whatever the family's size.

1. the child's record (:mod:`.record`), restricted to the types the summary shows;
2. candidate relatives in one query: Patients and RelatedPersons sharing an identifier or a date of birth
   with one of the child's RelatedPersons, or a postcode with the child's home (the pure graph decides
   who actually belongs: :mod:`.family`);
3. the linked records of those relatives (one query per hop);
4. the relatives' own compartments (their RelatedPersons, risk observations, flags, episodes,
   conditions) in one query, with the practitioners and organisations they reference;
5. the import Provenance of every fact, read from the ``Provenance.target`` index with only the few
   elements the summary prints (an import's Provenance targets every resource of a file, so reading it
   whole would cost more than the rest of the summary).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, false, select, union

from ..search.normalize import date_range
from ..storage.tables import idx_date, idx_reference, idx_string, idx_token, resource
from .family import address_keys, identity_keys, postcode_search_values
from .links import linked_patients
from .record import ChildRecord, Found, RecordFilter, collect_child_record, select_members, select_referenced
from .refs import local_ref

# What the summary shows of the child, and of each relative (within the chronology window).
CHILD_TYPES = frozenset({"Patient", "RelatedPerson", "EpisodeOfCare", "Observation", "Flag", "Condition",
                         "Encounter", "Organization", "Practitioner", "PractitionerRole"})
RELATIVE_TYPES = frozenset({"Patient", "RelatedPerson", "EpisodeOfCare", "Observation", "Flag", "Condition",
                            "Organization", "Practitioner", "PractitionerRole"})
MAX_CANDIDATES = 500  # a family is a handful of people; this bounds a postcode shared by a tower block


@dataclass(frozen=True)
class ImportSource:
    """The Provenance of the import that wrote a resource (provenance.html): who held it, from which
    file, recorded when."""

    provenance: str  # Provenance/<id>
    recorded: str
    custodian: str  # the agency, as the Provenance names it
    custodian_ref: str | None
    file: str


@dataclass
class FamilyRecord:
    """Everything collected for one child's family summary, before any filter."""

    child: ChildRecord
    patients: dict[str, dict[str, Any]] = field(default_factory=dict)  # every Patient record, child's first
    related: dict[str, dict[str, Any]] = field(default_factory=dict)  # every RelatedPerson
    relatives: list[Found] = field(default_factory=list)  # facts from relatives' compartments
    referenced: list[Found] = field(default_factory=list)  # their practitioners and organisations
    sources: dict[str, list[ImportSource]] = field(default_factory=dict)  # "Type/id" → imports

    def resources(self) -> list[Found]:
        seen: set[tuple[str, str]] = set()
        out = []
        for f in [*self.child.all(), *self.relatives, *self.referenced]:
            if f.key not in seen:
                seen.add(f.key)
                out.append(f)
        return out


def collect_family(conn: Connection, profiles_dir: Path, base_url: str, patient: dict[str, Any], *,
                   now: datetime, window: timedelta = timedelta(days=365)) -> FamilyRecord:
    """Collect the family record of the child whose current Patient is ``patient``."""
    child = collect_child_record(conn, profiles_dir, base_url, patient, RecordFilter(types=CHILD_TYPES))
    record = FamilyRecord(child)
    child_ids = set(child.patient_ids)
    for f in child.matches:
        if f.res_type == "Patient":
            record.patients[f.res_id] = f.content
        elif f.res_type == "RelatedPerson":
            record.related[f.res_id] = f.content
    candidates = _candidates(conn, record, base_url)
    relative_ids = sorted({pid for pid in candidates if pid not in child_ids})
    if relative_ids:
        linked = linked_patients(conn, relative_ids, base_url, known={p: candidates[p] for p in relative_ids})
        record.patients.update({pid: c for pid, c in linked.items() if pid not in record.patients})
        others = sorted(set(linked) - child_ids)
        record.relatives = select_members(conn, profiles_dir, others,
                                          RecordFilter(types=RELATIVE_TYPES, start=now - window))
        for f in record.relatives:
            if f.res_type == "RelatedPerson":
                record.related.setdefault(f.res_id, f.content)
            elif f.res_type == "Patient":
                record.patients.setdefault(f.res_id, f.content)
        have = {f.key for f in child.all()}
        fresh = [f for f in record.relatives if f.key not in have]  # the child's were followed already
        record.referenced = [f for f in select_referenced(conn, base_url, fresh, RecordFilter(types=RELATIVE_TYPES),
                                                          child.references)
                             if f.key not in have]
    record.sources = import_sources(conn, base_url, [f.key for f in record.resources()])
    return record


def _candidates(conn: Connection, record: FamilyRecord, base_url: str) -> dict[str, dict[str, Any]]:
    """Patients (id → content) who may be relatives: the child's RelatedPersons' namesakes and
    identifier-sharers, those people's children (their RelatedPersons name them), and people whose
    home shares the child's postcode. Found RelatedPersons are added to ``record.related``."""
    idents: set[str] = set()
    births: set[datetime] = set()
    for rp in record.related.values():
        for key in identity_keys(rp):
            if key[0] == "id":
                idents.add(key[2])
            else:
                try:
                    low = date_range(key[-1])[0]
                except ValueError:
                    continue
                if low is not None:
                    births.add(low)
    postcodes = sorted({value for res in [*record.patients.values(), *record.related.values()]
                        for pc, _line in address_keys(res) for value in postcode_search_values(pc)})
    types = ("Patient", "RelatedPerson")
    subqueries = []
    if idents:
        subqueries.append(select(idx_token.c.resource_pk).where(
            idx_token.c.res_type.in_(types), idx_token.c.param == "identifier", idx_token.c.code.in_(sorted(idents))))
    if births:
        subqueries.append(select(idx_date.c.resource_pk).where(
            idx_date.c.res_type.in_(types), idx_date.c.param == "birthdate", idx_date.c.low.in_(sorted(births))))
    if postcodes:
        subqueries.append(select(idx_string.c.resource_pk).where(
            idx_string.c.res_type.in_(types), idx_string.c.param == "address-postalcode",
            idx_string.c.value_norm.in_(postcodes)))
    if not subqueries:
        return {}
    pks = union(*subqueries) if len(subqueries) > 1 else subqueries[0]
    rows = conn.execute(select(resource.c.res_type, resource.c.res_id, resource.c.content).where(
        resource.c.deleted == false(), resource.c.pk.in_(pks)).limit(MAX_CANDIDATES))
    wanted_keys = {k for rp in record.related.values() for k in identity_keys(rp)}
    homes = {k for res in [*record.patients.values(), *record.related.values()] for k in address_keys(res)}
    patients: dict[str, dict[str, Any]] = {}
    for res_type, res_id, content in rows:
        related = bool(wanted_keys & set(identity_keys(content))) or bool(homes & set(address_keys(content)))
        if not related:
            continue  # a namesake's birthday or a neighbour's postcode: not this family
        if res_type == "RelatedPerson":
            record.related.setdefault(res_id, content)
        elif res_id not in record.patients:
            patients[res_id] = content
    # the children the matched adults are related to are the child's siblings or step-siblings
    for rp in record.related.values():
        target = local_ref((rp.get("patient") or {}).get("reference"), base_url)
        if target and target[0] == "Patient" and target[1] not in record.patients:
            patients.setdefault(target[1], {})
    missing = sorted(pid for pid, content in patients.items() if not content)
    if missing:
        for res_id, content in conn.execute(select(resource.c.res_id, resource.c.content).where(
                resource.c.res_type == "Patient", resource.c.res_id.in_(missing), resource.c.deleted == false())):
            patients[res_id] = content
    return {pid: content for pid, content in patients.items() if content}


def import_sources(conn: Connection, base_url: str, keys: list[tuple[str, str]]) -> dict[str, list[ImportSource]]:
    """"Type/id" → the Provenance records targeting it: which Provenance targets what comes from the
    ``Provenance-target`` index, then each Provenance once, with only ``recorded``, ``agent`` and
    ``entity`` read from it (its target list can hold a whole file's resources)."""
    if not keys:
        return {}
    wanted = set(keys)
    x = idx_reference
    targeted: dict[int, list[str]] = {}
    for target_type, target_id, prov_pk in conn.execute(
            select(x.c.target_type, x.c.target_id, x.c.resource_pk).where(
                x.c.res_type == "Provenance", x.c.param == "target",
                x.c.target_id.in_(sorted({i for _t, i in keys})))):
        if (target_type, target_id) in wanted:
            targeted.setdefault(int(prov_pk), []).append(f"{target_type}/{target_id}")
    if not targeted:
        return {}
    r = resource
    out: dict[str, list[ImportSource]] = {}
    for pk, prov_id, recorded, agents, entities in conn.execute(
            select(r.c.pk, r.c.res_id, r.c.content["recorded"], r.c.content["agent"], r.c.content["entity"])
            .where(r.c.pk.in_(sorted(targeted)), r.c.res_type == "Provenance", r.c.deleted == false())):
        source = _import_source(prov_id, recorded, agents, entities, base_url)
        for ref in targeted[int(pk)]:
            out.setdefault(ref, []).append(source)
    for sources in out.values():
        sources.sort(key=lambda s: s.recorded, reverse=True)
    return out


def _import_source(prov_id: str, recorded: Any, agents: Any, entities: Any, base_url: str) -> ImportSource:
    custodian, custodian_ref = "", None
    for agent in agents if isinstance(agents, list) else []:
        who = agent.get("who") or {} if isinstance(agent, dict) else {}
        codes = {c.get("code") for c in ((agent.get("type") or {}).get("coding") or [])} if isinstance(agent, dict) \
            else set()
        if "custodian" in codes or not custodian:
            custodian = str(who.get("display") or custodian)
            found = local_ref(who.get("reference"), base_url)
            custodian_ref = f"{found[0]}/{found[1]}" if found else custodian_ref
    file = ""
    for entity in entities if isinstance(entities, list) else []:
        what = entity.get("what") or {} if isinstance(entity, dict) else {}
        file = str(what.get("display") or file)
    return ImportSource(f"Provenance/{prov_id}", str(recorded or ""), custodian, custodian_ref, file)
