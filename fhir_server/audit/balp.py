"""AuditEvent resources shaped like IHE Basic Audit Log Patterns (BALP 1.1, R4 AuditEvent).

Pure functions: an interaction (method, path, the request context and what was returned) in, an
AuditEvent dict out. Which BALP pattern applies:

==================================  ===============================================================
interaction                         AuditEvent
==================================  ===============================================================
read, vread                         Read / PatientRead: type rest, subtype read|vread, action R
search, history                     Query / PatientQuery: subtype search-type|history-…, action E,
                                    a query entity (role 24, the query in base64) and every
                                    resource returned
create, update, patch, delete       Create/Update/Delete (+ Patient): action C, U or D
operation                           subtype operation, action E; $everything, $family-summary and
                                    $subject-access disclose a record: PrivacyDisclosure.Source
                                    (type DCM 110106 Export, subtype iso-21089 disclose, action R)
batch / transaction                 subtype batch|transaction: one event for every entry
denied (401/403), token issued      type DCM 110114 User Authentication / 110113 Security Alert
==================================  ===============================================================

Agents: the OAuth client (DCM 110153 Source Role ID, ``who.identifier`` in the client-id system,
``altId`` = client id, ``policy`` = the token's jti), the practitioner behind a user token
(``who`` = Practitioner reference, ``requestor``), the organisation (agency) the caller acts for,
and this server (DCM 110152 Destination Role ID). ``purposeOfEvent`` is the request's purpose of
use; a break-glass request is tagged for review (``meta.tag`` :data:`REVIEW_TAG`).
"""
from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..conformance import CANONICAL_BASE
from ..fhir.instants import format_instant

if TYPE_CHECKING:
    from ..repository.context import RequestContext

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CLIENT_SYSTEM = f"{CANONICAL_BASE}/Id/client"
AGENCY_SYSTEM = f"{CANONICAL_BASE}/Id/agency"
ROLE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/role"
REQUEST_ID_SYSTEM = f"{CANONICAL_BASE}/Id/request"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
REVIEW_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/audit-review"
REVIEW_TAG = {"system": REVIEW_SYSTEM, "code": "break-glass", "display": "Break-glass access: review"}
# The extension that carries an AuditEvent's place in the tamper-evident chain (audit/chain.py).
CHAIN_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/audit-chain"

# Operations whose answer is a child's or a family's record: a privacy disclosure.
DISCLOSING_OPERATIONS = frozenset({"everything", "family-summary", "subject-access"})
ACTIONS = {"read": "R", "vread": "R", "create": "C", "update": "U", "patch": "U", "delete": "D"}
# References in a resource that name the patient it is about (compartment-patient's usual paths).
PATIENT_FIELDS = ("subject", "patient", "beneficiary", "child")


class Interaction:
    """What the recorder knows of one audited interaction (one entry of a Bundle, or a request)."""

    __slots__ = ("code", "res_type", "res_id", "operation", "query", "method", "path", "status", "returned",
                 "patients", "written")

    def __init__(self, code: str, method: str, path: str, status: int, *, res_type: str | None = None,
                 res_id: str | None = None, operation: str | None = None, query: str | None = None,
                 returned: list[str] | None = None, patients: list[str] | None = None,
                 written: list[str] | None = None) -> None:
        self.code = code
        self.method = method
        self.path = path
        self.status = status
        self.res_type = res_type
        self.res_id = res_id
        self.operation = operation
        self.query = query
        self.returned = returned or []  # "Type/id[/_history/v]" of every resource disclosed
        self.patients = patients or []  # "Patient/id" of every patient involved
        self.written = written or []  # "Type/id/_history/v" created, updated or deleted


def new_id() -> str:
    return str(uuid.uuid4())


