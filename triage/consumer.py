"""Rescoring on write: an outbox consumer (fhir_server/worker.py) that rescores every child a committed
change touches — the child (resolved to its master record) and its siblings — in the drain's
transaction, so the score, RiskAssessment, Flag and Provenance commit with the outbox rows being marked
processed, and a failure leaves the rows pending for the next drain.

The siblings are found on every linked record of the touched children (store.py: a shared parent or
a shared home). A change touches the Patients it is about, in the version written and in the one before it (a
subject that changed rescores both children): a Patient itself, an Observation's ``subject``, an
EpisodeOfCare's ``patient``, a RelatedPerson's ``patient``. The server's own RiskAssessments, Flags
and Provenance are not evidence, so writing them never loops. It is registered after record linkage,
so an agency record arriving in the same batch is already linked to its master when it is rescored.
``FHIR_RISK_ON_WRITE=false`` turns it off (e.g. during a bulk load followed by ``fhir-server risk recompute``).
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, or_, select, text

from fhir_server.fhir.instants import utcnow
from fhir_server.repository.sql import UnitOfWork
from fhir_server.single_view.refs import local_ref
from fhir_server.storage.tables import resource_history
from fhir_server.worker import OutboxEvent, register_consumer

from . import store
from .config import load_config
from .recompute import ADVISORY_LOCK
from .service import Scorer, Stats

if TYPE_CHECKING:
    from fhir_server.repository.sql import SqlRepository

log = logging.getLogger(__name__)
SUBJECT_ELEMENT = {"Observation": "subject", "EpisodeOfCare": "patient", "RelatedPerson": "patient"}
RELEVANT = frozenset({"Patient", *SUBJECT_ELEMENT})


class _State:
    repo: "SqlRepository | None" = None


def enabled() -> bool:
    return os.environ.get("FHIR_RISK_ON_WRITE", "true").lower() not in ("0", "false", "no", "off")


def install(repo: "SqlRepository") -> None:
    _State.repo = repo
    register_consumer(rescore_on_write)


def rescore_on_write(conn: Connection, events: list[OutboxEvent]) -> None:
    """The outbox consumer (see the module docstring)."""
    repo = _State.repo
    if repo is None or not enabled():
        return
    wanted = [e for e in events if e.res_type in RELEVANT]
    if wanted:
        rescore_touched(conn, repo, wanted)


def rescore_touched(conn: Connection, repo: "SqlRepository", events: list[OutboxEvent]) -> Stats:
    base_url = repo.settings.base_url
    patients = touched_patients(conn, events, base_url)
    if not patients:
        return Stats()
    if conn.dialect.name == "postgresql":
        # two drains rescoring one child at once would both raise its Flag
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
    now = utcnow()
    children = store.children_of(conn, patients, base_url)
    # every record of every touched child: a shared parent or home may be on another agency's record
    records = set(patients) | {r for recs in store.records_of(conn, children, base_url).values() for r in recs}
    siblings = {s for found in store.sibling_records(conn, sorted(records), now).values() for s in found}
    children |= store.children_of(conn, siblings, base_url)
    stale = sorted(p for p in patients if p not in children)
    scorer = Scorer(UnitOfWork(conn, repo), load_config(repo.settings.profiles_dir), now)
    return scorer.rescore(sorted(children), stale=stale)


def touched_patients(conn: Connection, events: list[OutboxEvent], base_url: str) -> set[str]:
    """Patient ids the events are about (the written version and the previous one)."""
    out = {e.res_id for e in events if e.res_type == "Patient"}
    others = [e for e in events if e.res_type != "Patient"]
    for part in range(0, len(others), 500):
        batch = others[part:part + 500]
        cond = or_(*(and_(resource_history.c.res_type == e.res_type, resource_history.c.res_id == e.res_id,
                          resource_history.c.version_id.in_([e.version_id, e.version_id - 1])) for e in batch))
        for res_type, content in conn.execute(select(resource_history.c.res_type, resource_history.c.content).where(cond)):
            out.update(_subjects(res_type, content, base_url))
    return out


def _subjects(res_type: str, content: Any, base_url: str) -> list[str]:
    if not isinstance(content, dict):
        return []
    ref = content.get(SUBJECT_ELEMENT.get(res_type, ""))
    found = local_ref(ref.get("reference"), base_url) if isinstance(ref, dict) else None
    return [found[1]] if found and found[0] == "Patient" else []
