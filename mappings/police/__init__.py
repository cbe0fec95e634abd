"""Police notifications (``police-notifications-csv`` / ``police-notifications-json``) → FHIR.

Reader (:mod:`.reader`: CSV or JSON rows → :mod:`.records`) then mapping (:mod:`.resources`).
The agency is the force named by the rows' ``force_code``: one force per import.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain

from ..core import Agency, MappingResult, SourceFile, SourceIssue, answer_rows, police_force
from .reader import collect, csv_rows, json_rows
from .resources import to_fhir

RowReader = Callable[[SourceFile, list[SourceIssue]], Iterator]


def _mapper(read: RowReader) -> Callable[[list[SourceFile]], tuple[Agency | None, MappingResult]]:
    def map_files(files: list[SourceFile]) -> tuple[Agency | None, MappingResult]:
        result = MappingResult()
        police = collect(chain.from_iterable(read(f, result.issues) for f in files))
        # a JSON notification is read as one row per adult: its own problems would repeat per adult
        result.issues = list(dict.fromkeys(result.issues))
        result.records = len(police.records)
        return answer_rows(result, files, police.force, "force_code",
                           "no notification names its force: nothing to import", police_force,
                           lambda agency: to_fhir(police, agency), police.records)

    return map_files


map_csv_files = _mapper(csv_rows)
map_json_files = _mapper(json_rows)

MAPPERS = {"police-notifications-csv": map_csv_files, "police-notifications-json": map_json_files}
