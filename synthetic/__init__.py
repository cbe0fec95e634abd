"""Synthetic multi-agency safeguarding data: the agency source files (CIN census XML, SSDA903 CSV,
police notifications, school census, ED attendances, FHIR bundles) for N families, seeded and
deterministic, with a separate ground truth for evaluating linkage, alerts and intervention impact.

No real person's data is used anywhere. See docs/synthetic-data.md.
"""
from __future__ import annotations

from .config import ErrorRates, SynthConfig
from .generator import RunSummary, generate

__all__ = ["ErrorRates", "RunSummary", "SynthConfig", "generate"]
