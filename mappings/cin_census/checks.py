"""Rules that relate several values of one child (single values are checked as they are read).

Severity follows one rule: **error** when what we would store is impossible — a period that ends
before it starts, a death before birth — because the child's record would then be false (the
child is rejected; lenient mode loads the others). **warning** when the data is odd but each value
can stand: a plan that starts before its referral, a "child" aged over 25, both a birth date and
an expected birth date. These follow the spirit of the DfE validation rules (e.g. 8525, 8775Q)
without trying to replace the DfE validator.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import date

from ..core import SourceIssue
from .issues import at
from .records import ChildRecord, CinEpisode

MAX_AGE = 25
Add = Callable[[str, str, str], None]  # (severity, XPath, message)


def check_child(child: ChildRecord, file: str, reference_date: date | None, today: date) -> list[SourceIssue]:
    issues: list[SourceIssue] = []

    def add(severity: str, xpath: str, message: str) -> None:
        issues.append(at(severity, file, xpath, message, code="business-rule", record=child.key))

    ids = f"{child.xpath}/ChildIdentifiers"
    if child.birth_date and child.expected_birth_date:
        add("warning", f"{ids}/ExpectedPersonBirthDate",
            "both a birth date and an expected birth date are given; the expected birth date is not stored")
    if child.birth_date and child.death_date and child.death_date < child.birth_date:
        add("error", f"{ids}/PersonDeathDate", f"death ({child.death_date}) before birth ({child.birth_date})")
    census_day = reference_date or today
    if child.birth_date and _years(child.birth_date, census_day) > MAX_AGE:
        add("warning", f"{ids}/PersonBirthDate", f"born {child.birth_date}: aged "
            f"{_years(child.birth_date, census_day)} on {census_day}, over {MAX_AGE}")
    for episode in child.episodes:
        _check_episode(episode, add)
    return issues


def _check_episode(e: CinEpisode, add: Add) -> None:
    start, end = e.referral_date, e.closure_date
    if start and end and end < start:
        add("error", f"{e.xpath}/CINclosureDate", f"closure ({end}) before referral ({start})")
        return  # the nested dates cannot be judged against an impossible episode

    def within(value: date | None, xpath: str) -> None:
        if value is None:
            return
        if start and value < start:
            add("warning", xpath, f"{value} is before the CIN referral date {start}")
        if end and value > end:
            add("warning", xpath, f"{value} is after the CIN closure date {end}")

    for a in e.assessments:
        within(a.start, f"{a.xpath}/AssessmentActualStartDate")
        within(a.authorised, f"{a.xpath}/AssessmentAuthorisationDate")
        if a.start and a.authorised and a.authorised < a.start:
            add("warning", f"{a.xpath}/AssessmentAuthorisationDate",
                f"authorised ({a.authorised}) before it started ({a.start})")
    for p in e.cin_plans:
        within(p.start, f"{p.xpath}/CINPlanStartDate")
        within(p.end, f"{p.xpath}/CINPlanEndDate")
        _period(p.start, p.end, p.xpath, "CINPlanEndDate", add)
        _open_in_closed(p.end, end, p.xpath, "CINPlanEndDate", add)
    for s in e.section47s:
        within(s.start, f"{s.xpath}/S47ActualStartDate")
        _period(s.start, s.initial_cpc, s.xpath, "DateOfInitialCPC", add)
    for c in e.protection_plans:
        within(c.start, f"{c.xpath}/CPPstartDate")
        within(c.end, f"{c.xpath}/CPPendDate")
        _period(c.start, c.end, c.xpath, "CPPendDate", add)
        _open_in_closed(c.end, end, c.xpath, "CPPendDate", add)


def _period(start: date | None, end: date | None, xpath: str, field: str, add: Add) -> None:
    if start and end and end < start:
        add("error", f"{xpath}/{field}", f"{field} ({end}) is before the start ({start})")


def _open_in_closed(end: date | None, closure: date | None, xpath: str, field: str, add: Add) -> None:
    if end is None and closure is not None:
        add("warning", f"{xpath}/{field}",
            f"no end date although the CIN episode closed on {closure}; treated as ended with the episode")


def _years(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
