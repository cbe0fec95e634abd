"""Risk summary, triage and escalation Flags.

A transparent risk model (weights, recency decay, corroboration, combinations and triggers in
``profiles/risk/risk-model.json``) scores every child — the master Patient of record linkage, or an
agency record linked to none — from what all agencies hold, with the reasons for every point.

Layout (the first three are pure):

- ``config``    — the configuration, read and checked
- ``facts``     — stored resources → evidence and episodes
- ``model``     — evidence → score, band, reasons, triggers
- ``resources`` — RiskAssessment, escalation Flag, Provenance, Device
- ``store``     — set-based SQL: children, their evidence and siblings; score rows and history
- ``service``   — rescoring a batch; RiskAssessment versions; raising, updating and closing Flags
- ``consumer``  — rescoring on write (outbox consumer); ``recompute`` — everyone, for a new configuration
  and on a schedule (``tasks``: Celery beat; the local beat without a broker)
- ``operation`` — ``$triage`` (ranked list, filters, paging, CSV); ``cli`` — ``fhir-server risk``
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhir_server import Services


def register_triage(services: "Services", *, schedule: bool = False) -> None:
    """Wire triage into a server: ``$triage``, rescoring on write (after record linkage's consumer) and,
    with ``schedule`` (storage not bound to a test's connection) and no broker, the periodic recompute
    on this process's local beat (with a broker, Celery beat runs it: triage/tasks.py)."""
    from fhir_server.periodic import local_beat
    from fhir_server.worker import celery

    from .config import load_config
    from .consumer import install
    from .operation import register_triage_operation
    from .recompute import scheduled_recompute

    load_config(services.settings.profiles_dir)  # a bad configuration stops start-up, not a drain
    register_triage_operation(services)
    install(services.repo)
    seconds = services.settings.risk_recompute_seconds
    if schedule and seconds > 0 and celery.conf.task_always_eager:
        local_beat.every(f"risk-recompute-{id(services.engine):x}", seconds,
                         lambda: scheduled_recompute(services.repo), owner=services.engine)
