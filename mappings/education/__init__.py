"""Education: school census attendance, exclusions, CME and EHE (format ``school-census-csv``).

reader.py (csvutil rows → typed records, one local authority per import) → records.py →
to_fhir.py (Patient per UPN, school Organizations, Observations). See docs/formats/school-census-csv.md.
"""
from __future__ import annotations

from datetime import date

from ..core import Agency, MappingResult, SourceFile, education_service
from ..dates import today_uk
from .reader import read_files
from .to_fhir import to_fhir

FORMAT = "school-census-csv"


def map_files(files: list[SourceFile], *, today: date | None = None) -> tuple[Agency | None, MappingResult]:
    """Map the file(s) of one local authority (``formats.Mapper``). Never raises on bad data: a file
    without the required columns, or rows naming no or several local authorities, give
    ``(None, result)`` with a file-level error."""
    result = MappingResult()
    census = read_files(files, result.issues, today or today_uk())
    if census is None or census.la_code is None:
        return None, result
    agency = education_service(census.la_code)
    result.upserts = to_fhir(census, agency, result.issues)
    return result.answer(agency, len(census.keys))


MAPPERS = {FORMAT: map_files}
