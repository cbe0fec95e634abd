"""Periodic work: one schedule, run by Celery beat with a broker and by :data:`local_beat` without.

A feature with work to repeat (the subscription sweep, the daily risk recompute) names it once:

* with a broker, a Celery task and an entry in ``celery.conf.beat_schedule`` (the feature's
  ``tasks`` module adds it at import, as ``fhir_server/audit/tasks.py`` does), run by
  ``celery -A fhir_server.worker worker --beat`` (or a separate ``celery beat``);
* without one (the embedded default), :meth:`LocalBeat.every` on this process's :data:`local_beat`,
  whose daemon thread calls the same function at the same period.

Each due run gets a thread of its own, and a job still running when it falls due again is skipped
(not queued), so a long job (a recompute over 100,000 children) never delays a short one (the sweep)
nor piles up behind itself. Jobs must be idempotent: several server processes each run their own
local beat, and Celery beat gives at-least-once delivery.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class _Job:
    seconds: float
    fn: Callable[[], object]
    due: float
    owner: object = None
    running: bool = False
    runs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalBeat:
    """Runs registered jobs every ``seconds`` on a daemon thread of this process (no broker)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, thread: bool = True) -> None:
        """``clock`` and ``thread=False`` are for tests, which then call :meth:`run_due` themselves."""
        self._clock = clock
        self._threaded = thread
        self._cond = threading.Condition()
        self._jobs: dict[str, _Job] = {}
        self._thread: threading.Thread | None = None

    def every(self, name: str, seconds: float, fn: Callable[[], object], *, owner: object = None) -> None:
        """Run ``fn`` every ``seconds`` (first ``seconds`` from now); a job of the same name is replaced.
        ``owner`` (e.g. the engine the job uses) lets :meth:`cancel_owned` stop all of its jobs."""
        if seconds <= 0:
            raise ValueError(f"period of {name} must be positive, not {seconds}")
        with self._cond:
            self._jobs[name] = _Job(seconds, fn, self._clock() + seconds, owner)
            if self._threaded and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="local-beat", daemon=True)
                self._thread.start()
            self._cond.notify()

    def cancel(self, name: str) -> None:
        with self._cond:
            self._jobs.pop(name, None)
            self._cond.notify()

    def cancel_owned(self, owner: object, *, wait: float = 0.0) -> None:
        """Stop every job registered with ``owner`` (an engine being disposed: its jobs would reconnect).
        ``wait`` > 0: also wait up to that many seconds for a run already started to end (a test
        empties its tables next, and a run still writing would race it)."""
        self._stop(lambda job: job.owner is owner, wait)

    def cancel_all(self, *, wait: float = 0.0) -> None:
        """Stop every job (a process dropping the database its jobs use), waiting as ``cancel_owned``."""
        self._stop(lambda job: True, wait)

    def _stop(self, which: Callable[[_Job], bool], wait: float) -> None:
        with self._cond:
            stopped = [self._jobs.pop(n) for n in [n for n, j in self._jobs.items() if which(j)]]
            self._cond.notify()
        deadline = time.monotonic() + wait  # real time: the injected clock may be a test's, standing still
        while wait > 0 and time.monotonic() < deadline and any(j.running for j in stopped):
            time.sleep(0.01)

    def finished_runs(self, name: str) -> int:
        """How many runs of ``name`` have ended (successfully or not)."""
        with self._cond:
            job = self._jobs.get(name)
        if job is None:
            return 0
        with job.lock:
            return job.runs

    def scheduled(self) -> list[str]:
        with self._cond:
            return sorted(self._jobs)

    def run_due(self) -> list[str]:
        """Start every job that is due (each on its own thread) and set its next time; returns their names."""
        started = []
        with self._cond:
            now = self._clock()
            for name, job in self._jobs.items():
                if job.due > now:
                    continue
                job.due = now + job.seconds
                with job.lock:
                    if job.running:  # the previous run is not over: skip this one
                        continue
                    job.running = True
                started.append(name)
                threading.Thread(target=self._fire, args=(name, job), name=f"beat-{name}", daemon=True).start()
        return started

    def _fire(self, name: str, job: _Job) -> None:
        try:
            job.fn()
        except Exception:  # noqa: BLE001 - a periodic job's failure is retried at its next period
            log.exception("Periodic job %s failed; it runs again in %.0f s", name, job.seconds)
        finally:
            with job.lock:
                job.running = False
                job.runs += 1

    def _run(self) -> None:
        while True:
            self.run_due()
            with self._cond:
                nxt = min((j.due for j in self._jobs.values()), default=None)
                wait = None if nxt is None else max(nxt - self._clock(), 0.01)
                self._cond.wait(timeout=wait)


local_beat = LocalBeat()
