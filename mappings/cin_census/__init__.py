"""The DfE Children in Need census XML (format ``cin-census-xml``), from a local authority.

reader.py (safe, streaming lxml) → records.py (typed) → checks.py (rules across values) →
to_fhir.py (Patient, EpisodeOfCare, Observation, Flag). See docs/formats/cin-census-xml.md.
"""
from __future__ import annotations

from datetime import date

from .. import systems
from ..core import Agency, MappingResult, SourceFile, Upsert, children_services
from ..snapshot import Snapshot, Span
from .checks import check_child
from .issues import at
from .reader import read_census
from .records import CensusHeader, ChildRecord
from .to_fhir import (KIND_CIN_PLAN, KIND_CP_FLAG, KIND_CP_PLAN, KIND_EPISODE, KIND_FACTOR, KIND_S47,
                      ChildMapping)

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
    snapshots: dict[str, Snapshot] = {}
    usable = True
    for source in files:
        lea = _map_file(source, result, patient_urls, snapshots, today, max_bytes)
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
    result.snapshots = list(snapshots.values())
    result.count_rejected()
    if not usable or result.file_rejected:
        return None, result
    return agency, result


def _map_file(source: SourceFile, result: MappingResult, patient_urls: dict[str, str],
              snapshots: dict[str, Snapshot], today: date, max_bytes: int | None) -> str | None:
    """Read and map one file into ``result``, and into ``snapshots`` what it is the full account
    of; its LA code, or None when it has none usable."""
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
        mapped = mapping.map(item)
        result.upserts += mapped
        if mapped and header.reference_date is not None:
            for snapshot in full_return(header.lea or "000", snapshots):
                snapshot.cover(mapped[0].full_url, collection_year(header.reference_date))
    return header.lea if header else None


# What a census says of each child it names: every record of these kinds open in the year.
FULL_RETURN_KINDS = (("EpisodeOfCare", KIND_EPISODE, "patient"), ("EpisodeOfCare", KIND_CIN_PLAN, "patient"),
                     ("EpisodeOfCare", KIND_S47, "patient"), ("EpisodeOfCare", KIND_CP_PLAN, "patient"),
                     ("Observation", KIND_FACTOR, "subject"), ("Flag", KIND_CP_FLAG, "subject"))


def full_return(lea: str, snapshots: dict[str, Snapshot]) -> list[Snapshot]:
    """The census is a full-year return: for each child, every CIN episode, plan, section 47
    enquiry, protection plan and assessment open at any time in the collection year
    (:mod:`mappings.snapshot`); one Snapshot per kind, made once per LA."""
    out = []
    for resource_type, kind, reference in FULL_RETURN_KINDS:
        system = systems.source_record_system(lea, kind)
        out.append(snapshots.setdefault(system, Snapshot(resource_type, system, reference)))
    return out


def collection_year(reference_date: date) -> Span:
    """The year a census covers: the day after the previous reference date (1 April) to this one."""
    try:
        before = reference_date.replace(year=reference_date.year - 1)
    except ValueError:  # 29 February
        before = reference_date.replace(year=reference_date.year - 1, day=28)
    return Span(before, reference_date)


def _last_wins(upserts: list[Upsert]) -> list[Upsert]:
    """One entry per conditional-update key (a transaction may not write one resource twice)."""
    by_key: dict[tuple[str, str], Upsert] = {}
    for u in upserts:
        by_key.pop((u.resource_type, u.match), None)
        by_key[(u.resource_type, u.match)] = u
    return list(by_key.values())


MAPPERS = {FORMAT: map_files}
