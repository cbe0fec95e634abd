"""The local beat (fhir_server/periodic.py): jobs run when due, each on its own thread, and a job still
running when it falls due again is skipped. A fake clock, not sleeps, decides what is due."""
from __future__ import annotations

import threading
import time

import pytest

from fhir_server.periodic import LocalBeat


def finished(beat: LocalBeat, name: str, runs: int) -> bool:
    """Wait (briefly) for a run's thread to end: it ends just after the job returns."""
    deadline = time.monotonic() + 10
    while beat.finished_runs(name) < runs and time.monotonic() < deadline:
        time.sleep(0.01)
    return beat.finished_runs(name) == runs


def test_jobs_run_when_due_and_a_running_job_is_skipped() -> None:
    now = [1000.0]
    beat = LocalBeat(clock=lambda: now[0], thread=False)
    release = threading.Event()
    ran: list[str] = []

    def slow() -> None:
        ran.append("slow")
        release.wait(10)

    beat.every("slow", 60, slow)
    beat.every("quick", 10, lambda: ran.append("quick"))
    assert beat.run_due() == []  # nothing is due at once
    now[0] += 10
    assert beat.run_due() == ["quick"]
    assert finished(beat, "quick", 1)
    now[0] += 60
    assert sorted(beat.run_due()) == ["quick", "slow"]
    assert finished(beat, "quick", 2)
    now[0] += 60
    assert beat.run_due() == ["quick"]  # slow is still running: skipped, not queued
    assert finished(beat, "quick", 3) and beat.finished_runs("slow") == 0
    release.set()
    assert finished(beat, "slow", 1)
    beat.cancel("quick")
    now[0] += 60
    assert beat.run_due() == ["slow"] and beat.scheduled() == ["slow"]
    assert finished(beat, "slow", 2)
    assert ran.count("slow") == 2 and ran.count("quick") == 3


def test_a_failing_job_runs_again_at_its_next_period() -> None:
    now = [0.0]
    beat = LocalBeat(clock=lambda: now[0], thread=False)
    calls = threading.Semaphore(0)

    def failing() -> None:
        calls.release()
        raise RuntimeError("database restarting")

    beat.every("failing", 5, failing)
    for run in range(1, 3):
        now[0] += 5
        assert beat.run_due() == ["failing"]
        assert calls.acquire(timeout=10)
        assert finished(beat, "failing", run)
    with pytest.raises(ValueError):
        beat.every("never", 0, failing)


def test_the_jobs_of_an_owner_are_cancelled_together() -> None:
    beat = LocalBeat(clock=lambda: 0.0, thread=False)
    engine, other = object(), object()
    beat.every("sweep", 15, lambda: None, owner=engine)
    beat.every("recompute", 86400, lambda: None, owner=engine)
    beat.every("elsewhere", 15, lambda: None, owner=other)
    beat.cancel_owned(engine)
    assert beat.scheduled() == ["elsewhere"]


def test_cancelling_an_owner_can_wait_for_its_run_under_way() -> None:
    """A test empties its tables after cancelling its server's jobs: a run already started must end first."""
    now = [100.0]
    beat = LocalBeat(clock=lambda: now[0], thread=False)
    engine, started, release = object(), threading.Event(), threading.Event()

    def seal() -> None:
        started.set()
        release.wait(10)

    beat.every("seal", 1, seal, owner=engine)
    now[0] += 1
    assert beat.run_due() == ["seal"]
    assert started.wait(10)
    threading.Timer(0.2, release.set).start()
    t0 = time.monotonic()
    beat.cancel_owned(engine, wait=10)
    assert time.monotonic() - t0 >= 0.15 and release.is_set()
    assert beat.scheduled() == []
