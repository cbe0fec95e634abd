"""``Patient/$match`` (R4 patient-operation-match.html), ``Patient/$link`` and ``Patient/$unlink``.

- ``$match``: a Patient in (the ``resource`` parameter, or the body), a searchset Bundle out with the
  candidates from most to least likely, each with ``search.score`` (0–1) and the ``match-grade``
  extension (certain | probable | possible | certainly-not). ``onlyCertainMatches`` keeps certain
  matches, and none at all when they are records of more than one person; ``count`` caps the
  entries (default 20, at most 100). Reads only.
- ``$link``: a practitioner confirms that ``record`` is the same person as ``target`` (an agency
  Patient or a master): the record joins the target's master (created if needed). Refused (422) for
  a certainly-not pair, 409 when the record is already in another master.
- ``$unlink``: a practitioner splits ``record`` off its master (linking on write will not put it
  back), or answers a review ``task`` with "not the same person".

Both write a Provenance naming the practitioner and complete the review ``task`` when one is given
(or open for the same pair). Definitions: profiles/operations/match.json, link.json, unlink.json.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_server.errors import BadRequest, Conflict, Issue, NotFound, Unprocessable, operation_outcome
from fhir_server.fhir.instants import format_instant, utcnow
from fhir_server.operations.registry import OperationTarget
from fhir_server.rest.messages import FhirRequest, FhirResponse

from . import golden
from .blocking import query_for
from .linker import Matcher
from .model import CERTAIN, CERTAINLY_NOT, Model, certainly_not, score_pair
from .record import LINKAGE_CODES, from_patient, is_master
from .store import PATIENT, SqlLinkStore

if TYPE_CHECKING:
    from fhir_server import Services
    from fhir_server.repository.sql import UnitOfWork

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
DEFAULT_COUNT = 20
MAX_COUNT = 100
DEFINITIONS = {"match": "match.json", "link": "link.json", "unlink": "unlink.json"}


@lru_cache(maxsize=4)
def load_model(path: str | None = None) -> Model:
    """The linkage model: ``FHIR_LINKAGE_MODEL`` (a JSON file written by :meth:`Model.save`) or the
    one shipped with the package (EM-estimated on synthetic data, docs/linkage.md)."""
    return Model.load(path or os.environ.get("FHIR_LINKAGE_MODEL") or None)


def register_linkage_operations(services: "Services") -> None:
    for code, filename in DEFINITIONS.items():
        path = Path(services.settings.profiles_dir) / "operations" / filename
        definition = json.loads(path.read_text(encoding="utf-8"))
        if code == "match":
            services.router.operations.register(definition, _match_handler(services), own_transaction=True)
        else:
            services.router.operations.register(definition, _link_handler if code == "link" else _unlink_handler)


# -- $match ------------------------------------------------------------------------------------------------

def _match_handler(services: "Services"):
    def handle(_uow: Any, req: FhirRequest, _target: OperationTarget) -> FhirResponse:
        patient, only_certain, count = parse_match(req)
        with services.repo.unit_of_work(write=False) as uow:
            if services.router.access_policy is not None:  # access hook (fhir_server/auth/policy.py)
                uow.access = services.router.access_policy(req.ctx, uow.conn)
            return FhirResponse(200, match_bundle(uow, req, patient, only_certain=only_certain, count=count))

    return handle


def parse_match(req: FhirRequest) -> tuple[dict[str, Any], bool, int]:
    """The inputs of $match from a Parameters body (or a bare Patient body)."""
    if req.method != "POST":
        raise BadRequest("$match takes a Patient and is invoked with POST")
    body = req.body
    if not isinstance(body, dict):
        raise BadRequest("The body must be a Parameters resource with a 'resource' parameter", expression="resource")
    only_certain, count = False, DEFAULT_COUNT
    patient: Any = body
    if body.get("resourceType") == "Parameters":
        patient = None
        for i, p in enumerate(body.get("parameter") or []):
            name = p.get("name") if isinstance(p, dict) else None
            where = f"Parameters.parameter[{i}]"
            if name == "resource":
                patient = p.get("resource")
            elif name == "onlyCertainMatches":
                if not isinstance(p.get("valueBoolean"), bool):
                    raise BadRequest("onlyCertainMatches must be a boolean", expression=where)
                only_certain = p["valueBoolean"]
            elif name == "count":
                value = p.get("valueInteger")
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise BadRequest("count must be a positive integer", expression=where)
                count = value
            else:
                raise BadRequest(f"Unknown $match parameter {name!r}", expression=where)
    if not isinstance(patient, dict) or patient.get("resourceType") != PATIENT:
        raise BadRequest("The 'resource' parameter must hold a Patient", expression="resource")
    return patient, only_certain, min(count, MAX_COUNT)


def match_bundle(uow: "UnitOfWork", req: FhirRequest, patient: dict[str, Any], *, only_certain: bool,
                 count: int) -> dict[str, Any]:
    record = from_patient(patient, str(patient.get("id") or ""))
    if query_for(record).empty:
        raise BadRequest("Too little to match on: give at least an identifier or a birth date", expression="resource")
    store = SqlLinkStore(uow, req.ctx)
    matches = Matcher(load_model(), store).match(record)
    notes: list[Issue] = []
    if only_certain:
        matches = [m for m in matches if m.score.grade == CERTAIN]
        masters = set(store.masters_of([m.record.id for m in matches]).values())
        conflicting = any(certainly_not(a.record, b.record) for i, a in enumerate(matches) for b in matches[i + 1:])
        if len(masters) > 1 or conflicting:
            notes.append(Issue("information", "multiple-matches",
                               f"{len(matches)} certain matches are records of more than one person; "
                               "none is returned with onlyCertainMatches"))
            matches = []
    base = req.ctx.base_url.rstrip("/")
    entries: list[dict[str, Any]] = []
    for m in matches[:count]:
        content = store.contents.get(m.record.id)
        access = getattr(uow, "access", None)
        if content is None or (access is not None and not access.allows(content)):
            continue  # (a Patient the caller may not see is no candidate for them)
        entries.append({"fullUrl": f"{base}/Patient/{m.record.id}", "resource": content,
                        "search": {"extension": [{"url": MATCH_GRADE, "valueCode": m.score.grade}],
                                   "mode": "match",
                                   "score": 0.0 if m.score.grade == CERTAINLY_NOT else round(m.score.probability, 6)}})
    if notes:
        entries.append({"resource": operation_outcome(notes), "search": {"mode": "outcome"}})
    return {"resourceType": "Bundle", "type": "searchset", "total": len([e for e in entries
                                                                         if e["search"]["mode"] == "match"]),
            "timestamp": format_instant(utcnow()), "entry": entries}


# -- $link / $unlink ---------------------------------------------------------------------------------------

def _inputs(req: FhirRequest, allowed: tuple[str, ...]) -> dict[str, str]:
    if req.method != "POST":
        raise BadRequest("This operation changes data and is invoked with POST")
    body = req.body
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("The body must be a Parameters resource")
    out: dict[str, str] = {}
    for i, p in enumerate(body.get("parameter") or []):
        name = p.get("name") if isinstance(p, dict) else None
        where = f"Parameters.parameter[{i}]"
        if name not in allowed:
            raise BadRequest(f"Unknown parameter {name!r}; expected {', '.join(allowed)}", expression=where)
        value = (p.get("valueReference") or {}).get("reference") if "valueReference" in p else p.get("valueString")
        if not isinstance(value, str) or not value:
            raise BadRequest(f"Parameter {name!r} needs a valueReference (or valueString for reason)",
                             expression=where)
        out[name] = value
    return out


def _reference(value: str | None, res_type: str, name: str) -> str | None:
    if value is None:
        return None
    kind, _, res_id = value.rstrip("/").rpartition("/")
    if not res_id or kind.rsplit("/", 1)[-1] != res_type:
        raise BadRequest(f"{name} must reference a {res_type}", expression=name)
    return res_id


def _read(uow: "UnitOfWork", res_type: str, res_id: str, name: str) -> dict[str, Any]:
    try:
        return dict(uow.read(res_type, res_id).content or {})
    except NotFound:
        raise Unprocessable(f"{name}: {res_type}/{res_id} is not known", expression=name) from None


def _task_pair(uow: "UnitOfWork", task_id: str | None) -> tuple[str | None, str | None]:
    if task_id is None:
        return None, None
    task = _read(uow, "Task", task_id, "task")
    code = ((task.get("code") or {}).get("coding") or [{}])[0]
    if code.get("system") != LINKAGE_CODES or code.get("code") != "link-review":
        raise Unprocessable(f"Task/{task_id} is not a link review", expression="task")
    if task.get("status") in ("completed", "cancelled"):
        raise Conflict(f"Task/{task_id} is already {task['status']}", expression="task")
    ref = lambda key: ((task.get(key) or {}).get("reference") or "").rpartition("/")[2] or None  # noqa: E731
    return ref("for"), ref("focus")


def _complete_tasks(uow: "UnitOfWork", req: FhirRequest, task_ids: set[str], outcome: str,
                    master_id: str | None) -> None:
    for task_id in sorted(task_ids):
        task = dict(uow.read("Task", task_id).content or {})
        if task.get("status") in ("completed", "cancelled"):
            continue
        uow.update(req.ctx, "Task", task_id, golden.completed_task(task, outcome, master_id, req.ctx.practitioner))


def _result(master_id: str | None, note: str) -> FhirResponse:
    params: list[dict[str, Any]] = [{"name": "outcome", "valueString": note}]
    if master_id:
        params.insert(0, {"name": "master", "valueReference": {"reference": f"Patient/{master_id}"}})
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": params})


def _link_handler(uow: "UnitOfWork", req: FhirRequest, _target: OperationTarget) -> FhirResponse:
    args = _inputs(req, ("record", "target", "task", "reason"))
    task_id = _reference(args.get("task"), "Task", "task")
    task_record, task_candidate = _task_pair(uow, task_id)
    record_id = _reference(args.get("record"), PATIENT, "record") or task_record
    target_id = _reference(args.get("target"), PATIENT, "target") or task_candidate
    if not record_id or not target_id:
        raise BadRequest("Give record and target (or a review task)", expression="record")
    record_content = _read(uow, PATIENT, record_id, "record")
    target_content = _read(uow, PATIENT, target_id, "target")
    if is_master(record_content):
        raise Unprocessable("record must be an agency Patient, not a master", expression="record")
    store = SqlLinkStore(uow, req.ctx)
    if not is_master(target_content) and store.masters_of([record_id]) and not store.masters_of([target_id]):
        # the pair is symmetric: the unlinked one joins the other's master
        record_id, target_id, record_content, target_content = target_id, record_id, target_content, record_content
    record = from_patient(record_content, record_id)
    if is_master(target_content):
        master_id: str | None = target_id
        members = store.members(target_id)
    else:
        master_id = store.masters_of([target_id]).get(target_id)
        members = store.members(master_id) if master_id else [from_patient(target_content, target_id)]
    current = store.masters_of([record_id]).get(record_id)
    if current and current == master_id:
        return _result(master_id, f"Patient/{record_id} is already linked to Patient/{master_id}")
    if current:
        raise Conflict(f"Patient/{record_id} is linked to another master (Patient/{current}); unlink it first",
                       expression="record")
    model = load_model()
    scored = [(m, score_pair(model, record, m)) for m in members if m.id != record_id]
    for member, s in scored:
        if s.grade == CERTAINLY_NOT:
            raise Unprocessable(f"Patient/{record_id} and Patient/{member.id} cannot be the same person: {s.reason}",
                                expression="record")
    if not scored:
        raise Unprocessable("The target has no agency record to link with", expression="target")
    partner, score = max(scored, key=lambda ms: ms[1].probability)
    who = golden.practitioner_agent(req.ctx.practitioner, req.ctx.client_id)
    reason = args.get("reason") or "Confirmed by a practitioner"
    master_id = store.link(record, partner, master_id, score, who=who,
                           reason=f"{reason} (match probability {score.probability:.4f})")
    tasks = {task_id} if task_id else set()
    tasks.update(store.review_tasks(record_id, target_id))
    _complete_tasks(uow, req, tasks, "linked", master_id)
    return _result(master_id, f"Patient/{record_id} linked to Patient/{master_id}")


def _unlink_handler(uow: "UnitOfWork", req: FhirRequest, _target: OperationTarget) -> FhirResponse:
    args = _inputs(req, ("record", "master", "task", "reason"))
    task_id = _reference(args.get("task"), "Task", "task")
    task_record, task_candidate = _task_pair(uow, task_id)
    record_id = _reference(args.get("record"), PATIENT, "record") or task_record
    if not record_id:
        raise BadRequest("Give record (or a review task)", expression="record")
    _read(uow, PATIENT, record_id, "record")
    store = SqlLinkStore(uow, req.ctx)
    who = golden.practitioner_agent(req.ctx.practitioner, req.ctx.client_id)
    reason = args.get("reason") or "Not the same person, as decided by a practitioner"
    master_id = _reference(args.get("master"), PATIENT, "master") or store.masters_of([record_id]).get(record_id)
    if master_id and record_id in golden.links_of(_read(uow, PATIENT, master_id, "master")):
        store.unlink(record_id, master_id, who=who, reason=reason)
        _complete_tasks(uow, req, {task_id} if task_id else set(), "not-linked", master_id)
        return _result(master_id, f"Patient/{record_id} unlinked from Patient/{master_id}")
    if task_id:
        uow.create(req.ctx, golden.provenance(
            "not-linked", [f"Task/{task_id}"], who=who, reason=reason,
            entities=[f"Patient/{record_id}"] + ([f"Patient/{task_candidate}"] if task_candidate else [])))
        _complete_tasks(uow, req, {task_id}, "not-linked", None)
        return _result(None, f"Review Task/{task_id} closed: not the same person")
    raise Unprocessable(f"Patient/{record_id} is not linked to a master", expression="record")
