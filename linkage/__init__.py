"""Cross-agency record linkage: one child, one master record.

Each agency holds its own Patient for the same child, with its own identifiers and mistakes. This
package decides which of them are the same person (Fellegi–Sunter probabilistic matching with
parameters estimated by EM, see :mod:`linkage.model`), answers ``Patient/$match``, links agency
records to a golden "master" Patient on write (through the outbox), and lets practitioners confirm or
split links (``$link`` / ``$unlink``), with a Provenance for every decision.

Layout (dependencies point downwards; the first four are pure and know nothing of storage):

- ``compare``  — string, name, date and postcode comparators
- ``record``   — a Patient reduced to the fields that are compared (:class:`PersonRecord`)
- ``model``    — comparison vectors, m/u probabilities, EM, match weights, grades
- ``blocking`` — which pairs are compared at all
- ``linker``   — the link decision for one arriving record (certain → link, probable → review)
- ``memory``   — an in-memory store (evaluation, tests); ``store`` — the same on the FHIR database
- ``operations`` / ``consumer`` — ``$match``/``$link``/``$unlink`` and linking on write
- ``evaluate`` — precision/recall/F1 against the synthetic generator's ground truth
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhir_server import Services


def register_linkage(services: "Services") -> None:
    """Wire linkage into a server: ``$match``, ``$link``, ``$unlink`` and linking on write."""
    from .consumer import install
    from .operations import register_linkage_operations

    register_linkage_operations(services)
    install(services.repo)
