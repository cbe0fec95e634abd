"""Reading children's evidence and writing their scores: set-based SQL over the search index tables.

A *child* is the unit scored: the master Patient of record linkage (``linkage/``), whose agency records
are its ``Patient.link`` targets, or an agency Patient that no master links. Everything a batch of
children needs is read in a fixed number of queries whatever the batch size: their records, the
Observations and EpisodeOfCare pointing at them (``Observation-subject``, ``EpisodeOfCare-patient``),
and their siblings, with the siblings' episodes.

Siblings are other children (not the child's own linked records) who share, on any of either child's
linked agency records (the master's ``Patient.link`` targets, so a parent known to the police and a
plan held by the local authority still meet):

* a RelatedPerson identifier (the same parent known to the same agency), or
* a home: the same normalised postcode and first line of a current address (not ``use`` old, not
  ended; ``single_view.family.address_keys``), both being under 18 — the household window. A postcode
  alone covers a street, not a home, so it never makes siblings.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, false, insert, select, update

from fhir_server.single_view.family import ADULT_AGE, address_keys, postcode_search_values
from fhir_server.single_view.links import MASTER_PERSON_SYSTEM, is_master, link_targets
from fhir_server.storage.tables import (idx_reference, idx_string, idx_token, resource, risk_score,
                                        risk_score_history)

from . import facts
from .model import ChildInput, Episode

PATIENT = "Patient"
CHUNK = 2000  # ids per IN list


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def children_of(conn: Connection, patient_ids: Iterable[str], base_url: str) -> set[str]:
    """The children (master ids, or unlinked record ids) the given Patient records belong to."""
    ids = sorted(set(patient_ids))
    out: set[str] = set()
    for part in chunks(ids):
        masters = {res_id for res_id, content in conn.execute(
            select(resource.c.res_id, resource.c.content).where(
                resource.c.res_type == PATIENT, resource.c.res_id.in_(part), resource.c.deleted == false()))
            if content and is_master(content)}
        out |= masters
        linked = masters_linking(conn, [i for i in part if i not in masters], base_url)
        for pid in part:
            if pid not in masters:
                out |= linked.get(pid) or {pid}
    return out


def records_of(conn: Connection, child_ids: Iterable[str], base_url: str) -> dict[str, list[str]]:
    """child id → its Patient records: itself and, for a master, the agency records it links."""
    out: dict[str, list[str]] = {}
    for part in chunks(sorted(set(child_ids))):
        for res_id, content in conn.execute(select(resource.c.res_id, resource.c.content).where(
                resource.c.res_type == PATIENT, resource.c.res_id.in_(part), resource.c.deleted == false())):
            out[res_id] = [res_id, *(link_targets(content, base_url) if content and is_master(content) else [])]
    return out


def masters_linking(conn: Connection, record_ids: Sequence[str], base_url: str) -> dict[str, set[str]]:
    """record id → the active master Patients whose ``link`` names it."""
    out: dict[str, set[str]] = defaultdict(set)
    if not record_ids:
        return out
    rows = conn.execute(
        select(idx_reference.c.target_id, resource.c.res_id, resource.c.content)
        .join(resource, resource.c.pk == idx_reference.c.resource_pk)
        .where(idx_reference.c.res_type == PATIENT, idx_reference.c.param == "link",
               idx_reference.c.target_type == PATIENT, idx_reference.c.target_id.in_(record_ids),
               resource.c.deleted == false()))
    for target, master_id, content in rows:
        if content and is_master(content) and content.get("active", True) and target in link_targets(content, base_url):
            out[target].add(master_id)
    return out


def all_children(conn: Connection, base_url: str) -> list[str]:
    """Every child: active masters, and Patients that no active master links (masters made inactive by
    a merge are not children; their records belong to the surviving master)."""
    masters: dict[str, dict[str, Any]] = {}
    master_pks = select(idx_token.c.resource_pk).where(
        idx_token.c.res_type == PATIENT, idx_token.c.param == "identifier", idx_token.c.system == MASTER_PERSON_SYSTEM)
    for res_id, content in conn.execute(select(resource.c.res_id, resource.c.content).where(
            resource.c.pk.in_(master_pks), resource.c.res_type == PATIENT, resource.c.deleted == false())):
        if content and is_master(content):
            masters[res_id] = content
    linked: set[str] = set(masters)
    active = []
    for res_id, content in masters.items():
        linked.update(link_targets(content, base_url))
        if content.get("active", True):
            active.append(res_id)
    others = [res_id for (res_id,) in conn.execute(select(resource.c.res_id).where(
        resource.c.res_type == PATIENT, resource.c.deleted == false())) if res_id not in linked]
    return sorted(active) + sorted(others)


def load_inputs(conn: Connection, child_ids: Sequence[str], base_url: str, now: datetime
                ) -> tuple[dict[str, ChildInput], dict[str, str | None]]:
    """The model's input for each child, and each child's local authority."""
    patients: dict[str, dict[str, Any]] = {}
    for part in chunks(sorted(set(child_ids))):
        for res_id, content in conn.execute(select(resource.c.res_id, resource.c.content).where(
                resource.c.res_type == PATIENT, resource.c.res_id.in_(part), resource.c.deleted == false())):
            patients[res_id] = content or {}
    records: dict[str, list[str]] = {}
    for child in child_ids:
        content = patients.get(child)
        if content is None:
            continue
        records[child] = [child, *(link_targets(content, base_url) if is_master(content) else [])]
    owner = {rec: child for child, recs in records.items() for rec in recs}
    missing = sorted(set(owner) - set(patients))
    for part in chunks(missing):
        for res_id, content in conn.execute(select(resource.c.res_id, resource.c.content).where(
                resource.c.res_type == PATIENT, resource.c.res_id.in_(part), resource.c.deleted == false())):
            patients[res_id] = content or {}
    inputs = {child: ChildInput(child, record_ids=tuple(recs[1:])) for child, recs in records.items()}
    authority: dict[str, str | None] = {}
    for child, recs in records.items():
        contents = [patients[r] for r in recs if r in patients]
        inputs[child].birth_date = next((b for c in contents if (b := facts.birth_date(c))), None)
        authority[child] = facts.local_authority(contents)
    for target, res_type, content in _pointing_at(conn, sorted(owner)):
        child = inputs[owner[target]]
        if res_type == "Observation":
            child.evidence.extend(facts.observation_evidence(content))
        elif (ep := facts.episode_of(content, now)) is not None:
            child.episodes.append(ep)
    for child, episodes in _sibling_episodes(conn, owner, now, base_url).items():
        inputs[child].sibling_episodes = episodes
    return inputs, authority


def _pointing_at(conn: Connection, record_ids: Sequence[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(record id, type, content) of the Observations and EpisodeOfCare about the records."""
    which = [("Observation", "subject"), ("EpisodeOfCare", "patient")]
    for part in chunks(record_ids):
        for res_type, param in which:
            rows = conn.execute(
                select(idx_reference.c.target_id, resource.c.content)
                .join(resource, resource.c.pk == idx_reference.c.resource_pk)
                .where(idx_reference.c.res_type == res_type, idx_reference.c.param == param,
                       idx_reference.c.target_type == PATIENT, idx_reference.c.target_id.in_(part),
                       resource.c.deleted == false()))
            for target, content in rows:
                if content:
                    yield target, res_type, content


