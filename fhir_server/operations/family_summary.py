"""``Patient/[id]/$family-summary``: the multi-agency family summary as a FHIR document.

Three steps, kept apart so that access control and consent can narrow what is shown without touching
collection or rendering: collect (:func:`fhir_server.single_view.family_loader.collect_family`), filter
(:func:`fhir_server.single_view.access.filter_family`), render
(:func:`fhir_server.single_view.document.render_family_summary`). The definition is
profiles/operations/family-summary.json.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..errors import BadRequest, NotFound
from ..fhir.validation import check_id
from ..single_view.access import filter_family, filter_for
from ..single_view.document import render_family_summary
from ..single_view.family_loader import collect_family
from .registry import Handler, OperationTarget

if TYPE_CHECKING:
    from ..config import Settings
    from ..repository.sql import UnitOfWork
    from ..rest.messages import FhirRequest, FhirResponse

DEFINITION_FILE = "family-summary.json"
IGNORED = ("_format", "_pretty")


def make_handler(settings: "Settings") -> Handler:
    def handle(uow: "UnitOfWork", req: "FhirRequest", target: OperationTarget) -> "FhirResponse":
        return family_summary(uow, req, target, settings)

    return handle


def family_summary(uow: "UnitOfWork", req: "FhirRequest", target: OperationTarget, settings: "Settings",
                   *, now: datetime | None = None) -> "FhirResponse":
    from ..rest.messages import FhirResponse

    patient_id = target.res_id or ""
    check_id(patient_id)
    unknown = [name for name, _v in req.query if name not in IGNORED]
    body_params = (req.body or {}).get("parameter") if isinstance(req.body, dict) else None
    if unknown or body_params:
        raise BadRequest("$family-summary takes no parameters", expression=unknown[0] if unknown else "parameter")
    patient = uow.read("Patient", patient_id).content or {}  # 404 unknown, 410 deleted
    allow = filter_for(req.ctx, uow.access)
    if not allow(patient):
        raise NotFound(f"Patient/{patient_id} is not known", expression="id")
    now = now or datetime.now(timezone.utc)
    record = collect_family(uow.conn, settings.profiles_dir, settings.base_url, patient,
                            now=now.replace(tzinfo=None))
    document = render_family_summary(filter_family(record, allow), subject_id=patient_id, now=now,
                                     base_url=settings.base_url, profiles_dir=settings.profiles_dir)
    return FhirResponse(200, document)
