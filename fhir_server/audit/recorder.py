"""The Router hooks of the audit trail: one AuditEvent per interaction, a Provenance per write.

:class:`AuditRecorder` is both a Router *recorder* (told of every interaction that succeeded, with
its unit of work) and a *guard* (run before every request and Bundle entry):

- ``record`` notes the interaction in a per-transaction session; the session writes at the end of
  the unit of work, inside its transaction (``UnitOfWork.before_commit``): the Provenance(s) of the
  writes, then the AuditEvent(s) in one INSERT. A write and its audit commit together or not at
  all; a read whose AuditEvent cannot be written fails with a 503 OperationOutcome (fail closed).
  All entries of a batch/transaction Bundle share one AuditEvent.
- ``before`` refuses writes of AuditEvent (405: the trail is append-only and server-written),
  validates ``X-Provenance`` (400 before anything is written), and seals the trail before an
  AuditEvent search, read or subject-access export, so that an auditor sees every committed event.

Authentication events (fhir_server/auth/events.py: denied attempts, tokens issued, break-glass
grants the access policy publishes) are buffered for the Flask request and written in their own
transaction when it ends: the request's own transaction is rolled back by the refusal.
"""
from __future__ import annotations

import logging
import threading
from contextvars import ContextVar
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from sqlalchemy.exc import SQLAlchemyError

from ..auth.access import classify
from ..errors import FhirError, MethodNotAllowed, RunAgain
from ..fhir.instants import utcnow
from ..storage.db import retry_when_busy, write_retrying
from . import balp, chain, pending, provenance
from .pending import AuditUnavailable

if TYPE_CHECKING:
    from ..auth.events import AuthEvent
    from ..repository.context import RequestContext
    from ..repository.sql import SqlRepository, UnitOfWork
    from ..rest.messages import FhirRequest, FhirResponse

log = logging.getLogger(__name__)
AUDIT_LOCK_WAIT = 60.0  # seconds an audited read on SQLite waits, in all, to write its AuditEvent

WRITES = frozenset({"create", "update", "patch", "delete"})
# Types whose writes get no automatic Provenance: a Provenance is its own; AuditEvents are refused.
NO_PROVENANCE = frozenset({"Provenance", "AuditEvent"})
SEAL_BEFORE = frozenset({"subject-access"})


class Recorder(Protocol):
    """What the Router tells the audit trail (rest/router.py ``recorders``)."""

    def prepare(self, uow: "UnitOfWork", req: "FhirRequest") -> None: ...

    def record(self, uow: "UnitOfWork | None", req: "FhirRequest", response: "FhirResponse") -> None: ...

    def failed(self, req: "FhirRequest", exc: FhirError) -> None: ...

    def attempt(self, req: "FhirRequest") -> Callable[[], None]:
        """An attempt at ``req`` begins; the function returned forgets what the recorder was told
        during it (the Router calls it when the attempt answered nothing and is run again)."""
        ...

    def unanswered(self, req: "FhirRequest", reason: str, status: int) -> None:
        """The attempt at ``req`` ends without an answer, not by a FhirError (:meth:`failed`): it is
        run again (503), or an unexpected error ends it (500); ``reason`` says which."""
        ...


class _Outer:
    """The top-level request an interaction belongs to (a Bundle's entries share its context)."""

    __slots__ = ("ctx", "bundle", "provenance")

    def __init__(self, ctx: "RequestContext", bundle: str | None, given: dict[str, Any] | None) -> None:
        self.ctx = ctx
        self.bundle = bundle
        self.provenance = given


_outer: ContextVar[_Outer | None] = ContextVar("audit_outer_request", default=None)
# The Stamp of the current attempt's read or search (PostgreSQL, :meth:`AuditRecorder.prepare`):
# once its statement has written the compact AuditEvent, an attempt that then answers nothing says so.
# (with its request: a later request of the same thread never sees it)
_attempt_stamp: ContextVar["tuple[FhirRequest, pending.Stamp] | None"] = ContextVar("audit_attempt_stamp",
                                                                                    default=None)


