"""The formats the server imports, by name (the ``format`` parameter of ``$import-agency-data``).

Each format package defines ``MAPPERS``: format name → ``map_files(files) -> (agency, result)``. A
mapper reads one logical source (one file, or the several tables of one SSDA903 return), works out
which agency it comes from (LA code in a CIN header, force code in a police file…), and never raises
on bad data: an unusable file yields ``(None, result)`` with a file-level error issue.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from .core import Agency, MappingResult, SourceFile

Mapper = Callable[[list[SourceFile]], tuple[Agency | None, MappingResult]]

PACKAGES: dict[str, str] = {
    "cin-census-xml": "mappings.cin_census",
    "ssda903-csv": "mappings.ssda903",
    "police-notifications-csv": "mappings.police",
    "police-notifications-json": "mappings.police",
    "school-census-csv": "mappings.education",
    "ed-attendances-csv": "mappings.health",
    "fhir-bundle": "mappings.health",
    "interventions-csv": "mappings.interventions",
}


def mapper(fmt: str) -> Mapper:
    """The mapper for ``fmt``; KeyError for an unknown format (callers turn it into a 400)."""
    module = importlib.import_module(PACKAGES[fmt])
    return module.MAPPERS[fmt]  # type: ignore[no-any-return]


def available() -> list[str]:
    return sorted(PACKAGES)
