"""The SSDA903 looked-after children return (format ``ssda903-csv``), from a local authority.

The Header, Episodes and Missing CSV tables of one return come as several files of one import.
reader.py (tables recognised by their header rows; the LA code from an ``LA_CODE`` column or the
file names) → records.py (typed) → to_fhir.py (Patient, EpisodeOfCare, Flag, Observation). See
docs/formats/ssda903-csv.md.
"""
from __future__ import annotations

from datetime import date

from ..core import Agency, MappingResult, SourceFile, children_services
from ..dates import today_uk
from .reader import read_return
from .to_fhir import to_fhir

FORMAT = "ssda903-csv"


def map_files(files: list[SourceFile], *, today: date | None = None) -> tuple[Agency | None, MappingResult]:
    """Map the tables of one return (``formats.Mapper``). Never raises on bad data: an unusable
    return (no Header table, an unrecognised file, no local authority) gives ``(None, result)``
    with a file-level error. The agency is the LA's children's social care, as for the CIN census."""
    result = MappingResult()
    ret = read_return(files, result.issues, today or today_uk())
    if ret is None or ret.la_code is None:
        return None, result
    agency = children_services(ret.la_code)
    result.upserts, result.snapshots = to_fhir(ret, agency, result.issues)
    return result.answer(agency, len(ret.keys))


MAPPERS = {FORMAT: map_files}
