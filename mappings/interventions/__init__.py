"""Interventions recorded by a local authority's early help system (format ``interventions-csv``).

One file per LA, one row per child and intervention episode. reader.py (csvutil rows → typed
records, one local authority per import) → records.py → to_fhir.py (Patient merged with the LA's
CIN census and SSDA903 Patient, EpisodeOfCare per row, provider Organizations, lead professional
Practitioners). See docs/formats/interventions-csv.md.
"""
from __future__ import annotations

from datetime import date

from ..core import Agency, MappingResult, SourceFile, children_services
from ..dates import today_uk
from .reader import read_files
from .to_fhir import to_fhir

FORMAT = "interventions-csv"


def map_files(files: list[SourceFile], *, today: date | None = None) -> tuple[Agency | None, MappingResult]:
    """Map the file(s) of one local authority (``formats.Mapper``). Never raises on bad data: a file
    without the required columns, or rows naming no or several local authorities, give
    ``(None, result)`` with a file-level error. The agency is the LA's children's social care, the
    same as its CIN census and SSDA903 return, so that its Patients are the same resources."""
    result = MappingResult()
    day = today or today_uk()
    found = read_files(files, result.issues, day)
    if found is None or found.la_code is None:
        return None, result
    agency = children_services(found.la_code)
    result.upserts = to_fhir(found, agency, day)
    return result.answer(agency, len(found.keys))


MAPPERS = {FORMAT: map_files}
