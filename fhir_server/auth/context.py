"""The RequestContext of an authenticated request: who (client, agency, role, practitioner), what
they may do (scopes) and why (purpose of use).

Purpose of use comes from the ``X-Purpose-Of-Use`` header or the token's ``purpose`` claim. A
token's claim may list several purposes (space-separated): then the header picks one of them and
nothing else; with a single purpose and no header, that purpose applies. Break-glass (``BTG``)
needs an ``X-Break-Glass-Reason`` header: emergency access is always explained (and audited and
flagged for review by the audit trail).
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from ..errors import BadRequest
from ..repository.context import BREAK_GLASS, RequestContext
from .errors import AccessDenied
from .scopes import split_scopes

PURPOSE_HEADER = "x-purpose-of-use"
BREAK_GLASS_HEADER = "x-break-glass-reason"
# A code, optionally with its system: "BTG", "CAREMGT", "http://terminology.hl7.org/CodeSystem/v3-ActReason|BTG"
PURPOSE = re.compile(r"^[A-Za-z0-9._:/|-]{1,200}$")
MAX_REASON = 1000


def practitioner_reference(value: Any) -> str | None:
    """``Practitioner/123`` from ``123``, ``Practitioner/123`` or an absolute ``fhirUser`` URL."""
    if not isinstance(value, str) or not value.strip():
        return None
    parts = value.strip().rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] in ("Practitioner", "PractitionerRole"):
        return f"{parts[-2]}/{parts[-1]}"
    return f"Practitioner/{parts[-1]}"


def purpose_of_use(token_purposes: list[str], headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(purpose, break-glass reason) for a request; BadRequest/AccessDenied when not acceptable."""
    asked = (headers.get(PURPOSE_HEADER) or "").strip() or None
    if asked is not None and not PURPOSE.match(asked):
        raise BadRequest(f"{PURPOSE_HEADER} must be a purpose-of-use code such as CAREMGT or BTG",
                         expression=PURPOSE_HEADER)
    if asked is None:
        purpose = token_purposes[0] if len(token_purposes) == 1 else None
    elif token_purposes and asked not in token_purposes and _code(asked) not in map(_code, token_purposes):
        raise AccessDenied(f"This token does not allow purpose of use {asked!r} (allowed: {', '.join(token_purposes)})",
                           reason="purpose-not-allowed")
    else:
        purpose = asked
    reason = (headers.get(BREAK_GLASS_HEADER) or "").strip() or None
    if purpose is not None and _code(purpose) == BREAK_GLASS:
        if reason is None:
            raise AccessDenied("Break-glass access (purpose of use BTG) needs an X-Break-Glass-Reason header",
                               reason="break-glass-without-reason")
        if len(reason) > MAX_REASON:
            raise BadRequest(f"{BREAK_GLASS_HEADER} is limited to {MAX_REASON} characters",
                             expression=BREAK_GLASS_HEADER)
        return BREAK_GLASS, reason
    return purpose, None


def _code(purpose: str) -> str:
    return purpose.rsplit("|", 1)[-1]


def context_from_token(issuer: str, claims: dict[str, Any], headers: Mapping[str, str], *, base_url: str,
                       request_id: str | None = None, remote_addr: str | None = None) -> RequestContext:
    """The request context a verified token and the request headers stand for. Claims: ``client_id``
    (or ``azp``), ``scope`` (or ``scp``), ``agency``, ``role``, ``practitioner`` (or ``fhirUser``),
    ``purpose``, ``jti``."""
    scope_claim = claims.get("scope", claims.get("scp"))
    purposes = split_scopes(claims.get("purpose")) if isinstance(claims.get("purpose"), (str, list)) else []
    purpose, reason = purpose_of_use(purposes, headers)
    client_id = claims.get("client_id") or claims.get("azp") or claims.get("sub")
    return RequestContext(
        base_url=base_url,
        request_id=request_id or uuid.uuid4().hex,
        client_id=str(client_id) if client_id else None,
        agency=_text(claims.get("agency")),
        practitioner=practitioner_reference(claims.get("practitioner") or claims.get("fhirUser")),
        scopes=frozenset(split_scopes(scope_claim if isinstance(scope_claim, (str, list)) else None)),
        purpose_of_use=purpose,
        role=_text(claims.get("role")),
        authenticated=True,
        issuer=issuer,
        token_id=_text(claims.get("jti")),
        break_glass_reason=reason,
        remote_addr=remote_addr,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