class AuditRecorder:
    def __init__(self, repo: "SqlRepository", *, max_json_depth: int = 64) -> None:
        self.repo = repo
        self.max_json_depth = max_json_depth
        self._read_writer: "_ReadAuditWriter | None" = None
        self._lock = threading.Lock()
        # Set by install_flask: takes a refused request's AuditEvent to write when the request ends
        # (True), or declines (False: not in a request, or the refusal is already audited).
        self.defer: Callable[[dict[str, Any]], bool] | None = None
        # Set by install_flask: marks the request's buffer of events and returns what drops the
        # events buffered since (an attempt run again answered nothing: it disclosed nothing).
        self.checkpoint: Callable[[], Callable[[], None]] | None = None
        # PostgreSQL reads (non-durable): the Consent cache whose version the read's INSERT checks.
        self.consent_cache: Any = None

    def read_audit_writer(self) -> "_ReadAuditWriter":
        """PostgreSQL: where reads' AuditEvents go (see :class:`_ReadAuditWriter`)."""
        with self._lock:
            if self._read_writer is None:
                self._read_writer = _ReadAuditWriter(self.repo.settings.database_url)
            return self._read_writer

    # -- guard -----------------------------------------------------------------------------------

    def before(self, req: "FhirRequest") -> None:
        interaction = classify(req.method, req.path)
        if interaction.res_type == "AuditEvent" and interaction.code in WRITES:
            raise MethodNotAllowed("AuditEvents are written by the server only: the audit trail is append-only "
                                   "and cannot be created, updated or deleted through the API")
        outer = _outer.get()
        if outer is not None and outer.ctx is req.ctx:
            return  # an entry of a Bundle (or a nested call) of the request already seen
        bundle = None
        if interaction.code == "batch" and isinstance(req.body, dict):
            bundle = req.body.get("type") if req.body.get("type") in ("batch", "transaction") else None
        given = provenance.parse_header(req.header(provenance.HEADER), max_depth=self.max_json_depth)
        _outer.set(_Outer(req.ctx, bundle, given))
        # GET only: a POST runs in a write transaction, and SQLite would make a second writer wait
        if req.method == "GET" and ((interaction.res_type == "AuditEvent" and interaction.code in
                                     ("read", "vread", "search-type")) or interaction.operation in SEAL_BEFORE):
            self.seal_pending()

    def after(self, req: "FhirRequest", response: "FhirResponse") -> None:
        return None

    # -- recorder --------------------------------------------------------------------------------

    def prepare(self, uow: "UnitOfWork", req: "FhirRequest") -> None:
        """PostgreSQL reads and searches: give ``uow`` the request's AuditEvent as known now (a
        :class:`~.pending.Stamp`), for the statement that reads to write it (audit/pending.py). Not
        for storage bound to a test's connection, durable reads (FHIR_AUDIT_DURABLE_READS=1: the
        INSERT waits for its WAL flush, in the separate writer), compartments, AuditEvents (an
        auditor's read seals first) or anything inside a Bundle."""
        repo = self.repo
        if req.method != "GET" or repo._bound is not None or repo.settings.audit_durable_reads \
                or not uow._is_postgres or not uow.conn.get_execution_options().get("readonly"):
            return
        outer = _outer.get()
        if outer is not None and outer.ctx is req.ctx and outer.bundle is not None:
            return
        item, found = _asked(req, 200)
        if item.code not in ("read", "search-type") or found.compartment or item.res_type in (None, "AuditEvent"):
            return
        if getattr(uow.access, "denies", ()):
            # Consent refusals: DenyRule.clause (SQL) sees only indexed references, DenyRule.matches
            # (the answer's rule) every reference in the content, so the statement could record a
            # read the answer then refuses. The recorder writes the event after the answer instead.
            return
        now = utcnow()
        cache = self.consent_cache
        uow.audit_stamp = pending.Stamp(balp.audit_event(req.ctx, [item], now), now,
                                        getattr(uow.access, "consent_version", None),
                                        cache.invalidate if cache is not None else None)
        _attempt_stamp.set((req, uow.audit_stamp))

    def record(self, uow: "UnitOfWork | None", req: "FhirRequest", response: "FhirResponse") -> None:
        item = interaction_of(req, response)
        if uow is None:  # an operation that ran its own transactions
            event = balp.audit_event(req.ctx, [item], utcnow())
            def append() -> None:
                with self.repo.unit_of_work() as own:
                    chain.append(own.conn, [event])

            try:  # its own transaction: run again whole while SQLite is locked by another writer
                retry_when_busy(append, within=AUDIT_LOCK_WAIT)
            except SQLAlchemyError as exc:
                raise AuditUnavailable("The audit trail could not be written; the answer is withheld") from exc
            return
        real = getattr(uow, "_uow", None) or uow  # DeferredCreates wraps the real unit of work
        session = real.__dict__.get("_audit_session")
        if session is None:
            outer = _outer.get()
            if outer is not None and outer.ctx is not req.ctx:
                outer = None
            session = _Session(self, real, req.ctx, outer)
            real._audit_session = session  # type: ignore[attr-defined]
            real.before_commit(session.flush)
        session.items.append(item)

    def attempt(self, req: "FhirRequest") -> Callable[[], None]:
        """Recorder.attempt: what the policy published during an attempt run again (a break-glass
        grant, a share without consent made from stale Consents) is dropped from the request's
        buffer. Its AuditEvent and Provenance were never written (the unit of work rolled back, or
        the read's INSERT found the Consents changed), so nothing else is left of it."""
        _attempt_stamp.set(None)
        return self.checkpoint() if self.checkpoint is not None else _nothing

    def unanswered(self, req: "FhirRequest", reason: str, status: int) -> None:
        """Recorder.unanswered: if the attempt's statement wrote a compact AuditEvent (a disclosure),
        write the event saying its answer was not sent (:func:`balp.not_answered`)."""
        compact = _written_compact(req)
        if compact is None:
            return
        item, _found = _asked(req, status)
        code = "transient" if status == 503 else "exception"
        event = balp.not_answered(balp.failure_event(req.ctx, item, utcnow(), status=status, code=code,
                                                     diagnostics=reason), compact)
        self._write_correction(event)

    def _write_correction(self, event: dict[str, Any]) -> None:
        try:
            self.write_events([event])
        except Exception:  # noqa: BLE001 - the answer is withheld either way; the log line keeps the event
            log.exception("Could not write the AuditEvent saying a recorded answer was not sent: %s", event)

    def failed(self, req: "FhirRequest", exc: FhirError) -> None:
        """A request answered with an OperationOutcome instead (400, 404, 409, 412, 422…; issue 4:
        "every interaction … writes an AuditEvent"). Its own transaction was rolled back, so the event
        goes to :attr:`defer` (the Flask request's buffer, written when the request ends) or, outside
        a request, straight into a transaction of its own. Refusals already recorded as
        authentication events (fhir_server/auth/events.py: 401/403) are not recorded twice, and a
        503 because the trail could not be written is not retried here."""
        compact = _written_compact(req)
        if compact is None and (isinstance(exc, AuditUnavailable) or exc.status < 400):
            return
        item, _found = _asked(req, exc.status)
        issue = exc.issues[0].code if exc.issues else exc.code
        event = balp.failure_event(req.ctx, item, utcnow(), status=exc.status, code=issue,
                                   diagnostics=exc.diagnostics)
        if compact is not None:
            # the read's statement recorded an answer that is not sent: say so, now and whatever
            # else recorded the refusal (a 401/403 authentication event does not name that event)
            self._write_correction(balp.not_answered(event, compact))
            return
        if self.defer is not None and self.defer(event):
            return
        try:
            self.write_events([event])
        except SQLAlchemyError:  # the refusal stands either way; the log line keeps the event
            log.exception("Could not write the AuditEvent of a refused request")

    # -- sealing ---------------------------------------------------------------------------------

    def seal_pending(self, *, wait: bool = True) -> int:
        """Chain and publish every AuditEvent committed so far, one transaction per batch. With
        ``wait=False`` (the periodic job), give up at once if another sealer is at work (chain.seal)."""
        total = 0
        while True:
            with self.repo.unit_of_work() as uow:
                done = chain.seal(uow.conn, self.repo.indexer, wait=wait)
            total += done
            if done < chain.SEAL_BATCH:
                return total

    # -- authentication events -------------------------------------------------------------------

    def auth_event_resource(self, event: "AuthEvent") -> dict[str, Any]:
        info = event.request
        base_url = event.context.base_url if event.context is not None else self.repo.settings.base_url
        return balp.auth_event(event.kind, event.reason, base_url=base_url, recorded=utcnow(), ctx=event.context,
                               client_id=event.client_id, method=info.method if info else None,
                               path=info.path if info else None, remote_addr=info.remote_addr if info else None,
                               detail=event.detail, extra=event.extra)

    def write_events(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        with self.repo.unit_of_work() as uow:
            chain.append(uow.conn, events)


class _Session:
    """What one unit of work did, written at its end in its transaction."""

    def __init__(self, recorder: AuditRecorder, uow: "UnitOfWork", ctx: "RequestContext",
                 outer: _Outer | None) -> None:
        self.recorder = recorder
        self.uow = uow
        self.ctx = ctx
        self.outer = outer
        self.items: list[balp.Interaction] = []

    def flush(self) -> None:
        if not self.items or self._written_by_statement():
            return
        self.uow.__dict__.pop("_audit_session", None)
        now = utcnow()
        self._patients_of_writes()
        self._provenance(now)
        bundle = self.outer.bundle if self.outer is not None else None
        if bundle is None and len(self.items) > 1:
            bundle = "transaction"
        event = balp.audit_event(self.ctx, self.items, now, bundle=bundle)
        written, version = True, None
        try:
            conn = self.uow.conn
            repo = self.recorder.repo
            read = conn.get_execution_options().get("readonly") and repo._bound is None
            if read and conn.dialect.name == "sqlite":
                # a read on SQLite holds a read snapshot: write from a writer transaction of its own
                # (waiting its turn behind another writer, such as an import: storage/db.py)
                write_retrying(repo.engine, lambda writer: chain.append(writer, [event]), within=AUDIT_LOCK_WAIT)
            elif read and not repo.settings.audit_durable_reads:
                version = getattr(self.uow.access, "consent_version", None)
                written = self.recorder.read_audit_writer().append(event, consent_version=version)
            else:
                chain.append(conn, [event])
        except Exception as exc:  # noqa: BLE001 - any failure to record (driver, pool, disk) fails closed
            log.exception("Audit trail write failed")
            raise AuditUnavailable("The audit trail could not be written, so this request was not carried out "
                                   "(audited access fails closed)") from exc
        if not written:  # a Consent changed since the cached copy this read used: nothing was answered
            cache = self.recorder.consent_cache
            if cache is not None:
                cache.invalidate(version)
            raise RunAgain("The Consents changed while the request ran")

    def _written_by_statement(self) -> bool:
        """The read's or search's own statement wrote its AuditEvent (audit/pending.py), disclosing
        what the answer holds. Should they differ, the full event is written here too (a warning:
        an event too many rather than a disclosure unrecorded)."""
        stamp = self.uow.audit_stamp
        if stamp is None or stamp.returned is None:
            return False
        answered = [balp.unversioned(ref) for item in self.items for ref in item.returned]
        if len(self.items) == 1 and answered == [balp.unversioned(ref) for ref in stamp.returned]:
            return True
        log.warning("A statement recorded %s but the answer disclosed %s: writing its AuditEvent too",
                    stamp.returned, answered)
        return False

    def _written(self) -> list[tuple[balp.Interaction, str]]:
        return [(item, ref) for item in self.items for ref in item.written]

    def _patients_of_writes(self) -> None:
        """Writes answered without a body (return=minimal|OperationOutcome): read what was written
        to find the patients involved (one SELECT per type)."""
        unknown = [(item, ref) for item, ref in self._written() if not item.patients]
        if not unknown:
            return
        refs = list(dict.fromkeys(tuple(ref.split("/")[:2]) for _item, ref in unknown))
        found = self.uow.read_many(refs)  # type: ignore[arg-type]
        for item, ref in unknown:
            res_type, res_id = ref.split("/")[:2]
            content = found.get((res_type, res_id))
            if content is not None:
                item.patients = list(dict.fromkeys(balp.patients_in(content)))
            elif res_type == "Patient":
                item.patients = [f"Patient/{res_id}"]

    def _provenance(self, now: Any) -> None:
        writes = [(item, ref) for item, ref in self._written() if item.res_type not in NO_PROVENANCE]
        if not writes:
            return
        if any(item.res_type == "Provenance" and item.code in ("create", "update") for item in self.items):
            return  # the write brought its own Provenance (e.g. an agency import)
        given = self.outer.provenance if self.outer is not None else None
        by_activity: dict[str, list[str]] = {}
        for item, ref in writes:
            by_activity.setdefault("update" if item.code == "patch" else item.code, []).append(ref)
        for activity, targets in by_activity.items():
            self.uow.create(self.ctx, provenance.provenance(self.ctx, targets, activity, now, given))


class _ReadAuditWriter:
    """One plain psycopg connection per serving thread, in autocommit with
    ``synchronous_commit=off``, for reads' AuditEvents on PostgreSQL.

    The INSERT is one statement that succeeds or fails before the answer (a failure fails the read
    closed), but its commit does not wait for the WAL flush: ~0.1 ms instead of an fsync (1-7 ms
    measured on the benchmark machine), and no pool checkout. A crash of PostgreSQL itself can lose
    the last fraction of a second of *read* AuditEvents; writes' AuditEvents commit with their
    write, durably. FHIR_AUDIT_DURABLE_READS=1 turns this off. Connections are opened on first use,
    so in the serving process and thread (after a fork); a broken one is dropped and the next
    request reconnects (the failed INSERT is not retried: it may have been applied)."""

    def __init__(self, database_url: str) -> None:
        self.url = "postgresql://" + database_url.split("://", 1)[1]
        self._local = threading.local()

    def append(self, event: dict[str, Any], *, consent_version: int | None = None) -> bool:
        """INSERT ``event``; with ``consent_version``, only while the Consents are at that version
        (one statement either way). False: not written, the Consents changed."""
        import psycopg

        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.url, autocommit=True, options="-c synchronous_commit=off",
                                   keepalives=1, keepalives_idle=30)
            self._local.conn = conn
        try:
            with conn.cursor() as cur:
                if consent_version is None:
                    cur.execute(chain.RAW_INSERT, chain.raw_row(event))
                    return True
                cur.execute(chain.RAW_INSERT_IF_POLICY, (*chain.raw_row(event), consent_version))
                return cur.fetchone() is not None
        except Exception:
            self._local.conn = None
            conn.close()
            raise


