"""Value normalisation shared by the indexer (write side) and the query parser (read side).

Both sides must agree exactly, so the rules live here once, as pure functions:

* dates are implicit ranges of naive UTC datetimes (search.html#date, datatypes.html#dateTime);
* numbers and quantities are implicit ranges from their written precision (search.html#number);
* strings compare case- and accent-insensitively (search.html#string).
"""
from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

# idx_string.value_norm and the token columns are String(255).
STRING_INDEX_LENGTH = 255

_DATE_RE = re.compile(
    r"(?P<year>\d{4})"
    r"(?:-(?P<month>\d{2})"
    r"(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?"
    r")?)?)?")

_ONE_MICRO = timedelta(microseconds=1)


@lru_cache(maxsize=8192)
def date_range(value: str) -> tuple[datetime | None, datetime | None]:
    """The implicit range [low, high] of a FHIR date, dateTime or instant, as naive UTC datetimes.

    search.html#date: "the range of the value is the day, month, or year as specified", and a
    dateTime to the second covers that whole second (an instant with a fraction covers the
    fraction's last digit). Examples::

        "2020"                      -> 2020-01-01T00:00:00, 2020-12-31T23:59:59.999999
        "2020-02"                   -> 2020-02-01T00:00:00, 2020-02-29T23:59:59.999999
        "2020-02-03T10:00:00+01:00" -> 2020-02-03T09:00:00, 2020-02-03T09:00:00.999999

    A value without a time zone (a date, or a search value such as ``2020-02-03T10:00``) is read
    as UTC, so that stored values and query values are interpreted alike. Minute precision is
    accepted for search values. Bounds are clamped to the datetime range, so the result never
    overflows. Raises ``ValueError`` for anything that is not a FHIR date.
    """
    m = _DATE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"not a FHIR date/dateTime: {value!r}")
    g = m.groupdict()
    year = int(g["year"])
    if year < 1:
        raise ValueError(f"year out of range: {value!r}")
    if g["month"] is None:
        low = datetime(year, 1, 1)
        high = _next_year(year)
    elif g["day"] is None:
        month = int(g["month"])
        low = datetime(year, month, 1)
        high = _next_month(year, month)
    elif g["hour"] is None:
        low = datetime(year, int(g["month"]), int(g["day"]))
        high = _shift(low, timedelta(days=1))
    else:  # a time: seconds (and a fraction) optional for search values
        second = int(g["second"] or 0)
        leap = second == 60  # datatypes.html allows a leap second; datetime does not
        low = datetime(year, int(g["month"]), int(g["day"]), int(g["hour"]), int(g["minute"]),
                       59 if leap else second)
        if g["second"] is None:
            step = timedelta(minutes=1)
        elif g["fraction"]:
            digits = g["fraction"][:6]
            low = low.replace(microsecond=int(digits.ljust(6, "0")))
            step = timedelta(microseconds=10 ** (6 - len(digits)))
        else:
            step = timedelta(seconds=1)
        if leap:
            low, step = low.replace(microsecond=999999), _ONE_MICRO
        high = _shift(low, step)
        tz = g["tz"]
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])) * sign
            low = _shift(low, -offset)
            high = _shift(high, -offset)
    return low, (high if high == datetime.max else _shift(high, -_ONE_MICRO))


def _shift(value: datetime, delta: timedelta) -> datetime:
    try:
        return value + delta
    except OverflowError:
        return datetime.max if delta > timedelta(0) else datetime.min


def _next_year(year: int) -> datetime:
    return datetime(year + 1, 1, 1) if year < 9999 else datetime.max


def _next_month(year: int, month: int) -> datetime:
    if month == 12:
        return _next_year(year)
    return datetime(year, month + 1, 1)


def to_decimal(value: object) -> Decimal | None:
    """A JSON number (Decimal, int or float) as Decimal; None for anything else (and booleans)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        try:
            return Decimal(repr(value))
        except InvalidOperation:
            return None
    return None


def number_range(value: Decimal) -> tuple[Decimal, Decimal]:
    """search.html#number: a number covers half a unit of its last significant digit either side:
    ``100`` -> [99.5, 100.5], ``100.00`` -> [99.995, 100.005], ``1e2`` -> [50, 150]."""
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN / Infinity
        raise ValueError(f"not a finite number: {value}")
    half = Decimal(5).scaleb(exponent - 1)
    return value - half, value + half


@lru_cache(maxsize=8192)
def normalize_string(value: str) -> str:
    """search.html#string: the case- and accent-insensitive form (NFKD, combining marks dropped,
    lower-cased). Not truncated; the indexer truncates to :data:`STRING_INDEX_LENGTH`."""
    if value.isascii():  # nothing to decompose: the common case, ten times cheaper
        return value.lower()
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
