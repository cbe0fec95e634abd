"""``$triage`` parameters → one page of ranked children, in a few indexed queries on ``risk_score``.

Pure parsing (:func:`parse_triage`) and the SQL (:func:`ranked_page`) are kept apart from the HTTP
handler (``operation.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, true, union

from fhir_server.errors import BadRequest
from fhir_server.search.normalize import date_range
from fhir_server.storage.tables import idx_reference, resource, risk_score, risk_score_history

DEFAULT_COUNT = 50
MAX_COUNT = 1000
# Hidden children passed to the count and page queries as a list up to this many (bind parameters:
# SQLite allows 32,766), beyond it as a subquery each query runs.
HIDDEN_LIST_MAX = 20_000
KNOWN = frozenset({"band", "local-authority", "age-min", "age-max", "agency", "changed-since", "_count", "_offset",
                   "_format", "_pretty"})


@dataclass(frozen=True)
class TriageQuery:
    bands: tuple[str, ...] = ()
    local_authorities: tuple[str, ...] = ()
    age_min: int | None = None
    age_max: int | None = None
    agencies: tuple[str, ...] = ()
    changed_since: datetime | None = None
    count: int = DEFAULT_COUNT
    offset: int = 0


def parse_triage(params: list[tuple[str, str]], band_codes: set[str]) -> TriageQuery:
    """Read the parameters of profiles/operations/triage.json; a bad one is a 400 naming it.
    Repeated parameters and comma-separated values are ORs (search.html#combining)."""
    values: dict[str, list[str]] = {}
    for name, value in params:
        if name not in KNOWN:
            raise BadRequest(f"$triage has no parameter {name!r}", expression=name)
        values.setdefault(name, []).extend(v.strip() for v in value.split(",") if v.strip())

    def integer(name: str, low: int, high: int) -> int | None:
        given = values.get(name)
        if not given:
            return None
        if len(given) > 1 or not given[0].isdigit() or not low <= int(given[0]) <= high:
            raise BadRequest(f"{name} must be one whole number from {low} to {high}", expression=name)
        return int(given[0])

    bands = tuple(values.get("band", ()))
    if unknown := [b for b in bands if b not in band_codes]:
        raise BadRequest(f"Unknown band {unknown[0]!r}; the bands are {', '.join(sorted(band_codes))}",
                         expression="band")
    changed = None
    if given := values.get("changed-since"):
        try:
            changed = date_range(given[0])[0] if len(given) == 1 else None
        except ValueError:
            changed = None
        if changed is None:
            raise BadRequest("changed-since must be one FHIR date or dateTime", expression="changed-since")
    age_min, age_max = integer("age-min", 0, 130), integer("age-max", 0, 130)
    if age_min is not None and age_max is not None and age_min > age_max:
        raise BadRequest("age-min is greater than age-max", expression="age-min")
    return TriageQuery(bands, tuple(values.get("local-authority", ())), age_min, age_max,
                       tuple(values.get("agency", ())), changed, integer("_count", 1, MAX_COUNT) or DEFAULT_COUNT,
                       integer("_offset", 0, 10**9) or 0)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def _conditions(q: TriageQuery, today: date) -> list[Any]:
    where: list[Any] = []
    if q.bands:
        where.append(risk_score.c.band.in_(q.bands))
    if q.local_authorities:
        where.append(risk_score.c.local_authority.in_(q.local_authorities))
    if q.agencies:
        where.append(or_(*(risk_score.c.agencies.contains(f"|{a}|", autoescape=True) for a in q.agencies)))
    if q.changed_since is not None:
        where.append(risk_score.c.changed_at >= q.changed_since)
    if q.age_min is not None:  # at least age_min years old: born on or before today - age_min years
        where.append(risk_score.c.birth_date <= _years_before(today, q.age_min))
    if q.age_max is not None:  # not yet age_max + 1: born after today - (age_max + 1) years
        where.append(risk_score.c.birth_date > _years_before(today, q.age_max + 1))
    return where


def ranked_page(conn: Connection, q: TriageQuery, now: datetime, *, access: Any = None
                ) -> tuple[int, list[Any], dict[str, dict[int, float]]]:
    """(total, rows of the page, child → {days: score then}) — highest score first. With ``access``
    (the request's Visibility, fhir_server/auth/policy.py) only the children whose Patient record(s)
    the caller may see are counted and listed: the filter is inside both queries, so ``total``
    cannot reveal a restricted child either."""
    where = _conditions(q, now.date())
    if access is not None:
        where.append(children_visible(conn, access))
    total = conn.execute(select(func.count()).select_from(risk_score).where(*where)).scalar_one()
    rows = conn.execute(select(risk_score).where(*where)
                        .order_by(risk_score.c.score.desc(), risk_score.c.child_id.desc())
                        .limit(q.count).offset(q.offset)).all()
    if access is not None and rows:
        rows = still_visible(conn, access, rows)
    return total, rows, scores_back_then(conn, [r.child_id for r in rows], now)


def still_visible(conn: Connection, access: Any, rows: list[Any]) -> list[Any]:
    """The page's children the per-child rule (``Visibility.patient_visible``) lets the caller see
    now: the hidden list of :func:`children_visible` was read by an earlier statement (reads run in
    autocommit), so a label or Consent committed in between would otherwise show its child for this
    one request. One probe per listed child (a page: 50), never per child of the whole list."""
    ids = [r.child_id for r in rows]
    seen = set(conn.execute(select(risk_score.c.child_id).where(
        risk_score.c.child_id.in_(ids), access.patient_visible(risk_score.c.child_id))).scalars())
    return [r for r in rows if r.child_id in seen]


def children_visible(conn: Connection, access: Any) -> Any:
    """SQL on ``risk_score``: the child may be seen — its Patient is not deleted, and the caller may see
    it and every agency record its ``link`` names (what ``Visibility.patient_visible`` says per child).
    Decided once for the whole list rather than per child: the hidden Patient records
    (``Visibility.hidden_patients``: the few labelled or Consent-named ones the caller may not see),
    the masters linking them and the deleted Patients (a partial index: resource rows are never
    removed, so a child that is not deleted exists) are gathered first; each child is then one probe
    in that set. The set is read once here (the count and the page then share it) when it is small,
    as it is when few records carry labels the caller is not cleared for; else it stays a subquery."""
    hidden = access.hidden_patients()
    if hidden is None:
        return access.patient_visible(risk_score.c.child_id)
    records = hidden.cte("hidden_record")
    ref, master, gone = idx_reference.alias(), resource.alias(), resource.alias()
    hidden_children = union(
        select(records.c.res_id),
        select(master.c.res_id).select_from(ref.join(master, master.c.pk == ref.c.resource_pk))
        .where(ref.c.res_type == "Patient", ref.c.param == "link", ref.c.target_type == "Patient",
               ref.c.target_id.in_(select(records.c.res_id)), master.c.res_type == "Patient"),
        select(gone.c.res_id).where(gone.c.res_type == "Patient", gone.c.deleted))
    ids = conn.execute(hidden_children.limit(HIDDEN_LIST_MAX + 1)).scalars().all()
    if len(ids) > HIDDEN_LIST_MAX:
        return risk_score.c.child_id.not_in(hidden_children)
    return risk_score.c.child_id.not_in(sorted(ids)) if ids else true()


def scores_back_then(conn: Connection, child_ids: list[str], now: datetime, days: tuple[int, ...] = (7, 30)
                     ) -> dict[str, dict[int, float]]:
    """Each child's score as it stood ``days`` ago (the last change recorded on or before then)."""
    out: dict[str, dict[int, float]] = {c: {} for c in child_ids}
    if not child_ids:
        return out
    for n in days:
        at = now - timedelta(days=n)
        latest = (select(risk_score_history.c.child_id, func.max(risk_score_history.c.scored_at).label("at"))
                  .where(risk_score_history.c.child_id.in_(child_ids), risk_score_history.c.scored_at <= at)
                  .group_by(risk_score_history.c.child_id).subquery())
        rows = conn.execute(select(risk_score_history.c.child_id, risk_score_history.c.score)
                            .join(latest, and_(latest.c.child_id == risk_score_history.c.child_id,
                                               latest.c.at == risk_score_history.c.scored_at)))
        for child, score in rows:
            out[child][n] = score
    return out