def _nothing() -> None:
    return None


def interaction_of(req: "FhirRequest", response: "FhirResponse") -> balp.Interaction:
    """What ``req`` did and disclosed, from its answer."""
    item, found = _asked(req, response.status)
    code = item.code
    body = response.resource
    if code in WRITES:
        item.patients = []  # a write's patients are those of what it wrote (below, or read back)
        # a conditional create that found its match (200) wrote nothing, nor did a delete answered
        # without an ETag (nothing there, or nothing the caller may see: crud.delete)
        if response.status < 300 and not (code == "create" and response.status == 200) \
                and not (code == "delete" and "ETag" not in response.headers):
            ref = _local(response.location, req.ctx.base_url) if response.location else None
            if ref is None and found.res_type and found.res_id:
                ref = f"{found.res_type}/{found.res_id}"
            if ref is not None:
                item.written.append(ref)
                item.res_type = ref.split("/")[0]
        if isinstance(body, dict) and body.get("resourceType") == item.res_type:
            item.patients = list(dict.fromkeys(balp.patients_in(body)))
        elif code in ("create", "update") and item.written and isinstance(req.body, dict) \
                and req.body.get("resourceType") == item.res_type:
            # answered without a body (return=minimal): what was sent is what was stored, bar id and
            # meta (references already rewritten), so the patients need not be read back
            item.patients = ["/".join(item.written[0].split("/")[:2])] if item.res_type == "Patient" \
                else list(dict.fromkeys(balp.patients_in(req.body)))
        return item
    resources = list(balp.returned_resources(body))
    item.returned = [r for r in (balp.reference_of(res) for res in resources) if r]
    patients = list(item.patients)
    for res in resources:
        patients.extend(balp.patients_in(res))
    item.patients = list(dict.fromkeys(patients))
    return item


