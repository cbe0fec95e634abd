"""The signature header on every notification: HMAC-SHA256 with the subscription's secret.

``X-SG-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``

The receiver recomputes the HMAC over the timestamp, a dot and the raw request body (bytes as
received, before any JSON parsing) with the secret it gave in the Subscription, compares it in
constant time, and rejects a timestamp far from its clock (replay). Binding the timestamp into the
MAC means an old notification cannot be re-sent with a fresh time.
"""
from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-SG-Signature"
TOLERANCE_SECONDS = 300


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The header value for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode("utf-8"), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, now: float | None = None,
           tolerance: int = TOLERANCE_SECONDS) -> bool:
    """What a receiver does: True when ``header`` signs ``body`` with ``secret`` recently enough."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode("utf-8"), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)
