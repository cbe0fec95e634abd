"""The collection year of a full-year return: the year to 31 March that the CIN census and the
SSDA903 looked-after children return each account for (:mod:`mappings.snapshot`).

A collection year is named by the calendar year it ends in (``2024``: 1 April 2023 to 31 March
2024), as the CIN census header names it (``<Year>``, with ``<ReferenceDate>`` its last day). The
census states its year; an SSDA903 return does not, so its importer is told it (the
``collection-year`` parameter, ``--collection-year``, a manifest's ``collection_year``) or infers it
from the latest date the return lists (:func:`containing`). Pure.
"""
from __future__ import annotations

from datetime import date

from .snapshot import Span

PARAMETER = "collection-year"
EARLIEST = 2000
# The formats whose year the importer may be told: a CIN census states its own in its header.
STATED_BY_CALLER = frozenset({"ssda903-csv"})


def span_to(last_day: date) -> Span:
    """The year that ends on ``last_day`` (a census reference date, or a 31 March): records open
    after the same day a year before that had started by ``last_day``."""
    try:
        before = last_day.replace(year=last_day.year - 1)
    except ValueError:  # 29 February
        before = last_day.replace(year=last_day.year - 1, day=28)
    return Span(before, last_day)


def span(year: int) -> Span:
    """Collection year ``year``: 1 April ``year - 1`` to 31 March ``year``."""
    return span_to(date(year, 3, 31))


def containing(day: date) -> int:
    """The collection year ``day`` falls in (the year of the 31 March on or after it)."""
    return day.year if day <= date(day.year, 3, 31) else day.year + 1


def parse(value: str, today: date) -> int:
    """A collection year as a caller gives it: four digits, from 2000 to next year. ValueError
    (with a message naming what is wrong) for anything else."""
    text = value.strip()
    if len(text) != 4 or not text.isascii() or not text.isdigit():
        raise ValueError(f"{PARAMETER} must be a year of four digits (2024 for April 2023 to March 2024), "
                         f"not {value!r}")
    year = int(text)
    if not EARLIEST <= year <= today.year + 1:
        raise ValueError(f"{PARAMETER} {year} is not a plausible collection year "
                         f"({EARLIEST} to {today.year + 1})")
    return year


def check_format(fmt: str) -> None:
    """ValueError when ``fmt`` has no collection year a caller may state."""
    if fmt in STATED_BY_CALLER:
        return
    if fmt == "cin-census-xml":
        raise ValueError(f"{PARAMETER} is not taken for {fmt}: a CIN census states its year in its header "
                         "(<Year>, <ReferenceDate>)")
    raise ValueError(f"{PARAMETER} is only taken for {', '.join(sorted(STATED_BY_CALLER))}; "
                     f"{fmt} has no collection year")


def stated(fmt: str, value: str | None, today: date) -> int | None:
    """The collection year a caller states for a file of ``fmt`` (the operation's parameter, the
    CLI's option, a manifest's entry): None when not given; ValueError (:func:`check_format`,
    :func:`parse`) when it is not usable."""
    if value is None:
        return None
    check_format(fmt)
    return parse(value, today)
