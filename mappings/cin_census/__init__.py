"""The DfE Children in Need census XML (format ``cin-census-xml``), from a local authority.

reader.py (safe, streaming lxml) → records.py (typed) → checks.py (rules across values) →
to_fhir.py (Patient, EpisodeOfCare, Observation, Flag). See docs/formats/cin-census-xml.md.
"""
from __future__ import annotations

from datetime import date

from ..core import Agency, MappingResult, SourceFile, Upsert, children_services
from .checks import check_child
from .issues import at
from .reader import read_census
from .records import CensusHeader, ChildRecord
from .to_fhir import ChildMapping

FORMAT = "cin-census-xml"


def map_files(files: list[SourceFile], *, max_bytes: int | None = None,
              today: date | None = None) -> tuple[Agency | None, MappingResult]:
    """Map one or more census files of one local authority (``formats.Mapper``).

    Files are read in the order given; a child in several of them becomes one Patient (the last
    file's values win, as for any later census). Never raises on bad data: an unusable file, or
    files from different LAs, give ``(None, result)`` with a file-level error.
    """
    result = MappingResult()
    today = today or date.today()
    agency: Agency | None = None
    patient_urls: dict[str, str] = {}
    usable = True
    for source in files:
        lea = _map_file(source, result, patient_urls, today, max_bytes)
        if lea is None:
            usable = False
        elif agency is None:
            agency = children_services(lea)
        elif lea != agency.code:
            usable = False
            result.issues.append(at("error", source.name, "/Message/Header/Source/LEA",
                                    f"this file is from LA {lea}, an earlier one from LA {agency.code}; "
                                    "import each LA's files separately"))
    result.upserts = _last_wins(result.upserts)
    result.count_rejected()
    if not usable or result.file_rejected:
        return None, result
    return agency, result


def _map_file(source: SourceFile, result: MappingResult, patient_urls: dict[str, str], today: date,
              max_bytes: int | None) -> str | None:
    """Read and map one file into ``result``; its LA code, or None when it has none usable."""
    header: CensusHeader | None = None
    mapping: ChildMapping | None = None
    for item in read_census(source, result.issues, max_bytes=max_bytes, today=today):
        if isinstance(item, CensusHeader):
            header = item
            # Without an LA code children are still read and checked (to report every problem);
            # their resources are discarded with the file.
            mapping = ChildMapping(source.name, children_services(item.lea or "000"), patient_urls, result.issues)
            continue
        assert isinstance(item, ChildRecord) and header is not None and mapping is not None
        result.records += 1
        result.issues += check_child(item, source.name, header.reference_date, today)
        result.upserts += mapping.map(item)
    return header.lea if header else None


def _last_wins(upserts: list[Upsert]) -> list[Upsert]:
    """One entry per conditional-update key (a transaction may not write one resource twice)."""
    by_key: dict[tuple[str, str], Upsert] = {}
    for u in upserts:
        by_key.pop((u.resource_type, u.match), None)
        by_key[(u.resource_type, u.match)] = u
    return list(by_key.values())


MAPPERS = {FORMAT: map_files}