def _written_compact(req: "FhirRequest") -> str | None:
    """The id of the compact AuditEvent the current attempt at ``req`` had its statement write, if
    it wrote one (once: the attempt's stamp is forgotten)."""
    held = _attempt_stamp.get()
    if held is None or held[0] is not req:
        return None
    _attempt_stamp.set(None)
    stamp = held[1]
    return stamp.head["id"] if stamp.returned is not None else None


def _asked(req: "FhirRequest", status: int) -> tuple[balp.Interaction, Any]:
    """The interaction ``req`` asked for, answered with ``status``: its BALP code and target, the
    query of a search, history or operation, and the patients its URL names (a Patient compartment,
    a Patient's id). Also the classification of the URL."""
    found = classify(req.method, req.path)
    item = balp.Interaction("search-type" if found.compartment else found.code, req.method, req.path, status,
                            res_type=found.res_type, res_id=found.res_id, operation=found.operation)
    if item.code.startswith("search") or item.code.startswith("history") or item.code == "operation":
        item.query = req.path + ("?" + urlencode(req.query) if req.query else "")
    if found.compartment:
        item.patients.append(found.compartment)
    if found.res_type == "Patient" and found.res_id and f"Patient/{found.res_id}" not in item.patients:
        item.patients.append(f"Patient/{found.res_id}")
    return item, found


def _local(location: str, base_url: str) -> str | None:
    if location.startswith(base_url):
        location = location[len(base_url):]
    location = location.lstrip("/")
    return location or None
