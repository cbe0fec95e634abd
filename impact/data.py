"""What the impact estimates are made of, read from the server's search indexes.

One child is one *unit*: the golden master Patient that linkage made of the agencies' records, or the
agency's own Patient while it is unlinked, so that a police notification and a school exclusion of the
same child count for the same child. For each unit the reader collects, with set-based queries on the
index tables (so the same SQL runs on SQLite and PostgreSQL, and 100,000 children take seconds):

- the date of birth (``Patient.birthDate``);
- *concern events*: every Observation coded with a risk factor or a CIN assessment factor, by date and
  source agency — the routine measurements (a term's attendance, an A&E attendance) are not concerns;
- *school attendance*: each term's attendance (``school-attendance``, a percentage), dated at the end
  of the term, when it is known — a child's attendance falls as the family's difficulties grow, long
  before anyone refers them, so it is the best routine sign of a risk no agency has named yet;
- *A&E attendances* on their own (``ed-attendance``): not a concern, but any incident, an A&E visit
  included, makes an offer of help more likely, so the estimates must see them;
- social-care and intervention episodes (EpisodeOfCare type, period, managing organisation, and for a
  CIN episode its reason for closure: RC9, closed with a referral to early help, is a step-down);
- which children are siblings (their RelatedPersons share an identifier: the same parent known to the
  same agency, as triage/ reads it): a family's children share its risk and, often, its intervention,
  so the standard errors are clustered by family;
- the risk scores triage/ recorded for each child over time (``risk_score_history``: a row whenever a
  child's score changed, stamped with when it was scored), for the "risk score at 6 months" outcome.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.engine import Connection

from fhir_server.storage.tables import (idx_date, idx_quantity, idx_reference, idx_token, outbox, resource,
                                         risk_score_history)
from mappings import systems
from triage.store import shared_parent_records

RISK_FACTOR = systems.code_system("risk-factor")
CIN_FACTOR = systems.code_system("cin-assessment-factor")
EPISODE_TYPE = systems.code_system("episode-type")
LINKAGE_TAG = systems.code_system("linkage")
CLOSURE_REASON = systems.code_system("cin-closure-reason")
ED_ATTENDANCE, SCHOOL_ATTENDANCE = "ed-attendance", "school-attendance"
ROUTINE = (SCHOOL_ATTENDANCE, ED_ATTENDANCE)  # measurements, recorded whatever the child's risk
STEP_DOWN = "RC9"  # CIN closure reason: case closed after assessment, referred to early help

# Social-care episode types (the rest of episode-type are interventions).
CIN, CIN_PLAN, S47, CP_PLAN, LOOKED_AFTER = "cin", "cin-plan", "s47-enquiry", "cp-plan", "looked-after"
SOCIAL_CARE = (CIN, CIN_PLAN, S47, CP_PLAN, LOOKED_AFTER)

# The source-agency tag's code starts with the agency kind: local-authority/335, police/20, …
AGENCY_KINDS = ("local-authority", "police", "education", "health")


@dataclass(frozen=True)
class Episode:
    unit: str
    kind: str  # episode-type code
    start: date
    end: date | None
    organization: str | None  # managingOrganization id (the provider of an intervention)
    resource_id: str
    closure_reason: str | None = None  # a CIN episode's ReasonForClosure code (RC1…RC9)


@dataclass
class Records:
    """Everything the estimates read, keyed by unit."""

    birth: dict[str, date] = field(default_factory=dict)
    events: list[tuple[str, date, int]] = field(default_factory=list)  # unit, date, agency kind index
    ed_visits: list[tuple[str, date]] = field(default_factory=list)  # unit, date of an A&E attendance
    attendance: list[tuple[str, date, float]] = field(default_factory=list)  # unit, term end, % attended
    scores: list[tuple[str, date, float]] = field(default_factory=list)  # unit, day scored, the new score
    siblings: list[tuple[str, str]] = field(default_factory=list)  # pairs of units known to be siblings
    episodes: list[Episode] = field(default_factory=list)
    units_of: dict[str, str] = field(default_factory=dict)  # any Patient id -> its unit

    def unit(self, patient_id: str) -> str:
        return self.units_of.get(patient_id, patient_id)

    @property
    def last_date(self) -> date | None:
        dates = [d for _u, d, _k in self.events] + [e.start for e in self.episodes]
        dates += [e.end for e in self.episodes if e.end is not None]
        return max(dates) if dates else None

    @property
    def first_date(self) -> date | None:
        dates = [d for _u, d, _k in self.events] + [e.start for e in self.episodes]
        return min(dates) if dates else None


def data_version(conn: Connection) -> int:
    """Changes whenever any resource is written (every write adds an outbox row)."""
    return int(conn.execute(select(func.coalesce(func.max(outbox.c.id), 0))).scalar_one())


def read_records(conn: Connection) -> Records:
    records = Records()
    records.units_of = _units(conn)
    for pid, born in conn.execute(
            select(resource.c.res_id, idx_date.c.low)
            .join(resource, resource.c.pk == idx_date.c.resource_pk)
            .where(idx_date.c.res_type == "Patient", idx_date.c.param == "birthdate", ~resource.c.deleted)):
        if born is None:
            continue
        unit = records.unit(pid)
        born = _day(born)
        # a master's own birth date wins; otherwise the earliest an agency records
        if unit == pid or unit not in records.birth:
            records.birth[unit] = born
    records.events, records.ed_visits = _concern_events(conn, records)
    records.attendance = _attendance(conn, records)
    patients = conn.execute(select(resource.c.res_id).where(resource.c.res_type == "Patient",
                                                            ~resource.c.deleted)).scalars().all()
    pairs = shared_parent_records(conn, patients)  # a family: children sharing a parent
    records.siblings = sorted({(records.unit(a), records.unit(b)) for a, others in pairs.items()
                               for b in others if records.unit(a) != records.unit(b)})
    records.scores = [(records.unit(child), _day(when), float(score)) for child, when, score in conn.execute(
        select(risk_score_history.c.child_id, risk_score_history.c.scored_at, risk_score_history.c.score)
        .order_by(risk_score_history.c.scored_at, risk_score_history.c.id))]
    records.episodes = _episodes(conn, records)
    return records


def _units(conn: Connection) -> dict[str, str]:
    """Agency Patient id -> master id, from the masters' ``Patient.link`` (linkage's golden records)."""
    masters = (select(idx_token.c.resource_pk)
               .where(idx_token.c.res_type == "Patient", idx_token.c.param == "_tag",
                      idx_token.c.system == LINKAGE_TAG, idx_token.c.code == "master"))
    rows = conn.execute(
        select(resource.c.res_id, idx_reference.c.target_id)
        .join(resource, resource.c.pk == idx_reference.c.resource_pk)
        .where(idx_reference.c.res_type == "Patient", idx_reference.c.param == "link",
               idx_reference.c.resource_pk.in_(masters), ~resource.c.deleted))
    pairs = [(master, target) for master, target in rows if target]
    master_ids = {m for m, _t in pairs}
    return {target: master for master, target in pairs if target not in master_ids}


def _concern_events(conn: Connection, records: Records) -> tuple[list[tuple[str, date, int]], list[tuple[str, date]]]:
    """(concern events, A&E attendances) of every unit."""
    code, subj, when, tag = (idx_token.alias("code"), idx_reference.alias("subj"), idx_date.alias("d"),
                             idx_token.alias("tag"))
    concern = and_(code.c.res_type == "Observation", code.c.param == "code",
                   code.c.system.in_((RISK_FACTOR, CIN_FACTOR)),
                   or_(code.c.code.notin_(ROUTINE), code.c.code == ED_ATTENDANCE))
    query = (select(code.c.resource_pk, subj.c.target_id, when.c.low, tag.c.code, code.c.code).distinct()
             .join(subj, and_(subj.c.resource_pk == code.c.resource_pk, subj.c.param == "subject",
                              subj.c.target_type == "Patient"))
             .join(when, and_(when.c.resource_pk == code.c.resource_pk, when.c.param == "date"))
             .outerjoin(tag, and_(tag.c.resource_pk == code.c.resource_pk, tag.c.param == "_tag",
                                  tag.c.system == systems.AGENCY_TAG_SYSTEM))
             .where(concern, ~_entered_in_error(code.c.resource_pk)))
    seen: set[int] = set()
    events, visits = [], []
    for pk, patient_id, low, agency, kind in conn.execute(query):
        if pk in seen or low is None or not patient_id:
            continue
        seen.add(pk)
        if kind == ED_ATTENDANCE:
            visits.append((records.unit(patient_id), _day(low)))
        else:
            events.append((records.unit(patient_id), _day(low), _agency_kind(agency)))
    return events, visits


def _attendance(conn: Connection, records: Records) -> list[tuple[str, date, float]]:
    """Each term's attendance figure: (unit, the end of the term, percentage of sessions attended)."""
    code, subj, when, value = (idx_token.alias("code"), idx_reference.alias("subj"), idx_date.alias("d"),
                               idx_quantity.alias("q"))
    query = (select(code.c.resource_pk, subj.c.target_id, func.coalesce(when.c.high, when.c.low), value.c.value)
             .join(subj, and_(subj.c.resource_pk == code.c.resource_pk, subj.c.param == "subject",
                              subj.c.target_type == "Patient"))
             .join(when, and_(when.c.resource_pk == code.c.resource_pk, when.c.param == "date"))
             .join(value, and_(value.c.resource_pk == code.c.resource_pk, value.c.param == "value-quantity"))
             .where(code.c.res_type == "Observation", code.c.param == "code", code.c.system == RISK_FACTOR,
                    code.c.code == SCHOOL_ATTENDANCE))
    seen: set[int] = set()
    out = []
    for pk, patient_id, known, percent in conn.execute(query):
        if pk in seen or known is None or percent is None or not patient_id:
            continue
        seen.add(pk)
        out.append((records.unit(patient_id), _day(known), float(percent)))
    return out


