"""From the outbox to delivery jobs.

1. :meth:`Dispatcher.consume` is an outbox consumer (fhir_server/worker.py): inside the drain's
   transaction it matches each committed change against the live subscriptions (topic filters:
   topics.py, pure; a classic R4 Subscription's search criteria: criteria.py, the server's search)
   and stores a numbered event per matching subscription (store.add_events). A change the
   subscription's owner could not read now (access.py: scopes, role, labels, Consent) does not match
   at all: it is never numbered, so event numbers stay gapless and reveal nothing. The events commit
   with the outbox rows being marked processed: a crash in between loses nothing and numbers nothing twice.
2. After that transaction commits, :meth:`Dispatcher.after_drain` sends one job per (subscription,
   event), carrying only the two ids.
3. A job runs :class:`~subscriptions.delivery.Deliverer` for its subscription. With a broker the
   job is the Celery task ``subscriptions.deliver`` (subscriptions/tasks.py); without one, a
   background thread of this process runs them (:class:`LocalScheduler`).
4. The sweep (Celery beat ``subscriptions.sweep``, or the process's local beat) re-sends a job for
   every subscription with undelivered events, a handshake or a heartbeat due: what a lost job, a
   dead worker or a broker outage left behind.
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from fhir_server.search.compartment import patient_compartment_params
from fhir_server.storage.tables import idx_reference, resource
from fhir_server.worker import OutboxEvent

from . import criteria, store
from .access import Gate
from .delivery import Deliverer
from .topics import EventFacts, load_topics, matches, needs

if TYPE_CHECKING:
    from fhir_server import Services

log = logging.getLogger(__name__)
OPEN_EPISODE = ("planned", "waitlist", "active", "onhold")


class Dispatcher:
    def __init__(self, services: "Services", scheduler: "Scheduler") -> None:
        self.services = services
        self.scheduler = scheduler
        self.topics = load_topics(Path(services.settings.profiles_dir))
        self.compartment = patient_compartment_params(Path(services.settings.profiles_dir))
        self._jobs = threading.local()

    # -- in the drain's transaction --------------------------------------------------------------

    def consume(self, conn: Connection, events: list[OutboxEvent]) -> None:
        jobs: list[tuple[str, int | None]] = self._pending()
        subs = store.live(conn)
        for event in events:
            if event.res_type == "Subscription":
                jobs.append((event.res_id, None))  # a handshake may be due
        if not subs:
            return
        now = datetime.utcnow()
        subs = [s for s in subs if not s.spec.ended(now)]  # its end has passed: nothing more is recorded
        by_sub: dict[str, list[dict[str, Any]]] = {}
        registry, base_url = self.services.repo.registry, self.services.settings.base_url
        gates: dict[str, Gate] = {}

        def gate(state: store.State) -> Gate:  # built on first use: Consent is read once per drain
            if state.sub_id not in gates:
                gates[state.sub_id] = Gate(conn, state.access, base_url)
            return gates[state.sub_id]

        candidates_of = {event.id: [s for s in subs if s.spec.topic in self.topics
                                    and self.topics[s.spec.topic].triggered_by(event.res_type, event.event)
                                    and gate(s).may_read_type(event.res_type)]
                         for event in events}
        # every version a filter may test, read in one query per type rather than one per event
        contents = store.contents_at(conn, {_version_key(e) for e in events if candidates_of[e.id]})
        for event in events:
            matched = [s.sub_id for s in subs if criteria.may_match(s.spec, event.res_type, event.event)
                       and gate(s).may_read_type(event.res_type)
                       and criteria.matches(conn, registry, s.spec, event, base_url=base_url,
                                            access=gate(s).visibility)]
            candidates = candidates_of[event.id]
            facts = self.facts(conn, event, {n for s in candidates for n in needs(s.spec.filters)},
                               contents.get(_version_key(event))) if candidates else None
            if facts is not None:
                matched += [s.sub_id for s in candidates if matches(s.spec.topic, s.spec.filters, facts)
                            and gate(s).allows(event.res_type, facts.content)]
            for sub_id in matched:
                by_sub.setdefault(sub_id, []).append({
                    "outbox_id": event.id, "created": event.created, "res_type": event.res_type,
                    "res_id": event.res_id, "version_id": event.version_id, "interaction": event.event})
        for sub_id, found in sorted(by_sub.items()):  # one lock order for concurrent drains
            jobs.extend((sub_id, n) for n in store.add_events(conn, sub_id, found))

    def facts(self, conn: Connection, event: OutboxEvent, wanted: set[str],
              content: dict[str, Any] | None) -> EventFacts | None:
        """What the filters test, from ``content``: the event's own version (for a deletion: the version
        it deleted; see :func:`_version_key`)."""
        if content is None:
            return None
        patients = self._patients(event.res_type, event.res_id, content)
        facts = EventFacts(event.res_type, event.res_id, event.event, content, patients)
        if wanted and patients:
            leads, orgs = _open_episode_people(conn, patients)
            facts.lead_practitioners, facts.organizations = leads, orgs
        return facts

    def _patients(self, res_type: str, res_id: str, content: dict[str, Any]) -> frozenset[str]:
        """The Patient compartments the resource is in (R4 CompartmentDefinition patient)."""
        if res_type == "Patient":
            return frozenset({f"Patient/{res_id}"})
        params = self.compartment.get(res_type, ())
        if not params:
            return frozenset()
        rows = self.services.repo.indexer.rows(content).get("reference", [])
        return frozenset(f"Patient/{r['target_id']}" for r in rows
                         if r["param"] in params and r.get("target_type") == "Patient" and r.get("target_id"))

    # -- after the drain's commit ----------------------------------------------------------------

    def _pending(self) -> list[tuple[str, int | None]]:
        jobs = getattr(self._jobs, "list", None)
        if jobs is None:
            jobs = self._jobs.list = []
        return jobs

    def after_drain(self) -> None:
        jobs = self._pending()
        self._jobs.list = []
        for sub_id, number in jobs:
            self.scheduler.send(sub_id, number)

    def sweep(self) -> int:
        """Send a job for every subscription with work left (see module docstring); returns how many."""
        with self.services.engine.connect() as conn:
            due = store.due(conn)
        for state in due:
            self.scheduler.send(state.sub_id, state.event_count or None)
        return len(due)


def _version_key(event: OutboxEvent) -> tuple[str, str, int]:
    return (event.res_type, event.res_id, event.version_id - 1 if event.event == "delete" else event.version_id)


def _open_episode_people(conn: Connection, patients: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """careManager and managingOrganization of the open EpisodeOfCares of ``patients``."""
    ids = [p.split("/", 1)[1] for p in patients]
    rows = conn.execute(select(resource.c.content).join(idx_reference, idx_reference.c.resource_pk == resource.c.pk)
                        .where(idx_reference.c.res_type == "EpisodeOfCare", idx_reference.c.param == "patient",
                               idx_reference.c.target_type == "Patient", idx_reference.c.target_id.in_(ids),
                               resource.c.deleted.is_(False)))
    leads: set[str] = set()
    orgs: set[str] = set()
    today = datetime.utcnow().date().isoformat()
    for (content,) in rows:
        if content.get("status") not in OPEN_EPISODE:
            continue
        end = (content.get("period") or {}).get("end")
        if end and end[:10] < today:
            continue
        for key, out in (("careManager", leads), ("managingOrganization", orgs)):
            ref = (content.get(key) or {}).get("reference")
            if ref:
                out.add(ref)
    return frozenset(leads), frozenset(orgs)


# -- schedulers ------------------------------------------------------------------------------------

class Scheduler:
    def send(self, sub_id: str, number: int | None) -> None:
        raise NotImplementedError


class CeleryScheduler(Scheduler):
    """One ``subscriptions.deliver`` task per (subscription, event) on the broker."""

    def send(self, sub_id: str, number: int | None) -> None:
        from .tasks import deliver
        try:
            deliver.apply_async(args=[sub_id, number])
        except Exception:  # noqa: BLE001 - the event is stored; the sweep re-sends the job
            log.exception("Delivery job for Subscription/%s not sent; the sweep will re-send it", sub_id)


class LocalScheduler(Scheduler):
    """No broker: one daemon thread per process runs delivery jobs and their backoff retries (the
    periodic sweep runs on the process's local beat, fhir_server/periodic.py). Jobs for the same
    subscription coalesce (one run delivers all it finds)."""

    def __init__(self, deliverer_factory: Callable[[], Deliverer]) -> None:
        self._deliverer_factory = deliverer_factory
        self._cond = threading.Condition()
        self._due: list[tuple[float, str]] = []  # heap of (monotonic time, sub_id)
        self._thread: threading.Thread | None = None
        self._stopped = False

    def stop(self) -> None:
        """End the thread (tests, shutdown); what is left is picked up by the next sweep anywhere."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        """After :meth:`stop`, wait for the delivery run under way (if any) to end."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def send(self, sub_id: str, number: int | None, delay: float = 0.0) -> None:
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + delay, sub_id))
            if self._stopped:
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="subscription-delivery", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        deliverer = self._deliverer_factory()
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    if self._due and self._due[0][0] <= now:
                        _, sub_id = heapq.heappop(self._due)
                        self._due = [d for d in self._due if not (d[1] == sub_id and d[0] <= now)]
                        heapq.heapify(self._due)
                        break
                    self._cond.wait(timeout=max(self._due[0][0] - now, 0.01) if self._due else None)
            try:
                outcome = deliverer.run(sub_id)
                if outcome.kind == "failed" and outcome.retry_in is not None:
                    self.send(sub_id, None, delay=outcome.retry_in)
            except Exception:  # noqa: BLE001 - the events stay stored; the sweep retries
                log.exception("Delivery for Subscription/%s failed", sub_id)
