"""The local beat (fhir_server/periodic.py): jobs run when due, each on its own thread, and a job still
running when it falls due again is skipped. A fake clock, not sleeps, decides what is due."""
from __future__ import annotations

import threading

import pytest

from fhir_server.periodic import LocalBeat


def test_jobs_run_when_due_and_a_running_job_is_skipped() -> None:
    now = [1000.0]
    beat = LocalBeat(clock=lambda: now[0], thread=False)
    release = threading.Event()
    ran: list[str] = []
    done = threading.Semaphore(0)

    def slow() -> None:
        ran.append("slow")
        release.wait(10)
        done.release()

    def quick() -> None:
        ran.append("quick")
        done.release()

    beat.every("slow", 60, slow)
    beat.every("quick", 10, quick)
    assert beat.run_due() == []  # nothing is due at once
    now[0] += 10
    assert beat.run_due() == ["quick"]
    assert done.acquire(timeout=10)
    now[0] += 60
    assert sorted(beat.run_due()) == ["quick", "slow"]
    assert done.acquire(timeout=10)  # quick
    now[0] += 60
    assert beat.run_due() == ["quick"]  # slow is still running: skipped, not queued
    assert done.acquire(timeout=10)
    release.set()
    assert done.acquire(timeout=10)  # slow finished
    beat.cancel("quick")
    now[0] += 60
    assert beat.run_due() == ["slow"] and beat.scheduled() == ["slow"]
    assert done.acquire(timeout=10)
    assert ran.count("slow") == 2 and ran.count("quick") == 3


def test_a_failing_job_runs_again_at_its_next_period() -> None:
    now = [0.0]
    beat = LocalBeat(clock=lambda: now[0], thread=False)
    calls = threading.Semaphore(0)

    def failing() -> None:
        calls.release()
        raise RuntimeError("database restarting")

    beat.every("failing", 5, failing)
    for _ in range(2):
        now[0] += 5
        assert beat.run_due() == ["failing"]
        assert calls.acquire(timeout=10)
    with pytest.raises(ValueError):
        beat.every("never", 0, failing)
