"""The SSDA903 looked-after children return (format ``ssda903-csv``), from a local authority.

The Header, Episodes and Missing CSV tables of one return come as several files of one import.
reader.py (tables recognised by their header rows; the LA code from an ``LA_CODE`` column or the
file names) → records.py (typed) → to_fhir.py (Patient, EpisodeOfCare, Flag, Observation). See
docs/formats/ssda903-csv.md.
"""
from __future__ import annotations

from datetime import date

from ..collection_year import PARAMETER, span
from ..core import Agency, MappingResult, SourceFile, SourceIssue, children_services
from ..dates import today_uk
from ..snapshot import Span
from .reader import read_return
from .records import Return
from .to_fhir import collection_year as infer
from .to_fhir import to_fhir

FORMAT = "ssda903-csv"


def map_files(files: list[SourceFile], *, today: date | None = None,
              collection_year: int | None = None) -> tuple[Agency | None, MappingResult]:
    """Map the tables of one return (``formats.Mapper``). Never raises on bad data: an unusable
    return (no Header table, an unrecognised file, no local authority) gives ``(None, result)``
    with a file-level error. The agency is the LA's children's social care, as for the CIN census.

    ``collection_year`` (2024: April 2023 to March 2024) is the year the return is the full
    account of; without it the year is inferred from the latest date the return lists, and an
    ``information`` issue says which year that was."""
    result = MappingResult()
    ret = read_return(files, result.issues, today or today_uk())
    if ret is None or ret.la_code is None:
        return None, result
    agency = children_services(ret.la_code)
    inferred: list[SourceIssue] = []  # after the issues of the data
    year = span(collection_year) if collection_year is not None else inferred_year(ret, files, inferred)
    result.upserts, result.snapshots = to_fhir(ret, agency, result.issues, year)
    result.issues += inferred
    return result.answer(agency, len(ret.keys))


def inferred_year(ret: Return, files: list[SourceFile], issues: list[SourceIssue]) -> Span | None:
    """The year of the latest date the return lists (:func:`.to_fhir.collection_year`), reported
    as an ``information`` issue so the caller sees which year retirement was bounded by."""
    dates = ret.dates()
    year = infer(dates)
    if year is not None:
        assert year.until is not None
        issues.append(SourceIssue(
            "information", ", ".join(f.name for f in files), "", PARAMETER,
            f"no {PARAMETER} was given: inferred {year.until.year} (1 April {year.until.year - 1} to "
            f"31 March {year.until.year}) from the latest date in the files, {max(dates).isoformat()}; "
            f"give {PARAMETER} to state it", "informational"))
    return year


MAPPERS = {FORMAT: map_files}
