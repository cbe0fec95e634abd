"""Interventions: estimate an intervention's impact beforehand and evaluate it afterwards, with honest
uncertainty (``$intervention-impact``; docs/interventions.md).

:mod:`impact.data` reads the study data from the search indexes, :mod:`impact.design` turns them into
index cases, covariates and outcomes, :mod:`impact.estimators` holds the statistics (statsmodels),
:mod:`impact.analysis` asks the two questions and :mod:`impact.operation` is the FHIR operation.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_server import Services

DEFINITION_FILE = "intervention-impact.json"


def register_impact(services: "Services") -> None:
    """Register ``$intervention-impact`` (profiles/operations/intervention-impact.json). The handler, and
    with it the statistics stack (numpy, statsmodels, scipy: ~1.7 s of CPU to import), is imported at the
    operation's first call, so a process that never answers it — ``fhir-server import``, a worker —
    never loads them."""
    profiles = Path(services.settings.profiles_dir)
    definition = json.loads((profiles / "operations" / DEFINITION_FILE).read_text(encoding="utf-8"))
    services.router.operations.register(definition, _on_first_call(profiles))


def _on_first_call(profiles: Path) -> Callable[..., Any]:
    lock = threading.Lock()
    handler: list[Callable[..., Any]] = []

    def handle(*args: Any) -> Any:
        if not handler:
            with lock:
                if not handler:
                    from .operation import impact_handler

                    handler.append(impact_handler(profiles))
        return handler[0](*args)
    return handle
