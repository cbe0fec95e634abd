"""Health: emergency department attendances (``ed-attendances-csv``) and FHIR R4 Bundles sent by
health systems (``fhir-bundle``) → FHIR on this server. See docs/formats/ed-attendances-csv.md and
docs/formats/fhir-bundle.md.
"""
from __future__ import annotations

from itertools import chain

from ..core import Agency, MappingResult, SourceFile, answer_rows, health_organisation
from . import ed_reader
from .ed_resources import to_fhir
from .fhir_bundle import map_files as map_fhir_bundles


def map_ed_attendances(files: list[SourceFile]) -> tuple[Agency | None, MappingResult]:
    """ed-attendances-csv: one trust's attendances (one or more files) → Patients and Observations."""
    result = MappingResult()
    ed = ed_reader.collect(chain.from_iterable(ed_reader.rows(f, result.issues) for f in files))
    result.records = len(ed.records)
    return answer_rows(result, files, ed.ods_code, "ods_code", "no attendance names its trust: nothing to import",
                       health_organisation, lambda agency: to_fhir(ed, agency, result.error_records()), ed.records)


MAPPERS = {"ed-attendances-csv": map_ed_attendances, "fhir-bundle": map_fhir_bundles}