def _episodes(conn: Connection, records: Records) -> list[Episode]:
    kind, pat, when, org, why = (idx_token.alias("kind"), idx_reference.alias("pat"), idx_date.alias("d"),
                                 idx_reference.alias("org"), idx_token.alias("why"))
    query = (select(resource.c.res_id, kind.c.code, pat.c.target_id, when.c.low, when.c.high, org.c.target_id,
                    why.c.code)
             .select_from(kind)
             .join(resource, resource.c.pk == kind.c.resource_pk)
             .join(pat, and_(pat.c.resource_pk == kind.c.resource_pk, pat.c.param == "patient"))
             .join(when, and_(when.c.resource_pk == kind.c.resource_pk, when.c.param == "date"))
             .outerjoin(org, and_(org.c.resource_pk == kind.c.resource_pk, org.c.param == "organization"))
             .outerjoin(why, and_(why.c.resource_pk == kind.c.resource_pk, why.c.param == "type",
                                  why.c.system == CLOSURE_REASON))
             .where(kind.c.res_type == "EpisodeOfCare", kind.c.param == "type", kind.c.system == EPISODE_TYPE,
                    ~resource.c.deleted, ~_entered_in_error(kind.c.resource_pk)))
    out = []
    for res_id, code, patient_id, low, high, organization, reason in conn.execute(query):
        if low is None or not patient_id:
            continue  # a planned episode with no start yet is not an exposure
        out.append(Episode(records.unit(patient_id), code, _day(low), _day(high) if high is not None else None,
                           organization, res_id, reason))
    return out


def _entered_in_error(resource_pk: Any) -> Any:
    """The record says it should never have existed (status entered-in-error: a corrected agency
    return retires the old record so, mappings/snapshot.py): not a concern, not an exposure."""
    status = idx_token.alias("status")
    return exists().where(status.c.resource_pk == resource_pk, status.c.param == "status",
                          status.c.code == "entered-in-error")


def _agency_kind(tag_code: str | None) -> int:
    kind = (tag_code or "").split("/", 1)[0]
    return AGENCY_KINDS.index(kind) if kind in AGENCY_KINDS else 0


def _day(value: datetime | date) -> date:
    return value.date() if isinstance(value, datetime) else value


def by_unit(records: Records) -> dict[str, list[Episode]]:
    grouped: dict[str, list[Episode]] = defaultdict(list)
    for e in records.episodes:
        grouped[e.unit].append(e)
    return grouped
