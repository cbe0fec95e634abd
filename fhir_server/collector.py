"""Python's cyclic garbage collector during bulk work (agency imports).

An import builds hundreds of thousands of short-lived containers (mapped resources, their index rows:
~37 dicts a school-census Observation) while millions of long-lived ones (the FHIR model classes and
their pydantic schemas, SQLAlchemy's tables, the file's mapped resources) sit in the heap. At the
default thresholds (700, 10, 10) the collector runs a young collection every 700 net allocations and
a full one — walking every tracked object — every few hundred thousand: measured on a 1,000-family
school-census load, 2.2 s of the importing process's 17.4 s of CPU (13 %) were collections, 1.8 s of
them full ones. Nothing of the import is freed by them (its objects are released by reference
counting; it makes no reference cycles to speak of), so:

* :func:`fewer_collections` raises the young-generation threshold for the duration of a bulk write
  (nested and concurrent users share one raise; the last to leave restores the thresholds);
* :func:`freeze_startup` moves everything alive after start-up into the permanent generation
  (``gc.freeze``), so full collections stop walking the model classes — for a one-shot process such
  as ``fhir-server import``, once, after its services are built.
"""
from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BULK_THRESHOLD = 20_000  # net allocations between young collections while bulk work runs (default 700)

_lock = threading.Lock()
_users = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def fewer_collections(threshold: int = BULK_THRESHOLD) -> Iterator[None]:
    """Collect less often while the block runs (cycles are still collected, only later)."""
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = gc.get_threshold()
            if _saved[0] < threshold:
                gc.set_threshold(threshold, *_saved[1:])
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None


def freeze_startup() -> None:
    """Leave what start-up built out of every later collection (``gc.freeze``). For one-shot
    processes: what is frozen is never collected, so call it once, not per request."""
    gc.collect()
    gc.freeze()
