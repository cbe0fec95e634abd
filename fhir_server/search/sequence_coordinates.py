"""MolecularSequence coordinate composites are searched in 1-based coordinates.

R4 defines four composites (``chromosome-variant-coordinate``, ``chromosome-window-coordinate``,
``referenceseqid-variant-coordinate``, ``referenceseqid-window-coordinate``) whose descriptions say
"search region will be represented in 1-based system … this search query will include the result
of both coordinateSystem": ``chromosome-variant-coordinate=1$lt345$gt123`` reveals 1:124-344 of a
1-based sequence and 1:123-344 of a 0-based one. A 0-based start is inclusive and its end exclusive
(MolecularSequence.coordinateSystem; variant-start/-end, window-start/-end descriptions), so in 1-based
terms the start is one more and the end the same: the composite rows of a sequence with
``coordinateSystem`` 0 carry start + 1. The plain number parameters (``variant-start``…) keep the
element's own value, as their expressions read it.
"""
from __future__ import annotations

from typing import Any

SP = "http://hl7.org/fhir/SearchParameter/MolecularSequence-"
COORDINATE_COMPOSITES = frozenset(SP + c for c in (
    "chromosome-variant-coordinate", "chromosome-window-coordinate",
    "referenceseqid-variant-coordinate", "referenceseqid-window-coordinate"))
START_COMPONENTS = frozenset({SP + "variant-start", SP + "window-start"})
NUMBER_COLUMNS = ("low", "value", "high")


def start_shift(composite_url: str, component_url: str, resource: dict[str, Any]) -> int:
    """How much to add to a component's value to put it in 1-based coordinates (0 or 1)."""
    if composite_url not in COORDINATE_COMPOSITES or component_url not in START_COMPONENTS:
        return 0
    return 1 if resource.get("coordinateSystem") == 0 else 0


def shifted(rows: list[dict[str, Any]], shift: int) -> list[dict[str, Any]]:
    """Number rows moved by ``shift`` (the rows are the caller's own, changed in place)."""
    if shift:
        for row in rows:
            for column in NUMBER_COLUMNS:
                if row.get(column) is not None:
                    row[column] += shift
    return rows
