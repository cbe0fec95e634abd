"""Shared vocabulary of the search package. Pure data; no SQL, no Flask."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The index table (storage.tables.INDEX_TABLES key) each SearchParameter.type writes to.
# composite and special parameters have no table of their own.
PARAM_TYPES = ("number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special")


@dataclass(frozen=True)
class SearchParam:
    """One SearchParameter definition, as it applies to one resource type.

    ``expression`` is the part of the R4 FHIRPath expression that applies to ``resource_type``
    (the base definitions join several types' paths with ``|``).
    """

    code: str
    type: str
    resource_type: str
    expression: str
    url: str
    targets: tuple[str, ...] = ()  # reference target types
    modifiers: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = ()  # composite: (definition url, expression)
    description: str = ""


@dataclass
class SearchResult:
    """What ``search.engine.execute_search`` returns: a page of matches plus included resources.

    ``matches`` and ``includes`` are stored resource contents (dicts with id and meta set).
    ``total`` is None when the client asked ``_total=none`` (or it was not computed).
    ``links`` maps relation (self, first, previous, next, last) to an absolute URL.
    ``outcome`` carries warnings such as ignored unknown parameters (an OperationOutcome dict or None).
    """

    matches: list[dict[str, Any]] = field(default_factory=list)
    includes: list[dict[str, Any]] = field(default_factory=list)
    total: int | None = None
    links: dict[str, str] = field(default_factory=dict)
    outcome: dict[str, Any] | None = None
