"""Rescoring every child, e.g. after a new configuration is published: ``fhir-server risk recompute``.

Children are listed in one pass (set-based SQL over the search index), then scored in batches, one
transaction per batch: each batch reads its evidence in a fixed number of queries, scores in Python,
writes the changed score rows and history in multi-row statements and queues the new RiskAssessments,
Flags and Provenance in a :class:`~fhir_server.repository.bulk.DeferredCreates`. A batch that fails
rolls back alone; rerunning is harmless (an unchanged score writes nothing). On PostgreSQL ``jobs``
processes score batches side by side (the work is as much Python as SQL).
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from fhir_server.fhir.instants import utcnow
from fhir_server.repository.bulk import DeferredCreates
from fhir_server.repository.sql import UnitOfWork
from fhir_server.storage.tables import risk_score

from . import store
from .config import RiskConfig
from .service import Scorer, Stats

if TYPE_CHECKING:
    from fhir_server.config import Settings
    from fhir_server.repository.sql import SqlRepository

DEFAULT_BATCH = 2000


def recompute_all(repo: "SqlRepository", config: RiskConfig, *, batch: int = DEFAULT_BATCH, jobs: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> Stats:
    now = utcnow()
    base_url = repo.settings.base_url
    with repo.engine.connect() as conn:
        children = store.all_children(conn, base_url)
        known = {c for (c,) in conn.execute(select(risk_score.c.child_id))}
    stale = sorted(known - set(children))
    parts = [children[i:i + batch] for i in range(0, len(children), batch)] or [[]]
    total, done = Stats(), 0
    if jobs <= 1 or repo.engine.dialect.name != "postgresql":
        for i, part in enumerate(parts):
            total.add(score_batch(repo, config, now, part, stale if i == 0 else []))
            done += len(part)
            if progress:
                progress(done, len(children))
        return total
    # the Device the Flags name is written up front, so parallel batches never race to create it
    with repo.engine.begin() as conn:
        Scorer(UnitOfWork(conn, repo), config, now).ensure_device()
    total.add(score_batch(repo, config, now, parts[0], stale))
    done += len(parts[0])
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_score_in_process, repo.settings, config, now, part): len(part) for part in parts[1:]}
        for future in as_completed(futures):
            total.add(future.result())
            done += futures[future]
            if progress:
                progress(done, len(children))
    return total


def score_batch(repo: "SqlRepository", config: RiskConfig, now: datetime, part: list[str], stale: list[str]) -> Stats:
    with repo.engine.begin() as conn:
        uow = UnitOfWork(conn, repo)
        with DeferredCreates(uow, background=False) as writer:
            return Scorer(uow, config, now, writer=writer).rescore(part, stale=stale)


_repo: Any = None


def _score_in_process(settings: "Settings", config: RiskConfig, now: datetime, part: list[str]) -> Stats:
    global _repo
    if _repo is None:
        from fhir_server.repository.sql import SqlRepository
        from fhir_server.search.registry import SearchRegistry
        from fhir_server.storage.db import make_engine

        _repo = SqlRepository(make_engine(settings.database_url), SearchRegistry.load(settings.profiles_dir), settings)
    return score_batch(_repo, config, now, part, [])
