"""Rescoring every child, e.g. after a new configuration is published: ``fhir-server risk recompute``.

Children are listed in one pass (set-based SQL over the search index), then scored in batches, one
transaction per batch: each batch reads its evidence in a fixed number of queries, scores in Python,
writes the changed score rows and history in multi-row statements and queues the new RiskAssessments,
Flags and Provenance in a :class:`~fhir_server.repository.bulk.DeferredCreates`. A batch that fails
rolls back alone; rerunning is harmless (an unchanged score writes nothing).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from fhir_server.fhir.instants import utcnow
from fhir_server.repository.bulk import DeferredCreates
from fhir_server.repository.sql import UnitOfWork
from fhir_server.storage.tables import risk_score

from . import store
from .config import RiskConfig
from .service import Scorer, Stats

if TYPE_CHECKING:
    from fhir_server.repository.sql import SqlRepository

DEFAULT_BATCH = 2000


def recompute_all(repo: "SqlRepository", config: RiskConfig, *, batch: int = DEFAULT_BATCH,
                  progress: Callable[[int, int], None] | None = None) -> Stats:
    now = utcnow()
    base_url = repo.settings.base_url
    with repo.engine.connect() as conn:
        children = store.all_children(conn, base_url)
        known = {c for (c,) in conn.execute(select(risk_score.c.child_id))}
    stale = sorted(known - set(children))
    total = Stats()
    for start in range(0, max(len(children), 1), batch):
        part = children[start:start + batch]
        with repo.engine.begin() as conn:
            uow = UnitOfWork(conn, repo)
            with DeferredCreates(uow, background=False) as writer:
                stats = Scorer(uow, config, now, writer=writer).rescore(part, stale=stale if start == 0 else [])
        total.add(stats)
        if progress:
            progress(min(start + batch, len(children)), len(children))
    return total
