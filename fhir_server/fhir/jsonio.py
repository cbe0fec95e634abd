"""JSON in and out, exactly: decimals keep their written precision (``1.50`` stays ``1.50``).

FHIR decimals are arbitrary precision (datatypes.html#decimal); binary floats would silently
rewrite them, so every number with a fraction or exponent is read as :class:`decimal.Decimal`.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import simplejson

from ..errors import BadRequest


def loads(text: str | bytes, *, max_depth: int = 64) -> Any:
    """Parse JSON, rejecting duplicate-free but hostile shapes (too deep) with a 400."""
    try:
        value = simplejson.loads(text, use_decimal=True)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Body is not valid JSON: {exc}") from None
    except RecursionError:  # thousands of nested brackets exhaust the decoder's stack first
        raise BadRequest(f"JSON nesting deeper than {max_depth} levels is not accepted") from None
    if _depth_exceeds(value, max_depth):
        raise BadRequest(f"JSON nesting deeper than {max_depth} levels is not accepted")
    return value


def loads_stored(text: str | bytes) -> Any:
    """Parse JSON this server wrote itself (the database): exact decimals, no hostile-shape checks —
    content was checked when it was written, and walking it again on every read costs ~20% of a read."""
    return simplejson.loads(text, use_decimal=True)


def dumps(value: Any, *, pretty: bool = False) -> str:
    """Compact JSON with non-ASCII as ``\\u`` escapes: simplejson's C encoder only runs with
    ``ensure_ascii`` (about 2.5x faster than without); pretty output, meant for people, keeps UTF-8."""
    if pretty:
        return simplejson.dumps(value, use_decimal=True, ensure_ascii=False, indent=2)
    return simplejson.dumps(value, use_decimal=True, separators=(",", ":"))


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


def to_plain(value: Any) -> Any:
    """Decimals as floats/ints, for code that only needs numeric comparisons (search indexing)."""
    if isinstance(value, Decimal):
        return float(value)
    return value


def dumps_sorted(value: Any) -> str:
    """Canonical text for comparing two resources (keys sorted, decimals as written)."""
    return simplejson.dumps(value, use_decimal=True, sort_keys=True, separators=(",", ":"))