def sibling_records(conn: Connection, record_ids: Sequence[str], now: datetime) -> dict[str, set[str]]:
    """record id → Patient records of other people sharing a parent or a home with it (see the module
    docstring). The caller maps them to children and drops the record's own."""
    out = shared_parent_records(conn, record_ids)
    for record, others in _shared_home_records(conn, record_ids, now).items():
        out.setdefault(record, set()).update(others)
    return out


def _shared_home_records(conn: Connection, record_ids: Sequence[str], now: datetime) -> dict[str, set[str]]:
    """record id → other Patient records, under 18, with a current address equal to one of its own
    (normalised postcode and first line). Candidates come from the ``address-postalcode`` index; the
    first line and the address's period are compared on the content."""
    out: dict[str, set[str]] = defaultdict(set)
    today = now.date()
    homes: dict[str, set[tuple[str, str]]] = {}
    for part in chunks(sorted(set(record_ids))):
        for res_id, content in conn.execute(select(resource.c.res_id, resource.c.content).where(
                resource.c.res_type == PATIENT, resource.c.res_id.in_(part), resource.c.deleted == false())):
            if content and _is_child(content, today) and (keys := set(address_keys(content, today=today))):
                homes[res_id] = keys
    postcodes = sorted({v for keys in homes.values() for pc, _line in keys for v in postcode_search_values(pc)})
    by_home: dict[tuple[str, str], set[str]] = defaultdict(set)
    for part in chunks(postcodes):
        pks = select(idx_string.c.resource_pk).where(
            idx_string.c.res_type == PATIENT, idx_string.c.param == "address-postalcode",
            idx_string.c.value_norm.in_(part))
        for res_id, content in conn.execute(select(resource.c.res_id, resource.c.content).where(
                resource.c.pk.in_(pks), resource.c.res_type == PATIENT, resource.c.deleted == false())):
            if content and _is_child(content, today):
                for key in address_keys(content, today=today):
                    by_home[key].add(res_id)
    for record, keys in homes.items():
        for key in keys:
            out[record] |= by_home.get(key, set()) - {record}
    return out


def _is_child(content: dict[str, Any], today: Any) -> bool:
    """Under 18 today, or of unknown age (an agency record without a birth date)."""
    born = facts.birth_date(content)
    if born is None:
        return True
    return (today.year - born.year - ((today.month, today.day) < (born.month, born.day))) < ADULT_AGE


