"""Education: school census attendance, exclusions, CME and EHE (format ``school-census-csv``).

reader.py (csvutil rows → typed records, one local authority per import) → records.py →
to_fhir.py (Patient per UPN, school Organizations, Observations). See docs/formats/school-census-csv.md.
"""
from __future__ import annotations

from datetime import date

from ..core import Agency, MappingResult, SourceFile
from ..csvutil import today_uk
from .reader import read_files
from .to_fhir import to_fhir

FORMAT = "school-census-csv"


def agency_for(la_code: str) -> Agency:
    """The local authority's education service (it collects the census from its schools)."""
    return Agency("education", la_code, f"Local authority {la_code} education service")


def map_files(files: list[SourceFile], *, today: date | None = None) -> tuple[Agency | None, MappingResult]:
    """Map the file(s) of one local authority (``formats.Mapper``). Never raises on bad data: a file
    without the required columns, or rows naming no or several local authorities, give
    ``(None, result)`` with a file-level error."""
    result = MappingResult()
    census = read_files(files, result.issues, today or today_uk())
    if census is None or census.la_code is None:
        return None, result
    agency = agency_for(census.la_code)
    result.upserts = to_fhir(census, agency, result.issues)
    result.records = len(census.keys)
    result.rejected_records = len({i.record for i in result.issues if i.severity in ("error", "fatal") and i.record})
    if any(i.record == "" and i.severity in ("error", "fatal") for i in result.issues):
        return None, result
    return agency, result


MAPPERS = {FORMAT: map_files}
