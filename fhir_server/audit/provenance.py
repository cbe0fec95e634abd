"""Provenance for every write (provenance.html; http.html#provenance for ``X-Provenance``).

Each create, update, patch and delete made through the API gets a Provenance written in the same
transaction: ``target`` the versions written, ``recorded``, ``activity`` (v3-DataOperation CREATE,
UPDATE or DELETE), ``agent`` the client (author) acting ``onBehalfOf`` its agency and the
practitioner behind a user token, and ``policy`` the lawful basis of the caller's agency
(UK GDPR / DPA 2018, reference/AGENCY_FORMATS.md §6). A transaction gets one Provenance per
activity, naming every resource it wrote with that activity.

``X-Provenance`` (a Provenance in JSON) is honoured: its ``agent``, ``entity``, ``reason``,
``policy``, ``location`` and ``signature`` are kept, ``target`` and ``recorded`` are the server's,
and our agents are added. It is validated before anything is written: a bad one is a 400.

A write that carries its own Provenance (a transaction holding a Provenance entry, as the agency
importer's, mappings/loader.py) gets none added.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest, FhirError
from ..fhir import jsonio
from ..fhir.instants import format_instant
from ..fhir.models import validate_structure
from .balp import AGENCY_SYSTEM, CLIENT_SYSTEM, REQUEST_ID_SYSTEM

if TYPE_CHECKING:
    from ..repository.context import RequestContext

HEADER = "x-provenance"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
ACTIVITY = {"create": "CREATE", "update": "UPDATE", "patch": "UPDATE", "delete": "DELETE"}
SERVER_OWNED = ("target", "recorded")
# The lawful basis for an agency's processing, by the kind in its code ("la:201" → la), as legislation
# URLs: UK GDPR Art 6(1)(e) public task + Art 9(2)(g) with DPA 2018 Sch 1 Pt 2 para 18 (safeguarding
# of children) for local authorities, health and education; DPA 2018 Sch 8 para 4 for the police.
_SAFEGUARDING = ["https://www.legislation.gov.uk/eur/2016/679/article/6#6-1-e",
                 "https://www.legislation.gov.uk/eur/2016/679/article/9#9-2-g",
                 "https://www.legislation.gov.uk/ukpga/2018/12/schedule/1/part/2/paragraph/18"]
LAWFUL_BASIS = {
    "la": _SAFEGUARDING, "local-authority": _SAFEGUARDING, "health": _SAFEGUARDING, "education": _SAFEGUARDING,
    "police": ["https://www.legislation.gov.uk/ukpga/2018/12/schedule/8/paragraph/4"],
}


def lawful_basis(agency: str | None) -> list[str]:
    if not agency:
        return []
    kind = agency.split(":", 1)[0].split("/", 1)[0].lower()
    return list(LAWFUL_BASIS.get(kind, []))


def parse_header(value: str | None, *, max_depth: int = 64) -> dict[str, Any] | None:
    """The ``X-Provenance`` header as a Provenance, validated (400 naming the problem), or None."""
    if value is None or not value.strip():
        return None
    try:
        body = jsonio.loads(value, max_depth=max_depth)
    except (ValueError, FhirError) as exc:
        raise BadRequest(f"X-Provenance is not JSON: {exc}", expression="X-Provenance") from None
    if not isinstance(body, dict) or body.get("resourceType") != "Provenance":
        raise BadRequest("X-Provenance must be a Provenance resource in JSON", expression="X-Provenance")
    # Validate the resource as it will be written: target/recorded filled in, an agent present.
    trial = {**body, "target": [{"reference": "Patient/x"}], "recorded": "2000-01-01T00:00:00Z"}
    if not trial.get("agent"):
        trial["agent"] = [{"who": {"display": "check"}}]
    try:
        validate_structure(trial)
    except FhirError as exc:
        details = "; ".join(i.diagnostics for i in exc.issues) if getattr(exc, "issues", None) else str(exc)
        raise BadRequest(f"X-Provenance is not a valid Provenance: {details}", expression="X-Provenance") from None
    return body


def provenance(ctx: "RequestContext", targets: list[str], activity: str, recorded: datetime,
               given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Provenance of ``targets`` (``Type/id/_history/v``) written by ``ctx`` with ``activity``."""
    body: dict[str, Any] = {k: v for k, v in (given or {}).items()
                            if k not in (*SERVER_OWNED, "id", "meta", "text", "contained")} if given else {}
    body["resourceType"] = "Provenance"
    body["target"] = [{"reference": t} for t in targets]
    body["recorded"] = format_instant(recorded)
    code = ACTIVITY.get(activity)
    if code and "activity" not in body:
        body["activity"] = {"coding": [{"system": DATA_OPERATION, "code": code}]}
    policy = list(body.get("policy") or [])
    for uri in lawful_basis(ctx.agency):
        if uri not in policy:
            policy.append(uri)
    if policy:
        body["policy"] = policy
    body["agent"] = [*(body.get("agent") or []), *_agents(ctx)]
    if not body.get("entity"):
        # the source is the request itself: its AuditEvent carries the same request id
        body["entity"] = [{"role": "source", "what": {"identifier": {"system": REQUEST_ID_SYSTEM,
                                                                      "value": ctx.request_id}}}]
    return body


def _agents(ctx: "RequestContext") -> list[dict[str, Any]]:
    on_behalf = ({"identifier": {"system": AGENCY_SYSTEM, "value": ctx.agency}, "display": ctx.agency}
                 if ctx.agency else None)
    out: list[dict[str, Any]] = []
    if ctx.practitioner:
        agent: dict[str, Any] = {"type": {"coding": [{"system": PARTICIPANT, "code": "author"}]},
                                 "who": {"reference": ctx.practitioner}}
        if on_behalf:
            agent["onBehalfOf"] = on_behalf
        out.append(agent)
    client: dict[str, Any] = {
        "type": {"coding": [{"system": PARTICIPANT, "code": "author" if not ctx.practitioner else "assembler"}]},
        "who": ({"identifier": {"system": CLIENT_SYSTEM, "value": ctx.client_id}, "display": ctx.client_id}
                if ctx.client_id else {"display": "unauthenticated caller (authentication disabled)"}),
    }
    if on_behalf:
        client["onBehalfOf"] = on_behalf
    out.append(client)
    return out