def audit_event(ctx: "RequestContext", items: list[Interaction], recorded: datetime, *,
                bundle: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    """One AuditEvent for ``items`` (several only for a batch/transaction: ``bundle`` is its type)."""
    first = items[0]
    if bundle is not None:
        subtype = [_coding(RESTFUL, bundle)]
        action = "E"
        profile = "Query"
        kind = "rest"
    elif first.code == "operation" and first.operation in DISCLOSING_OPERATIONS:
        subtype = [_coding(LIFECYCLE, "disclose", "Disclose Record Lifecycle Event"),
                   _coding(RESTFUL, "operation"), _coding(f"{CANONICAL_BASE}/OperationDefinition",
                                                          first.operation)]
        action, profile, kind = "R", "PrivacyDisclosure.Source", "export"
    else:
        subtype = [_coding(RESTFUL, first.code)]
        if first.code == "operation" and first.operation:
            subtype.append(_coding(f"{CANONICAL_BASE}/OperationDefinition", first.operation))
        action = ACTIONS.get(first.code, "E")
        profile = _profile(first.code)
        kind = "rest"
    patients = list(dict.fromkeys(p for item in items for p in item.patients))
    if kind == "rest" and patients and profile in ("Read", "Query", "Create", "Update", "Delete"):
        profile = f"Patient{profile}"
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id or new_id(),
        "meta": {"profile": [BALP + profile]},
        "type": (_coding(DCM, "110106", "Export") if kind == "export"
                 else _coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation")),
        "subtype": subtype,
        "action": action,
        "recorded": format_instant(recorded),
        "outcome": "0",
        "agent": agents(ctx),
        "source": source(ctx),
    }
    _purpose(event, ctx)
    entities = list(_entities(items, patients))
    entities.append(request_entity(ctx.request_id))
    if entities:
        event["entity"] = entities
    return event


def failure_event(ctx: "RequestContext", item: Interaction, recorded: datetime, *, status: int,
                  code: str, diagnostics: str) -> dict[str, Any]:
    """The AuditEvent of a request refused or failed with an OperationOutcome (400, 404, 409, 412,
    422…): shaped like the event of the same interaction had it succeeded (so an auditor's searches
    by patient, agent or subtype find it), with ``outcome`` 4 (minor failure: the caller's request was
    wrong) for a 4xx and 8 (serious failure) for a 5xx (AuditEvent.outcome, R4 valueset
    audit-event-outcome), and ``outcomeDesc`` the status, issue code and diagnostics."""
    event = audit_event(ctx, [item], recorded)
    event["outcome"] = "4" if status < 500 else "8"
    event["outcomeDesc"] = f"{status} {code}: {diagnostics}"[:1000]
    return event


def not_answered(event: dict[str, Any], recorded_by_statement: str) -> dict[str, Any]:
    """``event`` (a :func:`failure_event`) also names the AuditEvent ``recorded_by_statement``: the
    compact event the read's or search's own statement wrote before the answer was refused or failed
    (audit/pending.py), so that event's disclosure is known not to have been sent. An entity of
    type System Object without the Domain Resource role (R4 AuditEvent.entity): it discloses nothing."""
    event["entity"] = [*(event.get("entity") or []), {
        "what": {"reference": f"AuditEvent/{recorded_by_statement}"},
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "description": "The answer recorded by this AuditEvent was not sent"}]
    return event


def auth_event(kind: str, reason: str, *, base_url: str, recorded: datetime, ctx: "RequestContext | None",
               client_id: str | None, method: str | None, path: str | None, remote_addr: str | None,
               detail: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An AuditEvent for an authentication/authorisation event of fhir_server/auth/events.py:
    ``token-issued`` (DCM 110114 User Authentication, subtype 110122 Login, success), ``denied``
    (a 401 is a failed 110122 Login; a 403 a 110113 Security Alert), anything else (e.g. a
    break-glass grant published by the access policy) a Security Alert that succeeded."""
    extra = extra or {}
    if kind == "token-issued":
        type_, subtype, outcome = _coding(DCM, "110114", "User Authentication"), [_coding(DCM, "110122", "Login")], "0"
    elif kind == "denied" and ctx is None:
        type_, subtype, outcome = _coding(DCM, "110114", "User Authentication"), [_coding(DCM, "110122", "Login")], "4"
    else:
        type_ = _coding(DCM, "110113", "Security Alert")
        subtype = [_coding(f"{CANONICAL_BASE}/CodeSystem/auth-event", kind)]
        outcome = "4" if kind == "denied" else "0"
    from ..repository.context import RequestContext

    who = ctx or RequestContext(base_url=base_url, client_id=client_id, remote_addr=remote_addr)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": new_id(),
        "meta": {"profile": [BALP + "OAUTHaccessTokenUse.Comprehensive"]} if kind == "token-issued" else {},
        "type": type_,
        "subtype": subtype,
        "action": "E",
        "recorded": format_instant(recorded),
        "outcome": outcome,
        "outcomeDesc": f"{reason}: {detail}" if detail else reason,
        "agent": agents(who, remote_addr=remote_addr),
        "source": source(who),
    }
    if not event["meta"]:
        del event["meta"]
    _purpose(event, who)
    if kind != "token-issued" and (reason.startswith("break-glass") or kind == "break-glass"):
        event.setdefault("meta", {}).setdefault("tag", []).append(dict(REVIEW_TAG))
    elif extra.get("review"):  # e.g. a share without consent on a safeguarding basis
        event.setdefault("meta", {}).setdefault("tag", []).append(
            {"system": REVIEW_SYSTEM, "code": kind, "display": f"{kind.replace('-', ' ').capitalize()}: review"})
    entities: list[dict[str, Any]] = []
    if method and path is not None:
        entities.append({"type": _coding(ENTITY_TYPE, "2", "System Object"),
                         "role": _coding(OBJECT_ROLE, "24", "Query"),
                         "description": f"{method} {path}"})
    token = extra.get("token_id")
    if token:
        entities.append({"type": _coding(ENTITY_TYPE, "2", "System Object"),
                         "what": {"identifier": {"system": f"{CANONICAL_BASE}/Id/access-token", "value": str(token)}},
                         "description": f"scope: {extra.get('scope', '')}".strip()})
    for key in ("patient", "patients"):
        for ref in _as_list(extra.get(key)):
            if isinstance(ref, str) and ref.startswith("Patient/"):
                entities.append(_patient_entity(ref))
    if entities:
        event["entity"] = entities
    return event


def agents(ctx: "RequestContext", *, remote_addr: str | None = None) -> list[dict[str, Any]]:
    """BALP agents: the client (requestor unless a practitioner is), the practitioner, the
    organisation acted for, and this server."""
    out: list[dict[str, Any]] = []
    address = remote_addr or ctx.remote_addr
    client: dict[str, Any] = {
        "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
        "requestor": ctx.practitioner is None,
    }
    if ctx.client_id:
        client["who"] = {"identifier": {"system": CLIENT_SYSTEM, "value": ctx.client_id}, "display": ctx.client_id}
        client["altId"] = ctx.client_id
    else:
        client["who"] = {"display": "unauthenticated caller" if not ctx.authenticated else "anonymous client"}
    if ctx.role:
        client["role"] = [{"coding": [_coding(ROLE_SYSTEM, ctx.role)]}]
    if ctx.token_id:
        client["policy"] = [ctx.token_id]
    if address:
        client["network"] = {"address": address, "type": "2"}
    out.append(client)
    if ctx.practitioner:
        out.append({"type": {"coding": [_coding(PARTICIPATION, "IRCP", "information recipient")]},
                    "who": {"reference": ctx.practitioner}, "requestor": True})
    if ctx.agency:
        out.append({"type": {"coding": [_coding(PARTICIPATION, "RESP", "responsible party")]},
                    "who": {"identifier": {"system": AGENCY_SYSTEM, "value": ctx.agency}, "display": ctx.agency},
                    "requestor": False})
    out.append({"type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
                "who": {"display": ctx.base_url}, "requestor": False,
                "network": {"address": ctx.base_url, "type": "5"}})
    return out


def source(ctx: "RequestContext") -> dict[str, Any]:
    return {"observer": {"display": ctx.base_url},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")]}


def patients_in(resource: dict[str, Any]) -> Iterator[str]:
    """``Patient/id`` of the patient a resource is, or is about (its subject/patient reference)."""
    if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
        yield f"Patient/{resource['id']}"
        return
    for field in PATIENT_FIELDS:
        value = resource.get(field)
        for ref in _as_list(value):
            if isinstance(ref, dict):
                reference = ref.get("reference")
                if isinstance(reference, str) and reference.startswith("Patient/"):
                    yield "/".join(reference.split("/")[:2])


def returned_resources(body: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """The resources a response disclosed: a Bundle's entries (recursively for nested Bundles, as
    a transaction-response carries), or the resource itself (not an OperationOutcome)."""
    if not isinstance(body, dict):
        return
    res_type = body.get("resourceType")
    if res_type == "Bundle":
        for entry in body.get("entry") or []:
            if isinstance(entry, dict):
                resource = entry.get("resource")
                if isinstance(resource, dict):
                    yield from returned_resources(resource)
    elif res_type == "Parameters":
        for param in body.get("parameter") or []:
            if isinstance(param, dict) and isinstance(param.get("resource"), dict):
                yield from returned_resources(param["resource"])
    elif isinstance(res_type, str) and res_type != "OperationOutcome":
        yield body


def reference_of(resource: dict[str, Any]) -> str | None:
    res_type, res_id = resource.get("resourceType"), resource.get("id")
    if not isinstance(res_type, str) or not isinstance(res_id, str):
        return None
    version = (resource.get("meta") or {}).get("versionId") if isinstance(resource.get("meta"), dict) else None
    return f"{res_type}/{res_id}/_history/{version}" if version else f"{res_type}/{res_id}"


def _entities(items: list[Interaction], patients: list[str]) -> Iterator[dict[str, Any]]:
    for ref in patients:
        yield _patient_entity(ref)
    patient_refs = set(patients)
    seen: set[str] = set()
    for item in items:
        if item.query is not None:
            yield {"type": _coding(ENTITY_TYPE, "2", "System Object"),
                   "role": _coding(OBJECT_ROLE, "24", "Query"),
                   "description": f"{item.method} {item.path}",
                   "query": base64.b64encode(item.query.encode("utf-8")).decode("ascii")}
        for ref in [*item.written, *item.returned]:
            if ref in seen or unversioned(ref) in patient_refs:
                continue
            seen.add(ref)
            yield {"what": {"reference": ref},
                   "type": _coding(ENTITY_TYPE, "2", "System Object"),
                   "role": _coding(OBJECT_ROLE, "4", "Domain Resource")}


def with_disclosed(head: dict[str, Any], disclosed: list[tuple[str, dict[str, Any] | None]]) -> dict[str, Any]:
    """The full AuditEvent of a read or search recorded compactly by its own statement
    (audit/pending.py): ``head`` (built by :func:`audit_event` before the statement ran, with the
    patients its URL names) completed with what was disclosed, ``(reference, content of that
    version)`` in the order answered — the same entities, in the same order, and the same Patient*
    profile as :func:`audit_event` gives when told of the answer."""
    entities = list(head.get("entity") or [])
    patients = [e["what"]["reference"] for e in entities if _is_patient_entity(e)]
    for _ref, content in disclosed:
        if content is not None:
            patients.extend(patients_in(content))
    patients = list(dict.fromkeys(patients))
    queries = [e for e in entities if (e.get("role") or {}).get("code") == "24"]
    others = [e for e in entities if not _is_patient_entity(e) and (e.get("role") or {}).get("code") != "24"]
    patient_refs = set(patients)
    returned: list[dict[str, Any]] = []
    seen: set[str] = set()
    for ref, _content in disclosed:
        if ref in seen or unversioned(ref) in patient_refs:
            continue
        seen.add(ref)
        returned.append({"what": {"reference": ref}, "type": _coding(ENTITY_TYPE, "2", "System Object"),
                         "role": _coding(OBJECT_ROLE, "4", "Domain Resource")})
    event = dict(head)
    event["entity"] = [*(_patient_entity(p) for p in patients), *queries, *returned, *others]
    meta = dict(event.get("meta") or {})
    profiles = list(meta.get("profile") or [])
    if patients and profiles and profiles[0] in (BALP + "Read", BALP + "Query"):
        profiles[0] = BALP + "Patient" + profiles[0][len(BALP):]
        meta["profile"] = profiles
        event["meta"] = meta
    return event


def _is_patient_entity(entity: dict[str, Any]) -> bool:
    return (entity.get("role") or {}).get("code") == "1" and (entity.get("type") or {}).get("code") == "1" \
        and isinstance((entity.get("what") or {}).get("reference"), str)


def request_entity(request_id: str) -> dict[str, Any]:
    """BALP's X-Request-Id entity: ties the AuditEvent to the Provenance of the same request and to
    the server's log lines."""
    return {"what": {"identifier": {"system": REQUEST_ID_SYSTEM, "value": request_id}},
            "type": _coding(BALP_ENTITY_TYPE, "XrequestId", "X-Request-Id")}


def _patient_entity(ref: str) -> dict[str, Any]:
    return {"what": {"reference": ref}, "type": _coding(ENTITY_TYPE, "1", "Person"),
            "role": _coding(OBJECT_ROLE, "1", "Patient")}


def _purpose(event: dict[str, Any], ctx: "RequestContext") -> None:
    if ctx.purpose_of_use:
        system, _, code = ctx.purpose_of_use.rpartition("|")
        concept: dict[str, Any] = {"coding": [{"system": system or ACT_REASON, "code": code}]}
        if ctx.break_glass and ctx.break_glass_reason:
            concept["text"] = f"Break-glass: {ctx.break_glass_reason}"
        event["purposeOfEvent"] = [concept]
    if ctx.break_glass:
        meta = event.setdefault("meta", {})
        meta.setdefault("tag", []).append(dict(REVIEW_TAG))
        meta.setdefault("security", []).append({"system": ACT_REASON, "code": "BTG"})


def _profile(code: str) -> str:
    if code in ("read", "vread"):
        return "Read"
    if code.startswith("search") or code.startswith("history"):
        return "Query"
    return {"create": "Create", "update": "Update", "patch": "Update", "delete": "Delete"}.get(code, "Query")


def unversioned(ref: str) -> str:
    """``Type/id`` of a reference that may carry ``/_history/v``."""
    return "/".join(ref.split("/")[:2])



def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _as_list(value: Any) -> Iterable[Any]:
    if value is None:
        return ()
    return value if isinstance(value, list) else (value,)
