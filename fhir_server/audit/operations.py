"""``$verify-audit`` and ``Patient/[id]/$subject-access`` (profiles/operations/verify-audit.json and
subject-access.json): the auditor's operations on the trail."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..auth import events
from ..auth.errors import AccessDenied
from ..auth.scopes import READ, scope_set
from ..fhir.instants import format_instant, utcnow
from ..fhir.validation import check_id
from ..single_view.record import collect_child_record
from ..storage.tables import idx_reference, resource
from . import chain

if TYPE_CHECKING:
    from ..config import Settings
    from ..operations.registry import OperationTarget
    from ..repository.sql import UnitOfWork
    from ..rest.messages import FhirRequest, FhirResponse

VERIFY_FILE = "verify-audit.json"
SUBJECT_ACCESS_FILE = "subject-access.json"
# Roles that may examine the trail (with authentication on); "system" is the server's own context.
AUDIT_ROLES = frozenset({"auditor", "dpo", "system"})


def require_auditor(req: "FhirRequest", what: str) -> None:
    """With authentication on, only an auditor or DPO holding read access to AuditEvent."""
    ctx = req.ctx
    if not ctx.authenticated:
        return  # authentication disabled (development, tests): nothing to check against
    if ctx.role not in AUDIT_ROLES or not scope_set(ctx.scopes).allows(READ, "AuditEvent"):
        info = events.RequestInfo(req.method, req.path, ctx.remote_addr, None, ctx.request_id)
        events.denied("not-an-auditor", ctx, info, f"{what} needs the auditor or dpo role and AuditEvent read")
        raise AccessDenied(f"{what} is for auditors and data protection officers only (role auditor or dpo, "
                           f"with read access to AuditEvent)", reason="not-an-auditor")


def make_verify_handler() -> Any:
    def handle(uow: "UnitOfWork", req: "FhirRequest", target: "OperationTarget") -> "FhirResponse":
        from ..rest.messages import FhirResponse

        require_auditor(req, "$verify-audit")
        result = chain.verify(uow.conn)
        params: list[dict[str, Any]] = [
            {"name": "intact", "valueBoolean": result.intact},
            {"name": "sealed", "valueInteger": result.sealed},
            {"name": "pending", "valueInteger": result.pending},
        ]
        note = result.pending_note()
        if note is not None:  # the unsealed tail is not covered: say so rather than imply it is
            params.append({"name": "note", "valueString": note})
        if result.intact:
            params.append({"name": "headHash", "valueString": result.head_hash})
        else:
            params += [{"name": "brokenLink", "valueInteger": result.broken_at},
                       {"name": "brokenEvent", "valueReference": {"reference": f"AuditEvent/{result.broken_event}"}},
                       {"name": "problem", "valueString": result.problem}]
        return FhirResponse(200, {"resourceType": "Parameters", "parameter": params})

    return handle


def make_subject_access_handler(settings: "Settings") -> Any:
    def handle(uow: "UnitOfWork", req: "FhirRequest", target: "OperationTarget") -> "FhirResponse":
        from ..rest.messages import FhirResponse

        require_auditor(req, "$subject-access")
        patient_id = target.res_id or ""
        check_id(patient_id)
        # A subject access request covers everything held, whatever the examiner's role may read
        # otherwise (require_auditor above is the check): read past the caller's Visibility, as
        # collect_child_record does. 404 unknown, 410 deleted.
        visibility, uow.access = uow.access, None
        try:
            patient = uow.read("Patient", patient_id).content or {}
        finally:
            uow.access = visibility
        record = collect_child_record(uow.conn, settings.profiles_dir, settings.base_url, patient)
        # AuditEvents are Patient compartment members: they come once, with the disclosures
        held = [f.content for f in record.all() if f.res_type != "AuditEvent"]
        disclosures = audit_events_about(uow, list(record.patient_ids))
        entries = [{"fullUrl": f"{settings.base_url}/{r['resourceType']}/{r['id']}", "resource": r}
                   for r in [*held, *disclosures]]
        bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": format_instant(utcnow()),
                  "total": len(entries), "entry": entries}
        return FhirResponse(200, bundle)

    return handle


def audit_events_about(uow: "UnitOfWork", patient_ids: list[str]) -> list[dict[str, Any]]:
    """Every published AuditEvent whose ``patient`` (or ``entity``) names one of ``patient_ids``,
    oldest first."""
    if not patient_ids:
        return []
    about = (select(idx_reference.c.resource_pk)
             .where(idx_reference.c.res_type == "AuditEvent", idx_reference.c.param.in_(("patient", "entity")),
                    idx_reference.c.target_type == "Patient", idx_reference.c.target_id.in_(patient_ids)))
    rows = uow.conn.execute(select(resource.c.content).where(resource.c.pk.in_(about))
                            .order_by(resource.c.last_updated, resource.c.pk))
    return [row.content for row in rows]
