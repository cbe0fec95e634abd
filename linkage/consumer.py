"""Linking on write: an outbox consumer (fhir_server/worker.py) that links each agency Patient that was
created or updated to its master, or puts a possible match to review (:mod:`linkage.linker`).

It runs after the write committed, in the drain's transaction, so the decision's master Patient,
Task and Provenance commit with the outbox rows being marked processed — and a failure leaves them
pending for the next drain. It is idempotent: a record already in a master, a pair already put to
review and a master's split-off records are all left as they are. Only Patients carrying a
source-agency tag (what the agency mappings load) are linked; master Patients never are.

On PostgreSQL one transaction-scoped advisory lock serialises linking, so two drains cannot create
two masters for one child. ``FHIR_LINKAGE_ON_WRITE=false`` turns linking on write off.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from fhir_server.repository.context import RequestContext
from fhir_server.repository.sql import UnitOfWork
from fhir_server.worker import OutboxEvent, register_consumer

from .linker import Matcher
from .operations import load_model
from .record import from_patient, is_master
from .store import PATIENT, SqlLinkStore

if TYPE_CHECKING:
    from fhir_server.repository.sql import SqlRepository

log = logging.getLogger(__name__)
ADVISORY_LOCK = 0x5F6C696E6B  # "_link"


class _State:
    repo: "SqlRepository | None" = None


def enabled() -> bool:
    return os.environ.get("FHIR_LINKAGE_ON_WRITE", "true").lower() not in ("0", "false", "no", "off")


def install(repo: "SqlRepository") -> None:
    """Register the consumer (once per process) for storage like ``repo``'s (its search registry and
    settings; the connection is always the drain's)."""
    _State.repo = repo
    register_consumer(link_on_write)


def link_on_write(conn: Connection, events: list[OutboxEvent]) -> None:
    """The outbox consumer: link the agency Patients among ``events``."""
    repo = _State.repo
    if repo is None or not enabled():
        return
    ids = list(dict.fromkeys(e.res_id for e in events if e.res_type == PATIENT and e.event in ("create", "update")))
    if ids:
        link_patients(conn, repo, ids)


def link_patients(conn: Connection, repo: "SqlRepository", ids: list[str]) -> dict[str, str]:
    """Decide for each Patient id (in order); returns id → action. One record's failure is logged and
    skipped (its savepoint rolled back) so that it cannot hold up the whole outbox."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
    uow = UnitOfWork(conn, repo)
    ctx = RequestContext.system(repo.settings.base_url).with_changes(client_id="linkage")
    matcher = Matcher(load_model(), SqlLinkStore(uow, ctx))
    done: dict[str, str] = {}
    for res_id in ids:
        content = uow.read_many([(PATIENT, res_id)]).get((PATIENT, res_id))
        if content is None or is_master(content) or not _from_agency(content):
            continue
        try:
            with conn.begin_nested():
                done[res_id] = matcher.decide(from_patient(content, res_id)).action
        except Exception:  # noqa: BLE001 - see docstring
            log.exception("Linking Patient/%s failed; it is left unlinked", res_id)
            done[res_id] = "failed"
    return done


def _from_agency(content: dict) -> bool:
    return any(str(t.get("system", "")).endswith("/CodeSystem/source-agency")
               for t in (content.get("meta") or {}).get("tag") or [])
