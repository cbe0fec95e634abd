"""Health: emergency department attendances (``ed-attendances-csv``) and FHIR R4 Bundles sent by
health systems (``fhir-bundle``) → FHIR on this server. See docs/formats/ed-attendances-csv.md and
docs/formats/fhir-bundle.md.
"""
from __future__ import annotations

from itertools import chain

from ..core import Agency, MappingResult, SourceFile, health_organisation, reject_dependents
from . import ed_reader
from .ed_resources import to_fhir
from .fhir_bundle import map_files as map_fhir_bundles


def map_ed_attendances(files: list[SourceFile]) -> tuple[Agency | None, MappingResult]:
    """ed-attendances-csv: one trust's attendances (one or more files) → Patients and Observations."""
    result = MappingResult()
    ed = ed_reader.collect(chain.from_iterable(ed_reader.rows(f, result.issues) for f in files))
    result.records = len(ed.records)
    name = ", ".join(f.name for f in files)
    if ed.ods_code is None:
        result.no_agency(name, "ods_code", "no attendance names its trust: nothing to import")
        return None, result
    agency = health_organisation(ed.ods_code)
    result.upserts = to_fhir(ed, agency, result.error_records())
    reject_dependents(result, name)
    result.count_rejected(ed.records)
    return agency, result


MAPPERS = {"ed-attendances-csv": map_ed_attendances, "fhir-bundle": map_fhir_bundles}
