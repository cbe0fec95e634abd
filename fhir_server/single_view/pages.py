"""Paging through a collected record (search.html#paging), stable under concurrent writes. Pure.

The record is computed once per request into a list sorted by a total order (:func:`sort_key`), and a
page is "the next ``count`` entries after the cursor" (keyset paging), so a resource deleted between two
requests does not shift later pages. Links also carry a snapshot (the largest ``resource.pk`` when the
first page was served): later pages leave out resources created after it. The cursor names the last
entry of the previous page as ``<group>.<type>.<pk>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import BadRequest
from ..search.paging import last_offset
from .record import Found

SortKey = tuple[int, str, int]


def sort_key(found: Found, patient_ids: Sequence[str]) -> SortKey:
    """The requested Patient first, then its linked records, then the other compartment members by
    type, then referenced resources; ties broken by the never-reused ``pk``."""
    if found.res_type == "Patient" and found.mode == "match" and found.res_id in patient_ids:
        group = 0 if found.res_id == patient_ids[0] else 1
    else:
        group = 2 if found.mode == "match" else 3
    return group, found.res_type, found.pk


def format_cursor(key: SortKey) -> str:
    return f"{key[0]}.{key[1]}.{key[2]}"


def parse_cursor(value: str) -> SortKey:
    parts = value.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit() or not parts[1].isalpha():
        raise BadRequest(f"Invalid _cursor {value!r}: use the links of a previous page", expression="_cursor")
    return int(parts[0]), parts[1], int(parts[2])


@dataclass(frozen=True)
class Page:
    """One page of the sorted entries; cursors are None for "from the start"."""

    entries: list[Found]
    has_next: bool
    next_cursor: SortKey | None
    previous_cursor: SortKey | None
    has_previous: bool
    last_cursor: SortKey | None


def page_after(keyed: list[tuple[SortKey, Found]], count: int, after: SortKey | None) -> Page:
    """The ``count`` entries after ``after`` in ``keyed`` (sorted by key), and where the neighbouring
    pages start."""
    start = 0 if after is None else next((i for i, (k, _f) in enumerate(keyed) if k > after), len(keyed))
    chosen = keyed[start:start + count] if count > 0 else []
    has_next = count > 0 and start + count < len(keyed)

    def cursor_before(index: int) -> SortKey | None:
        return keyed[index - 1][0] if index > 0 else None

    previous_start = max(0, start - count)
    return Page(entries=[f for _k, f in chosen], has_next=has_next,
                next_cursor=chosen[-1][0] if has_next else None,
                previous_cursor=cursor_before(previous_start), has_previous=start > 0 and count > 0,
                last_cursor=cursor_before(last_offset(len(keyed), count)) if count > 0 else None)