def shared_parent_records(conn: Connection, record_ids: Sequence[str]) -> dict[str, set[str]]:
    """record id → Patient records of other children sharing a RelatedPerson identifier with it."""
    out: dict[str, set[str]] = defaultdict(set)
    if not record_ids:
        return out
    rp_patient = idx_reference.alias("rp_patient")
    rp_ident = idx_token.alias("rp_ident")
    other_ident = idx_token.alias("other_ident")
    other_patient = idx_reference.alias("other_patient")
    for part in chunks(record_ids):
        rows = conn.execute(
            select(rp_patient.c.target_id, other_patient.c.target_id)
            .join(rp_ident, and_(rp_ident.c.resource_pk == rp_patient.c.resource_pk,
                                 rp_ident.c.res_type == "RelatedPerson", rp_ident.c.param == "identifier"))
            .join(other_ident, and_(other_ident.c.res_type == "RelatedPerson", other_ident.c.param == "identifier",
                                    other_ident.c.system == rp_ident.c.system, other_ident.c.code == rp_ident.c.code,
                                    other_ident.c.resource_pk != rp_ident.c.resource_pk))
            .join(other_patient, and_(other_patient.c.resource_pk == other_ident.c.resource_pk,
                                      other_patient.c.res_type == "RelatedPerson", other_patient.c.param == "patient",
                                      other_patient.c.target_type == PATIENT))
            .where(rp_patient.c.res_type == "RelatedPerson", rp_patient.c.param == "patient",
                   rp_patient.c.target_type == PATIENT, rp_patient.c.target_id.in_(part),
                   rp_ident.c.code.is_not(None)))
        for record, sibling in rows:
            if sibling and sibling != record:
                out[record].add(sibling)
    return out


def _sibling_episodes(conn: Connection, owner: dict[str, str], now: datetime, base_url: str
                      ) -> dict[str, list[Episode]]:
    """child → the open episodes held on any linked record of each of its siblings (a shared parent
    found on a police record, a plan held on the local authority's)."""
    siblings = sibling_records(conn, sorted(owner), now)
    found = sorted({o for others in siblings.values() for o in others if o not in owner})
    # a sibling record → every record of the sibling child it belongs to (master and linked records)
    masters = masters_linking(conn, found, base_url)
    kin_child = {record: min(masters[record]) if masters.get(record) else record for record in found}
    kin_records = records_of(conn, set(kin_child.values()), base_url)
    for record, child in owner.items():  # siblings scored in the same batch
        kin_records.setdefault(child, []).append(record)
    wanted: dict[str, set[str]] = defaultdict(set)  # child → sibling records (not its own)
    for record, others in siblings.items():
        child = owner[record]
        for other in others:
            if owner.get(other) == child:
                continue
            sibling = kin_child.get(other, owner.get(other, other))
            wanted[child] |= {other, *kin_records.get(sibling, [sibling])}
    every = sorted({o for others in wanted.values() for o in others})
    episodes: dict[str, list[Episode]] = defaultdict(list)
    for part in chunks(every):
        rows = conn.execute(
            select(idx_reference.c.target_id, resource.c.content)
            .join(resource, resource.c.pk == idx_reference.c.resource_pk)
            .where(idx_reference.c.res_type == "EpisodeOfCare", idx_reference.c.param == "patient",
                   idx_reference.c.target_type == PATIENT, idx_reference.c.target_id.in_(part),
                   resource.c.deleted == false()))
        for target, content in rows:
            if content and (ep := facts.episode_of(content, now)) is not None and ep.open:
                episodes[target].append(ep)
    return {child: [e for rec in sorted(recs) for e in episodes.get(rec, [])] for child, recs in wanted.items()}


# -- scores ------------------------------------------------------------------------------------------

def current_rows(conn: Connection, child_ids: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in chunks(sorted(set(child_ids))):
        for row in conn.execute(select(risk_score).where(risk_score.c.child_id.in_(part))):
            out[row.child_id] = row
    return out


def write_rows(conn: Connection, new: list[dict[str, Any]], changed: list[dict[str, Any]],
               history: list[dict[str, Any]]) -> None:
    """Insert new score rows, update changed ones, append history: a few multi-row statements."""
    if new:
        conn.execute(insert(risk_score), new)
    if changed:
        columns = [c.name for c in risk_score.columns if c.name != "child_id"]
        stmt = update(risk_score).where(risk_score.c.child_id == bindparam("b_child_id")).values(
            {c: bindparam(f"b_{c}") for c in columns})
        conn.execute(stmt, [{f"b_{k}": v for k, v in row.items()} for row in changed])
    if history:
        conn.execute(insert(risk_score_history), history)


def existing_ids(conn: Connection, res_type: str, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` are stored resources of ``res_type`` (deleted ones included: an update revives them)."""
    out: set[str] = set()
    for part in chunks(sorted(set(ids))):
        out.update(conn.execute(select(resource.c.res_id).where(
            resource.c.res_type == res_type, resource.c.res_id.in_(part))).scalars())
    return out


def delete_rows(conn: Connection, child_ids: Sequence[str]) -> None:
    from sqlalchemy import delete
    for part in chunks(sorted(set(child_ids))):
        conn.execute(delete(risk_score).where(risk_score.c.child_id.in_(part)))
