"""Dates and times in agency data: UK local time, FHIR text, ages. Pure.

Agencies record local UK time; FHIR needs a zone whenever a time is given (datatypes.html#dateTime),
so a time without an offset is read in Europe/London (csvutil does the parsing). A value that may be
a date or a date-time (a police incident, an ED arrival) is compared as an instant: a bare date is
taken as its midnight in the UK.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

UK_TIME = ZoneInfo("Europe/London")

DateOrTime = dt.datetime | dt.date


def fhir_datetime(value: DateOrTime) -> str:
    """The FHIR text of a date or an aware date-time (seconds precision)."""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    return value.isoformat()


def instant(value: DateOrTime) -> dt.datetime:
    """A date-time as it is; a date as its midnight in the UK (for ordering the two together)."""
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime(value.year, value.month, value.day, tzinfo=UK_TIME)


def day_of(value: DateOrTime) -> dt.date:
    """The UK calendar day of a date-time; a date as it is."""
    return value.astimezone(UK_TIME).date() if isinstance(value, dt.datetime) else value


def age_on(birth: dt.date, when: dt.date) -> int:
    """Completed years of age on ``when``."""
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


def today_uk() -> dt.date:
    """Today's date in the UK (for "not in the future" checks)."""
    return dt.datetime.now(UK_TIME).date()
