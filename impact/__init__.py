"""Interventions: estimate an intervention's impact beforehand and evaluate it afterwards, with honest
uncertainty (``$intervention-impact``; docs/interventions.md).

:mod:`impact.data` reads the study data from the search indexes, :mod:`impact.design` turns them into
index cases, covariates and outcomes, :mod:`impact.estimators` holds the statistics (statsmodels),
:mod:`impact.analysis` asks the two questions and :mod:`impact.operation` is the FHIR operation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhir_server import Services


def register_impact(services: "Services") -> None:
    from .operation import register_impact_operation

    register_impact_operation(services)
