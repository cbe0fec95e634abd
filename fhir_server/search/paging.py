"""Paging links of a searchset (search.html#paging, http.html#paging). Pure.

Links are absolute, rebuilt from the client's own parameters plus ``_count``, ``_offset`` and
``_snapshot``. The snapshot is the largest ``resource.pk`` when the first page was served: later pages
only see resources with ``pk <= _snapshot``, so a resource created meanwhile cannot shift the pages
(``pk`` is never reused and never changes for a resource).
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode


@dataclass(frozen=True)
class Page:
    """Where one page sits: ``count`` per page from ``offset``; ``total`` None when unknown."""

    count: int
    offset: int
    snapshot: int | None  # None when everything fits on this page: no horizon was needed
    has_next: bool
    total: int | None = None


def search_url(base_url: str, resource_types: tuple[str, ...]) -> str:
    """``[base]/[type]`` for a type search, ``[base]`` for a whole-system one (http.html#search)."""
    base = base_url.rstrip("/")
    return f"{base}/{resource_types[0]}" if len(resource_types) == 1 else base


def page_links(base_url: str, resource_types: tuple[str, ...], link_params: tuple[tuple[str, str], ...],
               page: Page, *, url: str | None = None) -> dict[str, str]:
    """self / first / previous / next / last (``last`` only when the total is known). ``url`` overrides
    the search URL (a compartment search pages at ``[base]/Patient/[id]/[type]``)."""
    url = url or search_url(base_url, resource_types)

    def at(offset: int) -> str:
        params = [*link_params, ("_count", str(page.count)), ("_offset", str(offset))]
        if page.snapshot is not None:
            params.append(("_snapshot", str(page.snapshot)))
        return f"{url}?{urlencode(params, quote_via=quote, safe=':,|/')}"

    links = {"self": at(page.offset), "first": at(0)}
    if page.count <= 0:
        return links
    if page.offset > 0:
        links["previous"] = at(max(0, page.offset - page.count))
    if page.has_next:
        links["next"] = at(page.offset + page.count)
    if page.total is not None:
        links["last"] = at(last_offset(page.total, page.count))
    return links


def last_offset(total: int, count: int) -> int:
    """The offset of the last page of ``total`` results at ``count`` per page."""
    if total <= 0 or count <= 0:
        return 0
    return ((total - 1) // count) * count
