"""End to end with the mappers: every generated file maps with no error-severity issue.

Warnings are expected (the generator injects realistic mistakes: invalid NHS numbers, legacy codes).
A format whose mapper has not landed yet is skipped, not failed; ``interventions-csv`` is tested here
as soon as a mapper registers it (the generator then lists it among the manifest's ``files``).
"""
from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from mappings.core import SourceFile
from mappings.formats import PACKAGES, mapper

from .conftest import Dataset

FORMATS = ["cin-census-xml", "ssda903-csv", "police-notifications-csv", "police-notifications-json",
           "school-census-csv", "ed-attendances-csv", "fhir-bundle", "interventions-csv"]


def _mapper_available(fmt: str) -> bool:
    package = PACKAGES.get(fmt)
    if package is None or importlib.util.find_spec(package) is None:
        return False
    module = importlib.import_module(package)
    return fmt in getattr(module, "MAPPERS", {})


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_file_maps_without_errors(dataset: Dataset, fmt: str) -> None:
    if not _mapper_available(fmt):
        pytest.skip(f"no mapper for {fmt} yet")
    entries = [e for e in dataset.manifest["files"] if e["format"] == fmt]
    assert entries, f"{fmt} has a mapper, so the manifest lists its files under 'files'"
    severities: Counter[str] = Counter()
    for entry in entries:
        files = [SourceFile(name, (dataset.root / name).read_bytes()) for name in entry["paths"]]
        agency, result = mapper(fmt)(files)
        errors = [i for i in result.issues if i.severity in ("error", "fatal")]
        assert not errors, "\n".join(f"{i.file} {i.location} {i.field}: {i.message}" for i in errors[:10])
        assert agency is not None and agency.kind == entry["agency"]["kind"]
        assert agency.code == entry["agency"]["code"]
        assert result.records > 0 and result.upserts
        severities.update(i.severity for i in result.issues)
    assert set(severities) <= {"warning", "information"}
