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

from sqlalchemy import select, text

from fhir_server.fhir.instants import utcnow
from fhir_server.repository.bulk import DeferredCreates
from fhir_server.repository.sql import UnitOfWork
from fhir_server.storage.tables import risk_score

from . import store
from .config import RiskConfig, load_config
from .service import Scorer, Stats

if TYPE_CHECKING:
    from fhir_server.config import Settings
    from fhir_server.repository.sql import SqlRepository

DEFAULT_BATCH = 2000
ADVISORY_LOCK = 0x5F7269736B  # "_risk", shared with rescoring on write (consumer.py)
SCHEDULED_LOCK = ADVISORY_LOCK + 1  # one scheduled recompute at a time across processes


def recompute_all(repo: "SqlRepository", config: RiskConfig, *, batch: int = DEFAULT_BATCH, jobs: int = 1,
                  progress: Callable[[int, int], None] | None = None, now: datetime | None = None) -> Stats:
    """Rescore every child as of ``now`` (default: the current time); see the module docstring."""
    now = now or utcnow()
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
        if conn.dialect.name == "postgresql":
            # rescoring on write holds this lock exclusively: a drain and a batch scoring the same child
            # at once would both raise its Flag; batches (disjoint children) share it
            conn.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": ADVISORY_LOCK})
        uow = UnitOfWork(conn, repo)
        with DeferredCreates(uow, background=False) as writer:
            return Scorer(uow, config, now, writer=writer).rescore(part, stale=stale)


def scheduled_recompute(repo: "SqlRepository", *, now: datetime | None = None) -> Stats | None:
    """The periodic recompute (``FHIR_RISK_RECOMPUTE_SECONDS``, daily by default): scores decay and
    triggers expire with time alone, so without it a child nobody writes about keeps yesterday's
    score and an escalation whose evidence has aged out stays open. Idempotent: a second run at the
    same time writes nothing; on PostgreSQL a run already going in another process makes this one
    return ``None`` at once (each server process runs its own local beat without a broker)."""
    config = load_config(repo.settings.profiles_dir)
    if repo.engine.dialect.name != "postgresql":
        return recompute_all(repo, config, now=now)
    with repo.engine.connect() as guard:
        if not guard.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": SCHEDULED_LOCK}).scalar():
            return None
        try:
            return recompute_all(repo, config, now=now)
        finally:
            guard.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEDULED_LOCK})
            guard.commit()


_repo: Any = None


def _score_in_process(settings: "Settings", config: RiskConfig, now: datetime, part: list[str]) -> Stats:
    global _repo
    if _repo is None:
        from fhir_server.repository.sql import SqlRepository
        from fhir_server.search.registry import SearchRegistry
        from fhir_server.storage.db import make_engine

        _repo = SqlRepository(make_engine(settings.database_url), SearchRegistry.load(settings.profiles_dir), settings)
    return score_batch(_repo, config, now, part, [])
