"""Validating a large import's resources in another process, ahead of the writer.

Validation with the R4B models (fhir_server/fhir/models.py) is about half the CPU time of an
import, and an import is one Python process: the writer would leave a second core to PostgreSQL
alone. :class:`Prevalidated` sends the resources of a large file, once they are final, to a
process pool in chunks and hands back what ``validate_resource`` returned or raised there, entry
by entry, while the writer goes on with the ones already checked. The result is the same as
validating in the writer: the same function on the same JSON, the same exception class and issues.

``FHIR_IMPORT_VALIDATION_PROCESSES`` sets the pool's size (default 1; 0 validates in-process).
Small files, daemonic processes (a Celery prefork worker cannot have children) and a pool that
fails validate in-process instead.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from fhir_server import errors
from fhir_server.errors import FhirError, Issue
from fhir_server.fhir.validation import validate_resource

MIN_RESOURCES = 1000  # below this, starting and feeding the pool costs more than it saves
CHUNK = 200

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()

Item = tuple[dict[str, Any], str, "str | None"]  # body, expected type, expected id


class Prevalidated:
    """``validate_resource`` of every item, run ahead in the pool when there are enough of them;
    :meth:`result` returns the validated body or raises what validation raised."""

    def __init__(self, items: list[Item]) -> None:
        self._items = items
        self._futures: list[Future[list[tuple[str, str, list[Issue]] | None]]] = []
        pool = _shared_pool() if len(items) >= MIN_RESOURCES else None
        if pool is not None:
            try:
                self._futures = [pool.submit(validate_chunk, items[i:i + CHUNK]) for i in range(0, len(items), CHUNK)]
            except Exception:  # noqa: BLE001 - a broken pool: validate here instead
                self._futures = []

    def result(self, n: int) -> dict[str, Any]:
        body, res_type, res_id = self._items[n]
        future = self._futures[n // CHUNK] if self._futures else None
        if future is None:
            return validate_resource(body, expected_type=res_type, expected_id=res_id)
        try:
            outcome = future.result()[n % CHUNK]
        except Exception:  # noqa: BLE001 - the pool failed (a worker died…): validate here
            return validate_resource(body, expected_type=res_type, expected_id=res_id)
        if outcome is not None:
            name, message, issues = outcome
            error_class = getattr(errors, name, None)
            if not (isinstance(error_class, type) and issubclass(error_class, FhirError)):
                return validate_resource(body, expected_type=res_type, expected_id=res_id)
            raise error_class(message, issues=issues)
        return body

    def close(self) -> None:
        """Drop the chunks not started (after an error: the transaction is failing)."""
        for future in self._futures:
            future.cancel()


def validate_chunk(items: list[Item]) -> list[tuple[str, str, list[Issue]] | None]:
    """In the pool: each item's outcome, None when valid, else the FhirError's class name, message
    and issues."""
    out: list[tuple[str, str, list[Issue]] | None] = []
    for body, res_type, res_id in items:
        try:
            validate_resource(body, expected_type=res_type, expected_id=res_id)
            out.append(None)
        except FhirError as exc:
            out.append((type(exc).__name__, exc.args[0] if exc.args else "", exc.issues))
    return out


def _processes() -> int:
    try:
        return max(0, int(os.environ.get("FHIR_IMPORT_VALIDATION_PROCESSES", "1")))
    except ValueError:
        return 0


def _shared_pool() -> ProcessPoolExecutor | None:
    """One pool per process, started on first use ("spawn": safe in a threaded server)."""
    global _pool
    processes = _processes()
    if processes == 0 or multiprocessing.current_process().daemon:
        return None
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"))
        return _pool
