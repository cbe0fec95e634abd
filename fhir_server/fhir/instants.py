"""Server timestamps: naive UTC datetimes in the database, FHIR ``instant`` strings on the wire."""
from __future__ import annotations

from datetime import datetime, timezone

from ..errors import BadRequest


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def format_instant(value: datetime) -> str:
    """``2026-11-25T15:30:00.123456+00:00`` (datatypes.html#instant: timezone required)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00"


def http_date(value: datetime) -> str:
    """RFC 7231 IMF-fixdate for ``Last-Modified``."""
    return value.replace(tzinfo=timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")


def parse_http_date(text: str) -> datetime | None:
    try:
        return datetime.strptime(text.strip(), "%a, %d %b %Y %H:%M:%S GMT")
    except ValueError:
        return None


def parse_instant(text: str, *, parameter: str) -> datetime:
    """A FHIR instant/dateTime query value (``_since``, ``_at``) as naive UTC.

    A value without a time is taken as the start of that day in UTC; a date-time without a zone
    is taken as UTC.
    """
    raw = text.strip().replace("Z", "+00:00")
    try:
        if len(raw) == 4:
            parsed = datetime(int(raw), 1, 1)
        elif len(raw) == 7:
            parsed = datetime(int(raw[:4]), int(raw[5:7]), 1)
        else:
            parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"Invalid instant {text!r} for {parameter}", expression=parameter) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed
