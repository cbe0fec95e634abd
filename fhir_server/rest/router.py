"""URL → interaction dispatch for the FHIR RESTful API (http.html#summary).

``Router.handle`` runs one request in its own unit of work; ``Router.dispatch`` runs it inside a
unit of work the caller owns (every entry of a transaction Bundle shares one).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest, FhirError, MethodNotAllowed, NotFound, RunAgain, ServiceUnavailable
from ..fhir.models import SUPPORTED_TYPES
from ..operations.registry import OperationRegistry, OperationTarget
from ..repository.sql import SqlRepository, UnitOfWork
from .. import jobs
from . import crud, history, searching
from .messages import FhirRequest, FhirResponse

if TYPE_CHECKING:
    from ..audit.recorder import Recorder
    from ..auth.access import Guard
    from ..config import Settings

Handler = Callable[[UnitOfWork, FhirRequest], FhirResponse]
# Attempts at a request whose cached inputs changed while it ran (errors.RunAgain), then a 503.
RUN_AGAIN_LIMIT = 3


class Router:
    def __init__(self, repo: SqlRepository, operations: OperationRegistry, settings: "Settings") -> None:
        self.repo = repo
        self.operations = operations
        self.settings = settings
        # Set by create_app: the CapabilityStatement builder and the Bundle processor.
        self.capabilities: Callable[[FhirRequest], dict] | None = None
        self.bundle_processor: Callable[["Router", FhirRequest], FhirResponse] | None = None
        # Auth hook (fhir_server/auth/access.py): checks run around every request and every Bundle
        # entry — the scope guard when authentication is on; agency/role/consent policies join it.
        self.guards: list["Guard"] = []
        # Audit hook (fhir_server/audit): told of every interaction that succeeded, with the unit of
        # work it ran in (None for an operation that runs its own transactions), before it commits.
        self.recorders: list["Recorder"] = []
        # Access hook (fhir_server/auth/policy.py): the Visibility of a request context, given to
        # the unit of work so that reads and searches filter inside their queries, and the write
        # check every stored version passes through. None when authentication is off.
        self.access_policy: Callable[..., Any] | None = None
        self.write_policy: Callable[..., Any] | None = None
        self.hidden_write: Callable[..., bool] | None = None
        self.update_create: Callable[..., bool] | None = None
        # The process's Consent cache (auth/consent.py ConsentCache), given to reads whose AuditEvent
        # INSERT checks its version (set by the audit trail; None: Consents read on every request).
        self.consent_cache: Any = None

    def handle(self, req: FhirRequest) -> FhirResponse:
        try:
            for _attempt in range(RUN_AGAIN_LIMIT):
                # what an attempt tells the recorders (events it published) is dropped if it is run again
                discards = [recorder.attempt(req) for recorder in self.recorders]
                try:
                    return self._handle(req)
                except RunAgain:  # what changed has been read afresh: run it again
                    self.unanswered(req, "The Consents changed while the request ran: it was run again", 503)
                    for discard in discards:
                        discard()
                    continue
            raise ServiceUnavailable("The access policy's Consents kept changing while this request ran; "
                                     "nothing was answered, try again")
        except FhirError as exc:
            self.failed(req, exc)
            raise
        except Exception as exc:
            self.unanswered(req, f"The request failed ({type(exc).__name__}): nothing was answered", 500)
            raise

    def unanswered(self, req: FhirRequest, reason: str, status: int) -> None:
        """Tell the recorders that an attempt at ``req`` ended without an answer, not by a FhirError
        (run again: 503, or an unexpected error: 500)."""
        for recorder in self.recorders:
            recorder.unanswered(req, reason, status)

    def failed(self, req: FhirRequest, exc: FhirError) -> None:
        """Tell the recorders (the audit trail) of a request refused with ``exc`` (its unit of work,
        if any, is rolled back)."""
        for recorder in self.recorders:
            recorder.failed(req, exc)

    def _handle(self, req: FhirRequest) -> FhirResponse:
        segments = _segments(req.path)
        if req.method == "POST" and not segments:
            if self.bundle_processor is None:
                raise MethodNotAllowed("Batch and transaction Bundles are not enabled")
            self._guard_before(req)  # auth hook: a token for the Bundle; every entry is checked too
            return self.bundle_processor(self, req)
        standalone = self._standalone_operation(req, segments)
        if standalone is not None:
            return standalone
        with self.repo.unit_of_work(write=req.method != "GET") as uow:
            try:
                return self.dispatch(uow, req)
            except FhirError:
                # a refusal (404…) made with cached Consents is checked here, as an answer is by its
                # AuditEvent INSERT (audit/recorder.py)
                version = getattr(uow.access, "consent_version", None)
                if version is not None and self.consent_cache.changed_since(uow.conn, version):
                    raise RunAgain("The Consents changed while the request ran") from None
                raise

    def _standalone_operation(self, req: FhirRequest, segments: list[str]) -> FhirResponse | None:
        """Run an operation that manages its own transactions outside any unit of work."""
        found = _operation_target(segments)
        if found is None:
            return None
        name, target = found
        if target.res_type is not None:
            self._resource_type(target.res_type)
        op = self.operations.find(name, target, req.method)
        if not op.own_transaction:
            return None
        self._guard_before(req)  # auth hook
        response = op.handler(None, req, target)  # type: ignore[arg-type]
        self._guard_after(req, response)
        self.record(None, req, response)
        return response

    def dispatch(self, uow: UnitOfWork, req: FhirRequest) -> FhirResponse:
        handler = self._resolve(req)
        self._guard_before(req)  # auth hook: scopes (and later policies) for this request or entry
        self.bind_access(uow, req)
        for recorder in self.recorders:  # audit hook: a read's or search's statement may write its event
            recorder.prepare(uow, req)
        response = handler(uow, req)
        self._guard_after(req, response)  # raising here rolls the unit of work back
        self.record(uow, req, response)
        return response

    def bind_access(self, uow: UnitOfWork, req: FhirRequest) -> None:
        """Give ``uow`` the access policy of ``req``'s context: what its reads may show and the check
        every write passes (also for writers that bypass dispatch, such as the agency importer)."""
        if self.access_policy is not None:
            if getattr(uow.access, "ctx", None) is not req.ctx:  # once per request: Bundle entries share it
                cached = self.consent_cache is not None and self.repo._bound is None \
                    and uow.conn.get_execution_options().get("readonly", False)
                uow.access = self.access_policy(req.ctx, uow.conn, consents=self.consent_cache if cached else None)
            uow.write_check = self.write_policy
            uow.hidden_write, uow.update_create = self.hidden_write, self.update_create

    def _guard_before(self, req: FhirRequest) -> None:
        for guard in self.guards:
            guard.before(req)

    def _guard_after(self, req: FhirRequest, response: FhirResponse) -> None:
        for guard in self.guards:
            guard.after(req, response)

    def record(self, uow: UnitOfWork | None, req: FhirRequest, response: FhirResponse) -> None:
        """Tell the recorders (the audit trail) of an interaction that succeeded in ``uow``."""
        for recorder in self.recorders:
            recorder.record(uow, req, response)

    def _resolve(self, req: FhirRequest) -> Handler:
        """Pick the handler for ``req.method`` and ``req.path``; 404/405 when there is none."""
        s = _segments(req.path)
        m = req.method
        n = len(s)
        if n == 0:
            return self._only(m, {"GET": lambda u, r: searching.search(u, r, _type_param(r))})
        head = s[0]
        if head == "metadata" and n == 1:
            return self._only(m, {"GET": lambda u, r: self._metadata(r)})
        if head == "_history" and n == 1:
            return self._only(m, {"GET": lambda u, r: history.history(u, r)})
        if head == "_search" and n == 1:
            return self._only(m, {"POST": lambda u, r: searching.search(u, r, _type_param(r))})
        if head.startswith("$") and n == 1:
            return self._operation(head[1:], OperationTarget("system"), m)
        if head == "_async" and n == 2:
            job_id = s[1]
            return self._only(m, {"GET": lambda u, r: jobs.status(u.conn, r, job_id),
                                  "DELETE": lambda u, r: jobs.status(u.conn, r, job_id)})
        res_type = self._resource_type(head)
        if n == 1:
            return self._only(m, {
                "GET": lambda u, r: searching.search(u, r, [res_type]),
                "POST": lambda u, r: crud.create(u, r, res_type),
                "PUT": lambda u, r: crud.conditional_update(u, r, res_type),
                "DELETE": lambda u, r: crud.conditional_delete(u, r, res_type),
                "PATCH": lambda u, r: crud.conditional_patch(u, r, res_type),
            })
        second = s[1]
        if n == 2 and second == "_search":
            return self._only(m, {"POST": lambda u, r: searching.search(u, r, [res_type])})
        if n == 2 and second == "_history":
            return self._only(m, {"GET": lambda u, r: history.history(u, r, res_type)})
        if n == 2 and second.startswith("$"):
            return self._operation(second[1:], OperationTarget("type", res_type), m)
        res_id = second
        if n == 2:
            return self._only(m, {
                "GET": lambda u, r: crud.read(u, r, res_type, res_id),
                "PUT": lambda u, r: crud.update(u, r, res_type, res_id),
                "DELETE": lambda u, r: crud.delete(u, r, res_type, res_id),
                "PATCH": lambda u, r: crud.patch(u, r, res_type, res_id),
            })
        third = s[2]
        if n == 3 and third == "_history":
            return self._only(m, {"GET": lambda u, r: history.history(u, r, res_type, res_id)})
        if n == 3 and third.startswith("$"):
            return self._operation(third[1:], OperationTarget("instance", res_type, res_id), m)
        if n == 3 and res_type == "Patient" and (third == "*" or third in SUPPORTED_TYPES):
            return self._only(m, {"GET": lambda u, r: searching.compartment_search(u, r, res_id, third)})
        if n == 4 and third == "_history":
            version = s[3]
            return self._only(m, {"GET": lambda u, r: crud.vread(u, r, res_type, res_id, version)})
        raise NotFound(f"No FHIR interaction is defined at {req.path!r}")

    def _operation(self, name: str, target: OperationTarget, method: str) -> Handler:
        if method not in ("GET", "POST"):
            raise MethodNotAllowed(f"Operations are invoked with GET or POST, not {method}")
        op = self.operations.find(name, target, method)
        return lambda u, r: op.handler(u, r, target)

    def _metadata(self, req: FhirRequest) -> FhirResponse:
        if self.capabilities is None:
            raise NotFound("No CapabilityStatement is configured")
        return FhirResponse(200, self.capabilities(req))

    @staticmethod
    def _resource_type(name: str) -> str:
        if name not in SUPPORTED_TYPES:
            raise NotFound(f"Unknown or unsupported resource type {name!r}", expression="type")
        return name

    @staticmethod
    def _only(method: str, handlers: dict[str, Handler]) -> Handler:
        handler = handlers.get(method)
        if handler is None:
            raise MethodNotAllowed(f"{method} is not allowed here; allowed: {', '.join(sorted(handlers))}")
        return handler


def _operation_target(s: list[str]) -> tuple[str, OperationTarget] | None:
    """(name, target) when the path invokes an operation: $op, Type/$op or Type/id/$op."""
    if len(s) == 1 and s[0].startswith("$"):
        return s[0][1:], OperationTarget("system")
    if len(s) == 2 and s[1].startswith("$"):
        return s[1][1:], OperationTarget("type", s[0])
    if len(s) == 3 and s[2].startswith("$"):
        return s[2][1:], OperationTarget("instance", s[0], s[1])
    return None


def _segments(path: str) -> list[str]:
    return [p for p in path.split("?", 1)[0].strip("/").split("/") if p]


def _type_param(req: FhirRequest) -> list[str] | None:
    """Whole-system search may be narrowed with ``_type=Patient,Observation`` (search.html#_type)."""
    value = req.param("_type")
    if not value:
        return None
    types = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in types if t not in SUPPORTED_TYPES]
    if unknown:
        raise BadRequest(f"Unknown resource type(s) in _type: {', '.join(unknown)}", expression="_type")
    req.query = [(k, v) for k, v in req.query if k != "_type"]
    return types
