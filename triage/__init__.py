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
- ``operation`` — ``$triage`` (ranked list, filters, paging, CSV); ``cli`` — ``fhir-server risk``
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhir_server import Services


def register_triage(services: "Services") -> None:
    """Wire triage into a server: ``$triage`` and rescoring on write (after record linkage's consumer)."""
    from .config import load_config
    from .consumer import install
    from .operation import register_triage_operation

    load_config(services.settings.profiles_dir)  # a bad configuration stops start-up, not a drain
    register_triage_operation(services)
    install(services.repo)
