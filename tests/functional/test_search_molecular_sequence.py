"""MolecularSequence search parameters and their 0/1-based coordinates (R4 SearchParameter
descriptions; fhir_server/search/sequence_coordinates.py), through HTTP on SQLite and PostgreSQL.

The coordinate composites search in 1-based coordinates and find a region in both coordinate
systems: ``1$lt345$gt123`` reveals 1:124-344 of a 1-based sequence and 1:123-344 of a 0-based one
(start inclusive in both; end exclusive in 0-based, inclusive in 1-based). The plain number
parameters search the element's own value."""
from __future__ import annotations

from typing import Any

from .test_search_composite import created, found

CHROMOSOME = "http://terminology.hl7.org/CodeSystem/chromosome-human"
REFSEQ = "http://www.ncbi.nlm.nih.gov/nuccore"


def sequence(system: int, window: tuple[int, int], variants: list[tuple[int, int]],
             chromosome: str = "1", refseq: str = "NC_000001.11") -> dict[str, Any]:
    return {"resourceType": "MolecularSequence", "type": "dna", "coordinateSystem": system,
            "referenceSeq": {"chromosome": {"coding": [{"system": CHROMOSOME, "code": chromosome}]},
                             "referenceSeqId": {"coding": [{"system": REFSEQ, "code": refseq}]},
                             "windowStart": window[0], "windowEnd": window[1]},
            "variant": [{"start": s, "end": e} for s, e in variants]}


def twins(client, zero_based: tuple[int, int], **kwargs: Any) -> tuple[str, str]:
    """The same variant written 0-based ([s, e)) and 1-based ([s + 1, e]): ids (0-based, 1-based)."""
    s, e = zero_based
    return (created(client, sequence(0, (0, 1000), [(s, e)], **kwargs)),
            created(client, sequence(1, (1, 1000), [(s + 1, e)], **kwargs)))


def test_the_specs_example_region_is_found_in_both_coordinate_systems(client) -> None:
    inside = twins(client, (200, 210))  # 1-based 201..210
    starts_at_345 = twins(client, (344, 350))  # 1-based 345..350: starts after the region
    ends_at_123 = twins(client, (100, 123))  # 1-based 101..123: ends before it
    starts_at_344 = twins(client, (343, 350))  # 1-based 344..350: overlaps its last base
    ends_at_124 = twins(client, (100, 124))  # 1-based 101..124: overlaps its first base
    region = found(client, "MolecularSequence?chromosome-variant-coordinate=1$lt345$gt123")
    assert region == sorted([*inside, *starts_at_344, *ends_at_124])
    assert not set(region) & {*starts_at_345, *ends_at_123}
    assert found(client, f"MolecularSequence?referenceseqid-variant-coordinate={REFSEQ}|NC_000001.11$lt345$gt123") \
        == region
    # exactly one variant, 1-based 201..210, whichever system it was written in
    assert found(client, "MolecularSequence?chromosome-variant-coordinate=1$201$210") == sorted(inside)
    assert found(client, "MolecularSequence?chromosome-variant-coordinate=2$201$210") == []


def test_window_coordinates_follow_the_same_rule(client) -> None:
    zero = created(client, sequence(0, (123, 344), []))  # 1-based 124..344
    one = created(client, sequence(1, (124, 344), []))
    other = created(client, sequence(1, (345, 400), []))
    assert found(client, "MolecularSequence?chromosome-window-coordinate=1$124$344") == sorted([zero, one])
    assert found(client, "MolecularSequence?referenceseqid-window-coordinate=NC_000001.11$ge124$le344") \
        == sorted([zero, one])
    assert other not in found(client, "MolecularSequence?chromosome-window-coordinate=1$lt345$gt123")


def test_the_number_parameters_search_the_value_as_written(client) -> None:
    zero, one = twins(client, (200, 210))
    assert found(client, "MolecularSequence?variant-start=200") == [zero]
    assert found(client, "MolecularSequence?variant-start=201") == [one]
    assert found(client, "MolecularSequence?variant-end=210") == sorted([zero, one])
    assert found(client, "MolecularSequence?window-start=0") == [zero]
    assert found(client, "MolecularSequence?window-end=1000&variant-start=ge201") == [one]
