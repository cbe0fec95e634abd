"""Months of the simulated period and school terms within it."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .config import add_months


@dataclass(frozen=True)
class Term:
    key: str  # "2024-autumn", as in the school census CSV
    academic_year: int  # the calendar year the academic year starts in (September)
    start: dt.date
    end: dt.date
    possible_sessions: int
    months: tuple[int, ...]  # month indices of the period the term covers

    @property
    def last_month(self) -> int:
        return self.months[-1]


# (name, first calendar month, last calendar month, start day, end day, possible sessions)
_TERMS = (("spring", 1, 3, (1, 4), (3, 28), 120), ("summer", 4, 7, (4, 15), (7, 22), 130),
          ("autumn", 9, 12, (9, 2), (12, 19), 140))


class Calendar:
    def __init__(self, start: dt.date, months: int) -> None:
        self.start, self.months = start.replace(day=1), months
        self._firsts = [add_months(self.start, m) for m in range(months + 1)]
        self.end = self._firsts[-1] - dt.timedelta(days=1)
        self.terms = self._terms()

    def first_day(self, month: int) -> dt.date:
        return self._firsts[month]

    def days_in(self, month: int) -> int:
        return (self._firsts[month + 1] - self._firsts[month]).days

    def day(self, month: int, offset: int) -> dt.date:
        """Day ``offset`` (0-based, clamped) of month ``month``."""
        return self._firsts[month] + dt.timedelta(days=min(max(offset, 0), self.days_in(month) - 1))

    def month_of(self, day: dt.date) -> int:
        return (day.year - self.start.year) * 12 + day.month - self.start.month

    def _terms(self) -> list[Term]:
        terms = []
        for year in range(self.start.year, self.end.year + 1):
            for name, m1, m2, (sm, sd), (em, ed), sessions in _TERMS:
                first = self.month_of(dt.date(year, m1, 1))
                last = self.month_of(dt.date(year, m2, 1))
                if first < 0 or last >= self.months:
                    continue
                terms.append(Term(f"{year}-{name}", year if name == "autumn" else year - 1, dt.date(year, sm, sd),
                                  dt.date(year, em, ed), sessions, tuple(range(first, last + 1))))
        return terms


def year_group(dob: dt.date, academic_year: int) -> int:
    """National curriculum year in the academic year starting September ``academic_year``:
    0 is Reception (4 on the 31 August before), 11 is Year 11, 12–13 the sixth form."""
    age_31_aug = academic_year - dob.year - (1 if (dob.month, dob.day) > (8, 31) else 0)
    return age_31_aug - 4
